"""Counts behind the quotas (service/quotas.py), and which aliases a token holds."""

from __future__ import annotations

from ..db import Database


def count_aliases(db: Database, network_id: str) -> int:
    """How many aliases (session rows) a network has."""
    return db.con.execute("SELECT count(*) FROM sessions WHERE network_id = ?", (network_id,)).get


def aliases_held_by_token(db: Database, network_id: str, token_id: str, limit: int) -> list[str]:
    """Up to `limit` aliases of a network whose current claimant is this token."""
    return [r[0] for r in db.con.execute("SELECT alias FROM sessions WHERE network_id = ? AND token_id = ?"
                                         " ORDER BY alias LIMIT ?", (network_id, token_id, limit))]
