"""The A2A client's tables: bound aliases, the bridge outbox, forwarded tasks (schema: migrations/0015)."""

from __future__ import annotations

from typing import Any

from ..db import Database

Row = dict[str, Any]
REMOTE_PUBLIC = "network_id, alias, url, token IS NOT NULL AND token != '' AS token_set, enabled, created_by, " \
                "created_at, updated_at"


# -- bound aliases ----------------------------------------------------------------------------------------------

def upsert_remote(db: Database, network_id: str, alias: str, url: str, token: str | None, enabled: int,
                  created_by: str, now: str) -> None:
    """Bind an alias to a remote agent, or change its binding (a None token keeps the stored one)."""
    db.execute("INSERT INTO a2a_remotes(network_id, alias, url, token, enabled, created_by, created_at, updated_at)"
               " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(network_id, alias) DO UPDATE SET url = excluded.url,"
               " token = coalesce(excluded.token, a2a_remotes.token), enabled = excluded.enabled,"
               " updated_at = excluded.updated_at",
               (network_id, alias, url, token, enabled, created_by, now, now))


def get_remote(db: Database, network_id: str, alias: str) -> Row | None:
    """One binding as the API shows it (whether a token is set, never the token)."""
    return db.query_one(f"SELECT {REMOTE_PUBLIC} FROM a2a_remotes WHERE network_id = ? AND alias = ?",
                        (network_id, alias))


def get_remote_secret(db: Database, network_id: str, alias: str) -> Row | None:
    """One binding with its URL and token (the bridge job sends the token)."""
    return db.query_one("SELECT network_id, alias, url, token, enabled FROM a2a_remotes"
                        " WHERE network_id = ? AND alias = ?", (network_id, alias))


def delete_remote(db: Database, network_id: str, alias: str) -> bool:
    """Unbind an alias; False if it was not bound."""
    return db.execute("DELETE FROM a2a_remotes WHERE network_id = ? AND alias = ?", (network_id, alias)) > 0


def enabled_remotes(db: Database) -> list[Row]:
    """Every enabled binding's network and alias (Hub.record_event's in-memory index is made from them)."""
    return db.query("SELECT network_id, alias FROM a2a_remotes WHERE enabled = 1", ())


def touch_bound_sessions(db: Database, now: str, now_ts: float) -> int:
    """A sign of life for every enabled bound alias's session (nobody holds it by token: the bridge answers for
    it, and its touch counts as the alias's call for presence); returns how many."""
    return db.execute("UPDATE sessions SET last_seen_at = ?, last_seen_ts = ?, last_call_ts = ?,"
                      " status = CASE status WHEN 'offline' THEN 'idle' ELSE status END"
                      " WHERE token_id IS NULL AND (network_id, alias) IN"
                      " (SELECT network_id, alias FROM a2a_remotes WHERE enabled = 1)", (now, now_ts, now_ts))


# -- the outbox -------------------------------------------------------------------------------------------------

def insert_outbox(db: Database, network_id: str, alias: str, kind: str, task_id: str, message_id: str | None,
                  now: str) -> None:
    """Queue one thing to tell a remote agent (inside the transaction of the event that caused it)."""
    db.execute("INSERT INTO a2a_outbox(network_id, alias, kind, task_id, message_id, created_at, updated_at)"
               " VALUES (?, ?, ?, ?, ?, ?, ?)", (network_id, alias, kind, task_id, message_id, now, now))


def next_outbox(db: Database, task_id: str) -> Row | None:
    """A task's oldest pending outbox row (rows of one task are sent in order)."""
    return db.query_one("SELECT * FROM a2a_outbox WHERE task_id = ? AND status = 'pending'"
                        " ORDER BY outbox_id LIMIT 1", (task_id,))


def mark_outbox_sent(db: Database, outbox_id: int, now: str) -> None:
    """An outbox row was delivered to the remote agent."""
    db.execute("UPDATE a2a_outbox SET status = 'sent', attempts = attempts + 1, last_error = NULL, updated_at = ?"
               " WHERE outbox_id = ?", (now, outbox_id))


def mark_outbox_retry(db: Database, outbox_id: int, error: str, first_try_ts: float, next_ts: float,
                      now: str) -> None:
    """An attempt failed: try again at next_ts."""
    db.execute("UPDATE a2a_outbox SET attempts = attempts + 1, last_error = ?, first_try_ts = ?,"
               " next_attempt_ts = ?, updated_at = ? WHERE outbox_id = ?",
               (error, first_try_ts, next_ts, now, outbox_id))


def mark_outbox_failed(db: Database, outbox_id: int, error: str, now: str) -> None:
    """Give an outbox row up (refused by the remote agent, or failing too long)."""
    db.execute("UPDATE a2a_outbox SET status = 'failed', attempts = attempts + 1, last_error = ?, updated_at = ?"
               " WHERE outbox_id = ?", (error, now, outbox_id))


def tasks_with_work(db: Database) -> list[str]:
    """The tasks the bridge job has something to do for: a pending outbox row, or a remote task to follow."""
    rows = db.query("SELECT DISTINCT task_id FROM a2a_outbox WHERE status = 'pending'"
                    " UNION SELECT task_id FROM a2a_forwarded WHERE following = 1", ())
    return [r["task_id"] for r in rows]


def list_outbox(db: Database, network_id: str, alias: str, limit: int) -> list[Row]:
    """A bound alias's outbox rows, newest first (GET …/a2a-remote shows the latest)."""
    return db.query("SELECT outbox_id, kind, task_id, status, attempts, last_error, created_at, updated_at"
                    " FROM a2a_outbox WHERE network_id = ? AND alias = ? ORDER BY outbox_id DESC LIMIT ?",
                    (network_id, alias, limit))


# -- forwarded tasks --------------------------------------------------------------------------------------------

def insert_forwarded(db: Database, task_id: str, network_id: str, alias: str, remote_task_id: str,
                     remote_context_id: str | None, now: str) -> None:
    """Remember the remote task a CommHub task was forwarded as (followed from now on)."""
    db.execute("INSERT INTO a2a_forwarded(task_id, network_id, alias, remote_task_id, remote_context_id, created_at,"
               " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(task_id) DO UPDATE SET"
               " remote_task_id = excluded.remote_task_id, remote_context_id = excluded.remote_context_id,"
               " following = 1, updated_at = excluded.updated_at",
               (task_id, network_id, alias, remote_task_id, remote_context_id, now, now))


def get_forwarded(db: Database, task_id: str) -> Row | None:
    """The remote side of a forwarded task."""
    return db.query_one("SELECT * FROM a2a_forwarded WHERE task_id = ?", (task_id,))


def set_seen(db: Database, task_id: str, state: str, seen: str, following: int, poll_seconds: float,
             next_poll_ts: float, now: str) -> None:
    """Store the remote state last acted on and when to look again."""
    db.execute("UPDATE a2a_forwarded SET remote_state = ?, seen = ?, following = ?, poll_seconds = ?, next_poll_ts = ?,"
               " updated_at = ? WHERE task_id = ?", (state, seen, following, poll_seconds, next_poll_ts, now, task_id))


def set_next_poll(db: Database, task_id: str, poll_seconds: float, next_poll_ts: float) -> None:
    """Nothing changed remotely: look again later."""
    db.execute("UPDATE a2a_forwarded SET poll_seconds = ?, next_poll_ts = ? WHERE task_id = ?",
               (poll_seconds, next_poll_ts, task_id))


def stop_following(db: Database, task_id: str, now: str) -> None:
    """The remote task is over (or the CommHub task is): stop polling it."""
    db.execute("UPDATE a2a_forwarded SET following = 0, updated_at = ? WHERE task_id = ?", (now, task_id))


def delete_settled_before(db: Database, cutoff: str, limit: int) -> int:
    """Drop up to `limit` settled outbox rows and followed-out task rows last changed before `cutoff`."""
    gone = db.execute("DELETE FROM a2a_outbox WHERE outbox_id IN (SELECT outbox_id FROM a2a_outbox"
                      " WHERE status != 'pending' AND updated_at < ? LIMIT ?)", (cutoff, limit))
    return gone + db.execute("DELETE FROM a2a_forwarded WHERE task_id IN (SELECT task_id FROM a2a_forwarded"
                             " WHERE following = 0 AND updated_at < ? LIMIT ?)", (cutoff, limit))
