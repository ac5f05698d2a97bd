"""`commhub listen <alias> --exec CMD`: run a command once per event of an alias, for agents that cannot hold a
stream themselves (Codex, Gemini CLI, `claude -p`, scripts).

Guarantee: at least once, never skipped. The cursor (the id of the last event handled) lives in a state file
and moves only after CMD exits 0 (written to a temporary file, fsynced, renamed over the old one). A failing
CMD is retried with backoff, never skipped. An event runs twice only if listen (or the machine) dies after CMD
finished and before the new cursor reached the disk; a CMD that is idempotent for COMMHUB_EVENT_ID makes
that exactly once. One CMD at a time: a lock on `<state>.lock` is held by listen and inherited by CMD, so a
restarted listen waits for a CMD that its killed predecessor left running.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ..client import ClientError, HubClient, SseFrame

DEFAULT_EVENTS = "new_task,new_message,new_reply"
ALL_EVENTS = ("new_task", "new_message", "new_reply", "broadcast")
ENV_FIELDS = {"COMMHUB_FROM": "from", "COMMHUB_TASK_ID": "task_id", "COMMHUB_MESSAGE_ID": "message_id",
              "COMMHUB_PRIORITY": "priority", "COMMHUB_TITLE": "title", "COMMHUB_STATUS": "status",
              "COMMHUB_IN_REPLY_TO": "in_reply_to"}


def register(sub: argparse._SubParsersAction) -> None:
    """Add `listen`."""
    p = sub.add_parser("listen", help="run a command for every event of an alias (wakes headless agents)",
                       description="Follow an alias's events and run CMD once per selected event, one at a time: "
                       "the event JSON on stdin, its main fields in COMMHUB_* variables. The cursor is kept in a "
                       "state file and advanced only after CMD exits 0.")
    p.add_argument("alias", help="the alias to follow (use the agent's own token: the stream keeps it online)")
    p.add_argument("--exec", dest="command", required=True, metavar="CMD", help="shell command run per event")
    p.add_argument("--events", default=DEFAULT_EVENTS,
                   help=f"comma-separated events to run CMD for (default {DEFAULT_EVENTS}; also: broadcast, all)")
    p.add_argument("--state", help="state file (default $XDG_STATE_HOME/commhub/listen-<alias>.json, "
                   "i.e. ~/.local/state/commhub/)")
    p.add_argument("--from-start", action="store_true",
                   help="with no state file yet, handle every retained event instead of starting from now")
    p.add_argument("--max-attempts", type=int, default=0,
                   help="after this many failed runs of one event, exit 1 without skipping it (0 = retry for ever)")
    p.add_argument("--retry-max-seconds", type=float, default=300.0,
                   help="longest wait between retries of a failing CMD (backoff 1 s doubling; default 300)")
    p.add_argument("--network-id", help="the network, when the token could reach several")
    p.add_argument("--url", help="server URL (env COMMHUB_URL, default http://127.0.0.1:9200)")
    p.add_argument("--token", help="the agent's network token (env COMMHUB_TOKEN)")
    p.set_defaults(func=cmd_listen)


def default_state_path(alias: str) -> Path:
    """Where the cursor of `listen <alias>` lives unless --state says otherwise."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "commhub" / f"listen-{alias}.json"


class Cursor:
    """The id of the last event handled, kept in a state file that is replaced atomically."""

    def __init__(self, path: Path, alias: str, url: str):
        self.path = path
        self.alias = alias
        self.url = url
        self.last: int | None = None
        if path.exists():
            saved = json.loads(path.read_text(encoding="utf-8"))
            self.last = int(saved["last_event_id"]) if saved.get("last_event_id") is not None else None

    def save(self, event_id: int) -> None:
        """Move the cursor: write a temporary file, fsync it, rename it over the state file, fsync the folder."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        body = json.dumps({"alias": self.alias, "url": self.url, "last_event_id": event_id,
                           "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(body + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        folder = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
        self.last = event_id


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
    print(f"commhub listen: {text}", file=sys.stderr, flush=True)


def _selected(spec: str) -> set[str]:
    names = {n.strip() for n in spec.split(",") if n.strip()}
    if "all" in names:
        return set(ALL_EVENTS)
    unknown = names - set(ALL_EVENTS)
    if unknown or not names:
        raise ValueError(f"--events: unknown {', '.join(sorted(unknown)) or '(none given)'}; "
                         f"choose from {', '.join(ALL_EVENTS)} or all")
    return names


def event_environment(alias: str, url: str, event_id: int, name: str, data: dict[str, Any]) -> dict[str, str]:
    """The COMMHUB_* variables CMD gets for one event (on top of listen's own environment)."""
    env = {"COMMHUB_EVENT": name, "COMMHUB_EVENT_ID": str(event_id), "COMMHUB_ALIAS": alias, "COMMHUB_URL": url}
    for var, key in ENV_FIELDS.items():
        if data.get(key) not in (None, ""):
            env[var] = str(data[key])
    text = data.get("message") if name == "new_message" else data.get("content")
    if text:
        env["COMMHUB_CONTENT"] = str(text)
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


def _run(command: str, lock_fd: int, payload: bytes, env: dict[str, str]) -> int:
    # CMD inherits the lock, so a listen restarted after a crash waits for a CMD still running (one at a time).
    # Its own session: a Ctrl-C or SIGTERM meant for listen does not cut the event's work short.
    STOP.in_command = True
    try:
        proc = subprocess.Popen(command, shell=True, stdin=subprocess.PIPE, env={**os.environ, **env},
                                pass_fds=(lock_fd,), start_new_session=True)
        try:
            proc.stdin.write(payload)  # type: ignore[union-attr]
            proc.stdin.close()  # type: ignore[union-attr]
        except BrokenPipeError:
            pass  # CMD did not read its stdin
        return proc.wait()
    finally:
        STOP.in_command = False


def cmd_listen(args: argparse.Namespace) -> int:
    """Follow the alias and run CMD per selected event until interrupted."""
    try:
        selected = _selected(args.events)
    except ValueError as exc:
        print(f"commhub listen: {exc}", file=sys.stderr)
        return 2
    client = HubClient.from_args(args)
    state = Path(args.state) if args.state else default_state_path(args.alias)
    state.parent.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, STOP.handle)  # run the finally blocks (lock, connection)
    signal.signal(signal.SIGINT, STOP.handle)
    lock_fd = _lock(state)
    try:
        cursor = Cursor(state, args.alias, client.url)
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
    failures, failing = 0, None
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
            outcome = _handle(args, client.url, frame, cursor, selected, lock_fd)
            if outcome is None:
                continue
            # Failures count per event (a reconnect's position frame in between must not reset them).
            failures = failures + 1 if frame.id == failing else 1
            failing = frame.id
            _say(f"{args.command!r} exited {outcome} for event {frame.id} ({frame.event}); attempt {failures}")
            if args.max_attempts and failures >= args.max_attempts:
                _say(f"giving up after {failures} attempts; event {frame.id} is not skipped: it runs again on the "
                     "next start")
                return 1
            retry_in = min(2.0 ** (failures - 1), args.retry_max_seconds)
            break  # drop the stream; after the wait, reconnecting from the cursor brings the event back
        _say(f"retrying event in {retry_in:.0f} s")
        time.sleep(retry_in)


def _handle(args: argparse.Namespace, url: str, frame: SseFrame, cursor: Cursor, selected: set[str],
            lock_fd: int) -> int | None:
    """Handle one frame; None when done with it (cursor moved if needed), else CMD's failing exit code."""
    if not frame.is_event:
        if frame.id and frame.id.isdigit() and cursor.last is None and not args.from_start:
            cursor.save(int(frame.id))  # the stream's position: "from now" survives a restart
        return None
    if frame.event == "heartbeat" or not frame.id or not frame.id.isdigit():
        return None
    event_id = int(frame.id)
    if cursor.last is not None and event_id <= cursor.last:
        return None  # already handled
    if frame.event not in selected:
        cursor.save(event_id)
        return None
    data = json.loads(frame.data) if frame.data else {}
    payload = json.dumps({"id": event_id, "event": frame.event, "alias": args.alias, "data": data},
                         ensure_ascii=False).encode()
    code = _run(args.command, lock_fd, payload, event_environment(args.alias, url, event_id, frame.event, data))
    if code != 0:
        if STOP.requested:
            raise SystemExit(0)  # the event runs again on the next start
        return code
    cursor.save(event_id)
    if STOP.requested:
        raise SystemExit(0)
    return None
