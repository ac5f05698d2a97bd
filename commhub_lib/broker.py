"""Fan-out of committed events to live streams and long-poll waiters: per alias, and per network for observers.

Each subscriber has a bounded trio memory channel. Publishing never blocks: when a subscriber's buffer
is full it is dropped (its channel closed), its stream ends, and the client reconnects with
Last-Event-ID and replays from the database. A slow reader therefore costs the hub nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import trio

from .db import in_hop, on_loop
from .vocabulary import STREAM_HOLDERS, StreamHolder

Key = tuple[str, str]  # (network_id, alias)
# Why every stream ends when the server stops; stream loops compare with it to leave their per-stream
# close work (presence, a log line) to the one pass the shutdown makes for all of them.
SHUTDOWN = "shutdown"


@dataclass(frozen=True)
class Event:
    """A committed event: its durable id, where it goes, its name and its JSON data."""

    id: int
    network_id: str
    alias: str
    name: str
    data: str


@dataclass
class Tally:
    """Events written to streams since start (one per broker; read by commhub_lib/metrics.py at scrape time):
    live ones pushed as they were published, and ones replayed from the database after a Last-Event-ID."""

    pushed: int = 0
    replayed: int = 0


@dataclass(eq=False)
class Subscriber:
    """One live reader of an alias's events (or, with `alias` None, of every alias of a network)."""

    network_id: str
    alias: str | None
    send: trio.MemorySendChannel[Event]
    receive: trio.MemoryReceiveChannel[Event]
    # What kind of holder this stream makes of its alias (runner, channel, stream), or None when it does not hold
    # it online (a long-poll waiter, a person's stream): docs/presence.md.
    holds: StreamHolder | None
    token_id: str | None = None
    dropped: bool = False
    closed_reason: str = ""
    tally: Tally | None = None  # the broker's, so a stream counts what it writes (stream.follow)

    @property
    def counts_for_presence(self) -> bool:
        """Whether this live subscriber keeps its alias online."""
        return self.holds is not None and not self.dropped

    @property
    def key(self) -> Key:
        """(network_id, alias) of an alias subscriber."""
        return (self.network_id, self.alias or "")

    def close(self, reason: str) -> None:
        """End this subscriber's stream: its reader sees the channel end and says why."""
        self.dropped = True
        self.closed_reason = self.closed_reason or reason
        self.send.close()

    def revoke(self, reason: str) -> None:
        """End this subscriber at once, dropping what its buffer still holds (its reader lost the right to it)."""
        self.close(reason)
        self.receive.close()  # wakes a reader waiting in receive() with ClosedResourceError


class StreamSlot:
    """One open stream counted against its token's and its address's caps, from the moment the caps were checked
    (Broker.take_slot) until release(); releasing twice is harmless."""

    __slots__ = ("_broker", "token_id", "client_ip", "kind", "held")

    def __init__(self, broker: Broker, token_id: str | None, client_ip: str, kind: str):
        self._broker = broker
        self.token_id = token_id
        self.client_ip = client_ip
        self.kind = kind
        self.held = True

    def release(self) -> None:
        """Stop counting this stream (it ended, or it never started)."""
        if self.held:
            self.held = False
            self._broker._release_slot(self)


class TaskWatcher:
    """One reader of a task's changes (an A2A stream, a blocking A2A send): woken when the task's timeline grows.
    A change between two waits is kept, so nothing is missed between reading the task and waiting again."""

    __slots__ = ("_changed", "closed")

    def __init__(self) -> None:
        self._changed = trio.Event()
        self.closed = False

    def wake(self) -> None:
        """The task changed (or the server stops: `closed`)."""
        self._changed.set()

    async def wait(self) -> None:
        """Until the task changes again (at once if it changed since the last wait)."""
        await self._changed.wait()
        self._changed = trio.Event()


class TaskWatch:
    """Readers of single tasks by task id. A task's status changes (a recipient fetching it: delivered -> running)
    publish no stream event, so the A2A streams, which follow one task, are woken here by every new timeline entry
    (service/tasks.py calls `changed` inside the write; the woken reader runs after the commit)."""

    def __init__(self) -> None:
        self._watchers: dict[str, set[TaskWatcher]] = {}
        self.closing = False

    @contextmanager
    def watch(self, task_id: str) -> Iterator[TaskWatcher]:
        """A watcher of one task for the duration of the block."""
        watcher = TaskWatcher()
        if self.closing:
            watcher.closed = True
            watcher.wake()
        watchers = self._watchers.setdefault(task_id, set())
        watchers.add(watcher)
        try:
            yield watcher
        finally:
            watchers.discard(watcher)
            if not watchers:
                self._watchers.pop(task_id, None)

    def changed(self, task_id: str) -> None:
        """Wake every reader of this task (a dict miss when nobody follows it). From a worker thread (PostgreSQL's
        db.run): on the loop once the operation returns (a trio.Event is set on the loop only)."""
        if in_hop():
            on_loop(self.changed, task_id)
            return
        for watcher in self._watchers.get(task_id, ()):
            watcher.wake()

    def close_all(self) -> None:
        """Wake and end every reader (the server stops)."""
        self.closing = True
        for watchers in self._watchers.values():
            for watcher in watchers:
                watcher.closed = True
                watcher.wake()


class Broker:
    """Registry of subscribers by (network_id, alias), and of network observers by network_id."""

    def __init__(self, buffer: int):
        self.buffer = buffer
        self._subs: dict[Key, set[Subscriber]] = {}
        self._network_subs: dict[str, set[Subscriber]] = {}
        self._streams_by_token: Counter[str] = Counter()
        self._streams_by_ip: Counter[str] = Counter()
        self.closing = False
        self.stopping = trio.Event()  # set at shutdown, for streams that wait without a subscriber
        self.streams_opened = 0  # streams (not long-polls) ever opened and closed: their churn, for the gc job
        self.streams_closed = 0
        self.open_by_kind: Counter[str] = Counter()  # open streams by kind (events, network, mcp, listen): metrics
        self.tally = Tally()
        # Aliases whose stored presence a stream open found stale: written together, a moment later, by the
        # presence writer of the root nursery (service/sessions.py), not in one transaction per open. Their
        # streams keep them online meanwhile, as every reader of presence asks this broker first.
        self.presence_due: set[Key] = set()
        # Several processes on PostgreSQL (service/shared.py): the aliases whose holding streams opened or closed
        # since the shared presence writer last looked (kept only while `track_holders` is set).
        self.track_holders = False
        self.holders_changed: set[Key] = set()
        self.tasks = TaskWatch()  # readers of single tasks (the A2A streams)

    @contextmanager
    def subscribe(self, network_id: str, alias: str | None, *, holds: StreamHolder | None = None,
                  buffer: int | None = None, token_id: str | None = None) -> Iterator[Subscriber]:
        """Register a subscriber for the duration of the block (alias None: every alias of the network); `holds`:
        the kind of holder it makes of the alias while it lives (None: it does not keep the alias online)."""
        send, receive = trio.open_memory_channel[Event](buffer or self.buffer)
        sub = Subscriber(network_id, alias, send, receive, holds, token_id, tally=self.tally)
        if self.closing:
            sub.close(SHUTDOWN)
        registry = self._subs.setdefault(sub.key, set()) if alias is not None else \
            self._network_subs.setdefault(network_id, set())
        registry.add(sub)
        tracked = holds is not None and alias is not None and self.track_holders
        if tracked:
            self.holders_changed.add(sub.key)
        try:
            yield sub
        finally:
            registry.discard(sub)
            if tracked:
                self.holders_changed.add(sub.key)
            if not registry:
                if alias is not None:
                    self._subs.pop(sub.key, None)
                else:
                    self._network_subs.pop(network_id, None)
            send.close()
            receive.close()

    def take_slot(self, token_id: str | None, client_ip: str, kind: str = "events") -> StreamSlot:
        """Count one more open stream against its token and address now, in the same step as the caps are
        checked (stream.take_stream_slot), so a burst of opens cannot all pass the check before any counts."""
        self._streams_by_ip[client_ip] += 1
        if token_id is not None:
            self._streams_by_token[token_id] += 1
        self.streams_opened += 1
        self.open_by_kind[kind] += 1
        return StreamSlot(self, token_id, client_ip, kind)

    def _release_slot(self, slot: StreamSlot) -> None:
        self.streams_closed += 1
        self.open_by_kind[slot.kind] -= 1
        self._streams_by_ip[slot.client_ip] -= 1
        if self._streams_by_ip[slot.client_ip] <= 0:
            del self._streams_by_ip[slot.client_ip]
        if slot.token_id is not None:
            self._streams_by_token[slot.token_id] -= 1
            if self._streams_by_token[slot.token_id] <= 0:
                del self._streams_by_token[slot.token_id]

    def publish(self, event: Event) -> None:
        """Hand an event to every subscriber of its alias and of its network without ever waiting (from a worker
        thread: on the loop once its operation returns; Hub.publish pushes PostgreSQL's events in commit order)."""
        if in_hop():
            on_loop(self.publish, event)
            return
        for sub in list(self._subs.get((event.network_id, event.alias), ())):
            self._offer(sub, event)
        for sub in list(self._network_subs.get(event.network_id, ())):
            self._offer(sub, event)

    @staticmethod
    def _offer(sub: Subscriber, event: Event) -> None:
        if sub.dropped:
            return
        try:
            sub.send.send_nowait(event)
        except trio.WouldBlock:
            # Too slow: end this stream; the client reconnects and replays from the database.
            sub.close("slow_reader")
        except trio.ClosedResourceError:
            sub.dropped = True

    def subscriber_count(self) -> int:
        """All live subscribers (streams and long-poll waiters)."""
        return sum(len(s) for s in self._subs.values()) + sum(len(s) for s in self._network_subs.values())

    def streams_of_token(self, token_id: str) -> int:
        """Open streams (not long-polls) held with one token."""
        return self._streams_by_token.get(token_id, 0)

    def streams_from_ip(self, client_ip: str) -> int:
        """Open streams (not long-polls) held from one client address."""
        return self._streams_by_ip.get(client_ip, 0)

    def stream_count(self, network_id: str, alias: str, but: Subscriber | None = None) -> int:
        """How many live agent streams (that count for presence) an alias has (`but`: not counting that one)."""
        return sum(1 for s in self._subs.get((network_id, alias), ()) if s.counts_for_presence and s is not but)

    def held_by(self, network_id: str, alias: str) -> StreamHolder | None:
        """The strongest kind of live stream holding an alias (runner, then channel, then stream), or None."""
        kinds = {s.holds for s in self._subs.get((network_id, alias), ()) if s.counts_for_presence}
        return next((kind for kind in STREAM_HOLDERS if kind in kinds), None)

    def online_aliases(self) -> set[Key]:
        """Every (network, alias) with at least one live agent stream."""
        return {k for k, subs in self._subs.items() if any(s.counts_for_presence for s in subs)}

    def _all(self) -> Iterator[Subscriber]:
        for subs in list(self._subs.values()) + list(self._network_subs.values()):
            yield from list(subs)

    def close_token_streams(self, token_id: str) -> None:
        """End every stream opened with a token (it was just revoked); from a worker thread, on the loop after."""
        if in_hop():
            on_loop(self.close_token_streams, token_id)
            return
        for sub in self._all():
            if sub.token_id == token_id:
                sub.revoke("token_revoked")

    def close_alias_streams(self, network_id: str, alias: str, reason: str) -> int:
        """End every stream and long-poll of one alias (it was released or retired); returns how many (from a worker
        thread: how many there are, ended on the loop after)."""
        subs = list(self._subs.get((network_id, alias), ()))
        if in_hop():
            on_loop(self.close_alias_streams, network_id, alias, reason)
            return len(subs)
        for sub in subs:
            sub.close(reason)
        return len(subs)

    def close_all(self, reason: str = SHUTDOWN) -> None:
        """End every stream (at shutdown: hypercorn would otherwise wait and then cut them)."""
        self.closing = True
        self.stopping.set()
        self.tasks.close_all()
        for sub in self._all():
            sub.closed_reason = reason
            sub.send.close()
