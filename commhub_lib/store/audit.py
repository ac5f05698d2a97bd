"""The audit log of security-relevant actions."""

from __future__ import annotations

from typing import Any

from ..db import Database

Row = dict[str, Any]


def insert_entry(db: Database, network_id: str | None, user_id: str | None, actor: str, action: str,
                 detail: str, ip: str | None, now: str) -> None:
    """Append one audit entry."""
    db.execute("INSERT INTO audit_log(network_id, user_id, actor, action, detail, ip, created_at)"
               " VALUES (?, ?, ?, ?, ?, ?, ?)", (network_id, user_id, actor, action, detail, ip, now))


def list_entries(db: Database, network_ids: list[str] | None, action: str | None, limit: int,
                 offset: int) -> list[Row]:
    """Newest entries first; `network_ids` None means all (system admin), else only those networks'."""
    where, params = ["1 = 1"], []
    if network_ids is not None:
        where.append(f"network_id IN ({','.join('?' * len(network_ids)) or 'NULL'})")
        params.extend(network_ids)
    if action:
        where.append("action = ?")
        params.append(action)
    return db.query(f"SELECT * FROM audit_log WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ? OFFSET ?",
                    (*params, limit, offset))
