"""Users."""

from __future__ import annotations

from typing import Any

from ..db import Database

Row = dict[str, Any]
USER_COLUMNS = "user_id, username, display_name, email, role, created_at, updated_at"


def count_users(db: Database) -> int:
    """How many users exist (the first one becomes admin)."""
    return db.con.execute("SELECT count(*) FROM users").get


def insert_user(db: Database, user_id: str, username: str, display_name: str, email: str | None,
                password_hash: str, role: str, now: str) -> None:
    """Create a user."""
    db.execute(
        "INSERT INTO users(user_id, username, display_name, email, password_hash, role, created_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (user_id, username, display_name, email, password_hash, role, now, now))


def get_user(db: Database, user_id: str) -> Row | None:
    """One user by id (without the password hash)."""
    return db.query_one(f"SELECT {USER_COLUMNS} FROM users WHERE user_id = ?", (user_id,))


def get_user_by_username(db: Database, username: str) -> Row | None:
    """One user by username (case-insensitive), with the password hash, for login."""
    return db.query_one(f"SELECT {USER_COLUMNS}, password_hash FROM users WHERE username = ?", (username,))


def get_password_hash(db: Database, user_id: str) -> str | None:
    """The stored argon2 hash of a user."""
    row = db.query_one("SELECT password_hash FROM users WHERE user_id = ?", (user_id,))
    return row["password_hash"] if row else None


def update_profile(db: Database, user_id: str, display_name: str | None, email: str | None, now: str) -> None:
    """Change display name and/or email (None keeps the current value)."""
    db.execute("UPDATE users SET display_name = coalesce(?, display_name), email = coalesce(?, email),"
               " updated_at = ? WHERE user_id = ?", (display_name, email, now, user_id))


def update_password(db: Database, user_id: str, password_hash: str, now: str) -> None:
    """Store a new password hash."""
    db.execute("UPDATE users SET password_hash = ?, updated_at = ? WHERE user_id = ?",
               (password_hash, now, user_id))


def list_users(db: Database, limit: int, offset: int) -> list[Row]:
    """All users, oldest first."""
    return db.query(f"SELECT {USER_COLUMNS} FROM users ORDER BY created_at, user_id LIMIT ? OFFSET ?",
                    (limit, offset))
