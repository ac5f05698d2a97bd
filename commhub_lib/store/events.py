"""The durable SSE event log."""

from __future__ import annotations

from typing import Any

from ..db import Database

Row = dict[str, Any]


def insert_event(db: Database, network_id: str, alias: str, event: str, data: str, now: str) -> int:
    """Append an event for one alias; returns its id (the SSE `id:`)."""
    db.execute("INSERT INTO events(network_id, alias, event, data, created_at) VALUES (?, ?, ?, ?, ?)",
               (network_id, alias, event, data, now))
    return db.con.last_insert_rowid()


def events_after(db: Database, network_id: str, alias: str, after_id: int, limit: int) -> list[Row]:
    """Events of one alias with id > after_id, oldest first (replay on reconnect)."""
    return db.query("SELECT id, event, data FROM events WHERE network_id = ? AND alias = ? AND id > ?"
                    " ORDER BY id LIMIT ?", (network_id, alias, after_id, limit))

