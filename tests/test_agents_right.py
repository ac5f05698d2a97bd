"""Agents get it right the first time: the official MCP Python SDK plays two agents the way a model calls tools,
mistakes included, and every answer keeps the task safe and names the next step."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import httpx
from conftest import create_token, register
from test_mcp_sdk import fails, ok, sdk_session, two_users, wait_until

from commhub_lib.runtime.server import ServerHandle

INTERNALS = re.compile(r"NodeInfo|constrained-str|function-after|errors\.pydantic\.dev|literal\[|union", re.I)


async def test_progress_is_a_number_or_a_text(server: ServerHandle, client: httpx.AsyncClient) -> None:
    _, token_a, token_b = await two_users(client)
    async with sdk_session(server, token_a) as a, sdk_session(server, token_b) as b:
        await ok(a, "report_status", {"alias": "lead"})
        me = await ok(b, "report_status", {"alias": "coder-1", "status": "working", "progress": 50})
        assert me["progress"] == "50%"
        me = await ok(b, "report_status", {"progress": "3/5 suites pass"})
        assert me["progress"] == "3/5 suites pass"
        text = await fails(b, "report_status", {"progress": 150})
        assert "progress" in text and "0 to 100" in text and not INTERNALS.search(text), text
        # A progress reply on a task takes a number too (content is the update).
        task = await ok(a, "send_task", {"to": "coder-1", "content": "port the parser"})
        reply = await ok(b, "send_reply", {"task_id": task["task_id"], "status": "progress", "progress": 50})
        assert reply["task_status"] == "running" and reply["progress"] == "50%"
        status = {s["alias"]: s for s in (await ok(a, "get_all_status"))["sessions"]}
        assert status["coder-1"]["progress"] == "50%"
        reply = await ok(b, "send_reply", {"task_id": task["task_id"], "status": "progress", "content": "tests next",
                                           "progress": "3/5 suites pass"})
        assert reply["progress"] == "3/5 suites pass"
        update = next(i for i in (await ok(a, "get_inbox"))["items"] if i["content"] == "progress: 50%")
        assert update["status"] == "progress" and update["task_id"] == task["task_id"]
        text = await fails(b, "send_reply", {"task_id": task["task_id"], "status": "done", "progress": 100})
        assert "progress: only with status 'progress'" in text
        assert (await ok(a, "get_task", {"task_id": task["task_id"]}))["task"]["status"] == "running"


async def test_deadline_accepts_what_a_model_writes(server: ServerHandle, client: httpx.AsyncClient) -> None:
    _, token_a, token_b = await two_users(client)
    async with sdk_session(server, token_a) as a, sdk_session(server, token_b) as b:
        await ok(a, "report_status", {"alias": "lead"})
        await ok(b, "report_status", {"alias": "coder-1"})
        before = datetime.now(UTC).timestamp()
        by_seconds = await ok(a, "send_task", {"to": "coder-1", "content": "a", "deadline": 3600})
        due = datetime.strptime(by_seconds["deadline"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
        assert 3590 <= due - before <= 3700
        iso = await ok(a, "send_task", {"to": "coder-1", "content": "b", "deadline": "2030-01-02T03:04:05+02:00"})
        assert iso["deadline"] == "2030-01-02T01:04:05Z"
        assert (await ok(a, "send_task", {"to": "coder-1", "content": "c", "deadline": "2h"}))["deadline"]
        # Priorities in any case, too.
        assert (await ok(a, "send_task", {"to": "coder-1", "content": "d", "priority": "High"}))["ok"]
        text = await fails(a, "send_task", {"to": "coder-1", "content": "e", "deadline": "soonish"})
        assert "deadline" in text and "ISO 8601" in text and "seconds" in text and not INTERNALS.search(text)


async def test_question_keeps_the_task_open_and_the_answer_reaches_the_assignee(
        server: ServerHandle, client: httpx.AsyncClient) -> None:
    _, token_a, token_b = await two_users(client)
    async with sdk_session(server, token_a) as a, sdk_session(server, token_b) as b:
        await ok(a, "report_status", {"alias": "lead"})
        await ok(b, "report_status", {"alias": "coder-1"})
        task = await ok(a, "send_task", {"to": "coder-1", "content": "migrate the db", "idempotency_key": "k1"})
        task_id = task["task_id"]
        await ok(b, "get_inbox")
        # The natural mistake: a reply without status. It no longer ends the task; the error lists the choices.
        text = await fails(b, "send_reply", {"task_id": task_id, "content": "which database?"})
        for choice in ("done", "failed", "progress", "question"):
            assert f"'{choice}'" in text, text
        assert (await ok(a, "get_task", {"task_id": task_id}))["task"]["status"] == "running"
        asked = await ok(b, "send_reply", {"task_id": task_id, "content": "which database?", "status": "question"})
        assert asked["task_status"] == "input_required" and "answer" in asked["next_step"]
        assert (await ok(a, "get_task", {"task_id": task_id}))["task"]["status"] == "input_required"
        # The sender sees the question in its inbox and answers without a status.
        question = next(i for i in (await ok(a, "get_inbox"))["items"] if i["task_id"] == task_id)
        assert question["status"] == "question" and question["content"] == "which database?"
        answer = await ok(a, "send_reply", {"task_id": task_id, "content": "the staging one"})
        assert answer["status"] == "answer" and answer["to"] == "coder-1"
        assert answer["task_status"] == "input_required"
        inbox = await ok(b, "get_inbox")
        got = next(i for i in inbox["items"] if i["kind"] == "reply")
        assert (got["task_id"], got["status"], got["content"]) == (task_id, "answer", "the staging one")
        assert [t["task_id"] for t in inbox["open_tasks"]] == [task_id]
        # The assignee continues: progress moves it back to running, then done ends it.
        await ok(b, "send_reply", {"task_id": task_id, "content": "migrating", "status": "progress"})
        assert (await ok(a, "get_task", {"task_id": task_id}))["task"]["status"] == "running"
        done = await ok(b, "send_reply", {"task_id": task_id, "content": "migrated", "status": "done"})
        assert done["task_status"] == "replied"
        events = [e["event"] for e in (await ok(a, "get_task", {"task_id": task_id}))["events"]]
        assert events == ["delivered", "running", "question", "answer", "progress", "replied"]
        assert (await ok(b, "get_inbox"))["open_tasks"] == []


async def test_open_work_never_disappears(server: ServerHandle, client: httpx.AsyncClient) -> None:
    _, token_a, token_b = await two_users(client)
    async with sdk_session(server, token_a) as a, sdk_session(server, token_b) as b:
        await ok(a, "report_status", {"alias": "lead"})
        await ok(b, "report_status", {"alias": "coder-1"})
        first = await ok(a, "send_task", {"to": "coder-1", "content": "first", "priority": "urgent"})
        second = await ok(a, "send_task", {"to": "coder-1", "content": "second"})
        # The mistake: ack everything before ever reading it.
        acked = await ok(b, "ack_inbox", {"all": True})
        assert set(acked["acked"]) == {first["message_id"], second["message_id"]}
        inbox = await ok(b, "get_inbox")
        assert inbox["items"] == []
        assert [t["task_id"] for t in inbox["open_tasks"]] == [first["task_id"], second["task_id"]]
        assert inbox["open_tasks"][0]["content"] == "first" and inbox["open_tasks"][0]["status"] == "running"
        # Acking again marks nothing: an error that says why, never ok.
        text = await fails(b, "ack_inbox", {"all": True})
        assert "nothing to ack" in text and "open_tasks" in text
        text = await fails(b, "ack_inbox", {"ids": [first["message_id"], "msg_nope"]})
        assert "already read" in text and "unknown id" in text
        # Task ids are accepted too.
        third = await ok(a, "send_task", {"to": "coder-1", "content": "third"})
        acked = await ok(b, "ack_inbox", {"ids": [third["task_id"]]})
        assert acked["acked"] == [third["message_id"]] and acked["tasks_started"] == [third["task_id"]]
        text = await fails(b, "ack_inbox", {"ids": [third["task_id"]]})
        assert "stays in open_tasks" in text
        # Another agent's ids are "not yours".
        mine = await ok(b, "send_task", {"to": "lead", "content": "review"})
        text = await fails(b, "ack_inbox", {"ids": [mine["message_id"]]})
        assert "not yours" in text
        assert len((await ok(b, "get_inbox"))["open_tasks"]) == 3


async def test_answers_name_the_next_step(server: ServerHandle, client: httpx.AsyncClient) -> None:
    _, token_a, token_b = await two_users(client)
    async with sdk_session(server, token_a) as a, sdk_session(server, token_b) as b:
        # whoami before any claim says to call report_status.
        me = await ok(a, "whoami")
        assert me["alias"] is None and "report_status" in me["next_step"]
        await ok(a, "report_status", {"alias": "lead"})
        await ok(b, "report_status", {"alias": "codex-1"})
        # A misspelt alias names the closest one.
        text = await fails(a, "send_task", {"to": "codex1", "content": "x"})
        assert "did you mean 'codex-1'?" in text
        # A nested node with an unknown key: the field and what it takes, no validator internals.
        text = await fails(b, "report_status", {"node": {"hostname": "box", "cpu": 8}})
        assert "node" in text and "'cpu'" in text and "hostname" in text and not INTERNALS.search(text), text
        text = await fails(b, "report_status", {"node": 42})
        assert "node" in text and not INTERNALS.search(text), text
        # Ids in the wrong field say which is which.
        task = await ok(a, "send_task", {"to": "codex-1", "content": "y"})
        text = await fails(b, "send_reply", {"message_id": task["task_id"], "content": "z", "status": "done"})
        assert "is a task id, not a message id" in text and "task_id" in text
        text = await fails(b, "send_reply", {"task_id": task["message_id"], "content": "z", "status": "done"})
        assert "is a message id, not a task id" in text
        assert (await ok(a, "get_task", {"task_id": task["task_id"]}))["task"]["status"] == "delivered"
        text = await fails(a, "send_task", {"to": "codex-1", "content": "x", "priority": "asap"})
        assert "priority" in text and "'urgent'" in text and not INTERNALS.search(text)
        text = await fails(a, "send_task", {"to": "codex-1", "content": "x", "prio": "high"})
        assert "prio: unknown field" in text and "priority" in text
        # Tool descriptions say what results hold and what to call next.
        tools = {t.name: t for t in (await a.list_tools()).tools}
        assert "open_tasks" in tools["get_inbox"].description and "message_id" in tools["get_inbox"].description
        assert "FIRST" in tools["send_task"].description and "idempotency_key" in tools["send_task"].description
        assert "required" in tools["send_reply"].description and "question" in tools["send_reply"].description
        props = tools["send_task"].input_schema["properties"]
        assert "FIRST" in props["idempotency_key"]["description"]


async def test_rest_answers_speak_of_endpoints_not_tools(client: httpx.AsyncClient) -> None:
    account = await register(client)
    agent = await create_token(client, account, "agent")
    r = await client.post("/mcp", headers={"Authorization": f"Bearer {agent}"}, json={
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "report_status", "arguments": {"alias": "codex-1"}}})
    assert r.status_code == 200
    r = await client.post("/api/tasks", headers=account.auth, json={"to": "codex-2", "content": "x"})
    assert r.status_code == 404 and "codex-1" in r.json()["message"]
    r = await client.post("/api/tasks", headers=account.auth, json={"to": "nobody-like-that", "content": "x"})
    assert r.status_code == 404 and "GET /api/status" in r.json()["message"]
    assert "get_all_status" not in r.json()["message"]
    r = await client.get("/api/tasks/no-such-task", headers=account.auth)
    assert r.status_code == 404 and "GET /api/tasks" in r.json()["message"] and "list_tasks" not in r.text
    fresh = await create_token(client, account, "fresh")
    r = await client.post("/api/messages", headers={"Authorization": f"Bearer {fresh}"},
                          json={"to": "codex-1", "content": "x"})
    assert r.status_code == 409 and "bound to an alias" in r.json()["message"]
    r = await client.post("/api/tasks", headers=account.auth, json={"to": "codex-1", "content": "x", "progress": 5})
    assert r.status_code == 400 and "progress: unknown field" in r.json()["message"]


async def test_report_status_agent_is_data_not_json(server: ServerHandle, client: httpx.AsyncClient) -> None:
    account = await register(client)
    async with sdk_session(server, account.network_token) as a:
        for agent in ('a"b\\', 'a","injected'):
            await ok(a, "report_status", {"alias": "odd", "agent": agent, "node": "box-1"})
        nodes = (await ok(a, "list_nodes"))["nodes"]
    assert [n["agents"] for n in nodes] == [['a"b\\', 'a","injected']]
    raw = server.hub.db.query_one("SELECT agents FROM nodes")
    assert raw is not None and json.loads(raw["agents"]) == ['a"b\\', 'a","injected']


async def test_long_poll_returns_open_tasks_and_wakes_on_send(server: ServerHandle, client: httpx.AsyncClient) -> None:
    import trio

    _, token_a, token_b = await two_users(client)
    async with sdk_session(server, token_a) as a, sdk_session(server, token_b) as b:
        await ok(a, "report_status", {"alias": "lead"})
        await ok(b, "report_status", {"alias": "coder-1"})
        got: dict = {}

        async def poll() -> None:
            got.update(await ok(b, "get_inbox", {"wait_seconds": 20}))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(poll)
            await wait_until(lambda: server.hub.broker.subscriber_count() >= 1)
            sent = await ok(a, "send_task", {"to": "coder-1", "content": "wake up"})
        assert [i["task_id"] for i in got["items"]] == [sent["task_id"]]
        assert [t["task_id"] for t in got["open_tasks"]] == [sent["task_id"]]
