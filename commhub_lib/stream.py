"""The one event-stream loop behind `GET /events/<alias>`, `GET /events?network_id=` and `GET /mcp`.

One fan-out (the broker), one loop, several wire formats: a `Wire` turns positions, events, heartbeats and
the closing word into bytes. The order is ntfy's: the caller subscribes first, then this loop states the
position, replays from the database what came after the client's Last-Event-ID, and goes live, skipping live
events the replay already sent; so nothing committed while connecting is lost or sent twice.
"""

from __future__ import annotations

import random
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import trio

from .broker import Broker, Event, StreamSlot, Subscriber, Tally
from .config import Settings
from .db import Database, in_hop
from .errors import RateLimited, ValidationFailed
from .store import events as event_store

REPLAY_BATCH = 500
MAX_EVENT_ID = 2**63 - 1  # SQLite's largest integer: a larger id cannot name any event


class Wire(Protocol):
    """How one kind of stream writes what the loop hands it."""

    def opening(self, position: int) -> bytes:
        """The first bytes: the reconnect hint and the stream's position (an id without an event)."""
        ...

    def event(self, event_id: int, alias: str, name: str, data: str, at: str | None = None) -> bytes:
        """One durable event; `at` (a replay only): when it happened, 'YYYY-MM-DD HH:MM:SS' UTC."""
        ...

    def heartbeat(self) -> bytes:
        """Sent when nothing else was sent for a heartbeat period."""
        ...

    def closing(self, reason: str, last: int) -> bytes:
        """The last bytes: why the stream ends and which id to resume from."""
        ...


@dataclass(frozen=True)
class Scope:
    """What a stream carries: one alias of a network, or (alias None) every alias of it."""

    network_id: str
    alias: str | None

    def latest(self, db: Database) -> int:
        """The id of the newest retained event in this scope (0 if none)."""
        if self.alias is None:
            return event_store.latest_network_event_id(db, self.network_id)
        return event_store.latest_alias_event_id(db, self.network_id, self.alias)

    def after(self, db: Database, last: int, limit: int) -> list[dict[str, Any]]:
        """Retained events of this scope with id > last, oldest first."""
        if self.alias is None:
            return event_store.network_events_after(db, self.network_id, last, limit)
        return event_store.events_after(db, self.network_id, self.alias, last, limit)


def parse_last_event_id(raw: str | None, db: Database) -> int | None:
    """The client's Last-Event-ID (header or ?last_event_id=): None when absent (live from now), 0 for
    everything retained, else the id to resume after; a clean 400 for anything that cannot be an event id."""
    if raw is None or not raw.strip():
        return None
    text = raw.strip()
    if not text.isdigit():
        raise ValidationFailed("Last-Event-ID: must be the integer id of an event (0 = replay everything retained)")
    value = int(text)
    if value > MAX_EVENT_ID:
        raise ValidationFailed(f"Last-Event-ID: {text[:30]} is larger than any event id can be; reconnect with the "
                               "id of the last event you received, or 0 to replay everything retained")
    newest = event_store.highest_event_id_ever(db)
    if value > newest:
        raise ValidationFailed(f"Last-Event-ID: {value} is ahead of the newest event this hub has issued ({newest}); "
                               "was the database replaced? Reconnect with Last-Event-ID: 0 to replay everything "
                               "retained, or without it to start from now")
    return value


def take_stream_slot(broker: Broker, settings: Settings, token_id: str, client_ip: str,
                     body: AsyncIterator[bytes] | None = None, kind: str = "events") -> StreamSlot:
    """Refuse one more stream beyond the per-token or per-address cap (429 naming the limit), else count it at
    once, in the same step (no await between the check and the count: a burst of opens cannot all pass).

    The stream's body releases the slot when it ends; `body`, when given, also releases it if it is dropped
    without ever being started (the client left before the answer began). `kind` (events, network, mcp, listen)
    is what the open-streams metric counts it as.

    From an opener run off the loop (PostgreSQL's db.run), it is done on the loop, still in one step: a worker
    thread's count could interleave with the loop's releases of the same counters."""
    if in_hop():
        return trio.from_thread.run_sync(take_stream_slot, broker, settings, token_id, client_ip, body, kind)
    check_stream_caps(broker, settings, token_id, client_ip)
    slot = broker.take_slot(token_id, client_ip, kind)
    if body is not None:
        weakref.finalize(body, slot.release)
    return slot


@contextmanager
def slot_released(slot: StreamSlot) -> Iterator[None]:
    """Release a stream's slot when the block (the stream's body) ends."""
    try:
        yield
    finally:
        slot.release()


def check_stream_caps(broker: Broker, settings: Settings, token_id: str, client_ip: str) -> None:
    """Refuse one more stream beyond the per-token or per-address cap (429 naming the limit)."""
    if settings.max_streams_per_token and broker.streams_of_token(token_id) >= settings.max_streams_per_token:
        raise RateLimited(f"this token already holds {settings.max_streams_per_token} open event streams, the limit "
                          "(COMMHUB_MAX_STREAMS_PER_TOKEN); close one, or give each agent its own token", 5)
    if settings.max_streams_per_ip and broker.streams_from_ip(client_ip) >= settings.max_streams_per_ip:
        raise RateLimited(f"{client_ip} already holds {settings.max_streams_per_ip} open event streams, the limit "
                          "(COMMHUB_MAX_STREAMS_PER_IP); close some before opening more", 5)


@dataclass
class Progress:
    """What a finished loop leaves behind: the last id the client was given, and why the stream ended."""

    last: int = 0
    reason: str = "closed"


async def follow(db: Database, sub: Subscriber, scope: Scope, after: int | None, wire: Wire,
                 heartbeat_seconds: float, progress: Progress,
                 still_allowed: Callable[[], bool] | None = None) -> AsyncIterator[bytes]:
    """Position, replay, then live events and heartbeats until the subscriber's channel ends.

    `still_allowed` is asked on every heartbeat (it must be cheap: service/guard.py): False ends the stream,
    whose subscriber it has then revoked with the reason."""
    # The position is the client's own Last-Event-ID when it resumes (the replay then moves it on), so a drop
    # during the replay never skips what was not yet replayed; otherwise the newest event of the scope.
    last = await db.run(scope.latest, db) if after is None else after  # (db.run: off the loop on PostgreSQL)
    progress.last = last
    tally = sub.tally or Tally()  # counts for the metrics (a plain add: no cost worth measuring per event)
    yield wire.opening(last)
    if after is not None:
        while rows := await db.run(scope.after, db, last, REPLAY_BATCH):
            for row in rows:
                yield wire.event(row["id"], row["alias"], row["event"], row["data"], row["created_at"])
                last = progress.last = row["id"]
                tally.replayed += 1
            if len(rows) < REPLAY_BATCH:
                break
    # Each stream keeps its own heartbeat deadline, so heartbeats are spread by connect time: one ticker waking
    # every stream at once stalled the loop ~100 ms per beat at 1,000 streams. Streams that connect in a burst
    # (a reconnect storm: 2,000 within a second) would still beat together every period, stalling the loop
    # 100-300 ms each time at 5,000 streams: the first beat comes after a random half to whole period.
    next_beat = trio.current_time() + heartbeat_seconds * random.uniform(0.5, 1.0)
    while True:
        event: Event | None = None
        with trio.move_on_at(next_beat):  # receive inside the scope, yield outside it
            try:
                event = await sub.receive.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                break
        if event is None:
            if still_allowed is not None and not still_allowed():
                break
            next_beat += heartbeat_seconds
            if next_beat <= trio.current_time():  # fell behind (a slow write): no catch-up burst
                next_beat = trio.current_time() + heartbeat_seconds
            yield wire.heartbeat()
        elif event.id > last:  # skip what the position or the replay already covered
            yield wire.event(event.id, event.alias, event.name, event.data)
            last = progress.last = event.id
            tally.pushed += 1
    progress.reason = sub.closed_reason or "closed"
    yield wire.closing(progress.reason, last)
