"""The token check every route makes: the bearer token off a request, and the caller behind it."""

from __future__ import annotations

from ..errors import Unauthorized
from ..ratelimit import RateLimiter
from ..service import accounts
from ..service.hub import CALLER_TOKEN, Hub, Principal


def bearer_from(authorization: str, token_arg: str | None) -> str | None:
    """The token from an `Authorization: Bearer …` header value, else from the `?token=` parameter."""
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthorized("Authorization header must be 'Bearer <token>'", code="invalid_token")
        return value.strip()
    return token_arg or None


def authenticate_token(h: Hub, token_limiter: RateLimiter, secret: str | None) -> Principal:
    """The caller behind a bearer token, or 401; each token is also held to the per-token rate limit."""
    if not secret:
        raise Unauthorized("authentication required: send 'Authorization: Bearer <token>' or ?token=",
                           code="unauthorized")
    principal = accounts.authenticate(h, secret)
    token_limiter.check(principal.token_id)
    CALLER_TOKEN.set(principal.token_id)  # the key of the send rate by bytes (service/quotas.py)
    return principal
