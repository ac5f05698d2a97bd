"""REST networks against a real server: list/create/get/update/delete, members, invites, join, roles."""

from __future__ import annotations

import httpx
import trio
from conftest import Account, create_token, make_settings, mcp_call, register
from test_rest_auth import TIME_RE, assert_error, curl, running

from commhub_lib.ids import now_text
from commhub_lib.runtime.server import ServerHandle

CURL_LIST = """curl http://localhost:9200/api/networks \\
  -H "Authorization: Bearer utok_xxx\""""

CURL_CREATE = """curl -X POST http://localhost:9200/api/networks \\
  -H "Authorization: Bearer utok_xxx" \\
  -H "Content-Type: application/json" \\
  -d '{
    "name": "prod",
    "description": "Production environment network"
  }'"""

CURL_GET = """curl http://localhost:9200/api/networks/net_abc123 \\
  -H "Authorization: Bearer utok_xxx\""""

CURL_UPDATE = """curl -X PUT http://localhost:9200/api/networks/net_abc123 \\
  -H "Authorization: Bearer utok_xxx" \\
  -H "Content-Type: application/json" \\
  -d '{"network_name": "development"}'"""

CURL_DELETE = """curl -X DELETE http://localhost:9200/api/networks/net_abc123 \\
  -H "Authorization: Bearer utok_xxx\""""

CURL_MEMBERS = """curl http://localhost:9200/api/networks/net_xxx/members \\
  -H "Authorization: Bearer utok_xxx\""""

CURL_INVITE = """curl -X POST http://localhost:9200/api/networks/net_xxx/invite \\
  -H "Authorization: Bearer utok_xxx" \\
  -H "Content-Type: application/json" \\
  -d '{"role": "member", "max_uses": 5}'"""

CURL_JOIN = """curl -X POST http://localhost:9200/api/networks/join \\
  -H "Authorization: Bearer utok_xxx" \\
  -H "Content-Type: application/json" \\
  -d '{"invite_code": "inv_abc123def456"}'"""


async def invite(client: httpx.AsyncClient, by: Account, network_id: str, **body: object) -> str:
    """Create an invite code in a network and return it."""
    r = await client.post(f"/api/networks/{network_id}/invite", json=body, headers=by.auth)
    assert r.status_code == 200, r.text
    return r.json()["invite_code"]


async def join(client: httpx.AsyncClient, who: Account, code: str) -> httpx.Response:
    return await client.post("/api/networks/join", json={"invite_code": code}, headers=who.auth)


async def new_network(client: httpx.AsyncClient, owner: Account, name: str) -> str:
    r = await client.post("/api/networks", json={"name": name}, headers=owner.auth)
    assert r.status_code == 200, r.text
    return r.json()["network_id"]


async def test_network_curl_examples_as_written(client: httpx.AsyncClient) -> None:
    owner = await register(client)
    guest = await register(client)
    as_owner = {"utok_xxx": owner.token}

    r = await curl(client, CURL_LIST, as_owner)
    assert r.status_code == 200, r.text
    assert r.json()["ok"] is True
    assert [n["network_name"] for n in r.json()["networks"]] == ["default"]

    r = await curl(client, CURL_CREATE, as_owner)
    assert r.status_code == 200, r.text
    created = r.json()
    assert created["ok"] is True and created["network_name"] == "prod" and created["network_id"].startswith("net_")
    net = created["network_id"]

    r = await curl(client, CURL_LIST, as_owner)
    nets = {n["network_id"]: n for n in r.json()["networks"]}
    assert set(nets) == {owner.network_id, net}
    for key, value in {"network_name": "prod", "owner_id": owner.user_id, "member_role": "owner",
                       "visibility": "private", "max_members": 50}.items():
        assert nets[net][key] == value, nets[net]
    assert TIME_RE.match(nets[net]["created_at"])

    r = await curl(client, CURL_GET, {**as_owner, "net_abc123": net})
    assert r.status_code == 200, r.text
    detail = r.json()["network"]
    assert r.json()["ok"] is True
    assert detail["network_id"] == net and detail["network_name"] == "prod"
    assert detail["description"] == "Production environment network" and detail["member_role"] == "owner"
    assert detail["owner_id"] == owner.user_id

    r = await curl(client, CURL_UPDATE, {**as_owner, "net_abc123": net})
    assert r.status_code == 200, r.text
    assert r.json()["network"]["network_name"] == "development"
    r = await curl(client, CURL_GET, {**as_owner, "net_abc123": net})
    assert r.json()["network"]["network_name"] == "development"
    assert r.json()["network"]["description"] == "Production environment network"

    r = await curl(client, CURL_MEMBERS, {**as_owner, "net_xxx": net})
    assert r.status_code == 200, r.text
    assert [(m["user_id"], m["username"], m["role"]) for m in r.json()["members"]] == [
        (owner.user_id, owner.username, "owner")]

    r = await curl(client, CURL_INVITE, {**as_owner, "net_xxx": net})
    assert r.status_code == 200, r.text
    inv = r.json()
    assert inv["ok"] is True and inv["invite_code"].startswith("inv_")
    assert inv["role"] == "member" and inv["max_uses"] == 5 and inv["expires_at"] is None

    r = await curl(client, CURL_JOIN, {"utok_xxx": guest.token, "inv_abc123def456": inv["invite_code"]})
    assert r.status_code == 200, r.text
    assert r.json()["ok"] is True and r.json()["network_id"] == net and r.json()["role"] == "member"

    r = await curl(client, CURL_MEMBERS, {"utok_xxx": guest.token, "net_xxx": net})
    assert r.status_code == 200, r.text
    assert {m["user_id"]: m["role"] for m in r.json()["members"]} == {owner.user_id: "owner",
                                                                       guest.user_id: "member"}
    r = await curl(client, CURL_LIST, {"utok_xxx": guest.token})
    roles = {n["network_id"]: n["member_role"] for n in r.json()["networks"]}
    assert roles == {guest.network_id: "owner", net: "member"}

    r = await curl(client, CURL_DELETE, {**as_owner, "net_abc123": net})
    assert r.status_code == 200, r.text
    assert r.json()["ok"] is True
    assert_error(await curl(client, CURL_GET, {**as_owner, "net_abc123": net}), 404, "network_not_found")
    r = await curl(client, CURL_LIST, {"utok_xxx": guest.token})
    assert [n["network_id"] for n in r.json()["networks"]] == [guest.network_id]
    assert_error(await curl(client, CURL_DELETE, {**as_owner, "net_abc123": net}), 404, "network_not_found")


async def test_create_network_validation_and_conflicts(client: httpx.AsyncClient) -> None:
    alice = await register(client)
    bob = await register(client)
    for body, field in (({}, "name"), ({"name": ""}, "name"), ({"name": "n" * 101}, "name"), ({"name": 5}, "name"),
                        ({"name": "ok", "description": "d" * 1001}, "description"),
                        ({"name": "ok", "owner_id": bob.user_id}, "owner_id")):
        r = await client.post("/api/networks", json=body, headers=alice.auth)
        assert_error(r, 400, "validation_error", mentions=field)
    await new_network(client, alice, "prod")
    assert_error(await client.post("/api/networks", json={"name": "prod"}, headers=alice.auth), 409,
                 "network_exists", mentions="prod")
    assert_error(await client.post("/api/networks", json={"name": "default"}, headers=alice.auth), 409,
                 "network_exists")
    await new_network(client, bob, "prod")  # names are unique per owner only
    assert_error(await client.post("/api/networks", json={"name": "x"}), 401)
    assert_error(await client.post("/api/networks", json={"name": "x"}, headers=alice.net_auth), 403,
                 "user_token_required")
    r = await client.get("/api/networks", headers=alice.auth)
    assert sorted(n["network_name"] for n in r.json()["networks"]) == ["default", "prod"]


async def test_update_network_fields_and_validation(client: httpx.AsyncClient) -> None:
    owner = await register(client)
    net = await new_network(client, owner, "staging")
    r = await client.put(f"/api/networks/{net}", headers=owner.auth,
                         json={"description": "pre-prod", "visibility": "public", "max_members": 10})
    assert r.status_code == 200, r.text
    got = r.json()["network"]
    assert (got["network_name"], got["description"], got["visibility"], got["max_members"]) == (
        "staging", "pre-prod", "public", 10)
    r = await client.put(f"/api/networks/{net}", headers=owner.auth, json={"name": "qa"})  # `name` works too
    assert r.status_code == 200 and r.json()["network"]["network_name"] == "qa"
    r = await client.get("/api/networks", headers=owner.auth)
    listed = {n["network_id"]: n for n in r.json()["networks"]}[net]
    assert (listed["network_name"], listed["visibility"], listed["max_members"]) == ("qa", "public", 10)

    for body, field in (({}, "body"), ({"network_name": ""}, "network_name"),
                        ({"network_name": "n" * 101}, "network_name"), ({"visibility": "secret"}, "visibility"),
                        ({"max_members": 0}, "max_members"), ({"max_members": "many"}, "max_members"),
                        ({"description": "d" * 1001}, "description"), ({"owner_id": "u_x"}, "owner_id")):
        r = await client.put(f"/api/networks/{net}", json=body, headers=owner.auth)
        assert_error(r, 400, "validation_error", mentions=field)
    assert_error(await client.put(f"/api/networks/{net}", json={"network_name": "default"}, headers=owner.auth),
                 409, "network_exists")
    assert_error(await client.put("/api/networks/net_missing", json={"network_name": "z"}, headers=owner.auth),
                 404, "network_not_found")
    r = await client.get(f"/api/networks/{net}", headers=owner.auth)
    assert r.json()["network"]["network_name"] == "qa"  # nothing above changed it


async def test_roles_owner_admin_member_enforced(client: httpx.AsyncClient) -> None:
    sysadmin = await register(client)  # first user: system admin, owner of `team`
    admin = await register(client)
    member = await register(client)
    team = await new_network(client, sysadmin, "team")
    assert (await join(client, admin, await invite(client, sysadmin, team, role="admin"))).status_code == 200
    assert (await join(client, member, await invite(client, sysadmin, team))).status_code == 200
    outsider_net = member.network_id  # `admin` is no member of it

    # Everyone in the network may look at it and its members; outsiders see nothing (404, not 403).
    for who, role in ((sysadmin, "owner"), (admin, "admin"), (member, "member")):
        r = await client.get(f"/api/networks/{team}", headers=who.auth)
        assert r.status_code == 200 and r.json()["network"]["member_role"] == role, r.text
        assert r.json()["network"]["member_count"] == 3
        r = await client.get(f"/api/networks/{team}/members", headers=who.auth)
        assert {m["user_id"]: m["role"] for m in r.json()["members"]} == {
            sysadmin.user_id: "owner", admin.user_id: "admin", member.user_id: "member"}
    for method, path, body in (("GET", "", None), ("GET", "/members", None), ("PUT", "", {"network_name": "x"}),
                               ("DELETE", "", None), ("POST", "/invite", {"role": "member"})):
        r = await client.request(method, f"/api/networks/{outsider_net}{path}", json=body, headers=admin.auth)
        assert_error(r, 404, "network_not_found")

    # Update and delete: owner only.
    for who in (admin, member):
        r = await client.put(f"/api/networks/{team}", json={"network_name": "mine"}, headers=who.auth)
        assert_error(r, 403, "insufficient_role", mentions="owner")
        assert_error(await client.delete(f"/api/networks/{team}", headers=who.auth), 403, "insufficient_role")
    # The system admin may look after any network, but owner-only actions stay the owner's.
    r = await client.get(f"/api/networks/{outsider_net}", headers=sysadmin.auth)
    assert r.status_code == 200, r.text
    r = await client.put(f"/api/networks/{outsider_net}", json={"network_name": "taken"}, headers=sysadmin.auth)
    assert_error(r, 403, "insufficient_role")
    assert_error(await client.delete(f"/api/networks/{outsider_net}", headers=sysadmin.auth), 403)

    # Invites: owner any role; admin members only; member none.
    assert (await client.post(f"/api/networks/{team}/invite", json={"role": "member"},
                              headers=admin.auth)).status_code == 200
    assert_error(await client.post(f"/api/networks/{team}/invite", json={"role": "admin"}, headers=admin.auth),
                 403, "insufficient_role")
    assert_error(await client.post(f"/api/networks/{team}/invite", json={}, headers=member.auth), 403,
                 "insufficient_role")

    # The audit log of a network: owner and admin, not member.
    for who in (sysadmin, admin):
        r = await client.get("/api/audit-log", params={"network_id": team}, headers=who.auth)
        assert r.status_code == 200, r.text
        assert {e["network_id"] for e in r.json()["entries"]} == {team}
    r = await client.get("/api/audit-log", params={"network_id": team}, headers=member.auth)
    assert_error(r, 403, "insufficient_role")

    # An agent's network token, even the owner's, cannot manage the network.
    agent = await create_token(client, sysadmin, "agent", network_id=team)
    agent_auth = {"Authorization": f"Bearer {agent}"}
    assert (await client.get(f"/api/networks/{team}", headers=agent_auth)).status_code == 200
    assert_error(await client.put(f"/api/networks/{team}", json={"network_name": "pwned"}, headers=agent_auth), 403,
                 "user_token_required")
    assert_error(await client.post(f"/api/networks/{team}/invite", json={"role": "admin"}, headers=agent_auth), 403,
                 "user_token_required")
    assert_error(await client.delete(f"/api/networks/{team}", headers=agent_auth), 403, "user_token_required")
    assert_error(await client.get(f"/api/networks/{sysadmin.network_id}", headers=agent_auth), 404)

    r = await client.get(f"/api/networks/{team}", headers=sysadmin.auth)
    assert r.json()["network"]["network_name"] == "team"  # nobody but the owner renamed it
    assert (await client.delete(f"/api/networks/{team}", headers=sysadmin.auth)).status_code == 200


async def test_invite_codes_unknown_used_up_expired(server: ServerHandle, client: httpx.AsyncClient) -> None:
    owner = await register(client)
    first = await register(client)
    second = await register(client)
    net = await new_network(client, owner, "crew")

    assert_error(await join(client, first, "inv_doesnotexist"), 404, "invite_not_found", mentions="unknown")

    once = await invite(client, owner, net, max_uses=1)
    r = await join(client, first, once)
    assert r.status_code == 200 and r.json()["network_name"] == "crew", r.text
    assert_error(await join(client, second, once), 409, "invite_used_up", mentions="used up")
    # Redeeming again as a member, or the owner joining, is a conflict too.
    many = await invite(client, owner, net, max_uses=3)
    assert_error(await join(client, first, many), 409, "already_member")
    assert_error(await join(client, owner, many), 409, "already_member")

    r = await client.post(f"/api/networks/{net}/invite", json={"max_uses": 2, "expires_in_seconds": 3600},
                          headers=owner.auth)
    assert r.status_code == 200, r.text
    timed = r.json()
    assert TIME_RE.match(timed["expires_at"]) and timed["expires_at"] > now_text(), timed
    # Age the invite by moving its expiry into the past (the test owns this database).
    with server.hub.db.write():
        server.hub.db.execute("UPDATE invites SET expires_at = '2000-01-01 00:00:00' WHERE invite_id = ?",
                              (timed["invite_id"],))
    assert_error(await join(client, second, timed["invite_code"]), 409, "invite_expired", mentions="expired")

    # A full network refuses new members.
    r = await client.put(f"/api/networks/{net}", json={"max_members": 2}, headers=owner.auth)
    assert r.status_code == 200, r.text
    assert_error(await join(client, second, many), 409, "network_full")
    r = await client.get(f"/api/networks/{net}/members", headers=owner.auth)
    assert {m["user_id"] for m in r.json()["members"]} == {owner.user_id, first.user_id}

    # Validation of invite creation and of joining.
    for body, field in (({"role": "owner"}, "role"), ({"max_uses": 0}, "max_uses"), ({"max_uses": "x"}, "max_uses"),
                        ({"expires_in_seconds": 0}, "expires_in_seconds"), ({"code": "mine"}, "code")):
        r = await client.post(f"/api/networks/{net}/invite", json=body, headers=owner.auth)
        assert_error(r, 400, "validation_error", mentions=field)
    for body, field in (({}, "invite_code"), ({"invite_code": ""}, "invite_code"), ({"invite_code": 5}, "invite_code"),
                        ({"invite_code": many, "role": "owner"}, "role")):
        r = await client.post("/api/networks/join", json=body, headers=second.auth)
        assert_error(r, 400, "validation_error", mentions=field)
    assert_error(await client.post("/api/networks/join", json={"invite_code": many}, headers=second.net_auth), 403,
                 "user_token_required")
    assert_error(await client.post("/api/networks/join", json={"invite_code": many}), 401)


async def test_delete_network_with_online_session_is_409(client: httpx.AsyncClient, tmp_path) -> None:
    owner = await register(client)
    result = await mcp_call(client, owner.network_token, "report_status", {"alias": "coder-1", "status": "idle"})
    assert not result.get("isError"), result
    r = await client.get("/api/status", headers=owner.net_auth)
    assert [(s["alias"], s["status"]) for s in r.json()["sessions"]] == [("coder-1", "idle")]

    r = await client.delete(f"/api/networks/{owner.network_id}", headers=owner.auth)
    assert_error(r, 409, "network_has_online_sessions", mentions="coder-1")
    assert (await client.get(f"/api/networks/{owner.network_id}", headers=owner.auth)).status_code == 200
    assert (await client.get("/api/networks", headers=owner.net_auth)).status_code == 200

    # Once the presence timeout has passed, the session is offline (docs/presence.md) whether or not the sweeper has
    # stored it yet (here it never runs), and the delete goes through, taking the network's tokens with it.
    fast = make_settings(tmp_path, db=str(tmp_path / "fast.db"), presence_timeout_seconds=0.3, sweep_seconds=3600)
    async with running(fast) as (_, fast_client):
        acct = await register(fast_client)
        await mcp_call(fast_client, acct.network_token, "report_status", {"alias": "coder-1"})
        r = await fast_client.delete(f"/api/networks/{acct.network_id}", headers=acct.auth)
        for _ in range(200):  # bounded poll (>= 10 s) until the 0.3 s presence timeout has lapsed
            if r.status_code != 409:
                break
            await trio.sleep(0.05)
            r = await fast_client.delete(f"/api/networks/{acct.network_id}", headers=acct.auth)
        assert r.status_code == 200, r.text
        assert r.json()["ok"] is True
        assert_error(await fast_client.get("/api/networks", headers=acct.net_auth), 401, "invalid_token")
        r = await fast_client.get("/api/networks", headers=acct.auth)
        assert r.json()["networks"] == []
