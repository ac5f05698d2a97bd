"""MCP protocol versions: what a newer version added never reaches a client that negotiated an older one
(docs/mcp-versions.md lists each behaviour and its gate)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import trio
from conftest import create_token, register, tool

WAIT = 15.0


class SseEvents:
    """Events of an SSE stream as the WHATWG rules dispatch them: a block without a `data:` field is no event
    (it only sets the last event id); a block with an empty `data:` IS one, with empty data."""

    def __init__(self, response: httpx.Response):
        self.lines = response.aiter_lines()
        self.last_event_id = ""
        self.retry: int | None = None

    async def next(self) -> dict[str, Any]:
        """The next dispatched event: {id, event, data}."""
        data: list[str] | None = None
        event = ""
        with trio.fail_after(WAIT):
            async for line in self.lines:
                if line == "":
                    if data is not None:
                        return {"id": self.last_event_id, "event": event or "message", "data": "\n".join(data)}
                    event = ""
                    continue
                if line.startswith(":"):
                    continue
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "data":
                    data = [*(data or []), value]
                elif name == "event":
                    event = value
                elif name == "id":
                    self.last_event_id = value
                elif name == "retry" and value.isdigit():
                    self.retry = int(value)
        raise AssertionError("the stream ended")


async def _initialize(client: httpx.AsyncClient, token: str, version: str) -> str:
    r = await client.post("/mcp", headers={"Authorization": f"Bearer {token}"}, json={
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}})
    assert r.status_code == 200, r.text
    assert r.json()["result"]["protocolVersion"] == version
    return r.headers["Mcp-Session-Id"]


def _stream_headers(token: str, sid: str, version: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Accept": "text/event-stream", "Mcp-Session-Id": sid,
            "Mcp-Protocol-Version": version}


async def _pair(client: httpx.AsyncClient) -> tuple[str, str]:
    account = await register(client)
    rx, tx = await create_token(client, account, "rx"), await create_token(client, account, "tx")
    await tool(client, tx, "report_status", {"alias": "tx"})
    await tool(client, rx, "report_status", {"alias": "rx"})
    return rx, tx


@pytest.mark.parametrize("version", ["2025-06-18", "2025-03-26", "2024-11-05"])
async def test_older_clients_get_no_empty_priming_event_on_get_mcp(client: httpx.AsyncClient, version: str) -> None:
    """Gemini CLI's 2025-06-18 client parses every event's data as JSON and drops a server that sends the
    empty priming event: before 2025-11-25 the stream opens with its position as a bare id, no event."""
    rx, tx = await _pair(client)
    sid = await _initialize(client, rx, version)
    async with client.stream("GET", "/mcp", headers=_stream_headers(rx, sid, version)) as response:
        assert response.status_code == 200
        events = SseEvents(response)
        sent = await tool(client, tx, "send_task", {"to": "rx", "content": "hello"})
        first = await events.next()
        # The first event dispatched is the notification: its data is JSON, nothing empty came before it.
        message = json.loads(first["data"])
        assert message["method"] == "notifications/claude/channel"
        assert message["params"]["meta"]["task_id"] == sent["task_id"]
        assert int(first["id"]) > 0


async def test_priming_event_opens_the_stream_from_2025_11_25(client: httpx.AsyncClient) -> None:
    rx, _ = await _pair(client)
    sid = await _initialize(client, rx, "2025-11-25")
    async with client.stream("GET", "/mcp", headers=_stream_headers(rx, sid, "2025-11-25")) as response:
        events = SseEvents(response)
        priming = await events.next()
        assert priming["data"] == "" and priming["id"].isdigit() and events.retry == 3000


@pytest.mark.parametrize("version", ["2025-06-18", "2025-11-25"])
async def test_older_sessions_get_neither_structured_content_nor_titles_they_do_not_know(
        client: httpx.AsyncClient, version: str) -> None:
    """structuredContent and serverInfo.title came with 2025-06-18, tool annotations with 2025-03-26: a session
    on an older version gets the answers without them; from those versions on, with them."""
    account = await register(client)
    headers = {"Authorization": f"Bearer {account.network_token}"}

    async def answers(protocol: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]]:
        r = await client.post("/mcp", headers=headers, json={
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": protocol, "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}})
        init = r.json()["result"]
        session = {**headers, "Mcp-Session-Id": r.headers["Mcp-Session-Id"], "Mcp-Protocol-Version": protocol}
        call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                "params": {"name": "report_status", "arguments": {"alias": f"v{protocol}"}}}
        ok = (await client.post("/mcp", headers=session, json=call)).json()["result"]
        call["params"] = {"name": "send_message", "arguments": {"to": "nobody-here", "content": "x"}}
        failed = (await client.post("/mcp", headers=session, json=call)).json()["result"]
        listed = (await client.post("/mcp", headers=session, json={"jsonrpc": "2.0", "id": 3,
                                                                   "method": "tools/list"})).json()["result"]
        return init, ok, failed, listed

    init, ok, failed, listed = await answers(version)
    assert init["serverInfo"]["title"] == "CommHub"
    assert ok["structuredContent"]["alias"] == f"v{version}" and failed["structuredContent"]["error"]
    assert all("annotations" in tool for tool in listed["tools"])
    init, ok, failed, listed = await answers("2025-03-26")
    assert "title" not in init["serverInfo"] and init["serverInfo"]["name"] == "commhub"
    assert "structuredContent" not in ok and json.loads(ok["content"][0]["text"])["alias"] == "v2025-03-26"
    assert "structuredContent" not in failed and failed["isError"] is True and "Error (" in failed["content"][0]["text"]
    assert all("annotations" in tool for tool in listed["tools"])
    *_, listed = await answers("2024-11-05")
    assert listed["tools"] and not any("annotations" in tool for tool in listed["tools"])
