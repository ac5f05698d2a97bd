"""Bearer tokens (user `utok_` and network `ntok_`), stored by SHA-256 hash only."""

from __future__ import annotations

from typing import Any

from ..db import Database
from ..ids import now_text

Row = dict[str, Any]
PUBLIC_COLUMNS = ("token_id, kind, user_id, network_id, name, alias, last_alias, created_at, last_used_at,"
                  " revoked_at, expires_at")


def insert_token(db: Database, token_id: str, kind: str, token_hash: bytes, user_id: str,
                 network_id: str | None, name: str, alias: str | None, now: str,
                 expires_at: str | None = None) -> None:
    """Store a new token (its hash, never the secret)."""
    db.execute("INSERT INTO tokens(token_id, kind, token_hash, user_id, network_id, name, alias, created_at,"
               " expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
               (token_id, kind, token_hash, user_id, network_id, name, alias, now, expires_at))


def get_token_by_hash(db: Database, token_hash: bytes, now: str | None = None) -> Row | None:
    """The live (not revoked, not expired at `now`, default: the present) token with this hash; the index lookup
    compares whole hashes."""
    return db.query_one(f"SELECT {PUBLIC_COLUMNS} FROM tokens WHERE token_hash = ? AND revoked_at IS NULL"
                        " AND (expires_at IS NULL OR expires_at > ?)", (token_hash, now or now_text()))


def is_live(db: Database, token_id: str, now: str) -> bool:
    """True while a token is neither revoked nor expired."""
    return db.query_one("SELECT 1 AS live FROM tokens WHERE token_id = ? AND revoked_at IS NULL"
                        " AND (expires_at IS NULL OR expires_at > ?)", (token_id, now)) is not None


def live_tokens_bound_to(db: Database, network_id: str, alias: str, now: str) -> list[Row]:
    """The live network tokens bound to one alias of a network."""
    return db.query(f"SELECT {PUBLIC_COLUMNS} FROM tokens WHERE kind = 'network' AND network_id = ? AND alias = ?"
                    " AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?)", (network_id, alias, now))


def list_login_tokens(db: Database, user_id: str, now: str) -> list[Row]:
    """A user's live login (user) tokens, newest first."""
    return db.query(f"SELECT {PUBLIC_COLUMNS} FROM tokens WHERE user_id = ? AND kind = 'user' AND revoked_at IS NULL"
                    " AND (expires_at IS NULL OR expires_at > ?) ORDER BY created_at DESC, token_id", (user_id, now))


def get_token(db: Database, token_id: str) -> Row | None:
    """One token by id."""
    return db.query_one(f"SELECT {PUBLIC_COLUMNS} FROM tokens WHERE token_id = ?", (token_id,))


def list_network_tokens_of_user(db: Database, user_id: str, limit: int = -1, offset: int = 0) -> list[Row]:
    """The user's API (network) tokens, revoked ones included, newest first (a page of them)."""
    return db.query(f"SELECT {PUBLIC_COLUMNS} FROM tokens WHERE user_id = ? AND kind = 'network'"
                    " ORDER BY created_at DESC, token_id LIMIT ? OFFSET ?", (user_id, limit, offset))


def revoke_token(db: Database, token_id: str, now: str) -> bool:
    """Revoke a token; False if it was already revoked."""
    return db.execute("UPDATE tokens SET revoked_at = ? WHERE token_id = ? AND revoked_at IS NULL",
                      (now, token_id)) == 1


def revoke_user_tokens(db: Database, user_id: str, now: str, keep_token_id: str | None) -> list[str]:
    """Revoke a user's login tokens except one (after a password change); returns the revoked ids."""
    rows = db.query("UPDATE tokens SET revoked_at = ? WHERE user_id = ? AND kind = 'user' AND revoked_at IS NULL"
                    " AND token_id IS NOT ? RETURNING token_id", (now, user_id, keep_token_id))
    return [r["token_id"] for r in rows]


def touch_token(db: Database, token_id: str, now: str) -> None:
    """Record when a token was last used."""
    db.execute("UPDATE tokens SET last_used_at = ? WHERE token_id = ?", (now, token_id))


def set_last_alias(db: Database, token_id: str, alias: str) -> None:
    """Remember the alias this token last claimed (identity for session-less MCP calls)."""
    db.execute("UPDATE tokens SET last_alias = ? WHERE token_id = ?", (alias, token_id))
