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
import time
from dataclasses import dataclass, field
from typing import Any

from ..broker import Event
from ..errors import RateLimited
from ..ratelimit import RateLimiter
from ..store import messages as message_store
from ..vocabulary import AGENT, LOOP_BROKEN
from .hub import Hub

# A pair stays "broken" (no second loop_broken event) while its refusals follow each other within this many
# seconds: one notice per run of refusals, not one per refused send.
QUIET_SECONDS = 60.0


def content_hash(network_id: str, sender: str, to: str, kind: str, *texts: str | None) -> int:
    """The signed 64-bit hash a send stores in messages.content_hash (SQLite integers are signed 64-bit)."""
    h = hashlib.blake2b(digest_size=8)
    for part in (network_id, sender, to, kind, *texts):
        h.update((part or "").encode())
        h.update(b"\x00")  # ("ab", "c") and ("a", "bc") must differ
    return int.from_bytes(h.digest(), "big", signed=True)


@dataclass
class LoopGuard:
    """The pair rate limit's buckets and the pairs currently cut (one per hub, in memory)."""

    per_minute: int
    limiter: RateLimiter = field(init=False)
    broken: dict[tuple[str, str, str], float] = field(default_factory=dict)  # pair -> last refusal (monotonic)

    def __post_init__(self) -> None:
        self.limiter = RateLimiter(self.per_minute, "pair")


def guard_of(hub: Hub) -> LoopGuard:
    """The hub's loop guard, made on first use."""
    guard = hub.loop_guard
    if not isinstance(guard, LoopGuard):
        guard = hub.loop_guard = LoopGuard(hub.settings.pair_rate_per_minute)
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
    return message_store.find_duplicate(hub.db, digest, network_id, sender, to,
                                        time.time() - hub.settings.duplicate_window_seconds)


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
