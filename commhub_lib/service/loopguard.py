"""The loop guard (docs/loop-guard.md): two agents that answer each other for ever are cut off, and a person sees it.

Two rules, both for sends from one agent to another (a person's sends are never held back):
- Duplicates: the same content from the same sender to the same recipient within `duplicate_window_seconds` is not
  delivered again; the answer names the original with `duplicate: true`. A send stores a 64-bit hash of
  (network, sender, recipient, kind, text) in messages.content_hash, so the check is one probe of a one-column index
  inside the send's own write transaction (no text is compared, no read transaction of its own). The idempotency key
  of send_task stays the exact mechanism for retries; this is the safety net for a loop that repeats itself.
- A rate per pair: at most `pair_rate_per_minute` tasks and messages from one agent to one other agent (a token
  bucket in memory, as the other rate limits). Past it the send is refused (429 `rate_limited` over REST, the same
  error as an MCP tool result), and the first refusal of a run writes a `loop_broken` event to the recipient's alias:
  the network stream carries it to people (the dashboard's Overview shows a notice), the recipient learns that it
  need not answer.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ..broker import Event
from ..errors import RateLimited
from ..ratelimit import RateLimiter
from ..store import messages as message_store
from ..store import quotas as quota_store
from ..store.dialect import POSTGRESQL
from ..vocabulary import AGENT, LOOP_BROKEN
from .hub import Hub

# A pair stays "broken" (no second loop_broken event) while its refusals follow each other within this many
# seconds: one notice per run of refusals, not one per refused send.
QUIET_SECONDS = 60.0
# Rows are read back in insertion order; another writer's clock may be this far off (see recent_hashes).
CLOCK_SLACK_SECONDS = 60.0


def content_hash(network_id: str, sender: str, to: str, kind: str, *texts: str | None) -> int:
    """The signed 64-bit hash a send stores in messages.content_hash (SQLite integers are signed 64-bit)."""
    h = hashlib.blake2b(digest_size=8)
    for part in (network_id, sender, to, kind, *texts):
        h.update((part or "").encode())
        h.update(b"\x00")  # ("ab", "c") and ("a", "bc") must differ
    return int.from_bytes(h.digest(), "big", signed=True)


@dataclass
class RecentHashes:
    """The hashes this process stored within the window: a filter in front of the database. A send whose hash is
    not here cannot be a duplicate, so the database is asked (the recipient's items of the window) only about a
    likely duplicate, or while this memory does not cover the whole window (after the cap made it forget hashes
    still in the window): then every send asks. A hash noted for a send that was rolled back only costs one
    needless question."""

    window: float
    cap: int = 200_000
    complete_from: float = field(default_factory=time.time)  # every hash stored since then is here (or in `seen`)
    seen: dict[int, float] = field(default_factory=dict)  # hash -> when it was last stored
    order: deque[tuple[float, int]] = field(default_factory=deque)

    def may_have(self, digest: int, now: float) -> bool:
        """False only when the hash was certainly not stored within the window."""
        return self.complete_from > now - self.window or digest in self.seen

    def note(self, digest: int, now: float) -> None:
        """A send stored this hash now; hashes older than the window are forgotten, and the oldest past the cap."""
        self.seen[digest] = now
        self.order.append((now, digest))
        cutoff = now - self.window
        while self.order and (self.order[0][0] < cutoff or len(self.order) > self.cap):
            when, old = self.order.popleft()
            if when >= cutoff:  # forgotten while still in the window: ask the index until it has left it
                self.complete_from = max(self.complete_from, when)
            if self.seen.get(old) == when:
                del self.seen[old]


@dataclass
class LoopGuard:
    """The pair rate limit's buckets, the pairs currently cut and the recent hashes (one per hub, in memory)."""

    per_minute: int
    window: float
    limiter: RateLimiter = field(init=False)
    recent: RecentHashes = field(init=False)
    broken: dict[tuple[str, str, str], float] = field(default_factory=dict)  # pair -> last refusal (monotonic)

    def __post_init__(self) -> None:
        self.limiter = RateLimiter(self.per_minute, "pair")
        self.recent = RecentHashes(self.window)


_MAKING = threading.Lock()


def guard_of(hub: Hub) -> LoopGuard:
    """The hub's loop guard, made on first use with the hashes the database holds from the last window (read
    newest first, at most the cap: a fresh hub reads nothing, a busy one at most the cap's rows, once)."""
    guard = hub.loop_guard
    if isinstance(guard, LoopGuard):
        return guard
    with _MAKING:  # once, even when two worker threads ask first at once (PostgreSQL's db.run)
        return _make_guard(hub)


def _make_guard(hub: Hub) -> LoopGuard:
    guard = hub.loop_guard
    if not isinstance(guard, LoopGuard):
        guard = hub.loop_guard = LoopGuard(hub.settings.pair_rate_per_minute, hub.settings.duplicate_window_seconds)
        recent = guard.recent
        if recent.window > 0:
            now = time.time()
            rows, complete = message_store.recent_hashes(hub.db, now - recent.window, CLOCK_SLACK_SECONDS,
                                                         recent.cap)
            for digest, when in rows:
                recent.seen[digest] = when
                recent.order.append((when, digest))
            # Read all of them: the memory covers the window. Stopped by the cap: it covers it from its oldest row.
            recent.complete_from = now - recent.window if complete else (rows[0][1] if rows else now)
    return guard


def digest_of(hub: Hub, network_id: str, sender: str, sender_kind: str, to: str, kind: str,
              *texts: str | None) -> int | None:
    """The content hash a send stores and looks for: None for a person's send, an agent's note to itself (no loop
    has one end), or with the window set to 0 (then nothing is stored or looked up)."""
    if sender_kind != AGENT or sender == to or hub.settings.duplicate_window_seconds <= 0:
        return None
    return content_hash(network_id, sender, to, kind, *texts)


def find_duplicate(hub: Hub, network_id: str, sender: str, to: str, digest: int | None) -> dict[str, Any] | None:
    """The item (message_id, task_id, kind) this agent already sent this recipient with the same content within
    the window, or None. Call inside the send's write transaction, so two racing sends cannot both pass."""
    if digest is None:
        return None
    now = time.time()
    since = now - hub.settings.duplicate_window_seconds
    if hub.db.engine == POSTGRESQL:
        # Several writers (processes, a pool's connections): the memory filter knows only this process's sends, so
        # the database is always asked, after the lock on the network's usage row that the send takes anyway (one
        # round trip, the same lock order as every storing write): a racing send of the same content waits for this
        # one's commit and then finds its item.
        return quota_store.find_duplicate_locked(hub.db, digest, network_id, sender, to, since)
    if not guard_of(hub).recent.may_have(digest, now):
        return None
    return message_store.find_duplicate(hub.db, digest, network_id, sender, to, since)


def note_stored(hub: Hub, digest: int | None) -> None:
    """A send stored an item with this hash (inside its write transaction)."""
    if digest is not None:
        guard_of(hub).recent.note(digest, time.time())


def check_pair(hub: Hub, network_id: str, sender: str, sender_kind: str, to: str) -> None:
    """Take one send from the agent pair's budget, or refuse it: 429 `rate_limited` naming the pair and the setting.
    The first refusal of a run writes the `loop_broken` event (its own short write: the send's is rolled back)."""
    if sender_kind != AGENT or sender == to:
        return
    guard = guard_of(hub)
    pair = (network_id, sender, to)
    retry = guard.limiter.take("\x00".join(pair))
    if not retry:
        return
    now = time.monotonic()
    last = guard.broken.get(pair)
    guard.broken[pair] = now
    if last is None or now - last > QUIET_SECONDS:
        if len(guard.broken) > 10_000:  # pairs cut long ago hold nothing worth keeping
            guard.broken = {p: t for p, t in guard.broken.items() if now - t <= QUIET_SECONDS} or {pair: now}
        _record_loop_broken(hub, network_id, sender, to, retry)
    raise RateLimited(f"loop guard: '{sender}' sent '{to}' more than {guard.per_minute} tasks and messages in the "
                      f"last minute, the limit per pair of agents (COMMHUB_PAIR_RATE_PER_MINUTE); nothing was sent. "
                      f"If the two of you are answering each other, stop: a person has been told. Retry in "
                      f"{retry} s", retry)


def _record_loop_broken(hub: Hub, network_id: str, sender: str, to: str, retry: int) -> None:
    pending: list[Event] = []
    with hub.db.write():
        last = message_store.last_sent(hub.db, network_id, sender, to)
        hub.record_event(pending, network_id, to, LOOP_BROKEN, {
            "type": LOOP_BROKEN, "from": sender, "from_kind": AGENT, "to": to,
            "limit": hub.settings.pair_rate_per_minute, "retry_after": retry, "message_id": last})
    hub.publish(pending)
