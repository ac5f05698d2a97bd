"""create_app(hub): the Quart-Trio application, its routes, and the one error handler."""

from __future__ import annotations

import logging
import time
from functools import partial

import apsw
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, HTTPScope, Scope
from quart import Response, g, request
from quart.ctx import RequestContext
from quart.globals import request_ctx
from quart.typing import ResponseReturnValue, ResponseTypes
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from . import __version__, sse
from .api import accounts as accounts_api
from .api import approvals as approvals_api
from .api import data as data_api
from .api import networks as networks_api
from .api import oauth as oauth_api
from .api import openapi as openapi_api
from .api.common import (
    CRASH_MESSAGE,
    WriteLockWatch,
    body_timeout_message,
    body_was_read,
    error_bytes,
    error_parts,
    too_large_message,
)
from .asgi import (
    JsonAnswer,
    RequestGuard,
    RouteContext,
    StreamOpener,
    closing_refusals,
    send_json,
    serve_stream,
)
from .errors import CommhubError
from .logs import log_access
from .mcp import protocol as mcp_protocol
from .mcp.http import McpPost
from .ratelimit import RateLimiter
from .service.hub import Hub
from .web import routes as web_routes

log = logging.getLogger("commhub")

# Methods that may write are the others: a write that meets another process's lock waits for it (WriteLockWatch).
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
STREAM_METHODS = frozenset({"GET", "HEAD"})
# Stable codes for the HTTP-level errors Quart raises before our code runs.
HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
              405: "method_not_allowed", 408: "request_timeout", 413: "payload_too_large",
              415: "unsupported_media_type", 429: "rate_limited"}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    """The one wire shape of every error: {"error": code, "message": text}."""
    return Response(error_bytes(code, message), status=status, content_type="application/json",
                    headers=headers or None)


class CommhubApp(QuartTrio):
    """QuartTrio with CommHub's work before and after each request done inline.

    The same steps as before_request/after_request hooks would take (start the timer, wait for a contended
    write lock; drain an unread body, write the access line), without quart's per-hook machinery: the
    blueprint-name splits and hook lookups were ~4 % of the server's CPU per MCP call. Hooks registered by
    anyone else still run, through quart's own code."""

    lock_watch: WriteLockWatch
    mcp_post: McpPost
    route_ctx: RouteContext
    guard: RequestGuard

    async def preprocess_request(self, request_context: RequestContext | None = None) -> ResponseReturnValue | None:
        """Start the request's timer; a request that may write waits while the write lock is contended."""
        g.started = time.perf_counter()
        watch = self.lock_watch
        watch.start_request()
        if any(self.before_request_funcs.values()) or any(self.url_value_preprocessors.values()):
            result = await super().preprocess_request(request_context)
            if result is not None:
                return result
        if request.method not in READ_METHODS and watch.contended():
            await watch.before()  # (POST /mcp does the same in mcp/http.py, where a pure read may still run)
        return None

    async def dispatch_request(self, request_context: RequestContext | None = None) -> ResponseReturnValue:
        """The view; one that failed on another process's write lock before committing anything runs again
        once the lock is free (within write_lock_wait_seconds), with the body it already read."""
        if request.method in READ_METHODS:
            return await super().dispatch_request(request_context)
        return await self.lock_watch.run(lambda: super(CommhubApp, self).dispatch_request(request_context))

    async def process_response(self, response: ResponseTypes,
                               request_context: RequestContext | None = None) -> ResponseTypes:
        """Drain an unread body, write the access line; then any hooks others registered."""
        ctx = request_context or request_ctx
        if ctx._after_request_functions or any(self.after_request_funcs.values()) or not (
                self.session_interface.is_null_session(ctx.session)):
            response = await super().process_response(response, request_context)
        if isinstance(response, Response):
            await drain_request_body(response)
        log_access(request.remote_addr, request.method, request.path, response.status_code,
                   (time.perf_counter() - g.get("started", time.perf_counter())) * 1000)
        return response

    async def __call__(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        """Every request of the server: first the guard (asgi.RequestGuard: ambiguous framing, DNS rebinding), for
        every route alike; a 401, whichever route answers it, carries the Bearer challenge that tells the client
        where the hub's resource metadata is (api/oauth.py); a 429 closes its connection."""
        if scope["type"] == "http":
            refusal = self.guard.refusal(scope)
            if refusal is not None:
                await self._refuse(scope, send, refusal)
                return
            send = closing_refusals(scope, send)  # type: ignore[arg-type]
            send = oauth_api.with_challenge(scope, send, self.route_ctx.hub.settings)  # type: ignore[arg-type]
        await self.asgi_app(scope, receive, send)

    async def _refuse(self, scope: HTTPScope, send: ASGISendCallable, answer: JsonAnswer) -> None:
        """Answer a request the guard refused, unread; on HTTP/1.x its connection closes (HTTP/2 has none per
        request, and forbids the header)."""
        if scope.get("http_version", "1.1") not in ("1.0", "1.1"):
            answer = JsonAnswer(answer.status, answer.body, {})
        client = scope.get("client")
        log_access(client[0] if client else None, scope["method"], scope["path"], answer.status, 0.0)
        await send_json(send, answer)

    async def asgi_app(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        """The hot paths are served straight from ASGI (asgi.py): POST /mcp, every agent's every tool call
        (mcp/http.py), and the event streams GET /events/<alias>, GET /events and GET /mcp; the rest by Quart.
        Quart's request and response objects, context and routing were ~0.18 ms of a ~1 ms tool call and ~0.2 ms
        of a ~1.2 ms stream open."""
        if scope["type"] == "http":
            path, method = scope["path"], scope["method"]
            if path == "/mcp":
                if method == "POST":
                    await self.mcp_post(scope, receive, send)
                    return
                if method in STREAM_METHODS:
                    await self._stream(scope, receive, send, partial(mcp_protocol.mcp_stream, self.route_ctx),
                                       "GET, POST, DELETE")
                    return
            elif path.startswith("/events") and method in STREAM_METHODS:
                if path == "/events":
                    await self._stream(scope, receive, send, partial(sse.network_stream, self.route_ctx), "GET")
                    return
                alias = path[8:] if path[7:8] == "/" else ""
                if alias and "/" not in alias:  # what the rule /events/<alias> matches
                    ctx = self.route_ctx
                    await self._stream(scope, receive, send, lambda req: sse.alias_stream(ctx, req, alias), "GET")
                    return
        await super().asgi_app(scope, receive, send)

    async def _stream(self, scope: HTTPScope, receive: ASGIReceiveCallable, send: ASGISendCallable,
                      opener: StreamOpener, allow: str) -> None:
        if scope["method"] == "HEAD":  # a stream has no head: one would stay open with nothing to send
            message = f"{scope['path']} is an event stream: open it with GET"
            await send_json(send, JsonAnswer(405, error_bytes("method_not_allowed", message), {"Allow": allow}))
            return
        await serve_stream(scope, receive, send, self.lock_watch, opener)


async def drain_request_body(response: Response) -> None:
    """Read a body the handler left unread (an early 401/403/404/429): when it arrives after the answer,
    hypercorn wedges the keep-alive connection and the client's next request on it hangs."""
    if response.status_code in (408, 413):
        # The unread body is still on the wire: hypercorn under quart-trio then never recycles nor closes
        # the connection, so a client reusing it would hang. Tell it not to. A 408 is the body timeout already
        # spent: draining would wait for the body as long again (a slow body was answered after twice the setting).
        response.headers["Connection"] = "close"
        return
    if body_was_read():  # the handler read it all (api.common.read_body)
        return
    try:
        await request.get_data(cache=False)
    except HTTPException:  # too large or too slow: do not keep this connection
        response.headers["Connection"] = "close"


def create_app(hub: Hub) -> CommhubApp:
    """Build the application around a Hub."""
    app = CommhubApp("commhub")
    app.config["COMMHUB_HUB"] = hub
    app.lock_watch = WriteLockWatch(hub.db, hub.settings.write_lock_wait_seconds)
    app.config["MAX_CONTENT_LENGTH"] = hub.settings.max_body_bytes
    app.config["JSON_SORT_KEYS"] = False
    # A slow body may hold a connection (and its file descriptor) this long at most (quart's default: 60 s).
    app.config["BODY_TIMEOUT"] = hub.settings.body_timeout_seconds
    app.config["COMMHUB_LIMITERS"] = {
        "register": RateLimiter(hub.settings.register_rate_per_minute, "register"),
        "login": RateLimiter(hub.settings.login_rate_per_minute, "login"),
        "token": RateLimiter(hub.settings.token_rate_per_minute, "token"),
        "password": RateLimiter(hub.settings.password_rate_per_minute, "password change"),
        "password_user": RateLimiter(hub.settings.password_rate_per_minute, "password change"),
    }
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.json.ensure_ascii = False  # type: ignore[attr-defined]

    for bp in (accounts_api.bp, networks_api.bp, data_api.bp, approvals_api.bp, openapi_api.bp, sse.bp,
               mcp_protocol.bp, oauth_api.bp):
        app.register_blueprint(bp)
    app.register_blueprint(web_routes.bp)  # the dashboard at / and its files under /assets/
    app.route_ctx = RouteContext(hub, app.config["COMMHUB_LIMITERS"]["token"], app.lock_watch)
    app.mcp_post = McpPost(app.route_ctx)
    app.guard = RequestGuard(hub.settings)

    @app.get("/health")
    async def health() -> dict:
        """Liveness: no authentication."""
        return {"status": "ok", "version": __version__, "uptime": int(time.monotonic() - hub.started)}

    @app.errorhandler(CommhubError)
    async def handle_commhub_error(exc: CommhubError) -> Response:
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.errorhandler(HTTPException)
    async def handle_http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        if status == 404:
            message = f"no such endpoint: {request.method} {request.path}"
        elif status == 405:
            allowed = ", ".join(sorted(getattr(exc, "valid_methods", None) or []))
            message = f"method {request.method} is not allowed on {request.path}" + (
                f" (allowed: {allowed})" if allowed else "")
        elif status == 408:
            message = body_timeout_message(hub.settings.body_timeout_seconds)
        elif status == 413:
            message = too_large_message(hub.settings.max_body_bytes)
        else:
            message = exc.description or exc.name
        valid_methods = getattr(exc, "valid_methods", None)
        headers = {"Allow": ", ".join(valid_methods)} if status == 405 and valid_methods else None
        return error_response(status, HTTP_CODES.get(status, "http_error"), message, headers)

    @app.errorhandler(apsw.Error)
    async def handle_storage_error(exc: apsw.Error) -> Response:
        parts = error_parts(exc)
        return error_response(*parts) if parts else await handle_crash(exc)

    @app.errorhandler(Exception)
    async def handle_crash(exc: Exception) -> Response:
        log.exception("internal error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", CRASH_MESSAGE)

    return app
