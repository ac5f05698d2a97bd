"""The one request reader: a request off the ASGI scope (headers, query, the body within max_body_bytes and
body_timeout_seconds) for the routes served straight from ASGI, the same reads of Quart's request for the REST
routes, and the one JSON body parser and validation message of REST and MCP alike."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast
from urllib.parse import parse_qs

import trio
from hypercorn.typing import ASGIReceiveCallable, ASGIReceiveEvent, HTTPScope
from pydantic import BaseModel, ValidationError
from quart import current_app, g, request
from werkzeug.http import parse_options_header
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData

from ..config import Settings
from ..errors import BadRequest, PayloadTooLarge, RequestTimeout, ValidationFailed
from ..models import body_models
from ..ratelimit import RateLimiter
from ..service.hub import Hub, Principal
from .auth import authenticate_off_loop, authenticate_token, bearer_from
from .errors import body_timeout_message, too_large_message

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


# ------------------------------------------------------------------------------------- off the ASGI scope
def read_headers(scope: HTTPScope) -> dict[str, str]:
    """The request's headers by lower-case name (ASGI gives them so), the first value of each."""
    headers: dict[str, str] = {}
    for name, value in scope["headers"]:
        key = name.decode("latin-1")
        if key not in headers:
            headers[key] = value.decode("latin-1")
    return headers


@dataclass(slots=True)
class AsgiRequest:
    """A request as read off the ASGI scope: headers (lower-case names, first values) and the query string."""

    headers: dict[str, str]
    query_string: bytes

    def arg(self, name: str) -> str | None:
        """A query parameter (the first value), or None."""
        if not self.query_string:
            return None
        values = parse_qs(self.query_string.decode("latin-1"), keep_blank_values=True).get(name)
        return values[0] if values else None

    def bearer(self) -> str | None:
        """The token from `Authorization: Bearer …`, else from `?token=…`."""
        authorization = self.headers.get("authorization", "")
        return bearer_from(authorization, None if authorization else self.arg("token"))


@dataclass(slots=True)
class StreamRequest(AsgiRequest):
    """A GET that opens an event stream."""

    client_ip: str = "unknown"
    http1: bool = True  # HTTP/1.x (not 2): the stream's connection closes when it ends

    @classmethod
    def of(cls, scope: HTTPScope) -> StreamRequest:
        """Read it off the scope."""
        client = scope.get("client")
        return cls(read_headers(scope), scope.get("query_string", b""), client[0] if client else "unknown",
                   scope.get("http_version", "1.1") in ("1.0", "1.1"))


@dataclass(slots=True)
class PostRequest(AsgiRequest):
    """A POST served from ASGI (POST /mcp) as read off the scope, and what its access line notes about it."""

    body: bytes = b""
    answer_headers: dict[str, str] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)  # (tool or method, outcome) for the access line
    alias: str | None = None
    client_ip: str = "unknown"
    scheme: str = "http"
    principal: Principal | None = None  # an upload's caller, checked before its body is read (http/asgi.py)


# A Host header that can be put into a URL (and a quoted header parameter) as it is.
_HOST = re.compile(r"^[A-Za-z0-9.\-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")


def public_url(settings: Settings, scheme: str, host: str | None) -> str:
    """The hub's URL as its clients reach it: COMMHUB_PUBLIC_URL, else the request's scheme and Host."""
    if settings.public_url:
        return settings.public_url.rstrip("/")
    if not host or not _HOST.match(host):
        host = f"{settings.host}:{settings.port}"
    return f"{'https' if scheme == 'https' else 'http'}://{host}"


class ClientGone(Exception):
    """The client disconnected before its request body arrived: there is no one to answer."""


class BodyReader:
    """Reads a request body off ASGI `receive` within max_body_bytes (413) and body_timeout_seconds (408); a route
    with a body limit of its own (http/routes.py Route.body_limit) names that setting in its 413."""

    def __init__(self, max_body: int, body_timeout: float, setting: str = "max_body_bytes"):
        self.max_body = max_body
        self.body_timeout = body_timeout
        self.setting = setting

    async def read(self, headers: dict[str, str], receive: ASGIReceiveCallable) -> bytes:
        """The whole body, within max_body_bytes and body_timeout_seconds."""
        length = headers.get("content-length", "")
        expected = int(length) if length.isdigit() else -1
        if expected > self.max_body:
            raise self._too_large()
        chunks: list[bytes] = []
        size = 0
        # Hypercorn's trio worker hands the app the `receive` of a trio memory channel and puts the body there
        # as it arrives: for a small request the whole body is usually queued before the app first runs, and
        # only the empty last message (more_body false) may still be on its way. So what is queued is taken
        # without waiting, and once Content-Length bytes are in, the body is complete (h11 allows no more):
        # no cancel scope for the timeout, no trip through the scheduler per message (~35 µs of a send_message
        # in-process). Whatever has not arrived yet is awaited below, within the body timeout, as before.
        queue = getattr(receive, "__self__", None)
        if isinstance(queue, trio.MemoryReceiveChannel):
            while True:
                try:
                    message = queue.receive_nowait()
                except trio.WouldBlock:
                    break
                chunk = self._take(message, size)
                size += len(chunk)
                chunks.append(chunk)
                if not message.get("more_body", False) or size == expected:
                    return chunk if len(chunks) == 1 else b"".join(chunks)
        with trio.move_on_after(self.body_timeout):
            while True:
                message = await receive()
                chunk = self._take(message, size)
                size += len(chunk)
                chunks.append(chunk)
                if not message.get("more_body", False) or size == expected:
                    return chunk if len(chunks) == 1 else b"".join(chunks)
        raise RequestTimeout(body_timeout_message(self.body_timeout))

    def _take(self, message: ASGIReceiveEvent, size: int) -> bytes:
        """The body chunk of an ASGI receive message; ClientGone on a disconnect, 413 past max_body_bytes."""
        if message["type"] != "http.request":  # http.disconnect
            raise ClientGone()
        chunk = message.get("body", b"")
        if size + len(chunk) > self.max_body:
            raise self._too_large()
        return chunk

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(too_large_message(self.max_body, self.setting))


# A form's parts read before its file must be among them: each part costs the parser ~35 µs of the event loop, so a
# 10 MiB body of empty fields held every request of the hub for seconds.
MAX_FORM_PARTS = 32
FORM_CHUNK = 64 * 1024  # fed to the parser a piece at a time: linear in the body (whole, it copies much more)


def form_file(content_type: str, body: bytes) -> tuple[str, str | None, bytes]:
    """The first file of a multipart/form-data body: (filename, its Content-Type, its bytes); 400 invalid_upload if
    the body is malformed, holds no file, or the file is not among its first MAX_FORM_PARTS parts. The body was
    read whole (within the route's limit) by the BodyReader."""
    _, options = parse_options_header(content_type)
    boundary = options.get("boundary")
    if not boundary:
        raise BadRequest("a multipart/form-data body needs a boundary in its Content-Type", code="invalid_upload")
    decoder = MultipartDecoder(boundary.encode("latin-1"))
    found: File | None = None
    chunks: list[bytes] = []
    fed, parts, ended = 0, 0, False
    try:
        while True:
            event = decoder.next_event()
            if isinstance(event, NeedData):
                if ended:
                    break
                if fed < len(body):
                    decoder.receive_data(body[fed:fed + FORM_CHUNK])
                    fed += FORM_CHUNK
                else:
                    decoder.receive_data(None)
                    ended = True
                continue
            if isinstance(event, Epilogue):
                break
            if isinstance(event, File | Field):
                parts += 1
                if found is None and parts > MAX_FORM_PARTS:
                    raise BadRequest(f"the form's file must be among its first {MAX_FORM_PARTS} fields",
                                     code="invalid_upload")
            if isinstance(event, File) and found is None:
                found = event  # the first file: its Data events follow
            elif isinstance(event, Data):
                if found is not None:
                    chunks.append(event.data)
                    if not event.more_data:
                        break  # that file is whole: the rest of the form is not needed
            elif found is not None:
                break  # another part began before the file's data ended (malformed)
    except ValueError as exc:
        raise BadRequest(f"malformed multipart/form-data body: {exc}", code="invalid_upload") from None
    if found is None:
        raise BadRequest("the form holds no file: send it as a file field (curl -F file=@path)", code="invalid_upload")
    return found.filename, found.headers.get("content-type"), b"".join(chunks)


# ------------------------------------------------------------------------------------- off Quart's request
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


def bearer() -> str | None:
    """The token from `Authorization: Bearer …` or `?token=…`."""
    authorization = request.headers.get("Authorization", "")
    return bearer_from(authorization, None if authorization else query_arg("token"))


def authenticate() -> Principal:
    """The caller of the current request, or 401 (authenticate_token)."""
    return authenticate_token(hub(), limiter("token"), bearer())


async def authenticated() -> Principal:
    """authenticate() as one step of db.run (one hop off the loop on PostgreSQL), for a handler that awaits more."""
    return await authenticate_off_loop(hub(), limiter("token"), bearer())


async def off_loop(fn: Callable[..., T], *args: Any) -> T:
    """Run one step of a REST handler's database work, `fn(*args)`, through the hub's db.run: on PostgreSQL one hop
    to a worker thread holding one pooled connection (the request's context goes with it: `request`, `hub()`,
    `authenticate()` work there), inline on SQLite. A context variable set in the step stays in it."""
    return await hub().db.run(fn, *args)


def url_rules() -> list[tuple[str, str, set[str], set[str], str]]:
    """Every URL rule of the running app (made from http/routes.py): (rule, endpoint, methods, arguments, the
    view's docstring)."""
    app = current_app
    return [(rule.rule, rule.endpoint, set(rule.methods or ()), set(rule.arguments),
             app.view_functions[rule.endpoint].__doc__ or "") for rule in app.url_map.iter_rules()]


def request_host() -> tuple[str, str]:
    """(scheme, Host) of the current request, as the client sent them."""
    return request.scheme, request.host


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



# ------------------------------------------------------------------------------------- JSON bodies
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
