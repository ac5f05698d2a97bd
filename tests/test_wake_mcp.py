"""Wake over MCP: GET /mcp carries every hub event for the session's alias as `notifications/claude/channel`,
tested with the official SDKs (TypeScript and Python) and, for the edges of the protocol, raw HTTP.

Python SDK 2.3 finding: `ClientSession` drops a notification method it does not know before `message_handler`
("dropped ...: not defined"); it delivers one only through a `NotificationBinding` (mcp.client.extension),
which is what these tests use. Its transport opens GET /mcp itself and resumes it with Last-Event-ID.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
import trio
from conftest import create_token, own_server, register, tool
from mcp.client.extension import NotificationBinding
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from pydantic import BaseModel
from test_mcp_typescript import TS_CLIENT, node  # noqa: F401 - the `node` fixture

from commhub_lib.runtime.server import ServerHandle

CHANNEL = "notifications/claude/channel"
WAIT = 15.0


class ChannelParams(BaseModel):
    """The params of a channel notification as a client validates them."""

    content: str
    meta: dict[str, str]


async def _wait_until(condition: Any, what: str, within: float = WAIT) -> None:
    """Poll a condition, bounded in time (the notifications arrive on the SDK's own tasks)."""
    deadline = trio.current_time() + within
    while not condition():
        assert trio.current_time() < deadline, f"timed out waiting for {what}"
        await trio.sleep(0.02)


async def _team(client: httpx.AsyncClient) -> tuple[Any, str, str]:
    account = await register(client)
    return account, await create_token(client, account, "rx"), await create_token(client, account, "tx")


# --- the official SDKs ------------------------------------------------------------------------------

@pytest.mark.subprocess
async def test_typescript_sdk_is_woken_and_resumes_after_a_drop(node: str, server: ServerHandle,  # noqa: F811
                                                                client: httpx.AsyncClient) -> None:
    _, rx, tx = await _team(client)
    with trio.fail_after(60):
        proc = await trio.run_process([node, str(TS_CLIENT / "channel.mjs"), server.url, rx, tx], cwd=str(TS_CLIENT),
                                      env=dict(os.environ), check=False, stdin=subprocess.DEVNULL,
                                      capture_stdout=True, capture_stderr=True)
    out, err = proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
    assert proc.returncode == 0, f"channel.mjs exited {proc.returncode}\n{err}\n{out}"
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["received"] == 4  # the first task, then the three sent while the stream was down: once each
    assert summary["get_streams_opened"] >= 2  # the SDK reconnected by itself
    assert summary["resumed_with"] == str(summary["event_ids"][0])
    assert summary["first_meta"]["event"] == "new_task" and summary["first_meta"]["from"] == "ts-tx"


@asynccontextmanager
async def sdk_listener(server: ServerHandle, token: str) -> AsyncIterator[tuple[ClientSession, list[ChannelParams]]]:
    """An initialized Python SDK session that records every channel notification it receives."""
    received: list[ChannelParams] = []

    async def on_channel(params: ChannelParams) -> None:
        received.append(params)

    binding = NotificationBinding(method=CHANNEL, params_type=ChannelParams, handler=on_channel)
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
        async with streamable_http_client(server.url + "/mcp", http_client=http) as (read, write):
            async with ClientSession(read, write, notification_bindings=[binding]) as session:
                init = await session.initialize()
                assert init.capabilities.experimental == {"claude/channel": {}}
                assert "get_inbox" in (init.instructions or "") and "channel" in (init.instructions or "")
                yield session, received


async def test_python_sdk_is_woken_and_resumes_after_a_drop(server: ServerHandle, client: httpx.AsyncClient) -> None:
    account, rx, tx = await _team(client)
    async with sdk_listener(server, rx) as (session, received):
        await session.call_tool("report_status", {"alias": "py-rx", "status": "idle"})
        await tool(client, tx, "report_status", {"alias": "py-tx"})
        await _wait_until(lambda: server.hub.broker.stream_count(account.network_id, "py-rx") == 1, "GET /mcp stream")

        first = await tool(client, tx, "send_task", {"to": "py-rx", "content": "build it", "priority": "urgent"})
        await _wait_until(lambda: len(received) == 1, "the first channel notification")
        meta = received[0].meta
        assert meta["event"] == "new_task" and meta["task_id"] == first["task_id"]
        assert meta["message_id"] == first["message_id"] and meta["priority"] == "urgent" and meta["from"] == "py-tx"
        assert first["task_id"] in received[0].content and "get_inbox" in received[0].content

        # The connection drops (the hub ends it here); three tasks are sent while it is down; the SDK reconnects
        # with Last-Event-ID after the retry hint and gets exactly those, in order.
        assert server.hub.broker.close_alias_streams(account.network_id, "py-rx", "test_drop") == 1
        later = [(await tool(client, tx, "send_task", {"to": "py-rx", "content": f"task {n}"}))["task_id"]
                 for n in range(3)]
        await _wait_until(lambda: len(received) >= 4, "the tasks sent while the stream was down")
        await trio.sleep(0.3)  # a duplicate would arrive right behind them
        assert [r.meta["task_id"] for r in received] == [first["task_id"], *later]
        event_ids = [int(r.meta["event_id"]) for r in received]
        assert event_ids == sorted(set(event_ids))


# --- protocol edges (raw HTTP) ------------------------------------------------------------------------

async def _initialize(client: httpx.AsyncClient, token: str) -> str:
    r = await client.post("/mcp", headers={"Authorization": f"Bearer {token}"}, json={
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}})
    assert r.status_code == 200, r.text
    assert r.json()["result"]["capabilities"]["experimental"] == {"claude/channel": {}}
    return r.headers["Mcp-Session-Id"]


def _headers(token: str, sid: str | None = None, **extra: str) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream", **extra}
    if sid:
        headers["Mcp-Session-Id"] = sid
    return headers


class RawStream:
    """Frames of a GET /mcp stream, as dicts of their fields (comments dropped)."""

    def __init__(self, response: httpx.Response):
        self.lines = response.aiter_lines()

    async def frame(self) -> dict[str, str]:
        """The next frame with at least one field."""
        frame: dict[str, str] = {}
        with trio.fail_after(WAIT):
            async for line in self.lines:
                if line == "":
                    if frame:
                        return frame
                    continue
                if line.startswith(":"):
                    continue
                name, _, value = line.partition(":")
                frame[name] = value[1:] if value.startswith(" ") else value
        raise AssertionError("the stream ended")

    async def notification(self) -> tuple[int, dict[str, Any]]:
        """The next channel notification and its event id."""
        while True:
            frame = await self.frame()
            if frame.get("data"):
                message = json.loads(frame["data"])
                assert message["method"] == CHANNEL and "id" not in message
                return int(frame["id"]), message["params"]


async def test_get_mcp_answers_per_spec_for_missing_unknown_and_foreign_sessions(client: httpx.AsyncClient) -> None:
    _, rx, tx = await _team(client)
    sid = await _initialize(client, rx)
    r = await client.get("/mcp", headers=_headers(rx))
    assert r.status_code == 400 and r.json()["error"] == "missing_session_id"
    r = await client.get("/mcp", headers=_headers(rx, "mcp_never-issued"))
    assert r.status_code == 404 and r.json()["error"] == "session_not_found"
    r = await client.get("/mcp", headers=_headers(tx, sid))  # another token's session
    assert r.status_code == 404
    r = await client.get("/mcp", headers={**_headers(rx, sid), "Accept": "application/json"})
    assert r.status_code == 405
    r = await client.delete("/mcp", headers=_headers(rx, sid))
    assert r.status_code == 204


async def test_stream_primes_position_replays_from_zero_and_follows_the_claimed_alias(
        server: ServerHandle, client: httpx.AsyncClient) -> None:
    account, rx, tx = await _team(client)
    await tool(client, tx, "report_status", {"alias": "tx"})
    await tool(client, rx, "report_status", {"alias": "rx"})
    before = await tool(client, tx, "send_message", {"to": "rx", "content": "sent before any stream"})
    sid = await _initialize(client, rx)
    async with client.stream("GET", "/mcp", headers=_headers(rx, sid)) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        stream = RawStream(response)
        opening = await stream.frame()
        # The MCP priming event: the position as an id with an empty data field, and the retry hint.
        assert opening["retry"] == "3000" and opening["data"] == "" and int(opening["id"]) > 0
        task = await tool(client, tx, "send_task", {"to": "rx", "content": "line\u2028break", "title": "t"})
        event_id, params = await stream.notification()
        assert event_id > int(opening["id"]) and params["meta"]["task_id"] == task["task_id"]
        assert server.hub.broker.stream_count(account.network_id, "rx") == 1  # keeps the alias online
    # Last-Event-ID: 0 replays everything retained for the alias, the message sent before any stream included.
    async with client.stream("GET", "/mcp", headers=_headers(rx, sid, **{"Last-Event-ID": "0"})) as response:
        stream = RawStream(response)
        assert (await stream.frame())["id"] == "0"
        replayed = [(await stream.notification())[1]["meta"]["message_id"] for _ in range(2)]
        assert replayed == [before["message_id"], task["message_id"]]


async def test_stream_opened_before_report_status_carries_events_sent_right_after_the_claim(
        client: httpx.AsyncClient) -> None:
    _, rx, tx = await _team(client)
    await tool(client, tx, "report_status", {"alias": "tx2"})
    sid = await _initialize(client, rx)
    async with client.stream("GET", "/mcp", headers=_headers(rx, sid)) as response:
        stream = RawStream(response)
        assert "retry" in await stream.frame()  # waiting: no alias yet
        r = await client.post("/mcp", headers={"Authorization": f"Bearer {rx}", "Mcp-Session-Id": sid}, json={
            "jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "report_status", "arguments": {"alias": "rx2"}}})
        assert r.status_code == 200 and not r.json()["result"]["isError"]
        sent = await tool(client, tx, "send_message", {"to": "rx2", "content": "hello right away"})
        _, params = await stream.notification()
        assert params["meta"]["message_id"] == sent["message_id"] and params["meta"]["event"] == "new_message"
        assert "hello right away" in params["content"]


async def test_delete_ends_the_sessions_stream(client: httpx.AsyncClient) -> None:
    _, rx, _ = await _team(client)
    await tool(client, rx, "report_status", {"alias": "rx3"})
    sid = await _initialize(client, rx)
    async with client.stream("GET", "/mcp", headers=_headers(rx, sid)) as response:
        stream = RawStream(response)
        await stream.frame()
        assert (await client.delete("/mcp", headers=_headers(rx, sid))).status_code == 204
        with trio.fail_after(WAIT):
            rest = [line async for line in stream.lines]
        assert any("session_ended" in line for line in rest), rest
    r = await client.get("/mcp", headers=_headers(rx, sid))
    assert r.status_code == 404  # ended with DELETE: the client must initialize again


async def test_cancelled_notification_ends_a_waiting_long_poll_at_once(server: ServerHandle,
                                                                       client: httpx.AsyncClient) -> None:
    _, rx, _ = await _team(client)
    await tool(client, rx, "report_status", {"alias": "poller"})
    sid = await _initialize(client, rx)
    headers = {"Authorization": f"Bearer {rx}", "Mcp-Session-Id": sid}
    answer: dict[str, Any] = {}

    async def long_poll() -> None:
        r = await client.post("/mcp", headers=headers, json={
            "jsonrpc": "2.0", "id": "poll-1", "method": "tools/call",
            "params": {"name": "get_inbox", "arguments": {"wait_seconds": 50}}})
        answer["status"], answer["body"] = r.status_code, r.text

    with trio.fail_after(5):  # far below the 50 s wait: the cancel ended it
        async with trio.open_nursery() as nursery:
            waiting = server.hub.broker.subscriber_count()
            nursery.start_soon(long_poll)
            # The poll must be waiting before the cancel (a cancel for an unknown id is a no-op).
            await _wait_until(lambda: server.hub.broker.subscriber_count() > waiting, "the long-poll waits")
            r = await client.post("/mcp", headers=headers, json={
                "jsonrpc": "2.0", "method": "notifications/cancelled",
                "params": {"requestId": "poll-1", "reason": "user pressed Esc"}})
            assert r.status_code == 202
    assert answer == {"status": 202, "body": ""}  # cancelled: no JSON-RPC answer is sent


@pytest.mark.parametrize("raw", [str(2**63), "99999999999999999999999", "-1", "abc"])
async def test_out_of_range_last_event_id_is_a_clean_400(client: httpx.AsyncClient, raw: str) -> None:
    _, rx, _ = await _team(client)
    sid = await _initialize(client, rx)
    r = await client.get("/mcp", headers=_headers(rx, sid, **{"Last-Event-ID": raw}))
    assert r.status_code == 400 and r.json()["error"] == "validation_error" and "Last-Event-ID" in r.json()["message"]


async def test_session_survives_a_hub_restart_on_get_and_replays_what_it_missed(tmp_path: Path) -> None:
    """A session id issued to this token before a restart is taken up again by GET /mcp (POST does the same),
    and Last-Event-ID replays what was sent while the hub was down; a forged id for another token stays 404."""
    async with own_server(tmp_path, "restart") as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            account, rx, tx = await _team(client)
            await tool(client, tx, "report_status", {"alias": "tx9"})
            await tool(client, rx, "report_status", {"alias": "rx9"})
            sid = await _initialize(client, rx)
            async with client.stream("GET", "/mcp", headers=_headers(rx, sid)) as response:
                position = (await RawStream(response).frame())["id"]
    async with own_server(tmp_path, "restart") as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            missed = await tool(client, tx, "send_task", {"to": "rx9", "content": "sent after the restart"})
            headers = _headers(rx, sid, **{"Last-Event-ID": position})
            async with client.stream("GET", "/mcp", headers=headers) as response:
                assert response.status_code == 200
                _, params = await RawStream(response).notification()
            assert params["meta"]["task_id"] == missed["task_id"]
            forged = sid.rsplit(".", 1)[0] + ".tok_someoneelse"
            assert (await client.get("/mcp", headers=_headers(rx, forged))).status_code == 404
