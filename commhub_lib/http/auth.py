"""The token check every route makes: the bearer token off a request, and the caller behind it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import CommhubError, Unauthorized
from ..ratelimit import RateLimiter
from ..service import accounts, networks
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


async def authenticate_off_loop(h: Hub, token_limiter: RateLimiter, secret: str | None) -> Principal:
    """authenticate_token with its database work as one step of db.run (one hop off the loop on PostgreSQL)."""
    if not secret:
        raise Unauthorized("authentication required: send 'Authorization: Bearer <token>' or ?token=",
                           code="unauthorized")
    principal = await h.db.run(accounts.authenticate, h, secret)
    token_limiter.check(principal.token_id)
    CALLER_TOKEN.set(principal.token_id)  # on the loop: a worker thread's context is a copy
    return principal


def _principal_and_network(h: Hub, secret: str, network_arg: str | None,
                           also: Callable[[], Any] | None) -> tuple[Principal, str | CommhubError, Any]:
    principal = accounts.authenticate(h, secret)
    try:
        network: str | CommhubError = networks.single_network(h, principal, network_arg)
    except CommhubError as exc:  # raised by the caller where it checks the network, after its other checks
        network = exc
    return principal, network, also() if also is not None else None


async def authenticate_in_network(h: Hub, token_limiter: RateLimiter, secret: str | None, network_arg: str | None,
                                  also: Callable[[], Any] | None = None) -> tuple[Principal, str | CommhubError, Any]:
    """authenticate_token and the network the request acts in (networks.single_network: its id, or the error to
    raise where the caller checks it), and `also()` once the token is known (the caller's own read, or None),
    read in one step of db.run: one hop off the event loop on PostgreSQL."""
    if not secret:
        raise Unauthorized("authentication required: send 'Authorization: Bearer <token>' or ?token=",
                           code="unauthorized")
    principal, network, extra = await h.db.run(_principal_and_network, h, secret, network_arg, also)
    token_limiter.check(principal.token_id)
    CALLER_TOKEN.set(principal.token_id)  # on the loop: a worker thread's context is a copy
    return principal, network, extra
