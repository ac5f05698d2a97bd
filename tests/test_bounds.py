"""Expensive work and slow clients are bounded: password changes are rate-limited per IP and per user,
argon2 runs at most `argon2_concurrency` at once, and half-sent headers or bodies do not hold a connection."""

from __future__ import annotations

from pathlib import Path

import httpx
import trio

from commhub_lib import auth
from tests.conftest import own_server, register


def client_from(url: str, ip: str) -> httpx.AsyncClient:
    """A client whose connections come from a given loopback address (all of 127/8 is local on Linux)."""
    return httpx.AsyncClient(base_url=url, timeout=30, transport=httpx.AsyncHTTPTransport(local_address=ip))


async def change(client: httpx.AsyncClient, account, old: str, new: str) -> httpx.Response:  # noqa: ANN001
    return await client.post("/api/auth/password", headers=account.auth,
                             json={"old_password": old, "new_password": new})


async def test_password_changes_are_limited_per_user_and_per_ip(tmp_path: Path) -> None:
    async with own_server(tmp_path, "pwlimit", password_rate_per_minute=2) as server:
        async with client_from(server.url, "127.0.0.1") as one, client_from(server.url, "127.0.0.2") as two, \
                client_from(server.url, "127.0.0.3") as three:
            alice = await register(one)
            bob = await register(one)
            assert (await change(one, alice, "secret123", "second-pw")).status_code == 200
            assert (await change(one, alice, "second-pw", "third-pw")).status_code == 200
            # Per user: a third change by alice is refused even from another address.
            r = await change(two, alice, "third-pw", "fourth-pw")
            assert r.status_code == 429 and r.json()["error"] == "rate_limited", r.text
            assert "password change" in r.json()["message"] and int(r.headers["Retry-After"]) >= 1
            # Per IP: 127.0.0.1 has used its two; bob from there is refused, from elsewhere allowed.
            assert (await change(one, bob, "secret123", "bob-second")).status_code == 429
            assert (await change(three, bob, "secret123", "bob-second")).status_code == 200


async def test_argon2_never_runs_more_than_the_limit_at_once(tmp_path: Path) -> None:
    async with own_server(tmp_path, "argon2", argon2_concurrency=2) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            accounts = [await register(client) for _ in range(6)]
            auth.ARGON2_GATE.peak = 0
            results: list[int] = []

            async def change_one(account) -> None:  # noqa: ANN001
                results.append((await change(client, account, "secret123", "new-password")).status_code)

            async with trio.open_nursery() as nursery:
                for account in accounts:
                    nursery.start_soon(change_one, account)
            assert results == [200] * 6
            # Six requests, each a verify and a hash, arrived together: at most two ran at any moment
            # (counted inside the hashing code, not timed), and the limit was reached.
            assert auth.ARGON2_GATE.peak == 2
            assert auth.ARGON2_GATE.running == 0


async def read_until_closed(stream: trio.SocketStream) -> bytes:
    """Everything the server sends until it closes the connection."""
    data = b""
    while chunk := await stream.receive_some(65536):
        data += chunk
    return data


async def test_half_sent_headers_are_cut_after_the_header_timeout(tmp_path: Path) -> None:
    async with own_server(tmp_path, "headers", header_timeout_seconds=0.5) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with stream:
            await stream.send_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")  # never finished
            with trio.fail_after(5):  # the old limit held it 75 s
                await read_until_closed(stream)
        # A client that finishes its headers in time is served as usual.
        async with httpx.AsyncClient(base_url=server.url) as client:
            assert (await client.get("/health")).status_code == 200


async def test_slow_body_is_refused_after_the_body_timeout(tmp_path: Path) -> None:
    async with own_server(tmp_path, "body", body_timeout_seconds=0.5) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with stream:
            await stream.send_all(b"POST /api/auth/login HTTP/1.1\r\nHost: localhost\r\n"
                                  b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"user")
            with trio.fail_after(5):
                answer = await read_until_closed(stream)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b'"error":"request_timeout"' in answer and b"did not arrive within 0.5 s" in answer
