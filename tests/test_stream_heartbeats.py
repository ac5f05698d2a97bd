"""Heartbeats at 5,000 streams: streams that connect together do not beat together, and a beat is encoded once
per second for every stream (issue 10: a burst of 2,000 connects beat in the same second every period,
stalling the loop 100-300 ms each time)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import trio
from test_shutdown_streams import agent_tokens

from commhub_lib import events
from tests.conftest import own_server

PERIOD = 2.0


def test_one_heartbeat_frame_per_second(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1_800_000_000.2]
    monkeypatch.setattr(events.time, "time", lambda: now[0])
    first = events.heartbeat_frame()
    now[0] += 0.5
    assert events.heartbeat_frame() is first  # the same second: the same bytes, nothing new allocated
    now[0] += 0.5
    second = events.heartbeat_frame()
    assert second is not first
    for frame in (first, second):
        lines = frame.decode().splitlines()
        assert lines[0] == "event: heartbeat" and not any(line.startswith("id:") for line in lines), lines
        assert json.loads(lines[1].removeprefix("data: "))["time"].endswith("Z")


async def first_beat_after(port: int, alias: str, token: str, delays: list[float]) -> None:
    """Open a stream; note how long after its preamble its first heartbeat came."""
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all(f"GET /events/{alias}?token={token} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        data = b""
        while b"retry:" not in data:
            data += await stream.receive_some(65536)
        opened = trio.current_time()
        while b"event: heartbeat" not in data:
            chunk = await stream.receive_some(65536)
            assert chunk, data
            data += chunk
        delays.append(trio.current_time() - opened)


async def test_streams_that_connect_together_beat_apart(tmp_path: Path) -> None:
    """Fails on the old main: every stream beat exactly one period after it connected, so streams opened in a
    burst beat in a burst, every period."""
    async with own_server(tmp_path, "beats", heartbeat_seconds=PERIOD, max_streams_per_ip=0,
                          max_streams_per_token=0) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            tokens = await agent_tokens(client, 40)
        delays: list[float] = []
        with trio.fail_after(PERIOD * 5):
            async with trio.open_nursery() as nursery:
                for alias, token in tokens.items():
                    nursery.start_soon(first_beat_after, server.port, alias, token, delays)
    # The first beat comes between half a period and a period after connecting (never later than before) ...
    assert all(PERIOD * 0.5 - 0.05 < d < PERIOD + 0.5 for d in delays), sorted(delays)
    # ... at a random point: 40 uniform draws span < 0.3 of the half period with a probability below 1e-18.
    assert max(delays) - min(delays) > 0.3 * PERIOD * 0.5, sorted(delays)
