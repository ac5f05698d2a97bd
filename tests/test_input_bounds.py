"""Bad input gets a clear 4xx, never a 500: huge query integers, deeply nested JSON, integers past the
4,300-digit limit, lone surrogates, booleans and strings where numbers belong; and /api/nodes in one pass."""

from __future__ import annotations

import json

import httpx
from conftest import mcp_call, register
from test_rest_auth import assert_error

from commhub_lib.api.common import MAX_JSON_DEPTH, json_bytes, parse_json
from commhub_lib.errors import BadRequest
from commhub_lib.runtime.server import ServerHandle
from commhub_lib.store import sessions as session_store

PAGED = ("/api/tasks", "/api/messages", "/api/completions", "/api/task_events", "/api/users", "/api/audit-log")
HUGE = (str(2**63), str(2**64), "9" * 5000, "-1", "1e3", "3_000", " 3", "+3", "0x10", "٣", "1.5", "abc")


def _mcp_headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream"}


async def test_offset_and_limit_out_of_range_are_400_naming_the_field(client: httpx.AsyncClient) -> None:
    admin = await register(client)  # the first user is the system admin: /api/users answers it
    for path in PAGED:
        for name in ("offset", "limit"):
            for value in HUGE:
                r = await client.get(path, params={name: value}, headers=admin.auth)
                assert_error(r, 400, "validation_error", mentions=name)
        r = await client.get(path, params={"offset": str(2**31 - 1), "limit": "5"}, headers=admin.auth)
        assert r.status_code == 200, (path, r.text)  # the largest accepted offset is just an empty page


def _nested(depth: int) -> bytes:
    return b'{"name": ' + b"[" * depth + b"]" * depth + b"}"


async def test_deeply_nested_json_is_400_on_rest(client: httpx.AsyncClient) -> None:
    acct = await register(client)
    headers = {**acct.auth, "Content-Type": "application/json"}
    for depth in (MAX_JSON_DEPTH + 1, 5000, 100_000):
        r = await client.post("/api/networks", content=_nested(depth), headers=headers)
        assert_error(r, 400, "invalid_json", mentions="nested")
    # Nesting within the limit parses (and then fails validation on the field, as any wrong type does).
    r = await client.post("/api/networks", content=_nested(MAX_JSON_DEPTH - 1), headers=headers)
    assert_error(r, 400, "validation_error", mentions="name")


async def test_deeply_nested_json_is_a_parse_error_on_mcp(client: httpx.AsyncClient) -> None:
    acct = await register(client)
    for body in (b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": ' + b"[" * 5000 + b"]" * 5000 + b"}",
                 b"[" * 100_000 + b"]" * 100_000):
        r = await client.post("/mcp", content=body, headers=_mcp_headers(acct.network_token))
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == -32700 and "nested" in r.json()["error"]["message"]


async def test_integers_past_the_digit_limit_are_400(client: httpx.AsyncClient) -> None:
    acct = await register(client)
    big = b"9" * 5000
    r = await client.post(f"/api/networks/{acct.network_id}/invite", content=b'{"max_uses": ' + big + b"}",
                          headers={**acct.auth, "Content-Type": "application/json"})
    assert_error(r, 400, "invalid_json", mentions="digits")
    r = await client.post("/mcp", content=b'{"jsonrpc": "2.0", "method": "ping", "id": ' + big + b"}",
                          headers=_mcp_headers(acct.network_token))
    assert r.status_code == 400 and r.json()["error"]["code"] == -32700, r.text


async def test_lone_surrogates_get_a_clean_error(client: httpx.AsyncClient) -> None:
    acct = await register(client)
    for body in (b'{"jsonrpc": "2.0", "id": 1, "method": "\\ud800"}',
                 b'{"jsonrpc": "2.0", "id": "\\udfff", "method": "ping"}',
                 b'[{"jsonrpc": "2.0", "id": "x\\ud800", "method": "ping"}]',
                 b'{"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "report_status",'
                 b' "arguments": {"alias": "a", "task": "\\udc00"}}}'):
        r = await client.post("/mcp", content=body, headers=_mcp_headers(acct.network_token))
        assert r.status_code == 400, r.text
        assert r.json() == {"jsonrpc": "2.0", "id": None, "error": {
            "code": -32700, "message": r.json()["error"]["message"]}}
        assert "surrogate" in r.json()["error"]["message"]
    r = await client.post("/api/networks", content=b'{"name": "a\\ud800b"}',
                          headers={**acct.auth, "Content-Type": "application/json"})
    assert_error(r, 400, "invalid_json", mentions="surrogate")
    # A proper surrogate pair is an ordinary character and is kept.
    r = await client.post("/api/networks", content=b'{"name": "rocket \\ud83d\\ude80"}',
                          headers={**acct.auth, "Content-Type": "application/json"})
    assert r.status_code == 200 and r.json()["network_name"] == "rocket \U0001f680", r.text


async def test_numbers_refuse_booleans_and_strings_in_bodies(client: httpx.AsyncClient) -> None:
    acct = await register(client)
    for field, value in (("max_uses", True), ("max_uses", "3"), ("max_uses", 2.0), ("expires_in_seconds", "60"),
                         ("expires_in_seconds", False)):
        r = await client.post(f"/api/networks/{acct.network_id}/invite", json={field: value}, headers=acct.auth)
        assert_error(r, 400, "validation_error", mentions=field)
    r = await client.put(f"/api/networks/{acct.network_id}", json={"max_members": True}, headers=acct.auth)
    assert_error(r, 400, "validation_error", mentions="max_members")
    r = await client.post(f"/api/networks/{acct.network_id}/invite", json={"max_uses": 3}, headers=acct.auth)
    assert r.status_code == 200 and r.json()["max_uses"] == 3, r.text


async def test_numbers_refuse_booleans_and_strings_in_tool_arguments(client: httpx.AsyncClient) -> None:
    acct = await register(client)
    await mcp_call(client, acct.network_token, "report_status", {"alias": "strict"})
    for tool, args, field in (("get_inbox", {"limit": True}, "limit"), ("get_inbox", {"limit": "3"}, "limit"),
                              ("get_inbox", {"wait_seconds": True}, "wait_seconds"),
                              ("get_inbox", {"wait_seconds": "1"}, "wait_seconds"),
                              ("list_tasks", {"limit": "10"}, "limit"), ("get_completions", {"limit": False}, "limit")):
        result = await mcp_call(client, acct.network_token, tool, args)
        assert result["isError"] is True, (tool, args, result)
        assert result["structuredContent"]["error"] == "invalid_arguments"
        assert field in result["structuredContent"]["message"], result
    result = await mcp_call(client, acct.network_token, "get_inbox", {"limit": 3, "wait_seconds": 0})
    assert result["isError"] is False, result


async def test_nodes_listing_counts_sessions_in_one_pass(client: httpx.AsyncClient, server: ServerHandle) -> None:
    acct = await register(client)
    for alias, host in (("a1", "box-a"), ("a2", "box-a"), ("b1", "box-b")):
        await mcp_call(client, acct.network_token, "report_status", {"alias": alias, "node": host})
    await mcp_call(client, acct.network_token, "report_status", {"alias": "lonely"})  # no node
    r = await client.get("/api/nodes", headers=acct.auth)
    assert r.status_code == 200, r.text
    counts = {n["hostname"]: (n["sessions"], n["online_sessions"]) for n in r.json()["nodes"]}
    assert counts == {"box-a": (2, 2), "box-b": (1, 1)}
    # The plan has no per-node (correlated) scan of the sessions: the cost is one pass, not nodes x sessions.
    db = server.hub.db
    trace: list[tuple[str, tuple]] = []
    db.con.exec_trace = lambda _cursor, sql, bindings: trace.append((sql, bindings)) or True
    try:
        session_store.list_nodes(db, [acct.network_id])
    finally:
        db.con.exec_trace = None
    plan = [row[3] for row in db.con.execute("EXPLAIN QUERY PLAN " + trace[0][0], trace[0][1])]
    assert not any("CORRELATED" in step for step in plan), plan
    assert not any(step.startswith("SCAN s") for step in plan), plan


def test_json_helper_refuses_what_it_cannot_carry() -> None:
    for raw in (b"[" * 70 + b"]" * 70, b"1" * 4301, b'"\\ud800"', b'{"\\udfff": 1}', b"\xff", b"{"):
        try:
            parse_json(raw)
        except BadRequest as exc:
            assert exc.code == "invalid_json"
        else:
            raise AssertionError(raw)
    assert parse_json(b'{"a": [[1]], "b": "\\ud83d\\ude80"}') == {"a": [[1]], "b": "\U0001f680"}
    # The encoder never fails, even on a lone surrogate that reached it some other way.
    assert json.loads(json_bytes({"x": "\ud800"})) == {"x": "\ud800"}
