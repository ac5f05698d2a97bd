"""CommHub as an A2A client (docs/a2a-client.md): an alias bound to an external A2A agent, built with the official
`a2a-sdk` server side (tests/a2a_remote.py) on loopback; CommHub agents hand it tasks exactly as to a local agent.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw
import httpx
import httpx2
import pytest
import trio
from a2a_remote import RemoteAgent
from cli_support import cli_env, run_cli
from conftest import Account, create_token, make_settings, own_server, register, tool
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

from commhub_lib import db as dbmod
from commhub_lib.config import Settings
from commhub_lib.mcp import channel
from commhub_lib.runtime.server import ServerHandle

REMOTE_TOKEN = "remote-secret-1"
FAST = dict(a2a_client_targets="loopback", a2a_client_poll_seconds=0.05, a2a_client_poll_max_seconds=0.3,
            a2a_client_retry_base_seconds=0.1, a2a_client_retry_max_seconds=0.5)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Test settings: loopback A2A agents allowed, quick polls and retries."""
    return make_settings(tmp_path, **FAST)


@pytest.fixture
def remote() -> Iterator[RemoteAgent]:
    """The external A2A agent (v1.0), served until the test ends."""
    agent = RemoteAgent(REMOTE_TOKEN).start()
    yield agent
    agent.stop()


async def bind(client: httpx.AsyncClient, owner: Account, alias: str, url: str, token: str = REMOTE_TOKEN,
               status: int = 200) -> dict[str, Any]:
    """PUT …/aliases/<alias>/a2a-remote; the answer's JSON."""
    r = await client.put(f"/api/networks/{owner.network_id}/aliases/{alias}/a2a-remote",
                         json={"url": url, "token": token}, headers=owner.auth)
    assert r.status_code == status, r.text
    return r.json()


async def agent(client: httpx.AsyncClient, owner: Account, alias: str) -> str:
    """A network token whose agent has claimed `alias`."""
    token = await create_token(client, owner, name=alias)
    await tool(client, token, "report_status", {"alias": alias, "status": "idle"})
    return token


async def task_when(client: httpx.AsyncClient, owner: Account, task_id: str, *statuses: str,
                    within: float = 20.0) -> dict[str, Any]:
    """GET /api/tasks/<id> until the task is in one of `statuses` (bounded); the answer."""
    deadline = trio.current_time() + within
    while True:
        r = await client.get(f"/api/tasks/{task_id}", headers=owner.auth)
        assert r.status_code == 200, r.text
        body = r.json()
        if body["task"]["status"] in statuses:
            return body
        assert trio.current_time() < deadline, f"task stayed {body['task']['status']}: {body}"
        await trio.sleep(0.05)


async def remote_saw(remote: RemoteAgent, condition: Any) -> None:
    """Wait (in a thread: the agent's records are guarded by a threading.Condition) until the agent saw it."""
    await trio.to_thread.run_sync(remote.wait_for, condition)


def replies_of(client_body: dict[str, Any]) -> list[str]:
    """The timeline's event names."""
    return [e["event"] for e in client_body["events"]]


async def test_a_task_to_a_bound_alias_comes_back_as_its_reply(server: ServerHandle, client: httpx.AsyncClient,
                                                              remote: RemoteAgent) -> None:
    owner = await register(client)
    bound = await bind(client, owner, "outside", remote.card_url)
    assert bound["token_set"] is True and "token" not in bound and REMOTE_TOKEN not in str(bound)
    token = await create_token(client, owner, name="coder")
    # The agent is a real MCP client (the official SDK), and sends to the bound alias as to any other.
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http, \
            streamable_http_client(server.url + "/mcp", http_client=http) as (read, write), \
            ClientSession(read, write) as session:
        await session.initialize()
        await session.call_tool("report_status", {"alias": "coder", "status": "working"})
        status = await session.call_tool("get_all_status", {})
        assert status.structured_content is not None
        outside = [s for s in status.structured_content["sessions"] if s["alias"] == "outside"]
        assert outside and outside[0]["online"] is True and outside[0]["held_by"] == "a2a", outside
        coder = [s for s in status.structured_content["sessions"] if s["alias"] == "coder"]
        assert coder[0]["held_by"] in ("channel", "polling"), coder  # only the bound alias is held by a2a
        sent = await session.call_tool("send_task", {"to": "outside", "title": "Greet", "content": "echo hello"})
        assert not sent.is_error and sent.structured_content is not None, sent
        task_id = sent.structured_content["task_id"]
        done = await task_when(client, owner, task_id, "replied")
        inbox = await session.call_tool("get_inbox", {})
        assert inbox.structured_content is not None
    assert "echo: Greet" in done["completion"]["result"] and "echo hello" in done["completion"]["result"]
    assert replies_of(done)[:1] == ["delivered"] and "replied" in replies_of(done)
    assert remote.received.metadata[0]["commhub_task_id"] == task_id
    assert remote.received.metadata[0]["commhub_from"] == "coder"
    items = inbox.structured_content["items"]
    assert any(i.get("task_id") == task_id and i.get("status") == "done" for i in items), items
    shown = (await client.get(f"/api/networks/{owner.network_id}/aliases/outside/a2a-remote",
                              headers=owner.auth)).json()
    assert [(o["kind"], o["status"]) for o in shown["outbox"]] == [("task", "sent")]


async def test_a_question_comes_back_and_the_answer_goes_to_the_same_remote_task(
        server: ServerHandle, client: httpx.AsyncClient, remote: RemoteAgent) -> None:
    owner = await register(client)
    await bind(client, owner, "outside", remote.card_url)
    token = await agent(client, owner, "coder")
    task_id = (await tool(client, token, "send_task", {"to": "outside", "content": "ask me"}))["task_id"]
    asked = await task_when(client, owner, task_id, "input_required")
    assert "question" in replies_of(asked)
    inbox = await tool(client, token, "get_inbox", {})
    question = [i for i in inbox["items"] if i.get("task_id") == task_id and i.get("status") == "question"]
    assert question and "which colour?" in question[0]["content"], inbox
    await tool(client, token, "send_reply", {"task_id": task_id, "content": "blue"})
    done = await task_when(client, owner, task_id, "replied")
    assert done["completion"]["result"] == "colour: blue"
    # The answer went to the remote task that asked, not to a new one.
    assert remote.received.texts[1] == "blue"
    assert remote.received.task_ids[1] == remote.received.task_ids[0]


async def test_the_agents_inline_file_comes_back_as_an_attachment_of_the_reply(
        server: ServerHandle, client: httpx.AsyncClient, remote: RemoteAgent) -> None:
    owner = await register(client)
    await bind(client, owner, "outside", remote.card_url)
    token = await agent(client, owner, "coder")
    task_id = (await tool(client, token, "send_task", {"to": "outside", "content": "a file please"}))["task_id"]
    done = await task_when(client, owner, task_id, "replied")
    result = done["completion"]["result"]
    assert "here it is" in result and "[file hello.txt: attached]" in result
    assert "[file big.bin: https://files.example/big.bin]" in result  # a file by URL stays a link: never fetched
    [attached] = done["reply_attachments"]
    assert attached["filename"] == "hello.txt" and attached["content_type"] == "text/plain"
    r = await client.get(f"/api/attachments/{attached['attachment_id']}", headers=owner.auth)
    assert r.status_code == 200 and r.content == b"hello from the agent\n"


async def test_a_file_too_large_to_attach_is_left_out_and_the_reply_says_so(tmp_path: Path,
                                                                             remote: RemoteAgent) -> None:
    async with own_server(tmp_path, "small-files", max_inline_attachment_bytes=8, **FAST) as handle, \
            httpx.AsyncClient(base_url=handle.url, timeout=30) as client:
        owner = await register(client)
        await bind(client, owner, "outside", remote.card_url)
        token = await agent(client, owner, "coder")
        task_id = (await tool(client, token, "send_task", {"to": "outside", "content": "a file please"}))["task_id"]
        done = await task_when(client, owner, task_id, "replied")
    assert done["reply_attachments"] == []
    assert "here it is" in done["completion"]["result"]
    assert "file(s) could not be attached" in done["completion"]["result"]


async def test_a_remote_failure_fails_the_task(server: ServerHandle, client: httpx.AsyncClient,
                                               remote: RemoteAgent) -> None:
    owner = await register(client)
    await bind(client, owner, "outside", remote.card_url)
    token = await agent(client, owner, "coder")
    task_id = (await tool(client, token, "send_task", {"to": "outside", "content": "fail please"}))["task_id"]
    failed = await task_when(client, owner, task_id, "failed")
    assert failed["completion"]["result"] == "cannot do that"


async def test_an_answer_the_network_cannot_store_fails_the_task_with_the_reason(tmp_path: Path,
                                                                                 remote: RemoteAgent) -> None:
    async with own_server(tmp_path, "quota", max_network_bytes=60_000, **FAST) as handle, \
            httpx.AsyncClient(base_url=handle.url, timeout=30) as client:
        owner = await register(client)
        await bind(client, owner, "outside", remote.card_url)
        token = await agent(client, owner, "coder")
        task_id = (await tool(client, token, "send_task", {"to": "outside", "content": "big one"}))["task_id"]
        failed = await task_when(client, owner, task_id, "failed")
    assert "could not be stored" in failed["completion"]["result"], failed["completion"]


async def test_cancelling_the_task_cancels_the_remote_task(server: ServerHandle, client: httpx.AsyncClient,
                                                           remote: RemoteAgent) -> None:
    owner = await register(client)
    await bind(client, owner, "outside", remote.card_url)
    token = await agent(client, owner, "coder")
    task_id = (await tool(client, token, "send_task", {"to": "outside", "content": "slow work"}))["task_id"]
    running = await task_when(client, owner, task_id, "running")
    assert "progress" in replies_of(running)  # the remote status message "started"
    await tool(client, token, "cancel_task", {"task_id": task_id, "reason": "not needed"})
    await remote_saw(remote, lambda r: r.cancels == [r.task_ids[0]])
    assert (await task_when(client, owner, task_id, "cancelled"))["task"]["status"] == "cancelled"


async def test_an_agent_that_streams_is_followed_over_its_stream(tmp_path: Path) -> None:
    """With polls a minute apart, only the stream (SubscribeToTask) can bring the question, the progress and the
    completion back within the test's bounds; an answer interrupts the stream and is sent first."""
    streaming = RemoteAgent(REMOTE_TOKEN, streaming=True).start()
    slow_polls = {**FAST, "a2a_client_poll_seconds": 60.0, "a2a_client_poll_max_seconds": 60.0}
    try:
        async with own_server(tmp_path, "streams", **slow_polls) as handle, \
                httpx.AsyncClient(base_url=handle.url, timeout=30) as client:
            owner = await register(client)
            await bind(client, owner, "outside", streaming.card_url)
            token = await agent(client, owner, "coder")
            asked = (await tool(client, token, "send_task", {"to": "outside", "content": "ask me"}))["task_id"]
            await task_when(client, owner, asked, "input_required", within=10)
            await tool(client, token, "send_reply", {"task_id": asked, "content": "green"})
            assert (await task_when(client, owner, asked, "replied", within=10))["completion"]["result"] == \
                "colour: green"
            slow = (await tool(client, token, "send_task", {"to": "outside", "content": "slow work"}))["task_id"]
            await remote_saw(streaming, lambda r: r.waiting == 1)
            streaming.release()
            assert (await task_when(client, owner, slow, "replied", within=10))["completion"]["result"] == \
                "slow done"
    finally:
        streaming.stop()


async def test_unbinding_fails_a_task_still_at_the_agent(server: ServerHandle, client: httpx.AsyncClient,
                                                         remote: RemoteAgent) -> None:
    owner = await register(client)
    await bind(client, owner, "outside", remote.card_url)
    token = await agent(client, owner, "coder")
    task_id = (await tool(client, token, "send_task", {"to": "outside", "content": "slow one"}))["task_id"]
    await task_when(client, owner, task_id, "running")
    r = await client.delete(f"/api/networks/{owner.network_id}/aliases/outside/a2a-remote", headers=owner.auth)
    assert r.status_code == 200
    failed = await task_when(client, owner, task_id, "failed")
    assert "unbound" in failed["completion"]["result"]


async def test_a_task_the_agent_forgot_fails_with_the_reason(server: ServerHandle, client: httpx.AsyncClient) -> None:
    first = RemoteAgent(REMOTE_TOKEN).start()
    try:
        owner = await register(client)
        await bind(client, owner, "outside", first.card_url)
        token = await agent(client, owner, "coder")
        task_id = (await tool(client, token, "send_task", {"to": "outside", "content": "slow one"}))["task_id"]
        await task_when(client, owner, task_id, "running")
    finally:
        first.stop()
    again = RemoteAgent(REMOTE_TOKEN, port=first.port).start()  # the agent restarted and lost its tasks
    try:
        failed = await task_when(client, owner, task_id, "failed")
        assert "no longer knows the task" in failed["completion"]["result"]
    finally:
        again.stop()


async def test_a_forwarded_task_completes_across_a_hub_restart(tmp_path: Path, remote: RemoteAgent) -> None:
    async with own_server(tmp_path, "restart", **FAST) as first, \
            httpx.AsyncClient(base_url=first.url, timeout=30) as client:
        owner = await register(client)
        await bind(client, owner, "outside", remote.card_url)
        token = await agent(client, owner, "coder")
        task_id = (await tool(client, token, "send_task", {"to": "outside", "content": "slow job"}))["task_id"]
        await task_when(client, owner, task_id, "running")
        await remote_saw(remote, lambda r: r.waiting == 1)
    # The hub is down; the remote agent finishes meanwhile; the next hub on the same database picks the task up.
    remote.release()
    async with own_server(tmp_path, "restart", **FAST) as second, \
            httpx.AsyncClient(base_url=second.url, timeout=30) as client:
        done = await task_when(client, owner, task_id, "replied")
    assert done["completion"]["result"] == "slow done"
    assert len(remote.received.texts) == 1  # forwarded once, followed after the restart


async def test_a_task_not_yet_forwarded_is_forwarded_by_the_next_hub(tmp_path: Path) -> None:
    late = RemoteAgent(REMOTE_TOKEN)  # nothing listens yet: the forward stays in the outbox
    try:
        async with own_server(tmp_path, "outbox", **FAST) as first, \
                httpx.AsyncClient(base_url=first.url, timeout=30) as client:
            owner = await register(client)
            await bind(client, owner, "outside", late.card_url)
            token = await agent(client, owner, "coder")
            task_id = (await tool(client, token, "send_task", {"to": "outside", "content": "echo durable"}))["task_id"]
        late.start()
        async with own_server(tmp_path, "outbox", **FAST) as second, \
                httpx.AsyncClient(base_url=second.url, timeout=30) as client:
            done = await task_when(client, owner, task_id, "replied")
        assert done["completion"]["result"] == "echo: echo durable"
        assert late.received.texts == ["echo durable"]
    finally:
        late.stop()


async def test_an_agent_speaking_a2a_0_3_gets_the_0_3_methods(server: ServerHandle, client: httpx.AsyncClient) -> None:
    old = RemoteAgent(REMOTE_TOKEN, version="0.3").start()
    try:
        owner = await register(client)
        await bind(client, owner, "old", old.card_url)
        token = await agent(client, owner, "coder")
        task_id = (await tool(client, token, "send_task", {"to": "old", "content": "echo old"}))["task_id"]
        done = await task_when(client, owner, task_id, "replied")
        assert done["completion"]["result"] == "echo: echo old"
    finally:
        old.stop()


async def test_a_refused_credential_fails_the_task_with_the_reason(server: ServerHandle, client: httpx.AsyncClient,
                                                                   remote: RemoteAgent) -> None:
    owner = await register(client)
    await bind(client, owner, "outside", remote.rpc_url, token="wrong")
    token = await agent(client, owner, "coder")
    task_id = (await tool(client, token, "send_task", {"to": "outside", "content": "echo x"}))["task_id"]
    failed = await task_when(client, owner, task_id, "failed")
    assert "401" in failed["completion"]["result"] and "outside" in failed["completion"]["result"]
    assert remote.received.texts == []


async def test_binding_rules(server: ServerHandle, client: httpx.AsyncClient, remote: RemoteAgent) -> None:
    owner = await register(client)
    # The SSRF guard of webhooks: a link-local (cloud metadata) address is refused whatever the setting allows here.
    refused = await bind(client, owner, "outside", "http://169.254.169.254/.well-known/agent-card.json", status=400)
    assert refused["error"] == "remote_url_not_allowed"
    assert (await bind(client, owner, "outside", "ftp://example.com/card.json", status=400))["error"] == \
        "remote_url_not_allowed"
    await bind(client, owner, "outside", remote.card_url)
    shown = (await client.get(f"/api/networks/{owner.network_id}/aliases/outside/a2a-remote",
                              headers=owner.auth)).json()
    assert shown["url"] == remote.card_url and shown["token_set"] is True and "token" not in shown
    # Only a person who is owner/admin manages bindings; an agent's token cannot.
    token = await agent(client, owner, "coder")
    r = await client.get(f"/api/networks/{owner.network_id}/aliases/outside/a2a-remote",
                         headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 403
    # A message (not a task) to the bound alias is refused with what to do instead.
    r = await client.post("/mcp", headers={"Authorization": f"Bearer {token}"}, json={
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "send_message", "arguments": {"to": "outside", "content": "hi"}}})
    result = r.json()["result"]
    assert result["isError"] and result["structuredContent"]["error"] == "remote_takes_tasks_only"
    # No agent can claim the bound alias.
    other = await create_token(client, owner, name="intruder")
    r = await client.post("/mcp", headers={"Authorization": f"Bearer {other}"}, json={
        "jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "report_status", "arguments": {"alias": "outside"}}})
    assert r.json()["result"]["structuredContent"]["error"] == "alias_taken"
    # An alias an agent holds cannot be bound.
    assert (await bind(client, owner, "coder", remote.card_url, status=409))["error"] == "alias_taken"
    r = await client.delete(f"/api/networks/{owner.network_id}/aliases/outside/a2a-remote", headers=owner.auth)
    assert r.status_code == 200 and r.json()["deleted"] is True
    r = await client.get(f"/api/networks/{owner.network_id}/aliases/outside/a2a-remote", headers=owner.auth)
    assert r.status_code == 404 and r.json()["error"] == "remote_not_bound"


async def test_the_default_targets_refuse_loopback(tmp_path: Path) -> None:
    async with own_server(tmp_path, "public") as handle, httpx.AsyncClient(base_url=handle.url, timeout=30) as client:
        owner = await register(client)
        refused = await bind(client, owner, "outside", "http://127.0.0.1:9/.well-known/agent-card.json", status=400)
        assert refused["error"] == "remote_url_not_allowed" and "a2a_client_targets" in refused["message"]


@pytest.mark.subprocess
async def test_the_cli_binds_shows_and_unbinds(server: ServerHandle, client: httpx.AsyncClient,
                                               remote: RemoteAgent) -> None:
    owner = await register(client)
    env = cli_env(server.url, owner.token)
    bound = await run_cli("a2a", "bind", "outside", remote.card_url, "--token-stdin", "--json", env=env,
                          stdin=REMOTE_TOKEN + "\n")
    assert bound.code == 0, bound.err
    assert bound.json()["token_set"] is True and REMOTE_TOKEN not in bound.out
    token = await agent(client, owner, "coder")
    task_id = (await tool(client, token, "send_task", {"to": "outside", "content": "echo cli"}))["task_id"]
    await task_when(client, owner, task_id, "replied")
    shown = await run_cli("a2a", "show", "outside", env=env)
    assert shown.code == 0 and remote.card_url in shown.out and task_id in shown.out and "sent" in shown.out, shown.out
    gone = await run_cli("a2a", "unbind", "outside", env=env)
    assert gone.code == 0 and "unbound outside" in gone.out, gone.err
    again = await run_cli("a2a", "unbind", "outside", env=env)
    assert again.code == 1 and "remote_not_bound" in again.err + again.out


@pytest.mark.subprocess
async def test_a_task_the_agent_cancels_ends_cancelled_and_ends_the_senders_wait(
        server: ServerHandle, client: httpx.AsyncClient, remote: RemoteAgent) -> None:
    owner = await register(client)
    await bind(client, owner, "outside", remote.card_url)
    person = await run_cli("send", "outside", "give up now", "--wait", "--timeout", "20", "--json",
                           env=cli_env(server.url, owner.token))
    assert person.code == 1, (person.out, person.err)  # the wait ended, and not with a success
    answer = person.json()
    assert answer["ok"] is False and answer["reply"]["status"] == "cancelled"
    assert "I gave up on it" in answer["reply"]["content"]
    ended = await task_when(client, owner, answer["sent"]["task_id"], "cancelled")
    assert ended["completion"]["status"] == "cancelled"
    # An agent that sent it is told in plain words (its channel notification), not asked to carry on.
    text = channel.describe("new_reply", {"from": "outside", "status": "cancelled", "task_id": "t1",
                                          "message_id": "m1"})
    assert "cancelled task t1" in text and "carry on" not in text


def test_migration_0015_adds_the_a2a_tables_to_a_v11_database(tmp_path: Path) -> None:
    path = str(tmp_path / "v11.db")
    old = apsw.Connection(path)
    with old:
        for step in sorted(n for n in dbmod.migration_steps() if n <= 11):
            old.execute(dbmod.migration_steps()[step])
        old.pragma("user_version", 11)
    old.close()
    database = dbmod.Database(path)
    try:
        assert database.con.pragma("user_version") == dbmod.SCHEMA_VERSION
        tables = {r["name"] for r in database.query("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"a2a_remotes", "a2a_outbox", "a2a_forwarded"} <= tables
    finally:
        database.close()


async def test_an_unreachable_agent_is_retried_until_it_answers(server: ServerHandle,
                                                                client: httpx.AsyncClient) -> None:
    late = RemoteAgent(REMOTE_TOKEN)  # its port is taken but nothing listens yet: connections are refused
    try:
        owner = await register(client)
        await bind(client, owner, "outside", late.card_url)
        token = await agent(client, owner, "coder")
        task_id = (await tool(client, token, "send_task", {"to": "outside", "content": "echo later"}))["task_id"]
        path = f"/api/networks/{owner.network_id}/aliases/outside/a2a-remote"
        deadline = trio.current_time() + 20
        while True:  # the forward failed at least twice, and waits for its next try
            outbox = (await client.get(path, headers=owner.auth)).json()["outbox"]
            if outbox and outbox[0]["attempts"] >= 2:
                break
            assert trio.current_time() < deadline, outbox
            await trio.sleep(0.05)
        assert outbox[0]["status"] == "pending" and outbox[0]["last_error"], outbox
        assert (await task_when(client, owner, task_id, "delivered"))["task"]["status"] == "delivered"
        late.start()
        done = await task_when(client, owner, task_id, "replied")
        assert done["completion"]["result"] == "echo: echo later"
    finally:
        late.stop()


def test_the_client_reads_both_versions_shapes() -> None:
    from commhub_lib.bridge import client as a2a

    old_card = {"name": "old", "url": "/rpc", "protocolVersion": "0.3.0", "capabilities": {"streaming": True}}
    assert a2a.read_card(old_card, "https://agent.example/.well-known/agent-card.json") == \
        a2a.Endpoint("https://agent.example/rpc", a2a.V03, True, "old")
    grpc_only = {"supportedInterfaces": [{"url": "https://a.example", "protocolBinding": "GRPC"}]}
    with pytest.raises(a2a.A2AError) as refused:
        a2a.read_card(grpc_only, "https://a.example/card.json")
    assert refused.value.permanent
    assert a2a.read_task({"id": "t", "status": {"state": "input-required"}}).state == a2a.INPUT_REQUIRED
    assert a2a.read_task({"id": "t", "status": {"state": "TASK_STATE_CANCELED"}}).state == a2a.CANCELED
    assert a2a.read_task({"id": "t", "status": {"state": "sleeping"}}).state == a2a.UNKNOWN
    direct = a2a.read_send_result({"message": {"parts": [{"text": "hi"}, {"url": "https://x/y.png",
                                                                        "filename": "y.png"}]}}, a2a.V1)
    assert direct.task_id is None and direct.state == a2a.COMPLETED and direct.text == "hi\n[file y.png: https://x/y.png]"
    legacy = a2a.read_send_result({"kind": "message", "parts": [{"kind": "data", "data": {"a": 1}}]}, a2a.V03)
    assert legacy.state == a2a.COMPLETED and legacy.text == '{"a": 1}'


def test_settled_forwards_are_pruned_and_pending_ones_kept(tmp_path: Path) -> None:
    from commhub_lib.store import bridge as bridge_store

    database = dbmod.Database(str(tmp_path / "prune.db"))
    try:
        with database.write():
            for n, status in enumerate(("sent", "failed", "pending")):
                bridge_store.insert_outbox(database, "net", "outside", "task", f"t{n}", None, "2020-01-01 00:00:00")
                if status != "pending":
                    database.execute("UPDATE a2a_outbox SET status = ? WHERE task_id = ?", (status, f"t{n}"))
            bridge_store.insert_forwarded(database, "t0", "net", "outside", "r0", None, "2020-01-01 00:00:00")
            bridge_store.insert_forwarded(database, "t2", "net", "outside", "r2", None, "2020-01-01 00:00:00")
            bridge_store.stop_following(database, "t0", "2020-01-01 00:00:00")
            assert bridge_store.delete_settled_before(database, "2021-01-01 00:00:00", 100) == 3
        assert bridge_store.tasks_with_work(database) == ["t2"]
        assert bridge_store.next_outbox(database, "t2") is not None
    finally:
        database.close()


async def inbox_item(client: httpx.AsyncClient, token: str, wanted: Any, within: float = 20.0) -> dict[str, Any]:
    """The first inbox item `wanted(item)` accepts, polling get_inbox (bounded)."""
    deadline = trio.current_time() + within
    while True:
        items = (await tool(client, token, "get_inbox", {}))["items"]
        found = [i for i in items if wanted(i)]
        if found:
            return found[0]
        assert trio.current_time() < deadline, items
        await trio.sleep(0.05)


async def test_a_task_crosses_to_another_hubs_a2a_agent_and_back(tmp_path: Path) -> None:
    """End to end, CommHub to CommHub: hub A's alias `reviewer` is bound to hub B's agent `coder`, served over A2A
    (docs/a2a.md). A's agent sends a task, B's agent asks a question, A's agent answers, B's agent finishes: each
    step crosses both hubs, over B's stream (its card says it streams)."""
    async with own_server(tmp_path, "hub-b") as hub_b, own_server(tmp_path, "hub-a", **FAST) as hub_a, \
            httpx.AsyncClient(base_url=hub_b.url, timeout=30) as b, \
            httpx.AsyncClient(base_url=hub_a.url, timeout=30) as a:
        owner_b = await register(b)
        coder = await agent(b, owner_b, "coder")
        r = await b.put(f"/api/networks/{owner_b.network_id}/aliases/coder/a2a", headers=owner_b.auth,
                        json={"enabled": True, "description": "writes code"})
        assert r.status_code == 200, r.text
        caller_token = await create_token(b, owner_b, name="hub-a")  # hub A's credential at hub B
        owner_a = await register(a)
        card = f"{hub_b.url}/a2a/{owner_b.network_id}/coder/.well-known/agent-card.json"
        await bind(a, owner_a, "reviewer", card, token=caller_token)
        boss = await agent(a, owner_a, "boss")
        task_id = (await tool(a, boss, "send_task", {"to": "reviewer", "title": "Fix", "content": "fix the bug"}))[
            "task_id"]
        arrived = await inbox_item(b, coder, lambda i: i.get("kind") == "task")
        remote_task = arrived["task_id"]
        await tool(b, coder, "send_reply", {"task_id": remote_task, "status": "question",
                                            "content": "which bug?"})
        await task_when(a, owner_a, task_id, "input_required")
        question = await inbox_item(a, boss, lambda i: i.get("task_id") == task_id and i.get("status") == "question")
        assert question["content"] == "which bug?"
        await tool(a, boss, "send_reply", {"task_id": task_id, "content": "the one in parse()"})
        answer = await inbox_item(b, coder, lambda i: i.get("task_id") == remote_task and i.get("kind") == "reply")
        assert answer["content"] == "the one in parse()"
        await tool(b, coder, "send_reply", {"task_id": remote_task, "status": "done", "content": "fixed in parse()"})
        done = await task_when(a, owner_a, task_id, "replied")
        assert "fixed in parse()" in done["completion"]["result"]
        there = (await b.get(f"/api/tasks/{remote_task}", headers=owner_b.auth)).json()
        assert there["task"]["status"] == "replied" and there["task"]["from_name"].startswith("a2a:")
