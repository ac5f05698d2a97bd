"""What `commhub run` keeps on disk for one alias: the stream cursor and the events in flight.

The file is `<state dir>/runner.json` (0600 in a 0700 directory), replaced atomically on every change
(temporary file, fsync, rename, fsync of the directory), so a runner killed -9 at any instant finds either the
state before a step or the state after it:

- `cursor`: the id of an event such that every event up to it is done (Last-Event-ID on the next start);
- `in_flight`: the events begun and not done, in order, each with its `phase` (`turn`, then `reminded`, then
  `flagging` once the progress reply is being posted);
- `done_ahead`: ids past the cursor already done (an urgent task handled before older queued events);
- `backlog_until`: on a first start, the stream's position then; events up to it came before the runner, and of
  those only the tasks still open get a turn (messages and replies wait in the agent's inbox).

An event is written into `in_flight` BEFORE its turn starts and moved out (with the cursor) only AFTER everything
the runner does for it (turn, reminder, progress reply, flag) is finished. docs/runner.md says what a restart
does with each phase. The driver keeps its own files (session or thread ids) in the same directory.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..common import write_private
from .proc import private_dir

STATE_FILE = "runner.json"
LOCK_FILE = "runner.lock"


def default_state_dir(alias: str) -> Path:
    """`$XDG_STATE_HOME/commhub/run/<alias>` (i.e. ~/.local/state/commhub/run/<alias>)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "commhub" / "run" / alias


class AlreadyRunning(Exception):
    """Another `commhub run` holds this alias's state directory."""


@dataclass
class Pending:
    """One event the runner received and has not finished."""

    event_id: int
    event: str
    data: dict[str, Any]
    phase: str = "queued"        # queued (memory only) -> turn -> reminded -> flagging
    started_at: str | None = None

    def record(self) -> dict[str, Any]:
        """Its JSON form in the state file."""
        return {"event_id": self.event_id, "event": self.event, "data": self.data, "phase": self.phase,
                "started_at": self.started_at}


@dataclass
class RunnerState:
    """The alias's runner state, loaded from and saved to `<dir>/runner.json`."""

    directory: Path
    alias: str
    hub_url: str
    cursor: int | None = None
    in_flight: list[Pending] = field(default_factory=list)
    done_ahead: set[int] = field(default_factory=set)
    backlog_until: int | None = None
    _lock_fd: int | None = None

    @classmethod
    def open(cls, directory: Path, alias: str, hub_url: str) -> RunnerState:
        """Make the directory private, take its lock (AlreadyRunning if held) and load the state file."""
        private_dir(directory)
        fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AlreadyRunning(f"another `commhub run` is running for {alias} ({directory})") from None
        state = cls(directory, alias, hub_url, _lock_fd=fd)
        path = directory / STATE_FILE
        if path.exists():
            saved = json.loads(path.read_text(encoding="utf-8"))
            state.cursor = int(saved["cursor"]) if saved.get("cursor") is not None else None
            state.in_flight = [Pending(int(p["event_id"]), str(p["event"]), dict(p.get("data") or {}),
                                       str(p.get("phase") or "turn"), p.get("started_at"))
                               for p in saved.get("in_flight") or []]
            state.done_ahead = {int(i) for i in saved.get("done_ahead") or []}
            backlog = saved.get("backlog_until")
            state.backlog_until = int(backlog) if backlog is not None else None
        return state

    def close(self) -> None:
        """Release the lock."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def known(self, event_id: int) -> bool:
        """Whether this event was handled already or is in flight (a replay brings it again)."""
        if self.cursor is not None and event_id <= self.cursor:
            return True
        return event_id in self.done_ahead or any(p.event_id == event_id for p in self.in_flight)

    def position(self, event_id: int) -> None:
        """The stream's first position (no cursor yet): "from now" survives a restart."""
        if self.cursor is None:
            self.cursor = event_id
            self.save()

    def first_start(self, head: int) -> None:
        """The first start takes the backlog: replay from the start, events up to `head` being from before it."""
        if self.cursor is None:
            self.cursor = 0
            self.backlog_until = head
            self.save()

    def in_backlog(self, event_id: int) -> bool:
        """Whether the event reached the alias before the runner's first start."""
        return self.backlog_until is not None and event_id <= self.backlog_until

    def begin(self, pending: Pending, phase: str = "turn") -> None:
        """Write the event into `in_flight` (before its turn starts)."""
        pending.phase = phase
        pending.started_at = pending.started_at or _now()
        if not any(p.event_id == pending.event_id for p in self.in_flight):
            self.in_flight.append(pending)
        self.save()

    def finish(self, pending: Pending, waiting: list[int]) -> None:
        """The event is done: out of `in_flight`, the cursor moved as far as `waiting` (ids received and not
        done, in memory) allows, in one atomic write."""
        self.in_flight = [p for p in self.in_flight if p.event_id != pending.event_id]
        self.done_ahead.add(pending.event_id)
        self.advance(waiting)

    def advance(self, waiting: list[int]) -> None:
        """Move the cursor to just before the oldest event not done (or to the newest done) and save."""
        open_ids = [p.event_id for p in self.in_flight] + list(waiting)
        done = sorted(self.done_ahead)
        if open_ids:
            limit = min(open_ids) - 1
            reachable = [i for i in done if i <= limit]
        else:
            reachable = done
        if reachable and (self.cursor is None or reachable[-1] > self.cursor):
            self.cursor = reachable[-1]
        if self.cursor is not None:
            self.done_ahead = {i for i in self.done_ahead if i > self.cursor}
        self.save()

    def save(self) -> None:
        """Replace the state file atomically (0600)."""
        path = self.directory / STATE_FILE
        state = {"alias": self.alias, "hub_url": self.hub_url, "cursor": self.cursor,
                 "in_flight": [p.record() for p in self.in_flight], "done_ahead": sorted(self.done_ahead),
                 "backlog_until": self.backlog_until,
                 "saved_at": _now()}
        write_private(path, json.dumps(state) + "\n")

def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
