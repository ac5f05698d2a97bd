"""`commhub tail [<alias>] [--network [ID]]`: print events as they happen, readable or as JSON lines.

With an alias it follows `GET /events/<alias>` (use a user token to watch without taking the alias: a network
token claims it); with --network (or no alias) it follows the whole network, `GET /events?network_id=`, which
needs a user token. It reconnects with backoff and Last-Event-ID, so nothing is missed while it is away.
A replayed event (--from-start, or after a reconnect) is printed with the time it happened, which the server
sends with it; a live one with the time it arrived.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ..client import ClientError, HubClient, SseFrame
from ..events import AT_PREFIX
from ..vocabulary import (
    BROADCAST,
    DEFAULT_PRIORITY,
    HEARTBEAT,
    LOOP_BROKEN,
    MESSAGE,
    NEW_MESSAGE,
    NEW_REPLY,
    NEW_TASK,
    WEBHOOK_DISABLED,
)
from .common import json_text, safe_text


def register(sub: argparse._SubParsersAction) -> None:
    """Add `tail`."""
    p = sub.add_parser("tail", help="print events as they happen (one alias, or a whole network)",
                       description="Follow events as they happen: one alias, or with --network every alias of a "
                       "network (user token). Readable lines, or --json for scripts.")
    p.add_argument("alias", nargs="?", help="the alias to follow (omit for the whole network)")
    p.add_argument("--network", nargs="?", const="", default=None, metavar="NETWORK_ID",
                   help="follow every alias of a network (your only network when no id is given)")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per event: id, event, alias, data, at (when it happened, UTC)")
    p.add_argument("--from-start", action="store_true", help="first print every retained event")
    p.add_argument("--url", help="server URL (env COMMHUB_URL, default http://127.0.0.1:9200)")
    p.add_argument("--token", help="token (env COMMHUB_TOKEN); a user token for --network")
    p.set_defaults(func=cmd_tail)


def _task_text(target: str, data: dict[str, Any]) -> str:
    title = f' "{data["title"]}"' if data.get("title") else ""
    return f"task{title} {target} [{data.get('priority', DEFAULT_PRIORITY)}] task={data.get('task_id')}"


def _message_text(target: str, data: dict[str, Any]) -> str:
    return f"message {target}: {_short(data.get('message'))} msg={data.get('message_id')}"


def _reply_text(target: str, data: dict[str, Any]) -> str:
    return f"reply {target} [{data.get('status')}]" + (f" task={data['task_id']}" if data.get("task_id") else "") \
        + f" msg={data.get('message_id')}"


def _broadcast_text(target: str, data: dict[str, Any]) -> str:
    return f"broadcast {target}: {_short(data.get('content'))}"


def _loop_broken_text(target: str, data: dict[str, Any]) -> str:
    return (f"loop broken {target}: more than {data.get('limit')} sends a minute, refused for "
            f"{data.get('retry_after')} s (last delivered msg={data.get('message_id')})")


def _webhook_disabled_text(target: str, data: dict[str, Any]) -> str:
    return f"webhook {data.get('webhook_id')} disabled ({data.get('url')}): {_short(data.get('reason'))}"


# The readable line of each event agents are woken for (vocabulary.DELIVERED_EVENTS; tests/test_vocabulary.py
# fails while one has none) and of the network's own events (NETWORK_EVENTS, seen with --network); any other
# event is printed as its name and JSON.
TEXTS: dict[str, Callable[[str, dict[str, Any]], str]] = {
    NEW_TASK: _task_text, NEW_MESSAGE: _message_text, NEW_REPLY: _reply_text, BROADCAST: _broadcast_text,
    LOOP_BROKEN: _loop_broken_text, WEBHOOK_DISABLED: _webhook_disabled_text}


def describe(event_id: str, name: str, alias: str | None, data: dict[str, Any], at: datetime | None = None) -> str:
    """One readable line for an event, its member-controlled text escaped (safe_text: one record, one line).
    `at`: when it happened (a replayed event's own time), else now; shown in local time, with the date when it
    is not today's."""
    who = data.get("from", "?")
    target = f"{who} -> {alias}" if alias else f"from {who}"
    text_of = TEXTS.get(name)
    text = text_of(target, data) if text_of else f"{name} {json.dumps(data, ensure_ascii=False)}"
    local = (at or datetime.now(UTC)).astimezone()
    stamp = local.strftime("%H:%M:%S" if local.date() == datetime.now().astimezone().date() else "%Y-%m-%d %H:%M:%S")
    return safe_text(f"{stamp} #{event_id} {text}")


def event_time(frame: SseFrame) -> datetime | None:
    """The time a replayed event happened, from its `: at ...Z` comment line (None for a live event)."""
    prefix = AT_PREFIX[1:].lstrip()  # the comment's text, without the colon and the space the parser drops
    if not frame.comment or not frame.comment.startswith(prefix):
        return None
    try:
        return datetime.fromisoformat(frame.comment[len(prefix):].strip().replace("Z", "+00:00"))
    except ValueError:
        return None


def _short(text: Any, limit: int = 120) -> str:
    flat = " ".join(str(text or "").split())
    return flat if len(flat) <= limit else flat[:limit] + "…"


def cmd_tail(args: argparse.Namespace) -> int:
    """Follow and print until interrupted."""
    client = HubClient.from_args(args)
    if args.alias and args.network is None:
        path, params = f"/events/{args.alias}", {}
    else:
        path, params = "/events", {"network_id": args.network or None}
    last: list[str | None] = ["0" if args.from_start else None]

    def on_retry(reason: str, delay: float) -> None:
        print(safe_text(f"commhub tail: {reason}; reconnecting in {delay:.0f} s"), file=sys.stderr, flush=True)

    try:
        for frame in client.follow(path, resume=lambda: last[0], params=params, on_retry=on_retry):
            if frame.id:
                last[0] = frame.id  # the position on connect, then each event
            _print(args, frame)
    except KeyboardInterrupt:
        return 0
    except ClientError as exc:
        print(safe_text(f"commhub tail: {exc.code}: {exc.message}"), file=sys.stderr)
        return 1
    finally:
        client.close()
    return 0


def _print(args: argparse.Namespace, frame: SseFrame) -> None:
    if not frame.is_event or frame.event == HEARTBEAT:
        return
    data = json.loads(frame.data) if frame.data else {}
    alias = data.pop("alias", None) if args.alias is None or args.network is not None else args.alias
    at = event_time(frame)
    if args.json:
        stamp = (at or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
        print(json_text({"id": int(frame.id or 0), "event": frame.event, "alias": alias, "data": data, "at": stamp}),
              flush=True)
    else:
        print(describe(frame.id or "", frame.event or MESSAGE, alias, data, at), flush=True)
