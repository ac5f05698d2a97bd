"""Network isolation and impersonation against a real server: two users with their own networks (using the
same alias names) must never see, address or act as each other's agents."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import trio

from tests.conftest import Account, create_token, own_server, register, tool, tool_error

DATA_ENDPOINTS = ("/api/status", "/api/tasks", "/api/nodes", "/api/messages", "/api/completions",
                  "/api/task_events", "/api/stats")
LISTS = {"/api/status": "sessions", "/api/tasks": "tasks", "/api/nodes": "nodes", "/api/messages": "messages",
         "/api/completions": "completions", "/api/task_events": "events"}


# --- helpers ------------------------------------------------------------------------------------


def refused(r: httpx.Response, *statuses: int) -> dict[str, Any]:
    """An error response in the reference's shape with one of the expected statuses."""
    assert r.status_code in statuses, (r.status_code, r.text)
    body = r.json()
    assert body.get("error") and body.get("message"), body
    return body


class World:
    """One user's side: account, `boss` and `worker` agent tokens, a task and a message between them."""

    def __init__(self, account: Account, boss: str, worker: str):
        self.account = account
        self.boss = boss
        self.worker = worker
        self.task_id = ""
        self.task_message_id = ""
        self.message_id = ""

    @property
    def boss_auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.boss}"}


async def world(client: httpx.AsyncClient, extra_alias: str) -> World:
    """A user whose network has `boss`, `worker` and `extra_alias`, one finished and one open task, nodes."""
    account = await register(client)
    w = World(account, await create_token(client, account, "boss"), await create_token(client, account, "worker"))
    extra = await create_token(client, account, extra_alias)
    await tool(client, w.boss, "report_status", {"alias": "boss", "node": f"{extra_alias}-host"})
    await tool(client, w.worker, "report_status", {"alias": "worker", "node": f"{extra_alias}-host"})
    await tool(client, extra, "report_status", {"alias": extra_alias})
    done = await tool(client, w.boss, "send_task", {"to": "worker", "content": f"secret of {extra_alias}"})
    await tool(client, w.worker, "report_completion", {"task_id": done["task_id"], "result": f"{extra_alias} result"})
    sent = await tool(client, w.boss, "send_task", {"to": "worker", "content": f"open work of {extra_alias}"})
    w.task_id, w.task_message_id = sent["task_id"], sent["message_id"]
    w.message_id = (await tool(client, w.boss, "send_message", {"to": "worker", "content": "private"}))["message_id"]
    return w


async def two_worlds(client: httpx.AsyncClient) -> tuple[World, World]:
    await register(client)  # the first user is the system admin, who may look after any network
    return await world(client, "alice-agent"), await world(client, "bob-agent")


def all_text(body: Any) -> str:
    return json.dumps(body)


# --- reading ----------------------------------------------------------------------------------------

async def test_data_endpoints_show_only_own_network(client: httpx.AsyncClient) -> None:
    alice, bob = await two_worlds(client)
    for me, other in ((alice, bob), (bob, alice)):
        for headers in (me.account.net_auth, me.account.auth, me.boss_auth):
            for url in DATA_ENDPOINTS:
                r = await client.get(url, headers=headers)
                assert r.status_code == 200, (url, r.text)
                text = all_text(r.json())
                assert other.account.network_id not in text, (url, text)
                assert other.task_id not in text and other.message_id not in text, url
                other_name = "bob-agent" if other is bob else "alice-agent"
                assert other_name not in text, (url, text)
            stats = (await client.get("/api/stats", headers=headers)).json()
            assert stats["sessions"]["total"] == 3 and stats["tasks"]["total"] == 2, stats
        # Each side sees its own data, with the same alias names as the other side.
        sessions = (await client.get("/api/status", headers=me.account.net_auth)).json()["sessions"]
        assert {s["network_id"] for s in sessions} == {me.account.network_id}
        assert {s["alias"] for s in sessions} >= {"boss", "worker"}


async def test_other_network_id_is_refused_for_network_and_user_tokens(client: httpx.AsyncClient) -> None:
    alice, bob = await two_worlds(client)
    for url in DATA_ENDPOINTS:
        params = {"network_id": bob.account.network_id}
        refused(await client.get(url, headers=alice.account.net_auth, params=params), 403, 404)
        refused(await client.get(url, headers=alice.account.auth, params=params), 403, 404)
        refused(await client.get(url, headers=alice.boss_auth, params=params), 403, 404)
    refused(await client.get(f"/api/networks/{bob.account.network_id}", headers=alice.account.auth), 403, 404)


async def test_other_networks_task_ids_and_aliases_are_invisible(client: httpx.AsyncClient) -> None:
    alice, bob = await two_worlds(client)
    r = await client.get("/api/task_events", headers=alice.account.auth, params={"task_id": bob.task_id})
    assert r.status_code == 200 and r.json()["events"] == []
    r = await client.get("/api/messages", headers=alice.account.auth, params={"alias": "bob-agent"})
    assert r.status_code == 200 and r.json()["messages"] == []
    r = await client.get("/api/tasks", headers=alice.account.net_auth, params={"to_name": "worker"})
    assert {t["network_id"] for t in r.json()["tasks"]} == {alice.account.network_id}
    r = await client.get("/api/completions", headers=alice.account.auth, params={"alias": "worker"})
    assert [c["result"] for c in r.json()["completions"]] == ["alice-agent result"]

    err = await tool_error(client, alice.boss, "get_task", {"task_id": bob.task_id})
    assert err["error"] == "task_not_found", err
    assert bob.task_id in err["message"] and "open work" not in err["message"]
    listed = await tool(client, alice.boss, "list_tasks", {})
    assert bob.task_id not in all_text(listed)
    comps = await tool(client, alice.boss, "get_completions", {})
    assert "bob-agent" not in all_text(comps)
    status = await tool(client, alice.boss, "get_all_status", {})
    assert {s["alias"] for s in status["sessions"]} == {"boss", "worker", "alice-agent"}
    nodes = await tool(client, alice.boss, "list_nodes", {})
    assert [n["hostname"] for n in nodes["nodes"]] == ["alice-agent-host"]


# --- acting on the other network ------------------------------------------------------------------

async def test_cannot_send_to_the_other_networks_aliases(client: httpx.AsyncClient) -> None:
    alice, bob = await two_worlds(client)
    for headers in (alice.account.auth, alice.boss_auth):
        body = refused(await client.post("/api/messages", headers=headers,
                                         json={"to": "bob-agent", "content": "psst"}), 404)
        assert "bob-agent" in body["message"]
        refused(await client.post("/api/tasks", headers=headers, json={"to": "bob-agent", "content": "do"}), 404)
    # Naming the other network explicitly does not help.
    for url, payload in (("/api/messages", {"to": "worker", "content": "psst"}),
                         ("/api/tasks", {"to": "worker", "content": "do"}),
                         ("/api/broadcast", {"content": "hello bob's agents"})):
        for headers in (alice.account.auth, alice.account.net_auth):
            refused(await client.post(url, headers=headers, json={**payload, "network_id": bob.account.network_id}),
                    403, 404)
    err = await tool_error(client, alice.boss, "send_message", {"to": "bob-agent", "content": "psst"})
    assert err["error"] == "unknown_recipient"
    err = await tool_error(client, alice.boss, "send_task", {"to": "bob-agent", "content": "do"})
    assert err["error"] == "unknown_recipient"
    # A broadcast reaches only the sender's own network.
    out = await tool(client, alice.boss, "broadcast", {"content": "alice-only"})
    assert set(out["message_ids"]) == {"worker", "alice-agent"}
    # Alice's sends to "worker" went to her worker; bob's inboxes are untouched.
    await tool(client, alice.boss, "send_message", {"to": "worker", "content": "for alice's worker"})
    bob_inbox = (await client.get("/api/messages", headers=bob.account.auth)).json()["messages"]
    assert all(m["content"] not in ("psst", "alice-only", "for alice's worker") for m in bob_inbox)


async def test_cannot_reply_cancel_or_ack_the_other_networks_items(client: httpx.AsyncClient) -> None:
    alice, bob = await two_worlds(client)
    err = await tool_error(client, alice.worker, "send_reply", {"task_id": bob.task_id, "content": "mine now"})
    assert err["error"] == "task_not_found"
    err = await tool_error(client, alice.worker, "send_reply", {"message_id": bob.task_message_id, "content": "x"})
    assert err["error"] == "message_not_found"
    err = await tool_error(client, alice.worker, "report_completion", {"task_id": bob.task_id, "result": "x"})
    assert err["error"] == "task_not_found"
    err = await tool_error(client, alice.boss, "cancel_task", {"task_id": bob.task_id})
    assert err["error"] == "task_not_found"
    # An ack that marks nothing is an error naming each id's reason (here: unknown in Alice's network).
    err = await tool_error(client, alice.worker, "ack_inbox", {"message_ids": [bob.message_id, bob.task_message_id]})
    assert err["error"] == "nothing_acked" and bob.message_id in err["message"] and "unknown id" in err["message"]
    # Bob's task and message are untouched.
    task = (await tool(client, bob.boss, "get_task", {"task_id": bob.task_id}))["task"]
    assert task["status"] == "delivered"
    inbox = (await client.get("/api/messages", headers=bob.account.auth, params={"alias": "worker"})).json()
    assert all(m["read_at"] is None for m in inbox["messages"]), inbox


async def test_cannot_listen_to_the_other_networks_stream(client: httpx.AsyncClient) -> None:
    alice, bob = await two_worlds(client)
    # With the right alias name but her own token, Alice gets (at most) an alias of her own network:
    # Bob's events never reach her, not live and not by replay from the start.
    spy = await create_token(client, alice.account, "spy")
    url = "/events/bob-agent"
    async with client.stream("GET", url, params={"token": spy}, headers={"Last-Event-ID": "1"}) as response:
        if response.status_code == 200:
            lines = response.aiter_lines()

            async def next_data() -> dict[str, Any]:
                with trio.fail_after(10):
                    while True:
                        line = await lines.__anext__()
                        if line.startswith("data:"):
                            return json.loads(line[5:].strip())

            await tool(client, bob.boss, "send_message", {"to": "bob-agent", "content": "bob secret"})
            marker = await tool(client, alice.boss, "send_message", {"to": "bob-agent", "content": "alice marker"})
            first = await next_data()
            while first.get("message_id") is None:  # heartbeat
                first = await next_data()
            assert first["message_id"] == marker["message_id"], first
        else:
            refused(response, 403, 404, 409)
            await response.aread()
    # Naming Bob's network is refused, with a network token and with a user token.
    for token in (spy, alice.account.token):
        async with client.stream("GET", "/events/bob-agent", params={"token": token,
                                                                     "network_id": bob.account.network_id}) as r:
            await r.aread()
            refused(r, 401, 403, 404)
    # Bob's own stream is unaffected and still his.
    r = await client.get("/api/status", headers=bob.account.auth)
    assert {s["alias"] for s in r.json()["sessions"]} == {"boss", "worker", "bob-agent"}


# --- impersonation and alias claims -----------------------------------------------------------------

async def test_bound_token_cannot_act_as_another_alias(client: httpx.AsyncClient) -> None:
    account = await register(client)
    other = await create_token(client, account, "other")
    await tool(client, other, "report_status", {"alias": "beta"})
    bound = await create_token(client, account, "bound", alias="alpha")
    err = await tool_error(client, bound, "report_status", {"alias": "beta"})
    assert err["error"] == "alias_bound" and "alpha" in err["message"]
    # Without an alias it is alpha; what it sends comes from alpha, whatever the arguments say.
    assert (await tool(client, bound, "report_status", {}))["alias"] == "alpha"
    assert (await tool(client, bound, "whoami"))["alias"] == "alpha"
    sent = await tool(client, bound, "send_message", {"to": "beta", "content": "hi"})
    err = await tool_error(client, bound, "send_message", {"to": "beta", "content": "hi", "from": "beta"})
    assert err["error"] == "invalid_arguments" and "from" in err["message"]
    msgs = (await client.get("/api/messages", headers=account.auth, params={"alias": "beta"})).json()["messages"]
    assert [(m["message_id"], m["from"]) for m in msgs] == [(sent["message_id"], "alpha")]
    # Over REST the sender cannot be chosen either.
    r = await client.post("/api/messages", headers={"Authorization": f"Bearer {bound}"},
                          json={"to": "beta", "content": "x", "from": "beta"})
    refused(r, 400)
    r = await client.post("/api/messages", headers={"Authorization": f"Bearer {bound}"},
                          json={"to": "beta", "content": "rest"})
    assert r.status_code == 200, r.text
    msgs = (await client.get("/api/messages", headers=account.auth, params={"alias": "beta"})).json()["messages"]
    assert msgs[0]["content"] == "rest" and msgs[0]["from"] == "alpha"


async def test_cannot_claim_alias_held_by_another_online_token(client: httpx.AsyncClient) -> None:
    account = await register(client)
    holder = await create_token(client, account, "holder")
    intruder = await create_token(client, account, "intruder")
    await tool(client, holder, "report_status", {"alias": "coder-1"})
    err = await tool_error(client, intruder, "report_status", {"alias": "coder-1"})
    assert err["error"] == "alias_taken", err
    # Still held by the holder: the intruder has no identity, so it cannot send as anyone.
    err = await tool_error(client, intruder, "send_message", {"to": "coder-1", "content": "x"})
    assert "report_status" in err["message"]
    r = await client.post("/api/messages", headers={"Authorization": f"Bearer {intruder}"},
                          json={"to": "coder-1", "content": "x"})
    refused(r, 409)
    # The same alias name in another user's network is a different alias: no conflict there.
    stranger = await register(client)
    assert (await tool(client, stranger.network_token, "report_status", {"alias": "coder-1"}))["alias"] == "coder-1"


async def test_someone_elses_mcp_session_id_does_not_carry_their_identity(client: httpx.AsyncClient) -> None:
    account = await register(client)
    owner = await create_token(client, account, "owner")
    thief = await create_token(client, account, "thief")
    r = await client.post("/mcp", headers={"Authorization": f"Bearer {owner}"}, json={
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
    assert r.status_code == 200, r.text
    session_id = r.headers["Mcp-Session-Id"]
    await tool(client, owner, "report_status", {"alias": "lead"}, session_id=session_id)
    await tool(client, thief, "report_status", {"alias": "target"})
    thief2 = await create_token(client, account, "thief2")
    # A token that never claimed anything, presenting the owner's session id, is nobody.
    err = await tool_error(client, thief2, "send_message", {"to": "target", "content": "from lead?"},
                           session_id=session_id)
    assert "report_status" in err["message"]
    # A token with its own identity stays itself.
    sent = await tool(client, thief, "send_message", {"to": "lead", "content": "who?"}, session_id=session_id)
    msgs = (await client.get("/api/messages", headers=account.auth, params={"alias": "lead"})).json()["messages"]
    assert [(m["message_id"], m["from"]) for m in msgs] == [(sent["message_id"], "target")]


async def test_alias_stays_with_its_token_when_offline_until_released(tmp_path: Path) -> None:
    """An offline alias is not up for grabs (that was an identity takeover): only a release frees it."""
    async with own_server(tmp_path, "claim", presence_timeout_seconds=0.3, sweep_seconds=0.05) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            account = await register(client)
            holder = await create_token(client, account, "holder")
            successor = await create_token(client, account, "successor")
            await tool(client, holder, "report_status", {"alias": "coder-1"})
            assert (await tool_error(client, successor, "report_status", {"alias": "coder-1"}))["error"] == \
                "alias_taken"
            with trio.fail_after(10):
                while True:
                    rows = (await client.get("/api/status", headers=account.auth)).json()["sessions"]
                    if next(s for s in rows if s["alias"] == "coder-1")["status"] == "offline":
                        break
                    await trio.sleep(0.05)
            assert (await tool_error(client, successor, "report_status", {"alias": "coder-1"}))["error"] == \
                "alias_taken"
            r = await client.post(f"/api/networks/{account.network_id}/aliases/coder-1/release", headers=account.auth)
            assert r.status_code == 200, r.text
            assert (await tool(client, successor, "report_status", {"alias": "coder-1"}))["alias"] == "coder-1"
            # Now the successor holds it; the old holder, back online, cannot silently act as coder-1.
            err = await tool_error(client, holder, "send_message", {"to": "coder-1", "content": "am I?"})
            assert "report_status" in err["message"]
