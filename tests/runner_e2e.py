"""`commhub run <agent>` as a real child process, for the end-to-end tests of the Codex and Gemini runners.

The agent's environment (HOME, its config pointing at a fake model API on loopback, PATH with the pinned CLIs)
comes from the test; the runner is started with the agent's token in COMMHUB_AGENT_TOKEN only.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import trio
from cli_support import cli_env
from conftest import Account

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / "tests" / "agent_clis" / "node_modules" / ".bin"
WAIT = 90.0


async def until(condition: Callable[[], Any], what: str, within: float = WAIT) -> Any:
    """Poll a condition (sync) until it is truthy, bounded in time; its value."""
    deadline = trio.current_time() + within
    while True:
        value = condition()
        if value:
            return value
        assert trio.current_time() < deadline, f"timed out waiting for {what}"
        await trio.sleep(0.05)


async def until_async(condition: Callable[[], Any], what: str, within: float = WAIT) -> Any:
    """The same for an async condition."""
    deadline = trio.current_time() + within
    while True:
        value = await condition()
        if value:
            return value
        assert trio.current_time() < deadline, f"timed out waiting for {what}"
        await trio.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (the agent's wrapper and the real program it runs)."""
    found: list[int] = []
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            tasks = list(Path(f"/proc/{current}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                kids = [int(p) for p in (task / "children").read_text().split()]
            except OSError:
                continue
            found += kids
            todo += kids
    return found


class RunnerProcess:
    """`python commhub.py run <agent> --alias <alias>` as a child process (stderr kept in a file)."""

    def __init__(self, agent: str, alias: str, tmp: Path, hub_url: str, env: dict[str, str]):
        self.agent = agent
        self.alias = alias
        self.tmp = tmp
        self.workdir = tmp / "work"
        self.state_dir = tmp / "state" / alias
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.env = cli_env(**env, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
        self.hub_url = hub_url
        self.proc: trio.Process | None = None
        self.starts = 0

    @property
    def log(self) -> str:
        """Everything the runners wrote on stderr so far."""
        return "".join(p.read_text() for p in sorted(self.tmp.glob("runner-*.log")))

    def state(self) -> dict[str, Any]:
        """runner.json (empty before the first save)."""
        path = self.state_dir / "runner.json"
        return json.loads(path.read_text()) if path.exists() else {}

    async def start(self, *extra: str) -> None:
        """Start it and wait until it holds the stream (its cursor is on disk)."""
        self.starts += 1
        log = os.open(self.tmp / f"runner-{self.starts}.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self.proc = await trio.lowlevel.open_process(
            [sys.executable, str(ROOT / "commhub.py"), "run", self.agent, "--alias", self.alias,
             "--hub", self.hub_url, "--workdir", str(self.workdir), "--state-dir", str(self.state_dir), *extra],
            env=self.env, stdout=log, stderr=log)
        os.close(log)
        await until(lambda: self.state().get("cursor") is not None or self.dead(), "the runner's stream")
        assert not self.dead(), self.log

    def dead(self) -> bool:
        """Whether the runner exited."""
        return self.proc is not None and self.proc.poll() is not None

    async def kill9(self) -> None:
        """kill -9 the runner and wait for its agent (which dies with it) to be gone."""
        assert self.proc is not None
        below = descendants(self.proc.pid)
        self.proc.kill()
        await self.proc.wait()
        await until(lambda: not any(_alive(k) for k in below), f"{self.agent} to die with the runner")

    async def stop(self) -> None:
        """SIGTERM and wait."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            with trio.move_on_after(15):
                await self.proc.wait()
            if self.proc.returncode is None:
                self.proc.kill()
                await self.proc.wait()


class Sender:
    """A person who sends tasks to the alias and reads them back."""

    def __init__(self, client: httpx.AsyncClient, owner: Account, alias: str):
        self.client = client
        self.owner = owner
        self.alias = alias

    async def send(self, content: str, priority: str = "normal") -> str:
        """A task to the alias; its id."""
        r = await self.client.post("/api/tasks", headers=self.owner.auth,
                                   json={"to": self.alias, "content": content, "priority": priority})
        assert r.status_code == 200, r.text
        return r.json()["task_id"]

    async def task(self, task_id: str) -> dict[str, Any]:
        """{task, events}."""
        r = await self.client.get(f"/api/tasks/{task_id}", headers=self.owner.auth)
        assert r.status_code == 200, r.text
        return r.json()

    async def replied_once(self, task_id: str) -> dict[str, Any]:
        """Wait until the task is replied; it was replied by exactly one done reply. {task, events}."""
        async def check() -> dict[str, Any] | None:
            record = await self.task(task_id)
            return record if record["task"]["status"] == "replied" else None
        record = await until_async(check, f"task {task_id} to be replied")
        events = [e["event"] for e in record["events"]]
        assert events.count("replied") == 1, events
        return record

    async def flagged(self, task_id: str) -> dict[str, Any]:
        """Wait until the task is flagged unanswered. {task, events}."""
        async def check() -> dict[str, Any] | None:
            record = await self.task(task_id)
            return record if record["task"]["flag"] == "unanswered" else None
        return await until_async(check, f"task {task_id} to be flagged")

    async def pending_approval(self) -> dict[str, Any]:
        """Wait for the first pending approval the person sees; its row."""
        async def check() -> dict[str, Any] | None:
            r = await self.client.get("/api/approvals", params={"status": "pending"}, headers=self.owner.auth)
            rows = r.json()["approvals"]
            return rows[0] if rows else None
        return await until_async(check, "a pending approval")

    async def answer(self, approval_id: str, text: str) -> None:
        """The person answers the approval question."""
        r = await self.client.post("/api/replies", headers=self.owner.auth,
                                   json={"message_id": approval_id, "content": text})
        assert r.status_code == 200, r.text


def children(pid: int) -> list[int]:
    """The direct children of `pid` (the runner's agent process)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return found
