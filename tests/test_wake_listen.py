"""`commhub listen --exec` and `commhub tail` as real processes against a real server.

The handler is a real shell script: it appends "<event id> <task id>" to runs.log on every run, and to
handled.log only if that event id is not there yet (idempotent for COMMHUB_EVENT_ID, as docs/waking-agents.md advises).
Every file a test reads is complete once it exists (written to a temporary name, then renamed), and a test
waits for the file it reads, not for another one written before it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from conftest import create_token, register

from tests.conftest import own_server

pytestmark = pytest.mark.subprocess

ROOT = Path(__file__).resolve().parents[1]
WAIT = 30.0

HANDLER = """#!/bin/sh
set -e
cat > "$OUT/stdin-$COMMHUB_EVENT_ID.json"
echo "$COMMHUB_EVENT_ID $COMMHUB_TASK_ID" >> "$OUT/runs.log"
if [ -f "$OUT/fail-always" ]; then exit 4; fi
if [ -f "$OUT/fail-once" ] && [ ! -f "$OUT/failed-$COMMHUB_EVENT_ID" ]; then
  touch "$OUT/failed-$COMMHUB_EVENT_ID"; exit 3
fi
line="$COMMHUB_EVENT_ID $COMMHUB_TASK_ID"
grep -q "^$COMMHUB_EVENT_ID " "$OUT/handled.log" 2>/dev/null || echo "$line" >> "$OUT/handled.log"
env | grep '^COMMHUB_' | sort > "$OUT/env-$COMMHUB_EVENT_ID.tmp"
mv "$OUT/env-$COMMHUB_EVENT_ID.tmp" "$OUT/env-$COMMHUB_EVENT_ID.txt"
sleep 0.02
"""


def _lines(path: Path) -> list[str]:
    return path.read_text().split("\n")[:-1] if path.exists() else []


async def _until(condition: Any, what: str, within: float = WAIT) -> None:
    """Poll a condition on files written by other processes, bounded in time."""
    deadline = trio.current_time() + within
    while not condition():
        assert trio.current_time() < deadline, f"timed out waiting for {what}"
        await trio.sleep(0.05)


RUNNING: list[trio.Process] = []


@pytest.fixture(autouse=True)
def _no_stray_processes() -> Iterator[None]:
    """Kill any listen/tail a failed test left running."""
    yield
    while RUNNING:
        proc = RUNNING.pop()
        if proc.returncode is None:
            proc.kill()


class Listener:
    """`commhub listen` as a child process."""

    def __init__(self, tmp: Path, url: str, token: str, alias: str, *extra: str):
        self.out = tmp
        (tmp / "handler.sh").write_text(HANDLER)
        (tmp / "handler.sh").chmod(0o755)
        self.args = [sys.executable, str(ROOT / "commhub.py"), "listen", alias, "--exec", str(tmp / "handler.sh"),
                     "--state", str(tmp / "state.json"), *extra]
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith("COMMHUB_")},
                    "COMMHUB_URL": url, "COMMHUB_AGENT_TOKEN": token, "OUT": str(tmp)}
        self.proc: trio.Process | None = None
        self.starts = 0

    async def start(self) -> None:
        """Start (again); stderr goes to a file per start."""
        self.starts += 1
        err = open(self.out / f"listen-{self.starts}.err", "wb")  # noqa: ASYNC230 - a local file, once
        self.proc = await trio.lowlevel.open_process(self.args, env=self.env, stdin=subprocess.DEVNULL,
                                                     stdout=err, stderr=err)
        RUNNING.append(self.proc)
        err.close()

    def stderr(self) -> str:
        """Everything every start wrote to stderr."""
        return "".join((self.out / f"listen-{i}.err").read_text() for i in range(1, self.starts + 1))

    async def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signal the process and wait for it."""
        assert self.proc is not None
        self.proc.send_signal(sig)
        with trio.fail_after(10):
            return await self.proc.wait()


async def _setup(client: httpx.AsyncClient) -> tuple[str, str]:
    return await _setup_for(client, await register(client))


async def _send(client: httpx.AsyncClient, boss: str, n: int, tag: str) -> list[str]:
    ids = []
    for i in range(n):
        r = await client.post("/mcp", headers={"Authorization": f"Bearer {boss}"}, json={
            "jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "send_task", "arguments": {"to": "worker", "content": f"{tag} {i}"}}})
        ids.append(r.json()["result"]["structuredContent"]["task_id"])
    return ids


def _handled_tasks(out: Path) -> list[str]:
    return [line.split()[1] for line in _lines(out / "handled.log")]


async def test_listen_runs_the_command_per_event_with_stdin_and_env(tmp_path: Path) -> None:
    async with own_server(tmp_path, "listen_basic") as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            worker, boss = await _setup(client)
            out = tmp_path / "out"
            out.mkdir()
            listener = Listener(out, server.url, worker, "worker")
            await listener.start()
            await _until(lambda: (out / "state.json").exists(), "listen to save its starting position")
            r = await client.post("/mcp", headers={"Authorization": f"Bearer {boss}"}, json={
                "jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "broadcast", "arguments": {
                    "content": "not selected by default"}}})
            assert r.status_code == 200
            [task_id] = await _send(client, boss, 1, "hello")
            await _until(lambda: len(_lines(out / "handled.log")) == 1, "the command to run")
            event_id = _lines(out / "handled.log")[0].split()[0]
            # The handler writes handled.log before the environment file: wait for the file read below.
            await _until(lambda: (out / f"env-{event_id}.txt").exists(), "the command's environment file")
            payload = json.loads((out / f"stdin-{event_id}.json").read_text())
            assert payload["event"] == "new_task" and payload["alias"] == "worker"
            assert payload["data"]["task_id"] == task_id and payload["id"] == int(event_id)
            env = dict(line.split("=", 1) for line in _lines(out / f"env-{event_id}.txt"))
            assert env["COMMHUB_EVENT"] == "new_task" and env["COMMHUB_EVENT_ID"] == event_id
            assert env["COMMHUB_TASK_ID"] == task_id and env["COMMHUB_FROM"] == "boss"
            assert env["COMMHUB_ALIAS"] == "worker" and env["COMMHUB_MESSAGE_ID"].startswith("msg_")
            await _until(lambda: json.loads((out / "state.json").read_text())["last_event_id"] == int(event_id),
                         "the cursor to move")
            assert len(_lines(out / "runs.log")) == 1  # the broadcast was skipped (not selected), not run
            assert await listener.stop() == 0


async def test_failing_command_is_retried_never_skipped(tmp_path: Path) -> None:
    async with own_server(tmp_path, "listen_fail") as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            worker, boss = await _setup(client)
            out = tmp_path / "out"
            out.mkdir()
            (out / "fail-once").touch()
            listener = Listener(out, server.url, worker, "worker")
            await listener.start()
            await _until(lambda: (out / "state.json").exists(), "listen to start")
            sent = await _send(client, boss, 2, "flaky")
            await _until(lambda: len(_lines(out / "handled.log")) == 2, "both events handled")
            assert _handled_tasks(out) == sent  # in order, each once
            runs = Counter(line.split()[1] for line in _lines(out / "runs.log"))
            assert runs == Counter({sent[0]: 2, sent[1]: 2})  # each failed once, then ran again
            assert "exited 3" in listener.stderr() and "attempt 1" in listener.stderr()
            assert await listener.stop() == 0


async def test_after_max_attempts_the_event_is_skipped_recorded_and_the_next_goes_on(tmp_path: Path) -> None:
    async with own_server(tmp_path, "listen_give_up") as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            worker, boss = await _setup(client)
            out = tmp_path / "out"
            out.mkdir()
            (out / "fail-always").touch()
            listener = Listener(out, server.url, worker, "worker", "--max-attempts", "2",
                                "--retry-max-seconds", "0.2")
            await listener.start()
            await _until(lambda: (out / "state.json").exists(), "listen to start")
            [task_id] = await _send(client, boss, 1, "doomed")
            # The state file is written first, then the line that says so: wait for the line.
            await _until(lambda: "SKIPPED event" in listener.stderr(), "the event to be skipped")
            state = json.loads((out / "state.json").read_text())
            [skipped] = state["skipped"]
            assert skipped["task_id"] == task_id and skipped["attempts"] == 2 and "exited 4" in skipped["error"]
            assert state["last_event_id"] == skipped["event_id"]  # the cursor went past it
            assert [line.split()[1] for line in _lines(out / "runs.log")] == [task_id, task_id]
            assert f"SKIPPED event {skipped['event_id']}" in listener.stderr()
            assert listener.proc is not None and listener.proc.returncode is None  # listen goes on
            (out / "fail-always").unlink()
            [after] = await _send(client, boss, 1, "fine")
            await _until(lambda: _handled_tasks(out) == [after], "the next event to be handled")
            assert await listener.stop() == 0


async def test_kill_9_of_listen_mid_burst_loses_nothing(tmp_path: Path) -> None:
    async with own_server(tmp_path, "listen_kill") as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            worker, boss = await _setup(client)
            out = tmp_path / "out"
            out.mkdir()
            listener = Listener(out, server.url, worker, "worker")
            await listener.start()
            await _until(lambda: (out / "state.json").exists(), "listen to start")
            sent = await _send(client, boss, 20, "burst")
            await _until(lambda: len(_lines(out / "runs.log")) >= 6, "a part of the burst to be handled")
            assert await listener.stop(signal.SIGKILL) == -signal.SIGKILL
            await listener.start()
            sent += await _send(client, boss, 5, "after restart")
            await _until(lambda: len(_lines(out / "handled.log")) >= len(sent), "every event handled")
            assert sorted(_handled_tasks(out)) == sorted(sent) and len(_handled_tasks(out)) == len(sent)
            runs = Counter(line.split()[1] for line in _lines(out / "runs.log"))
            assert set(runs) == set(sent)
            # At-least-once: only the event in flight at the kill may have run twice.
            assert sum(n - 1 for n in runs.values()) <= 1, runs
            assert await listener.stop() == 0


async def test_server_restart_mid_burst_every_event_exactly_once(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    async with own_server(tmp_path, "listen_restart") as server:
        port = server.port
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            worker, boss = await _setup(client)
            listener = Listener(out, server.url, worker, "worker")
            await listener.start()
            await _until(lambda: (out / "state.json").exists(), "listen to start")
            sent = await _send(client, boss, 20, "before restart")
            await _until(lambda: len(_lines(out / "runs.log")) >= 3, "a part of the burst to be handled")
    # The server is gone mid-burst; the same database and port come back.
    async with own_server(tmp_path, "listen_restart", port=port) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            sent += await _send(client, boss, 5, "after restart")
            await _until(lambda: len(_lines(out / "runs.log")) >= len(sent), "every event handled")
            await trio.sleep(0.5)  # a repeat would show up right behind
            runs = [line.split()[1] for line in _lines(out / "runs.log")]
            assert runs == sent  # exactly once each, in order: listen itself never died
            assert "reconnecting" in listener.stderr()
            assert await listener.stop() == 0


async def test_tail_network_shows_two_aliases_in_order(tmp_path: Path) -> None:
    async with own_server(tmp_path, "tail") as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            account = await register(client)
            worker, boss = await _setup_for(client, account)
            env = {**{k: v for k, v in os.environ.items() if not k.startswith("COMMHUB_")},
                   "COMMHUB_URL": server.url, "COMMHUB_TOKEN": account.token}
            proc = await trio.lowlevel.open_process(
                [sys.executable, str(ROOT / "commhub.py"), "tail", "--network", account.network_id, "--json"],
                env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            RUNNING.append(proc)
            assert proc.stdout is not None
            try:
                await _until(lambda: server.hub.broker.subscriber_count() >= 1, "tail to connect")
                await _send(client, boss, 1, "to worker")
                r = await client.post("/mcp", headers={"Authorization": f"Bearer {worker}"}, json={
                    "jsonrpc": "2.0", "id": 1, "method": "tools/call",
                    "params": {"name": "send_message", "arguments": {"to": "boss", "content": "hi boss"}}})
                assert r.status_code == 200
                buffer = b""
                with trio.fail_after(WAIT):
                    while buffer.count(b"\n") < 2:
                        buffer += await proc.stdout.receive_some()
                lines = [json.loads(line) for line in buffer.decode().splitlines()]
                assert [(e["alias"], e["event"]) for e in lines] == [("worker", "new_task"), ("boss", "new_message")]
                assert lines[0]["id"] < lines[1]["id"] and lines[1]["data"]["message"] == "hi boss"
            finally:
                proc.send_signal(signal.SIGTERM)
                with trio.fail_after(10):
                    await proc.wait()


async def _setup_for(client: httpx.AsyncClient, account: Any) -> tuple[str, str]:
    worker = await create_token(client, account, "worker")
    boss = await create_token(client, account, "boss")
    for token, alias in ((worker, "worker"), (boss, "boss")):
        r = await client.post("/mcp", headers={"Authorization": f"Bearer {token}"}, json={
            "jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "report_status", "arguments": {"alias": alias}}})
        assert r.status_code == 200 and not r.json()["result"]["isError"], r.text
    return worker, boss
