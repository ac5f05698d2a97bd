"""Bytes kept per network: the counters the triggers of schema.sql (network_usage) keep in each write."""

from __future__ import annotations

from typing import Any

from ..db import Database
from .dialect import POSTGRESQL

Row = dict[str, Any]


def used_bytes(db: Database, network_id: str) -> int:
    """Everything a network keeps, in bytes (texts, rows, its SSE event log and attachments): one row read."""
    row = db.query_one("SELECT text_bytes + event_bytes + file_bytes AS n FROM network_usage WHERE network_id = ?",
                       (network_id,))
    return int(row["n"]) if row else 0


def hold_usage(db: Database, network_id: str) -> None:
    """PostgreSQL: lock the network's usage row until COMMIT (inside a write), before anything else the write
    locks. Every write that stores in a network takes that row (its triggers count the bytes), most after another
    row (an unread count, a task count); taken first, the order is the same in every transaction, so two processes
    (or two writes grouped in one transaction, db.write_together) cannot deadlock on it. SQLite: nothing (one
    writer)."""
    if db.engine == POSTGRESQL:
        db.query("SELECT 1 AS held FROM network_usage WHERE network_id = ? FOR UPDATE", (network_id,))


def usage_of(db: Database, network_id: str) -> Row:
    """A network's counters: text_bytes (inbox items, bodies, tasks, completions, task events), event_bytes,
    file_bytes (attachments)."""
    row = db.query_one("SELECT text_bytes, event_bytes, file_bytes FROM network_usage WHERE network_id = ?",
                       (network_id,))
    return row or {"text_bytes": 0, "event_bytes": 0, "file_bytes": 0}


def counts_of(db: Database, network_id: str) -> Row:
    """A network's aliases (bounded by max_aliases_per_network) and tasks (from the kept task counts)."""
    aliases = db.con.execute("SELECT count(*) FROM sessions WHERE network_id = ?", (network_id,)).get
    tasks = db.con.execute("SELECT coalesce(sum(n), 0) FROM task_counts WHERE network_id = ?", (network_id,)).get
    return {"aliases": int(aliases), "tasks": int(tasks)}
