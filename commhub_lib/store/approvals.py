"""Approvals: an agent's question to a person that it waits on (the question itself is an inbox item)."""

from __future__ import annotations

from typing import Any

from ..db import Database

Row = dict[str, Any]
# The question's text is its inbox item's (stored once, in messages).
APPROVAL_COLUMNS = ("a.approval_id, a.network_id, a.alias, a.task_id, a.asked_name AS asked, a.asked_kind, a.status,"
                    " m.content AS question, a.answer, a.answer_id, a.answered_by, a.created_at, a.answered_at")
APPROVAL_FROM = "approvals AS a LEFT JOIN messages AS m ON m.message_id = a.approval_id"


def insert_approval(db: Database, row: Row) -> None:
    """Mark a stored question as an approval (row: approval_id, network_id, alias, task_id, asked_name,
    asked_kind, created_at)."""
    db.execute("INSERT INTO approvals(approval_id, network_id, alias, task_id, asked_name, asked_kind, status,"
               " created_at) VALUES (:approval_id, :network_id, :alias, :task_id, :asked_name, :asked_kind,"
               " 'pending', :created_at)", row)


def get_approval(db: Database, network_ids: list[str], approval_id: str) -> Row | None:
    """One approval among some networks."""
    marks = ",".join("?" * len(network_ids)) or "NULL"
    return db.query_one(f"SELECT {APPROVAL_COLUMNS} FROM {APPROVAL_FROM} WHERE a.approval_id = ?"
                        f" AND a.network_id IN ({marks})", (approval_id, *network_ids))


def status_of(db: Database, approval_id: str) -> str | None:
    """Just the status of an approval (what a waiter re-reads on each event of its alias)."""
    row = db.query_one("SELECT status FROM approvals WHERE approval_id = ?", (approval_id,))
    return row["status"] if row else None


def pending_for_reply(db: Database, network_id: str, alias: str, in_reply_to: str | None,
                      task_id: str | None) -> Row | None:
    """The pending approval of `alias` that a reply to it answers: the question it replies to, else (for an
    answer on a task) the oldest pending approval of that task."""
    return db.query_one("SELECT approval_id, asked_name, asked_kind, task_id FROM approvals"
                        " WHERE network_id = ? AND alias = ? AND status = 'pending'"
                        " AND (approval_id = ? OR task_id = ?)"
                        " ORDER BY approval_id = ? DESC, created_at, rowid LIMIT 1",
                        (network_id, alias, in_reply_to, task_id, in_reply_to))


def is_pending_question(db: Database, network_id: str, approval_id: str) -> bool:
    """Whether a message is an approval question still waiting for its answer."""
    return db.query_one("SELECT 1 AS x FROM approvals WHERE approval_id = ? AND network_id = ?"
                        " AND status = 'pending'", (approval_id, network_id)) is not None


def settle(db: Database, approval_id: str, status: str, answer: str, answer_id: str, answered_by: str,
           now: str) -> bool:
    """Record the answer of a pending approval; False if it was answered already."""
    return db.execute("UPDATE approvals SET status = ?, answer = ?, answer_id = ?, answered_by = ?, answered_at = ?"
                      " WHERE approval_id = ? AND status = 'pending'",
                      (status, answer, answer_id, answered_by, now, approval_id)) == 1


def list_approvals(db: Database, network_ids: list[str], status: str | None, alias: str | None,
                   limit: int, offset: int) -> list[Row]:
    """Approvals, newest first, optionally of one status and one asking alias."""
    marks = ",".join("?" * len(network_ids)) or "NULL"
    where, params = [f"a.network_id IN ({marks})"], list(network_ids)
    if status:
        where.append("a.status = ?")
        params.append(status)
    if alias:
        where.append("a.alias = ?")
        params.append(alias)
    return db.query(f"SELECT {APPROVAL_COLUMNS} FROM {APPROVAL_FROM} WHERE {' AND '.join(where)}"
                    " ORDER BY a.created_at DESC, a.rowid DESC LIMIT ? OFFSET ?", (*params, limit, offset))
