"""Background jobs of the root nursery: the presence sweeper, task expiry (start_by) and SSE event retention.

They never end the server: a failed round (lock held by another process, full disk, I/O error, a bug) is
logged and retried with a growing pause. Their writes go in small batches that first wait for the write
lock asynchronously, so neither a long prune nor a busy lock freezes the event loop.
"""

from __future__ import annotations

import logging

import trio
import trio.lowlevel

from ..db import BusyError
from ..errors import CommhubError
from ..ids import now_text, now_ts, ts_text
from ..store import maintenance as maintenance_store
from ..store import sessions as session_store
from ..vocabulary import OFFLINE
from .hub import Hub
from .retention import apply_retention
from .sessions import streaming_aliases
from .tasks import any_due_to_expire, expire_due

log = logging.getLogger("commhub.jobs")

PRUNE_INTERVAL_SECONDS = 3600
BATCH = 200  # rows per transaction: each batch holds the loop for a few ms at most
SCAN_PAGE = 1000
PRUNE_BATCH = 2000
LOCK_WAIT_SECONDS = 5.0
# A streaming session's stored last_seen is refreshed only when older than this fraction of the presence
# timeout (or when it is stored offline): a stream proves presence live, and the stored value is what people read
# as "last seen" once it closes (the close stores its own time too).
TOUCH_FRACTION = 1 / 3
CHECKPOINT_AFTER_ROWS = 10_000
MAX_BACKOFF_SECONDS = 60.0


async def _write_batches(hub: Hub, items: list, apply) -> None:  # type: ignore[type-arg]
    """Apply `apply(item)` to items in transactions of BATCH, waiting for the lock and yielding between."""
    for start in range(0, len(items), BATCH):
        await hub.db.wait_for_write_lock(LOCK_WAIT_SECONDS)
        with hub.db.write():
            for item in items[start:start + BATCH]:
                apply(item)
        await trio.lowlevel.checkpoint()


async def sweep_once(hub: Hub) -> int:
    """Store presence that changed: streaming sessions seen again, silent ones offline. Returns how many
    went offline."""
    streaming = streaming_aliases(hub)  # on PostgreSQL the other processes' streams count too
    now = now_ts()
    timeout = hub.settings.presence_timeout_seconds
    offline_cutoff = now - timeout
    touch, offline = [], []
    after = 0
    while True:  # pages of the scan, yielding between them (5,000 rows at once held the loop 20-50 ms)
        rows = maintenance_store.presence_candidates(hub.db, now - timeout * TOUCH_FRACTION, after, SCAN_PAGE)
        for row in rows:
            key = (row["network_id"], row["alias"])
            if key in streaming:
                touch.append(key)
            elif row["status"] != OFFLINE and row["last_call_ts"] < offline_cutoff:
                # Without a stream only a tool call keeps a session online (docs/presence.md).
                offline.append(key)
        if len(rows) < SCAN_PAGE:
            break
        after = rows[-1]["rowid"]
        await trio.lowlevel.checkpoint()
    now_at = now_text()
    await _write_batches(hub, touch, lambda k: session_store.touch_session(hub.db, k[0], k[1], now_at, now))
    await _write_batches(hub, offline, lambda k: maintenance_store.mark_offline_if_silent(
        hub.db, k[0], k[1], offline_cutoff))
    if offline:
        log.info("presence: %d session(s) went offline", len(offline))
    return len(offline)


async def prune_events(hub: Hub) -> int:
    """Drop SSE events past the retention period in primary-key batches that yield (inbox items, tasks and
    completions are kept); checkpoints the WAL after a big prune so it does not stay large."""
    cutoff = ts_text(now_ts() - hub.settings.event_retention_days * 86400)
    pruned = 0
    while True:
        # Events are appended in time order, so the old ones are the lowest ids: find the last old id among
        # the oldest PRUNE_BATCH and delete that id range (the created_at test guards against clock steps).
        rows = maintenance_store.oldest_events(hub.db, PRUNE_BATCH)
        old = [r["id"] for r in rows if r["created_at"] < cutoff]
        if not old:
            break
        await hub.db.wait_for_write_lock(LOCK_WAIT_SECONDS)
        with hub.db.write():
            deleted = maintenance_store.delete_events_through(hub.db, max(old), cutoff)
        pruned += deleted
        if deleted == 0 or len(old) < len(rows):
            break
        await trio.lowlevel.checkpoint()
    if pruned:
        log.info("retention: pruned %d SSE event(s) older than %s", pruned, cutoff)
    if pruned >= CHECKPOINT_AFTER_ROWS:
        await hub.db.wait_for_write_lock(LOCK_WAIT_SECONDS)
        try:
            hub.db.checkpoint()
        except BusyError:  # a reader (a backup) is on an old snapshot: the next prune tries again
            log.info("retention: WAL checkpoint deferred (the database is in use)")
    return pruned


async def expire_tasks(hub: Hub) -> int:
    """Expire the tasks not started by their start_by, BATCH per transaction (docs/tasks-deadlines.md); returns
    how many. Starting a task checks start_by too, so a late round never lets one start."""
    expired = 0
    while True:
        if not any_due_to_expire(hub):  # the usual round: one indexed read, no write transaction
            break
        await hub.db.wait_for_write_lock(LOCK_WAIT_SECONDS)
        done = expire_due(hub, BATCH)
        expired += done
        if done < BATCH:
            break
        await trio.lowlevel.checkpoint()
    if expired:
        log.info("tasks: %d task(s) expired (not started by their start_by)", expired)
    return expired


async def _round(hub: Hub, prune: bool) -> None:
    hub.db.check_file()  # a deleted or replaced database file is logged loudly even when nothing writes
    await sweep_once(hub)
    await expire_tasks(hub)
    if prune:
        await prune_events(hub)
        await apply_retention(hub)  # inbox items, tasks, audit entries (off unless configured)


def _pause(hub: Hub, failures: int) -> float:
    """Seconds until the next round: the sweep interval, doubled per consecutive failure up to a minute."""
    return min(hub.settings.sweep_seconds * 2 ** failures, max(MAX_BACKOFF_SECONDS, hub.settings.sweep_seconds))


async def run_sweeper(hub: Hub, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Background job (root nursery): sweep presence and expire tasks past their start_by every `sweep_seconds`,
    prune old events hourly; a failed round is logged and retried after a pause that doubles up to a minute."""
    task_status.started()
    next_prune = 0.0
    failures = 0
    while True:
        await trio.sleep(_pause(hub, failures))
        prune = trio.current_time() >= next_prune
        try:
            await _round(hub, prune)
        except CommhubError as exc:
            failures += 1
            log.warning("background jobs: %s (%s); retrying in %.1f s", exc.message, exc.code,
                        _pause(hub, failures))
            continue
        except Exception:
            failures += 1
            log.exception("background jobs: unexpected error; retrying")
            continue
        if failures:
            log.info("background jobs: recovered after %d failed round(s)", failures)
        failures = 0
        if prune:
            next_prune = trio.current_time() + PRUNE_INTERVAL_SECONDS
