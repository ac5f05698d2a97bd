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
