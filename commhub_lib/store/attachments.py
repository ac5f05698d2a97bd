"""Attachments: file blobs kept once per network by SHA-256, the uploads that name them, and their links to the tasks,
messages and replies they were sent with (schema.sql; the triggers there drop what no item uses any more)."""

from __future__ import annotations

from typing import Any

from ..db import Database

Row = dict[str, Any]
# What a listing shows of an attachment (the bytes are read only by a download).
RECORD = "a.attachment_id, a.filename, b.size, a.content_type, b.sha256"


def blob_id_of(db: Database, network_id: str, sha256: str) -> int | None:
    """The network's blob with these bytes (by their SHA-256), if it has one."""
    row = db.query_one("SELECT blob_id FROM attachment_blobs WHERE network_id = ? AND sha256 = ?",
                       (network_id, sha256))
    return int(row["blob_id"]) if row else None


def insert_blob(db: Database, network_id: str, sha256: str, data: bytes) -> int:
    """Store a file's bytes for a network; returns the blob's id."""
    db.execute("INSERT INTO attachment_blobs(network_id, sha256, size, data) VALUES (?, ?, ?, ?)",
               (network_id, sha256, len(data), data))
    return int(db.con.last_insert_rowid())


def insert_attachment(db: Database, row: Row) -> None:
    """Store an upload: attachment_id, network_id, blob_id, filename, content_type, uploaded_by, created_at/_ts."""
    db.execute("INSERT INTO attachments(attachment_id, network_id, blob_id, filename, content_type, uploaded_by,"
               " created_at, created_ts) VALUES (:attachment_id, :network_id, :blob_id, :filename, :content_type,"
               " :uploaded_by, :created_at, :created_ts)", row)


def get_attachment(db: Database, network_id: str, attachment_id: str) -> Row | None:
    """An attachment of the network with its blob's size and hash, its uploader, and whether it was ever sent."""
    return db.query_one(f"SELECT {RECORD}, a.network_id, a.uploaded_by, EXISTS (SELECT 1 FROM attachment_links l"
                        " WHERE l.attachment_id = a.attachment_id) AS sent FROM attachments a"
                        " JOIN attachment_blobs b ON b.blob_id = a.blob_id"
                        " WHERE a.attachment_id = ? AND a.network_id = ?", (attachment_id, network_id))


def find_attachment(db: Database, network_ids: list[str], attachment_id: str) -> Row | None:
    """get_attachment in any of the networks, with the file's bytes (a download)."""
    if not network_ids:
        return None
    marks = ",".join("?" * len(network_ids))
    return db.query_one(f"SELECT {RECORD}, a.network_id, a.uploaded_by, b.data, EXISTS (SELECT 1 FROM"
                        " attachment_links l WHERE l.attachment_id = a.attachment_id) AS sent FROM attachments a"
                        " JOIN attachment_blobs b ON b.blob_id = a.blob_id"
                        f" WHERE a.attachment_id = ? AND a.network_id IN ({marks})", (attachment_id, *network_ids))


def insert_link(db: Database, item_id: str, attachment_id: str, network_id: str, task_id: str | None,
                position: int) -> None:
    """Tie an attachment to an item (a task id, or a message/reply id); the same pair twice is one link."""
    db.execute("INSERT OR IGNORE INTO attachment_links(item_id, attachment_id, network_id, task_id, position)"
               " VALUES (?, ?, ?, ?, ?)", (item_id, attachment_id, network_id, task_id, position))


def of_items(db: Database, item_ids: list[str]) -> list[Row]:
    """The attachments of these items (task ids, message ids), each with its item_id, in the order sent."""
    if not item_ids:
        return []
    marks = ",".join("?" * len(item_ids))
    return db.query(f"SELECT l.item_id, {RECORD} FROM attachment_links l"
                    " JOIN attachments a ON a.attachment_id = l.attachment_id"
                    " JOIN attachment_blobs b ON b.blob_id = a.blob_id"
                    f" WHERE l.item_id IN ({marks}) ORDER BY l.item_id, l.position", tuple(item_ids))


def of_task_replies(db: Database, task_id: str) -> list[Row]:
    """The attachments of the replies about a task (progress, question, answer, result), oldest first, each with
    the reply's message id as item_id."""
    return db.query(f"SELECT l.item_id, {RECORD} FROM attachment_links l"
                    " JOIN attachments a ON a.attachment_id = l.attachment_id"
                    " JOIN attachment_blobs b ON b.blob_id = a.blob_id"
                    " LEFT JOIN messages m ON m.message_id = l.item_id"
                    " WHERE l.task_id = ? AND l.item_id <> ? ORDER BY m.created_ts, l.item_id, l.position",
                    (task_id, task_id))


def unsent_before(db: Database, cutoff_ts: float, limit: int) -> list[str]:
    """Ids of uploads made before the cutoff that were never sent with anything (oldest first)."""
    rows = db.query("SELECT a.attachment_id FROM attachments a WHERE a.created_ts < ? AND NOT EXISTS"
                    " (SELECT 1 FROM attachment_links l WHERE l.attachment_id = a.attachment_id)"
                    " ORDER BY a.created_ts LIMIT ?", (cutoff_ts, limit))
    return [r["attachment_id"] for r in rows]


def delete_attachments(db: Database, attachment_ids: list[str]) -> int:
    """Drop uploads by id (the trigger drops a blob no other upload uses); returns how many went."""
    marks = ",".join("?" * len(attachment_ids)) or "NULL"
    return db.execute(f"DELETE FROM attachments WHERE attachment_id IN ({marks})", tuple(attachment_ids))
