"""`commhub send|status|tasks|task|cancel|connect` as real subprocesses against a real server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from cli_support import Run, cli_env, run_cli
from conftest import Account, create_token, mcp_call, own_server, register

from commhub_lib.runtime.server import ServerHandle

pytestmark = pytest.mark.subprocess


async def _agent(client: httpx.AsyncClient, account: Account, alias: str) -> str:
    token = await create_token(client, account, name=alias, alias=alias)
    await mcp_call(client, token, "report_status", {"alias": alias, "status": "idle", "agent": "test"})
    return token


async def _next_item(client: httpx.AsyncClient, token: str) -> dict[str, Any]:
    """The agent's next inbox item, waiting for it with a long-poll (no sleeps); acked, so it is not seen twice."""
    result = await mcp_call(client, token, "get_inbox", {"wait_seconds": 20, "limit": 1})
    items = result["structuredContent"]["items"]
    assert items, result
    await mcp_call(client, token, "ack_inbox", {"message_ids": [items[0]["message_id"]]})
    return items[0]


async def _send_in_background(nursery: trio.Nursery, *args: str, env: dict[str, str],
                              done: trio.Event | None = None) -> dict[str, Run]:
    box: dict[str, Run] = {}

    async def go() -> None:
        box["run"] = await run_cli(*args, env=env, limit_seconds=60)
        if done is not None:
            done.set()

    nursery.start_soon(go)
    return box


@pytest.mark.slow
async def test_send_wait_returns_the_task_reply(server: ServerHandle, client: httpx.AsyncClient) -> None:
    boss = await register(client)
    worker = await _agent(client, boss, "coder-1")
    env = cli_env(server.url, boss.token)
    async with trio.open_nursery() as nursery:
        box = await _send_in_background(nursery, "send", "coder-1", "run the tests", "--priority", "high",
                                        "--title", "tests", "--wait", "--timeout", "30", "--json", env=env)
        item = await _next_item(client, worker)
        assert item["kind"] == "task" and item["content"] == "run the tests" and item["from"] == boss.username
        await mcp_call(client, worker, "send_reply", {"task_id": item["task_id"], "status": "progress",
                                                      "content": "halfway"})
        await mcp_call(client, worker, "send_reply", {"task_id": item["task_id"], "status": "done",
                                                      "content": "42 passed"})
    run = box["run"]
    assert run.code == 0, run.err
    answer = run.json()
    assert answer["sent"]["task_id"] == item["task_id"]
    assert answer["reply"]["content"] == "42 passed" and answer["reply"]["status"] == "done"
    assert "[progress] coder-1: halfway" in run.err

    # The same in text form, with a failing reply: the content on stdout, exit code 1.
    async with trio.open_nursery() as nursery:
        box = await _send_in_background(nursery, "send", "coder-1", "deploy", "--wait", "--timeout", "30", env=env)
        item = await _next_item(client, worker)
        await mcp_call(client, worker, "send_reply", {"task_id": item["task_id"], "status": "failed",
                                                      "content": "no credentials"})
    run = box["run"]
    assert run.code == 1 and run.out.strip() == "no credentials" and "status failed" in run.err


async def test_send_wait_for_a_message_reply_from_an_agent_token(server: ServerHandle,
                                                                 client: httpx.AsyncClient) -> None:
    owner = await register(client)
    worker = await _agent(client, owner, "coder-2")
    lead = await _agent(client, owner, "lead")  # an agent token sends as its bound alias
    env = cli_env(server.url, lead)
    async with trio.open_nursery() as nursery:
        box = await _send_in_background(nursery, "send", "coder-2", "which branch?", "--message", "--wait",
                                        "--timeout", "30", env=env)
        item = await _next_item(client, worker)
        assert item["kind"] == "message" and item["from"] == "lead"
        await mcp_call(client, worker, "send_reply", {"message_id": item["message_id"], "content": "main"})
    run = box["run"]
    assert run.code == 0, run.err
    assert run.out.strip() == "main"


async def test_send_wait_times_out_and_plain_send(server: ServerHandle, client: httpx.AsyncClient) -> None:
    boss = await register(client)
    await _agent(client, boss, "slow")
    env = cli_env(server.url, boss.token)
    late = await run_cli("send", "slow", "anything", "--wait", "--timeout", "1", env=env)
    assert late.code == 1 and "no reply to task" in late.err and "commhub task" in late.err
    sent = await run_cli("send", "slow", "note this", "--message", env=env)
    assert sent.code == 0 and sent.out.startswith("message msg_") and "sent to slow" in sent.out
    unknown = await run_cli("send", "nobody", "hello", env=env)
    assert unknown.code == 1 and "unknown_recipient" in unknown.err
    bad = await run_cli("send", "slow", "x", "--message", "--priority", "high", env=env)
    assert bad.code == 2
    denied = await run_cli("status", env=cli_env(server.url, "utok_not_a_real_token"))
    assert denied.code == 1 and "invalid_token" in denied.err


@pytest.mark.slow
async def test_status_tasks_task_and_cancel(server: ServerHandle, client: httpx.AsyncClient) -> None:
    boss = await register(client)
    worker = await _agent(client, boss, "coder-3")
    await mcp_call(client, worker, "report_status", {"status": "working", "task": "refactor", "progress": "2/5"})
    env = cli_env(server.url, boss.token)

    status = await run_cli("status", env=env)
    assert status.code == 0, status.err
    header, row = status.out.splitlines()[:2]
    assert header.split()[:2] == ["ALIAS", "STATUS"]
    assert row.split()[:2] == ["coder-3", "working"] and "refactor" in row and "2/5" in row
    assert (await run_cli("status", "--json", env=env)).json()["sessions"][0]["alias"] == "coder-3"

    sent = (await run_cli("send", "coder-3", "write docs", "--title", "docs", "--json", env=env)).json()
    task_id = sent["task_id"]
    item = await _next_item(client, worker)  # fetching starts it
    assert item["task_id"] == task_id
    tasks = await run_cli("tasks", "--status", "running", "--to", "coder-3", env=env)
    assert tasks.code == 0 and task_id in tasks.out and "docs" in tasks.out
    assert (await run_cli("tasks", "--status", "replied", "--json", env=env)).json()["tasks"] == []

    await mcp_call(client, worker, "send_reply", {"task_id": task_id, "status": "progress", "content": "outline"})
    timeline = await run_cli("task", task_id, env=env)
    assert timeline.code == 0, timeline.err
    events = [line.split()[2] for line in timeline.out.splitlines() if line[:4].isdigit()]
    assert events[:3] == ["delivered", "running", "progress"], timeline.out
    as_json = (await run_cli("task", task_id, "--json", env=env)).json()
    assert [e["event"] for e in as_json["events"]][:3] == ["delivered", "running", "progress"]
    missing = await run_cli("task", "no-such-task", env=env)
    assert missing.code == 1 and "not found" in missing.err


@pytest.mark.slow
async def test_cancel(server: ServerHandle, client: httpx.AsyncClient) -> None:
    boss = await register(client)
    await _agent(client, boss, "coder-4")
    env = cli_env(server.url, boss.token)
    task_id = (await run_cli("send", "coder-4", "write docs", "--json", env=env)).json()["task_id"]
    cancel = await run_cli("cancel", task_id, "--reason", "not needed", "--json", env=env)
    assert cancel.code == 0, cancel.err
    assert cancel.json()["status"] == "cancelled"
    again = await run_cli("cancel", task_id, env=env)
    assert again.code == 1 and "already cancelled" in again.err


@pytest.mark.slow
async def test_connect_prints_each_clients_config_with_a_bound_token(server: ServerHandle,
                                                                      client: httpx.AsyncClient) -> None:
    boss = await register(client)
    env = cli_env(server.url, boss.token)
    claude = await run_cli("connect", "--client", "claude", "--alias", "reviewer", env=env)
    assert claude.code == 0, claude.err
    config_text = claude.out.split("\n# the agent's token")[0].split("\n", 1)[1]
    entry = json.loads(config_text)["mcpServers"]["commhub"]
    assert entry["type"] == "http" and entry["url"] == f"{server.url}/mcp"
    assert entry["headers"]["Authorization"] == "Bearer ${COMMHUB_AGENT_TOKEN}"
    secret = claude.out.split("export COMMHUB_AGENT_TOKEN=")[1].split()[0]
    assert secret.startswith("ntok_") and "report_status" in claude.out and "reviewer" in claude.out
    assert secret not in claude.err  # shown once, in the config only
    who = await mcp_call(client, secret, "whoami")
    assert who["structuredContent"]["alias"] == "reviewer"  # the token is bound to the alias

    gemini = (await run_cli("connect", "--client", "gemini", "--alias", "g1", "--json", env=env)).json()
    assert gemini["config"]["content"]["mcpServers"]["commhub"]["httpUrl"] == f"{server.url}/mcp"
    codex = await run_cli("connect", "--client", "codex", "--alias", "c1", "--hub-url", "http://hub.lan:9200",
                          env=env)
    assert codex.code == 0 and 'url = "http://hub.lan:9200/mcp"' in codex.out
    assert 'bearer_token_env_var = "COMMHUB_AGENT_TOKEN"' in codex.out
    assert "export COMMHUB_AGENT_TOKEN=ntok_" in codex.out and "COMMHUB_TOKEN=" not in codex.out
    tokens = (await client.get("/api/tokens", headers=boss.auth)).json()["tokens"]
    assert {t["alias"] for t in tokens} >= {"reviewer", "g1", "c1"}
    taken = await run_cli("connect", "--client", "claude", "--alias", "bad alias!", env=env)
    assert taken.code == 1 and "alias" in taken.err


@pytest.mark.slow
async def test_network_member_invite_commands(server: ServerHandle, client: httpx.AsyncClient) -> None:
    owner = await register(client)
    guest = await register(client)
    env = cli_env(server.url, owner.token)
    made = await run_cli("network", "create", "ops", "--description", "operations", "--json", env=env)
    assert made.code == 0, made.err
    network_id = made.json()["network_id"]
    listed = await run_cli("network", "list", env=env)
    assert "ops" in listed.out and "default" in listed.out and "owner" in listed.out
    shown = (await run_cli("network", "show", network_id, "--json", env=env)).json()
    assert shown["network"]["network_name"] == "ops" and shown["network"]["member_count"] == 1
    invite = (await run_cli("invite", "create", "--network", network_id, "--max-uses", "2", "--json",
                            env=env)).json()
    joined = await run_cli("network", "join", invite["invite_code"], env=cli_env(server.url, guest.token))
    assert joined.code == 0 and "joined ops" in joined.out
    members = await run_cli("member", "list", "--network", network_id, env=env)
    assert guest.username in members.out and owner.username in members.out
    deleted = await run_cli("network", "delete", network_id, env=env)
    assert deleted.code == 0, deleted.err
    gone = await run_cli("network", "show", network_id, env=env)
    assert gone.code == 1 and "not found" in gone.err


@pytest.mark.slow
async def test_send_wait_survives_a_server_restart(tmp_path: Path) -> None:
    """The reply comes while the CLI's stream is down (the server restarted): send --wait reconnects and finds it."""
    async with trio.open_nursery() as nursery:
        async with own_server(tmp_path, "restart") as first, httpx.AsyncClient(base_url=first.url) as http:
            boss = await register(http)
            worker = await _agent(http, boss, "coder-9")
            finished = trio.Event()
            box = await _send_in_background(nursery, "send", "coder-9", "survive", "--wait", "--timeout", "50",
                                            env=cli_env(first.url, boss.token), done=finished)
            item = await _next_item(http, worker)  # the CLI sends once its stream is open
            port = first.port
        # The first server is gone (its streams ended); the CLI keeps retrying. The reply lands before it is back.
        async with own_server(tmp_path, "restart", port=port) as second, \
                httpx.AsyncClient(base_url=second.url) as http:
            await mcp_call(http, worker, "send_reply", {"task_id": item["task_id"], "status": "done",
                                                        "content": "after the restart"})
            with trio.fail_after(30):
                await finished.wait()
    assert box["run"].code == 0, box["run"].err
    assert box["run"].out.strip() == "after the restart"


@pytest.mark.slow
async def test_member_and_invite_management(server: ServerHandle, client: httpx.AsyncClient) -> None:
    owner = await register(client)
    guest = await register(client)
    env = cli_env(server.url, owner.token)
    made = (await run_cli("invite", "create", "--max-uses", "3", "--json", env=env)).json()
    assert made["network_id"] == owner.network_id  # the default network when --network is not given
    spare = (await run_cli("invite", "create", "--json", env=env)).json()
    listed = await run_cli("invite", "list", "--json", env=env)
    assert listed.code == 0, listed.err
    invites = {i["invite_id"]: i for i in listed.json()["invites"]}
    assert {made["invite_id"], spare["invite_id"]} <= set(invites)
    assert all("invite_code" not in i for i in invites.values())  # codes are never shown again
    table = await run_cli("invite", "list", env=env)
    assert spare["invite_id"] in table.out and "USABLE" in table.out
    revoked = await run_cli("invite", "revoke", spare["invite_id"], env=env)
    assert revoked.code == 0, revoked.err
    refused = await run_cli("network", "join", spare["invite_code"], env=cli_env(server.url, guest.token))
    assert refused.code == 1
    joined = await run_cli("network", "join", made["invite_code"], env=cli_env(server.url, guest.token))
    assert joined.code == 0, joined.err

    promoted = await run_cli("member", "role", guest.username, "admin", "--json", env=env)
    assert promoted.code == 0, promoted.err
    assert promoted.json()["role"] == "admin"
    members = (await run_cli("member", "list", "--json", env=env)).json()["members"]
    assert {m["username"]: m["role"] for m in members}[guest.username] == "admin"
    removed = await run_cli("member", "remove", guest.username, env=env)
    assert removed.code == 0 and f"removed {guest.username}" in removed.out
    members = (await run_cli("member", "list", "--json", env=env)).json()["members"]
    assert guest.username not in {m["username"] for m in members}
    stranger = await run_cli("member", "remove", "nobody_here", env=env)
    assert stranger.code == 1 and "not a member" in stranger.err


async def test_send_wait_shows_a_question_and_reply_answers_it(server: ServerHandle,
                                                                client: httpx.AsyncClient) -> None:
    boss = await register(client)
    worker = await _agent(client, boss, "coder-5")
    env = cli_env(server.url, boss.token)
    async with trio.open_nursery() as nursery:
        box = await _send_in_background(nursery, "send", "coder-5", "migrate the db", "--wait", "--timeout", "40",
                                        env=env)
        task = await _next_item(client, worker)
        await mcp_call(client, worker, "send_reply", {"task_id": task["task_id"], "status": "question",
                                                      "content": "which database?"})
        answered = await run_cli("reply", "--task", task["task_id"], "postgres", env=env)
        assert answered.code == 0, answered.err
        answer = await _next_item(client, worker)
        assert answer["content"] == "postgres" and answer["task_id"] == task["task_id"]
        await mcp_call(client, worker, "send_reply", {"task_id": task["task_id"], "status": "done",
                                                      "content": "migrated to postgres"})
    run = box["run"]
    assert run.code == 0, run.err
    assert run.out.strip() == "migrated to postgres"
    assert "[question] coder-5: which database?" in run.err and "commhub reply --task" in run.err
