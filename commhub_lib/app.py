"""create_app(hub): the Quart-Trio application, its routes, and the one error handler."""

from __future__ import annotations

import logging
import time

import apsw
from quart import Response, g, jsonify, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from . import __version__
from .api import accounts as accounts_api
from .api import data as data_api
from .api import networks as networks_api
from .api import openapi as openapi_api
from .db import storage_error
from .errors import CommhubError, DatabaseBusy
from .logs import escape
from .ratelimit import RateLimiter
from .service.hub import Hub
from .web import routes as web_routes

log = logging.getLogger("commhub")
access_log = logging.getLogger("commhub.access")

# Methods that may write are the others: they first wait (asynchronously) for a lock held by another process.
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Stable codes for the HTTP-level errors Quart raises before our code runs.
HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
              405: "method_not_allowed", 408: "request_timeout", 413: "payload_too_large",
              415: "unsupported_media_type", 429: "rate_limited"}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    """The one wire shape of every error: {"error": code, "message": text}."""
    response = jsonify({"error": code, "message": message})
    response.status_code = status
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def log_access(status: int) -> None:
    """One access line per request; MCP requests add what was called, as whom, and how it ended (from `g`).

    Every field a client controls is escaped, so a CR/LF in a path cannot forge a log line."""
    elapsed = (time.perf_counter() - g.get("started", time.perf_counter())) * 1000
    fields: dict[str, object] = {"remote": request.remote_addr, "method": request.method,
                                 "path": escape(request.path), "status": status, "ms": round(elapsed, 1)}
    line = f"{escape(request.remote_addr)} {request.method} {fields['path']} {status} {elapsed:.1f}ms"
    calls = g.get("mcp_calls")
    if calls:
        fields["mcp"] = [{"call": escape(c), "outcome": escape(o)} for c, o in calls]
        fields["alias"] = escape(g.get("mcp_alias") or "-")
        names = ",".join(c["call"] for c in fields["mcp"])
        outcomes = ",".join(c["outcome"] for c in fields["mcp"])
        line += f" mcp={names} alias={fields['alias']} outcome={outcomes}"
    access_log.info("%s", line, extra={"fields": fields})


def create_app(hub: Hub) -> QuartTrio:
    """Build the application around a Hub."""
    from . import sse
    from .mcp import protocol as mcp_protocol

    app = QuartTrio("commhub")
    app.config["COMMHUB_HUB"] = hub
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

    for bp in (accounts_api.bp, networks_api.bp, data_api.bp, openapi_api.bp, sse.bp, mcp_protocol.bp):
        app.register_blueprint(bp)
    app.register_blueprint(web_routes.bp)  # the dashboard at / and its files under /assets/

    @app.get("/health")
    async def health() -> dict:
        """Liveness: no authentication."""
        return {"status": "ok", "version": __version__, "uptime": int(time.monotonic() - hub.started)}

    @app.before_request
    async def start_timer() -> None:
        g.started = time.perf_counter()

    @app.before_request
    async def wait_for_write_lock() -> None:
        """A request that may write waits here, off the event loop's back, while another process holds the
        database's write lock (503 database_busy after write_lock_wait_seconds); a free lock costs a few µs."""
        if request.method in READ_METHODS:
            return
        try:
            await hub.db.wait_for_write_lock(hub.settings.write_lock_wait_seconds)
        except DatabaseBusy:
            if request.path != "/mcp":
                raise
            # A POST /mcp may be a pure read (get_inbox, get_all_status): run it anyway; a tool that needs
            # to write then fails fast (50 ms busy timeout) with a database_busy tool error.

    @app.after_request
    async def log_request(response: Response) -> Response:
        log_access(response.status_code)
        return response

    @app.after_request
    async def drain_request_body(response: Response) -> Response:
        """Read a body the handler left unread (an early 401/403/404/429): when it arrives after the answer,
        hypercorn wedges the keep-alive connection and the client's next request on it hangs."""
        if response.status_code == 413:
            # The unread body is still on the wire: hypercorn under quart-trio then never recycles nor closes
            # the connection, so a client reusing it would hang. Tell it not to.
            response.headers["Connection"] = "close"
            return response
        if g.get("body_read"):  # the handler read it all (api.common.read_body)
            return response
        try:
            await request.get_data(cache=False)
        except HTTPException:  # too large or too slow: do not keep this connection
            response.headers["Connection"] = "close"
        return response

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
            message = (f"the request body did not arrive within {hub.settings.body_timeout_seconds:g} s; "
                       "send it in one go")
        elif status == 413:
            message = f"request body is larger than {hub.settings.max_body_bytes} bytes"
        else:
            message = exc.description or exc.name
        headers = {"Allow": ", ".join(exc.valid_methods)} if status == 405 and getattr(
            exc, "valid_methods", None) else None
        return error_response(status, HTTP_CODES.get(status, "http_error"), message, headers)

    @app.errorhandler(apsw.Error)
    async def handle_storage_error(exc: apsw.Error) -> Response:
        mapped = storage_error(exc)
        if isinstance(mapped, CommhubError):
            return error_response(mapped.status, mapped.code, mapped.message, mapped.headers)
        return await handle_crash(exc)

    @app.errorhandler(Exception)
    async def handle_crash(exc: Exception) -> Response:
        log.exception("internal error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "internal server error; the details are in the server log")

    return app
