"""Quotas (service/quotas.py): aliases and nodes per network, tokens, networks and logins per user, open
invites per network; each answers 409 quota_exceeded naming the limit and its setting. And every list
endpoint pages with limit/offset."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from conftest import mcp_call, own_server, register
from test_rest_auth import assert_error

from commhub_lib.config import Settings, load_settings


def quota_error(result: dict, setting: str) -> None:
    """A tool result that is the quota error for `setting`."""
    assert result["isError"] is True, result
    assert result["structuredContent"]["error"] == "quota_exceeded", result
    assert setting in result["structuredContent"]["message"], result


async def test_defaults_are_on() -> None:
    s = Settings()
    assert (s.max_aliases_per_network, s.max_nodes_per_network, s.max_tokens_per_user, s.max_networks_per_user,
            s.max_invites_per_network, s.max_logins_per_user, s.mcp_sessions_per_token) == (
        1000, 1000, 200, 50, 100, 50, 100)


def test_mcp_bounds_must_be_positive() -> None:
    for name in ("mcp_max_batch", "mcp_max_response_bytes", "mcp_sessions_per_token", "mcp_max_sessions"):
        with pytest.raises(ValueError, match=name):
            load_settings({name: "0"}, env={})
    assert load_settings({"max_aliases_per_network": "0"}, env={}).max_aliases_per_network == 0  # quota off


async def test_aliases_and_nodes_per_network(tmp_path: Path) -> None:
    async with own_server(tmp_path, "q1", max_aliases_per_network=3, max_nodes_per_network=2) as handle, \
            httpx.AsyncClient(base_url=handle.url, timeout=30) as client:
        acct = await register(client)
        token = acct.network_token
        for i, host in enumerate(("h1", "h2", "h2")):
            result = await mcp_call(client, token, "report_status", {"alias": f"a{i}", "node": host})
            assert result["isError"] is False, result
        quota_error(await mcp_call(client, token, "report_status", {"alias": "a3"}), "COMMHUB_MAX_ALIASES_PER_NETWORK")
        quota_error(await mcp_call(client, token, "report_status", {"alias": "a0", "node": "h3"}),
                    "COMMHUB_MAX_NODES_PER_NETWORK")
        # What exists stays usable: a known alias, a known hostname.
        result = await mcp_call(client, token, "report_status", {"alias": "a1", "node": "h1"})
        assert result["isError"] is False, result
        r = await client.get("/api/status", headers=acct.auth)
        assert sorted(s["alias"] for s in r.json()["sessions"]) == ["a0", "a1", "a2"]
        # Another network has its own count.
        other = await register(client)
        assert (await mcp_call(client, other.network_token, "report_status", {"alias": "a3"}))["isError"] is False


async def test_tokens_and_networks_per_user(tmp_path: Path) -> None:
    async with own_server(tmp_path, "q2", max_tokens_per_user=2, max_networks_per_user=2) as handle, \
            httpx.AsyncClient(base_url=handle.url, timeout=30) as client:
        acct = await register(client)  # one network token and one network ("default") already
        r = await client.post("/api/tokens", json={"name": "t2", "network_id": acct.network_id}, headers=acct.auth)
        assert r.status_code == 200, r.text
        second = r.json()["token_id"]
        r = await client.post("/api/tokens", json={"name": "t3", "network_id": acct.network_id}, headers=acct.auth)
        assert_error(r, 409, "quota_exceeded", mentions="COMMHUB_MAX_TOKENS_PER_USER")
        assert (await client.delete(f"/api/tokens/{second}", headers=acct.auth)).status_code == 200
        r = await client.post("/api/tokens", json={"name": "t3", "network_id": acct.network_id}, headers=acct.auth)
        assert r.status_code == 200, r.text  # a revoked token no longer counts
        assert (await client.post("/api/networks", json={"name": "n2"}, headers=acct.auth)).status_code == 200
        r = await client.post("/api/networks", json={"name": "n3"}, headers=acct.auth)
        assert_error(r, 409, "quota_exceeded", mentions="COMMHUB_MAX_NETWORKS_PER_USER")


async def test_open_invites_per_network(tmp_path: Path) -> None:
    async with own_server(tmp_path, "q3", max_invites_per_network=2) as handle, \
            httpx.AsyncClient(base_url=handle.url, timeout=30) as client:
        owner = await register(client)
        path = f"/api/networks/{owner.network_id}/invite"
        codes = [(await client.post(path, json={}, headers=owner.auth)).json()["invite_code"] for _ in range(2)]
        assert_error(await client.post(path, json={}, headers=owner.auth), 409, "quota_exceeded",
                     mentions="COMMHUB_MAX_INVITES_PER_NETWORK")
        guest = await register(client)
        r = await client.post("/api/networks/join", json={"invite_code": codes[0]}, headers=guest.auth)
        assert r.status_code == 200, r.text
        assert (await client.post(path, json={}, headers=owner.auth)).status_code == 200  # a used-up one is closed


async def test_a_login_past_the_limit_revokes_the_oldest(tmp_path: Path) -> None:
    async with own_server(tmp_path, "q4", max_logins_per_user=2) as handle, \
            httpx.AsyncClient(base_url=handle.url, timeout=30) as client:
        acct = await register(client)
        logins = [acct.token]
        for _ in range(2):
            r = await client.post("/api/auth/login", json={"username": acct.username, "password": acct.password})
            assert r.status_code == 200, r.text
            logins.append(r.json()["token"])
        statuses = [(await client.get("/api/auth/me", headers={"Authorization": f"Bearer {t}"})).status_code
                    for t in logins]
        assert statuses == [401, 200, 200]


async def test_every_list_pages(client: httpx.AsyncClient) -> None:
    acct = await register(client)
    other = await register(client)
    await client.post("/api/networks", json={"name": "second"}, headers=acct.auth)
    await client.post("/api/tokens", json={"name": "more", "network_id": acct.network_id}, headers=acct.auth)
    code = (await client.post(f"/api/networks/{acct.network_id}/invite", json={}, headers=acct.auth)).json()
    await client.post("/api/networks/join", json={"invite_code": code["invite_code"]}, headers=other.auth)
    for alias, host in (("p1", "box-1"), ("p2", "box-2")):
        await mcp_call(client, acct.network_token, "report_status", {"alias": alias, "node": host})
    lists = {"/api/networks": "networks", f"/api/networks/{acct.network_id}/members": "members",
             "/api/tokens": "tokens", "/api/status": "sessions", "/api/nodes": "nodes"}
    for path, key in lists.items():
        everything = (await client.get(path, headers=acct.auth)).json()[key]
        assert len(everything) == 2, (path, everything)
        pages = [(await client.get(path, params={"limit": 1, "offset": i}, headers=acct.auth)).json()[key]
                 for i in range(3)]
        assert [len(p) for p in pages] == [1, 1, 0], path
        assert pages[0] + pages[1] == everything, path
        assert_error(await client.get(path, params={"limit": 0}, headers=acct.auth), 400, mentions="limit")
        assert_error(await client.get(path, params={"offset": str(2**63)}, headers=acct.auth), 400, mentions="offset")
