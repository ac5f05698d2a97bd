"""Networks, members and invites."""

from __future__ import annotations

from typing import Any

from ..db import Database

Row = dict[str, Any]
NETWORK_COLUMNS = ("n.network_id, n.name AS network_name, n.description, n.owner_id, n.visibility,"
                   " n.max_members, n.created_at, n.updated_at")


def insert_network(db: Database, network_id: str, name: str, description: str, owner_id: str, now: str) -> None:
    """Create a network."""
    db.execute("INSERT INTO networks(network_id, name, description, owner_id, created_at, updated_at)"
               " VALUES (?, ?, ?, ?, ?, ?)", (network_id, name, description, owner_id, now, now))


def get_network(db: Database, network_id: str) -> Row | None:
    """One network by id."""
    return db.query_one(f"SELECT {NETWORK_COLUMNS} FROM networks n WHERE n.network_id = ?", (network_id,))


def list_networks_of_user(db: Database, user_id: str) -> list[Row]:
    """The networks a user belongs to, with the user's role in each."""
    return db.query(f"SELECT {NETWORK_COLUMNS}, m.role AS member_role FROM networks n"
                    " JOIN members m ON m.network_id = n.network_id WHERE m.user_id = ?"
                    " ORDER BY n.created_at, n.network_id", (user_id,))


def find_user_network_by_name(db: Database, owner_id: str, name: str) -> Row | None:
    """A network the user owns with this name (names are unique per owner)."""
    return db.query_one("SELECT network_id FROM networks WHERE owner_id = ? AND name = ?", (owner_id, name))


def default_network_of_user(db: Database, user_id: str) -> Row | None:
    """The user's oldest owned network (its `default`), else the oldest it belongs to."""
    return db.query_one("SELECT n.network_id FROM networks n JOIN members m ON m.network_id = n.network_id"
                        " WHERE m.user_id = ? ORDER BY (m.role = 'owner') DESC, n.created_at, n.network_id"
                        " LIMIT 1", (user_id,))


def update_network(db: Database, network_id: str, name: str | None, description: str | None,
                   visibility: str | None, max_members: int | None, now: str) -> None:
    """Change a network's fields (None keeps the current value)."""
    db.execute("UPDATE networks SET name = coalesce(?, name), description = coalesce(?, description),"
               " visibility = coalesce(?, visibility), max_members = coalesce(?, max_members), updated_at = ?"
               " WHERE network_id = ?", (name, description, visibility, max_members, now, network_id))


def delete_network(db: Database, network_id: str) -> None:
    """Delete a network; its members, invites, tokens, sessions, tasks and messages go with it (cascade)."""
    db.execute("DELETE FROM networks WHERE network_id = ?", (network_id,))


def insert_member(db: Database, network_id: str, user_id: str, role: str, now: str) -> None:
    """Add a user to a network."""
    db.execute("INSERT INTO members(network_id, user_id, role, joined_at) VALUES (?, ?, ?, ?)",
               (network_id, user_id, role, now))


def get_member_role(db: Database, network_id: str, user_id: str) -> str | None:
    """The user's role in the network, or None if not a member."""
    row = db.query_one("SELECT role FROM members WHERE network_id = ? AND user_id = ?", (network_id, user_id))
    return row["role"] if row else None


def count_members(db: Database, network_id: str) -> int:
    """How many members a network has."""
    return db.con.execute("SELECT count(*) FROM members WHERE network_id = ?", (network_id,)).get


def list_members(db: Database, network_id: str, limit: int = -1, offset: int = 0) -> list[Row]:
    """The members of a network with their user fields (a page of them)."""
    return db.query("SELECT m.user_id, u.username, u.display_name, m.role, m.joined_at FROM members m"
                    " JOIN users u ON u.user_id = m.user_id WHERE m.network_id = ?"
                    " ORDER BY m.joined_at, m.user_id LIMIT ? OFFSET ?", (network_id, limit, offset))


def list_network_ids_of_user(db: Database, user_id: str) -> list[str]:
    """Ids of every network the user belongs to."""
    return [r["network_id"] for r in db.query("SELECT network_id FROM members WHERE user_id = ?", (user_id,))]


def delete_member(db: Database, network_id: str, user_id: str) -> bool:
    """Remove a user from a network; False if they were not a member."""
    return db.execute("DELETE FROM members WHERE network_id = ? AND user_id = ?", (network_id, user_id)) == 1


def set_member_role(db: Database, network_id: str, user_id: str, role: str) -> bool:
    """Change a member's role; False if they are not a member."""
    return db.execute("UPDATE members SET role = ? WHERE network_id = ? AND user_id = ?",
                      (role, network_id, user_id)) == 1


INVITE_COLUMNS = "invite_id, network_id, role, max_uses, uses, created_by, created_at, expires_at, revoked_at"


def insert_invite(db: Database, invite_id: str, code_hash: bytes, network_id: str, role: str, max_uses: int,
                  created_by: str, now: str, expires_at: str | None) -> None:
    """Create an invite (the hash of its code; the code itself is never stored)."""
    db.execute("INSERT INTO invites(invite_id, code_hash, network_id, role, max_uses, created_by, created_at,"
               " expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
               (invite_id, code_hash, network_id, role, max_uses, created_by, now, expires_at))


def get_invite_by_hash(db: Database, code_hash: bytes) -> Row | None:
    """The invite whose code has this hash."""
    return db.query_one(f"SELECT {INVITE_COLUMNS} FROM invites WHERE code_hash = ?", (code_hash,))


def list_invites(db: Database, network_id: str, limit: int, offset: int) -> list[Row]:
    """A network's invites, newest first (never their codes)."""
    return db.query(f"SELECT {INVITE_COLUMNS} FROM invites WHERE network_id = ?"
                    " ORDER BY created_at DESC, invite_id LIMIT ? OFFSET ?", (network_id, limit, offset))


def revoke_invite(db: Database, network_id: str, invite_id: str, now: str) -> bool:
    """Revoke an invite; False if it is unknown in this network or already revoked."""
    return db.execute("UPDATE invites SET revoked_at = ? WHERE network_id = ? AND invite_id = ?"
                      " AND revoked_at IS NULL", (now, network_id, invite_id)) == 1


def use_invite(db: Database, invite_id: str) -> bool:
    """Count one use of an invite; False when it was used up or revoked (checked in the same statement)."""
    return db.execute("UPDATE invites SET uses = uses + 1 WHERE invite_id = ? AND uses < max_uses"
                      " AND revoked_at IS NULL", (invite_id,)) == 1
