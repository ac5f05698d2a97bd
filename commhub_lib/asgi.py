"""What the routes served straight from ASGI, ahead of Quart, share: the request as read off the scope, and the
event-stream response.

POST /mcp (every tool call, mcp/http.py) and the three event streams (GET /events/<alias>, GET /events, GET
/mcp) skip Quart's request and response objects, request context, routing and hooks: on this stack those were
~0.18 ms of a ~1 ms tool call and ~0.2 ms of a ~1.2 ms stream open. What Quart's pipeline did for them is done
here in the same way: errors leave as {"error", "message"} through the one mapping (api/common.error_parts; a
crash is logged and answered 500), one access line per request, the write-lock watch's request start, and a
stream ends when its client disconnects.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs

import trio
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, HTTPScope

from .api.common import CRASH_MESSAGE, WriteLockWatch, bearer_from, error_bytes, error_parts
from .logs import log_access
from .ratelimit import RateLimiter
from .service.hub import Hub

log = logging.getLogger("commhub")
JSON = (b"content-type", b"application/json")
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_SSE_RAW = [(name.lower().encode(), value.encode()) for name, value in SSE_HEADERS.items()]
# A client reconnects a stream on a new connection, never reuses this one: closing it when the stream ends frees it
# at once. Kept alive, streams ended at shutdown held the exit for hypercorn's whole grace period (measured with 200
# streams: 2.2 s, 0.12 s with the header). HTTP/2 forbids the header.
_SSE_RAW_HTTP1 = [*_SSE_RAW, (b"connection", b"close")]


@dataclass(frozen=True, slots=True)
class RouteContext:
    """What the ASGI routes use of the running app: the hub, the per-token rate limiter, the write-lock watch."""

    hub: Hub
    token_limiter: RateLimiter
    lock_watch: WriteLockWatch


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


@dataclass(frozen=True, slots=True)
class JsonAnswer:
    """An answer that is not a stream (a stream route's 404 or 405 that is not an error of the error family)."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


# Checks a stream request (raising an error of the family, or returning a JsonAnswer) and returns the stream's body.
StreamOpener = Callable[[StreamRequest], AsyncIterator[bytes] | JsonAnswer]


async def serve_stream(scope: HTTPScope, receive: ASGIReceiveCallable, send: ASGISendCallable,
                       lock_watch: WriteLockWatch, opener: StreamOpener) -> None:
    """Answer one stream request: the opener checks it (raising an error of the family, or returning a JsonAnswer)
    and returns the stream's body, which is sent until it ends or the client goes."""
    started = time.perf_counter()
    req = StreamRequest.of(scope)
    lock_watch.start_request()
    try:
        opened = opener(req)
    except Exception as exc:  # noqa: BLE001 (the one place a stream route turns a failure into an answer)
        opened = _error_answer(exc, scope["method"], scope["path"])
    ms = (time.perf_counter() - started) * 1000
    if isinstance(opened, JsonAnswer):
        log_access(req.client_ip, scope["method"], scope["path"], opened.status, ms)
        await send_json(send, opened)
        return
    # Logged before the stream starts, as Quart logged streams (the line would otherwise wait for the close).
    log_access(req.client_ip, scope["method"], scope["path"], 200, ms)
    await send({"type": "http.response.start", "status": 200, "headers": _SSE_RAW_HTTP1 if req.http1 else _SSE_RAW})
    await _pump(opened, receive, send)


def _error_answer(exc: Exception, method: str, path: str) -> JsonAnswer:
    parts = error_parts(exc)
    if parts is None:
        log.exception("internal error on %s %s", method, path)
        return JsonAnswer(500, error_bytes("internal_error", CRASH_MESSAGE))
    status, code, message, headers = parts
    return JsonAnswer(status, error_bytes(code, message), headers)


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
