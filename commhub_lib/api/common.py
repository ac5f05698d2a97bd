"""Request helpers shared by the REST, SSE and MCP routes: auth, body parsing, query parameters."""

from __future__ import annotations

import hmac
import json
import re
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any, TypeVar, cast

import apsw
import trio
from pydantic import BaseModel, ValidationError
from quart import current_app, g, request

from ..db import Database, storage_error
from ..errors import BadRequest, CommhubError, DatabaseBusy, Unauthorized, ValidationFailed
from ..models import body_models
from ..ratelimit import RateLimiter
from ..service import accounts
from ..service.hub import CALLER_TOKEN, Hub, Principal

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


def hub() -> Hub:
    """The Hub of the running app."""
    return current_app.config["COMMHUB_HUB"]


def limiter(name: str) -> RateLimiter:
    """One of the app's rate limiters: register, login, token."""
    return current_app.config["COMMHUB_LIMITERS"][name]


def client_ip() -> str:
    """The peer address (no proxy headers are trusted)."""
    return request.remote_addr or "unknown"


def header(name: str) -> str | None:
    """A request header, or None (werkzeug's Headers.get raises and catches a KeyError for a missing one)."""
    values = request.headers.getlist(name)
    return values[0] if values else None


def query_arg(name: str) -> str | None:
    """A query parameter, or None; without a query string nothing is parsed (werkzeug's `args.get` of a missing
    key raises and catches a BadRequestKeyError, an HTTPException: together ~1 % of an MCP call)."""
    if not request.query_string:
        return None
    values = request.args.getlist(name)
    return values[0] if values else None


def bearer_from(authorization: str, token_arg: str | None) -> str | None:
    """The token from an `Authorization: Bearer …` header value, else from the `?token=` parameter."""
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthorized("Authorization header must be 'Bearer <token>'", code="invalid_token")
        return value.strip()
    return token_arg or None


def bearer() -> str | None:
    """The token from `Authorization: Bearer …` or `?token=…`."""
    authorization = request.headers.get("Authorization", "")
    return bearer_from(authorization, None if authorization else query_arg("token"))


def authenticate_token(h: Hub, token_limiter: RateLimiter, secret: str | None) -> Principal:
    """The caller behind a bearer token, or 401; each token is also held to the per-token rate limit."""
    if not secret:
        raise Unauthorized("authentication required: send 'Authorization: Bearer <token>' or ?token=",
                           code="unauthorized")
    principal = accounts.authenticate(h, secret)
    token_limiter.check(principal.token_id)
    CALLER_TOKEN.set(principal.token_id)  # the key of the send rate by bytes (service/quotas.py)
    return principal


def authenticate() -> Principal:
    """The caller of the current request, or 401 (authenticate_token)."""
    return authenticate_token(hub(), limiter("token"), bearer())


def error_parts(exc: Exception) -> tuple[int, str, str, dict[str, str]] | None:
    """The wire form of an error: (status, code, message, headers) for a CommhubError or a storage failure
    that maps to one (db.storage_error); None for anything else, which is a crash (500, logged)."""
    if isinstance(exc, apsw.Error):
        mapped = storage_error(exc)
        if not isinstance(mapped, CommhubError):
            return None
        exc = mapped
    if isinstance(exc, CommhubError):
        return exc.status, exc.code, exc.message, exc.headers
    return None


# The texts of the errors both request paths give (Quart's handlers in app.py and POST /mcp in mcp/http.py).
CRASH_MESSAGE = "internal server error; the details are in the server log"


def too_large_message(max_body_bytes: int) -> str:
    """413: the body is over max_body_bytes."""
    return f"request body is larger than {max_body_bytes} bytes"


def body_timeout_message(body_timeout_seconds: float) -> str:
    """408: the body did not arrive within body_timeout_seconds."""
    return f"the request body did not arrive within {body_timeout_seconds:g} s; send it in one go"


def error_bytes(code: str, message: str) -> bytes:
    """The one body of every error: {"error": code, "message": text}."""
    return json_bytes({"error": code, "message": message})


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


MAX_JSON_DEPTH = 64
# An escaped UTF-16 surrogate (\ud800-\udfff) in JSON text: a pair is fine, a lone one is not Unicode.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def parse_json(raw: bytes) -> Any:
    """Decode a JSON request body; BadRequest (invalid_json) for anything that is not plain, sane JSON.

    The one JSON reader of REST and MCP. Besides syntax it refuses what json.loads accepts but the rest of
    the server cannot carry: nesting deeper than MAX_JSON_DEPTH (json.loads itself raises RecursionError
    near 1,000 levels), integers over Python's 4,300-digit limit (ValueError), and lone surrogates
    ("\\ud800"), which cannot be encoded as UTF-8 in a response or the database."""
    try:
        data = json.loads(raw)
    except RecursionError as exc:
        raise BadRequest(f"malformed JSON body: nested deeper than {MAX_JSON_DEPTH} levels",
                         code="invalid_json") from exc
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, and the int digit limit are all ValueErrors
        raise BadRequest(f"malformed JSON body: {exc}", code="invalid_json") from exc
    # Both checks walk the value only when the raw text could hold the problem (cheap byte scans first).
    if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH and _depth(data) > MAX_JSON_DEPTH:
        raise BadRequest(f"malformed JSON body: nested deeper than {MAX_JSON_DEPTH} levels", code="invalid_json")
    if _SURROGATE_ESCAPE.search(raw) and _has_lone_surrogate(data):
        raise BadRequest("malformed JSON body: a string holds a lone UTF-16 surrogate (such as \\ud800), "
                         "which is not valid Unicode", code="invalid_json")
    return data


def _depth(value: Any) -> int:
    """How deeply arrays and objects nest (iterative: the value may be nested ~1,000 deep)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, level)
            if level <= MAX_JSON_DEPTH:
                stack.extend((child, level + 1) for child in item)
    return deepest


def _has_lone_surrogate(value: Any) -> bool:
    """True if any string (keys included) cannot be encoded as UTF-8."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def json_bytes(payload: Any) -> bytes:
    """Encode a response as compact UTF-8 JSON; never fails on a string that is not valid Unicode."""
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate got in: \\u escapes keep the answer valid JSON
        return json.dumps(payload, separators=(",", ":")).encode("ascii")


async def read_body() -> bytes:
    """The raw request body, read once and kept on `g` (a handler run again after waiting for the write lock
    reads it again); marks it read so the after-request drain can skip it (awaiting a finished body again
    still costs a trip through the scheduler: ~2 % of an MCP call)."""
    raw: bytes | None = g.get("raw_body")
    if raw is None:
        raw = g.raw_body = cast(bytes, await request.get_data(cache=False))  # bytes: as_text is False
    return raw


def body_was_read() -> bool:
    """Whether the handler read the whole body (read_body)."""
    return g.get("raw_body") is not None


async def json_body() -> dict[str, Any]:
    """The request body as a JSON object (empty body = {}); 400 if it is not one, 413 if too big."""
    raw = await read_body()
    if not raw.strip():
        return {}
    data = parse_json(raw)
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


# Query integers (limit, offset) stay far below SQLite's 64-bit range, so no value can overflow a query.
MAX_QUERY_INT = 2**31 - 1
_QUERY_INT = re.compile(r"[0-9]{1,10}")


def query_int(name: str, default: int | None = None, minimum: int = 0, maximum: int = MAX_QUERY_INT) -> int | None:
    """A non-negative integer query parameter (plain digits); 400 naming it if it is not one or out of range."""
    raw = request.args.get(name)
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
    raw = request.args.get(name) or None
    if raw is not None and raw not in choices:
        raise ValidationFailed(f"{name}: must be one of {', '.join(choices)}")
    return raw


# ---------------------------------------------------------------------------------------------- the write lock
class _RequestWrites:
    """What WriteLockWatch knows of the current request: the commits it made, and its lock deadline."""

    __slots__ = ("commits", "deadline")

    def __init__(self, deadline: float):
        self.commits = 0
        self.deadline = deadline


# The current request's writes (set per request, in its task's context; None outside requests).
_REQUEST: ContextVar[_RequestWrites | None] = ContextVar("commhub_request_writes", default=None)
# After another process's lock was last met, requests that may write wait for it first for this long.
CONTENDED_SECONDS = 5.0
MAX_WRITE_ATTEMPTS = 8


class WriteLockWatch:
    """Writes that meet another process's write lock (a CLI command, a backup) wait for it asynchronously.

    Most of the time no other process holds the lock, so a request just writes: no probe before it (a
    BEGIN IMMEDIATE/ROLLBACK pair per POST cost 20-30 µs). A write that meets the lock fails fast (the
    connection's short busy timeout, db.LOOP_BUSY_TIMEOUT_MS); `run` then waits off the loop's back
    (`Database.wait_for_write_lock`) and runs the attempt again, as long as the attempt had committed nothing
    (re-running it cannot repeat a write) and the request's deadline (write_lock_wait_seconds) allows. For
    CONTENDED_SECONDS after the lock was met, every request that may write waits for it first (`before`), so
    a long lock does not make each request pay the short busy timeout on the event loop."""

    def __init__(self, db: Database, wait_seconds: float):
        self.db = db
        self.wait_seconds = wait_seconds
        self.contended_until = 0.0
        self._counting = False

    def start_request(self) -> None:
        """Count this request's commits from here on, and start its lock deadline."""
        if not self._counting:  # at the first request, not in create_app: an app may be built without a database
            self.db.con.set_commit_hook(_count_commit, id=self)
            self._counting = True
        _REQUEST.set(_RequestWrites(time.monotonic() + self.wait_seconds))

    def contended(self) -> bool:
        """Whether another process's write lock was met lately."""
        return time.monotonic() < self.contended_until

    async def before(self) -> None:
        """While the lock is contended, wait for it before running (503 database_busy at the deadline)."""
        if self.contended():
            await self._wait()

    async def run(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """`await attempt()`, run again after waiting for the lock when it failed on it before committing."""
        for tries in range(1, MAX_WRITE_ATTEMPTS + 1):
            state = _REQUEST.get()
            before = state.commits if state is not None else -1
            try:
                return await attempt()
            except DatabaseBusy:
                self.contended_until = time.monotonic() + CONTENDED_SECONDS
                if state is None or state.commits != before or tries == MAX_WRITE_ATTEMPTS:
                    raise
                await self._wait()
        raise AssertionError("unreachable")  # pragma: no cover

    async def _wait(self) -> None:
        state = _REQUEST.get()
        deadline = state.deadline if state is not None else time.monotonic() + self.wait_seconds
        try:
            await self.db.wait_for_write_lock(max(0.0, deadline - time.monotonic()))
        except DatabaseBusy:
            self.contended_until = time.monotonic() + CONTENDED_SECONDS
            raise
        await trio.lowlevel.checkpoint()


def _count_commit() -> bool:
    """APSW commit hook: count a commit made inside a request (False: let it go ahead)."""
    state = _REQUEST.get()
    if state is not None:
        state.commits += 1
    return False
