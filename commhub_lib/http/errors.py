"""The one exception-to-answer function of every route (and the only crash log), and the error-to-code map."""

from __future__ import annotations

import logging

from ..db import DatabaseError, storage_error
from ..errors import CommhubError
from .answers import JsonAnswer, error_bytes

log = logging.getLogger("commhub")
# Stable codes for the HTTP-level errors Quart raises before our code runs.
HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
              405: "method_not_allowed", 408: "request_timeout", 413: "payload_too_large",
              415: "unsupported_media_type", 429: "rate_limited"}


def error_parts(exc: Exception) -> tuple[int, str, str, dict[str, str]] | None:
    """The wire form of an error: (status, code, message, headers) for a CommhubError or a storage failure
    that maps to one (db.storage_error); None for anything else, which is a crash (500, logged)."""
    if isinstance(exc, DatabaseError):
        mapped = storage_error(exc)
        if not isinstance(mapped, CommhubError):
            return None
        exc = mapped
    if isinstance(exc, CommhubError):
        return exc.status, exc.code, exc.message, exc.headers
    return None


# The texts of the errors the pipeline gives itself (a crash, a body too large or too slow).
CRASH_MESSAGE = "internal server error; the details are in the server log"


def too_large_message(max_body_bytes: int, setting: str = "max_body_bytes") -> str:
    """413: the body is over max_body_bytes (or the route's own limit, which the message names)."""
    if setting != "max_body_bytes":
        return (f"request body is larger than {max_body_bytes} bytes (this route's limit, set by "
                f"COMMHUB_{setting.upper()})")
    return f"request body is larger than {max_body_bytes} bytes"


def body_timeout_message(body_timeout_seconds: float) -> str:
    """408: the body did not arrive within body_timeout_seconds."""
    return f"the request body did not arrive within {body_timeout_seconds:g} s; send it in one go"


def answer_for(exc: Exception, method: str, path: str) -> JsonAnswer:
    """The answer to a failure of any route: an error of the family (or a storage failure that maps to one) as
    {"error", "message"} with its status and headers; anything else is a crash, logged here (the one crash log)
    and answered 500."""
    parts = error_parts(exc)
    if parts is None:
        log.exception("internal error on %s %s", method, path)
        return JsonAnswer(500, error_bytes("internal_error", CRASH_MESSAGE))
    status, code, message, headers = parts
    return JsonAnswer(status, error_bytes(code, message), headers)
