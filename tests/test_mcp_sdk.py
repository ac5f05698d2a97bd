"""The official MCP Python SDK (streamable HTTP client + ClientSession) against a real CommHub on port 0.

Every test talks to the server only the way an agent does: the SDK's transport, its handshake, its
Mcp-Session-Id / Mcp-Protocol-Version headers, its GET /mcp probe and DELETE on close.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import httpx2
import pytest
import trio
from conftest import Account, create_token, register
from mcp.client.client import Client
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

from commhub_lib.mcp import push
from commhub_lib.runtime.server import ServerHandle

SPEC_TOOLS = {"report_status", "whoami", "get_all_status", "send_task", "send_message", "send_reply", "broadcast",
              "get_inbox", "ack_inbox", "report_completion", "get_task", "list_tasks", "cancel_task",
              "get_completions", "list_nodes"}


@asynccontextmanager
async def sdk_session(server: ServerHandle, token: str) -> AsyncIterator[ClientSession]:
    """An initialized SDK session for one token (the transport sends DELETE /mcp on exit)."""
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
        async with streamable_http_client(server.url + "/mcp", http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                yield session


def _text_json(result: Any) -> Any:
    texts = [c.text for c in result.content if getattr(c, "type", None) == "text"]
    assert texts, result
    return texts[0]


async def ok(session: ClientSession, tool: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
    """Call a tool that must succeed; returns its structuredContent (checked against the text part)."""
    result = await session.call_tool(tool, arguments or {})
    assert not result.is_error, (tool, result)
    assert result.structured_content is not None
    assert json.loads(_text_json(result)) == result.structured_content
    return result.structured_content


async def fails(session: ClientSession, tool: str, arguments: dict[str, Any] | None = None) -> str:
    """Call a tool that must fail as a tool error (isError); returns the error text."""
    result = await session.call_tool(tool, arguments or {})
    assert result.is_error, (tool, result)
    return _text_json(result)


async def wait_until(condition: Callable[[], bool]) -> None:
    """Poll a condition (bounded: 5 s) instead of sleeping a fixed time."""
    deadline = trio.current_time() + 5
    while not condition():
        assert trio.current_time() < deadline, "condition not reached in time"
        await trio.sleep(0.01)


async def two_users(client: httpx.AsyncClient) -> tuple[Account, str, str]:
    """An owner and a plain member of the owner's network, each with its own network token."""
    owner = await register(client)
    r = await client.post(f"/api/networks/{owner.network_id}/invite", json={"role": "member", "max_uses": 1},
                          headers=owner.auth)
    assert r.status_code == 200, r.text
    member = await register(client)
    r = await client.post("/api/networks/join", json={"invite_code": r.json()["invite_code"]}, headers=member.auth)
    assert r.status_code == 200, r.text
    token_a = await create_token(client, owner, name="agent-a")
    token_b = await create_token(client, member, name="agent-b", network_id=owner.network_id)
    return owner, token_a, token_b


async def test_sdk_initialize_negotiates_default_version_and_lists_tools(server: ServerHandle,
                                                                         client: httpx.AsyncClient) -> None:
    account = await register(client)
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {account.network_token}"}, timeout=30) as http:
        async with streamable_http_client(server.url + "/mcp", http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                init = await session.initialize()
                assert init.protocol_version == "2025-11-25"  # the SDK's default, echoed
                assert session.protocol_version == "2025-11-25"
                assert init.server_info.name == "commhub"
                assert init.capabilities.tools is not None
                assert init.instructions and "report_status" in init.instructions
                assert len(server.hub.mcp_sessions) == 1  # the handshake issued an Mcp-Session-Id
                await session.send_ping()
                tools = (await session.list_tools()).tools
                by_name = {t.name: t for t in tools}
                assert SPEC_TOOLS <= set(by_name)
                for tool in tools:
                    assert tool.input_schema["type"] == "object", tool.name
                    assert tool.description
                assert {"to", "content", "priority", "idempotency_key"} <= set(
                    by_name["send_task"].input_schema["properties"])
                assert set(by_name["send_task"].input_schema["required"]) == {"to", "content"}
                me = await ok(session, "whoami")
                assert me["network_id"] == account.network_id
                assert me["session_id"] in server.hub.mcp_sessions
    assert not server.hub.mcp_sessions  # DELETE /mcp on close ended the session


async def test_sdk_task_round_trip_between_two_agents(server: ServerHandle, client: httpx.AsyncClient) -> None:
    owner, token_a, token_b = await two_users(client)
    async with sdk_session(server, token_a) as a, sdk_session(server, token_b) as b:
        claimed = await ok(a, "report_status", {"alias": "alice", "agent": "claude-code", "model": "opus",
                                                "status": "idle", "node": {"hostname": "box-a", "platform": "linux"}})
        assert claimed["alias"] == "alice" and claimed["inbox_count"] == 0
        assert (await ok(b, "report_status", {"alias": "bob", "agent": "codex", "status": "idle"}))["alias"] == "bob"
        assert (await ok(a, "whoami"))["alias"] == "alice"
        assert (await ok(b, "whoami"))["alias"] == "bob"

        low = await ok(a, "send_task", {"to": "bob", "content": "tidy the docs", "priority": "low"})
        main = await ok(a, "send_task", {"to": "bob", "content": "fix the failing build", "priority": "high",
                                         "title": "build", "context": "CI is red since 10:00"})
        urgent = await ok(a, "send_task", {"to": "bob", "content": "prod is down", "priority": "urgent"})
        assert main["recipient_online"] is True and main["duplicate"] is False
        assert main["task_id"] and main["message_id"].startswith("msg_")

        inbox = await ok(b, "get_inbox")
        assert [i["task_id"] for i in inbox["items"]] == [urgent["task_id"], main["task_id"], low["task_id"]]
        item = inbox["items"][1]
        assert item["kind"] == "task" and item["from"] == "alice" and item["priority"] == "high"
        assert item["message_id"] == main["message_id"] and item["title"] == "build"
        assert item["context"] == "CI is red since 10:00"

        acked = await ok(b, "ack_inbox", {"message_ids": [main["message_id"]]})
        assert acked["acked"] == [main["message_id"]] and acked["inbox_count"] == 2
        assert (await ok(a, "get_task", {"task_id": main["task_id"]}))["task"]["status"] == "running"

        await ok(b, "report_status", {"status": "working", "task": "build", "progress": "looking"})
        progress = await ok(b, "send_reply", {"task_id": main["task_id"], "content": "found it", "status": "progress"})
        assert progress["task_status"] == "running"
        done = await ok(b, "report_completion", {"task_id": main["task_id"], "result": "build is green",
                                                 "artifacts": ["https://ci.example/run/1"]})
        assert done["task_status"] == "replied" and done["in_reply_to"] == main["message_id"]

        replies = (await ok(a, "get_inbox"))["items"]
        assert [(r["kind"], r["in_reply_to"], r["status"]) for r in replies] == [
            ("reply", main["message_id"], "progress"), ("reply", main["message_id"], "done")]
        assert replies[1]["from"] == "bob" and replies[1]["content"] == "build is green"
        assert replies[1]["task_id"] == main["task_id"]

        task = await ok(a, "get_task", {"task_id": main["task_id"]})
        assert task["task"]["status"] == "replied"
        assert task["task"]["from_name"] == "alice" and task["task"]["to_name"] == "bob"
        assert [e["event"] for e in task["events"]] == ["delivered", "running", "progress", "replied"]
        completion = task["completion"]
        assert completion["status"] == "replied" and completion["result"] == "build is green"
        assert completion["alias"] == "bob" and completion["artifacts"] == ["https://ci.example/run/1"]
        assert completion["duration_seconds"] >= 0

        # A final task never changes: no further reply, no cancel.
        text = await fails(b, "send_reply", {"task_id": main["task_id"], "content": "again"})
        assert "replied" in text and "final" in text
        text = await fails(a, "cancel_task", {"task_id": main["task_id"]})
        assert "final" in text

        listed = await ok(a, "list_tasks", {"to_name": "bob"})
        assert {t["task_id"] for t in listed["tasks"]} == {low["task_id"], main["task_id"], urgent["task_id"]}
        assert [t["task_id"] for t in (await ok(a, "list_tasks", {"status": "replied"}))["tasks"]] == [
            main["task_id"]]
        completions = (await ok(b, "get_completions", {"alias": "bob"}))["completions"]
        assert [c["task_id"] for c in completions] == [main["task_id"]]

        status = {s["alias"]: s for s in (await ok(a, "get_all_status"))["sessions"]}
        assert set(status) == {"alice", "bob"}
        assert status["bob"]["status"] == "idle" and status["bob"]["task"] is None  # cleared when the task ended
        assert status["alice"]["agent"] == "claude-code" and status["alice"]["model"] == "opus"
        working = await ok(a, "get_all_status", {"filter_status": "working"})
        assert working["sessions"] == []
        nodes = (await ok(a, "list_nodes"))["nodes"]
        assert [n["hostname"] for n in nodes] == ["box-a"]

        sent = await ok(a, "broadcast", {"content": "deploy at 5"})
        assert sent["recipients"] == 1 and sent["message_ids"] == {"bob": sent["message_id"]}
        items = (await ok(b, "get_inbox"))["items"]
        assert [(i["kind"], i["from"], i["content"]) for i in items if i["kind"] == "broadcast"] == [
            ("broadcast", "alice", "deploy at 5")]

        # The recipient (a plain member) cannot cancel the sender's task; the sender can; a second cancel fails.
        text = await fails(b, "cancel_task", {"task_id": low["task_id"]})
        assert "only the sender" in text
        cancelled = await ok(a, "cancel_task", {"task_id": low["task_id"], "reason": "not needed"})
        assert cancelled["status"] == "cancelled"
        assert (await ok(b, "get_task", {"task_id": low["task_id"]}))["task"]["status"] == "cancelled"
        assert "cancelled" in await fails(a, "cancel_task", {"task_id": low["task_id"]})
        assert "cancelled" in await fails(b, "send_reply", {"task_id": low["task_id"], "content": "late"})
        notices = [i for i in (await ok(b, "get_inbox"))["items"] if i["kind"] == "notice"]
        assert len(notices) == 1 and low["task_id"] in notices[0]["content"]

        # A plain member may cancel a task it sent itself.
        own = await ok(b, "send_task", {"to": "alice", "content": "review my PR"})
        assert (await ok(b, "cancel_task", {"task_id": own["task_id"]}))["status"] == "cancelled"

        # The urgent task ends as failed through send_reply.
        failed = await ok(b, "send_reply", {"message_id": urgent["message_id"], "content": "cannot reach prod",
                                            "status": "failed"})
        assert failed["task_status"] == "failed"
        assert (await ok(a, "get_task", {"task_id": urgent["task_id"]}))["completion"]["status"] == "failed"
    assert owner.network_id  # both sessions were closed cleanly


async def test_sdk_get_inbox_long_poll_wakes_on_send(server: ServerHandle, client: httpx.AsyncClient) -> None:
    owner, token_a, token_b = await two_users(client)
    async with sdk_session(server, token_a) as a, sdk_session(server, token_b) as b:
        await ok(a, "report_status", {"alias": "sender"})
        await ok(b, "report_status", {"alias": "waiter"})
        # The SDK holds GET /mcp (the push stream) for each session: count the long-poll on top of those.
        network_id = owner.network_id
        await wait_until(lambda: server.hub.broker.stream_count(network_id, "waiter") == 1)
        await wait_until(lambda: server.hub.broker.stream_count(network_id, "sender") == 1)
        streams = server.hub.broker.subscriber_count()
        got: dict[str, Any] = {}

        async def wait_for_item() -> None:
            start = trio.current_time()
            got["inbox"] = await ok(b, "get_inbox", {"wait_seconds": 10})
            got["elapsed"] = trio.current_time() - start

        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait_for_item)
            await wait_until(lambda: server.hub.broker.subscriber_count() > streams)  # the waiter is subscribed
            assert "inbox" not in got  # still waiting: the inbox was empty when it asked
            sent = await ok(a, "send_task", {"to": "waiter", "content": "wake up", "priority": "urgent"})
        assert got["elapsed"] < 5, got["elapsed"]
        assert [i["task_id"] for i in got["inbox"]["items"]] == [sent["task_id"]]
        assert server.hub.broker.subscriber_count() == streams  # the waiter unsubscribed
        # The fetch started the task.
        assert (await ok(a, "get_task", {"task_id": sent["task_id"]}))["task"]["status"] == "running"


async def test_sdk_long_poll_times_out_empty(server: ServerHandle, client: httpx.AsyncClient) -> None:
    account = await register(client)
    async with sdk_session(server, account.network_token) as session:
        await ok(session, "report_status", {"alias": "lonely"})
        start = trio.current_time()
        inbox = await ok(session, "get_inbox", {"wait_seconds": 0.5})
        assert trio.current_time() - start >= 0.45
        assert inbox["items"] == [] and inbox["count"] == 0


async def test_sdk_tool_errors_are_tool_results(server: ServerHandle, client: httpx.AsyncClient) -> None:
    account = await register(client)
    async with sdk_session(server, account.network_token) as session:
        text = await fails(session, "send_task", {"to": "bob", "content": "hi"})
        assert "report_status" in text
        await ok(session, "report_status", {"alias": "solo"})
        text = await fails(session, "send_task", {"to": "ghost", "content": "hi"})
        assert "ghost" in text and "ever connected" in text
        text = await fails(session, "send_task", {"to": "solo", "content": "hi", "priority": "asap"})
        assert "priority" in text
        text = await fails(session, "get_task", {"task_id": "00000000-0000-0000-0000-000000000000"})
        assert "not found" in text
        text = await fails(session, "get_inbox", {"wait_seconds": 51})
        assert "wait_seconds" in text


async def test_sdk_restarted_agent_keeps_its_alias(server: ServerHandle, client: httpx.AsyncClient) -> None:
    _, token_a, token_b = await two_users(client)
    async with sdk_session(server, token_a) as a:
        await ok(a, "report_status", {"alias": "phoenix"})
    async with sdk_session(server, token_b) as b:
        await ok(b, "report_status", {"alias": "friend"})
    # A new MCP session of the same token (the agent restarted) is still "phoenix" without report_status.
    async with sdk_session(server, token_a) as a, sdk_session(server, token_b) as b:
        assert (await ok(a, "whoami"))["alias"] == "phoenix"
        sent = await ok(a, "send_task", {"to": "friend", "content": "still me"})
        items = (await ok(b, "get_inbox"))["items"]
        assert [(i["task_id"], i["from"]) for i in items] == [(sent["task_id"], "phoenix")]


async def test_sdk_high_level_client_speaks_2026_07_28(server: ServerHandle, client: httpx.AsyncClient) -> None:
    """`Client` (mode auto) probes server/discover (2026-07-28) and stays on that version: no initialize, no
    session, every request stamped with its version (tests/test_mcp_versions.py covers the envelope)."""
    account = await register(client)
    seen: list[tuple[str, str | None, int]] = []

    async def record(response: httpx2.Response) -> None:
        body = response.request.content
        method = json.loads(body).get("method", "") if body else response.request.method
        seen.append((method, response.request.headers.get("mcp-protocol-version"), response.status_code))

    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {account.network_token}"}, timeout=30,
                                  event_hooks={"response": [record]}) as http:
        async with Client(streamable_http_client(server.url + "/mcp", http_client=http)) as mcp_client:
            assert mcp_client.protocol_version == "2026-07-28"
            result = await mcp_client.call_tool("report_status", {"alias": "auto-agent"})
            assert not result.is_error and result.structured_content["alias"] == "auto-agent"
            tools = await mcp_client.list_tools()
            assert SPEC_TOOLS <= {t.name for t in tools.tools}
    assert seen[0] == ("server/discover", "2026-07-28", 200)
    assert {method for method, _, _ in seen} == {"server/discover", "tools/call", "tools/list"}
    assert all(version == "2026-07-28" and status == 200 for _, version, status in seen)


async def test_sdk_cancel_of_a_long_poll_ends_it_on_the_server(server: ServerHandle, client: httpx.AsyncClient,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK sends `notifications/cancelled` when its caller gives up on a request; the server's long-poll
    ends at once (it would otherwise hold a broker subscription for the whole wait)."""
    owner, token_a, _ = await two_users(client)
    async with sdk_session(server, token_a) as a:
        await ok(a, "report_status", {"alias": "impatient"})
        await wait_until(lambda: server.hub.broker.stream_count(owner.network_id, "impatient") == 1)
        streams = server.hub.broker.subscriber_count()
        seen: list[dict[str, Any]] = []
        real_cancel = push.cancel_request

        def spy(h: Any, session: Any, request_id: Any) -> bool:
            found = real_cancel(h, session, request_id)
            seen.append({"request_id": request_id, "found": found})
            return found

        monkeypatch.setattr(push, "cancel_request", spy)
        with trio.fail_after(30):  # bounded: far below the 50 s wait
            async with trio.open_nursery() as nursery:
                poll_scope = trio.CancelScope()

                async def long_poll() -> None:
                    with poll_scope:
                        await a.call_tool("get_inbox", {"wait_seconds": 50})

                nursery.start_soon(long_poll)
                await wait_until(lambda: server.hub.broker.subscriber_count() > streams)  # it waits
                poll_scope.cancel()  # the model's user pressed Esc
            # The courtesy cancel reached the tool call in flight, and the waiter is gone.
            await wait_until(lambda: server.hub.broker.subscriber_count() == streams)
        assert [s["found"] for s in seen] == [True], seen
        # The session is still usable afterwards.
        assert (await ok(a, "whoami"))["alias"] == "impatient"
