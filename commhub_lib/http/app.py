"""create_app(hub): the Quart-Trio application made from the route table, ahead of it the ASGI dispatch of the
routes Quart does not serve, and the one error handler."""

from __future__ import annotations

import time
from typing import Any

from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, ASGISendEvent, HTTPScope, Scope
from quart import Response, g, request
from quart.ctx import RequestContext
from quart.globals import request_ctx
from quart.typing import ResponseReturnValue, ResponseTypes
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from ..api.oauth import challenge, public_url
from ..config import Settings
from ..mcp.protocol import create_session_pool
from ..metrics import Metrics
from ..ratelimit import RateLimiter
from ..service.hub import Hub
from .access import access_line
from .answers import JsonAnswer, error_bytes
from .asgi import RequestGuard, RouteContext, closing_refusals, send_json
from .dispatch import FastDispatch
from .errors import HTTP_CODES, answer_for, body_timeout_message, too_large_message
from .request import body_was_read
from .routes import FAST_KINDS, ROUTES, Route
from .writelock import WriteLockWatch

# Methods that may write are the others: a write that meets another process's lock waits for it (WriteLockWatch).
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def error_response(answer: JsonAnswer) -> Response:
    """An error answer as Quart's response (its body: {"error": code, "message": text})."""
    return Response(answer.body, status=answer.status, content_type="application/json",
                    headers=answer.headers or None)


class CommhubApp(QuartTrio):
    """QuartTrio with CommHub's work before and after each request done inline.

    The same steps as before_request/after_request hooks would take (start the timer, wait for a contended
    write lock; drain an unread body, write the access line), without quart's per-hook machinery: the
    blueprint-name splits and hook lookups were ~4 % of the server's CPU per MCP call. Hooks registered by
    anyone else still run, through quart's own code."""

    lock_watch: WriteLockWatch
    fast: FastDispatch
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
            await watch.before()  # (POST /mcp does the same in http/asgi.py, where a pure read may still run)
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
        rule = request.url_rule
        access_line(request.remote_addr, request.method, request.path, response.status_code,
                    (time.perf_counter() - g.get("started", time.perf_counter())) * 1000,
                    route=rule.endpoint if rule is not None and rule.endpoint else "unmatched",
                    metrics=self.route_ctx.hub.metrics)
        return response

    async def __call__(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        """Every request of the server: first the guard (asgi.RequestGuard: ambiguous framing, DNS rebinding), for
        every route alike; a 401, whichever route answers it, carries the Bearer challenge that tells the client
        where the hub's resource metadata is (api/oauth.py, with_challenge); a 429 closes its connection."""
        if scope["type"] == "http":
            refusal = self.guard.refusal(scope)
            if refusal is not None:
                await self._refuse(scope, send, refusal)
                return
            send = closing_refusals(scope, send)  # type: ignore[arg-type]
            send = with_challenge(scope, send, self.route_ctx.hub.settings)  # type: ignore[arg-type]
        await self.asgi_app(scope, receive, send)

    async def _refuse(self, scope: HTTPScope, send: ASGISendCallable, answer: JsonAnswer) -> None:
        """Answer a request the guard refused, unread; on HTTP/1.x its connection closes (HTTP/2 has none per
        request, and forbids the header)."""
        if scope.get("http_version", "1.1") not in ("1.0", "1.1"):
            answer = JsonAnswer(answer.status, answer.body, {})
        client = scope.get("client")
        access_line(client[0] if client else None, scope["method"], scope["path"], answer.status, 0.0,
                    route="refused", metrics=self.route_ctx.hub.metrics)
        await send_json(send, answer)

    async def asgi_app(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        """The hot paths are served straight from ASGI (http/dispatch.py, the routes of kind "stream" and "mcp"):
        POST /mcp, every agent's every tool call, and the event streams; the rest by Quart. Quart's request and
        response objects, context and routing were ~0.18 ms of a ~1 ms tool call and ~0.2 ms of a ~1.2 ms stream
        open."""
        if scope["type"] == "http":
            found = self.fast.find(scope["method"], scope["path"])
            if found is not None:
                await found[0](scope, receive, send, found[1])
                return
        await super().asgi_app(scope, receive, send)


def _header(scope: HTTPScope, name: bytes) -> str | None:
    """A request header off the ASGI scope (the first value), or None."""
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def with_challenge(scope: HTTPScope, send: ASGISendCallable, settings: Settings) -> ASGISendCallable:
    """`send` for one request, adding the Bearer challenge to its answer when that is a 401 without one."""

    async def send_challenged(message: ASGISendEvent) -> None:
        if message["type"] == "http.response.start" and message["status"] == 401:
            headers = list(message.get("headers", ()))
            if not any(name.lower() == b"www-authenticate" for name, _ in headers):
                base = public_url(settings, scope.get("scheme", "http"), _header(scope, b"host"))
                refused = _header(scope, b"authorization") is not None or b"token=" in scope.get("query_string", b"")
                headers.append((b"www-authenticate", challenge(base, refused).encode("latin-1")))
                message = {**message, "headers": headers}  # type: ignore[typeddict-item]
        await send(message)

    return send_challenged


async def drain_request_body(response: Response) -> None:
    """Read a body the handler left unread (an early 401/403/404/429): when it arrives after the answer,
    hypercorn wedges the keep-alive connection and the client's next request on it hangs."""
    if response.status_code in (408, 413):
        # The unread body is still on the wire: hypercorn under quart-trio then never recycles nor closes
        # the connection, so a client reusing it would hang. Tell it not to. A 408 is the body timeout already
        # spent: draining would wait for the body as long again (a slow body was answered after twice the setting).
        response.headers["Connection"] = "close"
        return
    if body_was_read():  # the handler read it all (http.request.read_body)
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

    create_session_pool(hub)
    if hub.settings.metrics != "off":
        hub.metrics = Metrics(hub.broker, hub.db)
    app.route_ctx = RouteContext(hub, app.config["COMMHUB_LIMITERS"]["token"], app.lock_watch)
    for route in ROUTES:
        view = _served_ahead(route) if route.kind in FAST_KINDS else route.handler
        app.add_url_rule(route.path, route.endpoint, view, methods=[route.method])
    app.fast = FastDispatch(ROUTES, app.route_ctx)
    app.guard = RequestGuard(hub.settings)

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
        return error_response(JsonAnswer(status, error_bytes(HTTP_CODES.get(status, "http_error"), message),
                                         headers or {}))

    @app.errorhandler(Exception)
    async def handle_error(exc: Exception) -> Response:
        return error_response(answer_for(exc, request.method, request.path))

    return app


def _served_ahead(route: Route) -> Any:
    """The view of the URL rule of a route served ahead of Quart: never called (the rule lets routing answer the
    path's other methods, and lists the route in the OpenAPI document with its summary)."""

    async def served_ahead(**_params: str) -> Response:
        raise AssertionError(f"{route.method} {route.path} is served ahead of Quart's routing")

    served_ahead.__doc__ = route.summary
    served_ahead.__name__ = served_ahead.__qualname__ = route.endpoint.replace(".", "_")
    return served_ahead
