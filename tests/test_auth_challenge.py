"""Every 401 tells the client how to authenticate (RFC 6750 Bearer challenge) and points at the hub's OAuth 2.0
protected resource metadata (RFC 9728), whichever route answers it."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from conftest import own_server, register

from commhub_lib.runtime.server import ServerHandle

CHALLENGE = re.compile(r'^Bearer (error="invalid_token", )?resource_metadata="([^"]+)"$')


def _challenge(r: httpx.Response) -> tuple[bool, str]:
    """(whether it names invalid_token, the resource metadata URL) of a 401's WWW-Authenticate."""
    assert r.status_code == 401, r.text
    match = CHALLENGE.match(r.headers.get("www-authenticate", ""))
    assert match, r.headers
    return match.group(1) is not None, match.group(2)


async def test_every_401_carries_the_bearer_challenge(server: ServerHandle, client: httpx.AsyncClient) -> None:
    account = await register(client)
    metadata_url = f"{server.url}/.well-known/oauth-protected-resource"
    rpc = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    sse = {"Accept": "text/event-stream"}
    anonymous = [client.post("/mcp", json=rpc), client.get("/mcp", headers=sse), client.get("/events/someone"),
                 client.get("/events", params={"network_id": account.network_id}), client.get("/api/status"),
                 client.delete("/mcp", headers={"Mcp-Session-Id": "x"})]
    for request in anonymous:  # no credentials: no error code (https://www.rfc-editor.org/rfc/rfc6750#section-3.1)
        assert _challenge(await request) == (False, metadata_url)
    bad = {"Authorization": "Bearer ntok_not-a-real-one"}
    refused = [client.post("/mcp", json=rpc, headers=bad), client.get("/mcp", headers={**sse, **bad}),
               client.get("/events/someone", params={"token": "ntok_nope"}), client.get("/api/status", headers=bad)]
    for request in refused:
        assert _challenge(await request) == (True, metadata_url)
    login = await client.post("/api/auth/login", json={"username": account.username, "password": "wrong-one"})
    assert _challenge(login)[1] == metadata_url
    # Answers that are not 401 carry no challenge.
    ok = await client.post("/mcp", json=rpc, headers={"Authorization": f"Bearer {account.network_token}"})
    assert ok.status_code == 200 and "www-authenticate" not in ok.headers


async def test_the_challenge_leads_to_the_protected_resource_metadata(server: ServerHandle,
                                                                      client: httpx.AsyncClient) -> None:
    _, url = _challenge(await client.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"}))
    for path in (url, url + "/mcp"):  # also where RFC 9728 derives it (rfc9728#section-3.1)
        r = await client.get(path)
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
        document = r.json()
        assert document["resource"] == f"{server.url}/mcp"  # the URL the client used (rfc9728#section-3.3)
        assert document["bearer_methods_supported"] == ["header"]
        assert "authorization_servers" not in document  # the hub issues its own tokens


async def test_public_url_names_the_hub_behind_a_proxy_and_a_bad_host_is_not_echoed(tmp_path: Path) -> None:
    async with own_server(tmp_path, "public", public_url="https://hub.example.com/") as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            _, url = _challenge(await client.get("/api/status"))
            assert url == "https://hub.example.com/.well-known/oauth-protected-resource"
            document = (await client.get("/.well-known/oauth-protected-resource")).json()
            assert document["resource"] == "https://hub.example.com/mcp"
    async with own_server(tmp_path, "host", allowed_hosts="hub.lan") as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            # A Host the hub does not answer to never reaches a challenge (the DNS rebinding guard: 421).
            r = await client.get("/api/status", headers={"Host": 'evil"x'})
            assert r.status_code == 421 and "www-authenticate" not in r.headers
            _, url = _challenge(await client.get("/api/status", headers={"Host": "hub.lan:9200"}))
            assert url == "http://hub.lan:9200/.well-known/oauth-protected-resource"
