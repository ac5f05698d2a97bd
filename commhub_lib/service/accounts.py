"""Users, logins, bearer tokens and the audit log."""

from __future__ import annotations

from typing import Any

import trio

from .. import auth
from ..db import ConstraintError
from ..errors import Conflict, Forbidden, NotFound, Unauthorized
from ..ids import new_id, now_text, now_ts, ts_text
from ..models import (
    MAX_LIMIT,
    LoginRequest,
    PasswordChangeRequest,
    RegisterRequest,
    TokenCreateRequest,
    UpdateMeRequest,
)
from ..store import networks as network_store
from ..store import sessions as session_store
from ..store import tokens as token_store
from ..store import users as user_store
from . import quotas
from .hub import Hub, Principal, clamp_limit, require_user_token
from .networks import create_network_rows, require_role
from .sessions import end_token

PUBLIC_USER_FIELDS = ("user_id", "username", "display_name", "role")


def public_user(row: dict[str, Any]) -> dict[str, Any]:
    """The user fields shown to clients (the reference's shape), plus email and created_at."""
    out = {k: row[k] for k in PUBLIC_USER_FIELDS}
    out["email"] = row.get("email")
    out["created_at"] = row.get("created_at")
    return out


def issue_token(hub: Hub, kind: str, user_id: str, network_id: str | None, name: str,
                alias: str | None = None, expires_in_seconds: float | None = None) -> tuple[str, str]:
    """Create a token row (inside db.write()); returns (token_id, secret). The secret is never stored.
    Login (user) tokens expire after `login_token_days` unless that setting is 0."""
    prefix = auth.USER_TOKEN_PREFIX if kind == "user" else auth.NETWORK_TOKEN_PREFIX
    secret = auth.new_secret(prefix)
    token_id = new_id("tok" if kind == "network" else "utk")
    if kind == "user" and expires_in_seconds is None and hub.settings.login_token_days > 0:
        expires_in_seconds = hub.settings.login_token_days * 86400
    expires_at = ts_text(now_ts() + expires_in_seconds) if expires_in_seconds else None
    token_store.insert_token(hub.db, token_id, kind, auth.token_hash(secret), user_id, network_id, name, alias,
                             now_text(), expires_at)
    return token_id, secret


async def register(hub: Hub, body: RegisterRequest, ip: str | None) -> dict[str, Any]:
    """Create a user with a `default` network and a network token; the first user is the system admin."""
    if user_store.get_user_by_username(hub.db, body.username):
        raise Conflict(f"username '{body.username}' is already taken", code="username_taken")
    if session_store.alias_in_use(hub.db, body.username):
        # An agent already goes by this name: a person with it could be taken for that agent (and the reverse).
        raise Conflict(f"username '{body.username}' is already used as an agent alias; pick another username",
                       code="username_taken")
    password_hash = await trio.to_thread.run_sync(auth.hash_password, body.password)
    user_id = new_id("u")
    now = now_text()
    try:
        with hub.db.write():
            role = "admin" if user_store.count_users(hub.db) == 0 else "user"
            user_store.insert_user(hub.db, user_id, body.username, body.display_name or body.username,
                                   body.email, password_hash, role, now)
            network_id = create_network_rows(hub, user_id, "default", "")
            _, user_token = issue_token(hub, "user", user_id, None, "login")
            token_id, network_token = issue_token(hub, "network", user_id, network_id, "default")
            hub.audit("register", actor=body.username, user_id=user_id, network_id=network_id,
                      detail={"role": role}, ip=ip)
            hub.audit("token_create", actor=body.username, user_id=user_id, network_id=network_id,
                      detail={"token_id": token_id, "name": "default"}, ip=ip)
    except ConstraintError as exc:  # a concurrent registration took the name first
        raise Conflict(f"username '{body.username}' is already taken", code="username_taken") from exc
    user = user_store.get_user(hub.db, user_id)
    assert user is not None
    return {"ok": True, "user": public_user(user), "token": user_token, "network_token": network_token,
            "network_id": network_id}


async def login(hub: Hub, body: LoginRequest, ip: str | None) -> dict[str, Any]:
    """Check a password (off the event loop) and issue a user token."""
    row = user_store.get_user_by_username(hub.db, body.username)
    stored = row["password_hash"] if row else auth.DUMMY_HASH
    ok = await trio.to_thread.run_sync(auth.verify_password, stored, body.password)
    if not row or not ok:
        with hub.db.write():
            hub.audit("login_failed", actor=body.username, user_id=row["user_id"] if row else None, ip=ip)
        raise Unauthorized("invalid username or password", code="invalid_credentials")
    with hub.db.write():
        quotas.make_room_for_login(hub, row["user_id"])
        _, secret = issue_token(hub, "user", row["user_id"], None, "login")
        hub.audit("login", actor=row["username"], user_id=row["user_id"], ip=ip)
    default = network_store.default_network_of_user(hub.db, row["user_id"])
    return {"ok": True, "user": public_user(row), "token": secret,
            "network_id": default["network_id"] if default else None}


def authenticate(hub: Hub, secret: str) -> Principal:
    """Resolve a bearer secret to a Principal, or raise 401 (unknown, malformed or revoked)."""
    if not secret.startswith((auth.USER_TOKEN_PREFIX, auth.NETWORK_TOKEN_PREFIX)) or len(secret) > 200:
        raise Unauthorized("invalid token: expected a utok_ or ntok_ token", code="invalid_token")
    now = now_text()
    found = hub.live_tokens().get(auth.token_hash(secret), now)
    if found is None:
        raise Unauthorized("invalid, revoked or expired token", code="invalid_token")
    token, user = found
    if user is None:
        raise Unauthorized("the token's user no longer exists", code="invalid_token")
    if token["last_used_at"] is None or token["last_used_at"][:16] != now[:16]:
        # At most one write per token per minute for "last used"; best effort, so reads go on when the disk
        # is full or another process holds the lock. The cached row keeps the time (the write does not drop
        # the cache), so the next request of the minute does not write again.
        hub.db.try_write(lambda: token_store.touch_token(hub.db, token["token_id"], now))
        token["last_used_at"] = now
    return Principal(kind=token["kind"], token_id=token["token_id"], user=dict(user),
                     network_id=token["network_id"], bound_alias=token["alias"], last_alias=token["last_alias"],
                     expires_at=token["expires_at"])


def me(hub: Hub, principal: Principal) -> dict[str, Any]:
    """The caller's user record."""
    return {"ok": True, "user": public_user(principal.user)}


def update_me(hub: Hub, principal: Principal, body: UpdateMeRequest) -> dict[str, Any]:
    """Change display name / email."""
    require_user_token(principal)
    with hub.db.write():
        user_store.update_profile(hub.db, principal.user_id, body.display_name, body.email, now_text())
    user = user_store.get_user(hub.db, principal.user_id)
    assert user is not None
    return {"ok": True, "user": public_user(user)}


async def change_password(hub: Hub, principal: Principal, body: PasswordChangeRequest,
                          ip: str | None) -> dict[str, Any]:
    """Verify the old password, store the new one, and log out every other login token."""
    require_user_token(principal)
    stored = user_store.get_password_hash(hub.db, principal.user_id) or auth.DUMMY_HASH
    if not await trio.to_thread.run_sync(auth.verify_password, stored, body.old_password):
        with hub.db.write():
            hub.audit("password_change_failed", actor=principal.label, user_id=principal.user_id, ip=ip)
        raise Forbidden("old_password is wrong", code="wrong_password")
    new_hash = await trio.to_thread.run_sync(auth.hash_password, body.new_password)
    with hub.db.write():
        now = now_text()
        user_store.update_password(hub.db, principal.user_id, new_hash, now)
        revoked = token_store.revoke_user_tokens(hub.db, principal.user_id, now, principal.token_id)
        hub.audit("password_change", actor=principal.label, user_id=principal.user_id, ip=ip,
                  detail={"logins_revoked": len(revoked)})
    for token_id in revoked:  # their open streams end now, not at their next request
        end_token(hub, token_id)
    return {"ok": True, "logins_revoked": len(revoked)}


def list_users(hub: Hub, principal: Principal, limit: int | None, offset: int) -> dict[str, Any]:
    """Every user (system admin only)."""
    if not principal.is_system_admin:
        raise Forbidden("only the system admin can list users", code="admin_required")
    rows = user_store.list_users(hub.db, clamp_limit(limit), offset)
    return {"ok": True, "users": [public_user(r) for r in rows]}


def public_token(row: dict[str, Any]) -> dict[str, Any]:
    """A token as listed: never the secret or its hash."""
    expired = row["expires_at"] is not None and row["expires_at"] <= now_text()
    return {"token_id": row["token_id"], "name": row["name"], "network_id": row["network_id"],
            "alias": row["alias"], "last_alias": row["last_alias"], "created_at": row["created_at"],
            "last_used_at": row["last_used_at"], "expires_at": row["expires_at"], "expired": expired,
            "revoked_at": row["revoked_at"], "revoked": row["revoked_at"] is not None}


def create_token(hub: Hub, principal: Principal, body: TokenCreateRequest, ip: str | None) -> dict[str, Any]:
    """Create a network token (optionally bound to one alias); the secret is returned only here."""
    require_user_token(principal)
    require_role(hub, principal, body.network_id, "member")
    with hub.db.write():
        quotas.check_new_network_token(hub, principal.user_id)
        token_id, secret = issue_token(hub, "network", principal.user_id, body.network_id, body.name, body.alias,
                                       body.expires_in_seconds)
        hub.audit("token_create", actor=principal.label, user_id=principal.user_id, network_id=body.network_id,
                  detail={"token_id": token_id, "name": body.name, "alias": body.alias,
                          "expires_in_seconds": body.expires_in_seconds}, ip=ip)
    row = token_store.get_token(hub.db, token_id)
    assert row is not None
    return {"ok": True, "token_id": token_id, "token": secret, "name": body.name, "network_id": body.network_id,
            "alias": body.alias, "expires_at": row["expires_at"]}


def list_tokens(hub: Hub, principal: Principal, limit: int | None = None, offset: int = 0) -> dict[str, Any]:
    """The caller's network tokens (without secrets), a page of up to 500."""
    require_user_token(principal)
    rows = token_store.list_network_tokens_of_user(hub.db, principal.user_id, clamp_limit(limit, MAX_LIMIT), offset)
    return {"ok": True, "tokens": [public_token(r) for r in rows]}


def revoke_token(hub: Hub, principal: Principal, token_id: str, ip: str | None) -> dict[str, Any]:
    """Revoke a network token: its owner, or an owner/admin of its network. Takes effect at once."""
    require_user_token(principal)
    row = token_store.get_token(hub.db, token_id)
    if row is None or row["kind"] != "network":
        raise NotFound(f"token '{token_id}' not found", code="token_not_found")
    if row["user_id"] != principal.user_id:
        role = network_store.get_member_role(hub.db, row["network_id"], principal.user_id)
        if not (principal.is_system_admin or auth.role_at_least(role, "admin")):
            raise NotFound(f"token '{token_id}' not found", code="token_not_found")
    with hub.db.write():
        if not token_store.revoke_token(hub.db, token_id, now_text()):
            raise Conflict(f"token '{token_id}' is already revoked", code="already_revoked")
        # Its aliases are free at once (offline, unclaimed), so a replacement token can claim them now.
        freed = [r["alias"] for r in session_store.release_token_sessions(hub.db, token_id)]
        hub.audit("token_revoke", actor=principal.label, user_id=principal.user_id, network_id=row["network_id"],
                  detail={"token_id": token_id, "aliases_freed": freed}, ip=ip)
    end_token(hub, token_id)
    return {"ok": True, "token_id": token_id, "revoked": True, "aliases_freed": freed}


def list_login_tokens(hub: Hub, principal: Principal) -> dict[str, Any]:
    """The caller's live logins (user tokens), `current: true` on the one making this request."""
    require_user_token(principal)
    rows = token_store.list_login_tokens(hub.db, principal.user_id, now_text())
    tokens = [{"token_id": r["token_id"], "name": r["name"], "created_at": r["created_at"],
               "last_used_at": r["last_used_at"], "expires_at": r["expires_at"],
               "current": r["token_id"] == principal.token_id} for r in rows]
    return {"ok": True, "tokens": tokens}


def revoke_login_token(hub: Hub, principal: Principal, token_id: str, ip: str | None) -> dict[str, Any]:
    """Log one of the caller's logins out (its streams end at once)."""
    require_user_token(principal)
    row = token_store.get_token(hub.db, token_id)
    if row is None or row["kind"] != "user" or row["user_id"] != principal.user_id:
        raise NotFound(f"login token '{token_id}' not found; list yours with GET /api/auth/tokens",
                       code="token_not_found")
    with hub.db.write():
        if not token_store.revoke_token(hub.db, token_id, now_text()):
            raise Conflict(f"login token '{token_id}' is already revoked", code="already_revoked")
        hub.audit("login_revoke", actor=principal.label, user_id=principal.user_id, detail={"token_id": token_id},
                  ip=ip)
    end_token(hub, token_id)
    return {"ok": True, "token_id": token_id, "revoked": True, "current": token_id == principal.token_id}
