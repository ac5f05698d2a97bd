"""POST/GET/DELETE /mcp: a hand-written JSON-RPC 2.0 dispatcher with Streamable HTTP semantics.

Protocol problems are JSON-RPC errors; a domain error inside a tool is a result with `isError: true`
and a message telling the agent what to do next.
"""

from __future__ import annotations

import json
import logging
import secrets
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError
from quart import Blueprint, Response, g, request

from .. import __version__
from ..api.common import authenticate, hub, json_bytes, limiter, parse_json, read_body, validation_message
from ..errors import BadRequest, CommhubError, Forbidden
from ..service import networks
from ..service.hub import Principal
from ..service.identity import session_principal
from .batch import DEFAULT_VERSION, batch_refusal, run_batch
from .sessions import SessionPool
from .tools import TOOLS, McpSession, ToolContext, call_tool

bp = Blueprint("mcp", __name__)
log = logging.getLogger("commhub.mcp")

SUPPORTED_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")
LATEST_VERSION = SUPPORTED_VERSIONS[0]
PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS, INTERNAL_ERROR = -32700, -32600, -32601, -32602, -32603
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}

INSTRUCTIONS = (
    "CommHub connects you with other agents. First call report_status with your alias. Check get_inbox "
    "(tasks come urgent first) and ack_inbox what you have handled. Answer tasks with send_reply "
    "(status done/failed/progress) or report_completion. Send work with send_task; see who is there with "
    "get_all_status.")



@bp.record_once
def _create_session_pool(state: Any) -> None:
    settings = state.app.config["COMMHUB_HUB"].settings
    state.app.config["COMMHUB_HUB"].mcp_sessions = SessionPool(settings.mcp_sessions_per_token,
                                                               settings.mcp_max_sessions)


def _sessions() -> SessionPool:
    """MCP sessions live in memory (mcp/sessions.py): a restart forgets them, and an unknown id is treated as a
    fresh session (never 404, which clients take as "terminated") that has no alias of its own until
    report_status (service/identity.py says whom it speaks for meanwhile)."""
    return hub().mcp_sessions


def _rpc_error(msg_id: Any, code: int, message: str, data: Any = None) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    return {"jsonrpc": "2.0", "id": msg_id, "error": err}


def _rpc_result(msg_id: Any, result: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": msg_id, "result": result}


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = payload if isinstance(payload, bytes) else json_bytes(payload)
    return Response(body, status=status, content_type="application/json", headers=headers)


def check_origin() -> None:
    """DNS-rebinding guard: a browser Origin must be local or explicitly allowed."""
    # getlist: a missing header costs no exception (Headers.get raises and catches one: ~1.5 % of a call).
    origin = next(iter(request.headers.getlist("Origin")), None)
    if not origin:
        return  # not a browser
    allowed = {o.strip().rstrip("/") for o in hub().settings.allowed_origins.split(",") if o.strip()}
    host = (urlsplit(origin).hostname or "").lower()
    if host in LOCAL_HOSTS or origin.rstrip("/") in allowed:
        return
    raise Forbidden(f"Origin '{origin}' is not allowed; add it to COMMHUB_ALLOWED_ORIGINS", code="origin_not_allowed")


def _session_for(principal: Principal) -> McpSession:
    """The MCP session named by Mcp-Session-Id, or a transient one for a session-less request."""
    sid = request.headers.get("Mcp-Session-Id")
    version = request.headers.get("Mcp-Protocol-Version") or LATEST_VERSION
    if sid:
        session = _sessions().get(sid)
        if session is not None and session.token_id == principal.token_id:
            return _sessions().use(sid) or session
        if session is None:
            session = McpSession(sid, principal.token_id, version)
            _sessions().add(session)
            return session
        # Someone else's session id: do not inherit its claimed alias.
    return McpSession(None, principal.token_id, version)


async def _dispatch(msg: Any, principal: Principal, network_id: str, session: McpSession,
                    headers: dict[str, str]) -> dict[str, Any] | None:
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
        return None  # notifications (initialized, cancelled, ...) need no answer
    if not isinstance(params, dict):
        return _rpc_error(msg_id, INVALID_PARAMS, "invalid params: must be an object")
    if method == "initialize":
        return _rpc_result(msg_id, _initialize(params, principal, session, headers))
    if method == "ping":
        return _rpc_result(msg_id, {})
    if method == "tools/list":
        return _rpc_result(msg_id, {"tools": [t.descriptor() for t in TOOLS.values()]})
    if method == "tools/call":
        return await _tools_call(msg_id, params, principal, network_id, session)
    return _rpc_error(msg_id, METHOD_NOT_FOUND, f"method not found: {method}")


def _initialize(params: dict[str, Any], principal: Principal, session: McpSession,
                headers: dict[str, str]) -> dict[str, Any]:
    asked = params.get("protocolVersion")
    version = asked if asked in SUPPORTED_VERSIONS else LATEST_VERSION
    client = params.get("clientInfo") or {}
    new = McpSession("mcp_" + secrets.token_urlsafe(24), principal.token_id, version,
                     client=str(client.get("name", ""))[:100] if isinstance(client, dict) else None)
    _sessions().add(new)
    headers["Mcp-Session-Id"] = new.session_id or ""
    return {"protocolVersion": version, "capabilities": {"tools": {"listChanged": False}},
            "serverInfo": {"name": "commhub", "title": "CommHub", "version": __version__},
            "instructions": INSTRUCTIONS}


async def _tools_call(msg_id: Any, params: dict[str, Any], principal: Principal, network_id: str,
                      session: McpSession) -> dict[str, Any]:
    name = params.get("name")
    tool = TOOLS.get(name) if isinstance(name, str) else None
    if tool is None:
        return _rpc_error(msg_id, INVALID_PARAMS, f"unknown tool: {name!r}; see tools/list")
    arguments = params.get("arguments") or {}
    if not isinstance(arguments, dict):
        return _rpc_error(msg_id, INVALID_PARAMS, "invalid params: 'arguments' must be an object")
    ctx = ToolContext(hub(), principal, network_id, session)
    try:
        args = tool.model.model_validate(arguments)
        result = await call_tool(tool, ctx, args)
    except ValidationError as exc:
        return _rpc_result(msg_id, _tool_error("invalid_arguments",
                                               f"invalid arguments for {tool.name}: {validation_message(exc)}"))
    except CommhubError as exc:
        return _rpc_result(msg_id, _tool_error(exc.code, exc.message))
    text = json.dumps(result, ensure_ascii=False, separators=(",", ":"))
    return _rpc_result(msg_id, {"content": [{"type": "text", "text": text}], "structuredContent": result,
                                "isError": False})


def _tool_error(code: str, message: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": f"Error ({code}): {message}"}],
            "structuredContent": {"error": code, "message": message}, "isError": True}


async def _dispatch_noted(msg: Any, principal: Principal, network_id: str, session: McpSession,
                          headers: dict[str, str]) -> dict[str, Any] | None:
    """_dispatch, noting on `g` for the access log what was called, as which alias, and how it ended."""
    answer = await _dispatch(msg, principal, network_id, session, headers)
    method = msg.get("method") if isinstance(msg, dict) else None
    params = msg.get("params") if isinstance(msg, dict) else None
    call = str(method) if method is not None else "-"
    if method == "tools/call" and isinstance(params, dict):
        call = str(params.get("name"))
    outcome = "ok"
    if answer and "error" in answer:
        outcome = f"rpc{answer['error']['code']}"
    elif answer and answer["result"].get("isError"):
        outcome = str(answer["result"]["structuredContent"].get("error"))
    g.setdefault("mcp_calls", []).append((call, outcome))
    g.mcp_alias = session.alias or principal.bound_alias or principal.last_alias
    return answer


@bp.post("/mcp")
async def post_mcp() -> Response:
    """One JSON-RPC message (or a batch) per POST; answers as application/json."""
    check_origin()
    principal = authenticate()
    version = request.headers.get("Mcp-Protocol-Version")
    # Only a session that negotiated a version must keep to one; a session-less probe such as the SDK's
    # `server/discover` (sent with a newer version) gets a JSON-RPC -32601 and falls back to initialize.
    if version and version not in SUPPORTED_VERSIONS and request.headers.get("Mcp-Session-Id"):
        raise BadRequest(f"unsupported Mcp-Protocol-Version '{version}'; supported: {', '.join(SUPPORTED_VERSIONS)}",
                         code="unsupported_protocol_version")
    try:
        payload = parse_json(await read_body())
    except BadRequest as exc:
        return _json(_rpc_error(None, PARSE_ERROR, f"parse error: {exc.message}"), 400)
    network_id = networks.single_network(hub(), principal, request.args.get("network_id") or None)
    session = _session_for(principal)
    principal = session_principal(hub(), principal, network_id, session.session_id is not None, session.alias)
    headers: dict[str, str] = {}
    if isinstance(payload, list):
        return await _post_batch(payload, principal, network_id, session, headers)
    answer = await _dispatch_noted(payload, principal, network_id, session, headers)
    if answer is None:
        return Response("", status=202)
    return _json(answer, 200, headers)


async def _post_batch(payload: list[Any], principal: Principal, network_id: str, session: McpSession,
                      headers: dict[str, str]) -> Response:
    """A JSON-RPC batch, within the bounds of mcp/batch.py."""
    if not payload:
        return _json(_rpc_error(None, INVALID_REQUEST, "invalid request: empty batch"), 400)
    settings = hub().settings
    version = session.protocol_version if session.session_id else (
        request.headers.get("Mcp-Protocol-Version") or DEFAULT_VERSION)
    refusal = batch_refusal(version, len(payload), settings.mcp_max_batch)
    if refusal:
        return _json(_rpc_error(None, INVALID_REQUEST, refusal), 400)
    pieces = await run_batch(payload, lambda m: _dispatch_noted(m, principal, network_id, session, headers),
                             lambda: limiter("token").check(principal.token_id), settings.mcp_max_response_bytes)
    return _json(b"[" + b",".join(pieces) + b"]", 200, headers) if pieces else Response("", status=202)


@bp.get("/mcp")
async def get_mcp() -> Response:
    """No server-initiated stream is offered on /mcp (agents are woken over /events/<alias>)."""
    return _json({"error": "method_not_allowed", "message": "GET /mcp opens no stream here; use POST /mcp, and "
                  "GET /events/<alias> for push"}, 405, {"Allow": "POST, DELETE"})


@bp.delete("/mcp")
async def delete_mcp() -> Response:
    """End an MCP session."""
    check_origin()
    principal = authenticate()
    sid = request.headers.get("Mcp-Session-Id")
    if not sid:
        raise BadRequest("Mcp-Session-Id header required to end a session", code="missing_session_id")
    session = _sessions().get(sid)
    if session is not None and session.token_id == principal.token_id:
        _sessions().pop(sid)
    return Response("", status=204)
