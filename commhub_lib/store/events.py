"""The durable SSE event log.

A broadcast's events do not carry its text: each row names the shared body (`body_id`, schema.sql) and holds
its data with `"content":""`; the reads below put the text back, so a replay sends what the live push sent.
"""

from __future__ import annotations

import json
from typing import Any

from ..db import Database
from .dialect import POSTGRESQL

Row = dict[str, Any]
# What a shared text's field holds in a stored event; the first occurrence in the data is that field (the data
# is built by Hub.record_event with the field ahead of any member-controlled value).
PLACEHOLDER = '"content":""'


def with_text(stored: str, quoted: str) -> str:
    """An event's data with its shared text put back (`quoted`: the text as a JSON string)."""
    return stored.replace(PLACEHOLDER, '"content":' + quoted, 1)


def insert_event(db: Database, network_id: str, alias: str, event: str, data: str, now: str,
                 body_id: int | None = None) -> int:
    """Append an event for one alias; returns its id (the SSE `id:`). With `body_id`, `data` holds the
    placeholder instead of the shared text.

    On PostgreSQL the insert first locks the network's `network_usage` row (held to COMMIT), so the id is drawn
    only once every earlier event-writing transaction of the network, in any process, has committed: a network's
    events become visible in id order, and a reader that sees an id has every lower one of that network
    (service/fanout.py rests on it). That row, not a lock of its own: the usage trigger of this same statement
    locks it anyway (taken a moment earlier, it adds no new order of locks, so no deadlock an advisory lock
    made). Same statement, no extra round trip; a network without the row (none is made without one) is not
    held back."""
    if db.engine == POSTGRESQL:
        rows = db.query("INSERT INTO events(network_id, alias, event, data, created_at, body_id)"
                        " SELECT ?, ?, ?, ?, ?, CAST(? AS bigint) FROM (SELECT 1) AS one LEFT JOIN"
                        " (SELECT network_id FROM network_usage WHERE network_id = ? FOR UPDATE) AS event_order"
                        " ON true RETURNING id", (network_id, alias, event, data, now, body_id, network_id))
        return int(rows[0]["id"])
    db.execute("INSERT INTO events(network_id, alias, event, data, created_at, body_id) VALUES (?, ?, ?, ?, ?, ?)",
               (network_id, alias, event, data, now, body_id))
    return db.con.last_insert_rowid()


def _put_texts_back(db: Database, rows: list[Row]) -> list[Row]:
    """Replace the placeholder of rows that share a body with its text (one read per distinct body)."""
    quoted: dict[int, str] = {}
    for row in rows:
        body_id = row.pop("body_id")
        if body_id is None:
            continue
        if body_id not in quoted:
            found = db.query_one("SELECT content FROM bodies WHERE body_id = ?", (body_id,))
            quoted[body_id] = json.dumps(found["content"] if found else "", ensure_ascii=False)
        row["data"] = with_text(row["data"], quoted[body_id])
    return rows


def events_after(db: Database, network_id: str, alias: str, after_id: int, limit: int) -> list[Row]:
    """Events of one alias with id > after_id, oldest first (replay on reconnect)."""
    return _put_texts_back(db, db.query(
        "SELECT id, alias, event, data, body_id, created_at FROM events WHERE network_id = ? AND alias = ?"
        " AND id > ?"
        " ORDER BY id LIMIT ?", (network_id, alias, after_id, limit)))


def network_events_after(db: Database, network_id: str, after_id: int, limit: int) -> list[Row]:
    """Events of every alias of a network with id > after_id, oldest first (the observer stream's replay)."""
    return _put_texts_back(db, db.query(
        "SELECT id, alias, event, data, body_id, created_at FROM events WHERE network_id = ? AND id > ?"
        " ORDER BY id LIMIT ?", (network_id, after_id, limit)))


def network_events_between(db: Database, network_id: str, after_id: int, before_id: int) -> list[Row]:
    """Events of a network with after_id < id < before_id, oldest first (PostgreSQL: other processes' events that
    this process pushes before its own, service/fanout.py)."""
    return _put_texts_back(db, db.query(
        "SELECT id, alias, event, data, body_id FROM events WHERE network_id = ? AND id > ? AND id < ?"
        " ORDER BY id", (network_id, after_id, before_id)))


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
    if db.engine == POSTGRESQL:
        rows = db.query("SELECT pg_sequence_last_value(pg_get_serial_sequence('events', 'id')) AS seq")
        return int(rows[0]["seq"] or 0)
    rows = db.query("SELECT seq FROM sqlite_sequence WHERE name = 'events'", ())
    return int(rows[0]["seq"]) if rows else 0


def recent_network_events(db: Database, network_id: str, limit: int, scan: int) -> list[Row]:
    """A network's newest events (every alias), newest first: what the dashboard's feed shows when it opens. Read
    backwards along the ids (no index has the network's events in id order), through at most the hub's `scan`
    newest events: bounded whatever the hub holds; a network quiet for that long shows fewer."""
    return _put_texts_back(db, db.query(
        "SELECT id, alias, event, data, body_id, created_at FROM events WHERE id > (SELECT max(id) FROM events) - ?"
        " AND +network_id = ? ORDER BY id DESC LIMIT ?", (scan, network_id, limit)))
