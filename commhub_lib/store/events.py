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
    return db.query("SELECT id, alias, event, data FROM events WHERE network_id = ? AND alias = ? AND id > ?"
                    " ORDER BY id LIMIT ?", (network_id, alias, after_id, limit))


def network_events_after(db: Database, network_id: str, after_id: int, limit: int) -> list[Row]:
    """Events of every alias of a network with id > after_id, oldest first (the observer stream's replay)."""
    return db.query("SELECT id, alias, event, data FROM events WHERE network_id = ? AND id > ?"
                    " ORDER BY id LIMIT ?", (network_id, after_id, limit))


def latest_alias_event_id(db: Database, network_id: str, alias: str) -> int:
    """The id of an alias's newest retained event (0 if none): a stream's position when it opens."""
    rows = db.query("SELECT MAX(id) AS id FROM events WHERE network_id = ? AND alias = ?", (network_id, alias))
    return int(rows[0]["id"] or 0)


def latest_network_event_id(db: Database, network_id: str) -> int:
    """The id of a network's newest retained event (0 if none)."""
    rows = db.query("SELECT id FROM events WHERE network_id = ? ORDER BY id DESC LIMIT 1", (network_id,))
    return int(rows[0]["id"]) if rows else 0


def highest_event_id_ever(db: Database) -> int:
    """The highest event id ever issued (AUTOINCREMENT's high-water mark, kept even when events are pruned)."""
    rows = db.query("SELECT seq FROM sqlite_sequence WHERE name = 'events'", ())
    return int(rows[0]["seq"]) if rows else 0

