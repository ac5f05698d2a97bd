"""Events across hub processes on one PostgreSQL database (docs/postgresql.md "Several processes").

Each process NOTIFYs, in the transaction that writes events, '<origin> <lowest id> <highest id>' (db_pg.
notify_events_on_commit: delivered only on commit). Each process has one listener (db_pg.EventListener, its own
connection, run in a worker thread) whose job here, on a notification from another process, reads the new rows
of the events table (the source of truth, not the payload) and publishes them to the local broker in id order,
skipping every id this process already pushed (its own, published by Hub.publish, or one read before). After a
lost connection it reconnects and reads the table again from where it was: nothing committed meanwhile is lost.

SQLite hubs have no Fanout (Hub.fanout None): one process per database, nothing to cross.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Protocol

import trio

from ..broker import Event
from ..db import DatabaseError
from ..errors import DatabaseUnavailable
from ..store import events as event_store
from .hub import A2A_CACHE, WEBHOOKS_CACHE

if TYPE_CHECKING:
    from .hub import Hub

log = logging.getLogger("commhub.fanout")

# How long one wait for a notification lasts in the worker thread: bounds how long a stopped server's abandoned
# thread holds the listener connection.
WAIT_SECONDS = 1.0
# Ids remembered as pushed, below the highest one: a transaction of another process that drew its ids before
# ours and committed after (ids are drawn at INSERT, visible at COMMIT) is read back this far.
WINDOW = 50_000
# How far below the highest pushed id a reconnect reads again (a late commit of lower ids while disconnected).
CATCH_UP_BACK = 1_000
RETRY_FIRST, RETRY_MAX = 0.2, 5.0
# A notification that is not events: '<origin> changed <cache>' (Fanout.changed).
CHANGED = "changed"
ALL_CACHES = (WEBHOOKS_CACHE, A2A_CACHE)
# Ids below an own event checked one by one for a gap before its push; a longer stretch is read from the table.
GAP_SCAN = 64


class Listener(Protocol):
    """What the fanout job needs of the engine's listener (db_pg.EventListener): blocking calls."""

    def open(self) -> None:
        """Connect and LISTEN."""

    def wait(self, timeout: float) -> list[str]:  # noqa: ASYNC109 (blocking, in a worker thread)
        """Notification payloads received within `timeout` seconds."""
        ...

    def events_from(self, first_id: int) -> list[Event]:
        """Committed events with id >= first_id, in id order."""
        ...

    def stop(self) -> None:
        """Close the connection (now or when the thread using it returns)."""


class Fanout:
    """One process's bookkeeping: its origin tag, the event ids of the open transaction, and the ids it pushed."""

    def __init__(self, hub: Hub):  # noqa: D107 (the fanout of one hub process)
        self.hub = hub
        self.origin = secrets.token_hex(8)  # tells this process's own notifications from the others'
        # The event ids written by the transaction now open, per thread: on PostgreSQL, operations run off the loop
        # (db_pg.PgDatabase.run) hold transactions of their own at the same time, each committed by its thread.
        self._open = threading.local()
        self.floor = 0  # nothing at or below it is read from the table (it was there before this process)
        self.top = 0  # the highest id pushed to local streams
        self._pushed: set[int] = set()  # ids pushed, above top - WINDOW
        self._network_top: dict[str, int] = {}  # per network, the highest id pushed (pushes go up per network)
        self.filled = 0  # other processes' events pushed ahead of this process's own (push_own; tests and logs)
        self.delivered = 0  # events of other processes pushed here (for tests and logs)
        self.reconnects = 0
        # Sends a notification to every other process at once (db_pg.notify_now; set by runtime/server.py).
        self.notify: Callable[[str], None] | None = None

    def changed(self, cache: str) -> None:
        """This process changed what `cache` holds (hub.WEBHOOKS_CACHE, A2A_CACHE): the others must forget theirs
        (one notification, after the commit; a failure is logged: the others forget every cache when their listener
        reconnects, which a lost database makes them do)."""
        if self.notify is None:
            return
        try:
            self.notify(f"{self.origin} {CHANGED} {cache}")
        except (DatabaseUnavailable, DatabaseError) as exc:
            log.warning("could not tell the other processes that the %s changed: %s", cache, exc)

    def forget(self, caches: Iterable[str]) -> None:
        """Forget this process's copies of these caches (another process changed them, or the listener was away)."""
        for cache in caches:
            if cache == WEBHOOKS_CACHE:
                self.hub.webhooks_changed(here_only=True)
            elif cache == A2A_CACHE:
                self.hub.a2a_bindings_changed(here_only=True)

    def recorded(self, event_id: int) -> None:
        """An event was written in the open transaction (Hub.record_event)."""
        open_ = self._open
        lo = getattr(open_, "lo", None)
        open_.lo = event_id if lo is None else min(lo, event_id)
        open_.hi = max(getattr(open_, "hi", 0), event_id)

    def take_range(self) -> tuple[int, int] | None:
        """The open transaction's (lowest, highest) event id, forgotten (the commit hook NOTIFYs it)."""
        open_ = self._open
        lo = getattr(open_, "lo", None)
        if lo is None:
            return None
        ids = (lo, open_.hi)
        open_.lo, open_.hi = None, 0
        return ids

    def push_own(self, events: list[Event]) -> None:
        """Push this process's own committed events (Hub.publish), each after every event of its network with a
        lower id: another process's, committed earlier (store.events.insert_event's event-order lock) but not yet
        brought here by the listener, is read from the table and pushed first. Otherwise a stream would get the
        own event first and then skip the other as already behind it (lost), or get it out of order."""
        lowest: dict[str, int] = {}
        for event in events:
            lowest[event.network_id] = min(lowest.get(event.network_id, event.id), event.id)
        for network_id, below in lowest.items():
            # Never below the listener's window (a network first written here long after start reads little).
            after = max(self._network_top.get(network_id, self.floor), self.top - WINDOW)
            if not self._gap(after, below):
                continue
            try:
                rows = event_store.network_events_between(self.hub.db, network_id, after, below)
            except (DatabaseUnavailable, DatabaseError) as exc:  # committed already: push it anyway, say so
                log.warning("could not read events below %d of %s before pushing them: %s", below, network_id, exc)
                continue
            self.filled += self._push(Event(r["id"], network_id, r["alias"], r["event"], r["data"]) for r in rows)
        self._push(events)

    def start_at(self, highest: int) -> None:
        """Events up to `highest` existed before this process listened: streams replay them, never pushed."""
        self.floor = self.top = max(self.top, highest)

    def first_to_read(self, payloads: list[str]) -> int | None:
        """Where a read of the table starts for these notifications; None when all are this process's own."""
        lowest: int | None = None
        for payload in payloads:
            origin, _, rest = payload.partition(" ")
            if origin == self.origin:
                continue
            if rest.startswith(CHANGED + " "):  # a cache another process changed, not events
                self.forget([rest.split(" ", 1)[1]])
                continue
            try:
                lo = int(rest.split(" ", 1)[0])
            except ValueError:
                log.warning("ignored a malformed notification: %r", payload[:80])
                continue
            lowest = lo if lowest is None else min(lowest, lo)
        if lowest is None:
            return None
        return self._bounded(min(lowest, self.top + 1))

    def catch_up_from(self) -> int:
        """Where a read after a (re)connect starts: a little below the top, for late commits of lower ids."""
        return self._bounded(self.top + 1 - CATCH_UP_BACK)

    def deliver(self, events: list[Event]) -> int:
        """Push the events (read by the listener) not pushed yet to the local broker, in id order; how many."""
        pushed = self._push(events)
        self.delivered += pushed
        return pushed

    def _push(self, events: Iterable[Event]) -> int:
        pushed = 0
        for event in sorted(events, key=lambda e: e.id):
            if event.id <= self.floor or event.id in self._pushed:
                continue
            self._mark(event.id)
            if event.id > self._network_top.get(event.network_id, 0):
                self._network_top[event.network_id] = event.id
            self.hub.broker.publish(event)
            pushed += 1
        return pushed

    def _gap(self, after: int, below: int) -> bool:
        """Whether an id between the two may be an event not pushed here (any id not pushed: another process's
        event of any network, or an id a rolled-back transaction drew). One process alone has none."""
        if below - after > GAP_SCAN:
            return True
        return any(i not in self._pushed for i in range(max(after, self.floor) + 1, below))

    def _bounded(self, first: int) -> int:
        return max(first, self.floor + 1, self.top + 1 - WINDOW)

    def _mark(self, event_id: int) -> None:
        self._pushed.add(event_id)
        if event_id > self.top:
            self.top = event_id
        if len(self._pushed) > 2 * WINDOW:  # forget ids below the window (reads never start below it)
            self._pushed = {i for i in self._pushed if i > self.top - WINDOW}


async def run_fanout(hub: Hub, listener: Listener, *,
                     task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Background job (root nursery, PostgreSQL only): push other processes' events to this process's streams.
    Started once the listener has its position (every event committed after it reaches local streams)."""
    fanout = hub.fanout
    assert fanout is not None, "run_fanout needs hub.fanout (PostgreSQL engine)"
    fanout.start_at(event_store.highest_event_id_ever(hub.db))
    task_status.started()
    retry = RETRY_FIRST
    # Its own thread, not one of trio's shared default limiter: the listener waits in it nearly all the time, and
    # argon2 and backups (and the tests that watch that limiter to see a hash running) keep the shared ones.
    own = trio.CapacityLimiter(1)
    try:
        while True:
            try:
                await trio.to_thread.run_sync(listener.open, abandon_on_cancel=True, limiter=own)
                # A change another process made while this one was not listening came with no notification here.
                fanout.forget(ALL_CACHES)
                # Listening now: what was committed before (while disconnected) is read from the table.
                fanout.deliver(await trio.to_thread.run_sync(listener.events_from, fanout.catch_up_from(),
                                                             abandon_on_cancel=True, limiter=own))
                retry = RETRY_FIRST
                while True:
                    payloads = await trio.to_thread.run_sync(listener.wait, WAIT_SECONDS, abandon_on_cancel=True,
                                                             limiter=own)
                    first = fanout.first_to_read(payloads)
                    if first is not None:
                        fanout.deliver(await trio.to_thread.run_sync(listener.events_from, first,
                                                                     abandon_on_cancel=True, limiter=own))
            except (DatabaseUnavailable, DatabaseError) as exc:
                fanout.reconnects += 1
                log.warning("event listener: %s; reconnecting in %.1f s", exc, retry)
                await trio.sleep(retry)  # a back-off, not synchronisation
                retry = min(retry * 2, RETRY_MAX)
    finally:
        listener.stop()
