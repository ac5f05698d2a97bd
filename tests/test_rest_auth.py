"""REST auth against a real server: /health, register, login, me (GET/PUT), password, and their curl examples.

This module also holds the small helpers the other REST test modules import (`assert_error`, `curl`,
`running`), since the suite may add no files beyond its test modules.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import trio
from conftest import make_settings, register, start_server, unique

import commhub_lib
from commhub_lib.config import Settings
from commhub_lib.runtime.server import ServerHandle

# --- shared helpers ---------------------------------------------------------------------------------

CURL_BASE = "http://localhost:9200"
TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")


def assert_error(r: httpx.Response, status: int, code: str | None = None, mentions: str | None = None) -> dict:
    """The locked-in error shape: the status, a JSON body of exactly {"error": snake_code, "message": text}."""
    where = f"{r.request.method} {r.request.url}"
    assert r.status_code == status, f"{where}: expected {status}, got {r.status_code}: {r.text}"
    assert r.headers.get("content-type", "").startswith("application/json"), f"{where}: {r.headers}"
    body = r.json()
    assert isinstance(body, dict) and set(body) == {"error", "message"}, f"{where}: {body}"
    assert isinstance(body["error"], str) and re.fullmatch(r"[a-z][a-z0-9_]*", body["error"]), f"{where}: {body}"
    assert isinstance(body["message"], str) and body["message"].strip(), f"{where}: {body}"
    if code is not None:
        assert body["error"] == code, f"{where}: {body}"
    if mentions is not None:
        assert mentions.lower() in body["message"].lower(), f"{where}: {body}"
    return body


async def curl(client: httpx.AsyncClient, command: str, subs: dict[str, str] | None = None,
               env: dict[str, str] | None = None) -> httpx.Response:
    """Send a curl example of the reference exactly as written: its method, URL, headers and body bytes.

    `subs` replace the example's placeholders (utok_xxx, net_abc123, ...) with live values, whole words only;
    `$VARS` expand from `env` as the shell would (unset = empty)."""
    text = command.replace("\\\n", " ")
    for placeholder, value in (subs or {}).items():
        text = re.sub(rf"(?<!\w){re.escape(placeholder)}(?!\w)", value, text)
    text = re.sub(r"\$(\w+)", lambda m: (env or {}).get(m.group(1), ""), text)
    args = shlex.split(text)
    assert args[0] == "curl", command
    method: str | None = None
    url: str | None = None
    data: str | None = None
    headers: dict[str, str] = {}
    rest = iter(args[1:])
    for arg in rest:
        if arg == "-X":
            method = next(rest)
        elif arg == "-H":
            name, _, value = next(rest).partition(":")
            headers[name.strip()] = value.strip()
        elif arg == "-d":
            data = next(rest)
        elif arg == "-N":
            continue
        elif arg.startswith("-"):
            raise AssertionError(f"curl option {arg} is not understood by this helper")
        else:
            url = arg
    assert url is not None and url.startswith(CURL_BASE), command
    if data is not None:
        headers.setdefault("Content-Type", "application/x-www-form-urlencoded")  # what curl -d sends by default
    method = method or ("POST" if data is not None else "GET")
    target = str(client.base_url).rstrip("/") + url[len(CURL_BASE):]
    return await client.request(method, target, headers=headers,
                                content=data.encode("utf-8") if data is not None else None)


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[tuple[ServerHandle, httpx.AsyncClient]]:
    """A server with custom settings and a client for it; on exit it is shut down and fully stopped."""
    async with trio.open_nursery() as nursery:
        handle = await start_server(nursery, settings)
        try:
            async with httpx.AsyncClient(base_url=handle.url, timeout=30) as client:
                yield handle, client
        finally:
            handle.shutdown()


# --- the reference's curl examples, verbatim ---------------------------------------------------------

CURL_HEALTH = """curl http://localhost:9200/health"""

CURL_REGISTER = """curl -X POST http://localhost:9200/api/auth/register \\
  -H "Content-Type: application/json" \\
  -H "Authorization: Bearer $COMMHUB_AUTH_TOKEN" \\
  -d '{
    "username": "vincent",
    "password": "mypassword",
    "email": "vincent@example.com",
    "display_name": "Vincent"
  }'"""

CURL_LOGIN = """curl -X POST http://localhost:9200/api/auth/login \\
  -H "Content-Type: application/json" \\
  -H "Authorization: Bearer $COMMHUB_AUTH_TOKEN" \\
  -d '{
    "username": "vincent",
    "password": "mypassword"
  }'"""

CURL_ME = """curl http://localhost:9200/api/auth/me \\
  -H "Authorization: Bearer utok_xxx\""""

CURL_PUT_ME = """curl -X PUT http://localhost:9200/api/auth/me \\
  -H "Authorization: Bearer utok_xxx" \\
  -H "Content-Type: application/json" \\
  -d '{"display_name": "Vincent Chen"}'"""

CURL_PASSWORD = """curl -X POST http://localhost:9200/api/auth/password \\
  -H "Authorization: Bearer utok_xxx" \\
  -H "Content-Type: application/json" \\
  -d '{
    "old_password": "oldpass",
    "new_password": "newpass123"
  }'"""


def _check_user(user: dict, username: str, role: str) -> None:
    assert set(user) >= {"user_id", "username", "display_name", "role"}, user
    assert user["user_id"].startswith("u_") and len(user["user_id"]) > 2, user
    assert user["username"] == username and user["role"] == role, user
    assert "password" not in user and "password_hash" not in user, user


# --- /health ---------------------------------------------------------------------------------------

async def test_health_curl_example_is_public(client: httpx.AsyncClient) -> None:
    r = await curl(client, CURL_HEALTH)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"status", "version", "uptime"}, body
    assert body["status"] == "ok"
    assert body["version"] == commhub_lib.__version__ and re.fullmatch(r"\d+\.\d+\.\d+", body["version"])
    assert isinstance(body["uptime"], int) and 0 <= body["uptime"] < 60
    # No credentials are looked at, even bad ones.
    r = await client.get("/health", headers={"Authorization": "Bearer not-a-token"})
    assert r.status_code == 200 and r.json()["status"] == "ok"


# --- register / login ------------------------------------------------------------------------------

async def test_register_login_me_curl_examples_as_written(client: httpx.AsyncClient) -> None:
    r = await curl(client, CURL_REGISTER)  # COMMHUB_AUTH_TOKEN unset: the example sends "Bearer" alone
    assert r.status_code == 200, r.text
    reg = r.json()
    assert reg["ok"] is True
    _check_user(reg["user"], "vincent", "admin")  # the first user ever is the system admin
    assert reg["user"]["display_name"] == "Vincent"
    assert reg["token"].startswith("utok_") and len(reg["token"]) > 20
    assert reg["network_token"].startswith("ntok_") and len(reg["network_token"]) > 20
    assert reg["network_id"].startswith("net_")

    r = await curl(client, CURL_LOGIN)
    assert r.status_code == 200, r.text
    login = r.json()
    assert login["ok"] is True
    _check_user(login["user"], "vincent", "admin")
    assert login["user"]["user_id"] == reg["user"]["user_id"]
    assert login["token"].startswith("utok_") and login["token"] != reg["token"]
    assert login["network_id"] == reg["network_id"]

    for token in (reg["token"], login["token"]):  # both login tokens are live
        r = await curl(client, CURL_ME, {"utok_xxx": token})
        assert r.status_code == 200, r.text
        me = r.json()
        assert me["ok"] is True
        _check_user(me["user"], "vincent", "admin")
        assert me["user"]["display_name"] == "Vincent" and me["user"]["email"] == "vincent@example.com"

    r = await curl(client, CURL_PUT_ME, {"utok_xxx": login["token"]})
    assert r.status_code == 200, r.text
    assert r.json()["user"]["display_name"] == "Vincent Chen"
    r = await curl(client, CURL_ME, {"utok_xxx": reg["token"]})
    assert r.json()["user"]["display_name"] == "Vincent Chen"
    assert r.json()["user"]["email"] == "vincent@example.com"  # untouched by the partial update

    # Every later user is a plain `user`, however it registers.
    later = await register(client)
    assert later.role == "user"


async def test_each_user_gets_a_default_network_and_network_token(client: httpx.AsyncClient) -> None:
    alice = await register(client)
    bob = await register(client)
    assert alice.network_id != bob.network_id and alice.network_token != bob.network_token
    for acct in (alice, bob):
        r = await client.get("/api/networks", headers=acct.auth)
        assert r.status_code == 200, r.text
        (net,) = r.json()["networks"]
        assert net["network_id"] == acct.network_id and net["network_name"] == "default"
        assert net["owner_id"] == acct.user_id and net["member_role"] == "owner"
        assert net["visibility"] == "private" and net["max_members"] == 50
        assert TIME_RE.match(net["created_at"]), net
        # The network token works at once and is scoped to that network.
        r = await client.get("/api/networks", headers=acct.net_auth)
        assert r.status_code == 200, r.text
        assert [n["network_id"] for n in r.json()["networks"]] == [acct.network_id]
        # And it is listed (without its secret) among the user's tokens.
        r = await client.get("/api/tokens", headers=acct.auth)
        (tok,) = r.json()["tokens"]
        assert tok["network_id"] == acct.network_id and tok["name"] == "default" and tok["revoked"] is False
        assert acct.network_token not in r.text


async def test_username_rules(client: httpx.AsyncClient) -> None:
    invalid = ["a", "中", "a" * 51, "", "a b", " ab", "ab ", "a-b", "a.b", "user@x", "ab!", "ab😀", "tab\t",
               "new\nline", "semi;colon", "ab/cd"]
    for name in invalid:
        r = await client.post("/api/auth/register", json={"username": name, "password": "secret123"})
        assert_error(r, 400, "validation_error", mentions="username")
    for bad_type in (123, None, ["ab"], {"x": 1}):
        r = await client.post("/api/auth/register", json={"username": bad_type, "password": "secret123"})
        assert_error(r, 400, "validation_error", mentions="username")
    # Boundaries and the allowed alphabets: letters, digits, underscore, CJK.
    for name in ("ab", "Z" * 50, "Dev_Team_9", "中文", "用户_42", "日本語ユーザー", "한국어"):
        acct = await register(client, name)
        assert acct.username == name
        r = await client.get("/api/auth/me", headers=acct.auth)
        assert r.json()["user"]["username"] == name
    # Taken names, case-insensitively, are a conflict.
    for name in ("ab", "AB", "dev_team_9", "中文"):
        r = await client.post("/api/auth/register", json={"username": name, "password": "secret123"})
        assert_error(r, 409, "username_taken", mentions=name)


async def test_password_and_other_register_fields_are_validated(client: httpx.AsyncClient) -> None:
    name = unique()
    cases = [
        ({"username": name, "password": "12345"}, "password"),
        ({"username": name, "password": ""}, "password"),
        ({"username": name, "password": 123456}, "password"),
        ({"username": name}, "password"),
        ({"password": "secret123"}, "username"),
        ({"username": name, "password": "secret123", "email": "e" * 255}, "email"),
        ({"username": name, "password": "secret123", "display_name": "d" * 101}, "display_name"),
        ({"username": name, "password": "secret123", "role": "admin"}, "role"),  # unknown fields are refused
    ]
    for body, field in cases:
        r = await client.post("/api/auth/register", json=body)
        assert_error(r, 400, "validation_error", mentions=field)
    r = await client.post("/api/auth/register", json={})
    body = assert_error(r, 400, "validation_error")
    assert "username" in body["message"] and "password" in body["message"]
    # None of those created the user; exactly six characters is enough.
    acct = await register(client, name, password="123456")
    assert acct.role == "admin"  # nothing was registered before it


async def test_login_errors(client: httpx.AsyncClient) -> None:
    acct = await register(client)
    wrong = await client.post("/api/auth/login", json={"username": acct.username, "password": "not-it"})
    unknown = await client.post("/api/auth/login", json={"username": unique("ghost"), "password": "not-it"})
    a = assert_error(wrong, 401, "invalid_credentials")
    b = assert_error(unknown, 401, "invalid_credentials")
    assert a["message"] == b["message"]  # no hint whether the user exists
    for body, field in (({"username": acct.username}, "password"), ({"password": "x"}, "username"),
                        ({"username": acct.username, "password": "secret123", "remember": True}, "remember"),
                        ({"username": acct.username, "password": 7}, "password")):
        r = await client.post("/api/auth/login", json=body)
        assert_error(r, 400, "validation_error", mentions=field)
    # Usernames are matched case-insensitively at login too.
    r = await client.post("/api/auth/login", json={"username": acct.username.upper(), "password": acct.password})
    assert r.status_code == 200, r.text
    assert r.json()["user"]["user_id"] == acct.user_id


async def test_auth_token_required_on_register_when_set_and_never_on_login(tmp_path) -> None:
    secret = "hub-secret-Xy9"
    async with running(make_settings(tmp_path, auth_token=secret)) as (_, client):
        for env in ({}, {"COMMHUB_AUTH_TOKEN": "wrong"}):  # unset or wrong: refused
            r = await curl(client, CURL_REGISTER, env=env)
            assert_error(r, 401, "auth_token_required", mentions="COMMHUB_AUTH_TOKEN")
        for headers in ({}, {"Authorization": f"Basic {secret}"}, {"Authorization": secret}):
            r = await client.post("/api/auth/register", json={"username": "x1", "password": "secret123"},
                                  headers=headers)
            assert_error(r, 401, "auth_token_required")
        r = await client.post("/api/auth/register", params={"token": secret},
                              json={"username": "x1", "password": "secret123"})
        assert_error(r, 401, "auth_token_required")  # only the header, as the examples send it

        # Exactly as the examples send it: accepted.
        r = await curl(client, CURL_REGISTER, env={"COMMHUB_AUTH_TOKEN": secret})
        assert r.status_code == 200, r.text
        utok = r.json()["token"]
        r = await curl(client, CURL_LOGIN, env={"COMMHUB_AUTH_TOKEN": secret})
        assert r.status_code == 200, r.text
        # Logging in needs only the password (issue 17 item 5): no header, or any, is fine.
        for env in ({}, {"COMMHUB_AUTH_TOKEN": "wrong"}):
            r = await curl(client, CURL_LOGIN, env=env)
            assert r.status_code == 200, r.text
        # Other endpoints use the user's own token, and the hub secret is no user token.
        r = await curl(client, CURL_ME, {"utok_xxx": utok})
        assert r.status_code == 200, r.text
        r = await client.get("/api/auth/me", headers={"Authorization": f"Bearer {secret}"})
        assert_error(r, 401)


# --- authentication -------------------------------------------------------------------------------

async def test_bearer_header_and_query_token_both_authenticate(client: httpx.AsyncClient) -> None:
    acct = await register(client)
    for kwargs in ({"headers": acct.auth}, {"params": {"token": acct.token}},
                   {"headers": acct.net_auth}, {"params": {"token": acct.network_token}},
                   {"headers": {"Authorization": f"bearer {acct.token}"}}):
        r = await client.get("/api/auth/me", **kwargs)
        assert r.status_code == 200, (kwargs, r.text)
        assert r.json()["user"]["user_id"] == acct.user_id
    assert_error(await client.get("/api/auth/me"), 401, "unauthorized")
    for kwargs in ({"headers": {"Authorization": "Bearer utok_nope"}}, {"params": {"token": "utok_nope"}},
                   {"headers": {"Authorization": "Bearer ntok_nope"}}, {"params": {"token": "garbage"}},
                   {"headers": {"Authorization": f"Basic {acct.token}"}}, {"headers": {"Authorization": "Bearer"}},
                   {"headers": {"Authorization": acct.token}},
                   {"headers": {"Authorization": f"Bearer {acct.token}x"}}):
        assert_error(await client.get("/api/auth/me", **kwargs), 401)


async def test_put_me_validation_and_no_privilege_change(client: httpx.AsyncClient) -> None:
    await register(client)  # the system admin, so that `acct` is a plain user
    acct = await register(client)
    r = await client.put("/api/auth/me", json={"email": "new@example.com"}, headers=acct.auth)
    assert r.status_code == 200, r.text
    assert r.json()["user"]["email"] == "new@example.com" and r.json()["user"]["display_name"] == acct.username
    for body, field in (({"display_name": ""}, "display_name"), ({"display_name": "x" * 101}, "display_name"),
                        ({"display_name": 5}, "display_name"), ({"email": "e" * 255}, "email"),
                        ({"role": "admin"}, "role"), ({"username": "other"}, "username")):
        assert_error(await client.put("/api/auth/me", json=body, headers=acct.auth), 400, "validation_error",
                     mentions=field)
    assert_error(await client.put("/api/auth/me", json={"display_name": "x"}), 401)
    # An agent's network token cannot edit the person's account.
    assert_error(await client.put("/api/auth/me", json={"display_name": "x"}, headers=acct.net_auth), 403,
                 "user_token_required")
    r = await client.get("/api/auth/me", headers=acct.auth)
    assert r.json()["user"]["role"] == "user" and r.json()["user"]["username"] == acct.username
    assert r.json()["user"]["display_name"] == acct.username


async def test_password_change_curl_example_and_rules(client: httpx.AsyncClient) -> None:
    acct = await register(client, password="oldpass")
    r = await client.post("/api/auth/login", json={"username": acct.username, "password": "oldpass"})
    other_login = r.json()["token"]
    # Errors first: wrong old password, too short a new one, missing fields, network token.
    r = await client.post("/api/auth/password", json={"old_password": "nope!!", "new_password": "newpass123"},
                          headers=acct.auth)
    assert_error(r, 403, "wrong_password", mentions="old_password")
    for body, field in (({"old_password": "oldpass", "new_password": "12345"}, "new_password"),
                        ({"old_password": "oldpass"}, "new_password"),
                        ({"new_password": "newpass123"}, "old_password"),
                        ({"old_password": "oldpass", "new_password": "newpass123", "x": 1}, "x")):
        r = await client.post("/api/auth/password", json=body, headers=acct.auth)
        assert_error(r, 400, "validation_error", mentions=field)
    r = await client.post("/api/auth/password", json={"old_password": "oldpass", "new_password": "newpass123"},
                          headers=acct.net_auth)
    assert_error(r, 403, "user_token_required")
    assert_error(await client.post("/api/auth/password", json={}), 401)

    r = await curl(client, CURL_PASSWORD, {"utok_xxx": acct.token})
    assert r.status_code == 200, r.text
    assert r.json()["ok"] is True
    # The token that changed it keeps working; every other login token is revoked at once.
    assert (await client.get("/api/auth/me", headers=acct.auth)).status_code == 200
    r = await client.get("/api/auth/me", headers={"Authorization": f"Bearer {other_login}"})
    assert_error(r, 401, "invalid_token")
    # Only the new password logs in.
    r = await client.post("/api/auth/login", json={"username": acct.username, "password": "oldpass"})
    assert_error(r, 401, "invalid_credentials")
    r = await client.post("/api/auth/login", json={"username": acct.username, "password": "newpass123"})
    assert r.status_code == 200, r.text


# --- argon2 off the event loop ---------------------------------------------------------------------

async def test_login_in_flight_does_not_delay_health(client: httpx.AsyncClient) -> None:
    """A login spends ~150 ms in argon2; /health requests sent while it hashes must finish before it does.

    The server runs in this process, so "the hash is running" is observable without timing: a worker
    thread of trio's default limiter is borrowed (argon2 belongs in trio.to_thread). Only completion order
    is compared, never durations."""
    acct = await register(client)
    limiter = trio.to_thread.current_default_thread_limiter()
    baseline = limiter.borrowed_tokens
    done: list[str] = []
    hashing_at_health_done: list[bool] = []

    async def login() -> None:
        r = await client.post("/api/auth/login", json={"username": acct.username, "password": acct.password})
        assert r.status_code == 200, r.text
        done.append("login")

    async def health() -> None:
        r = await client.get("/health")
        assert r.status_code == 200, r.text
        hashing_at_health_done.append(limiter.borrowed_tokens > baseline)
        done.append("health")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(login)
        for _ in range(10_000):  # bounded poll (>= 10 s): argon2 never left the event loop if it runs out
            if limiter.borrowed_tokens > baseline or done:
                break
            await trio.sleep(0.001)
        assert not done, "the login finished without ever running argon2 in a worker thread"
        assert limiter.borrowed_tokens > baseline, "the login never started hashing in a worker thread"
        for _ in range(5):
            nursery.start_soon(health)
    assert done == ["health"] * 5 + ["login"], done
    assert all(hashing_at_health_done), hashing_at_health_done
