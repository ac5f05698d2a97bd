"""The event streams are served ahead of Quart (asgi.py): their headers, the end of a stream whose client goes
away, HEAD, the error shape, crashes and the access line — over a real server and raw sockets."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import httpx
import pytest
import trio

from commhub_lib import sse
from commhub_lib.runtime.server import ServerHandle
from tests.conftest import create_token, mcp_call, own_server, register


class LineWaiter(logging.Handler):
    """Sets an event when a log line containing `text` arrives (no polling)."""

    def __init__(self, text: str):
        super().__init__(logging.INFO)
        self.text = text
        self.seen = trio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.seen.set()


async def read_head(stream: trio.SocketStream) -> tuple[bytes, bytes]:
    """The response head, and whatever of the body came with it (at least one byte of it)."""
    data = b""
    while b"\r\n\r\n" not in data or data.endswith(b"\r\n\r\n"):
        chunk = await stream.receive_some(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def get(path: str, *headers: str) -> bytes:
    return ("\r\n".join([f"GET {path} HTTP/1.1", "Host: localhost", *headers]) + "\r\n\r\n").encode()


async def test_a_stream_has_its_headers_and_ends_when_its_client_goes(server: ServerHandle, client: httpx.AsyncClient,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    """The stream's own clean-up (unsubscribe, presence, the close line) runs when the client disconnects."""
    caplog.set_level(logging.INFO, logger="commhub.sse")
    account = await register(client)
    waiter = LineWaiter(f"sse {account.network_id}/gone-1 closed (closed)")
    logging.getLogger("commhub.sse").addHandler(waiter)
    try:
        broker = server.hub.broker
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        with trio.fail_after(10):
            await stream.send_all(get(f"/events/gone-1?token={account.network_token}"))
            head, first = await read_head(stream)
            lines = head.lower().split(b"\r\n")
            assert lines[0] == b"http/1.1 200 ", lines[0]
            for header in (b"content-type: text/event-stream", b"cache-control: no-cache", b"connection: close",
                           b"x-accel-buffering: no"):
                assert header in lines, head
            assert b"retry: " in first  # (chunked)
            assert broker.streams_opened - broker.streams_closed == 1
            await stream.aclose()
            await waiter.seen.wait()
        assert broker.streams_opened - broker.streams_closed == 0
    finally:
        logging.getLogger("commhub.sse").removeHandler(waiter)


@pytest.mark.parametrize(("path", "allow"), [("/events/a1", "GET"), ("/events", "GET"), ("/mcp", "GET, POST, DELETE")])
async def test_head_on_a_stream_is_405_not_an_endless_stream(server: ServerHandle, client: httpx.AsyncClient,
                                                             path: str, allow: str) -> None:
    account = await register(client)
    with trio.fail_after(10):
        answer = await client.head(path, headers={"Authorization": f"Bearer {account.network_token}"})
    assert answer.status_code == 405
    assert answer.headers["allow"] == allow


async def test_stream_errors_keep_the_one_shape(server: ServerHandle, client: httpx.AsyncClient) -> None:
    account = await register(client)
    with trio.fail_after(10):
        missing = await client.get("/events/a1")
        assert missing.status_code == 401 and missing.json()["error"] == "unauthorized"
        bad = await client.get("/events/not an alias!", params={"token": account.network_token})
        assert bad.status_code == 400 and bad.json()["error"] == "validation_error", bad.text
        agent = await client.get("/events", params={"token": account.network_token})
        assert agent.status_code == 403 and agent.json()["error"] == "user_token_required"
        no_accept = await client.get("/mcp", headers={"Authorization": f"Bearer {account.network_token}"})
        assert no_accept.status_code == 405 and no_accept.headers["allow"] == "GET, POST, DELETE"
        assert no_accept.json()["error"] == "method_not_allowed"
        unknown = await client.get("/mcp", headers={"Authorization": f"Bearer {account.network_token}",
                                                    "Accept": "text/event-stream", "Mcp-Session-Id": "mcp_nope"})
        assert unknown.status_code == 404 and unknown.json()["error"] == "session_not_found"
        # Paths the stream routes do not match still reach Quart's routing.
        assert (await client.get("/events/a1/more")).status_code == 404
        assert (await client.post("/events/a1")).status_code == 405


async def test_the_stream_cap_is_429_with_retry_after(tmp_path: Path) -> None:
    async with own_server(tmp_path, "cap", max_streams_per_token=1) as server:
        async with httpx.AsyncClient(base_url=server.url) as client:
            account = await register(client)
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            async with stream:
                with trio.fail_after(10):
                    await stream.send_all(get(f"/events/capped?token={account.network_token}"))
                    head, _ = await read_head(stream)
                    assert head.startswith(b"HTTP/1.1 200"), head
                    second = await client.get("/events/capped", params={"token": account.network_token})
        assert second.status_code == 429 and second.json()["error"] == "rate_limited"
        assert "COMMHUB_MAX_STREAMS_PER_TOKEN" in second.json()["message"]
        assert second.headers["retry-after"] == "5"


async def test_a_crash_while_opening_a_stream_is_a_logged_500(server: ServerHandle, client: httpx.AsyncClient,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    account = await register(client)

    def broken(*args: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(sse, "take_stream_slot", broken)
    with trio.fail_after(10):
        answer = await client.get("/events/a1", params={"token": account.network_token})
    assert answer.status_code == 500
    assert answer.json() == {"error": "internal_error",
                             "message": "internal server error; the details are in the server log"}
    assert any(r.levelno == logging.ERROR and "GET /events/a1" in r.getMessage() and r.exc_info
               for r in caplog.records)


async def test_a_stream_open_writes_its_access_line_before_the_stream(server: ServerHandle, client: httpx.AsyncClient,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="commhub.access")
    account = await register(client)
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    async with stream:
        with trio.fail_after(10):
            await stream.send_all(get(f"/events/logged?token={account.network_token}"))
            head, _ = await read_head(stream)
    assert head.startswith(b"HTTP/1.1 200")
    lines = [r.getMessage() for r in caplog.records if r.name == "commhub.access"]
    assert any("GET /events/logged 200" in line for line in lines), lines


async def test_the_mcp_stream_carries_the_sessions_events(server: ServerHandle, client: httpx.AsyncClient) -> None:
    """GET /mcp from ASGI: a session's stream carries a message sent to its alias as a channel notification."""
    receiver = await register(client)
    sender_token = await create_token(client, receiver, name="sender")
    init = await client.post("/mcp", headers={"Authorization": f"Bearer {receiver.network_token}"},
                             json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                                 "protocolVersion": "2025-06-18", "capabilities": {},
                                 "clientInfo": {"name": "t", "version": "1"}}})
    sid = init.headers["mcp-session-id"]
    await mcp_call(client, receiver.network_token, "report_status", {"alias": "pushed"}, session_id=sid)
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    async with stream:
        with trio.fail_after(10):
            await stream.send_all(get("/mcp", f"Authorization: Bearer {receiver.network_token}",
                                      "Accept: text/event-stream", f"Mcp-Session-Id: {sid}"))
            head, data = await read_head(stream)
            assert head.startswith(b"HTTP/1.1 200") and b"text/event-stream" in head.lower()
            await mcp_call(client, sender_token, "report_status", {"alias": "sender-1"})
            await mcp_call(client, sender_token, "send_message",
                           {"to": "pushed", "content": "hello over the channel"})
            while b"notifications/claude/channel" not in data:
                data += await stream.receive_some(65536)
    frame = next(line for line in data.split(b"\n") if line.startswith(b"data: ") and b"claude/channel" in line)
    assert json.loads(frame[6:])["params"]["meta"]["event"] == "new_message"
