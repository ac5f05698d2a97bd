"""Nobody takes an identity: aliases stay with their token, agents cannot pose as people, invite codes are
secrets, and revoking a token (or changing a password) ends everything it had open."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import trio
from conftest import Account, create_token, mcp_call, own_server, register, tool, tool_error
from test_mcp_sdk import wait_until

WAIT = 5.0


@asynccontextmanager
async def stream(client: httpx.AsyncClient, path: str, token: str) -> AsyncIterator[httpx.Response]:
    """An open SSE stream, returned once the server has subscribed it (its first bytes arrived)."""
    async with client.stream("GET", path, headers={"Authorization": f"Bearer {token}"}) as response:
        assert response.status_code == 200, await response.aread()
        chunks = response.aiter_raw()
        await chunks.__anext__()
        response.extensions["rest"] = chunks
        yield response


async def ends(response: httpx.Response) -> str:
    """Read a stream to its end (bounded); returns what came."""
    got = []
    with trio.fail_after(WAIT):
        async for chunk in response.extensions["rest"]:
            got.append(chunk.decode())
    return "".join(got)


async def member_of(client: httpx.AsyncClient, owner: Account, role: str = "member") -> Account:
    """A second user who joined the owner's network."""
    r = await client.post(f"/api/networks/{owner.network_id}/invite", json={"role": role}, headers=owner.auth)
    assert r.status_code == 200, r.text
    member = await register(client)
    r = await client.post("/api/networks/join", json={"invite_code": r.json()["invite_code"]}, headers=member.auth)
    assert r.status_code == 200, r.text
    return member


# --- alias takeover -----------------------------------------------------------------------------

async def test_an_offline_alias_cannot_be_taken_by_another_members_token(tmp_path: Path) -> None:
    async with own_server(tmp_path, "takeover", presence_timeout_seconds=0.3, sweep_seconds=0.05) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            owner = await register(client)
            member = await member_of(client, owner)
            bound = await create_token(client, owner, "real", alias="deployer")
            intruder = await create_token(client, member, "intruder", network_id=owner.network_id)
            await tool(client, bound, "report_status", {"alias": "deployer"})
            await tool(client, owner.network_token, "report_status", {"alias": "lead"})
            task = await tool(client, owner.network_token, "send_task", {"to": "deployer", "content": "ship"})
            with trio.fail_after(WAIT):  # wait (bounded) until the sweeper has marked the real agent offline
                while True:
                    sessions = (await tool(client, owner.network_token, "get_all_status"))["sessions"]
                    if not next(s for s in sessions if s["alias"] == "deployer")["online"]:
                        break
                    await trio.sleep(0.05)
            err = await tool_error(client, intruder, "report_status", {"alias": "deployer"})
            assert err["error"] == "alias_taken" and "release" in err["message"]
            # The queued task is not the intruder's to take or complete; the real agent still gets it.
            assert (await tool_error(client, intruder, "get_inbox"))["error"] == "no_identity"
            assert (await tool(client, owner.network_token, "get_task", {"task_id": task["task_id"]}))["task"][
                "status"] == "delivered"
            assert (await tool(client, bound, "report_status", {"status": "working"}))["alias"] == "deployer"
            # An owner/admin release frees it (a bound token still reserves it: revoke that first).
            r = await client.post(f"/api/networks/{owner.network_id}/aliases/deployer/release", headers=owner.auth)
            assert r.status_code == 200 and "bound" in r.json()["note"], r.text
            err = await tool_error(client, intruder, "report_status", {"alias": "deployer"})
            assert err["error"] == "alias_taken"
            # A plain member cannot release or retire aliases.
            r = await client.post(f"/api/networks/{owner.network_id}/aliases/lead/release", headers=member.auth)
            assert r.status_code == 403


async def test_token_rotation_revoking_frees_the_alias_at_once(client: httpx.AsyncClient) -> None:
    owner = await register(client)
    r = await client.post("/api/tokens", json={"name": "a", "network_id": owner.network_id, "alias": "builder"},
                          headers=owner.auth)
    token_a_id, token_a = r.json()["token_id"], r.json()["token"]
    async with stream(client, "/events/builder", token_a) as a_stream:
        token_b = await create_token(client, owner, "b", alias="builder")
        # While A lives, B is refused: the alias is A's.
        assert (await tool_error(client, token_b, "report_status", {}))["error"] == "alias_taken"
        r = await client.delete(f"/api/tokens/{token_a_id}", headers=owner.auth)
        assert r.status_code == 200 and r.json()["aliases_freed"] == ["builder"], r.text
        assert "token_revoked" in await ends(a_stream)
    # Offline at once, even though its stream just closed (a closing stream is no sign of life).
    status = (await client.get("/api/status", headers=owner.auth)).json()["sessions"]
    assert [(s["alias"], s["online"], s["status"]) for s in status] == [("builder", False, "offline")]
    # B claims at once: no waiting for the presence timeout.
    claimed = await tool(client, token_b, "report_status", {"status": "idle"})
    assert claimed["alias"] == "builder"
    status = (await client.get("/api/status", headers=owner.auth)).json()["sessions"]
    assert [(s["alias"], s["online"]) for s in status] == [("builder", True)]


async def test_revoking_a_token_ends_its_long_poll_and_takes_nothing(server: Any, client: httpx.AsyncClient) -> None:
    owner = await register(client)
    r = await client.post("/api/tokens", json={"name": "w", "network_id": owner.network_id}, headers=owner.auth)
    worker_id, worker = r.json()["token_id"], r.json()["token"]
    await tool(client, worker, "report_status", {"alias": "worker"})
    await tool(client, owner.network_token, "report_status", {"alias": "lead"})
    result: dict[str, Any] = {}

    async def poll() -> None:
        result.update(await mcp_call(client, worker, "get_inbox", {"wait_seconds": 30}))

    with trio.fail_after(WAIT * 2):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(poll)
            await wait_until(lambda: server.hub.broker.subscriber_count() >= 1)  # the long-poll waits (30 s)
            r = await client.delete(f"/api/tokens/{worker_id}", headers=owner.auth)
            assert r.status_code == 200
            sent = await tool(client, owner.network_token, "send_task", {"to": "worker", "content": "after revoke"})
    assert result.get("isError") and result["structuredContent"]["error"] == "invalid_token", result
    task = (await tool(client, owner.network_token, "get_task", {"task_id": sent["task_id"]}))["task"]
    assert task["status"] == "delivered"  # nobody took it


# --- agents posing as people --------------------------------------------------------------------

async def test_an_agent_cannot_take_a_persons_name(client: httpx.AsyncClient) -> None:
    owner = await register(client)
    member = await member_of(client, owner)
    sneaky = await create_token(client, member, "sneaky", network_id=owner.network_id)
    for alias in (owner.username, owner.username.upper()):
        err = await tool_error(client, sneaky, "report_status", {"alias": alias})
        assert err["error"] == "alias_is_username", err
    r = await client.post("/api/tokens", headers=owner.auth,
                          json={"name": "x", "network_id": owner.network_id, "alias": member.username})
    bound = r.json()["token"]
    assert (await tool_error(client, bound, "report_status", {}))["error"] == "alias_is_username"
    # And a person cannot register as an existing agent's alias.
    await tool(client, sneaky, "report_status", {"alias": "helper-bot"})
    r = await client.post("/api/auth/register", json={"username": "Helper_Bot", "password": "secret123"})
    assert r.status_code == 200  # different name (underscore)
    await tool(client, sneaky, "report_status", {"alias": "helperbot"})
    r = await client.post("/api/auth/register", json={"username": "HelperBot", "password": "secret123"})
    assert r.status_code == 409 and "agent alias" in r.json()["message"]


async def test_people_and_agents_are_told_apart_in_records(client: httpx.AsyncClient) -> None:
    owner = await register(client)
    worker = await create_token(client, owner, "worker")
    await tool(client, worker, "report_status", {"alias": "worker"})
    r = await client.post("/api/tasks", headers=owner.auth, json={"to": "worker", "content": "from a person"})
    task_id = r.json()["task_id"]
    task = (await client.get(f"/api/tasks/{task_id}", headers=owner.auth)).json()["task"]
    assert (task["from_name"], task["from_kind"], task["to_kind"]) == (owner.username, "person", "agent")
    item = (await tool(client, worker, "get_inbox"))["items"][0]
    assert (item["from"], item["from_kind"]) == (owner.username, "person")
    await tool(client, worker, "send_reply", {"task_id": task_id, "content": "need input", "status": "question"})
    msgs = (await client.get("/api/messages", headers=owner.auth, params={"kind": "reply"})).json()["messages"]
    assert [(m["to"], m["to_kind"], m["from_kind"]) for m in msgs] == [(owner.username, "person", "agent")]


async def test_a_person_answers_a_question_and_cancels_over_rest(client: httpx.AsyncClient) -> None:
    owner = await register(client)
    worker = await create_token(client, owner, "worker")
    await tool(client, worker, "report_status", {"alias": "worker"})
    r = await client.post("/api/tasks", headers=owner.auth, json={"to": "worker", "content": "build"})
    task_id = r.json()["task_id"]
    asked = await tool(client, worker, "send_reply", {"task_id": task_id, "content": "arm or x86?",
                                                      "status": "question"})
    # The person answers the question by its message id (no network named), as POST /api/replies.
    r = await client.post("/api/replies", headers=owner.auth, json={"message_id": asked["message_id"],
                                                                    "content": "arm"})
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["to"], r.json()["task_id"]) == ("answer", "worker", task_id)
    answer = next(i for i in (await tool(client, worker, "get_inbox"))["items"] if i["kind"] == "reply")
    assert (answer["content"], answer["task_id"], answer["from_kind"]) == ("arm", task_id, "person")
    r = await client.post("/api/replies", headers=owner.auth, json={"task_id": task_id, "content": "x",
                                                                    "status": "done"})
    assert r.status_code == 400 and "cancel" in r.json()["message"] and "cancel_task" not in r.json()["message"]
    detail = (await client.get(f"/api/tasks/{task_id}", headers=owner.auth)).json()
    assert detail["ok"] and detail["completion"] is None
    assert [e["event"] for e in detail["events"]] == ["delivered", "running", "question", "answer"]
    r = await client.post(f"/api/tasks/{task_id}/cancel", headers=owner.auth, json={"reason": "later"})
    assert r.status_code == 200 and r.json()["status"] == "cancelled" and r.json()["message_id"], r.text
    detail = (await client.get(f"/api/tasks/{task_id}", headers=owner.auth)).json()
    assert detail["task"]["status"] == "cancelled" and detail["completion"]["status"] == "cancelled"
    r = await client.post(f"/api/tasks/{task_id}/cancel", headers=owner.auth, json={})
    assert r.status_code == 409 and r.json()["error"] == "task_final"
    stranger = await register(client)
    assert (await client.get(f"/api/tasks/{task_id}", headers=stranger.auth)).status_code == 404


# --- invites ------------------------------------------------------------------------------------

async def test_invite_codes_are_shown_once_and_never_stored(server: Any, client: httpx.AsyncClient) -> None:
    owner = await register(client)
    r = await client.post(f"/api/networks/{owner.network_id}/invite", json={"role": "admin"}, headers=owner.auth)
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    code, invite_id = r.json()["invite_code"], r.json()["invite_id"]
    audit = (await client.get("/api/audit-log", headers=owner.auth)).text
    listed = (await client.get(f"/api/networks/{owner.network_id}/invites", headers=owner.auth)).json()
    assert code not in audit and code not in json.dumps(listed) and invite_id in audit
    assert [(i["invite_id"], i["role"], i["usable"]) for i in listed["invites"]] == [(invite_id, "admin", True)]
    raw = server.hub.db.query("SELECT * FROM invites")
    assert code not in repr(raw) and code.encode() not in b"".join(r["code_hash"] for r in raw)
    # Revoked by id: the code no longer works.
    r = await client.delete(f"/api/networks/{owner.network_id}/invites/{invite_id}", headers=owner.auth)
    assert r.status_code == 200
    guest = await register(client)
    r = await client.post("/api/networks/join", json={"invite_code": code}, headers=guest.auth)
    assert r.status_code == 409 and r.json()["error"] == "invite_revoked"


async def test_only_the_owner_invites_admins(client: httpx.AsyncClient) -> None:
    system_admin = await register(client)  # the first user of this server is the system admin
    owner = await register(client)
    admin = await member_of(client, owner, role="admin")
    for who in (admin, system_admin):
        r = await client.post(f"/api/networks/{owner.network_id}/invite", json={"role": "admin"}, headers=who.auth)
        assert r.status_code in (403, 404), r.text
    r = await client.post(f"/api/networks/{owner.network_id}/invite", json={"role": "member"}, headers=admin.auth)
    assert r.status_code == 200
    # The owner's admin invite works; its code never shows up where the admin could reuse it.
    r = await client.post(f"/api/networks/{owner.network_id}/invite", json={"role": "admin", "max_uses": 5},
                          headers=owner.auth)
    code = r.json()["invite_code"]
    seen_by_admin = (await client.get("/api/audit-log", headers=admin.auth)).text + (await client.get(
        f"/api/networks/{owner.network_id}/invites", headers=admin.auth)).text
    assert code not in seen_by_admin
    newcomer = await register(client)
    r = await client.post("/api/networks/join", json={"invite_code": code}, headers=newcomer.auth)
    assert r.status_code == 200 and r.json()["role"] == "admin"


async def test_released_alias_is_not_taken_back_implicitly(client: httpx.AsyncClient) -> None:
    owner = await register(client)
    holder = await create_token(client, owner, "holder")
    other = await create_token(client, owner, "other")
    await tool(client, holder, "report_status", {"alias": "shared-seat"})
    r = await client.post(f"/api/networks/{owner.network_id}/aliases/shared-seat/release", headers=owner.auth)
    assert r.status_code == 200 and "note" not in r.json()
    # The former holder's next call does not silently re-take it; another token may claim it now.
    err = await tool_error(client, holder, "get_inbox")
    assert err["error"] == "no_identity" and "report_status" in err["message"]
    assert (await tool(client, other, "report_status", {"alias": "shared-seat"}))["alias"] == "shared-seat"
    assert (await tool_error(client, holder, "report_status", {"alias": "shared-seat"}))["error"] == "alias_taken"


async def test_a_person_joining_where_an_agent_has_their_name_is_kept_apart(server: Any,
                                                                           client: httpx.AsyncClient) -> None:
    owner = await register(client)
    worker = await create_token(client, owner, "worker")
    await tool(client, worker, "report_status", {"alias": "worker"})
    person = await register(client)
    # An agent that took this name before the rule existed (data from an older version).
    with server.hub.db.write():
        server.hub.db.execute("INSERT INTO sessions(network_id, alias, resume_id, status, last_seen_at, last_seen_ts,"
                              " created_at) VALUES (?, ?, 'r', 'idle', 't', 0, 't')",
                              (owner.network_id, person.username))
    r = await client.post(f"/api/networks/{owner.network_id}/invite", json={}, headers=owner.auth)
    r = await client.post("/api/networks/join", json={"invite_code": r.json()["invite_code"]}, headers=person.auth)
    assert r.status_code == 200 and "kept apart" in r.json()["note"]
    r = await client.post("/api/tasks", headers=person.auth,
                          json={"to": "worker", "content": "x", "network_id": owner.network_id})
    task_id = r.json()["task_id"]
    assert (await tool(client, worker, "get_inbox"))["items"][0]["from_kind"] == "person"
    await tool(client, worker, "send_reply", {"task_id": task_id, "content": "done", "status": "done"})
    reply = (await client.get("/api/messages", headers=person.auth,
                              params={"kind": "reply", "network_id": owner.network_id})).json()["messages"][0]
    assert (reply["to"], reply["to_kind"]) == (person.username, "person")
    # The agent with the same name never sees it in its inbox.
    rows = server.hub.db.query("SELECT count(*) AS n FROM messages WHERE to_name = ? AND to_kind = 'agent'",
                               (person.username,))
    assert rows == [{"n": 0}]


async def test_members_are_removed_and_re_roled(client: httpx.AsyncClient) -> None:
    owner = await register(client)
    admin = await member_of(client, owner, role="admin")
    member = await member_of(client, owner)
    agent = await create_token(client, member, "agent", network_id=owner.network_id)
    await tool(client, agent, "report_status", {"alias": "members-bot"})
    net = owner.network_id
    # An admin cannot change roles; the owner can; nobody changes the owner's.
    r = await client.put(f"/api/networks/{net}/members/{member.user_id}", json={"role": "admin"}, headers=admin.auth)
    assert r.status_code == 403
    r = await client.put(f"/api/networks/{net}/members/{owner.user_id}", json={"role": "member"}, headers=owner.auth)
    assert r.status_code == 403
    r = await client.put(f"/api/networks/{net}/members/{member.user_id}", json={"role": "Admin"}, headers=owner.auth)
    assert r.status_code == 200 and r.json()["role"] == "admin"
    r = await client.put(f"/api/networks/{net}/members/{member.user_id}", json={"role": "member"}, headers=owner.auth)
    assert r.status_code == 200
    # An admin removes a plain member: the member's tokens for the network stop working and free their aliases.
    r = await client.delete(f"/api/networks/{net}/members/{owner.user_id}", headers=admin.auth)
    assert r.status_code == 403
    r = await client.delete(f"/api/networks/{net}/members/{member.user_id}", headers=admin.auth)
    assert r.status_code == 200 and r.json()["tokens_revoked"], r.text
    assert (await client.post("/mcp", headers={"Authorization": f"Bearer {agent}"}, json={})).status_code == 401
    members = (await client.get(f"/api/networks/{net}/members", headers=owner.auth)).json()["members"]
    assert member.user_id not in {m["user_id"] for m in members}
    r = await client.delete(f"/api/networks/{net}/members/{admin.user_id}", headers=admin.auth)  # leaving
    assert r.status_code == 200


# --- retire -------------------------------------------------------------------------------------

async def test_a_retired_alias_cannot_be_sent_to_or_claimed(client: httpx.AsyncClient) -> None:
    owner = await register(client)
    old = await create_token(client, owner, "old")
    await tool(client, old, "report_status", {"alias": "legacy-bot"})
    r = await client.post(f"/api/networks/{owner.network_id}/aliases/legacy-bot/retire", headers=owner.auth)
    assert r.status_code == 200
    r = await client.post("/api/tasks", headers=owner.auth, json={"to": "legacy-bot", "content": "x"})
    assert r.status_code == 409 and r.json()["error"] == "alias_retired" and "retired" in r.json()["message"]
    other = await create_token(client, owner, "other")
    assert (await tool_error(client, other, "report_status", {"alias": "legacy-bot"}))["error"] == "alias_retired"


# --- revocation is total ------------------------------------------------------------------------

async def test_password_change_closes_other_logins_streams(client: httpx.AsyncClient) -> None:
    owner = await register(client)
    worker = await create_token(client, owner, "worker")
    await tool(client, worker, "report_status", {"alias": "watched"})
    r = await client.post("/api/auth/login", json={"username": owner.username, "password": owner.password})
    assert r.headers["cache-control"] == "no-store"
    other_login = r.json()["token"]
    async with stream(client, "/events/watched", other_login) as watching:
        r = await client.post("/api/auth/password", headers=owner.auth,
                              json={"old_password": owner.password, "new_password": "another-pass"})
        assert r.status_code == 200 and r.json()["logins_revoked"] >= 1
        assert "token_revoked" in await ends(watching)
    assert (await client.get("/api/auth/me", headers={"Authorization": f"Bearer {other_login}"})).status_code == 401


async def test_login_tokens_expire_and_can_be_listed_and_revoked(tmp_path: Path) -> None:
    async with own_server(tmp_path, "logins", login_token_days=30) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            owner = await register(client)
            second = (await client.post("/api/auth/login", json={"username": owner.username,
                                                                 "password": owner.password})).json()["token"]
            listed = (await client.get("/api/auth/tokens", headers=owner.auth)).json()["tokens"]
            assert len(listed) == 2 and all(t["expires_at"] for t in listed)
            assert [t["current"] for t in listed].count(True) == 1
            second_id = next(t["token_id"] for t in listed if not t["current"])
            r = await client.delete(f"/api/auth/tokens/{second_id}", headers=owner.auth)
            assert r.status_code == 200
            assert (await client.get("/api/auth/me", headers={"Authorization": f"Bearer {second}"})).status_code == 401
            # Expiry: a login past its expires_at is refused.
            current = next(t["token_id"] for t in listed if t["current"])
            with server.hub.db.write():
                server.hub.db.execute("UPDATE tokens SET expires_at = '2000-01-01 00:00:00' WHERE token_id = ?",
                                      (current,))
            assert (await client.get("/api/auth/me", headers=owner.auth)).status_code == 401


async def test_network_token_expiry_and_no_store(server: Any, client: httpx.AsyncClient) -> None:
    owner = await register(client)
    r = await client.post("/api/tokens", headers=owner.auth,
                          json={"name": "short", "network_id": owner.network_id, "expires_in_seconds": 3600})
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store" and r.json()["expires_at"]
    token_id, secret = r.json()["token_id"], r.json()["token"]
    await tool(client, secret, "report_status", {"alias": "temp-bot"})
    listed = {t["token_id"]: t for t in (await client.get("/api/tokens", headers=owner.auth)).json()["tokens"]}
    assert listed[token_id]["expires_at"] == r.json()["expires_at"] and listed[token_id]["expired"] is False
    with server.hub.db.write():
        server.hub.db.execute("UPDATE tokens SET expires_at = '2000-01-01 00:00:00' WHERE token_id = ?", (token_id,))
    assert (await client.post("/mcp", headers={"Authorization": f"Bearer {secret}"}, json={})).status_code == 401
    # Its alias is free for a new token: an expired token holds nothing.
    fresh = await create_token(client, owner, "fresh")
    assert (await tool(client, fresh, "report_status", {"alias": "temp-bot"}))["alias"] == "temp-bot"
    r = await client.post("/api/auth/register", json={"username": "nostore_user", "password": "secret123"})
    assert r.headers["cache-control"] == "no-store"
