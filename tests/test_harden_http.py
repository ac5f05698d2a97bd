"""Hardening of the HTTP surface (issue 17 items 4, 5, 9, 10, 11, 14, 15, 16): one test (or a few) per item, each
named after it, against a real server over real sockets."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from conftest import create_token, own_server, register

from commhub_lib.config import Settings
from commhub_lib.runtime.server import ServerHandle

WAIT = 10.0


async def read_until_closed(stream: trio.SocketStream) -> bytes:
    """Everything the server sends until it closes the connection (the caller bounds the wait)."""
    data = b""
    while chunk := await stream.receive_some(65536):
        data += chunk
    return data


async def raw(port: int, request: bytes, within: float = WAIT) -> bytes:
    """Send raw bytes; everything the server answers until it closes the connection (it must, within `within`)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(request)
        with trio.fail_after(within):
            return await read_until_closed(stream)


def status_and_body(answer: bytes) -> tuple[int, bytes, bytes]:
    """(status, head, body) of one HTTP/1.1 answer."""
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), head.lower(), body


# --- item 4: DNS rebinding

async def test_h17_04_rest_streams_and_mcp_check_host(tmp_path: Path) -> None:
    async with own_server(tmp_path, "host") as server, httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        account = await register(client)
        evil = {"Host": "rebind.evil.example:9200"}
        for method, path, extra in (
                ("GET", "/api/status", account.auth), ("POST", "/api/messages", account.net_auth),
                ("GET", f"/events/a1?token={account.network_token}", {}), ("GET", "/events", account.net_auth),
                ("POST", "/mcp", account.net_auth), ("GET", "/mcp", {**account.net_auth,
                                                                     "Accept": "text/event-stream"}),
                ("GET", "/", {}), ("GET", "/health", {})):
            r = await client.request(method, path, headers={**extra, **evil}, json={} if method == "POST" else None)
            assert r.status_code == 421, (method, path, r.text)
            assert r.json()["error"] == "host_not_allowed"
            assert "COMMHUB_ALLOWED_HOSTS" in r.json()["message"] and "rebind.evil.example" in r.json()["message"]
            assert r.headers["connection"] == "close"
        # What the tests, the README and a local user send: 127.0.0.1:<port>, localhost, [::1].
        for host in (f"127.0.0.1:{server.port}", f"localhost:{server.port}", "localhost", f"[::1]:{server.port}"):
            r = await client.get("/api/status", headers={**account.auth, "Host": host})
            assert r.status_code == 200, (host, r.text)
        # A malformed Host is no name of the hub either.
        r = await client.get("/api/status", headers={**account.auth, "Host": 'evil"x'})
        assert r.status_code == 421


async def test_h17_04_origin_is_checked_on_rest_and_streams(client: httpx.AsyncClient, server: ServerHandle) -> None:
    account = await register(client)
    for path in ("/api/status", f"/events/a1?token={account.network_token}"):
        r = await client.get(path, headers={**account.auth, "Origin": "http://rebind.evil.example:9200"})
        assert r.status_code == 403, r.text
        assert r.json()["error"] == "origin_not_allowed" and "COMMHUB_ALLOWED_ORIGINS" in r.json()["message"]
    for origin in (server.url, "http://localhost:6274"):  # the dashboard's own origin; a local tool
        r = await client.get("/api/status", headers={**account.auth, "Origin": origin})
        assert r.status_code == 200, (origin, r.text)
    r = await client.get("/api/status", headers={**account.auth, "Origin": "null"})
    assert r.status_code == 403


async def test_h17_04_allowed_hosts_and_public_url_add_names(tmp_path: Path) -> None:
    async with own_server(tmp_path, "names", allowed_hosts="hub.lan, .corp.example",
                          public_url="https://hub.example.com/") as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            account = await register(client)
            for host in ("hub.lan:9200", "HUB.LAN", "corp.example", "a.corp.example", "hub.example.com"):
                r = await client.get("/api/status", headers={**account.auth, "Host": host})
                assert r.status_code == 200, (host, r.text)
            r = await client.get("/api/status", headers={**account.auth, "Host": "x.hub.lan"})
            assert r.status_code == 421
            # The page served at the public URL (behind a proxy that rewrites Host) may call its hub.
            r = await client.get("/api/status", headers={**account.auth, "Origin": "https://hub.example.com"})
            assert r.status_code == 200, r.text
    async with own_server(tmp_path, "any", allowed_hosts="*") as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            r = await client.get("/health", headers={"Host": "anything.example"})
            assert r.status_code == 200


def test_h17_04_wildcard_binds_accept_addresses_not_names() -> None:
    from commhub_lib.http.asgi import (
        RequestGuard,  # here, so the file's other tests run (and fail) on a tree without it
    )

    guard = RequestGuard(Settings(host="0.0.0.0"))
    assert guard.host_allowed("192.168.1.20:9200") and guard.host_allowed("[fe80::1]:9200")
    assert guard.host_allowed("localhost:9200")
    assert not guard.host_allowed("rebind.evil.example")
    specific = RequestGuard(Settings(host="10.0.0.5"))
    assert specific.host_allowed("10.0.0.5:9200") and specific.host_allowed("127.0.0.1")
    assert not specific.host_allowed("10.0.0.6") and not specific.host_allowed("evil.example")



def test_h17_04_serve_beyond_loopback_says_which_names_it_answers(caplog: pytest.LogCaptureFixture) -> None:
    from commhub_lib.runtime.server import log_startup

    caplog.set_level(logging.INFO, logger="commhub")
    log_startup(Settings(host="0.0.0.0", auth_token="x"), ["http://0.0.0.0:9200"], 1)
    assert "COMMHUB_ALLOWED_HOSTS" in caplog.text and "421" in caplog.text
    caplog.clear()
    log_startup(Settings(host="0.0.0.0", auth_token="x", allowed_hosts="hub.lan"), ["http://0.0.0.0:9200"], 1)
    log_startup(Settings(auth_token="x"), ["http://127.0.0.1:9200"], 1)
    assert "COMMHUB_ALLOWED_HOSTS" not in caplog.text

# --- item 11: both Content-Length and Transfer-Encoding

async def test_h17_11_content_length_with_transfer_encoding_is_400_and_closed(server: ServerHandle,
                                                                            client: httpx.AsyncClient) -> None:
    account = await register(client)
    body = b'{"jsonrpc":"2.0","id":1,"method":"ping"}'
    # Read by Content-Length, the request would end after "0\r\n\r\n"'s first bytes; read chunked, the rest of the
    # bytes would be a second request. Neither happens: one 400, then the connection is closed.
    smuggled = b"GET /api/status HTTP/1.1\r\nHost: localhost\r\n\r\n"
    for path in ("/mcp", "/api/messages"):
        request = (f"POST {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {account.network_token}\r\n"
                   f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                   "Transfer-Encoding: chunked\r\n\r\n").encode() + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"
        answer = await raw(server.port, request + smuggled)
        status, head, rest = status_and_body(answer)
        assert status == 400, answer[:300]
        assert b"connection: close" in head
        assert b"ambiguous_length" in rest, answer
        assert answer.count(b"HTTP/1.1 ") == 1  # the smuggled request was never answered


# --- item 14: a 429 closes its connection

async def test_h17_14_a_429_is_closed_by_the_server_at_once(tmp_path: Path) -> None:
    async with own_server(tmp_path, "rate", login_rate_per_minute=1, token_rate_per_minute=2) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            account = await register(client)
            await client.post("/api/auth/login", json={"username": account.username, "password": "secret123"})
        login = json.dumps({"username": account.username, "password": "secret123"}).encode()
        requests = [
            (f"POST /api/auth/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
             f"Content-Length: {len(login)}\r\n\r\n").encode() + login,
            (f"GET /api/status HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {account.network_token}"
             "\r\n\r\n").encode()]
        for request in requests:
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            async with stream:
                # The token limit: two requests pass, the third is refused. The same connection, kept alive.
                tries = 1 if b"login" in request else 3
                for attempt in range(tries):
                    await stream.send_all(request)
                    answer = b""
                    with trio.fail_after(WAIT):
                        while b"\r\n\r\n" not in answer:
                            answer += await stream.receive_some(65536)
                        head = answer.split(b"\r\n\r\n")[0].lower()
                        length = int(re.search(rb"content-length: (\d+)", head)[1])  # type: ignore[index]
                        while len(answer) < len(head) + 4 + length:
                            answer += await stream.receive_some(65536)
                    status, head, _ = status_and_body(answer)
                    if attempt < tries - 1:
                        assert status == 200, answer[:300]
                        continue
                    assert status == 429, answer[:300]
                    assert b"connection: close" in head and b"retry-after" in head
                    with trio.fail_after(WAIT):  # the server closes; the client never does
                        assert await stream.receive_some(65536) == b""



async def test_h17_14_a_stream_refused_by_its_cap_is_closed_at_once(tmp_path: Path) -> None:
    async with own_server(tmp_path, "cap", max_streams_per_token=1) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            account = await register(client)
        request = (f"GET /events/w1?token={account.network_token} HTTP/1.1\r\nHost: localhost\r\n"
                   "Accept: text/event-stream\r\n\r\n").encode()
        first = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with first:
            await first.send_all(request)
            with trio.fail_after(WAIT):
                assert (await first.receive_some(65536)).startswith(b"HTTP/1.1 200")
            answer = await raw(server.port, request)  # the server must close it: raw() waits for that
            status, head, body = status_and_body(answer)
            assert status == 429 and b"connection: close" in head, answer[:300]


# --- item 16: /docs has the dashboard's security headers

async def test_h17_16_docs_has_the_same_security_headers_as_the_dashboard(client: httpx.AsyncClient) -> None:
    index, docs = await client.get("/"), await client.get("/docs")
    assert docs.status_code == 200 and docs.headers["content-type"].startswith("text/html")
    for name in ("content-security-policy", "x-frame-options", "x-content-type-options", "referrer-policy"):
        assert docs.headers[name] == index.headers[name], name
    csp = docs.headers["content-security-policy"]
    assert "unsafe-inline" not in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert docs.headers["x-frame-options"] == "DENY" and docs.headers["x-content-type-options"] == "nosniff"
    # Nothing inline for the CSP to block: the script and the style are files of this origin.
    assert "<style" not in docs.text and "style=" not in docs.text
    assert re.findall(r"<script[^>]*>", docs.text) == ['<script src="/assets/docs.js">']
    for asset, kind in (("/assets/docs.js", "javascript"), ("/assets/docs.css", "text/css")):
        r = await client.get(asset)
        assert r.status_code == 200 and kind in r.headers["content-type"], asset


# --- item 15: agents cannot read the audit log

async def test_h17_15_agent_tokens_cannot_read_the_audit_log(client: httpx.AsyncClient) -> None:
    owner = await register(client)  # the first user: the system admin, owner of their network
    agent = await create_token(client, owner, "agent", alias="worker")
    for token in (owner.network_token, agent):
        for params in ({}, {"network_id": owner.network_id}):
            r = await client.get("/api/audit-log", params=params, headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 403, r.text
            assert r.json()["error"] == "user_token_required" and "login token" in r.json()["message"]
    # The person who may still reads it, IPs included.
    r = await client.get("/api/audit-log", params={"network_id": owner.network_id}, headers=owner.auth)
    assert r.status_code == 200 and r.json()["entries"]


# --- item 9: tools/list costs what ping costs

async def _session(client: httpx.AsyncClient, token: str, version: str) -> dict[str, str]:
    """Headers of an initialized session on `version`."""
    r = await client.post("/mcp", headers={"Authorization": f"Bearer {token}"}, json={
        "jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {token}", "Mcp-Session-Id": r.headers["mcp-session-id"],
            "Mcp-Protocol-Version": version}


async def test_h17_09_tools_list_is_built_once_and_stays_right_per_version(
        client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from commhub_lib.mcp import protocol, tools  # the builders under test

    expected = [tool.descriptor() for tool in tools.TOOLS.values()]  # what every version lists (built here)
    built: list[str] = []
    original = tools.Tool.descriptor

    def counted(self: tools.Tool) -> dict[str, Any]:
        built.append(self.name)
        return original(self)

    monkeypatch.setattr(tools.Tool, "descriptor", counted)
    protocol._tool_descriptors.cache_clear()
    protocol._tools_list_for.cache_clear()
    account = await register(client)
    token = account.network_token
    modern = "2026-07-28"
    meta = {"io.modelcontextprotocol/protocolVersion": modern, "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "1"}}
    callers = {"2024-11-05": await _session(client, token, "2024-11-05"),
               "2025-11-25": await _session(client, token, "2025-11-25"),
               "none": {"Authorization": f"Bearer {token}"},
               modern: {"Authorization": f"Bearer {token}", "Mcp-Protocol-Version": modern,
                        "Mcp-Method": "tools/list", "Accept": "application/json, text/event-stream"}}
    for n in range(100):
        for version, headers in callers.items():
            params = {"_meta": meta} if version == modern else {}
            r = await client.post("/mcp", headers=headers, json={"jsonrpc": "2.0", "id": f"l{n}",
                                                                 "method": "tools/list", "params": params})
            assert r.status_code == 200, r.text
            answer = r.json()
            assert answer["id"] == f"l{n}" and answer["jsonrpc"] == "2.0", answer
            result = answer["result"]
            if version == "2024-11-05":  # no annotations before 2025-03-26
                assert result == {"tools": [{k: v for k, v in t.items() if k != "annotations"} for t in expected]}
            elif version == modern:  # the cache hints and resultType of 2026-07-28
                assert result == {"tools": expected, "ttlMs": 300_000, "cacheScope": "public",
                                  "resultType": "complete"}
            else:
                assert result == {"tools": expected}
    assert sorted(built) == sorted(tools.TOOLS), f"descriptors built {len(built)} times for 400 tools/list"


# --- item 10: connection limits and one body timeout on every route

async def test_h17_10_a_slow_body_is_408_within_the_body_timeout_on_every_route(tmp_path: Path) -> None:
    timeout = 1.0
    async with own_server(tmp_path, "slow", body_timeout_seconds=timeout) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            account = await register(client)
        for path, auth in (("/api/auth/login", ""), ("/api/messages", account.network_token),
                           ("/api/networks", account.token), ("/mcp", account.network_token),
                           ("/api/attachments", account.token)):  # its own body limit, the same timeout
            head = (f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                    f"Content-Length: 100\r\n" + (f"Authorization: Bearer {auth}\r\n" if auth else "") + "\r\n")
            started = trio.current_time()
            answer = await raw(server.port, head.encode() + b'{"to": ', within=timeout + 5)  # the rest never comes
            elapsed = trio.current_time() - started
            status, lower, body = status_and_body(answer)
            assert status == 408, (path, answer[:300])
            assert b"connection: close" in lower and b"request_timeout" in body
            assert timeout * 0.9 <= elapsed < timeout + 0.8, (path, elapsed)  # once the setting, not twice


async def _until(condition: Any, what: str) -> None:
    """Poll a condition of the server's state, bounded in time."""
    deadline = trio.current_time() + WAIT
    while not condition():
        assert trio.current_time() < deadline, f"timed out waiting for {what}"
        await trio.sleep(0.01)


async def test_h17_10_connections_with_unfinished_headers_are_capped_per_address(tmp_path: Path) -> None:
    async with own_server(tmp_path, "slowloris", max_incomplete_headers_per_ip=3) as server:
        partial = b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: "
        held = [await trio.open_tcp_stream("127.0.0.1", server.port) for _ in range(3)]
        for stream in held:
            await stream.send_all(partial)
        await _until(lambda: server.incomplete_headers.get("127.0.0.1") == 3, "three unfinished heads counted")
        # A client that sends its whole head is never counted, however many heads are unfinished.
        status, _, _ = status_and_body(await raw(server.port, b"GET /health HTTP/1.1\r\nHost: localhost\r\n"
                                                              b"Connection: close\r\n\r\n"))
        assert status == 200
        # The fourth unfinished head from the same address: 429, and the server closes the connection at once.
        started = trio.current_time()
        answer = await raw(server.port, partial)
        status, head, body = status_and_body(answer)
        assert status == 429 and b"connection: close" in head and b"retry-after" in head, answer
        assert b"max_incomplete_headers_per_ip" in body and b"COMMHUB_MAX_INCOMPLETE_HEADERS_PER_IP" in body
        assert trio.current_time() - started < 2.0
        # One of the three finishes its head: it is answered, and frees a place.
        await held[0].send_all(b"1\r\nConnection: close\r\n\r\n")
        with trio.fail_after(WAIT):
            assert status_and_body(await read_until_closed(held[0]))[0] == 200
        await _until(lambda: server.incomplete_headers.get("127.0.0.1") == 2, "the finished head uncounted")
        fourth = await trio.open_tcp_stream("127.0.0.1", server.port)
        await fourth.send_all(partial)
        await _until(lambda: server.incomplete_headers.get("127.0.0.1") == 3, "a new unfinished head counted")
        for stream in (*held, fourth):
            await stream.aclose()
        await _until(lambda: not server.incomplete_headers, "closed connections uncounted")


# --- item 5: the dashboard on a hub with a registration guard (COMMHUB_AUTH_TOKEN)

async def test_h17_05_login_never_needs_the_hub_token_and_register_asks_for_it(tmp_path: Path) -> None:
    secret = "hub-guard-Zq7"
    async with own_server(tmp_path, "guarded", auth_token=secret) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            r = await client.post("/api/auth/register", json={"username": "alice", "password": "secret123"},
                                  headers={"Authorization": f"Bearer {secret}"})
            assert r.status_code == 200, r.text
            # What the page sends to log in: the password, no Authorization header.
            r = await client.post("/api/auth/login", json={"username": "alice", "password": "secret123"})
            assert r.status_code == 200, r.text
            # What the page sends to register: first without the token (refused, saying so), then with it.
            r = await client.post("/api/auth/register", json={"username": "bob", "password": "secret123"})
            assert r.status_code == 401 and r.json()["error"] == "auth_token_required", r.text
            r = await client.post("/api/auth/register", json={"username": "bob", "password": "secret123"},
                                  headers={"Authorization": f"Bearer {secret}"})
            assert r.status_code == 200, r.text


def shown(element_id: str) -> Callable[[Any], bool]:
    """Whether an element of the page is displayed."""
    return lambda d: d.find_element("id", element_id).is_displayed()


def text(element_id: str) -> Callable[[Any], str]:
    """The text of an element of the page."""
    return lambda d: d.find_element("id", element_id).text


def _chrome_ready() -> bool:
    from tests.test_dashboard import chrome_available
    return chrome_available()


@pytest.mark.browser
@pytest.mark.skipif(not _chrome_ready(), reason="chromium and chromium-driver are not installed")
async def test_h17_05_dashboard_logs_in_and_registers_on_a_guarded_hub(tmp_path: Path) -> None:
    from tests.test_dashboard import Browser, launch_chrome

    secret = "hub-guard-Zq7"
    driver = await trio.to_thread.run_sync(launch_chrome, tmp_path / "profile")
    try:
        async with own_server(tmp_path, "guarded", auth_token=secret) as server:
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
                r = await client.post("/api/auth/register", json={"username": "alice", "password": "secret123"},
                                      headers={"Authorization": f"Bearer {secret}"})
                assert r.status_code == 200, r.text
            page = Browser(driver, server.url, tmp_path)
            # Log in: username and password only.
            await page.open("/")
            await page.type_into("login-username", "alice")
            await page.type_into("login-password", "secret123\n")
            await page.wait_for(shown("app-view"), "the app after login")
            assert await page.run(text("whoami")) == "alice"
            await page.click("logout-button")
            await page.wait_for(shown("login-form"), "the login form again")
            # Register through the page: it asks for the hub's token when the hub wants it.
            await page.click("show-register")
            await page.wait_for(shown("register-form"), "the create-account form")
            assert not await page.run(shown("register-token-field"))
            await page.type_into("register-username", "bob")
            await page.type_into("register-password", "secret123\n")
            await page.wait_for(shown("register-token-field"), "the registration token field")
            assert "registration token" in (await page.run(text("register-error")))
            await page.screenshot("register-asks-for-the-token")
            await page.type_into("register-auth-token", "wrong\n")
            await page.wait_for(lambda d: "not the hub's" in d.find_element("id", "register-error").text,
                                "a wrong token said")
            await page.type_into("register-auth-token", secret + "\n", clear=True)
            await page.wait_for(shown("app-view"), "the app after registering")
            await page.wait_for(lambda d: d.find_element("id", "whoami").text == "bob", "bob logged in")
            await page.screenshot("registered")
    finally:
        await trio.to_thread.run_sync(driver.quit)



@pytest.mark.browser
@pytest.mark.skipif(not _chrome_ready(), reason="chromium and chromium-driver are not installed")
async def test_h17_16_docs_page_renders_under_its_csp_in_a_browser(tmp_path: Path, server: ServerHandle) -> None:
    from tests.test_dashboard import Browser, launch_chrome

    driver = await trio.to_thread.run_sync(launch_chrome, tmp_path / "profile")
    try:
        page = Browser(driver, server.url, tmp_path)
        await page.open("/docs")
        # The script (a file now) ran: it fetched /openapi.json and rendered every operation.
        await page.wait_for(lambda d: len(d.find_elements("css selector", "main#ops details")) > 20,
                            "the operations rendered")
        assert "CommHub" in await page.run(text("intro"))
        blocked = await page.run(lambda d: [e["message"] for e in d.get_log("browser")
                                            if "Content Security Policy" in e["message"]])
        assert not blocked, blocked
    finally:
        await trio.to_thread.run_sync(driver.quit)
