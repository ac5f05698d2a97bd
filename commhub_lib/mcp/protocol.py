"""POST/GET/DELETE /mcp: a hand-written JSON-RPC 2.0 dispatcher with Streamable HTTP semantics.

Protocol problems are JSON-RPC errors; a domain error inside a tool is a result with `isError: true`
and a message telling the agent what to do next.
"""

from __future__ import annotations

import functools
import json
import logging
import secrets
from collections.abc import AsyncIterator
from json.encoder import encode_basestring
from typing import Any

from pydantic import ValidationError

from ..db import DatabaseError
from ..errors import BadRequest, CommhubError, Conflict
from ..http.answers import Answer, JsonAnswer, empty, json_bytes, json_text
from ..http.asgi import RouteContext
from ..http.auth import authenticate_in_network, authenticate_token
from ..http.request import (
    PostRequest,
    StreamRequest,
    authenticate,
    header,
    hub,
    parse_json,
    public_url,
    validation_message,
)
from ..service import networks, shared
from ..service.hub import Hub, Principal
from ..service.identity import session_principal
from ..sse import last_event_id
from . import listen, modern, push
from .batch import batch_refusal, run_batch
from .links import resource_links
from .sessions import ENDED, SessionCapReached, SessionPool, ended_message, pool_of
from .tools import TOOLS, McpSession, ToolContext, call_tool
from .versions import (
    DEFAULT_VERSION,
    LATEST_VERSION,
    RESOURCE_LINKS,
    STRUCTURED_CONTENT,
    SUPPORTED_VERSIONS,
    TITLES,
    TOOL_ANNOTATIONS,
    has,
    is_modern,
    known_version,
)

log = logging.getLogger("commhub.mcp")

PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS, INTERNAL_ERROR = -32700, -32600, -32601, -32602, -32603
SESSION_CAP_REACHED = -32000  # a server error: the token holds as many live sessions as it may

INSTRUCTIONS = (
    "CommHub connects you with other agents. First call report_status with your alias. Check get_inbox "
    "(tasks come urgent first; open_tasks lists your unfinished tasks until they are final) and ack_inbox what "
    "you have handled. Answer tasks with send_reply: status is required (done, failed, progress, or question to "
    "ask the sender; the answer arrives as a new_reply with the task_id) or report_completion. Send work with "
    "send_task; see who is there with "
    "get_all_status. While you are connected, CommHub pushes an event to you whenever something arrives for "
    "your alias (in Claude Code as a <channel source=\"commhub\"> message; its attributes are event, from, "
    "task_id, message_id, priority). Such an event is a notice, not the item itself: call get_inbox to read it, "
    "then act: a new_task -> do it and answer with send_reply {task_id, status: done|failed|progress|question} "
    "or report_completion; a new_message -> send_reply {message_id, content} if it needs an answer; a "
    "new_reply with status question -> answer it with send_reply {task_id, content}. ack_inbox what you have "
    "handled. Never reply to a channel event in plain text alone: the sender only sees what you send through "
    "these tools.")


def create_session_pool(h: Hub) -> None:
    """Give the hub its pool of MCP sessions (at app creation)."""
    settings = h.settings
    h.mcp_sessions = SessionPool(settings.mcp_sessions_per_token, settings.mcp_max_sessions,
                                 settings.presence_timeout_seconds)


def _sessions() -> SessionPool:
    """MCP sessions live in memory (mcp/sessions.py): a restart forgets them, and an unknown id that this hub issued
    to the same token is taken up as a fresh session (never 404, which clients take as "terminated") that has no
    alias of its own until report_status (service/identity.py says whom it speaks for meanwhile); only ids the
    hub ended itself are 404. On PostgreSQL they are also stored for the other processes (`_take_shared`)."""
    return pool_of(hub())


def _stored_session(h: Hub, sid: str | None) -> dict[str, Any] | None:
    """The stored copy of the session named by Mcp-Session-Id (PostgreSQL, several processes: one primary-key read);
    None on SQLite or without a session id."""
    return shared.mcp_session(h, sid) if sid else None


def _take_shared(h: Hub, sid: str | None, principal: Principal, row: dict[str, Any] | None) -> None:
    """Several processes on PostgreSQL (service/shared.py): bring this process's copy of the session named by
    Mcp-Session-Id in line with the stored one (`row`, _stored_session's), whichever process made or changed it:
    take up a session made elsewhere (with its version, client and claimed alias), follow an alias claimed
    elsewhere, and end a session ended elsewhere (so it is answered 404 here too). Nothing on SQLite, or for another
    token's session id. SessionCapReached when taking it up passes this process's cap for the token. On the event
    loop: it touches the pool and the session's streams."""
    if not sid or row is None or row["token_id"] != principal.token_id:
        return
    pool = pool_of(h)
    if row["ended"]:
        if pool.ended_reason(sid) is None:
            push.end_session(h, sid, row["ended"])
        return
    session = pool.get(sid)
    if session is None:
        _add_session(h, McpSession(sid, row["token_id"], row["protocol_version"], alias=row["alias"],
                                   client=row["client"]))
    elif row["alias"] is not None and row["alias"] != session.alias:
        session.alias = row["alias"]
        push.alias_changed(h, session)  # its GET /mcp stream here follows the alias claimed through another process
    shared.mcp_session_used(h, row)


def _rpc_error(msg_id: Any, code: int, message: str, data: Any = None) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    return {"jsonrpc": "2.0", "id": msg_id, "error": err}


def _rpc_result(msg_id: Any, result: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": msg_id, "result": result}


def _session_for(ctx: RouteContext, req: PostRequest, principal: Principal) -> McpSession:
    """The MCP session named by Mcp-Session-Id, or a transient one for a session-less request. An id this hub
    issued to this token but forgot (a restart) is taken up again; an id of another token, or one never issued,
    is never taken over: the request is served without a session (SessionCapReached past the token's cap)."""
    sid = req.headers.get("mcp-session-id")
    version = req.headers.get("mcp-protocol-version") or LATEST_VERSION
    pool = pool_of(ctx.hub)
    if sid:
        session = pool.get(sid)
        if session is not None and session.token_id == principal.token_id:
            return pool.use(sid) or session
        if session is None and _issued_to(sid, principal):
            session = McpSession(sid, principal.token_id, version)
            _add_session(ctx.hub, session)
            shared.mcp_session_created(ctx.hub, sid, principal.token_id, version, None, None)
            return session
        # Someone else's session id (or one never issued): do not inherit or take it.
    return McpSession(None, principal.token_id, version)


def _add_session(h: Hub, session: McpSession) -> None:
    """Keep a session in the pool; the sessions its caps evicted end (their streams too; on PostgreSQL on every
    process)."""
    reasons = {}
    for evicted in pool_of(h).add(session):
        reasons[evicted] = pool_of(h).ended_reason(evicted) or "session_evicted"
        push.end_push(h, evicted, reasons[evicted])
    shared.mcp_sessions_evicted(h, reasons)


def _ended_session_answer(h: Hub, sid: str | None, payload: Any) -> tuple[int, bytes] | None:
    """404 for a request naming a session this hub ended (DELETE /mcp, or evicted by a cap), as the MCP transport
    says, with a JSON-RPC error that tells why (clients surface it); None for any other request."""
    reason = pool_of(h).ended_reason(sid) if sid else None
    if reason is None:
        return None
    pool = pool_of(h)
    msg_id = payload.get("id") if isinstance(payload, dict) else None
    message = ended_message(reason, pool.per_token, pool.total)
    return 404, json_bytes(_rpc_error(msg_id if isinstance(msg_id, str | int) else None, INVALID_REQUEST, message,
                                      {"error": reason, "message": message}))


def _cap_error(msg_id: Any, exc: SessionCapReached) -> dict[str, Any]:
    """The JSON-RPC error for a session refused by the token's session cap (the message names the setting)."""
    return _rpc_error(msg_id if isinstance(msg_id, str | int) else None, SESSION_CAP_REACHED, str(exc),
                      {"error": "session_cap_reached", "message": str(exc)})


def _cap_answer(payload: Any, exc: SessionCapReached) -> tuple[int, bytes]:
    """A POST whose session could not be taken up again within the token's cap: answered with that error."""
    return 200, json_bytes(_cap_error(payload.get("id") if isinstance(payload, dict) else None, exc))


async def _dispatch(ctx: RouteContext, req: PostRequest, msg: Any, principal: Principal, network_id: str,
                    session: McpSession) -> dict[str, Any] | None:
    """Handle one JSON-RPC message; None for notifications and responses (nothing to answer)."""
    if not isinstance(msg, dict):
        return _rpc_error(None, INVALID_REQUEST, "invalid request: a JSON-RPC message must be an object")
    msg_id = msg.get("id")
    if "method" not in msg:
        if "result" in msg or "error" in msg:
            return None  # a client's response to a server request: nothing to do
        return _rpc_error(msg_id, INVALID_REQUEST, "invalid request: 'method' is missing")
    method = msg.get("method")
    if msg.get("jsonrpc") != "2.0" or not isinstance(method, str) or (
            "id" in msg and not isinstance(msg_id, str | int)) or isinstance(msg_id, bool):
        return _rpc_error(msg_id if isinstance(msg_id, str | int) else None, INVALID_REQUEST,
                          "invalid request: need jsonrpc '2.0', a string method and a string or integer id")
    params = msg.get("params", {})
    if params is None:
        params = {}
    if "id" not in msg:
        if method == "notifications/cancelled" and isinstance(params, dict):
            push.cancel_request(ctx.hub, session, params.get("requestId"))  # ends a waiting long-poll at once
        return None  # notifications (initialized, cancelled, ...) need no answer
    if not isinstance(params, dict):
        return _rpc_error(msg_id, INVALID_PARAMS, "invalid params: must be an object")
    version = session.protocol_version
    if method == "initialize" and not is_modern(version):
        try:
            return _rpc_result(msg_id, _initialize(ctx, req, params, principal))
        except SessionCapReached as exc:
            return _cap_error(msg_id, exc)
    if method == "server/discover" and is_modern(version):
        return _rpc_result(msg_id, modern.discover_result(INSTRUCTIONS))
    if method == "ping":
        return _rpc_result(msg_id, {})
    if method == "tools/list":
        return _tools_list_answer(msg_id, version)
    if method == "tools/call":
        return await _tools_call(ctx, msg_id, params, principal, network_id, session, req)
    return _rpc_error(msg_id, METHOD_NOT_FOUND, f"method not found: {method}")


@functools.cache
def _tool_descriptors() -> tuple[dict[str, Any], ...]:
    """Every tool's tools/list entry, built once: the list changes only when the hub is upgraded, and generating
    the schemas from the models costs milliseconds (a tools/list would cost that much more than a ping)."""
    return tuple(t.descriptor() for t in TOOLS.values())


def _tools_list_kind(version: str | None) -> str:
    """Which of the three tools/list results a version gets (they differ by version, not by caller)."""
    if is_modern(version):
        return "modern"
    return "annotated" if has(version, TOOL_ANNOTATIONS) else "plain"


@functools.cache
def _tools_list_for(kind: str) -> tuple[dict[str, Any], str]:
    """The tools/list result of one kind and its JSON text, made once: without annotations before 2025-03-26;
    from 2026-07-28 with the cache hints that version requires."""
    tools = list(_tool_descriptors())
    if kind == "modern":
        result: dict[str, Any] = {"tools": tools, "ttlMs": modern.TOOLS_TTL_MS, "cacheScope": "public",
                                  "resultType": "complete"}
    elif kind == "plain":
        result = {"tools": [{k: v for k, v in tool.items() if k != "annotations"} for tool in tools]}
    else:
        result = {"tools": tools}
    return result, _encode(result)


def _tools_list_answer(msg_id: Any, version: str | None) -> dict[str, Any]:
    """A tools/list answer: its result shared by every call of that kind, its bytes spliced from the result's text
    (no schema built or encoded per call: a tools/list costs what a ping costs)."""
    result, text = _tools_list_for(_tools_list_kind(version))
    answer = EncodedAnswer(_rpc_result(msg_id, result))
    answer.encoded = f'{{"jsonrpc":"2.0","id":{_encode(msg_id)},"result":{text}}}'.encode()
    return answer


def _initialize(ctx: RouteContext, req: PostRequest, params: dict[str, Any], principal: Principal) -> dict[str, Any]:
    asked = params.get("protocolVersion")
    version = asked if asked in SUPPORTED_VERSIONS else LATEST_VERSION
    client = params.get("clientInfo") or {}
    new = McpSession(_new_session_id(principal), principal.token_id, version,
                     client=str(client.get("name", ""))[:100] if isinstance(client, dict) else None)
    _add_session(ctx.hub, new)
    assert new.session_id is not None
    shared.mcp_session_created(ctx.hub, new.session_id, principal.token_id, version, None, new.client)
    req.answer_headers["Mcp-Session-Id"] = new.session_id
    # experimental["claude/channel"] makes Claude Code (v2.1.80+, channels) put our GET /mcp notifications into
    # the running session; other clients ignore it.
    info = modern.server_info()
    if not has(version, TITLES):
        del info["title"]
    return {"protocolVersion": version,
            "capabilities": {"tools": {"listChanged": False}, "experimental": {"claude/channel": {}}},
            "serverInfo": info, "instructions": INSTRUCTIONS}


def _share_alias(h: Hub, session: McpSession) -> None:
    """Store the alias a session just claimed for the other processes (PostgreSQL). Best effort: the claim itself
    is committed; if this fails, another process speaks for the session as service/identity.py says until it
    claims again."""
    if session.session_id is None or session.alias is None or h.shared is None:
        return
    try:
        shared.mcp_session_claimed(h, session.session_id, session.alias)
    except (CommhubError, DatabaseError) as exc:
        log.warning("mcp: the alias of session %s was not stored for the other processes (%s)",
                    session.session_id[:12], exc)


def _new_session_id(principal: Principal) -> str:
    """A random session id that names the token it was issued to (so a restarted hub recognises its own)."""
    return f"mcp_{secrets.token_urlsafe(24)}.{principal.token_id}"


def _issued_to(session_id: str, principal: Principal) -> bool:
    """Whether a session id unknown in memory was issued (before a restart) to this token."""
    return session_id.startswith("mcp_") and session_id.endswith("." + principal.token_id)


async def _tools_call(ctx: RouteContext, msg_id: Any, params: dict[str, Any], principal: Principal, network_id: str,
                      session: McpSession, req: PostRequest | None = None) -> dict[str, Any] | None:
    name = params.get("name")
    tool = TOOLS.get(name) if isinstance(name, str) else None
    if tool is None:
        return _rpc_error(msg_id, INVALID_PARAMS, f"unknown tool: {name!r}; see tools/list")
    arguments = params.get("arguments") or {}
    if not isinstance(arguments, dict):
        return _rpc_error(msg_id, INVALID_PARAMS, "invalid params: 'arguments' must be an object")
    h = ctx.hub
    tool_ctx = ToolContext(h, principal, network_id, session)
    alias_before = session.alias
    failed = True  # until the tool answered: invalid arguments, an error of the family, a cancel
    try:
        args = tool.model.model_validate(arguments)
        # Run again after waiting (off the loop's back) when its write met another process's lock.
        attempt = ctx.lock_watch.run
        if tool.cancellable:
            with push.cancellable(h, session, msg_id) as scope:
                result = await attempt(lambda: call_tool(tool, tool_ctx, args))
            if scope.cancelled_caught:
                return None  # cancelled by the client (notifications/cancelled): no answer is expected
        else:
            # A sync tool runs to its end without a checkpoint, and a grouped write (send_message) is committed
            # once queued, whoever waits for it: notifications/cancelled has nothing to stop, so no cancel scope
            # to register and unregister (~2 % of a call).
            result = await attempt(lambda: call_tool(tool, tool_ctx, args))
        failed = False
    except ValidationError as exc:
        return _rpc_result(msg_id, _tool_error("invalid_arguments",
                                               f"invalid arguments for {tool.name}: {validation_message(exc)}",
                                               session.protocol_version))
    except CommhubError as exc:
        return _rpc_result(msg_id, _tool_error(exc.code, exc.message, session.protocol_version))
    finally:
        if session.alias != alias_before:
            push.alias_changed(h, session)  # the session's GET /mcp stream follows the new alias
            _share_alias(h, session)
        if h.metrics is not None:
            h.metrics.observe_tool_call(tool.name, failed)
    if tool.text_only:
        return _rpc_result(msg_id, {"content": [{"type": "text", "text": _encode(result)}], "isError": False})
    if tool.links and has(session.protocol_version, RESOURCE_LINKS) and (links := resource_links(
            result, lambda: public_url(h.settings, req.scheme if req else "http",
                                       req.headers.get("host") if req else None))):
        return _tool_answer(msg_id, result, session.protocol_version, links)
    return _tool_answer(msg_id, result, session.protocol_version)


_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


class EncodedAnswer(dict):
    """A JSON-RPC answer (the dict, for whoever reads it) that also carries its JSON text, made once."""

    __slots__ = ("encoded",)
    encoded: bytes


def _tool_answer(msg_id: Any, result: dict[str, Any], version: str = LATEST_VERSION,
                 links: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A tool's successful answer: its result as text content and as structuredContent (from MCP 2025-06-18 on;
    the text alone before), then any resource links (mcp/links.py: a result that lists attachments).

    The same JSON text is both, so the result is encoded once and spliced into the answer, not encoded again
    inside it (~4 µs of a send_message): the bytes are exactly what json_bytes(answer) gives."""
    if not has(version, STRUCTURED_CONTENT):
        return _rpc_result(msg_id, {"content": [{"type": "text", "text": _encode(result)}], "isError": False})
    if links:
        return _rpc_result(msg_id, {"content": [{"type": "text", "text": _encode(result)}, *links],
                                    "structuredContent": result, "isError": False})
    answer = EncodedAnswer(_rpc_result(msg_id, {"content": [{"type": "text", "text": (text := _encode(result))}],
                                                "structuredContent": result, "isError": False}))
    body = (f'{{"jsonrpc":"2.0","id":{_encode(msg_id)},"result":{{"content":[{{"type":"text","text":'
            f'{encode_basestring(text)}}}],"structuredContent":{text},"isError":false}}}}')
    try:
        answer.encoded = body.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: json_bytes escapes it
        answer.encoded = json_bytes(answer)
    return answer


def answer_bytes(answer: dict[str, Any]) -> bytes:
    """An answer as the JSON body of a response."""
    return answer.encoded if isinstance(answer, EncodedAnswer) else json_bytes(answer)


def _tool_error(code: str, message: str, version: str = LATEST_VERSION) -> dict[str, Any]:
    """A tool's failure (isError), with {error, message} as structuredContent from MCP 2025-06-18 on."""
    answer: dict[str, Any] = {"content": [{"type": "text", "text": f"Error ({code}): {message}"}], "isError": True}
    if has(version, STRUCTURED_CONTENT):
        answer["structuredContent"] = {"error": code, "message": message}
    return answer


async def _dispatch_noted(ctx: RouteContext, req: PostRequest, msg: Any, principal: Principal, network_id: str,
                          session: McpSession) -> dict[str, Any] | None:
    """_dispatch, noting for the access log what was called, as which alias, and how it ended."""
    answer = await _dispatch(ctx, req, msg, principal, network_id, session)
    method = msg.get("method") if isinstance(msg, dict) else None
    params = msg.get("params") if isinstance(msg, dict) else None
    call = str(method) if method is not None else "-"
    if method == "tools/call" and isinstance(params, dict):
        call = str(params.get("name"))
    outcome = "ok"
    if answer and "error" in answer:
        outcome = f"rpc{answer['error']['code']}"
    elif answer and answer["result"].get("isError"):
        outcome = str((answer["result"].get("structuredContent") or {}).get("error", "tool_error"))
    req.calls.append((call, outcome))
    req.alias = session.alias or principal.bound_alias or principal.last_alias
    return answer


async def answer_post(ctx: RouteContext, req: PostRequest) -> tuple[int, bytes] | AsyncIterator[bytes]:
    """POST /mcp: one JSON-RPC message (or a batch) in, (status, application/json body) out; an empty body
    with 202 when nothing needs an answer; for a 2026-07-28 `subscriptions/listen`, the event stream's body.
    HTTP-level failures raise (CommhubError: 401, 403, 400, 429)."""
    h = ctx.hub
    # The token, the network and the stored session (PostgreSQL) in one step: one hop off the loop on PostgreSQL;
    # a network error is raised below.
    sid = req.headers.get("mcp-session-id")
    principal, network, stored = await authenticate_in_network(h, ctx.token_limiter, req.bearer(),
                                                               req.arg("network_id") or None,
                                                               functools.partial(_stored_session, h, sid))
    version = req.headers.get("mcp-protocol-version")
    # Only a session that negotiated a version must keep to one; a session-less probe such as the SDK's
    # `server/discover` (sent with a newer version) gets a JSON-RPC -32601 and falls back to initialize.
    if version and version not in SUPPORTED_VERSIONS and req.headers.get("mcp-session-id"):
        raise BadRequest(f"unsupported Mcp-Protocol-Version '{version}'; supported: {', '.join(SUPPORTED_VERSIONS)}",
                         code="unsupported_protocol_version")
    try:
        payload = parse_json(req.body)
    except BadRequest as exc:
        return 400, json_bytes(_rpc_error(None, PARSE_ERROR, f"parse error: {exc.message}"))
    if modern.is_modern_request(payload, req.headers):
        return await _post_modern(ctx, req, payload, principal, network)
    try:  # the stored copy (read with the token: PostgreSQL; nothing on SQLite), applied on the loop
        _take_shared(h, sid, principal, stored)
    except SessionCapReached as exc:
        return _cap_answer(payload, exc)
    ended = _ended_session_answer(h, sid, payload)
    if ended is not None:
        return ended
    if isinstance(network, CommhubError):
        raise network
    network_id = network
    try:
        session = _session_for(ctx, req, principal)
    except SessionCapReached as exc:
        return _cap_answer(payload, exc)
    if session.session_id is not None and not session.alias and not principal.bound_alias:
        # The one case session_principal reads the database (else it answers at once, as it does here).
        principal = await h.db.run(session_principal, h, principal, network_id, True, session.alias)
    if isinstance(payload, list):
        return await _post_batch(ctx, req, payload, principal, network_id, session)
    answer = await _dispatch_noted(ctx, req, payload, principal, network_id, session)
    return (202, b"") if answer is None else (200, answer_bytes(answer))


async def _post_modern(ctx: RouteContext, req: PostRequest, payload: Any, principal: Principal,
                       network: str | CommhubError) -> tuple[int, bytes] | AsyncIterator[bytes]:
    """A 2026-07-28 request (mcp/modern.py): one message, its envelope checked, run without a session."""
    if not isinstance(payload, dict):
        return 400, json_bytes(_rpc_error(None, INVALID_REQUEST, "invalid request: MCP 2026-07-28 takes one "
                                          "JSON-RPC message per POST (no batches)"))
    msg_id = payload.get("id")
    if "id" not in payload:  # a notification: this version defines none from the client; acknowledged
        rejection = modern.header_rejection(req.headers)
        if rejection is None:
            return 202, b""
        return 400, json_bytes(_rpc_error(None, rejection.code, rejection.message, rejection.data))
    answer_id = msg_id if isinstance(msg_id, str | int) and not isinstance(msg_id, bool) else None
    envelope = modern.classify(payload, req.headers)
    if isinstance(envelope, modern.Rejection):
        answer = _rpc_error(answer_id, envelope.code, envelope.message, envelope.data)
        req.calls.append((str(payload.get("method")), f"rpc{envelope.code}"))
        return modern.error_status(answer), json_bytes(answer)
    h = ctx.hub
    if isinstance(network, CommhubError):
        raise network
    network_id = network
    session = McpSession(None, principal.token_id, envelope.version, client=envelope.client_name)
    params = payload.get("params")
    if payload.get("method") == "subscriptions/listen" and answer_id is not None and isinstance(params, dict):
        req.calls.append(("subscriptions/listen", "stream"))
        if "text/event-stream" not in req.headers.get("accept", ""):
            answer = _rpc_error(answer_id, INVALID_REQUEST, "invalid request: subscriptions/listen answers with an "
                                "event stream; send 'Accept: text/event-stream'")
            return 406, json_bytes(answer)
        return listen.open_listen(h, principal, network_id, answer_id, envelope, params.get("notifications"),
                                  last_event_id(h, req), req.client_ip)
    answer = await _dispatch_noted(ctx, req, payload, principal, network_id, session)
    if answer is None:
        return 202, b""
    answer = modern.complete(answer)  # (an answer that already says resultType, tools/list, keeps its bytes)
    return modern.error_status(answer), answer_bytes(answer)


async def _post_batch(ctx: RouteContext, req: PostRequest, payload: list[Any], principal: Principal,
                      network_id: str, session: McpSession) -> tuple[int, bytes]:
    """A JSON-RPC batch, within the bounds of mcp/batch.py."""
    if not payload:
        return 400, json_bytes(_rpc_error(None, INVALID_REQUEST, "invalid request: empty batch"))
    settings = ctx.hub.settings
    version = session.protocol_version if session.session_id else (
        req.headers.get("mcp-protocol-version") or DEFAULT_VERSION)
    refusal = batch_refusal(version, len(payload), settings.mcp_max_batch)
    if refusal:
        return 400, json_bytes(_rpc_error(None, INVALID_REQUEST, refusal))
    pieces = await run_batch(payload, lambda m: _dispatch_noted(ctx, req, m, principal, network_id, session),
                             lambda: ctx.token_limiter.check(principal.token_id), settings.mcp_max_response_bytes)
    return (200, b"[" + b",".join(pieces) + b"]") if pieces else (202, b"")


def mcp_stream(ctx: RouteContext, req: StreamRequest) -> AsyncIterator[bytes] | JsonAnswer:
    """GET /mcp: the session's server-to-client stream, every event for its alias as
    `notifications/claude/channel` (served ahead of Quart by http/asgi.serve_stream).

    As the MCP spec (Streamable HTTP) says: without `Accept: text/event-stream` 405; without Mcp-Session-Id 400;
    a session id this hub never issued to this token, or one it ended (DELETE, or evicted by a cap), 404, so the
    client initializes again. A session id issued to this token before a restart is taken up again, as POST does,
    so push and Last-Event-ID replay survive a restart of the hub."""
    if "text/event-stream" not in req.headers.get("accept", ""):
        return JsonAnswer(405, json_bytes({
            "error": "method_not_allowed", "message": "GET /mcp opens the session's event stream: send 'Accept: "
            "text/event-stream' and the Mcp-Session-Id from initialize; JSON-RPC goes to POST /mcp"}),
            {"Allow": "GET, POST, DELETE"})
    h = ctx.hub
    principal = authenticate_token(h, ctx.token_limiter, req.bearer())
    sid = req.headers.get("mcp-session-id")
    if not sid:
        raise BadRequest("GET /mcp needs the Mcp-Session-Id header that initialize returned", code="missing_session_id")
    pool = pool_of(h)
    try:
        _take_shared(h, sid, principal, _stored_session(h, sid))
    except SessionCapReached as exc:
        raise Conflict(str(exc), code="session_cap_reached") from exc
    reason = pool.ended_reason(sid)
    if reason is not None:
        return JsonAnswer(404, json_bytes({"error": reason, "message": ended_message(reason, pool.per_token,
                                                                                      pool.total)}))
    session = pool.get(sid)
    if session is None and _issued_to(sid, principal):
        # No header: a client before 2025-06-18 (later ones send it on every request), so no newer behaviour.
        session = McpSession(sid, principal.token_id, known_version(req.headers.get("mcp-protocol-version")))
        try:
            _add_session(h, session)
        except SessionCapReached as exc:
            raise Conflict(str(exc), code="session_cap_reached") from exc
        shared.mcp_session_created(h, sid, principal.token_id, session.protocol_version, None, None)
    if session is None or session.token_id != principal.token_id:
        return JsonAnswer(404, json_bytes({"error": "session_not_found", "message": f"no MCP session '{sid[:80]}' "
                                           "for this token; send initialize again to start a new session"}))
    after = last_event_id(h, req)
    network_id = networks.single_network(h, principal, req.arg("network_id") or None)
    # A session without its own alias pushes the token's alias only when that cannot be someone else's.
    principal = session_principal(h, principal, network_id, True, session.alias)
    return push.open_stream(h, principal, network_id, session, after, req.client_ip)


async def delete_mcp() -> Answer:
    """End an MCP session."""
    principal = authenticate()
    sid = header("Mcp-Session-Id")
    if not sid:
        raise BadRequest("Mcp-Session-Id header required to end a session", code="missing_session_id")
    pool = _sessions()
    h = hub()
    try:
        _take_shared(h, sid, principal, await h.db.run(_stored_session, h, sid) if h.shared is not None else None)
    except SessionCapReached:
        pass  # it is ended below all the same
    reason = pool.ended_reason(sid)
    if reason is not None:  # ended (or evicted) already: the MCP transport answers its id 404 from then on
        return json_text(json_bytes({"error": reason, "message": ended_message(reason, pool.per_token, pool.total)}),
                         404)
    session = pool.get(sid)
    if (session is not None and session.token_id == principal.token_id) or (
            session is None and _issued_to(sid, principal)):  # a session forgotten by a restart ends too
        push.end_session(h, sid)
        version = session.protocol_version if session is not None else known_version(
            header("Mcp-Protocol-Version"))
        shared.mcp_session_ended(h, sid, principal.token_id, version, ENDED)  # PostgreSQL: ended on every process
    return empty(204)
