"""JSON-RPC batches on POST /mcp are bounded: size, protocol revision, rate limit, yielding, response size,
no initialize, one long-poll."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import trio
from conftest import own_server, register
from test_mcp_protocol import call, initialize, post, rpc

from commhub_lib.mcp.batch import run_batch


def tool_call(name: str, arguments: dict[str, Any] | None = None, msg_id: Any = "auto") -> dict[str, Any]:
    """A tools/call request."""
    return rpc("tools/call", {"name": name, "arguments": arguments or {}}, msg_id=msg_id)


async def inbox_ids(client: httpx.AsyncClient, token: str) -> list[str]:
    """Message ids in the calling agent's inbox."""
    return [i["message_id"] for i in (await call(client, token, "get_inbox", {"limit": 500}))["items"]]


async def test_batch_over_the_cap_is_refused_whole(client: httpx.AsyncClient) -> None:
    acct = await register(client)
    await call(client, acct.network_token, "report_status", {"alias": "me"})
    batch = [tool_call("send_message", {"to": "me", "content": f"m{i}"}) for i in range(51)]
    r = await post(client, acct.network_token, batch)
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["error"]["code"] == -32600 and body["id"] is None
    assert "51" in body["error"]["message"] and "COMMHUB_MCP_MAX_BATCH" in body["error"]["message"]
    assert await inbox_ids(client, acct.network_token) == []  # nothing of it ran
    r = await post(client, acct.network_token, batch[:50])  # at the cap it runs
    assert r.status_code == 200 and len(r.json()) == 50
    assert all(a["result"]["isError"] is False for a in r.json())


async def test_sessions_on_revisions_without_batching_get_an_error(client: httpx.AsyncClient) -> None:
    acct = await register(client)
    pings = [rpc("ping", msg_id=1), rpc("ping", msg_id=2)]
    for version in ("2025-06-18", "2025-11-25"):
        sid, _ = await initialize(client, acct.network_token, version)
        r = await post(client, acct.network_token, pings, session_id=sid, Mcp_Protocol_Version=version)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == -32600 and "2025-06-18" in r.json()["error"]["message"]
        # A session-less request that names such a version is held to it as well.
        r = await post(client, acct.network_token, pings, Mcp_Protocol_Version=version)
        assert r.status_code == 400 and r.json()["error"]["code"] == -32600
    for version in ("2025-03-26", "2024-11-05"):
        sid, _ = await initialize(client, acct.network_token, version)
        r = await post(client, acct.network_token, pings, session_id=sid, Mcp_Protocol_Version=version)
        assert r.status_code == 200 and [a["id"] for a in r.json()] == [1, 2], r.text
    r = await post(client, acct.network_token, pings)  # no session, no header: 2025-03-26 is assumed
    assert r.status_code == 200 and len(r.json()) == 2


async def test_each_call_of_a_batch_counts_against_the_rate_limit(tmp_path: Path) -> None:
    async with own_server(tmp_path, "rate", token_rate_per_minute=10) as handle, \
            httpx.AsyncClient(base_url=handle.url, timeout=30) as client:
        acct = await register(client)
        r = await post(client, acct.network_token, [rpc("ping", msg_id=i) for i in range(20)])
        assert r.status_code == 200, r.text
        answers = r.json()
        assert [a.get("result") for a in answers[:10]] == [{}] * 10
        for answer in answers[10:]:
            assert answer["error"]["code"] == -32000 and "not run" in answer["error"]["message"]
            assert answer["error"]["data"]["retry_after"] >= 1
        r = await post(client, acct.network_token, rpc("ping"))  # the bucket is empty: the next request is a 429
        assert r.status_code == 429 and r.headers["Retry-After"]


async def test_batch_yields_to_other_tasks_between_calls() -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await trio.lowlevel.checkpoint()

    async def dispatch(msg: Any) -> dict[str, Any]:  # answers without ever awaiting, like a quick tool
        return {"jsonrpc": "2.0", "id": msg["id"], "result": {}}

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        await trio.lowlevel.checkpoint()
        before = ticks
        pieces = await run_batch([rpc("ping", msg_id=i) for i in range(50)], dispatch, lambda: None, 10**9)
        assert len(pieces) == 50
        assert ticks - before >= 49  # the other task ran between every two calls
        nursery.cancel_scope.cancel()


async def test_batch_answers_stop_at_the_response_cap(tmp_path: Path) -> None:
    async with own_server(tmp_path, "size", mcp_max_response_bytes=1000) as handle, \
            httpx.AsyncClient(base_url=handle.url, timeout=30) as client:
        acct = await register(client)
        await call(client, acct.network_token, "report_status", {"alias": "me"})
        batch = [tool_call("send_message", {"to": "me", "content": "hello"}, msg_id=i) for i in range(10)]
        r = await post(client, acct.network_token, batch)
        assert r.status_code == 200, r.text
        answers = r.json()
        assert len(answers) == 10 and [a["id"] for a in answers] == list(range(10))
        ran = [a for a in answers if "result" in a]
        skipped = [a for a in answers if "error" in a]
        assert ran and skipped and answers[:len(ran)] == ran  # the first ones ran, then none
        for answer in skipped:
            assert answer["error"]["code"] == -32000 and "COMMHUB_MCP_MAX_RESPONSE_BYTES" in answer["error"]["message"]
        # Calls ran while the answers were within the cap: only the last one that ran went past it.
        sizes = [len(json.dumps(a, separators=(",", ":"))) for a in ran]
        assert sum(sizes[:-1]) <= 1000 < sum(sizes)
        assert len(await inbox_ids(client, acct.network_token)) == len(ran)  # the skipped calls had no effect


async def test_one_long_poll_per_batch(client: httpx.AsyncClient) -> None:
    acct = await register(client)
    await call(client, acct.network_token, "report_status", {"alias": "poller"})
    batch = [tool_call("get_inbox", {"wait_seconds": 0.2}, msg_id=1), tool_call("get_inbox", {"wait_seconds": 50},
                                                                                   msg_id=2),
             tool_call("get_inbox", {"wait_seconds": 0}, msg_id=3), tool_call("get_inbox", {}, msg_id=4)]
    with trio.fail_after(10):  # the second long-poll never waits its 50 s
        r = await post(client, acct.network_token, batch)
    assert r.status_code == 200, r.text
    answers = {a["id"]: a for a in r.json()}
    assert answers[1]["result"]["isError"] is False
    assert answers[2]["error"]["code"] == -32600 and "wait_seconds" in answers[2]["error"]["message"]
    assert answers[3]["result"]["isError"] is False and answers[4]["result"]["isError"] is False


async def test_initialize_is_refused_inside_a_batch(client: httpx.AsyncClient, server: Any) -> None:
    acct = await register(client)
    before = len(server.hub.mcp_sessions)
    init = {"protocolVersion": "2025-03-26", "capabilities": {}, "clientInfo": {"name": "x", "version": "1"}}
    r = await post(client, acct.network_token, [rpc("initialize", init, msg_id=i) for i in range(50)])
    assert r.status_code == 200, r.text
    assert all(a["error"]["code"] == -32600 and "initialize" in a["error"]["message"] for a in r.json())
    assert "Mcp-Session-Id" not in r.headers
    assert len(server.hub.mcp_sessions) == before
