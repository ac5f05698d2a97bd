"""kill -9 durability: every send the server acknowledged with 200 survives a SIGKILL in the middle of a burst.

The server runs as a real subprocess (`python commhub.py serve`) on 127.0.0.1; it is killed while several
senders are mid-request, restarted on the same database file, and every acknowledged message id is looked up.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, BinaryIO

import httpx
import pytest
import trio
from cli_support import listening_url

from tests.conftest import create_token, register, tool

pytestmark = pytest.mark.subprocess

REPO = Path(__file__).resolve().parent.parent
SENDERS = 6
PER_SENDER = 50  # 300 sends in all
KILL_AFTER = 150  # acknowledged sends before the SIGKILL


def open_log(path: Path) -> BinaryIO:
    """The server's log file (its stderr goes there, never to an unread pipe that could fill up)."""
    return path.open("ab")


def log_text(path: Path) -> str:
    """The whole log so far ("" before the first start)."""
    return path.read_text(errors="replace") if path.exists() else ""


def log_tail(path: Path) -> str:
    return path.read_text(errors="replace")[-2000:]


class Server:
    """A `commhub.py serve` subprocess."""

    def __init__(self, process: trio.Process, port: int):
        self.process = process
        self.port = port
        self.url = f"http://127.0.0.1:{port}"


@asynccontextmanager
async def serve(db: Path, log: Path) -> AsyncIterator[Server]:
    """Start the server on port 0 and wait (bounded) until /health answers; kill it if still running."""
    # Info level: the log's "listening on" line gives the port the child bound (port 0, see listening_url).
    env = {**os.environ, "COMMHUB_REGISTER_RATE_PER_MINUTE": "0", "COMMHUB_LOGIN_RATE_PER_MINUTE": "0",
           "COMMHUB_TOKEN_RATE_PER_MINUTE": "0", "COMMHUB_LOG_LEVEL": "info", "PYTHONUNBUFFERED": "1"}
    env.pop("COMMHUB_AUTH_TOKEN", None)
    since = len(log_text(log))  # the log is appended to: a restart's lines come after the first run's
    with open_log(log) as log_file:
        process = await trio.lowlevel.open_process(
            [sys.executable, str(REPO / "commhub.py"), "serve", "--host", "127.0.0.1", "--port", "0",
             "--db", str(db)], cwd=str(REPO), env=env, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file)
    try:
        server = Server(process, int((await listening_url(process, log, since)).rsplit(":", 1)[1]))
        async with httpx.AsyncClient(base_url=server.url, timeout=5) as probe:
            with trio.fail_after(20):
                while True:
                    assert process.returncode is None, f"server exited early: {log_tail(log)}"
                    try:
                        if (await probe.get("/health")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    await trio.sleep(0.05)
        yield server
    finally:
        if process.returncode is None:
            process.kill()
        with trio.move_on_after(10):
            await process.wait()


async def all_messages(client: httpx.AsyncClient, headers: dict[str, str], alias: str) -> list[dict[str, Any]]:
    """Every message to an alias, paged with limit/offset (bounded)."""
    out: list[dict[str, Any]] = []
    for page in range(20):
        r = await client.get("/api/messages", headers=headers, params={"alias": alias, "limit": 500,
                                                                       "offset": page * 500})
        assert r.status_code == 200, r.text
        rows = r.json()["messages"]
        out += rows
        if len(rows) < 500:
            return out
    raise AssertionError("too many pages")


async def test_acknowledged_sends_survive_sigkill(tmp_path: Path) -> None:
    db, log = tmp_path / "crash.db", tmp_path / "server.log"
    acked: list[str] = []
    attempted = 0
    async with serve(db, log) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            account = await register(client)
            receiver = await create_token(client, account, "receiver")
            await tool(client, receiver, "report_status", {"alias": "inbox"})
            senders = []
            for i in range(SENDERS):
                token = await create_token(client, account, f"sender{i}")
                await tool(client, token, "report_status", {"alias": f"sender-{i}"})
                senders.append(token)
            killed = trio.Event()

            async def burst(index: int, token: str) -> None:
                nonlocal attempted
                for n in range(PER_SENDER):
                    if killed.is_set():
                        return
                    attempted += 1
                    try:
                        r = await client.post("/mcp", headers={"Authorization": f"Bearer {token}"}, json={
                            "jsonrpc": "2.0", "id": n, "method": "tools/call", "params": {
                                "name": "send_message",
                                "arguments": {"to": "inbox", "content": f"sender {index} message {n}"}}})
                    except httpx.TransportError:
                        return  # the server is gone
                    if r.status_code == 200 and not r.json()["result"]["isError"]:
                        acked.append(r.json()["result"]["structuredContent"]["message_id"])
                    if len(acked) >= KILL_AFTER and not killed.is_set():
                        server.process.send_signal(signal.SIGKILL)
                        killed.set()

            with trio.fail_after(30):
                async with trio.open_nursery() as nursery:
                    for i, token in enumerate(senders):
                        nursery.start_soon(burst, i, token)
            with trio.fail_after(10):
                await server.process.wait()
    assert killed.is_set(), "the burst finished before the kill"
    assert server.process.returncode == -signal.SIGKILL
    assert KILL_AFTER <= len(acked) < SENDERS * PER_SENDER, len(acked)
    assert len(set(acked)) == len(acked)

    # Restart on the same file: everything acknowledged is there, and the hub works as before.
    async with serve(db, log) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            messages = await all_messages(client, account.auth, "inbox")
            stored = {m["message_id"] for m in messages}
            missing = [m for m in acked if m not in stored]
            assert not missing, f"{len(missing)} acknowledged message(s) lost: {missing[:5]}"
            assert len(acked) <= len(stored) <= attempted
            assert all(m["from"].startswith("sender-") and m["to"] == "inbox" for m in messages)
            # The old tokens and aliases still work after the crash.
            after = await tool(client, senders[0], "send_message", {"to": "inbox", "content": "after restart"})
            assert after["message_id"] not in stored
            stats = (await client.get("/api/stats", headers=account.auth)).json()
            assert stats["sessions"]["total"] == SENDERS + 1
            # A graceful stop (SIGTERM) exits cleanly and promptly.
            server.process.send_signal(signal.SIGTERM)
            with trio.fail_after(10):
                await server.process.wait()
            assert server.process.returncode == 0, log_tail(log)
