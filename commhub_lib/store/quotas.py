"""Counts behind the quotas (service/quotas.py), and which aliases a token holds."""

from __future__ import annotations

from typing import Any

from ..db import Database
from .dialect import POSTGRESQL


def lock_network(db: Database, network_id: str) -> None:
    """Inside a write: hold the network's row until the commit, so a quota's count and the insert it allows are
    one step for every writer of the network (several processes, or a pool's connections, on PostgreSQL). A no-op
    on SQLite, whose one writer holds the whole database. NO KEY UPDATE: inserts that only reference the network
    (their foreign key's KEY SHARE lock) do not wait for it."""
    if db.engine == POSTGRESQL:
        db.query("SELECT 1 AS locked FROM networks WHERE network_id = ? FOR NO KEY UPDATE", (network_id,))


def lock_user(db: Database, user_id: str) -> None:
    """lock_network for a quota counted per user (networks owned, live API tokens)."""
    if db.engine == POSTGRESQL:
        db.query("SELECT 1 AS locked FROM users WHERE user_id = ? FOR NO KEY UPDATE", (user_id,))


def find_duplicate_locked(db: Database, digest: int, network_id: str, from_name: str, to_name: str,
                          since_ts: float) -> dict[str, Any] | None:
    """messages.find_duplicate for several writers (PostgreSQL only), in one round trip (the function
    commhub_find_duplicate of migration pg/0018): first the network's usage row is locked until the commit (the row
    every storing write takes first: store/usage.hold_usage), then the lookup; two racing sends of the same content
    are checked one after the other, and the second finds the first's item."""
    return db.query_one("SELECT message_id, task_id, kind FROM commhub_find_duplicate(?, ?, ?, ?, ?)",
                        (digest, network_id, to_name, since_ts, from_name))


def count_aliases(db: Database, network_id: str) -> int:
    """How many aliases (session rows) a network has."""
    return db.con.execute("SELECT count(*) FROM sessions WHERE network_id = ?", (network_id,)).get


def count_nodes(db: Database, network_id: str) -> int:
    """How many nodes a network has recorded."""
    return db.con.execute("SELECT count(*) FROM nodes WHERE network_id = ?", (network_id,)).get


def node_exists(db: Database, network_id: str, hostname: str) -> bool:
    """Whether the network already has a node with this hostname."""
    return db.con.execute("SELECT count(*) FROM nodes WHERE network_id = ? AND hostname = ?",
                          (network_id, hostname)).get > 0


def count_live_network_tokens(db: Database, user_id: str, now: str) -> int:
    """A user's network (API) tokens that are neither revoked nor expired."""
    return db.con.execute("SELECT count(*) FROM tokens WHERE user_id = ? AND kind = 'network'"
                          " AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?)", (user_id, now)).get


def count_owned_networks(db: Database, owner_id: str) -> int:
    """How many networks a user owns."""
    return db.con.execute("SELECT count(*) FROM networks WHERE owner_id = ?", (owner_id,)).get


def count_open_invites(db: Database, network_id: str, now: str) -> int:
    """A network's invites that can still be redeemed (uses left, not expired, not revoked)."""
    return db.con.execute("SELECT count(*) FROM invites WHERE network_id = ? AND uses < max_uses"
                          " AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?)", (network_id, now)).get


def live_logins_past(db: Database, user_id: str, keep: int, now: str) -> list[str]:
    """Ids of a user's live (not revoked, not expired) login tokens beyond the `keep` newest, oldest first."""
    rows = db.con.execute("SELECT token_id FROM tokens WHERE user_id = ? AND kind = 'user' AND revoked_at IS NULL"
                          " AND (expires_at IS NULL OR expires_at > ?)"
                          " ORDER BY created_at DESC, rowid DESC LIMIT -1 OFFSET ?", (user_id, now, keep))
    return [r[0] for r in rows][::-1]
