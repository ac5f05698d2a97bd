"""Bearer tokens (user `utok_` and network `ntok_`), stored by SHA-256 hash only."""

from __future__ import annotations

import json
import threading
from typing import Any

from ..db import Database
from ..ids import now_text
from . import users as user_store

Row = dict[str, Any]
PUBLIC_COLUMNS = ("token_id, kind, user_id, network_id, name, alias, last_alias, created_at, last_used_at,"
                  " revoked_at, expires_at")
# What makes a cached (token, user) pair stale: any change to a user, and any change to a token but its
# "last used" time (written at most once a minute per token, and kept up to date in the cached row instead).
AUTH_CHANGES = {"tokens": ("INSERT", "DELETE", "UPDATE OF token_id, kind, token_hash, user_id, network_id, name,"
                           " alias, last_alias, created_at, revoked_at, expires_at"),
                "users": ("INSERT", "DELETE", "UPDATE")}
CACHE_ENTRIES = 10_000


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


def failing_stream_grants(db: Database, grants: list[tuple[str, str, str]],
                          now: str) -> dict[tuple[str, str, str], str]:
    """Of (token_id, user_id, network_id) grants of open streams, those no longer allowed, in one query: "token"
    (revoked, expired or gone) or "member" (the user is no longer in the network, and is not the system admin,
    who may watch any network)."""
    rows = db.query(
        "SELECT g.value AS grant,"
        " EXISTS (SELECT 1 FROM tokens t WHERE t.token_id = json_extract(g.value, '$[0]') AND t.revoked_at IS NULL"
        "         AND (t.expires_at IS NULL OR t.expires_at > ?)) AS live,"
        " (EXISTS (SELECT 1 FROM members m WHERE m.network_id = json_extract(g.value, '$[2]')"
        "          AND m.user_id = json_extract(g.value, '$[1]'))"
        "  OR EXISTS (SELECT 1 FROM users u JOIN networks n ON n.network_id = json_extract(g.value, '$[2]')"
        "             WHERE u.user_id = json_extract(g.value, '$[1]') AND u.role = 'admin')) AS member"
        " FROM json_each(?) AS g", (now, json.dumps(grants)))
    failing = {}
    for row in rows:
        if not row["live"] or not row["member"]:
            token_id, user_id, network_id = json.loads(row["grant"])
            failing[(token_id, user_id, network_id)] = "token" if not row["live"] else "member"
    return failing


class LiveTokenCache:
    """The live token for a hash and its user, without reading them again on every request (two SELECTs and
    two dicts, ~10 µs of each authenticated request).

    Revocation-safe: the whole cache is dropped whenever a token or a user changes through this connection
    (TEMP triggers, so a revoke, a password change, a deleted user or network, a new last_alias all count,
    whichever code path made them) or another process committed anything to the file (the CLI revoking a
    token on the database): the next request reads the rows again. Expiry is checked on every hit. Only rows
    read outside a transaction are kept (never a change that may still roll back)."""

    def __init__(self, db: Database, entries: int = CACHE_ENTRIES):
        self._db = db
        self._entries = entries
        self._watch = db.change_watch("auth", AUTH_CHANGES)
        self._stamp: tuple[int, int] | None = None
        self._rows: dict[bytes, tuple[Row, Row]] = {}
        self.hits = self.misses = 0
        # On PostgreSQL requests authenticate in worker threads (db_pg.PgDatabase.run): the stamp check and the
        # store of a row read under it are one step, so a row read before a revocation is never kept after it.
        self._lock = threading.Lock()

    def get(self, token_hash: bytes, now: str) -> tuple[Row, Row | None] | None:
        """(token, user) for a live token (user None if it no longer exists), or None: as `get_token_by_hash`
        and `users.get_user`. The token row is the cached one: a caller may update its `last_used_at`."""
        stamp = self._watch.stamp()
        with self._lock:
            if stamp != self._stamp:
                self._rows.clear()
                self._stamp = stamp
            found = self._rows.get(token_hash)
        if found is not None:
            expires_at = found[0]["expires_at"]
            if expires_at is None or expires_at > now:
                self.hits += 1
                return found
            self._rows.pop(token_hash, None)
            return None
        self.misses += 1
        token = get_token_by_hash(self._db, token_hash, now)
        if token is None:
            return None
        user = user_store.get_user(self._db, token["user_id"])
        if user is None:
            return token, None
        if not self._db.con.in_transaction:
            with self._lock:
                if self._stamp != stamp:  # changed since this read began: the rows may be stale, keep nothing
                    return token, user
                if len(self._rows) >= self._entries:
                    del self._rows[next(iter(self._rows))]  # the oldest entry
                self._rows[token_hash] = (token, user)
        return token, user
