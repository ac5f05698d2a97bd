"""What the hub's two outboxes (webhook deliveries, A2A forwards) share: one worker task per key that has work (a
webhook, a task), woken by a poke and ending when its key has none left, and pruning settled rows in batches."""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from ..ids import now_ts, ts_text
from .hub import Hub

log = logging.getLogger("commhub.outbox")

PRUNE_BATCH = 2000


class KeyedWorkers:
    """One worker task per key with work. `wakeups[key]` exists while the key's worker runs: a poke sets it (the
    worker looks again), or starts a worker for a key that has none. A worker removes its key itself, with no await
    between its last read and the removal, so a poke after that starts a new one and no work is left unseen."""

    what = "worker"  # names the workers in the log

    def __init__(self, nursery: trio.Nursery):
        self.nursery = nursery
        self.wakeups: dict[str, trio.Event] = {}

    def poke(self, keys: set[str] | list[str]) -> None:
        """Start a worker for each key that has none, wake the others."""
        for key in keys:
            if key in self.wakeups:
                self.wakeups[key].set()
            else:
                self.wakeups[key] = trio.Event()
                self.nursery.start_soon(self._run, key)

    async def _run(self, key: str) -> None:
        try:
            await self.work(key)
        except Exception:  # a bug or a database failure: logged; the next scan starts the worker again
            log.exception("%s %s failed", self.what, key)
            self.wakeups.pop(key, None)

    async def work(self, key: str) -> None:
        """Do the key's work until none is left, then remove the key from `wakeups`."""
        raise NotImplementedError


async def prune_settled(hub: Hub, delete_before: Callable[[str, int], int]) -> int:
    """Delete settled rows older than event_retention_days with `delete_before(cutoff_text, limit)`, in batches
    that yield (each its own grouped write); how many went."""
    cutoff = ts_text(now_ts() - hub.settings.event_retention_days * 86400)
    pruned = 0
    while True:
        deleted = await hub.db.write_together(lambda: delete_before(cutoff, PRUNE_BATCH))
        pruned += deleted
        if deleted < PRUNE_BATCH:
            return pruned
