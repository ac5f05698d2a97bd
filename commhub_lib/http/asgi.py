"""The routes served straight from ASGI, ahead of Quart (the kinds "stream", "mcp" and "upload" of http/routes.py), and
the checks every request passes first (the guard).

POST /mcp (every tool call) and the event streams skip Quart's request and response objects, request context,
routing and hooks: on this stack those were ~0.18 ms of a ~1 ms tool call and ~0.2 ms of a ~1.2 ms stream open.
They go through the same pipeline pieces as every route: the request reader (http/request.py), the one
exception-to-answer function and crash log (http/errors.py), one access line (http/access.py) and the write-lock
watch (http/writelock.py); a stream ends when its client disconnects.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import trio
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, ASGISendEvent, HTTPScope

from ..config import Settings
from ..errors import DatabaseBusy
from ..metrics import Metrics
from ..ratelimit import RateLimiter
from ..service.hub import Hub
from .access import access_line
from .answers import JsonAnswer, error_bytes
from .auth import authenticate_token
from .errors import answer_for
from .request import BodyReader, ClientGone, PostRequest, StreamRequest, read_headers
from .writelock import WriteLockWatch

log = logging.getLogger("commhub")
JSON = (b"content-type", b"application/json")
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_SSE_RAW = [(name.lower().encode(), value.encode()) for name, value in SSE_HEADERS.items()]
# A client reconnects a stream on a new connection, never reuses this one: closing it when the stream ends frees it
# at once. Kept alive, streams ended at shutdown held the exit for hypercorn's whole grace period (measured with 200
# streams: 2.2 s, 0.12 s with the header). HTTP/2 forbids the header.
_SSE_RAW_HTTP1 = [*_SSE_RAW, (b"connection", b"close")]
# Answers after which the connection must not be reused: the body may still be (partly) on the wire.
CLOSE_AFTER = frozenset({408, 413})


@dataclass(frozen=True, slots=True)
class RouteContext:
    """What the ASGI routes use of the running app: the hub, the per-token rate limiter, the write-lock watch."""

    hub: Hub
    token_limiter: RateLimiter
    lock_watch: WriteLockWatch


# Checks a stream request (raising an error of the family, or returning a JsonAnswer) and returns the stream's body.
StreamOpener = Callable[[StreamRequest], AsyncIterator[bytes] | JsonAnswer]
# Database.run: runs an opener as one step of database work (in a worker thread on PostgreSQL).
OpenerRun = Callable[[StreamOpener, StreamRequest], Awaitable[AsyncIterator[bytes] | JsonAnswer]]


async def serve_stream(scope: HTTPScope, receive: ASGIReceiveCallable, send: ASGISendCallable,
                       lock_watch: WriteLockWatch, opener: StreamOpener, endpoint: str = "unmatched",
                       metrics: Metrics | None = None, run: OpenerRun | None = None) -> None:
    """Answer one stream request: the opener checks it (raising an error of the family, or returning a JsonAnswer)
    and returns the stream's body, which is sent until it ends or the client goes. `endpoint` names the route in
    the access line's metrics. `run` (the hub's db.run): the opener is one step of it, off the loop on PostgreSQL."""
    started = time.perf_counter()
    req = StreamRequest.of(scope)
    lock_watch.start_request()
    try:
        opened = opener(req) if run is None else await run(opener, req)
    except Exception as exc:  # noqa: BLE001 (a stream route's failure becomes its answer)
        opened = answer_for(exc, scope["method"], scope["path"])
    ms = (time.perf_counter() - started) * 1000
    if isinstance(opened, JsonAnswer):
        access_line(req.client_ip, scope["method"], scope["path"], opened.status, ms, route=endpoint,
                    metrics=metrics)
        await send_json(send, opened)
        return
    # Logged before the stream starts, as Quart logged streams (the line would otherwise wait for the close).
    access_line(req.client_ip, scope["method"], scope["path"], 200, ms, route=endpoint, metrics=metrics)
    await send({"type": "http.response.start", "status": 200, "headers": _SSE_RAW_HTTP1 if req.http1 else _SSE_RAW})
    await _pump(opened, receive, send)


async def send_json(send: ASGISendCallable, answer: JsonAnswer) -> None:
    """Send a whole JSON answer (or an empty one)."""
    body = answer.body
    out = [JSON, (b"content-length", str(len(body)).encode())] if body else [(b"content-length", b"0")]
    out.extend((key.lower().encode("latin-1"), value.encode("latin-1")) for key, value in answer.headers.items())
    await send({"type": "http.response.start", "status": answer.status, "headers": out})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _pump(body: AsyncIterator[bytes], receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
    """Send the stream's chunks until it ends, or until the client disconnects (then the stream is cancelled
    where it waits, and its own clean-up runs)."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_watch_disconnect, receive, nursery.cancel_scope)
        try:
            async for chunk in body:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except Exception:  # a failed replay read, say: the client sees the stream end and reconnects
            log.exception("event stream failed")
        finally:
            # A stream cancelled while this task was in send() is suspended at a yield: close it, so its
            # finally blocks (unsubscribe, presence, the close line) run now.
            await body.aclose()  # type: ignore[attr-defined]
        nursery.cancel_scope.cancel()


async def _watch_disconnect(receive: ASGIReceiveCallable, stream_scope: trio.CancelScope) -> None:
    """Cancel the stream when hypercorn reports that its client went away."""
    while (await receive())["type"] != "http.disconnect":
        pass
    stream_scope.cancel()


async def send_stream(scope: HTTPScope, receive: ASGIReceiveCallable, send: ASGISendCallable,
                      body: AsyncIterator[bytes]) -> None:
    """Answer with an event stream that a route other than the GET streams opened (a 2026-07-28 MCP
    `subscriptions/listen` POST): sent until it ends or the client goes, as serve_stream sends its streams."""
    http1 = scope.get("http_version", "1.1") in ("1.0", "1.1")
    await send({"type": "http.response.start", "status": 200, "headers": _SSE_RAW_HTTP1 if http1 else _SSE_RAW})
    await _pump(body, receive, send)

# A POST served from ASGI (POST /mcp, POST /a2a/<network_id>/<alias>): (status, JSON body) or, for a 2026-07-28
# subscriptions/listen or an A2A streaming method, a stream. The path's parameters come as keyword arguments.
PostHandler = Callable[..., Awaitable[tuple[int, bytes] | AsyncIterator[bytes]]]


class PostEndpoint:
    """A POST served straight from ASGI (kinds "mcp" and "upload"): the body read within its bounds, the contended
    write lock waited for, the handler run, its failure answered by http/errors.answer_for, one access line that
    names the calls, the alias and their outcomes.

    For POST /mcp the write-lock retry (WriteLockWatch.run) is not applied around the whole POST: the unit of work
    that may write is one tool call, and mcp/protocol.py runs each under the watch (a batch holds several); nothing
    else of the POST writes anything that could meet the lock. An upload is retried whole (`retry_writes`)."""

    def __init__(self, ctx: RouteContext, handler: PostHandler, endpoint: str = "mcp.post_mcp",
                 body_limit: str = "max_body_bytes", body_slack: int = 0, retry_writes: bool = False):
        self.ctx = ctx
        self.handler = handler
        self.endpoint = endpoint
        # The route's body cap: a setting (max_body_bytes unless the route names its own) plus any framing slack.
        settings = ctx.hub.settings
        self.reader = BodyReader(getattr(settings, body_limit) + body_slack, settings.body_timeout_seconds,
                                 body_limit)
        # An upload is one unit of work that may write (unlike a POST /mcp batch): run it again after waiting for
        # another process's write lock, as http/app.py does for every REST write.
        self.retry_writes = retry_writes

    async def __call__(self, scope: HTTPScope, receive: ASGIReceiveCallable, send: ASGISendCallable,
                       params: dict[str, str] | None = None) -> None:
        """Answer one POST (`params`: the path's parameters, passed to the handler)."""
        started = time.perf_counter()
        client = scope.get("client")
        req = PostRequest(read_headers(scope), scope.get("query_string", b""), client_ip=client[0] if client
                          else "unknown", scheme=scope.get("scheme", "http"))
        try:
            status, body, extra = await self._answer(scope, req, receive, params or {})
        except ClientGone:
            return
        # Logged before the answer goes out, as for every other route: a client that reads the log after its
        # answer finds the line there.
        access_line(client[0] if client else None, scope["method"], scope["path"], status,
                    (time.perf_counter() - started) * 1000, req.calls, req.alias, route=self.endpoint,
                    metrics=self.ctx.hub.metrics)
        if isinstance(body, bytes):
            await send_json(send, JsonAnswer(status, body, extra))
        else:  # a 2026-07-28 subscriptions/listen: the answer is its event stream
            await send_stream(scope, receive, send, body)

    async def _answer(self, scope: HTTPScope, req: PostRequest, receive: ASGIReceiveCallable,
                      params: dict[str, str]) -> tuple[int, bytes | AsyncIterator[bytes], dict[str, str]]:
        """(status, body or event stream, extra headers) of the answer, errors included."""
        watch = self.ctx.lock_watch
        watch.start_request()
        body_read = False
        try:
            if self.retry_writes:
                # An upload may be megabytes: its caller is checked before its body is read, so a request without
                # a valid token never makes the server take it in.
                req.principal = authenticate_token(self.ctx.hub, self.ctx.token_limiter, req.bearer())
            req.body = await self.reader.read(req.headers, receive)
            body_read = True
            if watch.contended():
                try:
                    await watch.before()
                except DatabaseBusy:
                    pass  # it may be a pure read (get_inbox): run it; a write then fails fast as a tool error
            if self.retry_writes:
                answer = await watch.run(lambda: self.handler(self.ctx, req, **params))
            else:
                answer = await self.handler(self.ctx, req, **params)
            if isinstance(answer, tuple):
                return answer[0], answer[1], req.answer_headers
            return 200, answer, {}
        except ClientGone:
            raise
        except Exception as exc:  # noqa: BLE001 (a POST's failure becomes its answer)
            failed = answer_for(exc, scope["method"], scope["path"])
            headers = failed.headers
            # The body may still be on the wire (HTTP/2 has no connection per request to close, and forbids it).
            if failed.status in CLOSE_AFTER or (not body_read and scope.get("http_version", "1.1") in ("1.0", "1.1")):
                headers = {**headers, "Connection": "close"}
            return failed.status, failed.body, headers


# --- The request guard: what every route checks before anything else reads the request (app.CommhubApp.__call__).

# Names and addresses only this machine answers: no DNS name an attacker controls can be one of them.
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARD_BINDS = frozenset({"", "0.0.0.0", "::"})
_HOSTNAME = re.compile(r"^(?:[a-z0-9_-]+(?:\.[a-z0-9_-]+)*\.?|\[[0-9a-f:.]+\])(?::[0-9]{1,5})?$")
_GUARD_CACHE_MAX = 1024  # Host/Origin values remembered (a flood of distinct ones clears the memo, never grows it)


def _host_part(authority: str) -> str | None:
    """The lower-case host of a Host value or an origin's authority, without port or brackets; None if malformed."""
    authority = authority.strip().lower()
    if not _HOSTNAME.match(authority):
        return None
    if authority.startswith("["):
        return authority[1:authority.index("]")]
    return authority.rsplit(":", 1)[0].rstrip(".") if ":" in authority else authority.rstrip(".")


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


# Read one way by us and the other by a proxy in front, such a request could hide a second one (request smuggling).
# HTTP/1.1 refuses it before the request is parsed (server.py); this answer is the same.
AMBIGUOUS_LENGTH_BODY = error_bytes("ambiguous_length", "a request must not carry both Content-Length and "
                                    "Transfer-Encoding; send one of them")


class RequestGuard:
    """Checks made on every request before any route reads it: framing that could be read two ways (both
    Content-Length and Transfer-Encoding: 400, the connection closed), and DNS rebinding (a `Host` this hub does
    not answer to: 421; an `Origin` from another site: 403).

    DNS rebinding: a web page on an attacker's name, re-pointed at 127.0.0.1 (or a LAN address), would have the
    visitor's browser talk to the hub with `Host: <attacker's name>`. So only these names are accepted: loopback
    names and addresses, the bind address (on a wildcard bind, any IP address and this machine's name), the host
    of public_url, and allowed_hosts (`*` accepts any; `.example.com` a domain and its subdomains). An IP address
    is never an attacker's name, a DNS name only is when nobody said it is the hub's."""

    def __init__(self, settings: Settings):
        entries = [e.strip().lower() for e in settings.allowed_hosts.split(",") if e.strip()]
        self.any_host = "*" in entries
        self.names = set(LOOPBACK_NAMES) | {e for e in entries if not e.startswith(".")}
        self.suffixes = tuple(e for e in entries if e.startswith("."))
        bind = settings.host.strip("[]").lower()
        self.wildcard = bind in WILDCARD_BINDS
        if self.wildcard:
            self.names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
        else:
            ip = _ip(bind)
            self.names.add(str(ip) if ip else bind)
        if settings.public_url:
            public = urlsplit(settings.public_url).hostname
            if public:
                self.names.add(public.lower())
        self.origins = {o.strip().rstrip("/").lower() for o in settings.allowed_origins.split(",") if o.strip()}
        self._hosts: dict[str, bool] = {}
        self._origins: dict[tuple[str, str], bool] = {}

    def host_allowed(self, host: str) -> bool:
        """Whether a Host header value names this hub."""
        known = self._hosts.get(host)
        if known is None:
            if len(self._hosts) >= _GUARD_CACHE_MAX:
                self._hosts.clear()
            known = self._hosts[host] = self.any_host or self._name_allowed(_host_part(host))
        return known

    def _name_allowed(self, name: str | None) -> bool:
        if name is None:
            return False
        if name in self.names or (self.suffixes and (name.endswith(self.suffixes) or f".{name}" in self.suffixes)):
            return True
        ip = _ip(name)
        return ip is not None and (ip.is_loopback or self.wildcard or str(ip) in self.names)

    def origin_allowed(self, origin: str, host: str) -> bool:
        """Whether a browser Origin may call: the hub's own origin (same host as the checked Host), a loopback one,
        one named by public_url or allowed_hosts, or one listed in allowed_origins."""
        known = self._origins.get((origin, host))
        if known is None:
            if len(self._origins) >= _GUARD_CACHE_MAX:
                self._origins.clear()
            known = self._origins[(origin, host)] = self._origin_allowed(origin, host)
        return known

    def _origin_allowed(self, origin: str, host: str) -> bool:
        value = origin.strip().rstrip("/").lower()
        if value in self.origins:
            return True
        scheme, sep, authority = value.partition("://")
        if not sep or scheme not in ("http", "https"):
            return False  # "null" (a sandboxed page, a file), or no origin at all
        name = _host_part(authority)
        if name is None:
            return False
        if name == _host_part(host):
            return True  # same site as the request: the dashboard calling its own hub
        ip = _ip(name)
        return name in self.names or (ip is not None and ip.is_loopback) or bool(
            self.suffixes and name.endswith(self.suffixes))

    def refusal(self, scope: HTTPScope) -> JsonAnswer | None:
        """The answer to a request refused before any route reads it, or None to let it through."""
        host = origin = None
        length = chunked = False
        for name, value in scope["headers"]:
            if name == b"host":
                host = value.decode("latin-1")
            elif name == b"origin":
                origin = value.decode("latin-1")
            elif name == b"content-length":
                length = True
            elif name == b"transfer-encoding":
                chunked = True
        if length and chunked:
            return JsonAnswer(400, AMBIGUOUS_LENGTH_BODY, {"Connection": "close"})
        if host is not None and not self.host_allowed(host):
            shown = host[:100]
            return JsonAnswer(421, error_bytes(
                "host_not_allowed", f"Host '{shown}' is not a name this hub answers to (a guard against DNS "
                "rebinding): add it to COMMHUB_ALLOWED_HOSTS (--allowed-hosts), or set COMMHUB_PUBLIC_URL to the "
                "URL clients use"), {"Connection": "close"})
        if origin is not None and not self.origin_allowed(origin, host or ""):
            shown = origin[:100]
            return JsonAnswer(403, error_bytes(
                "origin_not_allowed", f"Origin '{shown}' is not allowed (a guard against DNS rebinding and other "
                "sites' pages): add it to COMMHUB_ALLOWED_ORIGINS (--allowed-origins)"), {"Connection": "close"})
        return None


# Refusals after which the server closes the connection at once: a client refused for its rate should not hold the
# connection (and the client that floods gets no keep-alive to flood on).
_CLOSE_STATUSES = frozenset({429})
_CLOSE = (b"connection", b"close")


def closing_refusals(scope: HTTPScope, send: ASGISendCallable) -> ASGISendCallable:
    """`send` for one HTTP/1.x request, adding `Connection: close` to a 429 (hypercorn then closes the connection
    once the answer is sent). HTTP/2 forbids the header (and has no connection per request to close)."""
    if scope.get("http_version", "1.1") not in ("1.0", "1.1"):
        return send

    async def send_closing(message: ASGISendEvent) -> None:
        if message["type"] == "http.response.start" and message["status"] in _CLOSE_STATUSES:
            headers = list(message.get("headers", ()))
            if not any(name.lower() == b"connection" for name, _ in headers):
                headers.append(_CLOSE)
                message = {**message, "headers": headers}  # type: ignore[typeddict-item]
        await send(message)

    return send_closing
