"""REST tokens, audit log and users against a real server: their curl examples, rules and error paths."""

from __future__ import annotations

import json

import httpx
from conftest import create_token, register
from test_rest_auth import TIME_RE, assert_error, curl

CURL_TOKEN_CREATE = """curl -X POST http://localhost:9200/api/tokens \\
  -H "Authorization: Bearer utok_xxx" \\
  -H "Content-Type: application/json" \\
  -d '{"name": "my-agent", "network_id": "net_xxx"}'"""

CURL_TOKEN_LIST = """curl http://localhost:9200/api/tokens \\
  -H "Authorization: Bearer utok_xxx\""""

CURL_TOKEN_REVOKE = """curl -X DELETE http://localhost:9200/api/tokens/tok_xxx \\
  -H "Authorization: Bearer utok_xxx\""""

CURL_AUDIT = """curl "http://localhost:9200/api/audit-log?limit=50" \\
  -H "Authorization: Bearer utok_xxx\""""

CURL_USERS = """curl http://localhost:9200/api/users \\
  -H "Authorization: Bearer utok_xxx\""""


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def test_token_curl_examples_and_revocation_is_immediate(client: httpx.AsyncClient) -> None:
    acct = await register(client)
    subs = {"utok_xxx": acct.token, "net_xxx": acct.network_id}

    r = await curl(client, CURL_TOKEN_CREATE, subs)
    assert r.status_code == 200, r.text
    created = r.json()
    assert created["ok"] is True and created["token_id"].startswith("tok_") and created["token"].startswith("ntok_")
    assert created["name"] == "my-agent" and created["network_id"] == acct.network_id
    secret, token_id = created["token"], created["token_id"]

    r = await curl(client, CURL_TOKEN_LIST, subs)
    assert r.status_code == 200, r.text
    listed = {t["token_id"]: t for t in r.json()["tokens"]}
    assert r.json()["ok"] is True and token_id in listed and len(listed) == 2  # plus the `default` one
    mine = listed[token_id]
    assert mine["name"] == "my-agent" and mine["network_id"] == acct.network_id and mine["revoked"] is False
    assert TIME_RE.match(mine["created_at"])
    # The secret is shown once, at creation; never listed, nor its hash.
    assert secret not in r.text and acct.network_token not in r.text
    for t in listed.values():
        assert not {"token", "token_hash", "secret", "hash"} & set(t), t

    # The new token works (REST and MCP) ...
    assert (await client.get("/api/networks", headers=bearer(secret))).status_code == 200
    r = await client.get("/api/networks", params={"token": secret})
    assert r.status_code == 200 and [n["network_id"] for n in r.json()["networks"]] == [acct.network_id]

    r = await curl(client, CURL_TOKEN_REVOKE, {**subs, "tok_xxx": token_id})
    assert r.status_code == 200, r.text
    assert r.json()["ok"] is True

    # ... and stops working on the very next request, by header and by ?token=, on REST and MCP.
    assert_error(await client.get("/api/networks", headers=bearer(secret)), 401, "invalid_token")
    assert_error(await client.get("/api/networks", params={"token": secret}), 401, "invalid_token")
    r = await client.post("/mcp", headers=bearer(secret), json={"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                                                                "params": {"name": "whoami", "arguments": {}}})
    assert_error(r, 401, "invalid_token")
    r = await curl(client, CURL_TOKEN_LIST, subs)
    assert {t["token_id"]: t["revoked"] for t in r.json()["tokens"]}[token_id] is True
    # The other token of the network is untouched.
    assert (await client.get("/api/networks", headers=acct.net_auth)).status_code == 200


async def test_token_creation_rules(client: httpx.AsyncClient) -> None:
    alice = await register(client)
    bob = await register(client)
    for body, field in (({"network_id": alice.network_id}, "name"), ({"name": "a"}, "network_id"),
                        ({"name": "", "network_id": alice.network_id}, "name"),
                        ({"name": "n" * 101, "network_id": alice.network_id}, "name"),
                        ({"name": "a", "network_id": alice.network_id, "alias": "bad alias!"}, "alias"),
                        ({"name": "a", "network_id": alice.network_id, "alias": "-dash"}, "alias"),
                        ({"name": "a", "network_id": alice.network_id, "scope": "all"}, "scope")):
        assert_error(await client.post("/api/tokens", json=body, headers=alice.auth), 400, "validation_error",
                     mentions=field)
    # Only in a network one belongs to (bob is a plain user; alice, the system admin, looks after all);
    # only with a person's token.
    r = await client.post("/api/tokens", json={"name": "x", "network_id": alice.network_id}, headers=bob.auth)
    assert_error(r, 404, "network_not_found")
    r = await client.post("/api/tokens", json={"name": "x", "network_id": "net_nope"}, headers=alice.auth)
    assert_error(r, 404, "network_not_found")
    r = await client.post("/api/tokens", json={"name": "x", "network_id": alice.network_id}, headers=alice.net_auth)
    assert_error(r, 403, "user_token_required")
    assert_error(await client.get("/api/tokens", headers=alice.net_auth), 403, "user_token_required")
    assert_error(await client.post("/api/tokens", json={"name": "x", "network_id": alice.network_id}), 401)
    assert_error(await client.get("/api/tokens"), 401)
    # A token bound to one alias says so.
    r = await client.post("/api/tokens", json={"name": "ci", "network_id": alice.network_id, "alias": "coder-1"},
                          headers=alice.auth)
    assert r.status_code == 200 and r.json()["alias"] == "coder-1", r.text
    r = await client.get("/api/tokens", headers=alice.auth)
    assert {t["name"]: t["alias"] for t in r.json()["tokens"]} == {"default": None, "ci": "coder-1"}
    r = await client.get("/api/tokens", headers=bob.auth)
    assert [t["name"] for t in r.json()["tokens"]] == ["default"]  # each user lists only their own


async def test_token_revocation_rules(client: httpx.AsyncClient) -> None:
    owner = await register(client)
    member = await register(client)
    r = await client.post(f"/api/networks/{owner.network_id}/invite", json={}, headers=owner.auth)
    r = await client.post("/api/networks/join", json={"invite_code": r.json()["invite_code"]}, headers=member.auth)
    assert r.status_code == 200, r.text

    owner_tok = await client.post("/api/tokens", json={"name": "o", "network_id": owner.network_id},
                                  headers=owner.auth)
    member_tok = await client.post("/api/tokens", json={"name": "m", "network_id": owner.network_id},
                                   headers=member.auth)
    owner_tok_id, member_tok_id = owner_tok.json()["token_id"], member_tok.json()["token_id"]

    assert_error(await client.delete("/api/tokens/tok_doesnotexist", headers=owner.auth), 404, "token_not_found")
    # A member cannot revoke someone else's token (it does not even see it).
    assert_error(await client.delete(f"/api/tokens/{owner_tok_id}", headers=member.auth), 404, "token_not_found")
    # Login tokens are not listed among API tokens.
    me_tokens = await client.get("/api/tokens", headers=owner.auth)
    assert all(t["token_id"].startswith("tok_") for t in me_tokens.json()["tokens"])
    assert_error(await client.delete(f"/api/tokens/{owner_tok_id}", headers=owner.net_auth), 403,
                 "user_token_required")
    assert_error(await client.delete(f"/api/tokens/{owner_tok_id}"), 401)

    # The network owner may revoke a member's token in the network; twice is a conflict.
    r = await client.delete(f"/api/tokens/{member_tok_id}", headers=owner.auth)
    assert r.status_code == 200 and r.json()["revoked"] is True, r.text
    assert_error(await client.delete(f"/api/tokens/{member_tok_id}", headers=member.auth), 409, "already_revoked")
    assert_error(await client.get("/api/networks", headers=bearer(member_tok.json()["token"])), 401)
    assert (await client.get("/api/networks", headers=bearer(owner_tok.json()["token"]))).status_code == 200


async def test_audit_log_records_security_actions(client: httpx.AsyncClient) -> None:
    admin = await register(client, password="first-pass")
    other = await register(client)
    login = await client.post("/api/auth/login", json={"username": admin.username, "password": "first-pass"})
    assert login.status_code == 200
    failed = await client.post("/api/auth/login", json={"username": admin.username, "password": "wrong-pass"})
    assert failed.status_code == 401
    r = await client.post("/api/auth/password", json={"old_password": "first-pass", "new_password": "second-pass"},
                          headers=admin.auth)
    assert r.status_code == 200, r.text
    tok = await client.post("/api/tokens", json={"name": "bot", "network_id": admin.network_id}, headers=admin.auth)
    tok_id, tok_secret = tok.json()["token_id"], tok.json()["token"]
    assert (await client.delete(f"/api/tokens/{tok_id}", headers=admin.auth)).status_code == 200
    net = (await client.post("/api/networks", json={"name": "ops"}, headers=admin.auth)).json()["network_id"]
    assert (await client.put(f"/api/networks/{net}", json={"network_name": "ops2"}, headers=admin.auth)).is_success
    invite = (await client.post(f"/api/networks/{net}/invite", json={"max_uses": 2}, headers=admin.auth)).json()
    code, invite_id = invite["invite_code"], invite["invite_id"]
    assert (await client.post("/api/networks/join", json={"invite_code": code}, headers=other.auth)).is_success
    gone = (await client.post("/api/networks", json={"name": "tmp"}, headers=admin.auth)).json()["network_id"]
    assert (await client.delete(f"/api/networks/{gone}", headers=admin.auth)).is_success

    r = await curl(client, CURL_AUDIT, {"utok_xxx": admin.token})
    assert r.status_code == 200, r.text
    entries = r.json()["entries"]
    assert r.json()["ok"] is True and len(entries) <= 50
    ids = [e["id"] for e in entries]
    assert ids == sorted(ids, reverse=True), "newest first"
    by_action: dict[str, list[dict]] = {}
    for e in entries:
        by_action.setdefault(e["action"], []).append(e)
        assert TIME_RE.match(e["created_at"]) and e["ip"] == "127.0.0.1", e
    for action in ("register", "login", "login_failed", "password_change", "token_create", "token_revoke",
                   "network_create", "network_update", "network_delete", "invite_create", "invite_redeem"):
        assert action in by_action, f"no {action} entry in {sorted(by_action)}"
    assert {e["actor"] for e in by_action["register"]} == {admin.username, other.username}
    assert [e["user_id"] for e in by_action["login"]] == [admin.user_id]
    assert [e["actor"] for e in by_action["login_failed"]] == [admin.username]
    assert [e["user_id"] for e in by_action["password_change"]] == [admin.user_id]
    assert tok_id in json.dumps([e["detail"] for e in by_action["token_revoke"]])
    assert [e["network_id"] for e in by_action["network_update"]] == [net]
    assert [e["network_id"] for e in by_action["network_delete"]] == [gone]
    assert [(e["network_id"], e["user_id"]) for e in by_action["invite_redeem"]] == [(net, other.user_id)]
    # An invite is named by its id; its code is a secret and never lands in the audit log.
    assert invite_id in json.dumps(by_action["invite_create"])
    # No secret ever lands in the audit log.
    for secret in ("first-pass", "second-pass", "wrong-pass", admin.token, admin.network_token, tok_secret,
                   login.json()["token"], code):
        assert secret not in r.text

    # Filters and paging.
    r = await client.get("/api/audit-log", params={"action": "login_failed"}, headers=admin.auth)
    assert [e["action"] for e in r.json()["entries"]] == ["login_failed"]
    r = await client.get("/api/audit-log", params={"limit": 2}, headers=admin.auth)
    assert [e["id"] for e in r.json()["entries"]] == ids[:2]
    r = await client.get("/api/audit-log", params={"limit": 2, "offset": 2}, headers=admin.auth)
    assert [e["id"] for e in r.json()["entries"]] == ids[2:4]
    for params, field in (({"limit": "abc"}, "limit"), ({"limit": 0}, "limit"), ({"offset": -1}, "offset"),
                          ({"offset": "x"}, "offset")):
        assert_error(await client.get("/api/audit-log", params=params, headers=admin.auth), 400, mentions=field)

    # A user who is not the system admin sees only the networks they own or administer.
    r = await client.get("/api/audit-log", headers=other.auth)
    assert r.status_code == 200, r.text
    seen = {e["network_id"] for e in r.json()["entries"]}
    assert seen == {other.network_id}, seen
    assert admin.username not in {e["actor"] for e in r.json()["entries"]}
    r = await client.get("/api/audit-log", params={"network_id": net}, headers=other.auth)
    assert_error(r, 403, "insufficient_role")  # a plain member of `ops2`
    r = await client.get("/api/audit-log", params={"network_id": admin.network_id}, headers=other.auth)
    assert_error(r, 404, "network_not_found")
    assert_error(await client.get("/api/audit-log"), 401)


async def test_users_is_for_the_system_admin_only(client: httpx.AsyncClient) -> None:
    admin = await register(client, email="root@example.com")
    user = await register(client)
    r = await curl(client, CURL_USERS, {"utok_xxx": admin.token})
    assert r.status_code == 200, r.text
    users = r.json()["users"]
    assert r.json()["ok"] is True
    assert {(u["user_id"], u["username"], u["role"]) for u in users} == {
        (admin.user_id, admin.username, "admin"), (user.user_id, user.username, "user")}
    for u in users:
        assert set(u) >= {"user_id", "username", "display_name", "role"}
        assert "password_hash" not in u and "password" not in u
    assert "$argon2" not in r.text and "secret123" not in r.text
    assert {u["user_id"]: u.get("email") for u in users}[admin.user_id] == "root@example.com"

    assert_error(await curl(client, CURL_USERS, {"utok_xxx": user.token}), 403, "admin_required")
    assert_error(await curl(client, CURL_USERS, {"utok_xxx": admin.network_token}), 403, "admin_required")
    assert_error(await client.get("/api/users"), 401, "unauthorized")
    agent = await create_token(client, admin)
    assert_error(await client.get("/api/users", headers=bearer(agent)), 403)

    r1 = await client.get("/api/users", params={"limit": 1}, headers=admin.auth)
    r2 = await client.get("/api/users", params={"limit": 1, "offset": 1}, headers=admin.auth)
    page = [u["user_id"] for u in r1.json()["users"] + r2.json()["users"]]
    assert sorted(page) == sorted([admin.user_id, user.user_id])
    for params in ({"limit": "x"}, {"limit": 0}, {"offset": -3}):
        assert_error(await client.get("/api/users", params=params, headers=admin.auth), 400)
