"""Queries of the background jobs: presence candidates and batched event pruning."""

from __future__ import annotations

from typing import Any

from ..db import Database

Row = dict[str, Any]


def presence_candidates(db: Database, touch_before_ts: float, after_rowid: int, limit: int) -> list[Row]:
    """Sessions whose stored presence may need a write (offline, or last seen before the cutoff), a page at a
    time in rowid order after `after_rowid`. A session's last call is never after its last sign of life, so the
    ones whose calls lapsed are among these once their last sign of life is that old too (a stream held past its
    last call, or closing after it, was seen later)."""
    return db.query("SELECT rowid, network_id, alias, status, last_seen_ts, last_call_ts FROM sessions"
                    " WHERE rowid > ? AND (status = 'offline' OR last_seen_ts < ?) ORDER BY rowid LIMIT ?",
                    (after_rowid, touch_before_ts, limit))


def ping(db: Database) -> None:
    """One round trip to the database server (GET /health on PostgreSQL); raises DatabaseUnavailable if it fails."""
    db.query("SELECT 1 AS one")


def oldest_events(db: Database, limit: int) -> list[Row]:
    """The oldest events by id (the primary key: no scan), with their creation times."""
    return db.query("SELECT id, created_at FROM events ORDER BY id LIMIT ?", (limit,))


def delete_events_through(db: Database, last_id: int, cutoff: str) -> int:
    """Drop events with id <= last_id created before the cutoff (one primary-key range); returns how many."""
    return db.execute("DELETE FROM events WHERE id <= ? AND created_at < ?", (last_id, cutoff))


def mark_offline_if_silent(db: Database, network_id: str, alias: str, cutoff_ts: float) -> None:
    """Offline, unless a tool call arrived since the sweeper looked (last_seen_at stays)."""
    db.execute("UPDATE sessions SET status = 'offline' WHERE network_id = ? AND alias = ? AND last_call_ts < ?",
               (network_id, alias, cutoff_ts))
