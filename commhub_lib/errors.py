"""The one error family: every failure leaves the server as {"error": code, "message": text} + status."""

from __future__ import annotations


class CommhubError(Exception):
    """Base of every domain error: an HTTP status, a stable snake_case code and a human message."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.headers = headers or {}


class BadRequest(CommhubError):
    """400: the request is malformed or a field is invalid."""

    status = 400
    code = "bad_request"


class ValidationFailed(BadRequest):
    """400: a body or argument failed validation; the message names the field."""

    code = "validation_error"


class Unauthorized(CommhubError):
    """401: no credentials, or credentials that are not valid (unknown, revoked)."""

    status = 401
    code = "unauthorized"


class Forbidden(CommhubError):
    """403: authenticated, but not allowed to do this."""

    status = 403
    code = "forbidden"


class NotFound(CommhubError):
    """404: the thing does not exist (or is not visible to the caller)."""

    status = 404
    code = "not_found"


class Conflict(CommhubError):
    """409: the request conflicts with the current state (taken name, illegal transition...)."""

    status = 409
    code = "conflict"


class PayloadTooLarge(CommhubError):
    """413: the body is over the configured cap."""

    status = 413
    code = "payload_too_large"


class RequestTimeout(CommhubError):
    """408: the request body did not arrive in time (body_timeout_seconds)."""

    status = 408
    code = "request_timeout"


class RateLimited(CommhubError):
    """429: too many requests; carries Retry-After."""

    status = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after: int):
        super().__init__(message, headers={"Retry-After": str(max(1, retry_after))})
        self.retry_after = max(1, retry_after)


class DatabaseBusy(CommhubError):
    """503: another process holds the database's write lock; carries Retry-After."""

    status = 503
    code = "database_busy"

    def __init__(self, message: str, retry_after: int = 2):
        super().__init__(message, headers={"Retry-After": str(max(1, retry_after))})


class StorageError(CommhubError):
    """503: the database could not be written (I/O error, read-only, corrupt); reads may still work."""

    status = 503
    code = "storage_error"


class DatabaseReplaced(StorageError):
    """503: the database file was deleted or replaced under the running server; writes would be lost."""

    code = "database_replaced"


class StorageFull(CommhubError):
    """507: the disk holding the database is full."""

    status = 507
    code = "storage_full"
