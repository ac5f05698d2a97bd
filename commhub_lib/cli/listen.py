"""`commhub listen <alias> --exec CMD`: run a command once per event of an alias, for agents that cannot hold a
stream themselves (Codex, Gemini CLI, `claude -p`, scripts).

Contract: at least once, in order, and no event can stop the events after it. The cursor (the id of the last
event handled) lives in a state file and moves only after CMD exits 0 or after the event is recorded as
skipped (written to a temporary file, fsynced, renamed over the old one). A CMD that cannot start or fails is a
failed attempt: retried with backoff, for ever by default; with `--max-attempts N`, after N failed attempts the
event is recorded as skipped (a line on stderr, its id in the state file's `skipped` list) and the next event
goes on. The environment of CMD carries only short, sanitised fields (ids, names, priority, a one-line title);
the whole event, whatever it holds, is on CMD's stdin. An event runs twice only if listen (or the machine) dies
after CMD finished and before the new cursor reached the disk; a CMD that is idempotent for COMMHUB_EVENT_ID
makes that exactly once. One CMD at a time: a lock on `<state>.lock` is held by listen and inherited by CMD, so
a restarted listen waits for a CMD that its killed predecessor left running.

The token is the agent's: `--token`, else COMMHUB_AGENT_TOKEN (COMMHUB_TOKEN, a person's token elsewhere in the
CLI, is still read as a fallback, with a note).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ..client import DEFAULT_URL, ClientError, HubClient, SseFrame
from ..vocabulary import BROADCAST, HEARTBEAT, LOOP_BROKEN, NEW_MESSAGE, NEW_REPLY, NEW_TASK
from .common import safe_text, write_private

DEFAULT_EVENTS = ",".join((NEW_TASK, NEW_MESSAGE, NEW_REPLY))
# The events --events can select (vocabulary.DELIVERED_EVENTS: tests/test_vocabulary.py fails while one is missing
# here, or while one of its fields is neither an environment variable nor named in STDIN_ONLY_FIELDS).
# loop_broken (a person's notice that the loop guard cut a pair: docs/loop-guard.md) only when asked for.
ALL_EVENTS = (NEW_TASK, NEW_MESSAGE, NEW_REPLY, BROADCAST, LOOP_BROKEN)
ENV_FIELDS = {"COMMHUB_FROM": "from", "COMMHUB_TASK_ID": "task_id", "COMMHUB_MESSAGE_ID": "message_id",
              "COMMHUB_PRIORITY": "priority", "COMMHUB_TITLE": "title", "COMMHUB_STATUS": "status",
              "COMMHUB_IN_REPLY_TO": "in_reply_to", "COMMHUB_TO": "to"}
# Event fields CMD reads from the event JSON on stdin only: texts (too long or too free for a variable) and
# details a wake-up does not need.
STDIN_ONLY_FIELDS = frozenset({"type", "message", "content", "inbox_count", "from_kind", "approval_id",
                               "answers_approval", "limit", "retry_after"})
ENV_VALUE_MAX_CHARS = 200  # per variable: far below Linux's 128 KiB per string (E2BIG) and any shell's taste
AGENT_TOKEN_ENV = "COMMHUB_AGENT_TOKEN"
SKIPPED_KEPT = 1000  # the state file keeps the newest skipped events (the stderr line names every one)


def register(sub: argparse._SubParsersAction) -> None:
    """Add `listen`."""
    p = sub.add_parser("listen", help="run a command for every event of an alias (wakes headless agents)",
                       description="Follow an alias's events and run CMD once per selected event, one at a time: "
                       "the whole event as JSON on stdin, short sanitised fields (ids, names, priority, a one-line "
                       "title) in COMMHUB_* variables. The cursor is kept in a state file and advanced only after "
                       "CMD exits 0, or after the event is recorded as skipped. A CMD that cannot start or fails is "
                       "retried with backoff, for ever unless --max-attempts is set; with it, the event is skipped "
                       "after that many failed attempts (a line on stderr, its id in the state file's 'skipped' list) "
                       "and the next event goes on. The token is the agent's: --token, else COMMHUB_AGENT_TOKEN.")
    p.add_argument("alias", help="the alias to follow (use the agent's own token: the stream keeps it online)")
    p.add_argument("--exec", dest="command", required=True, metavar="CMD", help="shell command run per event")
    p.add_argument("--events", default=DEFAULT_EVENTS,
                   help=f"comma-separated events to run CMD for (default {DEFAULT_EVENTS}; also: broadcast, all)")
    p.add_argument("--state", help="state file (default $XDG_STATE_HOME/commhub/listen-<alias>.json, "
                   "i.e. ~/.local/state/commhub/)")
    p.add_argument("--from-start", action="store_true",
                   help="with no state file yet, handle every retained event instead of starting from now")
    p.add_argument("--max-attempts", type=int, default=0,
                   help="after this many failed attempts of one event, record it as skipped and go on with the next "
                   "(0, the default: retry for ever, so a failing event holds back the ones after it)")
    p.add_argument("--retry-max-seconds", type=float, default=300.0,
                   help="longest wait between retries of a failing CMD (backoff 1 s doubling; default 300)")
    p.add_argument("--network-id", help="the network, when the token could reach several")
    p.add_argument("--url", help="server URL (env COMMHUB_URL, default http://127.0.0.1:9200)")
    p.add_argument("--token", help=f"the agent's network token (env {AGENT_TOKEN_ENV}; COMMHUB_TOKEN is read "
                   "as a fallback, with a note)")
    p.set_defaults(func=cmd_listen)


def default_state_path(alias: str) -> Path:
    """Where the cursor of `listen <alias>` lives unless --state says otherwise."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "commhub" / f"listen-{alias}.json"


class Cursor:
    """The id of the last event handled, kept in a state file that is replaced atomically; with it, the events
    recorded as skipped and the failed attempts of the event being retried (so a restart goes on counting)."""

    def __init__(self, path: Path, alias: str, url: str):
        self.path = path
        self.alias = alias
        self.url = url
        self.last: int | None = None
        self.skipped: list[dict[str, Any]] = []
        self.failing: dict[str, Any] | None = None  # {"event_id", "attempts", "error"} of the event being retried
        if path.exists():
            saved = json.loads(path.read_text(encoding="utf-8"))
            self.last = int(saved["last_event_id"]) if saved.get("last_event_id") is not None else None
            self.skipped = list(saved.get("skipped") or [])
            self.failing = saved.get("failing") or None

    def attempts(self, event_id: int) -> int:
        """How many attempts of this event have failed so far (kept across restarts)."""
        if self.failing and self.failing.get("event_id") == event_id:
            return int(self.failing.get("attempts") or 0)
        return 0

    def save(self, event_id: int) -> None:
        """Move the cursor: write a temporary file, fsync it, rename it over the state file, fsync the folder."""
        self.last = event_id
        if self.failing and int(self.failing.get("event_id") or 0) <= event_id:
            self.failing = None
        self._write()

    def failed(self, event_id: int, attempts: int, error: str) -> None:
        """Remember a failed attempt (the cursor does not move)."""
        self.failing = {"event_id": event_id, "attempts": attempts, "error": error}
        self._write()

    def skip(self, event_id: int, event: str, attempts: int, error: str, data: dict[str, Any]) -> None:
        """Record the event as skipped and move the cursor past it, in one atomic write."""
        entry: dict[str, Any] = {"event_id": event_id, "event": event}
        for key in ("task_id", "message_id"):
            if isinstance(data.get(key), str):
                entry[key] = sanitize_env_value(data[key])
        entry.update(attempts=attempts, error=error, skipped_at=_now())
        self.skipped = [*self.skipped, entry][-SKIPPED_KEPT:]
        self.save(event_id)

    def _write(self) -> None:
        state: dict[str, Any] = {"alias": self.alias, "url": self.url, "last_event_id": self.last,
                                 "saved_at": _now()}
        if self.failing:
            state["failing"] = self.failing
        if self.skipped:
            state["skipped"] = self.skipped
        write_private(self.path, json.dumps(state) + "\n")  # 0600: the state is the agent's business

def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _lock(path: Path) -> int:
    """Hold `<state>.lock` (waiting if another listen, or a CMD it left running, holds it)."""
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        _say(f"waiting for {path}.lock: another listen, or a command it started, is still running")
        fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _say(text: str) -> None:
    print(safe_text(f"commhub listen: {text}"), file=sys.stderr, flush=True)


def _selected(spec: str) -> set[str]:
    names = {n.strip() for n in spec.split(",") if n.strip()}
    if "all" in names:
        return set(ALL_EVENTS)
    unknown = names - set(ALL_EVENTS)
    if unknown or not names:
        raise ValueError(f"--events: unknown {', '.join(sorted(unknown)) or '(none given)'}; "
                         f"choose from {', '.join(ALL_EVENTS)} or all")
    return names


# Never in an environment variable: C0 and C1 controls (NUL cannot be passed at all), DEL, line and paragraph
# separators, bidi controls, lone surrogates (they cannot be encoded).
_ENV_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]")


def sanitize_env_value(value: Any, limit: int = ENV_VALUE_MAX_CHARS) -> str:
    """A value made fit for one environment variable of a command: one line, no control, separator or bidi
    character (each becomes a space, runs of spaces one), at most `limit` characters (cut ones end with "…")."""
    text = _ENV_UNSAFE.sub(" ", value if isinstance(value, str) else str(value))
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def event_environment(alias: str, url: str, event_id: int, name: str, data: dict[str, Any]) -> dict[str, str]:
    """The COMMHUB_* variables CMD gets for one event (on top of listen's own environment): short, sanitised
    fields only (sanitize_env_value); a message's text and everything else is in the event JSON on stdin."""
    env = {"COMMHUB_EVENT": sanitize_env_value(name), "COMMHUB_EVENT_ID": str(event_id),
           "COMMHUB_ALIAS": sanitize_env_value(alias), "COMMHUB_URL": sanitize_env_value(url, 2000)}
    for var, key in ENV_FIELDS.items():
        value = data.get(key)
        if value is None or isinstance(value, (dict, list)):
            continue
        value = sanitize_env_value(value)
        if value:
            env[var] = value
    return env


class Stop:
    """SIGTERM/SIGINT: stop at once while waiting for events; while CMD runs, let it finish its event first."""

    def __init__(self) -> None:
        self.requested = False
        self.in_command = False

    def handle(self, signum: int, frame: Any) -> None:
        """The signal handler."""
        self.requested = True
        if not self.in_command:
            raise SystemExit(0)
        _say("stopping after the running command finishes")


STOP = Stop()


def _run(command: str, lock_fd: int, payload: bytes, env: dict[str, str]) -> str | None:
    """Run CMD for one event; None if it exited 0, else what went wrong (it could not start, its exit code)."""
    # CMD inherits the lock, so a listen restarted after a crash waits for a CMD still running (one at a time).
    # Its own session: a Ctrl-C or SIGTERM meant for listen does not cut the event's work short.
    STOP.in_command = True
    try:
        try:
            proc = subprocess.Popen(command, shell=True, stdin=subprocess.PIPE, env={**os.environ, **env},
                                    pass_fds=(lock_fd,), start_new_session=True)
        except (OSError, ValueError) as exc:  # E2BIG, ENOMEM, no /bin/sh, a value that cannot be passed
            return f"could not start ({exc})"
        try:
            proc.stdin.write(payload)  # type: ignore[union-attr]
            proc.stdin.close()  # type: ignore[union-attr]
        except OSError:
            pass  # CMD did not read (all of) its stdin
        code = proc.wait()
    finally:
        STOP.in_command = False
    if code == 0:
        return None
    if code < 0:
        return f"was killed by signal {-code}"
    if code in (126, 127):
        return f"exited {code} (the shell could not run it: not found or not executable?)"
    return f"exited {code}"


def agent_client(args: argparse.Namespace) -> HubClient:
    """A client with the agent's token: --token, else COMMHUB_AGENT_TOKEN, else COMMHUB_TOKEN (with a note)."""
    url = getattr(args, "url", None) or os.environ.get("COMMHUB_URL") or DEFAULT_URL
    token = getattr(args, "token", None) or os.environ.get(AGENT_TOKEN_ENV)
    if not token and os.environ.get("COMMHUB_TOKEN"):
        token = os.environ["COMMHUB_TOKEN"]
        _say(f"reading the agent's token from COMMHUB_TOKEN; set {AGENT_TOKEN_ENV} instead (COMMHUB_TOKEN is the "
             "name of a person's token elsewhere)")
    return HubClient(url, token or None, token_source=f"--token or {AGENT_TOKEN_ENV} (the agent's network token)")


def cmd_listen(args: argparse.Namespace) -> int:
    """Follow the alias and run CMD per selected event until interrupted."""
    try:
        selected = _selected(args.events)
    except ValueError as exc:
        print(f"commhub listen: {exc}", file=sys.stderr)
        return 2
    if args.max_attempts < 0:
        print("commhub listen: --max-attempts must be 0 (retry for ever) or more", file=sys.stderr)
        return 2
    client = agent_client(args)
    state = Path(args.state) if args.state else default_state_path(args.alias)
    state.parent.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, STOP.handle)  # run the finally blocks (lock, connection)
    signal.signal(signal.SIGINT, STOP.handle)
    lock_fd = _lock(state)
    try:
        cursor = Cursor(state, args.alias, client.url)
    except (ValueError, KeyError, OSError) as exc:
        _say(f"cannot read the state file {state}: {exc}")
        client.close()
        os.close(lock_fd)
        return 1
    try:
        return _loop(args, client, cursor, selected, lock_fd)
    except ClientError as exc:
        _say(f"{exc.code}: {exc.message}")
        if "ahead of the newest event" in exc.message:
            _say(f"the server has no event {cursor.last}: if its database was replaced, delete {state} (or start "
                 "with --state pointing elsewhere) to begin again")
        return 1
    finally:
        client.close()
        os.close(lock_fd)


def _loop(args: argparse.Namespace, client: HubClient, cursor: Cursor, selected: set[str], lock_fd: int) -> int:
    params = {"network_id": args.network_id}
    start = "0" if args.from_start else None
    _say(f"following {args.alias} at {client.url} from "
         f"{'event ' + str(cursor.last) if cursor.last is not None else 'the start' if start else 'now'}")

    def resume() -> str | None:
        return str(cursor.last) if cursor.last is not None else start

    def on_retry(reason: str, delay: float) -> None:
        _say(f"{reason}; reconnecting in {delay:.0f} s from event {cursor.last if cursor.last is not None else '-'}")

    while True:
        retry_in = 0.0
        for frame in client.follow(f"/events/{args.alias}", resume=resume, params=params, on_retry=on_retry):
            failure = _handle(args, client.url, frame, cursor, selected, lock_fd)
            if failure is None:
                continue
            event_id, name, data, error = failure
            # Attempts count per event, across reconnects and restarts (kept in the state file).
            attempts = cursor.attempts(event_id) + 1
            limit = f" of {args.max_attempts}" if args.max_attempts else ""
            _say(f"{args.command!r} {error} for event {event_id} ({name}); attempt {attempts}{limit}")
            if args.max_attempts and attempts >= args.max_attempts:
                cursor.skip(event_id, name, attempts, error, data)
                _say(f"SKIPPED event {event_id} ({name}) after {attempts} failed attempts; recorded under "
                     f"'skipped' in {cursor.path}; going on with the next event")
                continue  # the stream goes on: a poison event never holds back the ones after it
            cursor.failed(event_id, attempts, error)
            retry_in = min(2.0 ** (attempts - 1), args.retry_max_seconds)
            break  # drop the stream; after the wait, reconnecting from the cursor brings the event back
        _say(f"retrying event in {retry_in:.0f} s")
        time.sleep(retry_in)


def _event_data(text: str) -> dict[str, Any]:
    """The event's JSON object (anything else is passed on as it came, under "raw")."""
    try:
        data = json.loads(text) if text else {}
    except ValueError:
        return {"raw": text}
    return data if isinstance(data, dict) else {"raw": data}


def _handle(args: argparse.Namespace, url: str, frame: SseFrame, cursor: Cursor, selected: set[str],
            lock_fd: int) -> tuple[int, str, dict[str, Any], str] | None:
    """Handle one frame; None when done with it (cursor moved if needed), else (event id, name, data, what went
    wrong) for a failed attempt."""
    if not frame.is_event:
        if frame.id and frame.id.isdigit() and cursor.last is None and not args.from_start:
            cursor.save(int(frame.id))  # the stream's position: "from now" survives a restart
        return None
    if frame.event == HEARTBEAT or not frame.id or not frame.id.isdigit():
        return None
    event_id = int(frame.id)
    if cursor.last is not None and event_id <= cursor.last:
        return None  # already handled
    if frame.event not in selected:
        cursor.save(event_id)
        return None
    data = _event_data(frame.data)
    event = {"id": event_id, "event": frame.event, "alias": args.alias, "data": data}
    try:
        payload = json.dumps(event, ensure_ascii=False).encode()
    except UnicodeEncodeError:  # a lone surrogate (JSON allows "\ud800"): all-ASCII JSON says the same exactly
        payload = json.dumps(event).encode()
    error = _run(args.command, lock_fd, payload, event_environment(args.alias, url, event_id, frame.event, data))
    if error is not None:
        if STOP.requested:  # the attempt counts; the event runs again on the next start
            cursor.failed(event_id, cursor.attempts(event_id) + 1, error)
            raise SystemExit(0)
        return event_id, frame.event, data, error
    cursor.save(event_id)
    if STOP.requested:
        raise SystemExit(0)
    return None
