"""Retention of inbox items, tasks and audit entries (each off by default: 0 days = keep for ever).

Run hourly by the background jobs (service/jobs.py) after the SSE event prune. Like it, it works in small
batches that wait for the write lock asynchronously and yield between transactions, so a first run on a
large database does not freeze the event loop. What goes:
- inbox items (`messages`) created more than `message_retention_days` ago and already read (an unread
  item is kept until its recipient has seen it);
- tasks that ended (replied, failed, cancelled, expired) more than `task_retention_days` ago, with their notice
  (its text is the task's), event log and completion record; open tasks are kept however old;
- audit entries older than `audit_retention_days`;
- uploads never sent with anything, `attachment_unsent_hours` after they were made (a sent attachment goes with
  the last task, message or reply it was sent with: the triggers of schema.sql, service/attachments.py).
Deleted rows leave free pages in the file, reused by new rows; how to give the space back: docs/storage.md.
"""

from __future__ import annotations

import logging

import trio
import trio.lowlevel

from ..ids import now_ts, ts_text
from ..store import retention as retention_store
from ..vocabulary import FINAL_TASK_STATUSES
from . import attachments
from .hub import Hub

log = logging.getLogger("commhub.retention")

PAGE = 500  # rows read per page (a rowid range); deletes of a page go in one short transaction
TASK_BATCH = 100  # tasks per transaction (each also drops its events and completion)


async def apply_retention(hub: Hub) -> dict[str, int]:
    """Delete what the retention settings allow; returns how many rows of each kind went."""
    s = hub.settings
    now = now_ts()
    done: dict[str, int] = {}
    if s.message_retention_days > 0:
        done["messages"] = await _prune_messages(hub, now - s.message_retention_days * 86400)
    if s.task_retention_days > 0:
        done["tasks"] = await _prune_tasks(hub, now - s.task_retention_days * 86400)
    if s.audit_retention_days > 0:
        done["audit"] = await _prune_audit(hub, ts_text(now - s.audit_retention_days * 86400))
    # Always on (uploads nobody sent are no one's data); named in the answer only when some went.
    if s.attachment_unsent_hours > 0 and (unsent := await _prune_unsent(hub, now - s.attachment_unsent_hours * 3600)):
        done["unsent_attachments"] = unsent
    if any(done.values()):
        log.info("retention: deleted %s", ", ".join(f"{n} {kind}" for kind, n in done.items() if n))
    return done


async def _write_lock(hub: Hub) -> None:
    await hub.db.wait_for_write_lock(hub.settings.write_lock_wait_seconds)


async def _prune_messages(hub: Hub, cutoff_ts: float) -> int:
    deleted, after = 0, 0
    while True:
        rows = retention_store.message_page(hub.db, after, PAGE)
        if not rows:
            return deleted
        old = [r["rowid"] for r in rows if r["created_ts"] < cutoff_ts and r["is_read"]]
        if old:
            await _write_lock(hub)
            with hub.db.write():
                deleted += retention_store.delete_messages(hub.db, old)
        if rows[-1]["created_ts"] >= cutoff_ts:
            return deleted  # rows are appended in time order: the rest are newer
        after = rows[-1]["rowid"]
        await trio.lowlevel.checkpoint()


async def _prune_tasks(hub: Hub, cutoff_ts: float) -> int:
    cutoff = ts_text(cutoff_ts)
    deleted, after = 0, 0
    while True:
        rows = retention_store.task_page(hub.db, after, PAGE)
        if not rows:
            return deleted
        ended = [r["task_id"] for r in rows if r["status"] in FINAL_TASK_STATUSES and r["updated_at"] < cutoff]
        for start in range(0, len(ended), TASK_BATCH):
            await _write_lock(hub)
            with hub.db.write():
                for task_id in ended[start:start + TASK_BATCH]:
                    retention_store.delete_task(hub.db, task_id)
            deleted += len(ended[start:start + TASK_BATCH])
            await trio.lowlevel.checkpoint()
        if rows[-1]["created_ts"] >= cutoff_ts:
            return deleted
        after = rows[-1]["rowid"]
        await trio.lowlevel.checkpoint()


async def _prune_audit(hub: Hub, cutoff: str) -> int:
    deleted = 0
    while True:
        rows = retention_store.oldest_audit_entries(hub.db, PAGE)
        old = [r["id"] for r in rows if r["created_at"] < cutoff]
        if not old:
            return deleted
        await _write_lock(hub)
        with hub.db.write():
            n = retention_store.delete_audit_through(hub.db, max(old), cutoff)
        deleted += n
        if n == 0 or len(old) < len(rows):
            return deleted
        await trio.lowlevel.checkpoint()


async def _prune_unsent(hub: Hub, cutoff_ts: float) -> int:
    deleted = 0
    while True:
        await _write_lock(hub)
        with hub.db.write():
            n = attachments.prune_unsent(hub, cutoff_ts, TASK_BATCH)
        deleted += n
        if n < TASK_BATCH:
            return deleted
        await trio.lowlevel.checkpoint()
