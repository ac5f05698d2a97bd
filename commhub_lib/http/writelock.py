"""The write-lock wrapper: a request's write that meets another process's lock waits for it (applied once per request
by the pipeline, http/app.py and http/dispatch.py)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import TypeVar

import trio

from ..db import Database
from ..errors import DatabaseBusy

T = TypeVar("T")


class _RequestWrites:
    """What WriteLockWatch knows of the current request: the commits it made, and its lock deadline."""

    __slots__ = ("commits", "deadline")

    def __init__(self, deadline: float):
        self.commits = 0
        self.deadline = deadline


# The current request's writes (set per request, in its task's context; None outside requests).
_REQUEST: ContextVar[_RequestWrites | None] = ContextVar("commhub_request_writes", default=None)
# After another process's lock was last met, requests that may write wait for it first for this long.
CONTENDED_SECONDS = 5.0
MAX_WRITE_ATTEMPTS = 8


class WriteLockWatch:
    """Writes that meet another process's write lock (a CLI command, a backup) wait for it asynchronously.

    Most of the time no other process holds the lock, so a request just writes: no probe before it (a
    BEGIN IMMEDIATE/ROLLBACK pair per POST cost 20-30 µs). A write that meets the lock fails fast (the
    connection's short busy timeout, db.LOOP_BUSY_TIMEOUT_MS); `run` then waits off the loop's back
    (`Database.wait_for_write_lock`) and runs the attempt again, as long as the attempt had committed nothing
    (re-running it cannot repeat a write) and the request's deadline (write_lock_wait_seconds) allows. For
    CONTENDED_SECONDS after the lock was met, every request that may write waits for it first (`before`), so
    a long lock does not make each request pay the short busy timeout on the event loop."""

    def __init__(self, db: Database, wait_seconds: float):
        self.db = db
        self.wait_seconds = wait_seconds
        self.contended_until = 0.0
        self._counting = False

    def start_request(self) -> None:
        """Count this request's commits from here on, and start its lock deadline."""
        if not self._counting:  # at the first request, not in create_app: an app may be built without a database
            self.db.con.set_commit_hook(_count_commit, id=self)
            self._counting = True
        _REQUEST.set(_RequestWrites(time.monotonic() + self.wait_seconds))

    def contended(self) -> bool:
        """Whether another process's write lock was met lately."""
        return time.monotonic() < self.contended_until

    async def before(self) -> None:
        """While the lock is contended, wait for it before running (503 database_busy at the deadline)."""
        if self.contended():
            await self._wait()

    async def run(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """`await attempt()`, run again after waiting for the lock when it failed on it before committing."""
        for tries in range(1, MAX_WRITE_ATTEMPTS + 1):
            state = _REQUEST.get()
            before = state.commits if state is not None else -1
            try:
                return await attempt()
            except DatabaseBusy:
                self.contended_until = time.monotonic() + CONTENDED_SECONDS
                if state is None or state.commits != before or tries == MAX_WRITE_ATTEMPTS:
                    raise
                await self._wait()
        raise AssertionError("unreachable")  # pragma: no cover

    async def _wait(self) -> None:
        state = _REQUEST.get()
        deadline = state.deadline if state is not None else time.monotonic() + self.wait_seconds
        try:
            await self.db.wait_for_write_lock(max(0.0, deadline - time.monotonic()))
        except DatabaseBusy:
            self.contended_until = time.monotonic() + CONTENDED_SECONDS
            raise
        await trio.lowlevel.checkpoint()


def _count_commit() -> bool:
    """APSW commit hook: count a commit made inside a request (False: let it go ahead)."""
    state = _REQUEST.get()
    if state is not None:
        state.commits += 1
    return False
