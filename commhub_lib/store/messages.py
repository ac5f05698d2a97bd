"""Inbox items: messages, task notices, replies, broadcasts."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..db import Database
from .dialect import POSTGRESQL
from .paging import columns, json_record, page, page_json

Row = dict[str, Any]
# The text is stored once (schema.sql): a broadcast's in `bodies`, a task notice's in its task.
CONTENT = ("CASE WHEN body_id IS NOT NULL THEN (SELECT b.content FROM bodies b WHERE b.body_id = messages.body_id)"
           " WHEN kind = 'task' AND content = '' THEN coalesce((SELECT t.content FROM tasks t"
           " WHERE t.task_id = messages.task_id), '') ELSE content END")
MESSAGE_FIELDS = (("message_id", "message_id"), ("network_id", "network_id"), ("from", "from_name"),
                  ("from_kind", "from_kind"), ("to", "to_name"), ("to_kind", "to_kind"), ("kind", "kind"),
                  ("content", CONTENT)) + tuple((c, c) for c in ("priority", "in_reply_to", "task_id", "status",
                                                                 "created_at", "read_at"))
MESSAGE_COLUMNS = columns(MESSAGE_FIELDS)
HASH_PAGE = 1000  # rows per read of recent_hashes on PostgreSQL
# Urgent first, then high, normal, low; oldest first within a priority.
PRIORITY_ORDER = "CASE priority WHEN 'urgent' THEN 0 WHEN 'high' THEN 1 WHEN 'normal' THEN 2 ELSE 3 END"
# The loop guard's duplicate check (asked only for a likely duplicate: service/loopguard.py RecentHashes): the
# recipient's items of the window, newest first, by messages_by_recipient; no index on the hash (migration 0011).
FIND_DUPLICATE = ("SELECT message_id, task_id, kind FROM messages WHERE network_id = ? AND to_name = ?"
                  " AND created_ts >= ? AND content_hash = ? AND from_name = ? ORDER BY created_ts DESC LIMIT 1")


def insert_message(db: Database, row: Row) -> None:
    """Store an inbox item (row holds every column; `body_id` optional: the text is in `bodies`)."""
    db.execute("INSERT INTO messages(message_id, network_id, from_name, from_kind, to_name, to_kind, kind, content,"
               " priority, in_reply_to, task_id, status, created_at, created_ts, body_id, content_hash) VALUES"
               " (:message_id, :network_id, :from_name, :from_kind, :to_name, :to_kind, :kind, :content, :priority,"
               " :in_reply_to, :task_id, :status, :created_at, :created_ts, :body_id, :content_hash)",
               {"body_id": None, "content_hash": None, **row})


def find_duplicate(db: Database, content_hash: int, network_id: str, from_name: str, to_name: str,
                   since_ts: float) -> Row | None:
    """The newest item with this content hash (service/loopguard.py) sent from `from_name` to `to_name` since
    `since_ts` (a range of messages_by_recipient: the recipient's items of the window)."""
    return db.query_one(FIND_DUPLICATE, (network_id, to_name, since_ts, content_hash, from_name))


def recent_hashes(db: Database, since_ts: float, slack: float, cap: int) -> tuple[list[tuple[int, float]], bool]:
    """The content hashes stored since `since_ts`, oldest first, read newest first by rowid (insertion order) until
    rows are older than since_ts - slack (clocks of several writers differ a little), at most `cap` of them; and
    whether that is all of them (False: the cap stopped the read)."""
    found: list[tuple[int, float]] = []
    for content_hash, created_ts in _hashes_newest_first(db):
        if created_ts < since_ts - slack:
            break
        if content_hash is not None and created_ts >= since_ts:
            if len(found) >= cap:
                return found[::-1], False
            found.append((content_hash, created_ts))
    return found[::-1], True


def _hashes_newest_first(db: Database) -> Iterator[tuple[Any, Any]]:
    """(content_hash, created_ts) of every item, newest first, read lazily: SQLite steps its cursor; PostgreSQL's
    driver would fetch the whole table at once, so it reads pages of HASH_PAGE along the seq key instead."""
    if db.engine != POSTGRESQL:
        yield from db.con.execute("SELECT content_hash, created_ts FROM messages ORDER BY rowid DESC")
        return
    before = 2**62
    while True:
        rows = db.query("SELECT content_hash, created_ts, seq FROM messages WHERE seq < ? ORDER BY seq DESC LIMIT ?",
                        (before, HASH_PAGE))
        for row in rows:
            yield row["content_hash"], row["created_ts"]
        if len(rows) < HASH_PAGE:
            return
        before = rows[-1]["seq"]


def insert_body(db: Database, content: str, network_id: str | None = None) -> int:
    """Store a text shared by several inbox items and events (a broadcast's copies); returns its body_id. The
    network's usage counts it (schema.sql, network_usage) when `network_id` is given."""
    db.execute("INSERT INTO bodies(content, network_id) VALUES (?, ?)", (content, network_id))
    return db.con.last_insert_rowid()


def last_sent(db: Database, network_id: str, from_name: str, to_name: str) -> str | None:
    """The id of the newest item an agent sent another (the loop guard names it; messages_by_recipient, newest
    first, stops at the first match)."""
    row = db.query_one("SELECT message_id FROM messages WHERE network_id = ? AND to_name = ? AND from_name = ?"
                       " AND from_kind = 'agent' ORDER BY created_ts DESC LIMIT 1", (network_id, to_name, from_name))
    return row["message_id"] if row else None


def get_message(db: Database, network_id: str, message_id: str) -> Row | None:
    """One message of a network."""
    return db.query_one(f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE network_id = ? AND message_id = ?",
                        (network_id, message_id))


def find_message(db: Database, network_ids: list[str], message_id: str) -> Row | None:
    """One message by id among some networks."""
    marks = ",".join("?" * len(network_ids)) or "NULL"
    return db.query_one(f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE message_id = ? AND network_id IN ({marks})",
                        (message_id, *network_ids))


def unread(db: Database, network_id: str, alias: str, limit: int, kind: str = "agent") -> list[Row]:
    """An agent's (or a person's) unread items, urgent first, then oldest first."""
    return db.query(f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE network_id = ? AND to_name = ? AND to_kind = ?"
                    f" AND read_at IS NULL ORDER BY {PRIORITY_ORDER}, created_ts, rowid LIMIT ?",
                    (network_id, alias, kind, limit))


def unread_count(db: Database, network_id: str, alias: str, kind: str = "agent") -> int:
    """How many unread items an agent (or a person) has: the count the triggers keep (schema.sql,
    unread_counts), one row read however long the backlog."""
    row = db.query_one("SELECT n FROM unread_counts WHERE network_id = ? AND to_name = ? AND to_kind = ?",
                       (network_id, alias, kind))
    return row["n"] if row else 0


def mark_read(db: Database, network_id: str, alias: str, message_ids: list[str], now: str) -> list[Row]:
    """Mark some of an agent's unread items read; returns the ones that changed (id, kind, task_id)."""
    marks = ",".join("?" * len(message_ids)) or "NULL"
    return db.query(f"UPDATE messages SET read_at = ? WHERE network_id = ? AND to_name = ? AND to_kind = 'agent'"
                    f" AND read_at IS NULL AND message_id IN ({marks}) RETURNING message_id, kind, task_id",
                    (now, network_id, alias, *message_ids))


def mark_task_items_read(db: Database, network_id: str, alias: str, task_ids: list[str], now: str) -> list[Row]:
    """Mark an agent's unread items about some tasks (notices, answers) read; returns the ones that changed."""
    marks = ",".join("?" * len(task_ids)) or "NULL"
    return db.query(f"UPDATE messages SET read_at = ? WHERE network_id = ? AND to_name = ? AND to_kind = 'agent'"
                    f" AND read_at IS NULL AND task_id IN ({marks}) RETURNING message_id, kind, task_id",
                    (now, network_id, alias, *task_ids))


def mark_all_read(db: Database, network_id: str, alias: str, now: str) -> list[Row]:
    """Mark every unread item of an agent read; returns the ones that changed."""
    return db.query("UPDATE messages SET read_at = ? WHERE network_id = ? AND to_name = ? AND to_kind = 'agent'"
                    " AND read_at IS NULL RETURNING message_id, kind, task_id", (now, network_id, alias))


def get_messages(db: Database, network_id: str, message_ids: list[str]) -> list[Row]:
    """Some messages of a network by id (to explain why an ack changed nothing)."""
    marks = ",".join("?" * len(message_ids)) or "NULL"
    return db.query(f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE network_id = ? AND message_id IN ({marks})",
                    (network_id, *message_ids))


def _message_filters(alias: str | None, kind: str | None, unread_only: bool) -> tuple[list[str], list[Any]]:
    """WHERE terms of a message list."""
    where, params = [], []
    if alias:
        where.append("to_name = ?")
        params.append(alias)
    if kind:
        # A kind may be most of a network's messages; an alias's inbox or the unread ones are few.
        where.append("+kind = ?" if alias or unread_only else "kind = ?")
        params.append(kind)
    if unread_only:
        where.append("read_at IS NULL")
    return where, params


def list_messages(db: Database, network_ids: list[str], alias: str | None, kind: str | None, unread_only: bool,
                  limit: int, offset: int) -> list[Row]:
    """Messages (to an alias: its inbox), newest first."""
    where, params = _message_filters(alias, kind, unread_only)
    return page(db, f"SELECT {MESSAGE_COLUMNS}, created_ts AS _ts, rowid AS _seq FROM messages", where, params,
                network_ids, "_ts DESC, _seq DESC", limit, offset)


def list_messages_json(db: Database, network_ids: list[str], alias: str | None, kind: str | None,
                       unread_only: bool, limit: int, offset: int) -> str:
    """list_messages as the text of a JSON array (built by SQLite)."""
    where, params = _message_filters(alias, kind, unread_only)
    return page_json(db, f"SELECT {json_record(MESSAGE_FIELDS)} AS record, created_ts AS _ts, rowid AS _seq"
                     " FROM messages", where, params, network_ids, "_ts DESC, _seq DESC", limit, offset)
