"""The one error family and its catalogue: every failure leaves the server as {"error": code, "message": text} +
status, and every code any part of CommHub gives (server or client) is listed once in CATALOGUE with its status
and meaning. A raising site names its code (`NotFound(..., code="task_not_found")`); tests/test_errors_catalogue.py
finds every code spelled in commhub_lib and fails unless it is catalogued with the status of the class that raises
it, and docs/errors.md is generated from CATALOGUE (`python -m commhub_lib.errors > docs/errors.md`).
"""

from __future__ import annotations

from dataclasses import dataclass


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


class DatabaseUnavailable(CommhubError):
    """503: the database server (PostgreSQL) cannot be reached; carries Retry-After."""

    status = 503
    code = "database_unavailable"

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


@dataclass(frozen=True)
class ErrorInfo:
    """One catalogued error code: the HTTP status it leaves with (0: the client's own, no answer from the
    server; None: the status varies) and what it means to the caller."""

    status: int | None
    meaning: str
    client_only: bool = False


def _client(meaning: str, status: int = 0) -> ErrorInfo:
    return ErrorInfo(status, meaning, client_only=True)


# Every error code, by code. Adding a code: one entry here, then raise it; the catalogue test and
# docs/errors.md (regenerated) follow. Codes are part of the contract: never rename one.
CATALOGUE: dict[str, ErrorInfo] = {
    # -- generic (one per error class, and the HTTP errors raised before CommHub's code runs)
    "bad_request": ErrorInfo(400, "The request is malformed or a field is invalid."),
    "validation_error": ErrorInfo(400, "A body or argument failed validation; the message names the field."),
    "invalid_json": ErrorInfo(400, "The body is not a JSON object (malformed, too deeply nested, not UTF-8)."),
    "unauthorized": ErrorInfo(401, "No credentials, or credentials that are not valid."),
    "forbidden": ErrorInfo(403, "Authenticated, but not allowed to do this."),
    "not_found": ErrorInfo(404, "No such route or thing."),
    "method_not_allowed": ErrorInfo(405, "The path exists but not with this method (the Allow header lists them)."),
    "request_timeout": ErrorInfo(408, "The request body did not arrive in time (body_timeout_seconds)."),
    "conflict": ErrorInfo(409, "The request conflicts with the current state."),
    "payload_too_large": ErrorInfo(413, "The body is over the configured cap (max_body_bytes)."),
    "unsupported_media_type": ErrorInfo(415, "The body's Content-Type is not one this route reads."),
    "rate_limited": ErrorInfo(429, "Too many requests; wait for the Retry-After header's seconds. Also the loop "
                                   "guard's per-pair limit: more than pair_rate_per_minute tasks and messages from "
                                   "one agent to another (the message names the pair; docs/loop-guard.md)."),
    "http_error": ErrorInfo(None, "Any other HTTP-level error (the server: an unmapped status; the client: an "
                                  "error answer that is not CommHub's JSON shape)."),
    "ambiguous_length": ErrorInfo(400, "The request carries both Content-Length and Transfer-Encoding (it could hide "
                                       "a second request); send one of them."),
    "host_not_allowed": ErrorInfo(421, "The Host header is not a name this hub answers to (a guard against DNS "
                                       "rebinding): add it to COMMHUB_ALLOWED_HOSTS or set COMMHUB_PUBLIC_URL."),
    "too_many_connections": ErrorInfo(429, "This address has too many connections still sending their request "
                                           "headers (COMMHUB_MAX_INCOMPLETE_HEADERS_PER_IP)."),
    "internal_error": ErrorInfo(500, "A bug: the details are in the server log (the one crash log)."),
    "database_busy": ErrorInfo(503, "Another process holds the database's write lock; retry after Retry-After."),
    "storage_error": ErrorInfo(503, "The database could not be written (I/O error, read-only, corrupt)."),
    "database_replaced": ErrorInfo(503, "The database file was deleted or replaced under the running server."),
    "storage_full": ErrorInfo(507, "The disk holding the database is full."),
    "database_unavailable": ErrorInfo(503, "The database server (PostgreSQL) cannot be reached; retry after "
                                           "Retry-After."),
    # -- tokens and accounts
    "invalid_token": ErrorInfo(401, "The bearer token is malformed, unknown, revoked or expired."),
    "auth_token_required": ErrorInfo(401, "This server requires COMMHUB_AUTH_TOKEN as the bearer token to "
                                          "register or log in."),
    "invalid_credentials": ErrorInfo(401, "Wrong username or password."),
    "wrong_password": ErrorInfo(403, "old_password is wrong (password change)."),
    "admin_required": ErrorInfo(403, "Only the system admin may do this."),
    "user_token_required": ErrorInfo(403, "This needs a user token (utok_), not a network token."),
    "network_token_required": ErrorInfo(403, "This needs a network token (ntok_) bound to an alias."),
    "username_taken": ErrorInfo(409, "The username is already taken."),
    "token_not_found": ErrorInfo(404, "No such token of yours."),
    "already_revoked": ErrorInfo(409, "The token is already revoked."),
    "user_not_found": ErrorInfo(404, "No user with that name (operator commands)."),
    "no_users": ErrorInfo(404, "The database has no user yet (operator commands)."),
    # -- networks, members, invites
    "network_not_found": ErrorInfo(404, "No such network, or you are not a member of it."),
    "network_exists": ErrorInfo(409, "The owner already has a network with that name."),
    "network_full": ErrorInfo(409, "The network has reached its member limit."),
    "network_has_online_sessions": ErrorInfo(409, "The network still has online sessions (delete refused)."),
    "insufficient_role": ErrorInfo(403, "Your role in the network (member/admin/owner) does not allow this."),
    "owner_required": ErrorInfo(403, "Only the owner may do this, and the owner's role cannot change nor be removed."),
    "member_not_found": ErrorInfo(404, "That user is not a member of the network."),
    "already_member": ErrorInfo(409, "You are already a member of this network."),
    "invite_not_found": ErrorInfo(404, "No such invite code."),
    "invite_revoked": ErrorInfo(409, "The invite was revoked."),
    "invite_expired": ErrorInfo(409, "The invite has expired."),
    "invite_used_up": ErrorInfo(409, "The invite has no uses left."),
    "quota_exceeded": ErrorInfo(409, "A network quota (stored bytes, aliases, ...) is reached; the message names "
                                     "the setting."),
    "wrong_network": ErrorInfo(403, "The token belongs to another network than the one asked for."),
    # -- aliases and sessions
    "no_identity": ErrorInfo(409, "This token has no alias yet: claim one (report_status) or bind the token."),
    "alias_required": ErrorInfo(409, "The first report_status must name the alias to claim."),
    "alias_bound": ErrorInfo(403, "The token is bound to another alias."),
    "alias_taken": ErrorInfo(409, "Another token holds this alias."),
    "alias_retired": ErrorInfo(409, "The alias is retired and cannot be used again."),
    "alias_is_username": ErrorInfo(403, "The alias is a member's username (others would take it for them)."),
    "alias_not_found": ErrorInfo(404, "No agent with that alias ever connected to the network."),
    "unknown_recipient": ErrorInfo(404, "No agent with that alias ever connected: check get_all_status."),
    # -- messages, tasks, approvals
    "message_not_found": ErrorInfo(404, "No such message in this network (or it is a task id)."),
    "task_not_found": ErrorInfo(404, "No such task in this network (or it is a message id)."),
    "approval_not_found": ErrorInfo(404, "No such approval request."),
    "not_recipient": ErrorInfo(403, "Only the recipient (or sender) of the message or task may do this."),
    "not_allowed": ErrorInfo(403, "Only the task's sender (recipient, for a flag) or a network owner/admin may "
                                  "cancel or flag it."),
    "no_recipients": ErrorInfo(404, "No other session matches: a broadcast would reach nobody."),
    "nothing_acked": ErrorInfo(409, "None of the ids could be marked read; the message says why."),
    "task_final": ErrorInfo(409, "The task is already replied, failed, cancelled or expired."),
    "status_required": ErrorInfo(400, "A reply on a task you received must say its status."),
    "status_not_allowed": ErrorInfo(400, "The task's sender answers without a status (status is how the recipient "
                                         "reports)."),
    # -- attachments (docs/attachments.md)
    "attachment_not_found": ErrorInfo(404, "No such attachment in this network (or it is another member's upload "
                                           "not sent yet)."),
    "attachment_too_large": ErrorInfo(413, "The file is larger than COMMHUB_MAX_ATTACHMENT_BYTES (or, inline in a "
                                           "send, COMMHUB_MAX_INLINE_ATTACHMENT_BYTES)."),
    "invalid_upload": ErrorInfo(400, "The upload carries no file (an empty body, a form without a file field), or "
                                     "an inline file's data_base64 is not base64."),
    # -- webhooks (docs/webhooks.md)
    "webhook_not_found": ErrorInfo(404, "No webhook with that id in this network."),
    "delivery_not_found": ErrorInfo(404, "No delivery with that id for this webhook."),
    "webhook_url_not_allowed": ErrorInfo(400, "The webhook URL is not https, or names a private, loopback, "
                                              "link-local or metadata address that webhook_targets does not allow."),
    "webhook_limit_reached": ErrorInfo(409, "The network has as many webhooks as webhook_max_per_network allows."),
    # -- A2A server (docs/a2a.md)
    "agent_not_served": ErrorInfo(404, "The alias is not served as an A2A agent (never opted in, or switched "
                                          "off)."),
    # -- schedules (docs/schedules.md)
    "schedule_not_found": ErrorInfo(404, "No schedule with that id in your networks."),
    "schedule_not_allowed": ErrorInfo(403, "Only a schedule's creator or a network owner/admin may change it; "
                                           "agents create schedules only as the schedule_agents setting allows."),
    "schedule_limit_reached": ErrorInfo(409, "The network has as many schedules as max_schedules_per_network "
                                             "allows."),
    "schedule_finished": ErrorInfo(409, "The schedule ran its one time (kind once): it cannot be paused or resumed."),
    # -- the A2A client (docs/a2a-client.md)
    "remote_url_not_allowed": ErrorInfo(400, "The A2A agent's URL is not https, or names a private, loopback, "
                                             "link-local or metadata address that a2a_client_targets does not allow."),
    "remote_not_bound": ErrorInfo(404, "The alias is not bound to an A2A agent."),
    "remote_takes_tasks_only": ErrorInfo(409, "The alias is an external A2A agent: send it a task, not a message."),
    # -- MCP
    "origin_not_allowed": ErrorInfo(403, "The Origin header is not in COMMHUB_ALLOWED_ORIGINS."),
    "unsupported_protocol_version": ErrorInfo(400, "The MCP-Protocol-Version header names a version this server "
                                                   "does not speak."),
    "missing_session_id": ErrorInfo(400, "GET or DELETE /mcp without the Mcp-Session-Id header."),
    "session_not_found": ErrorInfo(404, "No MCP session with that id (restart the session with initialize)."),
    "session_cap_reached": ErrorInfo(409, "The token has as many MCP sessions as COMMHUB_MCP_SESSIONS_PER_TOKEN "
                                          "allows."),
    "session_ended": ErrorInfo(404, "The MCP session was ended (DELETE /mcp); send initialize again."),
    "session_evicted": ErrorInfo(404, "The MCP session was evicted: its token opened more sessions than its cap."),
    "session_evicted_total": ErrorInfo(404, "The MCP session was evicted: the hub reached COMMHUB_MCP_MAX_SESSIONS."),
    "invalid_arguments": ErrorInfo(200, "A tool's arguments failed validation (an MCP tool result with isError)."),
    # -- the command-line client's own (no answer from the server, or one it cannot read)
    "unreachable": _client("The server could not be reached, or its stream broke."),
    "timeout": _client("No event or reply arrived in time."),
    "bad_response": _client("The server's answer is not a JSON object."),
    "jsonrpc_error": _client("The MCP endpoint answered (200) with a JSON-RPC error.", 200),
    "tool_error": _client("An MCP tool answered (200) with an error that carries no code.", 200),
    "no_network": _client("You belong to no network (create one with `commhub network create`)."),
    "bad_file": _client("A file named on the command line (send --attach) could not be read."),
}


def catalogue_markdown() -> str:
    """docs/errors.md: the catalogue as a table (kept equal by tests/test_errors_catalogue.py)."""
    lines = ["# Error codes", "",
             "<!-- Generated from commhub_lib/errors.py (CATALOGUE) by `python -m commhub_lib.errors > docs/errors.md`;"
             " do not edit by hand. -->", "",
             'Every error leaves CommHub as `{"error": code, "message": text}` with its HTTP status (an MCP tool '
             "error: a tool result with `isError: true` and the same two fields in `structuredContent`). The code "
             "is stable: match on it, show the message. Status 0 marks the command-line client's own errors (no "
             "answer from the server).", "",
             "| code | status | meaning |", "|---|---|---|"]
    for code, info in CATALOGUE.items():
        status = "varies" if info.status is None else str(info.status)
        lines.append(f"| `{code}` | {status} | {info.meaning} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(catalogue_markdown(), end="")
