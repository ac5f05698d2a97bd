"""What only the REST routes read off a request: the registration guard and checked query parameters."""

from __future__ import annotations

import hmac
import re

from ..errors import Unauthorized, ValidationFailed
from ..http.request import header, hub, query_arg


def require_auth_token() -> None:
    """When COMMHUB_AUTH_TOKEN is set, register and login need it as the bearer token."""
    expected = hub().settings.auth_token
    if not expected:
        return
    value = header("Authorization") or ""
    given = value[7:].strip() if value[:7].lower() == "bearer " else ""
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise Unauthorized("this server requires its auth token: 'Authorization: Bearer $COMMHUB_AUTH_TOKEN'",
                           code="auth_token_required")


# Query integers (limit, offset) stay far below SQLite's 64-bit range, so no value can overflow a query.
MAX_QUERY_INT = 2**31 - 1
_QUERY_INT = re.compile(r"[0-9]{1,10}")


def query_int(name: str, default: int | None = None, minimum: int = 0, maximum: int = MAX_QUERY_INT) -> int | None:
    """A non-negative integer query parameter (plain digits); 400 naming it if it is not one or out of range."""
    raw = query_arg(name)
    if raw is None or raw == "":
        return default
    if not _QUERY_INT.fullmatch(raw):
        if re.fullmatch(r"-?[0-9]+", raw):
            raise ValidationFailed(f"{name}: must be between {minimum} and {maximum}")
        raise ValidationFailed(f"{name}: must be an integer (digits only)")
    value = int(raw)
    if not minimum <= value <= maximum:
        raise ValidationFailed(f"{name}: must be between {minimum} and {maximum}")
    return value


def query_choice(name: str, choices: tuple[str, ...]) -> str | None:
    """A query parameter limited to some values; 400 naming it otherwise."""
    raw = query_arg(name) or None
    if raw is not None and raw not in choices:
        raise ValidationFailed(f"{name}: must be one of {', '.join(choices)}")
    return raw
