"""Operator actions on the database file (the CLI's bootstrap commands, run before or beside a server).

Whoever can write the database file already holds everything in it, so these functions act without a
token: as a named user (their permission rules still apply) or as the system admin. Each one is the same
service code the REST API runs; only the way the caller is established differs.
"""

from __future__ import annotations

from typing import Any

import trio

from .. import auth
from ..errors import NotFound
from ..ids import now_text
from ..models import MAX_LIMIT
from ..store import tokens as token_store
from ..store import users as user_store
from .accounts import public_user
from .hub import Hub, Principal

OPERATOR_TOKEN_ID = "cli"  # shown in audit entries as the source of an operator action
OPERATOR_IP = "cli"


def act_as(hub: Hub, username: str | None) -> Principal:
    """A Principal for the named user, or for the system admin when no name is given."""
    if username:
        row = user_store.get_user_by_username(hub.db, username)
        if row is None:
            raise NotFound(f"no user named '{username}'; list them with `commhub user list`", code="user_not_found")
        return Principal(kind="user", token_id=OPERATOR_TOKEN_ID, user=row)
    admins = [r for r in user_store.list_users(hub.db, MAX_LIMIT, 0) if r["role"] == "admin"]
    if not admins:
        raise NotFound("this database has no users yet; create the first one (the system admin) with "
                       "`commhub user create NAME`", code="no_users")
    return Principal(kind="user", token_id=OPERATOR_TOKEN_ID, user=admins[0])


def list_all_users(hub: Hub, limit: int, offset: int) -> dict[str, Any]:
    """Every user, oldest first (works on an empty database, unlike the admin-only REST listing)."""
    rows = user_store.list_users(hub.db, limit, offset)
    return {"ok": True, "users": [public_user(r) for r in rows]}


async def set_password(hub: Hub, username: str, password: str) -> dict[str, Any]:
    """Set a user's password (no old password needed) and log out every login token of that user."""
    principal = act_as(hub, username)
    password_hash = await trio.to_thread.run_sync(auth.hash_password, password)
    with hub.db.write():
        now = now_text()
        user_store.update_password(hub.db, principal.user_id, password_hash, now)
        token_store.revoke_user_tokens(hub.db, principal.user_id, now, None)
        hub.audit("password_reset", actor="cli", user_id=principal.user_id, ip=OPERATOR_IP)
    return {"ok": True, "user": public_user(principal.user), "login_tokens_revoked": True}
