"""Queries of the retention job: old inbox items, ended tasks and audit entries, a page at a time.

Rows are appended in time order, so the oldest are the lowest rowids: each page is a rowid range (no
scan), and the job stops at the first page that starts past the cutoff.
"""

from __future__ import annotations

from typing import Any

from ..db import Database

Row = dict[str, Any]


def message_page(db: Database, after_rowid: int, limit: int) -> list[Row]:
    """The next inbox items in rowid order: rowid, created_ts, whether read."""
    return db.query("SELECT rowid, created_ts, read_at IS NOT NULL AS is_read FROM messages WHERE rowid > ?"
                    " ORDER BY rowid LIMIT ?", (after_rowid, limit))


def delete_messages(db: Database, rowids: list[int]) -> int:
    """Drop inbox items by rowid; returns how many went."""
    marks = ",".join("?" * len(rowids)) or "NULL"
    return db.execute(f"DELETE FROM messages WHERE rowid IN ({marks})", tuple(rowids))


def task_page(db: Database, after_rowid: int, limit: int) -> list[Row]:
    """The next tasks in rowid order: rowid, task_id, created_ts, status, updated_at."""
    return db.query("SELECT rowid, task_id, created_ts, status, updated_at FROM tasks WHERE rowid > ?"
                    " ORDER BY rowid LIMIT ?", (after_rowid, limit))


def delete_task(db: Database, task_id: str) -> None:
    """Drop a task with its notice (whose text is the task's), event log, completion record and A2A row (the
    task_counts trigger follows); replies stay inbox items."""
    db.execute("DELETE FROM messages WHERE message_id = (SELECT message_id FROM tasks WHERE task_id = ?)",
               (task_id,))
    db.execute("DELETE FROM task_events WHERE task_id = ?", (task_id,))
    db.execute("DELETE FROM completions WHERE task_id = ?", (task_id,))
    db.execute("DELETE FROM a2a_tasks WHERE task_id = ?", (task_id,))  # an A2A client's task: its contextId
    db.execute("DELETE FROM tasks WHERE task_id = ?", (task_id,))


def oldest_audit_entries(db: Database, limit: int) -> list[Row]:
    """The oldest audit entries by id (the primary key), with their times."""
    return db.query("SELECT id, created_at FROM audit_log ORDER BY id LIMIT ?", (limit,))


def delete_audit_through(db: Database, last_id: int, cutoff: str) -> int:
    """Drop audit entries with id <= last_id created before the cutoff; returns how many."""
    return db.execute("DELETE FROM audit_log WHERE id <= ? AND created_at < ?", (last_id, cutoff))
