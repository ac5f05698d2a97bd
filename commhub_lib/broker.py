"""Per-alias fan-out of committed events to live SSE streams and long-poll waiters.

Each subscriber has a bounded trio memory channel. Publishing never blocks: when a subscriber's buffer
is full it is dropped (its channel closed), its stream ends, and the client reconnects with
Last-Event-ID and replays from the database. A slow reader therefore costs the hub nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import trio

Key = tuple[str, str]  # (network_id, alias)


@dataclass(frozen=True)
class Event:
    """A committed event: its durable id, where it goes, its name and its JSON data."""

    id: int
    network_id: str
    alias: str
    name: str
    data: str


@dataclass(eq=False)
class Subscriber:
    """One live reader of an alias's events."""

    key: Key
    send: trio.MemorySendChannel[Event]
    receive: trio.MemoryReceiveChannel[Event]
    counts_for_presence: bool
    dropped: bool = False
    closed_reason: str = ""
    extra: dict[str, object] = field(default_factory=dict)


class Broker:
    """Registry of subscribers by (network_id, alias)."""

    def __init__(self, buffer: int):
        self.buffer = buffer
        self._subs: dict[Key, set[Subscriber]] = {}
        self.closing = False

    @contextmanager
    def subscribe(self, network_id: str, alias: str, *, counts_for_presence: bool = False,
                  buffer: int | None = None, token_id: str | None = None) -> Iterator[Subscriber]:
        """Register a subscriber for the duration of the block."""
        send, receive = trio.open_memory_channel[Event](buffer or self.buffer)
        sub = Subscriber((network_id, alias), send, receive, counts_for_presence)
        sub.extra["token_id"] = token_id
        if self.closing:
            sub.closed_reason = "shutdown"
            send.close()
        self._subs.setdefault(sub.key, set()).add(sub)
        try:
            yield sub
        finally:
            subs = self._subs.get(sub.key)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[sub.key]
            send.close()
            receive.close()

    def publish(self, event: Event) -> None:
        """Hand an event to every subscriber of its alias without ever waiting."""
        for sub in list(self._subs.get((event.network_id, event.alias), ())):
            self._offer(sub, event)

    @staticmethod
    def _offer(sub: Subscriber, event: Event) -> None:
        if sub.dropped:
            return
        try:
            sub.send.send_nowait(event)
        except trio.WouldBlock:
            # Too slow: end this stream; the client reconnects and replays from the database.
            sub.dropped = True
            sub.closed_reason = "slow_reader"
            sub.send.close()
        except trio.ClosedResourceError:
            sub.dropped = True

    def subscriber_count(self) -> int:
        """All live subscribers (streams and long-poll waiters)."""
        return sum(len(s) for s in self._subs.values())

    def stream_count(self, network_id: str, alias: str) -> int:
        """How many live agent streams (that count for presence) an alias has."""
        return sum(1 for s in self._subs.get((network_id, alias), ()) if s.counts_for_presence and not s.dropped)

    def online_aliases(self) -> set[Key]:
        """Every (network, alias) with at least one live agent stream."""
        return {k for k, subs in self._subs.items() if any(s.counts_for_presence and not s.dropped for s in subs)}

    def close_token_streams(self, token_id: str) -> None:
        """End every stream opened with a token (it was just revoked)."""
        for subs in list(self._subs.values()):
            for sub in list(subs):
                if sub.extra.get("token_id") == token_id:
                    sub.dropped = True
                    sub.closed_reason = "token_revoked"
                    sub.send.close()

    def close_alias_streams(self, network_id: str, alias: str, reason: str) -> None:
        """End every live reader of one alias (it was released or retired by an owner/admin)."""
        for sub in list(self._subs.get((network_id, alias), ())):
            sub.dropped = True
            sub.closed_reason = reason
            sub.send.close()

    def close_all(self, reason: str = "shutdown") -> None:
        """End every stream (at shutdown: hypercorn would otherwise wait and then cut them)."""
        self.closing = True
        for subs in list(self._subs.values()):
            for sub in list(subs):
                sub.closed_reason = reason
                sub.send.close()
