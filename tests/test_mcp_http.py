"""POST /mcp is served ahead of Quart (mcp/http.py): the body bounds, the error shape, crashes, chunked bodies,
a client that goes away, and the routing that still knows POST /mcp — all over a real server and sockets."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import apsw
import httpx
import pytest
import trio

from commhub_lib.mcp import tools
from commhub_lib.runtime.server import ServerHandle
from tests.conftest import mcp_call, own_server, register


async def read_until_closed(stream: trio.SocketStream) -> bytes:
    """Everything the server sends until it closes the connection."""
    data = b""
    while chunk := await stream.receive_some(65536):
        data += chunk
    return data


def rpc(method: str, params: dict | None = None, msg_id: int = 1) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params or {}}).encode()


async def test_a_body_over_the_cap_is_413_and_the_connection_closes(tmp_path: Path) -> None:
    """Content-Length over max_body_bytes: refused before the body is read, and the connection is not reused."""
    async with own_server(tmp_path, "cap", max_body_bytes=200) as server:
        async with httpx.AsyncClient(base_url=server.url) as client:
            account = await register(client)
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with stream:
            await stream.send_all(f"POST /mcp HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer "
                                  f"{account.network_token}\r\nContent-Type: application/json\r\n"
                                  "Content-Length: 5000\r\n\r\n".encode() + b" " * 100)
            with trio.fail_after(5):
                answer = await read_until_closed(stream)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 413"), head
        assert b"connection: close" in head.lower()
        assert json.loads(body) == {"error": "payload_too_large", "message": "request body is larger than 200 bytes"}


async def test_a_chunked_body_that_outgrows_the_cap_is_413(tmp_path: Path) -> None:
    """No Content-Length (chunked): the cap is enforced as the chunks arrive."""
    async with own_server(tmp_path, "chunkcap", max_body_bytes=200) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with stream:
            chunk = b"x" * 150
            await stream.send_all(b"POST /mcp HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
                                  + (b"%x\r\n" % len(chunk) + chunk + b"\r\n") * 2)
            with trio.fail_after(5):
                answer = await read_until_closed(stream)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert b'"error":"payload_too_large"' in answer


async def test_a_slow_body_is_408_after_the_body_timeout(tmp_path: Path) -> None:
    async with own_server(tmp_path, "slow", body_timeout_seconds=0.5) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with stream:
            await stream.send_all(b"POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                                  b"Content-Length: 100\r\n\r\n{\"jsonrpc")  # the rest never comes
            with trio.fail_after(5):
                answer = await read_until_closed(stream)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"connection: close" in answer.lower()
        assert b'"error":"request_timeout"' in answer and b"did not arrive within 0.5 s" in answer


async def test_a_chunked_body_in_pieces_is_read_whole(server: ServerHandle, client: httpx.AsyncClient) -> None:
    account = await register(client)
    body = rpc("tools/call", {"name": "report_status", "arguments": {"alias": "chunky"}})
    pieces = [body[i:i + 7] for i in range(0, len(body), 7)]
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    async with stream:
        await stream.send_all(f"POST /mcp HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer "
                              f"{account.network_token}\r\nContent-Type: application/json\r\nConnection: close\r\n"
                              "Transfer-Encoding: chunked\r\n\r\n".encode())
        for piece in pieces:  # each piece its own send: the server gets the body in several ASGI messages
            await stream.send_all(b"%x\r\n" % len(piece) + piece + b"\r\n")
        await stream.send_all(b"0\r\n\r\n")
        with trio.fail_after(5):
            answer = await read_until_closed(stream)
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert b"content-type: application/json" in head.lower()
    result = json.loads(rest)["result"]
    assert not result["isError"] and result["structuredContent"]["alias"] == "chunky"


async def test_a_client_that_leaves_mid_body_does_not_disturb_the_server(server: ServerHandle,
                                                                         client: httpx.AsyncClient,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    await stream.send_all(b"POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n{\"js")
    await stream.aclose()
    account = await register(client)  # the server goes on answering
    assert (await mcp_call(client, account.network_token, "report_status", {"alias": "after"}))["isError"] is False
    assert "internal error" not in caplog.text


async def test_a_crash_in_a_tool_is_a_logged_500(client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    account = await register(client)

    def boom(*_: object) -> None:
        raise RuntimeError("secret detail")

    monkeypatch.setattr(tools.TOOLS["get_all_status"], "handler", boom)
    with caplog.at_level(logging.ERROR, logger="commhub"):
        r = await client.post("/mcp", headers=account.net_auth,
                              content=rpc("tools/call", {"name": "get_all_status", "arguments": {}}))
    assert r.status_code == 500
    assert r.json() == {"error": "internal_error",
                        "message": "internal server error; the details are in the server log"}
    assert "secret detail" in caplog.text and "internal error on POST /mcp" in caplog.text
    assert "secret detail" not in r.text


async def test_a_storage_failure_keeps_its_mapped_answer(client: httpx.AsyncClient,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """An apsw error below a tool leaves as the same mapped error as on any route (disk full: 507)."""
    account = await register(client)

    def full(*_: object) -> None:
        raise apsw.FullError("database or disk is full")

    monkeypatch.setattr(tools.TOOLS["get_all_status"], "handler", full)
    r = await client.post("/mcp", headers=account.net_auth,
                          content=rpc("tools/call", {"name": "get_all_status", "arguments": {}}))
    assert r.status_code == 507 and r.json()["error"] == "storage_full", r.text


async def test_errors_before_the_call_keep_their_status_and_headers(client: httpx.AsyncClient) -> None:
    r = await client.post("/mcp", content=rpc("ping"))
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"
    account = await register(client)
    r = await client.post("/mcp", headers={**account.net_auth, "Origin": "https://evil.example"}, content=rpc("ping"))
    assert r.status_code == 403 and r.json()["error"] == "origin_not_allowed"
    # Notifications get 202 and no body; a query-string token works as the reference says.
    r = await client.post(f"/mcp?token={account.network_token}",
                          content=b'{"jsonrpc":"2.0","method":"notifications/initialized"}')
    assert r.status_code == 202 and r.content == b""


async def test_routing_still_knows_post_on_mcp(client: httpx.AsyncClient) -> None:
    r = await client.put("/mcp", content=b"{}")
    assert r.status_code == 405
    assert "POST" in r.headers["Allow"] and "POST" in r.json()["message"]
