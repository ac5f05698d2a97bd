"""The A2A server's rows: which aliases are served as A2A agents, and each A2A task's conversation (its contextId);
one named function per query (schema: migrations/0014)."""

from __future__ import annotations

from typing import Any

from ..db import Database

Row = dict[str, Any]
AGENT_COLUMNS = "network_id, alias, enabled, description, updated_by, updated_at"


def upsert_agent(db: Database, network_id: str, alias: str, enabled: bool, description: str, updated_by: str,
                 now: str) -> None:
    """Opt an alias in (or out) as an A2A agent, with the description its Agent Card shows."""
    db.execute("INSERT INTO a2a_agents(network_id, alias, enabled, description, updated_by, updated_at)"
               " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(network_id, alias) DO UPDATE SET enabled = excluded.enabled,"
               " description = excluded.description, updated_by = excluded.updated_by,"
               " updated_at = excluded.updated_at",
               (network_id, alias, int(enabled), description, updated_by, now))


def get_agent(db: Database, network_id: str, alias: str) -> Row | None:
    """An alias's A2A setting, or None if it was never set."""
    return db.query_one(f"SELECT {AGENT_COLUMNS} FROM a2a_agents WHERE network_id = ? AND alias = ?",
                        (network_id, alias))


def insert_task(db: Database, task_id: str, network_id: str, alias: str, caller: str, context_id: str,
                now: str) -> None:
    """Note a task an A2A client sent: to which served alias, from which caller, in which conversation."""
    db.execute("INSERT OR IGNORE INTO a2a_tasks(task_id, network_id, alias, caller, context_id, created_at)"
               " VALUES (?, ?, ?, ?, ?, ?)", (task_id, network_id, alias, caller, context_id, now))


def get_task(db: Database, task_id: str) -> Row | None:
    """The A2A side of a task (None: no A2A client sent it)."""
    return db.query_one("SELECT task_id, network_id, alias, caller, context_id, created_at FROM a2a_tasks"
                        " WHERE task_id = ?", (task_id,))


def replies_to_caller(db: Database, network_id: str, caller: str, task_id: str, kind: str, limit: int) -> list[Row]:
    """The replies a task's recipient sent its A2A caller about it, oldest first (read along the caller's inbox,
    messages_by_recipient: an A2A caller's inbox holds only the replies to its own tasks)."""
    return db.query("SELECT message_id, from_name, content, status, created_at, read_at FROM messages"
                    " WHERE network_id = ? AND to_name = ? AND task_id = ? AND kind = ?"
                    " ORDER BY created_ts, message_id LIMIT ?", (network_id, caller, task_id, kind, limit))
