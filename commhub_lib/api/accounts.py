"""Routes: /api/auth/*, /api/users, /api/tokens, /api/audit-log."""

from __future__ import annotations

from quart import Blueprint, request

from ..models import LoginRequest, PasswordChangeRequest, RegisterRequest, TokenCreateRequest, UpdateMeRequest
from ..service import accounts, networks
from .common import authenticate, client_ip, hub, limiter, parse, query_int, require_auth_token

bp = Blueprint("accounts", __name__)


# Answers that carry a secret (token, invite code) must never be kept by a browser or proxy cache.
NO_STORE = {"Cache-Control": "no-store"}


@bp.post("/api/auth/register")
async def register() -> tuple[dict, int, dict]:
    """Create a user (the first one is admin) with a default network and a network token."""
    limiter("register").check(client_ip())
    require_auth_token()
    body = await parse(RegisterRequest)
    return await accounts.register(hub(), body, client_ip()), 200, NO_STORE


@bp.post("/api/auth/login")
async def login() -> tuple[dict, int, dict]:
    """Log in with username and password (never COMMHUB_AUTH_TOKEN); returns a user token.

    The registration guard does not apply: a person with an account logs in with their password alone (the
    dashboard's login page sends nothing else); an Authorization header sent along, as the reference's example
    does, is ignored."""
    limiter("login").check(client_ip())
    body = await parse(LoginRequest)
    return await accounts.login(hub(), body, client_ip()), 200, NO_STORE


@bp.get("/api/auth/tokens")
async def list_login_tokens() -> dict:
    """The caller's logins (user tokens); `current: true` marks the one in use."""
    return accounts.list_login_tokens(hub(), authenticate())


@bp.delete("/api/auth/tokens/<token_id>")
async def revoke_login_token(token_id: str) -> dict:
    """Log one login out; its open streams end at once."""
    return accounts.revoke_login_token(hub(), authenticate(), token_id, client_ip())


@bp.get("/api/auth/me")
async def get_me() -> dict:
    """The caller's user record."""
    return accounts.me(hub(), authenticate())


@bp.put("/api/auth/me")
async def put_me() -> dict:
    """Update display name / email."""
    principal = authenticate()
    return accounts.update_me(hub(), principal, await parse(UpdateMeRequest))


@bp.post("/api/auth/password")
async def change_password() -> dict:
    """Change the password (other login tokens are revoked); limited per IP and per user like login."""
    principal = authenticate()
    limiter("password").check(client_ip())  # after auth: only an authenticated call can reach argon2
    limiter("password_user").check(principal.user_id)
    return await accounts.change_password(hub(), principal, await parse(PasswordChangeRequest), client_ip())


@bp.get("/api/users")
async def list_users() -> dict:
    """All users (system admin only)."""
    return accounts.list_users(hub(), authenticate(), query_int("limit"), query_int("offset", 0) or 0)


@bp.post("/api/tokens")
async def create_token() -> tuple[dict, int, dict]:
    """Create a network token; the secret is shown once."""
    principal = authenticate()
    return accounts.create_token(hub(), principal, await parse(TokenCreateRequest), client_ip()), 200, NO_STORE


@bp.get("/api/tokens")
async def list_tokens() -> dict:
    """The caller's network tokens, without secrets."""
    return accounts.list_tokens(hub(), authenticate(), query_int("limit", None, 1), query_int("offset", 0) or 0)


@bp.delete("/api/tokens/<token_id>")
async def revoke_token(token_id: str) -> dict:
    """Revoke a token at once."""
    return accounts.revoke_token(hub(), authenticate(), token_id, client_ip())


@bp.get("/api/audit-log")
async def audit_log() -> dict:
    """Audit entries (owner/admin of a network; the system admin sees all)."""
    principal = authenticate()
    return networks.audit_log(hub(), principal, request.args.get("network_id") or None,
                              request.args.get("action") or None, query_int("limit"), query_int("offset", 0) or 0)
