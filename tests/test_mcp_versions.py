"""MCP protocol versions: what a newer version added never reaches a client that negotiated an older one
(docs/mcp-versions.md lists each behaviour and its gate)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import httpx2
import pytest
import trio
from conftest import create_token, register, tool
from mcp.client.client import Client
from mcp.client.extension import ClientExtension, NotificationBinding
from mcp.client.streamable_http import streamable_http_client
from pydantic import BaseModel

from commhub_lib.runtime.server import ServerHandle

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


async def test_a_session_taken_up_again_primes_only_when_its_header_names_2025_11_25(
        client: httpx.AsyncClient) -> None:
    """A session id issued before a restart is taken up by GET /mcp with the version its Mcp-Protocol-Version
    header names; no header (a client before 2025-06-18) or an unknown one means no priming event."""
    rx, tx = await _pair(client)
    token_id = (await tool(client, rx, "whoami"))["token_id"]
    for n, (header, primed) in enumerate([(None, False), ("2025-06-18", False), ("bogus", False),
                                          ("2025-11-25", True)]):
        headers = {"Authorization": f"Bearer {rx}", "Accept": "text/event-stream",
                   "Mcp-Session-Id": f"mcp_issuedbefore{n}.{token_id}"}
        if header:
            headers["Mcp-Protocol-Version"] = header
        async with client.stream("GET", "/mcp", headers=headers) as response:
            assert response.status_code == 200
            events = SseEvents(response)
            await tool(client, tx, "send_message", {"to": "rx", "content": f"m{n}"})
            first = await events.next()
            assert (first["data"] == "") is primed, (header, first)
            if not primed:
                assert json.loads(first["data"])["method"] == "notifications/claude/channel"


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


# --- MCP 2026-07-28 -----------------------------------------------------------------------------------

CHANNEL = "notifications/claude/channel"
MODERN = "2026-07-28"


class ChannelParams(BaseModel):
    """The params of a channel notification as a client validates them."""

    content: str
    meta: dict[str, str]


class ChannelExtension(ClientExtension):
    """The client side of CommHub's channel: declares the extension and records its notifications."""

    identifier = "claude/channel"

    def __init__(self) -> None:
        self.received: list[ChannelParams] = []

    def notifications(self) -> list[NotificationBinding[Any]]:
        """The channel notification, delivered to `received`."""
        return [NotificationBinding(method=CHANNEL, params_type=ChannelParams, handler=self._on_channel)]

    async def _on_channel(self, params: ChannelParams) -> None:
        self.received.append(params)


async def _wait_until(condition: Any, what: str) -> None:
    """Poll a condition, bounded in time (the notifications arrive on the SDK's own tasks)."""
    deadline = trio.current_time() + WAIT
    while not condition():
        assert trio.current_time() < deadline, f"timed out waiting for {what}"
        await trio.sleep(0.02)


async def test_python_sdk_ends_on_2026_07_28_and_is_woken_over_subscriptions_listen(
        server: ServerHandle, client: httpx.AsyncClient) -> None:
    """The official Python SDK 2.3's `Client` probes server/discover, stays on 2026-07-28 (no initialize, no
    session), calls tools, and gets the channel notifications on its `subscriptions/listen` stream."""
    account = await register(client)
    rx, tx = await create_token(client, account, "rx"), await create_token(client, account, "tx")
    await tool(client, tx, "report_status", {"alias": "old-tx"})
    channel = ChannelExtension()
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {rx}"}, timeout=30) as http:
        async with Client(streamable_http_client(server.url + "/mcp", http_client=http),
                          extensions=[channel]) as mcp:
            assert mcp.protocol_version == MODERN
            assert mcp.session.discover_result is not None and mcp.session.initialize_result is None
            claimed = await mcp.call_tool("report_status", {"alias": "modern-rx", "status": "idle"})
            assert not claimed.is_error and claimed.structured_content["alias"] == "modern-rx"
            async with mcp.listen() as subscription:
                await _wait_until(lambda: server.hub.broker.stream_count(account.network_id, "modern-rx") == 1,
                                  "the listen stream to hold the alias")
                sent = await tool(client, tx, "send_task", {"to": "modern-rx", "content": "do it", "title": "t"})
                await _wait_until(lambda: channel.received, "the channel notification")
                meta = channel.received[0].meta
                assert meta["event"] == "new_task" and meta["task_id"] == sent["task_id"] and meta["from"] == "old-tx"
                assert subscription.subscription_id  # the listen request's id, stamped on every frame
            # Identity stays with the token: a tool call without any session is still modern-rx.
            inbox = await mcp.call_tool("get_inbox", {})
            assert [item["task_id"] for item in inbox.structured_content["items"]] == [sent["task_id"]]


def _envelope(method: str, params: dict[str, Any] | None = None, version: Any = MODERN, msg_id: str | int = 1,
              capabilities: Any = None) -> dict[str, Any]:
    meta = {"io.modelcontextprotocol/protocolVersion": version,
            "io.modelcontextprotocol/clientCapabilities": capabilities if capabilities is not None else {},
            "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "1"}}
    return {"jsonrpc": "2.0", "id": msg_id, "method": method, "params": {**(params or {}), "_meta": meta}}


def _modern_headers(token: str, method: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Mcp-Protocol-Version": MODERN, "Mcp-Method": method,
            "Accept": "application/json, text/event-stream", **extra}


async def test_2026_envelope_is_checked_and_every_result_says_its_type(client: httpx.AsyncClient) -> None:
    account = await register(client)
    token = account.network_token
    r = await client.post("/mcp", headers=_modern_headers(token, "server/discover"),
                          json=_envelope("server/discover"))
    assert r.status_code == 200 and "mcp-session-id" not in r.headers
    found = r.json()["result"]
    assert found["supportedVersions"][0] == MODERN and "2025-11-25" in found["supportedVersions"]
    assert found["resultType"] == "complete" and found["capabilities"]["extensions"] == {"claude/channel": {}}
    assert found["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "commhub" and found["instructions"]
    listed = (await client.post("/mcp", headers=_modern_headers(token, "tools/list"),
                                json=_envelope("tools/list"))).json()["result"]
    assert listed["resultType"] == "complete" and listed["cacheScope"] == "public" and listed["ttlMs"] > 0
    call = _envelope("tools/call", {"name": "report_status", "arguments": {"alias": "raw-modern"}})
    r = await client.post("/mcp", headers=_modern_headers(token, "tools/call", **{"Mcp-Name": "report_status"}),
                          json=call)
    assert r.json()["result"]["resultType"] == "complete" and r.json()["result"]["structuredContent"]["alias"]
    # The ladder: the envelope is missing, the headers disagree with the body, the version is not one of ours.
    bare = {"jsonrpc": "2.0", "id": 5, "method": "tools/list", "params": {}}
    r = await client.post("/mcp", headers=_modern_headers(token, "tools/list"), json=bare)
    assert r.status_code == 400 and r.json()["error"]["code"] == -32602 and r.json()["id"] == 5
    r = await client.post("/mcp", headers=_modern_headers(token, "tools/call"), json=_envelope("tools/list"))
    assert r.status_code == 400 and r.json()["error"]["code"] == -32020
    r = await client.post("/mcp", headers=_modern_headers(token, "tools/call", **{"Mcp-Name": "whoami"}), json=call)
    assert r.status_code == 400 and r.json()["error"]["code"] == -32020
    future = {**_modern_headers(token, "server/discover"), "Mcp-Protocol-Version": "2099-01-01"}
    r = await client.post("/mcp", headers=future, json=_envelope("server/discover", version="2099-01-01"))
    assert r.status_code == 400 and r.json()["error"]["code"] == -32022
    assert r.json()["error"]["data"] == {"supported": [MODERN, "2025-11-25", "2025-06-18", "2025-03-26",
                                                       "2024-11-05"], "requested": "2099-01-01"}
    # No initialize, no batches, nothing else of the older era; a notification is acknowledged.
    for method in ("initialize", "resources/list"):
        r = await client.post("/mcp", headers=_modern_headers(token, method), json=_envelope(method))
        assert r.status_code == 404 and r.json()["error"]["code"] == -32601, method
    r = await client.post("/mcp", headers=_modern_headers(token, "tools/list"), json=[_envelope("tools/list")])
    assert r.status_code == 400 and r.json()["error"]["code"] == -32600
    note = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}}
    assert (await client.post("/mcp", headers=_modern_headers(token, "notifications/cancelled"),
                              json=note)).status_code == 202
    # Sessions of the initialize era are untouched: server/discover is not theirs.
    sid = await _initialize(client, token, "2025-11-25")
    r = await client.post("/mcp", headers={"Authorization": f"Bearer {token}", "Mcp-Session-Id": sid,
                                           "Mcp-Protocol-Version": "2025-11-25"},
                          json={"jsonrpc": "2.0", "id": 9, "method": "server/discover", "params": {}})
    assert r.status_code == 200 and r.json()["error"]["code"] == -32601


async def _listen(client: httpx.AsyncClient, token: str, request_id: Any = "L1", **extra: str) -> Any:
    body = _envelope("subscriptions/listen", {"notifications": {"claude/channel": True}}, msg_id=request_id)
    return client.stream("POST", "/mcp", headers=_modern_headers(token, "subscriptions/listen", **extra), json=body)


async def test_2026_listen_replays_after_last_event_id_and_follows_the_tokens_claim(
        server: ServerHandle, client: httpx.AsyncClient) -> None:
    """The listen stream has the GET stream's semantics: acknowledged first (position as its id), replay after
    Last-Event-ID, heartbeats; it waits while the token has claimed nothing and moves when the token claims."""
    account = await register(client)
    rx, tx = await create_token(client, account, "rx"), await create_token(client, account, "tx")
    await tool(client, tx, "report_status", {"alias": "ltx"})
    async with await _listen(client, rx) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        events = SseEvents(response)
        ack = json.loads((await events.next())["data"])
        # Acknowledged at once, though the token has claimed no alias yet.
        assert ack["method"] == "notifications/subscriptions/acknowledged"
        assert ack["params"] == {"notifications": {"claude/channel": True},
                                 "_meta": {"io.modelcontextprotocol/subscriptionId": "L1"}}
        await tool(client, rx, "report_status", {"alias": "lrx"})  # a claim without any session moves the stream
        await _wait_until(lambda: server.hub.broker.stream_count(account.network_id, "lrx") == 1, "the claim")
        first = await tool(client, tx, "send_task", {"to": "lrx", "content": "one"})
        frame = await events.next()
        message = json.loads(frame["data"])
        assert message["method"] == CHANNEL and message["params"]["meta"]["task_id"] == first["task_id"]
        assert message["params"]["_meta"] == {"io.modelcontextprotocol/subscriptionId": "L1"}
        position = frame["id"]
    missed = await tool(client, tx, "send_task", {"to": "lrx", "content": "two"})
    async with await _listen(client, rx, 7, **{"Last-Event-ID": position}) as response:
        events = SseEvents(response)
        ack = await events.next()
        assert json.loads(ack["data"])["params"]["_meta"] == {"io.modelcontextprotocol/subscriptionId": 7}
        assert ack["id"] == position
        replayed = json.loads((await events.next())["data"])
        assert replayed["params"]["meta"]["task_id"] == missed["task_id"]


async def test_2026_listen_without_the_channel_is_acknowledged_empty_and_ends(client: httpx.AsyncClient) -> None:
    account = await register(client)
    body = _envelope("subscriptions/listen", {"notifications": {"toolsListChanged": True}}, msg_id="quiet")
    async with client.stream("POST", "/mcp", headers=_modern_headers(account.network_token, "subscriptions/listen"),
                             json=body) as response:
        events = SseEvents(response)
        ack = json.loads((await events.next())["data"])
        assert ack["params"]["notifications"] == {}
        end = json.loads((await events.next())["data"])
        assert end["id"] == "quiet" and end["result"]["resultType"] == "complete"
    r = await client.post("/mcp", headers={**_modern_headers(account.network_token, "subscriptions/listen"),
                                           "Accept": "application/json"}, json=body)
    assert r.status_code == 406
