"""One owner of the background workers across hub processes on one PostgreSQL database (docs/postgresql.md
"Background workers on several processes").

The webhook outbox, the scheduler, the A2A forwarder and the sweeper's upkeep (task expiry, pruning, retention) must
run once per database, not once per process: two processes would deliver a webhook twice, run a schedule twice,
forward an A2A task twice. So on PostgreSQL they run in the one process that holds a session-level advisory lock
(db_pg.OwnerLock, a connection of its own, used in a worker thread only):

- Every process tries to take the lock every RETRY_SECONDS. The holder waits GRACE_SECONDS (so that a previous owner
  whose lock connection was cut, but which is still running, has stopped its workers), then starts the workers.
- The owner proves its lock connection every CHECK_SECONDS (a round trip after waiting for wake-ups on it). A check
  that fails, or takes longer than STALL_SECONDS, cancels the workers at once, before GRACE_SECONDS could let
  another process start its own; then it closes the connection (freeing the lock if the server still held it) and
  waits to take it again like any other process.
- A process that is not the owner still writes outbox rows and schedule changes (in the transactions that cause
  them); its relay forwards the wake-ups its own workers would have had to the owner (NOTIFY on WAKE channel,
  db_pg.WAKE_CHANNEL), which hands them to its workers: a webhook delivery, an A2A forward or a changed schedule
  made through any process starts promptly, not at the owner's next poll.

Nothing is lost when the owner dies (kill -9: PostgreSQL frees the lock with its connection): the outboxes and
schedules are tables, and the new owner's workers start with a scan of them. A delivery cut off mid-request is sent
again by the new owner (the outbox is at-least-once; receivers dedup by event id, docs/webhooks.md).

SQLite: none of this; the `.lock` file already means one process, which runs every worker (runtime/server.py).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, cast

import trio

from ..db import DatabaseError
from ..errors import DatabaseUnavailable
from .hub import Hub

log = logging.getLogger("commhub.leader")

RETRY_SECONDS = 1.0  # how often a process that is not the owner tries to take the lock
CHECK_SECONDS = 1.0  # how long the owner waits for wake-ups before proving its lock connection again
STALL_SECONDS = 2.0  # a check slower than CHECK_SECONDS + this means the lock is lost (a hung connection)
# Between taking the lock and starting the workers: longer than a previous owner can take to notice it lost the
# lock (CHECK_SECONDS + STALL_SECONDS) and stop its workers, with a second to spare for a busy event loop.
GRACE_SECONDS = CHECK_SECONDS + STALL_SECONDS + 1.0
# A NOTIFY payload is limited to 8,000 bytes: ids beyond this many characters go in another notification.
PAYLOAD_CHARS = 7000
WEBHOOKS, BRIDGE, SCHEDULES = "webhooks", "bridge", "schedules"

Worker = Callable[..., Awaitable[None]]  # a background job started with `await nursery.start(worker, hub)`


class OwnerLock(Protocol):
    """What the owner job needs of the engine's lock connection (db_pg.OwnerLock): blocking calls."""

    def try_take(self) -> bool:
        """Take the lock if free (connecting first if needed); True when this process holds it now."""
        ...

    def wait(self, timeout: float) -> list[str]:  # noqa: ASYNC109 (blocking, in a worker thread)
        """Wake-up payloads received within `timeout` seconds; raises when the connection (and lock) is lost."""
        ...

    def notify(self, payloads: list[str]) -> None:
        """Send wake-ups to the owner."""

    def drop(self) -> None:
        """Close the connection (freeing the lock if it is still held)."""

    def stop(self) -> None:
        """Close the connection (now or when the thread using it returns)."""


class Leadership:
    """One process's side of the owner lock: whether it owns the workers now, and how often it took them over."""

    def __init__(self, hub: Hub, lock: OwnerLock, workers: Sequence[Worker]):  # noqa: D107
        self.hub = hub
        self.lock = lock
        self.workers = list(workers)
        self.owner = False
        self.terms = 0  # how many times this process became the owner (tests and logs)
        self.relayed = 0  # wake-up notifications sent to another owner
        # Its own thread, not one of trio's shared default limiter (argon2 and backups keep those).
        self._thread = trio.CapacityLimiter(1)

    async def _call(self, fn: Callable[..., object], *args: object) -> object:
        return await trio.to_thread.run_sync(fn, *args, abandon_on_cancel=True, limiter=self._thread)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Background job (root nursery, PostgreSQL only): take the lock when free, run the workers while it holds
        it, relay wake-ups to the owner while it does not."""
        task_status.started()
        try:
            while True:
                async with trio.open_nursery() as standby:
                    standby.start_soon(self._relay)
                    await self._take()
                    standby.cancel_scope.cancel()
                log.info("background workers: this process holds the owner lock; starting them in %.0f s",
                         GRACE_SECONDS)
                reason = await self._watch(trio.current_time() + GRACE_SECONDS)
                if reason is None:
                    reason = await self._own()
                self.owner = False
                log.warning("background workers: stopped; %s", reason)
                await self._call(self.lock.drop)
                await trio.sleep(RETRY_SECONDS)
        finally:
            self.owner = False
            self.lock.stop()

    async def _take(self) -> None:
        """Return once this process holds the owner lock (tries every RETRY_SECONDS)."""
        said = False
        while True:
            try:
                if await self._call(self.lock.try_take):
                    return
                if not said:
                    log.info("background workers: another process runs them (it holds the owner lock); this one "
                             "takes over if it stops")
                    said = True
            except (DatabaseUnavailable, DatabaseError) as exc:
                log.warning("background workers: cannot reach the owner lock (%s); trying again", exc)
            await trio.sleep(RETRY_SECONDS)  # a poll of the lock, not synchronisation

    async def _own(self) -> str:
        """Run the workers until the lock is lost; why it was."""
        async with trio.open_nursery() as owned:
            for worker in self.workers:
                await owned.start(worker, self.hub)
            self.owner = True
            self.terms += 1
            log.info("background workers: running in this process (webhooks, schedules, A2A forwards, upkeep)")
            reason = await self._watch(None)
            owned.cancel_scope.cancel()  # before anything else: another process may take over soon
        return reason or "the owner lock was lost"

    async def _watch(self, until: float | None) -> str | None:
        """Wait on the lock connection, handing wake-ups to the workers (when they run), until `until` (None: for
        ever); the reason when the lock is lost first."""
        while until is None or trio.current_time() < until:
            wait = CHECK_SECONDS if until is None else max(0.0, min(CHECK_SECONDS, until - trio.current_time()))
            payloads: list[str] = []
            with trio.move_on_after(wait + STALL_SECONDS) as stalled:
                try:
                    payloads = cast("list[str]", await self._call(self.lock.wait, wait))
                except (DatabaseUnavailable, DatabaseError) as exc:
                    return f"the owner lock's connection failed: {exc}"
            if stalled.cancelled_caught:
                return f"the owner lock's connection did not answer within {wait + STALL_SECONDS:.0f} s"
            if until is None:  # workers running: wake them (during the grace they start with a scan anyway)
                wake(self.hub, payloads)
        return None

    async def _relay(self) -> None:
        """While another process owns the workers: send it the wake-ups this process's writes made (outbox rows,
        schedule changes), and keep the due sets that only the workers empty from growing."""
        hub = self.hub
        while True:
            async with trio.open_nursery() as first:  # whichever wake-up comes first
                for name in ("webhook_wakeup", "bridge_wakeup", "schedule_wakeup"):
                    first.start_soon(_set_then_cancel, getattr(hub, name), first.cancel_scope)
            payloads = take_wakeups(hub)
            if not payloads:
                continue
            try:
                await self._call(self.lock.notify, payloads)
                self.relayed += len(payloads)
            except (DatabaseUnavailable, DatabaseError) as exc:  # the owner's next poll finds the rows
                log.warning("background workers: could not wake the owner (%s)", exc)


async def _set_then_cancel(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


def take_wakeups(hub: Hub) -> list[str]:
    """The wake-up notifications for what is pending on this (non-owner) process, emptying it: 'webhooks <id>…',
    'bridge <task id>…', 'schedules'."""
    payloads: list[str] = []
    if hub.webhook_wakeup.is_set():
        hub.webhook_wakeup = trio.Event()
        payloads += _chunked(WEBHOOKS, sorted(hub.webhooks_due))
        hub.webhooks_due.clear()
    if hub.bridge_wakeup.is_set():
        hub.bridge_wakeup = trio.Event()
        payloads += _chunked(BRIDGE, sorted(hub.bridge_due))
        hub.bridge_due.clear()
    if hub.schedule_wakeup.is_set():
        hub.schedule_wakeup = trio.Event()
        payloads.append(SCHEDULES)
    return payloads


def _chunked(kind: str, ids: list[str]) -> list[str]:
    if not ids:
        return []
    out, part = [], [kind]
    size = len(kind)
    for item in ids:
        if size + 1 + len(item) > PAYLOAD_CHARS:
            out.append(" ".join(part))
            part, size = [kind], len(kind)
        part.append(item)
        size += 1 + len(item)
    out.append(" ".join(part))
    return out


def wake(hub: Hub, payloads: list[str]) -> None:
    """On the owner: hand other processes' wake-ups to the workers, as this process's own writes would."""
    for payload in payloads:
        kind, *ids = payload.split(" ")
        if kind == WEBHOOKS:
            hub.wake_webhooks(*ids)
        elif kind == BRIDGE:
            hub.bridge_due.update(ids)
            hub.bridge_wakeup.set()
        elif kind == SCHEDULES:
            hub.schedules_changed()
        else:
            log.warning("background workers: ignored an unknown wake-up %r", payload[:80])
