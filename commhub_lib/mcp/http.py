"""POST /mcp served straight from ASGI, ahead of Quart.

Every agent's every tool call is a POST /mcp, so it skips Quart's request and response objects, request
context, routing and hooks (~0.18 ms of a ~1 ms call on this stack). What the Quart pipeline did for it is
done here, in the same way: the body is read within max_body_bytes (413, and the connection is closed) and
body_timeout_seconds (408); the write-lock watch runs around the call (api/common.WriteLockWatch); errors
leave as {"error", "message"} through the same mapping as every other route (api/common.error_parts, a
crash is logged and answered 500); one access line per request names the calls, the alias and outcomes.
Everything else on /mcp (GET streams, DELETE, other methods) stays with Quart (mcp/protocol.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

import trio
from hypercorn.typing import ASGIReceiveCallable, ASGIReceiveEvent, ASGISendCallable, HTTPScope

from ..api.common import CRASH_MESSAGE, body_timeout_message, error_bytes, error_parts, too_large_message
from ..asgi import JsonAnswer, RouteContext, read_headers, send_json, send_stream
from ..errors import DatabaseBusy, PayloadTooLarge, RequestTimeout
from ..logs import log_access
from .protocol import PostRequest, answer_post

log = logging.getLogger("commhub")
# Answers after which the connection must not be reused: the body may still be (partly) on the wire.
CLOSE_AFTER = frozenset({408, 413})


class ClientGone(Exception):
    """The client disconnected before its request body arrived: there is no one to answer."""


class McpPost:
    """The ASGI endpoint for POST /mcp (CommhubApp.asgi_app calls it for exactly that method and path)."""

    def __init__(self, ctx: RouteContext):
        self.ctx = ctx
        self.max_body = ctx.hub.settings.max_body_bytes
        self.body_timeout = ctx.hub.settings.body_timeout_seconds

    async def __call__(self, scope: HTTPScope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        """Answer one POST /mcp."""
        started = time.perf_counter()
        client = scope.get("client")
        req = PostRequest(read_headers(scope), scope.get("query_string", b""), client_ip=client[0] if client
                          else "unknown")
        try:
            status, body, extra = await self._answer(req, receive)
        except ClientGone:
            return
        # Logged before the answer goes out, as for every other route: a client that reads the log after its
        # answer finds the line there.
        log_access(client[0] if client else None, "POST", "/mcp", status, (time.perf_counter() - started) * 1000,
                   req.calls, req.alias)
        if isinstance(body, bytes):
            await send_json(send, JsonAnswer(status, body, extra))
        else:  # a 2026-07-28 subscriptions/listen: the answer is its event stream
            await send_stream(scope, receive, send, body)

    async def _answer(self, req: PostRequest,
                      receive: ASGIReceiveCallable) -> tuple[int, bytes | AsyncIterator[bytes], dict[str, str]]:
        """(status, body or event stream, extra headers) of the answer, errors included."""
        watch = self.ctx.lock_watch
        watch.start_request()
        try:
            req.body = await self._read_body(req, receive)
            if watch.contended():
                try:
                    await watch.before()
                except DatabaseBusy:
                    pass  # it may be a pure read (get_inbox): run it; a write then fails fast as a tool error
            answer = await watch.run(lambda: answer_post(self.ctx, req))
            if isinstance(answer, tuple):
                return answer[0], answer[1], req.answer_headers
            return 200, answer, {}
        except ClientGone:
            raise
        except Exception as exc:  # noqa: BLE001 (the one place POST /mcp turns a failure into an answer)
            parts = error_parts(exc)
            if parts is None:
                log.exception("internal error on POST /mcp")
                return 500, error_bytes("internal_error", CRASH_MESSAGE), {}
            status, code, message, headers = parts
            if status in CLOSE_AFTER:
                headers = {**headers, "Connection": "close"}
            return status, error_bytes(code, message), headers

    async def _read_body(self, req: PostRequest, receive: ASGIReceiveCallable) -> bytes:
        """The whole body, within max_body_bytes and body_timeout_seconds."""
        length = req.headers.get("content-length", "")
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
        return PayloadTooLarge(too_large_message(self.max_body))
