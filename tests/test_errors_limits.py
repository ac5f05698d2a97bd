"""Errors and limits against a real server: 401/404/405 as JSON, malformed JSON, 413, rate limits (429)."""

from __future__ import annotations

import time
from types import SimpleNamespace

import httpx
import pytest
import trio
from conftest import make_settings, register, unique
from test_rest_auth import assert_error, running

from commhub_lib import ratelimit
from commhub_lib.config import Settings
from commhub_lib.runtime.server import ServerHandle

NOT_FOUND = [("GET", "/nope"), ("POST", "/nope"), ("GET", "/api"), ("GET", "/api/nope"), ("GET", "/api/auth"),
             ("POST", "/api/auth/logout"), ("GET", "/api/networks/net_x/nope"), ("GET", "/api/networks/a/b/c"),
             ("DELETE", "/api/tokens/"), ("GET", "/api/user")]

WRONG_METHOD = [  # (method, path, methods that must be in Allow)
    ("DELETE", "/health", {"GET"}), ("POST", "/health", {"GET"}),
    ("GET", "/api/auth/register", {"POST"}), ("PUT", "/api/auth/login", {"POST"}),
    ("DELETE", "/api/auth/me", {"GET", "PUT"}), ("GET", "/api/auth/password", {"POST"}),
    ("PATCH", "/api/networks", {"GET", "POST"}), ("POST", "/api/networks/net_x", {"GET", "PUT", "DELETE"}),
    ("PUT", "/api/networks/net_x/members", {"GET"}), ("GET", "/api/networks/net_x/invite", {"POST"}),
    ("PUT", "/api/tokens", {"GET", "POST"}),
    ("GET", "/api/tokens/tok_x", {"DELETE"}), ("POST", "/api/audit-log", {"GET"}), ("DELETE", "/api/users", {"GET"}),
]

AUTHENTICATED = [("GET", "/api/auth/me"), ("PUT", "/api/auth/me"), ("POST", "/api/auth/password"),
                 ("GET", "/api/networks"), ("POST", "/api/networks"), ("GET", "/api/networks/net_x"),
                 ("PUT", "/api/networks/net_x"), ("DELETE", "/api/networks/net_x"),
                 ("GET", "/api/networks/net_x/members"), ("POST", "/api/networks/net_x/invite"),
                 ("POST", "/api/networks/join"), ("POST", "/api/tokens"), ("GET", "/api/tokens"),
                 ("DELETE", "/api/tokens/tok_x"), ("GET", "/api/audit-log"), ("GET", "/api/users")]

MALFORMED = [b"{bad", b'{"name": "x",}', b"[1, 2]", b'"text"', b"null", b"42", b"\xff\xfe{}", b'{"a": 1} trailing',
             b"{'single': 'quotes'}"]


async def test_unknown_routes_are_404_json(client: httpx.AsyncClient) -> None:
    for method, path in NOT_FOUND:
        assert_error(await client.request(method, path), 404, "not_found", mentions=path)


async def test_wrong_methods_are_405_json_with_allow(client: httpx.AsyncClient) -> None:
    for method, path, allowed in WRONG_METHOD:
        r = await client.request(method, path)
        assert_error(r, 405, "method_not_allowed", mentions=method)
        allow = {m.strip() for m in r.headers.get("Allow", "").split(",")}
        assert allowed <= allow and method not in allow, (method, path, r.headers.get("Allow"))


async def test_401_without_or_with_a_bad_token_everywhere(client: httpx.AsyncClient) -> None:
    for method, path in AUTHENTICATED:
        assert_error(await client.request(method, path), 401, "unauthorized")
        for headers in ({"Authorization": "Bearer utok_unknown"}, {"Authorization": "Bearer ntok_unknown"},
                        {"Authorization": "Basic dXNlcjpwdw=="}, {"Authorization": "Bearer"}):
            assert_error(await client.request(method, path, headers=headers), 401)
        assert_error(await client.request(method, path, params={"token": "utok_unknown"}), 401, "invalid_token")


async def test_malformed_json_is_400(client: httpx.AsyncClient) -> None:
    acct = await register(client)
    net = acct.network_id
    endpoints = [("POST", "/api/auth/register", {}), ("POST", "/api/auth/login", {}),
                 ("PUT", "/api/auth/me", acct.auth), ("POST", "/api/auth/password", acct.auth),
                 ("POST", "/api/networks", acct.auth), ("PUT", f"/api/networks/{net}", acct.auth),
                 ("POST", f"/api/networks/{net}/invite", acct.auth), ("POST", "/api/networks/join", acct.auth),
                 ("POST", "/api/tokens", acct.auth)]
    for method, path, auth in endpoints:
        for raw in MALFORMED:
            r = await client.request(method, path, content=raw,
                                     headers={**auth, "Content-Type": "application/json"})
            assert_error(r, 400, "invalid_json")
    # Nothing above changed anything.
    r = await client.get("/api/networks", headers=acct.auth)
    assert [n["network_name"] for n in r.json()["networks"]] == ["default"]


async def test_body_over_max_body_bytes_is_413(tmp_path) -> None:
    cap = 2048

    def padded(body: str, size: int) -> bytes:
        """A JSON body padded with whitespace to exactly `size` bytes."""
        assert len(body) <= size
        return (body + " " * (size - len(body))).encode()

    async with running(make_settings(tmp_path, max_body_bytes=cap)) as (_, client):
        acct = await register(client)
        json_header = {"Content-Type": "application/json"}
        r = await client.post("/api/auth/register", content=padded('{"username": "x"}', cap + 1), headers=json_header)
        assert_error(r, 413, "payload_too_large", mentions=str(cap))

        async def chunks():
            for _ in range(4):
                yield b" " * 1024

        r = await client.post("/api/auth/login", content=chunks(), headers=json_header)  # no Content-Length
        assert_error(r, 413, "payload_too_large")

        auth = {**acct.auth, **json_header}
        r = await client.post("/api/networks", content=padded('{"name": "over"}', cap + 1), headers=auth)
        assert_error(r, 413, "payload_too_large")
        r = await client.post("/mcp", content=padded('{"jsonrpc": "2.0", "id": 1, "method": "ping"}', cap + 1),
                              headers={**acct.net_auth, **json_header})
        assert_error(r, 413, "payload_too_large")
        r = await client.post("/api/networks", content=padded('{"name": "at-cap"}', cap), headers=auth)
        assert r.status_code == 200, r.text  # exactly the cap is fine
        r = await client.get("/api/networks", headers=acct.auth)
        assert sorted(n["network_name"] for n in r.json()["networks"]) == ["at-cap", "default"]


async def test_default_body_cap_is_one_mebibyte(client: httpx.AsyncClient) -> None:
    assert Settings().max_body_bytes == 1024 * 1024
    body = '{"username": "x", "password": "secret123"}'
    r = await client.post("/api/auth/register", content=(body + " " * (1024 * 1024 + 1 - len(body))).encode(),
                          headers={"Content-Type": "application/json"})
    assert_error(r, 413, "payload_too_large")
    r = await client.post("/api/auth/register", content=(body + " " * (1024 * 1024 - len(body))).encode(),
                          headers={"Content-Type": "application/json"})
    assert_error(r, 400, "validation_error", mentions="username")  # read and validated, not refused for size


async def test_register_and_login_rate_limits_per_ip(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = Settings()
    assert (defaults.register_rate_per_minute, defaults.login_rate_per_minute) == (30, 10)
    settings = make_settings(tmp_path, register_rate_per_minute=defaults.register_rate_per_minute,
                             login_rate_per_minute=defaults.login_rate_per_minute)
    # The limiters' clock stands still: the register bucket refills one every 2 s, and on a loaded box (CI's tests
    # run in parallel) the 30 requests below can take longer than that, letting a 31st through.
    stopped = time.monotonic()
    monkeypatch.setattr(ratelimit, "time", SimpleNamespace(monotonic=lambda: stopped))
    async with running(settings) as (handle, client):
        # Quick requests (no argon2); refused ones count too.
        for _ in range(30):
            r = await client.post("/api/auth/register", json={"username": "x", "password": "secret123"})
            assert_error(r, 400, "validation_error")
        r = await client.post("/api/auth/register", json={"username": unique(), "password": "secret123"})
        assert_error(r, 429, "rate_limited", mentions="30")
        assert 1 <= int(r.headers["Retry-After"]) <= 2, r.headers  # one more every 60/30 s
        assert handle.hub.db.query("SELECT user_id FROM users") == []  # the refused registration did nothing

        # Logins have their own budget.
        for _ in range(10):
            assert_error(await client.post("/api/auth/login", json={}), 400, "validation_error")
        r = await client.post("/api/auth/login", json={"username": "someone", "password": "secret123"})
        assert_error(r, 429, "rate_limited", mentions="10")
        assert 1 <= int(r.headers["Retry-After"]) <= 6, r.headers  # one more every 60/10 s
        assert_error(await client.post("/api/auth/register", json={}), 429, "rate_limited")

        # Everything else is unaffected.
        assert (await client.get("/health")).status_code == 200
        assert_error(await client.get("/api/auth/me"), 401)


async def test_per_token_rate_limit(tmp_path) -> None:
    async with running(make_settings(tmp_path, token_rate_per_minute=5)) as (_, client):
        acct = await register(client)
        for _ in range(5):
            assert (await client.get("/api/auth/me", headers=acct.auth)).status_code == 200
        r = await client.get("/api/auth/me", headers=acct.auth)
        assert_error(r, 429, "rate_limited")
        assert 1 <= int(r.headers["Retry-After"]) <= 12, r.headers
        assert_error(await client.get("/api/auth/me", params={"token": acct.token}), 429)
        # Per token: the user's network token has its own budget.
        assert (await client.get("/api/auth/me", headers=acct.net_auth)).status_code == 200


@pytest.mark.parametrize("endpoint", ["/api/auth/register", "/api/auth/login"])
async def test_rate_limit_zero_means_off(client: httpx.AsyncClient, endpoint: str) -> None:
    for _ in range(40):
        assert_error(await client.post(endpoint, json={}), 400, "validation_error")


async def _read_response(stream: trio.SocketStream, buf: bytes) -> tuple[bytes | None, bytes]:
    """One HTTP/1.1 response (head + Content-Length body) from a raw stream; None at EOF."""
    while b"\r\n\r\n" not in buf:
        data = await stream.receive_some(65536)
        if not data:
            return None, buf
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        data = await stream.receive_some(65536)
        if not data:
            break
        rest += data
    return head.lower(), rest[length:]


@pytest.mark.parametrize("method,path,status", [("POST", "/api/networks", 401), ("POST", "/nope", 404),
                                                ("PUT", "/health", 405)])
async def test_early_error_with_a_late_body_keeps_the_connection_usable(server: ServerHandle, method: str,
                                                                        path: str, status: int) -> None:
    """A slow client: its body arrives a moment after its headers, when a server that refuses the request
    without reading the body (no token, no route, wrong method) has already answered. Its next request on
    the keep-alive connection must be answered, or it must have been told `Connection: close`; it must never
    hang. (The pause is the slow client under test, not synchronisation: if the server has not answered
    within it, the test merely checks the ordinary case.)"""
    body = b'{"name": "late"}'
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    try:
        await stream.send_all(f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                              f"Content-Length: {len(body)}\r\n\r\n".encode())
        await trio.sleep(0.2)
        await stream.send_all(body + b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        with trio.fail_after(5):
            first, buf = await _read_response(stream, b"")
            assert first is not None and first.startswith(f"http/1.1 {status}".encode()), first
            second, buf = await _read_response(stream, buf)
        if b"connection: close" in first:
            assert second is None  # told to go away, and the connection was closed
        else:
            assert second is not None and second.startswith(b"http/1.1 200"), second
    finally:
        await stream.aclose()


async def test_oversized_body_is_refused_with_connection_close(tmp_path) -> None:
    """An oversized body gets 413 with `Connection: close`, so no client reuses a connection whose body
    was left unread."""
    async with running(make_settings(tmp_path, max_body_bytes=100)) as (handle, client):
        stream = await trio.open_tcp_stream("127.0.0.1", handle.port)
        try:
            await stream.send_all(b"POST /api/auth/register HTTP/1.1\r\nHost: localhost\r\n"
                                  b"Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n" + b" " * 5000)
            with trio.fail_after(5):
                first, _ = await _read_response(stream, b"")
            assert first is not None and first.startswith(b"http/1.1 413"), first
            assert b"connection: close" in first, first
        finally:
            await stream.aclose()
        assert (await client.get("/health")).status_code == 200


async def test_a_crash_is_a_logged_500_with_the_error_shape(tmp_path, caplog) -> None:  # noqa: ANN001
    """Anything unexpected leaves as 500 internal_error, its details only in the log (in-process handler test)."""
    from commhub_lib.broker import Broker
    from commhub_lib.db import Database
    from commhub_lib.http.app import create_app
    from commhub_lib.service.hub import Hub
    from tests.conftest import make_settings

    settings = make_settings(tmp_path)
    db = Database(settings.db)
    try:
        app = create_app(Hub(settings, db, Broker(4)))

        @app.get("/boom")
        async def boom() -> dict:
            raise RuntimeError("secret detail")

        r = await app.test_client().get("/boom")
        assert r.status_code == 500
        assert await r.get_json() == {"error": "internal_error",
                                      "message": "internal server error; the details are in the server log"}
        assert "secret detail" in caplog.text
    finally:
        db.close()
