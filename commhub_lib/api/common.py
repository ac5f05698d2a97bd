"""Request helpers shared by the REST, SSE and MCP routes: auth, body parsing, query parameters."""

from __future__ import annotations

import hmac
import json
import re
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from quart import current_app, g, request

from ..errors import BadRequest, Unauthorized, ValidationFailed
from ..models import body_models
from ..ratelimit import RateLimiter
from ..service import accounts
from ..service.hub import Hub, Principal

M = TypeVar("M", bound=BaseModel)


def hub() -> Hub:
    """The Hub of the running app."""
    return current_app.config["COMMHUB_HUB"]


def limiter(name: str) -> RateLimiter:
    """One of the app's rate limiters: register, login, token."""
    return current_app.config["COMMHUB_LIMITERS"][name]


def client_ip() -> str:
    """The peer address (no proxy headers are trusted)."""
    return request.remote_addr or "unknown"


def bearer() -> str | None:
    """The token from `Authorization: Bearer …` or `?token=…`."""
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthorized("Authorization header must be 'Bearer <token>'", code="invalid_token")
        return value.strip()
    return request.args.get("token") or None


def authenticate() -> Principal:
    """The caller, or 401; each token is also held to the per-token rate limit."""
    secret = bearer()
    if not secret:
        raise Unauthorized("authentication required: send 'Authorization: Bearer <token>' or ?token=",
                           code="unauthorized")
    principal = accounts.authenticate(hub(), secret)
    limiter("token").check(principal.token_id)
    return principal


def require_auth_token() -> None:
    """When COMMHUB_AUTH_TOKEN is set, register and login need it as the bearer token."""
    expected = hub().settings.auth_token
    if not expected:
        return
    header = request.headers.get("Authorization", "")
    given = header[7:].strip() if header[:7].lower() == "bearer " else ""
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise Unauthorized("this server requires its auth token: 'Authorization: Bearer $COMMHUB_AUTH_TOKEN'",
                           code="auth_token_required")


async def read_body() -> bytes:
    """The raw request body, read once; marks it read so the after-request drain can skip it (awaiting a
    finished body again still costs a trip through the scheduler: ~2 % of an MCP call)."""
    raw = await request.get_data(cache=False)
    g.body_read = True
    return raw


async def json_body() -> dict[str, Any]:
    """The request body as a JSON object (empty body = {}); 400 if it is not one, 413 if too big."""
    raw = await read_body()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"malformed JSON body: {exc}", code="invalid_json") from exc
    if not isinstance(data, dict):
        raise BadRequest("the JSON body must be an object", code="invalid_json")
    return data


_BRANCH = re.compile(r"^[A-Z]|[^a-z0-9_]")  # loc parts that are union branches/validator tags, not field names
_REWRITES = (("Value error, ", ""), ("Input should be", "must be"), ("String should have", "must have"),
             ("List should have", "must have"), ("Input should have", "must have"), ("should be", "must be"))


def _field(loc: tuple[Any, ...]) -> str:
    """The field path a model filled in: drop union branch names (NodeInfo, constrained-str, function-after[...])."""
    parts = [str(p) for p in loc if isinstance(p, int) or not _BRANCH.search(str(p))]
    return ".".join(parts) or "body"


def validation_message(exc: ValidationError) -> str:
    """Turn pydantic errors into one line that names each bad field and says what it accepts, in plain words
    (never validator internals: branch names, error URLs)."""
    model = body_models().get(exc.title)
    fields = model.model_fields if model else {}
    seen: dict[str, str] = {}
    for err in exc.errors(include_url=False):
        field = _field(err["loc"])
        if field in seen:
            continue  # a union gives one error per branch: the first says enough
        top = field.split(".")[0]
        info = fields.get(top)
        if err["type"] == "extra_forbidden":
            allowed = ", ".join(fields) if model and "." not in field else ""
            msg = "unknown field" + (f"; allowed fields: {allowed}" if allowed else "")
        elif err["type"] == "missing":
            msg = "required" + (f": {info.description}" if info and info.description else "")
        else:
            msg = err["msg"]
            for old, new in _REWRITES:
                msg = msg.replace(old, new)
            if len(err["loc"]) > len(field.split(".")) and info and info.description:
                msg = f"invalid: {info.description}"  # a union branch failed: say what the field takes
        seen[field] = f"{field}: {msg}"
    return "; ".join(list(seen.values())[:5])


def validate(model: type[M], data: dict[str, Any]) -> M:
    """Validate a dict against a model; 400 naming the field on failure."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ValidationFailed(validation_message(exc)) from exc


async def parse(model: type[M]) -> M:
    """Read and validate the JSON body."""
    return validate(model, await json_body())


def query_int(name: str, default: int | None = None, minimum: int = 0) -> int | None:
    """An integer query parameter; 400 naming it if it is not one."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ValidationFailed(f"{name}: must be an integer") from exc
    if value < minimum:
        raise ValidationFailed(f"{name}: must be at least {minimum}")
    return value


def query_choice(name: str, choices: tuple[str, ...]) -> str | None:
    """A query parameter limited to some values; 400 naming it otherwise."""
    raw = request.args.get(name) or None
    if raw is not None and raw not in choices:
        raise ValidationFailed(f"{name}: must be one of {', '.join(choices)}")
    return raw
