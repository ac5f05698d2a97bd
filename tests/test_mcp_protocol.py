"""POST/GET/DELETE /mcp with hand-made HTTP requests against a real server: JSON-RPC framing, the
Streamable HTTP rules (sessions, notifications, Origin, protocol-version header), auth, tool errors and
the identity rules (no impersonation)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import httpx
import trio
from conftest import create_token, make_settings, mcp_call, register, start_server

from commhub_lib.runtime.server import ServerHandle

SPEC_TOOLS = {"report_status", "whoami", "get_all_status", "send_task", "send_message", "send_reply", "broadcast",
              "get_inbox", "ack_inbox", "report_completion", "get_task", "list_tasks", "cancel_task",
              "get_completions", "list_nodes"}
_ids = itertools.count(1)


def rpc(method: str, params: Any = None, msg_id: Any = "auto") -> dict[str, Any]:
    """A JSON-RPC request (msg_id=None makes a notification)."""
    msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        msg["params"] = params
    if msg_id is not None:
        msg["id"] = next(_ids) if msg_id == "auto" else msg_id
    return msg


async def post(client: httpx.AsyncClient, token: str | None, payload: Any = None, *, content: bytes | None = None,
               session_id: str | None = None, **headers: str) -> httpx.Response:
    """POST /mcp with a JSON payload (or raw content) as an MCP client would."""
    hdrs = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    if token:
        hdrs["Authorization"] = f"Bearer {token}"
    if session_id:
        hdrs["Mcp-Session-Id"] = session_id
    hdrs.update({k.replace("_", "-"): v for k, v in headers.items()})
    body = content if content is not None else json.dumps(payload).encode()
    return await client.post("/mcp", content=body, headers=hdrs)


async def initialize(client: httpx.AsyncClient, token: str, version: str = "2025-06-18") -> tuple[str, dict]:
    """The handshake; returns the issued Mcp-Session-Id and the result."""
    r = await post(client, token, rpc("initialize", {"protocolVersion": version, "capabilities": {},
                                                     "clientInfo": {"name": "pytest", "version": "1"}}))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    sid = r.headers.get("Mcp-Session-Id")
    assert sid
    r2 = await post(client, token, rpc("notifications/initialized", msg_id=None), session_id=sid,
                    Mcp_Protocol_Version=r.json()["result"]["protocolVersion"])
    assert r2.status_code == 202, r2.text
    return sid, r.json()["result"]


async def call(client: httpx.AsyncClient, token: str, tool: str, arguments: dict[str, Any] | None = None,
               session_id: str | None = None) -> dict[str, Any]:
    """tools/call that must succeed; returns structuredContent."""
    result = await mcp_call(client, token, tool, arguments, session_id)
    assert result["isError"] is False, result
    return result["structuredContent"]


async def call_error(client: httpx.AsyncClient, token: str, tool: str, arguments: dict[str, Any] | None = None,
                     session_id: str | None = None) -> str:
    """tools/call that must fail as a tool error; returns the text the agent reads."""
    result = await mcp_call(client, token, tool, arguments, session_id)
    assert result["isError"] is True, result
    assert result["content"][0]["type"] == "text"
    assert result["structuredContent"]["error"]
    return result["content"][0]["text"]


def error_of(r: httpx.Response, code: int) -> dict[str, Any]:
    """The JSON-RPC error of a response, checked to have the code."""
    body = r.json()
    assert body["jsonrpc"] == "2.0" and "result" not in body, body
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]
    return body


# --- handshake and sessions -------------------------------------------------------------------

async def test_initialize_echoes_supported_versions(client: httpx.AsyncClient) -> None:
    account = await register(client)
    sids = set()
    for version in ("2025-03-26", "2025-06-18", "2025-11-25", "2024-11-05"):
        sid, result = await initialize(client, account.network_token, version)
        assert result["protocolVersion"] == version
        assert result["serverInfo"]["name"] == "commhub" and result["serverInfo"]["version"]
        assert "tools" in result["capabilities"]
        assert sid.startswith("mcp_")
        sids.add(sid)
    assert len(sids) == 4  # every handshake gets its own session


async def test_initialize_unknown_version_gets_newest(client: httpx.AsyncClient) -> None:
    account = await register(client)
    for version in ("1999-01-01", "2026-07-28", None, 20251125):
        params: dict[str, Any] = {"capabilities": {}, "clientInfo": {"name": "x", "version": "0"}}
        if version:
            params["protocolVersion"] = version
        r = await post(client, account.network_token, rpc("initialize", params))
        assert r.status_code == 200, (version, r.text)
        assert r.json()["result"]["protocolVersion"] == "2025-11-25", version


async def test_each_session_keeps_its_claimed_alias(client: httpx.AsyncClient) -> None:
    account = await register(client)
    token = account.network_token
    sid1, _ = await initialize(client, token)
    sid2, _ = await initialize(client, token)
    assert sid1 != sid2
    await call(client, token, "report_status", {"alias": "one"}, session_id=sid1)
    await call(client, token, "report_status", {"alias": "two"}, session_id=sid2)
    assert (await call(client, token, "whoami", session_id=sid1))["alias"] == "one"
    assert (await call(client, token, "whoami", session_id=sid2))["alias"] == "two"
    me = await call(client, token, "whoami", session_id=sid1)
    assert me["session_id"] == sid1 and me["network_id"] == account.network_id
    # Session-less calls (the reference's bare curl) fall back to the alias this token claimed last.
    assert (await call(client, token, "whoami"))["alias"] == "two"
    # A send on session 1 is from "one".
    sent = await call(client, token, "send_message", {"to": "two", "content": "hello"}, session_id=sid1)
    inbox = await call(client, token, "get_inbox", session_id=sid2)
    assert [(i["message_id"], i["from"]) for i in inbox["items"]] == [(sent["message_id"], "one")]


async def test_unknown_session_id_is_not_404(client: httpx.AsyncClient) -> None:
    account = await register(client)
    token = account.network_token
    await call(client, token, "report_status", {"alias": "restarted"})
    for stale in ("mcp_this-id-was-never-issued", "mcp_from-before-a-restart"):
        r = await post(client, token, rpc("tools/call", {"name": "whoami", "arguments": {}}), session_id=stale)
        assert r.status_code == 200, r.text
        assert r.json()["result"]["structuredContent"]["alias"] == "restarted"
    r = await post(client, token, rpc("ping"), session_id="mcp_unknown")
    assert r.status_code == 200 and r.json()["result"] == {}


async def test_foreign_session_id_does_not_lend_its_alias(client: httpx.AsyncClient) -> None:
    account = await register(client)
    other = await create_token(client, account, name="other")
    sid, _ = await initialize(client, account.network_token)
    await call(client, account.network_token, "report_status", {"alias": "owner-agent"}, session_id=sid)
    # Another token presenting that session id is not "owner-agent".
    text = await call_error(client, other, "send_message", {"to": "owner-agent", "content": "x"}, session_id=sid)
    assert "report_status" in text
    assert (await call(client, other, "whoami", session_id=sid))["alias"] is None


async def test_delete_ends_session(client: httpx.AsyncClient, server: ServerHandle) -> None:
    account = await register(client)
    sid, _ = await initialize(client, account.network_token)
    assert sid in server.hub.mcp_sessions
    r = await client.delete("/mcp", headers={**account.net_auth, "Mcp-Session-Id": sid})
    assert 200 <= r.status_code < 300, r.text
    assert sid not in server.hub.mcp_sessions
    # The ended id stays ended: 404, as the MCP transport says of a terminated session (tests/test_harden_streams.py).
    r = await post(client, account.network_token, rpc("ping"), session_id=sid)
    assert r.status_code == 404 and r.json()["error"]["data"]["error"] == "session_ended"


async def test_get_mcp_without_event_stream_accept_is_405_json(client: httpx.AsyncClient) -> None:
    # GET /mcp with Accept: text/event-stream now opens the session's push stream (tests/test_wake_mcp.py).
    account = await register(client)
    r = await client.get("/mcp", headers={**account.net_auth, "Accept": "application/json"})
    assert r.status_code == 405
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["error"] and r.json()["message"]
    assert "POST" in r.headers.get("Allow", "")


# --- JSON-RPC framing -------------------------------------------------------------------------

async def test_notifications_get_202_without_body(client: httpx.AsyncClient) -> None:
    account = await register(client)
    for method in ("notifications/initialized", "notifications/cancelled", "notifications/whatever"):
        r = await post(client, account.network_token, rpc(method, {"requestId": 1}, msg_id=None))
        assert r.status_code == 202, (method, r.text)
        assert r.content == b""
    batch = [rpc("notifications/initialized", msg_id=None), rpc("notifications/progress", msg_id=None)]
    r = await post(client, account.network_token, batch)
    assert r.status_code == 202 and r.content == b""


async def test_ping_and_batch(client: httpx.AsyncClient) -> None:
    account = await register(client)
    r = await post(client, account.network_token, rpc("ping", msg_id="p-1"))
    assert r.status_code == 200
    assert r.json() == {"jsonrpc": "2.0", "id": "p-1", "result": {}}
    r = await post(client, account.network_token, [rpc("ping", msg_id=7), rpc("notifications/initialized",
                                                                              msg_id=None), rpc("nope", msg_id=8)])
    assert r.status_code == 200
    answers = {a["id"]: a for a in r.json()}
    assert set(answers) == {7, 8}
    assert answers[7]["result"] == {} and answers[8]["error"]["code"] == -32601


async def test_tools_list_has_every_spec_tool(client: httpx.AsyncClient) -> None:
    account = await register(client)
    r = await post(client, account.network_token, rpc("tools/list", {}))
    assert r.status_code == 200
    tools = {t["name"]: t for t in r.json()["result"]["tools"]}
    assert SPEC_TOOLS <= set(tools), SPEC_TOOLS - set(tools)
    for name, tool in tools.items():
        assert tool["inputSchema"]["type"] == "object", name
        assert isinstance(tool["inputSchema"]["properties"], dict), name
        assert tool["description"], name
    assert "alias" in tools["report_status"]["inputSchema"]["properties"]
    assert "wait_seconds" in tools["get_inbox"]["inputSchema"]["properties"]
    for name in ("send_task", "send_message", "send_reply", "broadcast", "report_completion", "ack_inbox"):
        # nothing lets a caller name the sender
        assert not {"from", "sender", "from_name"} & set(tools[name]["inputSchema"]["properties"]), name
    # Params may be omitted entirely.
    r = await post(client, account.network_token, rpc("tools/list"))
    assert len(r.json()["result"]["tools"]) == len(tools)


async def test_unknown_method_is_32601(client: httpx.AsyncClient) -> None:
    account = await register(client)
    for method in ("server/discover", "resources/list", "prompts/list", "no/such/method"):
        r = await post(client, account.network_token, rpc(method, {}, msg_id=41))
        body = error_of(r, -32601)
        assert body["id"] == 41 and method in body["error"]["message"]


async def test_parse_error_is_32700(client: httpx.AsyncClient) -> None:
    account = await register(client)
    for raw in (b'{"jsonrpc": "2.0", "method": "ping", "id": 1', b"not json at all", b"\xff\xfe"):
        r = await post(client, account.network_token, content=raw)
        body = error_of(r, -32700)
        assert body["id"] is None
        assert r.headers["content-type"].startswith("application/json")


INVALID_REQUESTS: list[Any] = [
    {"method": "ping", "id": 1},  # missing jsonrpc
    {"jsonrpc": "1.0", "method": "ping", "id": 1},
    {"jsonrpc": "2.0", "method": "ping", "id": {"a": 1}},  # bad id type
    {"jsonrpc": "2.0", "method": "ping", "id": [1]},
    {"jsonrpc": "2.0", "method": "ping", "id": True},
    {"jsonrpc": "2.0", "method": "ping", "id": 1.5},
    {"jsonrpc": "2.0", "method": 5, "id": 1},
    {"jsonrpc": "2.0", "id": 1},  # no method
    42, "ping", None, [],  # not an object (or an empty batch)
]


async def test_invalid_request_is_32600(client: httpx.AsyncClient) -> None:
    account = await register(client)
    for payload in INVALID_REQUESTS:
        r = await post(client, account.network_token, payload)
        body = error_of(r, -32600)
        expected_id = 1 if isinstance(payload, dict) and payload.get("id") == 1 else None
        assert body["id"] == expected_id, (payload, body)


async def test_invalid_member_of_batch(client: httpx.AsyncClient) -> None:
    account = await register(client)
    r = await post(client, account.network_token, [42, rpc("ping", msg_id=3)])
    assert r.status_code == 200
    answers = r.json()
    assert len(answers) == 2
    assert answers[0]["error"]["code"] == -32600 and answers[0]["id"] is None
    assert answers[1] == {"jsonrpc": "2.0", "id": 3, "result": {}}


BAD_TOOL_CALL_PARAMS: list[Any] = [
    {"name": "no_such_tool", "arguments": {}},
    {"arguments": {}},  # no name
    {"name": 3},
    {"name": "whoami", "arguments": [1, 2]},
    {"name": "whoami", "arguments": "x"},
    [1, 2],  # params not an object
    "whoami",
]


async def test_bad_params_is_32602(client: httpx.AsyncClient) -> None:
    account = await register(client)
    for params in BAD_TOOL_CALL_PARAMS:
        r = await post(client, account.network_token, rpc("tools/call", params, msg_id=9))
        body = error_of(r, -32602)
        assert body["id"] == 9, params
        if isinstance(params, dict) and params.get("name") == "no_such_tool":
            assert "no_such_tool" in body["error"]["message"]
    error_of(await post(client, account.network_token, rpc("initialize", [1])), -32602)


# --- tools/call results ---------------------------------------------------------------------------

async def test_tool_result_has_structured_content_and_text(client: httpx.AsyncClient) -> None:
    account = await register(client)
    result = await mcp_call(client, account.network_token, "report_status", {"alias": "worker-1", "status": "idle"})
    assert result["isError"] is False
    assert [c["type"] for c in result["content"]] == ["text"]
    structured = result["structuredContent"]
    assert json.loads(result["content"][0]["text"]) == structured
    assert structured["alias"] == "worker-1" and structured["inbox_count"] == 0


async def test_send_before_report_status_says_what_to_do(client: httpx.AsyncClient) -> None:
    account = await register(client)
    for tool, args in (("send_task", {"to": "x", "content": "hi"}), ("send_message", {"to": "x", "content": "hi"}),
                       ("get_inbox", {}), ("broadcast", {"content": "hi"})):
        text = await call_error(client, account.network_token, tool, args)
        assert "report_status" in text, (tool, text)
    # report_status without an alias on the first call says to give one.
    text = await call_error(client, account.network_token, "report_status", {"status": "idle"})
    assert "alias" in text


async def test_send_to_never_seen_alias_says_so(client: httpx.AsyncClient) -> None:
    account = await register(client)
    await call(client, account.network_token, "report_status", {"alias": "sender"})
    for tool in ("send_task", "send_message"):
        text = await call_error(client, account.network_token, tool, {"to": "nobody-here", "content": "hi"})
        assert "nobody-here" in text and "ever connected" in text
    assert (await call(client, account.network_token, "list_tasks"))["tasks"] == []


async def test_reply_to_unknown_or_foreign_task_is_an_error(client: httpx.AsyncClient) -> None:
    account = await register(client)
    tok_b = await create_token(client, account, name="b")
    tok_c = await create_token(client, account, name="c")
    await call(client, account.network_token, "report_status", {"alias": "a"})
    await call(client, tok_b, "report_status", {"alias": "b"})
    await call(client, tok_c, "report_status", {"alias": "c"})
    text = await call_error(client, tok_b, "send_reply", {"task_id": "no-such-task", "content": "x"})
    assert "not found" in text
    text = await call_error(client, tok_b, "send_reply", {"message_id": "msg_nope", "content": "x"})
    assert "not found" in text
    text = await call_error(client, tok_b, "send_reply", {"content": "x"})
    assert "message_id" in text
    task = await call(client, account.network_token, "send_task", {"to": "b", "content": "do it"})
    text = await call_error(client, tok_c, "send_reply", {"task_id": task["task_id"], "content": "mine now"})
    assert "recipient" in text
    # Another network's task is unknown here.
    other = await register(client)
    await call(client, other.network_token, "report_status", {"alias": "b"})
    text = await call_error(client, other.network_token, "send_reply", {"task_id": task["task_id"], "content": "x"})
    assert "not found" in text
    assert (await call(client, account.network_token, "get_task", {"task_id": task["task_id"]}))["task"][
        "status"] == "delivered"


async def test_ack_inbox_starts_the_task(client: httpx.AsyncClient) -> None:
    account = await register(client)
    tok_b = await create_token(client, account, name="b")
    await call(client, account.network_token, "report_status", {"alias": "boss"})
    await call(client, tok_b, "report_status", {"alias": "crew"})
    task = await call(client, account.network_token, "send_task", {"to": "crew", "content": "go"})
    assert task["status"] == "delivered"
    acked = await call(client, tok_b, "ack_inbox", {"message_ids": [task["message_id"], "msg_unknown"]})
    assert acked["acked"] == [task["message_id"]] and acked["not_acked"] == ["msg_unknown"]
    detail = await call(client, tok_b, "get_task", {"task_id": task["task_id"]})
    assert detail["task"]["status"] == "running"
    assert [e["event"] for e in detail["events"]] == ["delivered", "running"]
    assert "ids" in await call_error(client, tok_b, "ack_inbox", {})


BAD_ARGUMENTS: list[tuple[str, dict[str, Any], str]] = [
    ("send_task", {"to": "x", "content": "hi", "priority": "asap"}, "priority"),
    ("send_task", {"content": "hi"}, "to"),
    ("send_task", {"to": "x", "content": ""}, "content"),
    ("send_task", {"to": "bad alias!", "content": "hi"}, "to"),
    ("report_status", {"alias": "a", "status": "sleeping"}, "status"),
    ("get_inbox", {"wait_seconds": 500}, "wait_seconds"),
    ("get_inbox", {"limit": "many"}, "limit"),
    ("send_reply", {"task_id": "t", "content": "x", "status": "finished"}, "status"),
    ("whoami", {"verbose": True}, "verbose"),
]


async def test_argument_validation_names_the_field(client: httpx.AsyncClient) -> None:
    account = await register(client)
    await call(client, account.network_token, "report_status", {"alias": "validator"})
    for tool, args, field in BAD_ARGUMENTS:
        text = await call_error(client, account.network_token, tool, args)
        assert f"{field}:" in text and tool in text, (tool, args, text)


# --- HTTP layer: auth, Origin, protocol-version header ----------------------------------------------

async def test_reference_curl_example_works_as_written(client: httpx.AsyncClient) -> None:
    account = await register(client)
    await call(client, account.network_token, "report_status", {"alias": "coder-1", "agent": "agent-node:codex"})
    body = """{
    "jsonrpc": "2.0",
    "method": "tools/call",
    "params": {
      "name": "get_all_status",
      "arguments": {}
    },
    "id": 1
  }"""
    r = await client.post("/mcp", content=body.encode(), headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {account.network_token}", "Accept": "*/*"})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["jsonrpc"] == "2.0" and answer["id"] == 1
    sessions = answer["result"]["structuredContent"]["sessions"]
    assert [(s["alias"], s["agent"], s["status"]) for s in sessions] == [("coder-1", "agent-node:codex", "idle")]
    for key in ("resume_id", "alias", "status", "agent", "model", "task", "progress", "last_seen_at"):
        assert key in sessions[0]


async def test_user_token_and_network_token_both_work(client: httpx.AsyncClient) -> None:
    account = await register(client)
    for token, kind in ((account.token, "user"), (account.network_token, "network")):
        me = await call(client, token, "whoami")
        assert me["token_kind"] == kind and me["network_id"] == account.network_id
        assert me["user"] == account.username
    await call(client, account.token, "report_status", {"alias": "human"})
    await call(client, account.network_token, "report_status", {"alias": "robot"})
    sent = await call(client, account.token, "send_task", {"to": "robot", "content": "from a person"})
    inbox = await call(client, account.network_token, "get_inbox")
    assert [(i["task_id"], i["from"]) for i in inbox["items"]] == [(sent["task_id"], "human")]


async def test_no_token_or_bad_token_is_401(client: httpx.AsyncClient) -> None:
    for headers in ({}, {"Authorization": "Bearer ntok_not-a-real-token"}, {"Authorization": "Basic abc"}):
        r = await client.post("/mcp", json=rpc("ping"), headers=headers)
        assert r.status_code == 401, r.text
        assert r.json()["error"] and r.json()["message"]


async def test_revoked_token_is_401(client: httpx.AsyncClient) -> None:
    account = await register(client)
    r = await client.post("/api/tokens", json={"name": "temp", "network_id": account.network_id},
                          headers=account.auth)
    assert r.status_code == 200, r.text
    token_id, secret = r.json()["token_id"], r.json()["token"]
    sid, _ = await initialize(client, secret)
    await call(client, secret, "report_status", {"alias": "temp"}, session_id=sid)
    r = await client.delete(f"/api/tokens/{token_id}", headers=account.auth)
    assert r.status_code == 200, r.text
    r = await post(client, secret, rpc("tools/call", {"name": "whoami", "arguments": {}}), session_id=sid)
    assert r.status_code == 401, r.text
    assert r.json()["error"]
    r = await post(client, secret, rpc("initialize", {"protocolVersion": "2025-11-25"}))
    assert r.status_code == 401


async def test_origin_validation(client: httpx.AsyncClient) -> None:
    account = await register(client)
    for origin, status in (("http://evil.example", 403), ("https://localhost.evil.example", 403), ("null", 403),
                           ("http://localhost:6274", 200), ("http://127.0.0.1:9200", 200), (None, 200)):
        headers = {"Origin": origin} if origin else {}
        r = await post(client, account.network_token, rpc("ping"), **headers)
        assert r.status_code == status, (origin, r.text)
        assert r.headers["content-type"].startswith("application/json")
        if status == 403:
            assert r.json()["error"] and origin in r.json()["message"]
        else:
            assert r.json()["result"] == {}


async def test_evil_origin_cannot_delete_a_session(client: httpx.AsyncClient, server: ServerHandle) -> None:
    account = await register(client)
    sid, _ = await initialize(client, account.network_token)
    r = await client.delete("/mcp", headers={**account.net_auth, "Mcp-Session-Id": sid,
                                             "Origin": "http://evil.example"})
    assert r.status_code == 403
    assert sid in server.hub.mcp_sessions


async def test_protocol_version_header(client: httpx.AsyncClient) -> None:
    account = await register(client)
    sid, _ = await initialize(client, account.network_token)
    r = await post(client, account.network_token, rpc("ping"), session_id=sid, Mcp_Protocol_Version="1999-01-01")
    assert r.status_code == 400
    assert r.json()["error"] and "1999-01-01" in r.json()["message"]
    # A session-less request on 2026-07-28 must carry its envelope in params._meta (tests/test_mcp_versions.py).
    r = await post(client, account.network_token, rpc("server/discover"), Mcp_Protocol_Version="2026-07-28")
    assert r.status_code == 400 and r.json()["error"]["code"] == -32602
    for version in ("2025-03-26", "2025-06-18", "2025-11-25"):
        r = await post(client, account.network_token, rpc("ping"), Mcp_Protocol_Version=version)
        assert r.status_code == 200, (version, r.text)


# --- identity: nobody can act as someone else ----------------------------------------------------

async def test_bound_token_cannot_act_as_another_alias(client: httpx.AsyncClient) -> None:
    account = await register(client)
    bound = await create_token(client, account, name="bound", alias="agent-a")
    await call(client, account.network_token, "report_status", {"alias": "agent-b"})
    text = await call_error(client, bound, "report_status", {"alias": "agent-b"})
    assert "agent-a" in text and "bound" in text
    # Without report_status it already is agent-a; with its own alias it may report.
    assert (await call(client, bound, "whoami"))["alias"] == "agent-a"
    assert (await call(client, bound, "report_status", {"alias": "agent-a"}))["alias"] == "agent-a"
    assert (await call(client, bound, "report_status", {"status": "working"}))["alias"] == "agent-a"
    sid, _ = await initialize(client, bound)
    assert "bound" in await call_error(client, bound, "report_status", {"alias": "agent-c"}, session_id=sid)
    sent = await call(client, bound, "send_message", {"to": "agent-b", "content": "hi"}, session_id=sid)
    items = (await call(client, account.network_token, "get_inbox"))["items"]
    assert [(i["message_id"], i["from"]) for i in items] == [(sent["message_id"], "agent-a")]
    # agent-b still belongs to its holder.
    status = {s["alias"] for s in (await call(client, bound, "get_all_status"))["sessions"]}
    assert status == {"agent-a", "agent-b"}


async def test_alias_held_by_another_online_token_cannot_be_claimed(client: httpx.AsyncClient) -> None:
    account = await register(client)
    intruder = await create_token(client, account, name="intruder")
    await call(client, account.network_token, "report_status", {"alias": "holder"})
    text = await call_error(client, intruder, "report_status", {"alias": "holder"})
    assert "holder" in text and "held" in text
    # The intruder never became "holder": it still has no identity.
    assert (await call(client, intruder, "whoami"))["alias"] is None
    assert "report_status" in await call_error(client, intruder, "send_message", {"to": "holder", "content": "x"})
    # A user of another network may use the same alias in its own network.
    other = await register(client)
    assert (await call(client, other.network_token, "report_status", {"alias": "holder"}))["alias"] == "holder"


async def test_no_argument_sets_the_sender(client: httpx.AsyncClient) -> None:
    account = await register(client)
    victim_token = await create_token(client, account, name="victim")
    await call(client, victim_token, "report_status", {"alias": "victim"})
    await call(client, account.network_token, "report_status", {"alias": "mallory"})
    for field in ("from", "sender", "from_name", "alias"):
        for tool, args in (("send_task", {"to": "victim", "content": "x"}),
                           ("send_message", {"to": "victim", "content": "x"}),
                           ("broadcast", {"content": "x"}),
                           ("send_reply", {"message_id": "msg_x", "content": "x"})):
            text = await call_error(client, account.network_token, tool, {**args, field: "victim"})
            assert f"{field}: unknown field" in text, (tool, field, text)
    assert (await call(client, victim_token, "get_inbox"))["items"] == []
    sent = await call(client, account.network_token, "send_task", {"to": "victim", "content": "real"})
    items = (await call(client, victim_token, "get_inbox"))["items"]
    assert [(i["task_id"], i["from"]) for i in items] == [(sent["task_id"], "mallory")]
    task = await call(client, victim_token, "get_task", {"task_id": sent["task_id"]})
    assert task["task"]["from_name"] == "mallory"


async def test_idempotency_key_creates_one_task(client: httpx.AsyncClient) -> None:
    account = await register(client)
    worker = await create_token(client, account, name="w")
    await call(client, account.network_token, "report_status", {"alias": "boss"})
    await call(client, worker, "report_status", {"alias": "worker"})
    args = {"to": "worker", "content": "build it", "priority": "high", "idempotency_key": "build-42"}
    first = await call(client, account.network_token, "send_task", args)
    second = await call(client, account.network_token, "send_task", args)
    assert first["duplicate"] is False and second["duplicate"] is True
    assert second["task_id"] == first["task_id"] and second["message_id"] == first["message_id"]
    tasks = (await call(client, account.network_token, "list_tasks"))["tasks"]
    assert [t["task_id"] for t in tasks] == [first["task_id"]]
    assert len((await call(client, worker, "get_inbox"))["items"]) == 1
    other = await call(client, account.network_token, "send_task", {**args, "idempotency_key": "build-43"})
    assert other["task_id"] != first["task_id"] and other["duplicate"] is False


async def test_offline_alias_is_taken_over_only_after_its_token_is_revoked(nursery: trio.Nursery,
                                                                          tmp_path: Path) -> None:
    handle = await start_server(nursery, make_settings(tmp_path, presence_timeout_seconds=0.3, sweep_seconds=0.05))
    try:
        async with httpx.AsyncClient(base_url=handle.url, timeout=30) as client:
            account = await register(client)
            newcomer = await create_token(client, account, name="newcomer")
            await call(client, account.network_token, "report_status", {"alias": "seat"})
            assert "held" in await call_error(client, newcomer, "report_status", {"alias": "seat"})
            with trio.fail_after(10):  # the sweeper marks it offline after the presence timeout
                while True:
                    r = await client.get("/api/status", headers=account.auth)
                    if [s["status"] for s in r.json()["sessions"]] == ["offline"]:
                        break
                    await trio.sleep(0.05)
            # Offline is not free: the alias stays with the token that claimed it.
            assert "held" in await call_error(client, newcomer, "report_status", {"alias": "seat"})
            holder_id = next(t["token_id"] for t in (await client.get("/api/tokens", headers=account.auth)).json()[
                "tokens"] if t["last_alias"] == "seat")
            r = await client.delete(f"/api/tokens/{holder_id}", headers=account.auth)
            assert r.status_code == 200 and r.json()["aliases_freed"] == ["seat"], r.text
            assert (await call(client, newcomer, "report_status", {"alias": "seat"}))["alias"] == "seat"
            assert (await call(client, newcomer, "whoami"))["alias"] == "seat"
    finally:
        handle.shutdown()


async def test_user_token_picks_network_with_query(client: httpx.AsyncClient) -> None:
    account = await register(client)
    r = await client.post("/api/networks", json={"name": "prod"}, headers=account.auth)
    assert r.status_code == 200, r.text
    prod = r.json()["network_id"]
    r = await client.post(f"/mcp?network_id={prod}", headers=account.auth,
                          json=rpc("tools/call", {"name": "whoami", "arguments": {}}))
    assert r.json()["result"]["structuredContent"]["network_id"] == prod
    # A network token cannot reach another network, nor can a stranger's user token.
    r = await client.post(f"/mcp?network_id={prod}", headers=account.net_auth, json=rpc("ping"))
    assert r.status_code in (403, 404) and r.json()["error"]
    stranger = await register(client)
    r = await client.post(f"/mcp?network_id={prod}", headers=stranger.auth, json=rpc("ping"))
    assert r.status_code in (403, 404) and r.json()["error"]


async def test_oversized_body_is_413_json(client: httpx.AsyncClient) -> None:
    account = await register(client)
    big = {"to": "x", "content": "a" * (1024 * 1024 + 10)}
    r = await post(client, account.network_token, rpc("tools/call", {"name": "send_task", "arguments": big}))
    assert r.status_code == 413
    assert r.json()["error"] and r.json()["message"]
    assert r.headers.get("connection") == "close"  # the unread body makes the connection unusable
    with trio.fail_after(10):  # the next request (on a fresh connection) is answered
        # Content over the field cap but under the body cap is a tool argument error naming the field.
        await call(client, account.network_token, "report_status", {"alias": "big"})
        text = await call_error(client, account.network_token, "send_message", {"to": "big", "content": "a" * 70000})
    assert "content:" in text


async def test_reply_to_a_plain_message(client: httpx.AsyncClient) -> None:
    account = await register(client)
    tok_b = await create_token(client, account, name="b")
    await call(client, account.network_token, "report_status", {"alias": "asker"})
    await call(client, tok_b, "report_status", {"alias": "answerer"})
    question = await call(client, account.network_token, "send_message", {"to": "answerer", "content": "lunch?"})
    # Only its recipient may answer it.
    assert "recipient" in await call_error(client, account.network_token, "send_reply",
                                           {"message_id": question["message_id"], "content": "yes"})
    reply = await call(client, tok_b, "send_reply", {"message_id": question["message_id"], "content": "at noon"})
    assert reply["to"] == "asker" and reply["in_reply_to"] == question["message_id"] and reply["task_id"] is None
    items = (await call(client, account.network_token, "get_inbox"))["items"]
    assert [(i["kind"], i["from"], i["in_reply_to"], i["content"]) for i in items] == [
        ("reply", "answerer", question["message_id"], "at noon")]


async def test_session_ids_from_before_a_restart_still_work(nursery: trio.Nursery, tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    async with trio.open_nursery() as first:
        handle = await start_server(first, settings)
        async with httpx.AsyncClient(base_url=handle.url, timeout=30) as client:
            account = await register(client)
            sid, _ = await initialize(client, account.network_token)
            await call(client, account.network_token, "report_status", {"alias": "survivor"}, session_id=sid)
        handle.shutdown()
    handle = await start_server(nursery, settings)
    try:
        assert sid not in handle.hub.mcp_sessions  # sessions live in memory: the restart forgot it
        async with httpx.AsyncClient(base_url=handle.url, timeout=30) as client:
            r = await post(client, account.network_token, rpc("tools/call", {"name": "whoami", "arguments": {}}),
                           session_id=sid, Mcp_Protocol_Version="2025-11-25")
            assert r.status_code == 200, r.text
            assert r.json()["result"]["structuredContent"]["alias"] == "survivor"
    finally:
        handle.shutdown()


async def test_allowed_origins_setting(nursery: trio.Nursery, tmp_path: Path) -> None:
    handle = await start_server(nursery, make_settings(tmp_path, allowed_origins="https://inspector.example.com/"))
    try:
        async with httpx.AsyncClient(base_url=handle.url, timeout=30) as client:
            account = await register(client)
            for origin, status in (("https://inspector.example.com", 200), ("https://other.example.com", 403),
                                   ("http://inspector.example.com", 403), ("http://localhost:6274", 200)):
                r = await post(client, account.network_token, rpc("ping"), Origin=origin)
                assert r.status_code == status, (origin, r.text)
    finally:
        handle.shutdown()


async def test_long_poll_ends_promptly_at_shutdown(tmp_path: Path) -> None:
    answer: dict[str, Any] = {}
    start = trio.current_time()
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            handle = await start_server(nursery, make_settings(tmp_path))
            async with httpx.AsyncClient(base_url=handle.url, timeout=60) as client:
                account = await register(client)
                await call(client, account.network_token, "report_status", {"alias": "sleeper"})

                async def wait_inbox() -> None:
                    answer["result"] = await call(client, account.network_token, "get_inbox", {"wait_seconds": 40})

                async with trio.open_nursery() as inner:
                    inner.start_soon(wait_inbox)
                    deadline = trio.current_time() + 5
                    while handle.hub.broker.subscriber_count() == 0:
                        assert trio.current_time() < deadline, "the long-poll never subscribed"
                        await trio.sleep(0.01)
                    handle.shutdown()
    # The waiter got an (empty) answer and the server stopped, long before wait_seconds.
    assert answer["result"]["items"] == []
    assert trio.current_time() - start < 5
