"""Authentication reads a token and its user once, then serves them from a cache (store/tokens.py
LiveTokenCache) — and a token that is revoked, expired, deleted, or whose user is deleted or changed is refused
or seen as changed on the very next request, whichever code path or process made the change."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import apsw
import httpx
import pytest
from conftest import create_token, register, tool

from commhub_lib import auth
from commhub_lib.cli import main as cli_main
from commhub_lib.errors import Unauthorized
from commhub_lib.ids import now_text
from commhub_lib.runtime.server import ServerHandle
from commhub_lib.service import accounts
from commhub_lib.store.tokens import LiveTokenCache


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@contextmanager
def statements(server: ServerHandle) -> Iterator[list[str]]:
    """The SQL statements the server's connection runs inside the block."""
    seen: list[str] = []

    def trace(_cursor: Any, sql: str, _bindings: Any) -> bool:
        seen.append(sql)
        return True

    server.hub.db.con.exec_trace = trace
    try:
        yield seen
    finally:
        server.hub.db.con.exec_trace = None


def other_connection(server: ServerHandle) -> apsw.Connection:
    """A second connection to the server's file, as another process (the CLI, a second server) would have."""
    con = apsw.Connection(server.hub.db.path)
    con.setbusytimeout(5000)
    con.pragma("foreign_keys", "on")
    return con


def token_reads(seen: list[str]) -> int:
    return sum("FROM tokens WHERE token_hash" in sql for sql in seen)


async def test_a_token_is_read_once_then_served_from_the_cache(client: httpx.AsyncClient,
                                                               server: ServerHandle) -> None:
    acct = await register(client)
    await tool(client, acct.network_token, "report_status", {"alias": "cached", "status": "idle"})
    # Each token is read once here (the claim above changed the network token's last_alias: read again).
    await tool(client, acct.network_token, "whoami")
    assert (await client.get("/api/auth/me", headers=acct.auth)).status_code == 200
    with statements(server) as seen:
        for _ in range(3):
            await tool(client, acct.network_token, "whoami")
            assert (await client.get("/api/auth/me", headers=acct.auth)).status_code == 200
    assert token_reads(seen) == 0, [s for s in seen if "tokens" in s]
    assert not any("FROM users WHERE user_id" in sql for sql in seen)


async def test_revocations_through_the_server_are_seen_on_the_next_request(client: httpx.AsyncClient,
                                                                          server: ServerHandle) -> None:
    acct = await register(client)
    secret = await create_token(client, acct, "doomed")
    token_id = next(t["token_id"] for t in (await client.get("/api/tokens", headers=acct.auth)).json()["tokens"]
                    if t["name"] == "doomed")
    for _ in range(2):  # the second request is served from the cache
        assert (await client.get("/api/networks", headers=bearer(secret))).status_code == 200
    assert (await client.delete(f"/api/tokens/{token_id}", headers=acct.auth)).status_code == 200
    assert (await client.get("/api/networks", headers=bearer(secret))).status_code == 401

    # A password change logs out the user's other login tokens.
    login = (await client.post("/api/auth/login", json={"username": acct.username, "password": acct.password}))
    other = login.json()["token"]
    for _ in range(2):
        assert (await client.get("/api/auth/me", headers=bearer(other))).status_code == 200
    r = await client.post("/api/auth/password", headers=acct.auth,
                          json={"old_password": acct.password, "new_password": "another-secret-1"})
    assert r.status_code == 200, r.text
    assert (await client.get("/api/auth/me", headers=bearer(other))).status_code == 401
    assert (await client.get("/api/auth/me", headers=acct.auth)).status_code == 200  # the one that changed it

    # Deleting a network deletes its tokens (a foreign-key cascade, no statement on `tokens` of our own).
    r = await client.post("/api/networks", json={"name": "short-lived"}, headers=acct.auth)
    net = r.json()["network_id"]
    net_secret = await create_token(client, acct, "in-short-lived", network_id=net)
    for _ in range(2):
        assert (await client.get("/api/networks", headers=bearer(net_secret))).status_code == 200
    assert (await client.delete(f"/api/networks/{net}", headers=acct.auth)).status_code == 200
    assert (await client.get("/api/networks", headers=bearer(net_secret))).status_code == 401


async def test_changes_by_another_process_are_seen_on_the_next_request(client: httpx.AsyncClient,
                                                                      server: ServerHandle) -> None:
    acct = await register(client)
    secret = await create_token(client, acct, "cli-revoked")
    token_id = next(t["token_id"] for t in (await client.get("/api/tokens", headers=acct.auth)).json()["tokens"]
                    if t["name"] == "cli-revoked")
    for _ in range(2):
        assert (await client.get("/api/networks", headers=bearer(secret))).status_code == 200
    # `commhub token revoke` on the database file: its own connection, as from another process.
    assert cli_main(["token", "revoke", token_id, "--db", server.hub.db.path]) == 0
    assert (await client.get("/api/networks", headers=bearer(secret))).status_code == 401

    # A user's fields changed on the file are seen at once.
    for _ in range(2):
        assert (await client.get("/api/auth/me", headers=acct.auth)).json()["user"]["display_name"] == acct.username
    con = other_connection(server)
    try:
        with con:
            con.execute("UPDATE users SET display_name = 'Renamed' WHERE user_id = ?", (acct.user_id,))
        assert (await client.get("/api/auth/me", headers=acct.auth)).json()["user"]["display_name"] == "Renamed"
        # A user deleted on the file: their tokens go with them (cascade) and are refused.
        for _ in range(2):
            assert (await client.get("/api/networks", headers=acct.net_auth)).status_code == 200
        with con:
            con.execute("DELETE FROM audit_log WHERE user_id = ?", (acct.user_id,))
            con.execute("DELETE FROM members WHERE user_id = ?", (acct.user_id,))
            con.execute("DELETE FROM networks WHERE owner_id = ?", (acct.user_id,))
            con.execute("DELETE FROM users WHERE user_id = ?", (acct.user_id,))
    finally:
        con.close()
    assert (await client.get("/api/networks", headers=acct.net_auth)).status_code == 401
    assert (await client.get("/api/auth/me", headers=acct.auth)).status_code == 401


async def test_a_cached_token_is_refused_once_it_expires(client: httpx.AsyncClient, server: ServerHandle,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    acct = await register(client)
    r = await client.post("/api/tokens", headers=acct.auth,
                          json={"name": "brief", "network_id": acct.network_id, "expires_in_seconds": 60})
    secret, expires_at = r.json()["token"], r.json()["expires_at"]
    for _ in range(2):
        assert (await client.get("/api/networks", headers=bearer(secret))).status_code == 200
    cache = server.hub.live_tokens()
    assert cache.get(auth.token_hash(secret), now_text()) is not None  # it expires in a minute: still cached
    hits = cache.hits
    monkeypatch.setattr(accounts, "now_text", lambda: expires_at)
    with pytest.raises(Unauthorized):
        accounts.authenticate(server.hub, secret)
    assert cache.hits == hits  # refused from the cached row's expiry, not by a fresh read


async def test_a_claim_updates_the_identity_of_session_less_calls(client: httpx.AsyncClient) -> None:
    acct = await register(client)
    # No MCP session id: the caller is the alias this token last claimed (tokens.last_alias, cached with it).
    await tool(client, acct.network_token, "report_status", {"alias": "first-name", "status": "idle"})
    assert (await tool(client, acct.network_token, "whoami"))["alias"] == "first-name"
    await tool(client, acct.network_token, "report_status", {"alias": "second-name", "status": "idle"})
    assert (await tool(client, acct.network_token, "whoami"))["alias"] == "second-name"


async def test_two_caches_on_one_connection_both_see_a_revocation(client: httpx.AsyncClient,
                                                                 server: ServerHandle) -> None:
    acct = await register(client)
    secret = await create_token(client, acct, "shared")
    hashed = auth.token_hash(secret)
    # A second hub over the same Database (as a test or a tool might make) has a cache of its own.
    other = LiveTokenCache(server.hub.db)
    assert other.get(hashed, now_text()) is not None and server.hub.live_tokens().get(hashed, now_text())
    token_id = next(t["token_id"] for t in (await client.get("/api/tokens", headers=acct.auth)).json()["tokens"]
                    if t["name"] == "shared")
    assert (await client.delete(f"/api/tokens/{token_id}", headers=acct.auth)).status_code == 200
    assert other.get(hashed, now_text()) is None
    assert server.hub.live_tokens().get(hashed, now_text()) is None
