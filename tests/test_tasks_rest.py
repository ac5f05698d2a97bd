"""Tasks and messages over REST (and MCP where the lifecycle needs the agent side), the data query endpoints
with their filters and shapes, the task lifecycle rules, and presence (the sweeper) — against a real server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import trio

from tests.conftest import Account, create_token, own_server, register, tool, tool_error

SESSION_FIELDS = {"resume_id", "alias", "status", "agent", "model", "task", "progress", "last_seen_at"}
TASK_FIELDS = {"task_id", "network_id", "from_name", "to_name", "content", "priority", "status", "created_at",
               "updated_at"}
MESSAGE_FIELDS = {"message_id", "from", "to", "kind", "content", "in_reply_to", "task_id", "created_at", "read_at"}
COMPLETION_FIELDS = {"task_id", "alias", "status", "result", "duration_seconds", "completed_at"}


# --- helpers ------------------------------------------------------------------------------------


def error_of(r: httpx.Response, status: int) -> dict[str, Any]:
    """The reference's error body, checked: {"error": code, "message": text}."""
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json"), r.headers
    body = r.json()
    assert isinstance(body.get("error"), str) and body["error"], body
    assert isinstance(body.get("message"), str) and body["message"], body
    return body


async def get_ok(client: httpx.AsyncClient, url: str, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    r = await client.get(url, headers=headers, params=params)
    assert r.status_code == 200, (url, r.status_code, r.text)
    return r.json()


class Crew:
    """A user (its utok) and two agents of its default network: `boss` and `worker`."""

    def __init__(self, account: Account, boss: str, worker: str):
        self.account = account
        self.boss = boss
        self.worker = worker


async def crew(client: httpx.AsyncClient, account: Account | None = None) -> Crew:
    account = account or await register(client)
    c = Crew(account, await create_token(client, account, "boss"), await create_token(client, account, "worker"))
    await tool(client, c.boss, "report_status", {"alias": "boss"})
    await tool(client, c.worker, "report_status", {"alias": "worker"})
    return c


async def send_task(client: httpx.AsyncClient, token: str, to: str, content: str, **extra: Any) -> dict:
    return await tool(client, token, "send_task", {"to": to, "content": content, **extra})


async def task_of(client: httpx.AsyncClient, c: Crew, task_id: str) -> dict[str, Any]:
    got = await tool(client, c.boss, "get_task", {"task_id": task_id})
    return got["task"]


# --- sending over REST ----------------------------------------------------------------------------

async def test_rest_send_with_user_token_uses_the_username(client: httpx.AsyncClient) -> None:
    c = await crew(client)
    auth = c.account.auth
    r = await client.post("/api/tasks", headers=auth, json={"to": "worker", "content": "review PR", "priority": "high",
                                                            "title": "review"})
    assert r.status_code == 200, r.text
    task = r.json()
    assert task["ok"] is True and task["task_id"] and task["message_id"].startswith("msg_")
    r = await client.post("/api/messages", headers=auth, json={"to": "worker", "content": "fyi"})
    assert r.status_code == 200, r.text
    msg_id = r.json()["message_id"]
    r = await client.post("/api/broadcast", headers=auth, json={"content": "standup"})
    assert r.status_code == 200, r.text
    assert r.json()["message_id"].startswith("msg_")

    tasks = (await get_ok(client, "/api/tasks", auth))["tasks"]
    assert [t["task_id"] for t in tasks] == [task["task_id"]]
    assert TASK_FIELDS <= set(tasks[0])
    assert tasks[0]["from_name"] == c.account.username and tasks[0]["to_name"] == "worker"
    assert tasks[0]["priority"] == "high" and tasks[0]["status"] == "delivered"
    inbox = (await get_ok(client, "/api/messages", auth, alias="worker"))["messages"]
    kinds = {m["kind"]: m for m in inbox}
    assert set(kinds) == {"task", "message", "broadcast"}
    assert kinds["message"]["message_id"] == msg_id
    assert all(m["from"] == c.account.username and m["to"] == "worker" for m in inbox)
    # The broadcast reached every session of the network (both agents).
    boss_inbox = (await get_ok(client, "/api/messages", auth, alias="boss"))["messages"]
    assert [m["content"] for m in boss_inbox] == ["standup"]


async def test_rest_send_with_network_token_uses_its_alias(client: httpx.AsyncClient) -> None:
    c = await crew(client)
    auth = {"Authorization": f"Bearer {c.boss}"}
    r = await client.post("/api/tasks", headers=auth, json={"to": "worker", "content": "deploy"})
    assert r.status_code == 200, r.text
    task_id = r.json()["task_id"]
    r = await client.post("/api/messages", headers=auth, json={"to": "worker", "content": "hi"})
    assert r.status_code == 200, r.text
    r = await client.post("/api/broadcast", headers=auth, json={"content": "all"})
    assert r.status_code == 200, r.text
    assert r.json()["recipients"] == 1  # not the sender itself
    task = await task_of(client, c, task_id)
    assert task["from_name"] == "boss"
    inbox = (await get_ok(client, "/api/messages", c.account.auth, alias="worker"))["messages"]
    assert {m["from"] for m in inbox} == {"boss"} and len(inbox) == 3


async def test_rest_send_with_network_token_that_never_claimed_needs_report_status(
        client: httpx.AsyncClient) -> None:
    c = await crew(client)
    fresh = await create_token(client, c.account, "fresh")
    r = await client.post("/api/messages", headers={"Authorization": f"Bearer {fresh}"},
                          json={"to": "worker", "content": "who am I?"})
    body = error_of(r, 409)
    assert "report_status" in body["message"]


async def test_sending_to_an_alias_never_seen_is_404_that_says_so(client: httpx.AsyncClient) -> None:
    c = await crew(client)
    for url, payload in (("/api/tasks", {"to": "ghost", "content": "x"}),
                         ("/api/messages", {"to": "ghost", "content": "x"})):
        for headers in (c.account.auth, {"Authorization": f"Bearer {c.boss}"}):
            body = error_of(await client.post(url, headers=headers, json=payload), 404)
            assert "ghost" in body["message"] and body["error"] == "unknown_recipient", body
    err = await tool_error(client, c.boss, "send_task", {"to": "ghost", "content": "x"})
    assert "ghost" in err["message"]
    # Nothing was stored for the unknown alias.
    assert (await get_ok(client, "/api/tasks", c.account.auth))["tasks"] == []
    assert (await get_ok(client, "/api/messages", c.account.auth, alias="ghost"))["messages"] == []


async def test_broadcast_with_nobody_to_receive_is_an_error(client: httpx.AsyncClient) -> None:
    account = await register(client)
    body = error_of(await client.post("/api/broadcast", headers=account.auth, json={"content": "anyone?"}), 404)
    assert body["message"]


async def test_rest_send_body_validation_names_the_field(client: httpx.AsyncClient) -> None:
    c = await crew(client)
    auth = c.account.auth
    body = error_of(await client.post("/api/tasks", headers=auth, json={"to": "worker"}), 400)
    assert "content" in body["message"]
    body = error_of(await client.post("/api/tasks", headers=auth,
                                      json={"to": "worker", "content": "x", "priority": "asap"}), 400)
    assert "priority" in body["message"]
    r = await client.post("/api/messages", headers={**auth, "Content-Type": "application/json"}, content=b"{oops")
    error_of(r, 400)
    body = error_of(await client.post("/api/messages", headers=auth, json={"to": "worker", "content": "x",
                                                                          "colour": "red"}), 400)
    assert "colour" in body["message"]


async def test_rest_send_needs_authentication(client: httpx.AsyncClient) -> None:
    error_of(await client.post("/api/tasks", json={"to": "worker", "content": "x"}), 401)
    error_of(await client.post("/api/messages", headers={"Authorization": "Bearer utok_nope"},
                               json={"to": "worker", "content": "x"}), 401)


# --- data queries ---------------------------------------------------------------------------------

async def test_status_shape_and_status_filter(client: httpx.AsyncClient) -> None:
    c = await crew(client)
    await tool(client, c.worker, "report_status", {"status": "working", "agent": "agent-node:codex",
                                                   "model": "gpt-5.5", "task": "refactor", "progress": "2/5",
                                                   "resume_id": "sdk-n_1"})
    # The reference's curl: ?network_id= with a network token.
    body = await get_ok(client, "/api/status", c.account.net_auth, network_id=c.account.network_id)
    sessions = {s["alias"]: s for s in body["sessions"]}
    assert set(sessions) == {"boss", "worker"}
    for s in sessions.values():
        assert SESSION_FIELDS <= set(s), s
        assert s["last_seen_at"] and len(s["last_seen_at"]) == 19  # "2026-04-12 10:00:00"
    w = sessions["worker"]
    assert (w["resume_id"], w["status"], w["agent"], w["model"], w["task"], w["progress"]) == (
        "sdk-n_1", "working", "agent-node:codex", "gpt-5.5", "refactor", "2/5")
    assert sessions["boss"]["status"] == "idle" and sessions["boss"]["task"] is None

    working = await get_ok(client, "/api/status", c.account.auth, status="working")
    assert [s["alias"] for s in working["sessions"]] == ["worker"]
    idle = await get_ok(client, "/api/status", c.account.net_auth, status="idle")
    assert [s["alias"] for s in idle["sessions"]] == ["boss"]
    assert (await get_ok(client, "/api/status", c.account.auth, status="offline"))["sessions"] == []
    body = error_of(await client.get("/api/status", headers=c.account.auth, params={"status": "asleep"}), 400)
    assert "status" in body["message"]

    # Going idle clears task and progress.
    await tool(client, c.worker, "report_status", {"status": "idle"})
    w = next(s for s in (await get_ok(client, "/api/status", c.account.auth))["sessions"] if s["alias"] == "worker")
    assert (w["status"], w["task"], w["progress"]) == ("idle", None, None)


async def test_tasks_filters_and_curl_example(client: httpx.AsyncClient) -> None:
    c = await crew(client)
    third = await create_token(client, c.account, "third")
    await tool(client, third, "report_status", {"alias": "third"})
    t1 = (await send_task(client, c.boss, "worker", "one"))["task_id"]
    t2 = (await send_task(client, c.boss, "worker", "two"))["task_id"]
    t3 = (await send_task(client, third, "worker", "three"))["task_id"]
    t4 = (await send_task(client, c.worker, "boss", "four"))["task_id"]
    # The worker takes one task: the boss's "one" only (acked by its message id).
    inbox = (await get_ok(client, "/api/messages", c.account.auth, alias="worker"))["messages"]
    one_msg = next(m["message_id"] for m in inbox if m["task_id"] == t1)
    await tool(client, c.worker, "ack_inbox", {"message_ids": [one_msg]})

    ntok = c.account.net_auth
    r = await client.get("/api/tasks?status=running&limit=10", headers=ntok)  # the reference's curl, as written
    assert r.status_code == 200, r.text
    assert [t["task_id"] for t in r.json()["tasks"]] == [t1]
    delivered = await get_ok(client, "/api/tasks", ntok, status="delivered")
    assert {t["task_id"] for t in delivered["tasks"]} == {t2, t3, t4}
    to_worker = await get_ok(client, "/api/tasks", ntok, to_name="worker")
    assert {t["task_id"] for t in to_worker["tasks"]} == {t1, t2, t3}
    from_boss = await get_ok(client, "/api/tasks", ntok, from_name="boss")
    assert {t["task_id"] for t in from_boss["tasks"]} == {t1, t2}
    both = await get_ok(client, "/api/tasks", ntok, from_name="boss", to_name="worker", status="delivered")
    assert [t["task_id"] for t in both["tasks"]] == [t2]
    assert (await get_ok(client, "/api/tasks", ntok, to_name="nobody"))["tasks"] == []

    everything = (await get_ok(client, "/api/tasks", c.account.auth))["tasks"]
    assert [t["task_id"] for t in everything] == [t4, t3, t2, t1]  # newest first
    limited = (await get_ok(client, "/api/tasks", ntok, limit=2))["tasks"]
    assert [t["task_id"] for t in limited] == [t4, t3]
    paged = (await get_ok(client, "/api/tasks", ntok, limit=2, offset=2))["tasks"]
    assert [t["task_id"] for t in paged] == [t2, t1]
    capped = (await get_ok(client, "/api/tasks", ntok, limit=100000))["tasks"]
    assert len(capped) == 4


async def test_limit_validation_names_the_field(client: httpx.AsyncClient) -> None:
    account = await register(client)
    for url in ("/api/tasks", "/api/messages", "/api/completions", "/api/task_events"):
        for bad in ("ten", "1.5", "0", "-3"):
            body = error_of(await client.get(url, headers=account.auth, params={"limit": bad}), 400)
            assert "limit" in body["message"], (url, bad, body)
    body = error_of(await client.get("/api/tasks", headers=account.auth, params={"offset": "x"}), 400)
    assert "offset" in body["message"]
    body = error_of(await client.get("/api/tasks", headers=account.auth, params={"status": "done"}), 400)
    assert "status" in body["message"]


async def test_nodes_after_report_status_with_node(client: httpx.AsyncClient) -> None:
    c = await crew(client)
    await tool(client, c.boss, "report_status", {"agent": "claude-code", "node": {"hostname": "box-1",
                                                                                  "platform": "linux"}})
    await tool(client, c.worker, "report_status", {"agent": "codex", "node": "box-1"})
    assert (await get_ok(client, "/api/nodes", c.account.net_auth))["ok"] is True
    nodes = (await get_ok(client, "/api/nodes", c.account.net_auth))["nodes"]
    assert [n["hostname"] for n in nodes] == ["box-1"]
    node = nodes[0]
    assert node["node_id"].startswith("node_") and node["platform"] == "linux"
    assert sorted(node["agents"]) == ["claude-code", "codex"]
    await tool(client, c.worker, "report_status", {"node": {"hostname": "box-2"}})
    nodes = (await get_ok(client, "/api/nodes", c.account.auth, network_id=c.account.network_id))["nodes"]
    assert [n["hostname"] for n in nodes] == ["box-1", "box-2"]
    # The session points at its node.
    status = (await get_ok(client, "/api/status", c.account.auth))["sessions"]
    worker = next(s for s in status if s["alias"] == "worker")
    assert worker.get("node_id", nodes[1]["node_id"]) == nodes[1]["node_id"]


async def test_messages_by_alias(client: httpx.AsyncClient) -> None:
    c = await crew(client)
    m1 = (await tool(client, c.boss, "send_message", {"to": "worker", "content": "first"}))["message_id"]
    m2 = (await tool(client, c.boss, "send_message", {"to": "worker", "content": "second"}))["message_id"]
    await tool(client, c.worker, "send_message", {"to": "boss", "content": "for boss"})
    r = await client.get("/api/messages?alias=worker", headers=c.account.net_auth)  # the reference's curl
    assert r.status_code == 200, r.text
    msgs = r.json()["messages"]
    assert [m["message_id"] for m in msgs] == [m2, m1]
    for m in msgs:
        assert MESSAGE_FIELDS <= set(m), m
        assert (m["from"], m["to"], m["kind"], m["read_at"], m["in_reply_to"]) == ("boss", "worker", "message",
                                                                                   None, None)
    assert [m["message_id"] for m in (await get_ok(client, "/api/messages", c.account.net_auth, alias="worker",
                                                   limit=1))["messages"]] == [m2]
    everything = (await get_ok(client, "/api/messages", c.account.auth))["messages"]
    assert len(everything) == 3
    # Reading marks them read.
    await tool(client, c.worker, "ack_inbox", {"all": True})
    msgs = (await get_ok(client, "/api/messages", c.account.auth, alias="worker"))["messages"]
    assert all(m["read_at"] for m in msgs)


async def test_completions_task_events_and_stats(client: httpx.AsyncClient) -> None:
    c = await crew(client)
    done = (await send_task(client, c.boss, "worker", "do it"))["task_id"]
    failed = (await send_task(client, c.boss, "worker", "try it"))["task_id"]
    cancelled = (await send_task(client, c.boss, "worker", "maybe"))["task_id"]
    running = (await send_task(client, c.boss, "worker", "long one"))["task_id"]
    await send_task(client, c.worker, "boss", "back to you")  # stays delivered
    await tool(client, c.worker, "report_completion", {"task_id": done, "result": "all good", "artifacts": ["a.txt"]})
    await tool(client, c.worker, "send_reply", {"task_id": failed, "content": "broke", "status": "failed"})
    await tool(client, c.boss, "cancel_task", {"task_id": cancelled, "reason": "not needed"})
    await tool(client, c.worker, "send_reply", {"task_id": running, "content": "halfway", "status": "progress"})

    r = await client.get("/api/completions?limit=20", headers=c.account.net_auth)  # the reference's curl
    assert r.status_code == 200, r.text
    comps = {x["task_id"]: x for x in r.json()["completions"]}
    assert set(comps) == {done, failed, cancelled}
    for comp in comps.values():
        assert COMPLETION_FIELDS <= set(comp), comp
        assert comp["alias"] == "worker" and comp["duration_seconds"] >= 0 and comp["completed_at"]
    assert (comps[done]["status"], comps[done]["result"]) == ("replied", "all good")
    assert (comps[failed]["status"], comps[failed]["result"]) == ("failed", "broke")
    assert comps[cancelled]["status"] == "cancelled"
    assert len((await get_ok(client, "/api/completions", c.account.auth, limit=1))["completions"]) == 1

    r = await client.get(f"/api/task_events?task_id={done}", headers=c.account.net_auth)  # the reference's curl
    assert r.status_code == 200, r.text
    events = r.json()["events"]
    assert [(e["event"], e["actor"]) for e in events] == [("delivered", "boss"), ("running", "worker"),
                                                          ("replied", "worker")]
    assert all(e["task_id"] == done and e["created_at"] for e in events)
    events = (await get_ok(client, "/api/task_events", c.account.auth, task_id=cancelled))["events"]
    assert [(e["event"], e["actor"]) for e in events] == [("delivered", "boss"), ("cancelled", "boss")]
    events = (await get_ok(client, "/api/task_events", c.account.auth, task_id=running))["events"]
    assert [e["event"] for e in events] == ["delivered", "running", "progress"]
    assert (await get_ok(client, "/api/task_events", c.account.auth, task_id="no-such-task"))["events"] == []

    stats = await get_ok(client, "/api/stats", c.account.auth)  # the reference's curl uses a utok
    assert stats["sessions"] == {"total": 2, "online": 2, "offline": 0}
    assert stats["tasks"] == {"total": 5, "replied": 1, "running": 1, "delivered": 1, "failed": 1, "cancelled": 1,
                              "input_required": 0, "expired": 0}
    assert (await get_ok(client, "/api/stats", c.account.net_auth))["tasks"] == stats["tasks"]


async def test_user_token_scope_network_id_or_all_networks(client: httpx.AsyncClient) -> None:
    await register(client)  # the system admin (first user) may see every network; these users are not admins
    c = await crew(client)
    r = await client.post("/api/networks", headers=c.account.auth, json={"name": "prod"})
    assert r.status_code == 200, r.text
    prod = r.json()["network_id"]
    prod_tok = await create_token(client, c.account, "prod-agent", network_id=prod)
    await tool(client, prod_tok, "report_status", {"alias": "deployer", "node": "prod-box"})
    await tool(client, prod_tok, "send_message", {"to": "deployer", "content": "note to self"})
    await send_task(client, c.boss, "worker", "default-net task")

    auth = c.account.auth
    all_status = await get_ok(client, "/api/status", auth)
    assert {s["alias"] for s in all_status["sessions"]} == {"boss", "worker", "deployer"}
    only_prod = await get_ok(client, "/api/status", auth, network_id=prod)
    assert [s["alias"] for s in only_prod["sessions"]] == ["deployer"]
    only_default = await get_ok(client, "/api/status", auth, network_id=c.account.network_id)
    assert {s["alias"] for s in only_default["sessions"]} == {"boss", "worker"}
    assert (await get_ok(client, "/api/stats", auth))["sessions"]["total"] == 3
    assert (await get_ok(client, "/api/stats", auth, network_id=prod))["sessions"]["total"] == 1
    assert len((await get_ok(client, "/api/tasks", auth))["tasks"]) == 1
    assert (await get_ok(client, "/api/tasks", auth, network_id=prod))["tasks"] == []
    assert [n["hostname"] for n in (await get_ok(client, "/api/nodes", auth, network_id=prod))["nodes"]] == [
        "prod-box"]
    assert len((await get_ok(client, "/api/messages", auth, network_id=prod))["messages"]) == 1

    # A network token sees only its own network, and naming another one is refused.
    prod_auth = {"Authorization": f"Bearer {prod_tok}"}
    assert [s["alias"] for s in (await get_ok(client, "/api/status", prod_auth))["sessions"]] == ["deployer"]
    error_of(await client.get("/api/status", headers=prod_auth, params={"network_id": c.account.network_id}), 404)

    # Another user's network id: not visible.
    other = await register(client)
    for url in ("/api/status", "/api/tasks", "/api/stats", "/api/nodes", "/api/messages"):
        r = await client.get(url, headers=other.auth, params={"network_id": prod})
        assert r.status_code in (403, 404), (url, r.status_code, r.text)
        error_of(r, r.status_code)


# --- the task lifecycle -----------------------------------------------------------------------------

async def test_lifecycle_delivered_running_replied_via_get_inbox(client: httpx.AsyncClient) -> None:
    c = await crew(client)
    r = await client.post("/api/tasks", headers=c.account.auth, json={"to": "worker", "content": "ship v2"})
    assert r.status_code == 200, r.text
    task_id = r.json()["task_id"]
    assert r.json()["status"] == "delivered"
    assert (await task_of(client, c, task_id))["status"] == "delivered"
    inbox = await tool(client, c.worker, "get_inbox", {})
    assert [i["task_id"] for i in inbox["items"]] == [task_id]
    assert (await task_of(client, c, task_id))["status"] == "running"
    await tool(client, c.worker, "report_status", {"status": "working", "task": "ship v2", "progress": "1/2"})
    reply = await tool(client, c.worker, "send_reply", {"task_id": task_id, "content": "shipped", "status": "done"})
    assert reply["task_status"] == "replied" and reply["message_id"].startswith("msg_")
    got = await tool(client, c.worker, "get_task", {"task_id": task_id})
    assert got["task"]["status"] == "replied" and got["task"]["result"] == "shipped"
    assert [e["event"] for e in got["events"]] == ["delivered", "running", "replied"]
    assert got["completion"]["status"] == "replied"
    # The user who sent it over REST got the reply in their name's inbox.
    replies = (await get_ok(client, "/api/messages", c.account.auth, alias=c.account.username))["messages"]
    assert [(m["kind"], m["task_id"], m["content"]) for m in replies] == [("reply", task_id, "shipped")]
    # The task ended: the worker's task/progress are cleared and it is idle again.
    w = next(s for s in (await get_ok(client, "/api/status", c.account.auth))["sessions"] if s["alias"] == "worker")
    assert (w["status"], w["task"], w["progress"]) == ("idle", None, None)


async def test_lifecycle_ack_inbox_then_failed(client: httpx.AsyncClient) -> None:
    c = await crew(client)
    sent = await send_task(client, c.boss, "worker", "risky")
    acked = await tool(client, c.worker, "ack_inbox", {"message_ids": [sent["message_id"]]})
    assert acked["acked"] == [sent["message_id"]]
    assert (await task_of(client, c, sent["task_id"]))["status"] == "running"
    await tool(client, c.worker, "send_reply", {"task_id": sent["task_id"], "content": "no luck", "status": "failed"})
    assert (await task_of(client, c, sent["task_id"]))["status"] == "failed"
    failed = (await get_ok(client, "/api/tasks", c.account.auth, status="failed"))["tasks"]
    assert [t["task_id"] for t in failed] == [sent["task_id"]]


async def test_lifecycle_reply_by_message_id_and_progress(client: httpx.AsyncClient) -> None:
    c = await crew(client)
    sent = await send_task(client, c.boss, "worker", "multi-step")
    await tool(client, c.worker, "send_reply", {"message_id": sent["message_id"], "content": "step 1",
                                                "status": "progress"})
    assert (await task_of(client, c, sent["task_id"]))["status"] == "running"
    await tool(client, c.worker, "send_reply", {"message_id": sent["message_id"], "content": "step 2",
                                                "status": "progress"})
    await tool(client, c.worker, "send_reply", {"message_id": sent["message_id"], "content": "all steps",
                                                "status": "done"})
    task = await task_of(client, c, sent["task_id"])
    assert task["status"] == "replied"
    events = (await get_ok(client, "/api/task_events", c.account.auth, task_id=sent["task_id"]))["events"]
    assert [e["event"] for e in events] == ["delivered", "running", "progress", "progress", "replied"]


async def test_lifecycle_cancel_from_delivered_and_from_running(client: httpx.AsyncClient) -> None:
    c = await crew(client)
    first = await send_task(client, c.boss, "worker", "first")
    second = await send_task(client, c.boss, "worker", "second")
    await tool(client, c.worker, "ack_inbox", {"message_ids": [second["message_id"]]})
    out = await tool(client, c.boss, "cancel_task", {"task_id": first["task_id"], "reason": "obsolete"})
    assert out["status"] == "cancelled"
    await tool(client, c.boss, "cancel_task", {"task_id": second["task_id"]})
    for sent in (first, second):
        assert (await task_of(client, c, sent["task_id"]))["status"] == "cancelled"
    # The recipient is told.
    notices = (await get_ok(client, "/api/messages", c.account.auth, alias="worker", kind="notice"))["messages"]
    assert {m["task_id"] for m in notices} == {first["task_id"], second["task_id"]}
    assert any("obsolete" in m["content"] for m in notices)


async def test_illegal_transitions_are_errors(client: httpx.AsyncClient) -> None:
    c = await crew(client)
    done = await send_task(client, c.boss, "worker", "finish me")
    await tool(client, c.worker, "send_reply", {"task_id": done["task_id"], "content": "done", "status": "done"})
    cancelled = await send_task(client, c.boss, "worker", "cancel me")
    await tool(client, c.boss, "cancel_task", {"task_id": cancelled["task_id"]})

    for task_id, final in ((done["task_id"], "replied"), (cancelled["task_id"], "cancelled")):
        for status in ("done", "failed", "progress", "question", None):
            args = {"task_id": task_id, "content": "again"} | ({"status": status} if status else {})
            err = await tool_error(client, c.worker, "send_reply", args)
            assert err["error"] == "task_final" and final in err["message"], err
        err = await tool_error(client, c.boss, "cancel_task", {"task_id": task_id})
        assert err["error"] == "task_final", err
        err = await tool_error(client, c.worker, "report_completion", {"task_id": task_id, "result": "late"})
        assert err["error"] == "task_final", err
        assert (await task_of(client, c, task_id))["status"] == final  # unchanged
    # Exactly one completion per ended task: the rejected calls wrote nothing.
    comps = (await get_ok(client, "/api/completions", c.account.auth))["completions"]
    assert sorted(x["task_id"] for x in comps) == sorted([done["task_id"], cancelled["task_id"]])

    # Only the recipient reports a status (the sender's reply is an answer, without status); unknown tasks are errors.
    open_task = await send_task(client, c.boss, "worker", "still open")
    err = await tool_error(client, c.boss, "send_reply", {"task_id": open_task["task_id"], "content": "me?",
                                                          "status": "done"})
    assert err["error"] == "status_not_allowed" and "cancel_task" in err["message"]
    err = await tool_error(client, c.worker, "send_reply", {"task_id": "no-such-task", "content": "?"})
    assert err["error"] == "task_not_found"
    err = await tool_error(client, c.worker, "cancel_task", {"task_id": "no-such-task"})
    assert err["error"] == "task_not_found"
    assert (await task_of(client, c, open_task["task_id"]))["status"] == "delivered"


async def test_cancel_needs_sender_or_network_admin(client: httpx.AsyncClient) -> None:
    await register(client)  # the system admin
    owner = await register(client)
    c = await crew(client, owner)
    member = await register(client)
    r = await client.post(f"/api/networks/{owner.network_id}/invite", headers=owner.auth,
                          json={"role": "member", "max_uses": 1})
    assert r.status_code == 200, r.text
    r = await client.post("/api/networks/join", headers=member.auth, json={"invite_code": r.json()["invite_code"]})
    assert r.status_code == 200, r.text
    helper = await create_token(client, member, "helper", network_id=owner.network_id)
    await tool(client, helper, "report_status", {"alias": "helper"})
    sent = await send_task(client, c.boss, "worker", "not yours")
    err = await tool_error(client, helper, "cancel_task", {"task_id": sent["task_id"]})
    assert err["error"] == "not_allowed", err
    assert (await task_of(client, c, sent["task_id"]))["status"] == "delivered"
    mine = await send_task(client, helper, "worker", "mine")
    await tool(client, helper, "cancel_task", {"task_id": mine["task_id"]})
    assert (await task_of(client, c, mine["task_id"]))["status"] == "cancelled"


async def test_idempotency_key_creates_one_task(client: httpx.AsyncClient) -> None:
    c = await crew(client)
    a = await send_task(client, c.boss, "worker", "once", idempotency_key="k-1")
    b = await send_task(client, c.boss, "worker", "once", idempotency_key="k-1")
    assert a["task_id"] == b["task_id"] and b["duplicate"] is True
    r = await client.post("/api/tasks", headers={"Authorization": f"Bearer {c.boss}"},
                          json={"to": "worker", "content": "once", "idempotency_key": "k-1"})
    assert r.status_code == 200 and r.json()["task_id"] == a["task_id"]
    assert len((await get_ok(client, "/api/tasks", c.account.auth))["tasks"]) == 1


# --- presence ---------------------------------------------------------------------------------------

async def test_sweeper_marks_session_offline_and_keeps_last_seen(tmp_path: Path) -> None:
    async with own_server(tmp_path, "presence", presence_timeout_seconds=0.3, sweep_seconds=0.05) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            c = await crew(client)
            await tool(client, c.worker, "report_status", {"status": "working", "task": "t"})
            before = next(s for s in (await get_ok(client, "/api/status", c.account.auth))["sessions"]
                          if s["alias"] == "worker")
            assert before["status"] == "working"

            async def worker_row() -> dict[str, Any]:
                rows = (await get_ok(client, "/api/status", c.account.auth))["sessions"]
                return next(s for s in rows if s["alias"] == "worker")

            with trio.fail_after(10):
                while True:
                    row = await worker_row()
                    if row["status"] == "offline":
                        break
                    await trio.sleep(0.05)
            # Offline keeps the last sign of life (and the other reported fields).
            assert row["last_seen_at"] == before["last_seen_at"] and row["resume_id"] == before["resume_id"]
            offline = await get_ok(client, "/api/status", c.account.auth, status="offline")
            assert "worker" in [s["alias"] for s in offline["sessions"]]
            stats = await get_ok(client, "/api/stats", c.account.auth)
            assert stats["sessions"]["offline"] >= 1

            # Any MCP call is a sign of life again.
            await tool(client, c.worker, "report_status", {"status": "idle"})
            assert (await worker_row())["status"] == "idle"


async def test_status_filter_and_stats_agree_with_shown_presence(tmp_path: Path) -> None:
    """Presence lapses after the timeout even before a sweep stores it: the listing, its ?status= filter and
    /api/stats must all tell the same story (the sweeper is made too slow to run during this test)."""
    async with own_server(tmp_path, "lapse", presence_timeout_seconds=0.3, sweep_seconds=60) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            c = await crew(client)
            await tool(client, c.worker, "report_status", {"status": "working", "task": "t"})
            auth = c.account.auth
            with trio.fail_after(10):
                while True:
                    shown = {s["alias"]: s["status"] for s in (await get_ok(client, "/api/status", auth))["sessions"]}
                    if shown == {"boss": "offline", "worker": "offline"}:
                        break
                    await trio.sleep(0.05)
            for status in ("offline", "idle", "working"):
                listed = (await get_ok(client, "/api/status", auth, status=status))["sessions"]
                assert sorted(s["alias"] for s in listed) == sorted(a for a, st in shown.items() if st == status), \
                    (status, listed)
            mcp = await tool(client, c.boss, "get_all_status", {"filter_status": "working"})
            assert [s["alias"] for s in mcp["sessions"]] == []  # the boss's own call made it online; worker is not
            stats = await get_ok(client, "/api/stats", auth)
            assert stats["sessions"] == {"total": 2, "online": 1, "offline": 1}, stats

