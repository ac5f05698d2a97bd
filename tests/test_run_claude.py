"""`commhub run claude` end to end: the real Claude Code binary (tests/agent_clis), its model replaced by the
scripted fake Anthropic API (tests/fakes/anthropic.py), a real hub, and the runner as a real process.

What each test proves: a task sent to the alias starts a turn of the real `claude -p`, which calls CommHub's
send_reply over MCP, so the task ends `replied` — and around that, the reminder and the flag, the order of tasks
that arrive during a turn, kill -9 of the runner and of claude (each task replied exactly once, a cut turn
resumed in the same session), a permission prompt relayed to a person and answered, and `--dry-run`.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import runner_e2e
import trio
from cli_support import cli_env, run_cli
from conftest import Account, create_token, register

from commhub_lib.runtime.server import ServerHandle
from tests.fakes.anthropic import FakeAnthropic

ROOT, BIN = runner_e2e.ROOT, runner_e2e.BIN
WAIT = 60.0
SHORT_MCP_TIMEOUT = 3.0  # MCP_TOOL_TIMEOUT for the permission test (Claude Code's own default is 60 s)
ALIAS = "worker"

pytestmark = [
    pytest.mark.skipif(not (BIN / "claude").exists(), reason="the pinned Claude Code is not installed "
                       "(npm ci in tests/agent_clis)"),
    pytest.mark.subprocess,
    pytest.mark.slow,
]


# The runner tests' bounded polls (tests/runner_e2e.py), with this file's bound.
until = functools.partial(runner_e2e.until, within=WAIT)
until_async = functools.partial(runner_e2e.until_async, within=WAIT)


class RunnerProcess:
    """`python commhub.py run claude --alias worker` as a child process (stderr kept in a file)."""

    def __init__(self, tmp: Path, hub_url: str, token: str, fake: FakeAnthropic):
        self.tmp = tmp
        self.home = tmp / "home"
        self.workdir = tmp / "work"
        self.state_dir = tmp / "state" / ALIAS
        for d in (self.home, self.workdir):
            d.mkdir(parents=True, exist_ok=True)
        self.env = cli_env(
            COMMHUB_AGENT_TOKEN=token, HOME=str(self.home), XDG_CONFIG_HOME=str(self.home / ".config"),
            XDG_STATE_HOME=str(self.home / ".state"), XDG_CACHE_HOME=str(self.home / ".cache"),
            ANTHROPIC_BASE_URL=fake.url, ANTHROPIC_API_KEY="sk-ant-fake", DISABLE_AUTOUPDATER="1",
            DISABLE_TELEMETRY="1", DISABLE_ERROR_REPORTING="1", CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
            PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
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
            [sys.executable, str(ROOT / "commhub.py"), "run", "claude", "--alias", ALIAS, "--hub", self.hub_url,
             "--workdir", str(self.workdir), "--state-dir", str(self.state_dir), *extra],
            env=self.env, stdout=log, stderr=log)
        os.close(log)
        await until(lambda: self.state().get("cursor") is not None or self.proc_dead(), "the runner's stream")
        assert not self.proc_dead(), self.log

    def proc_dead(self) -> bool:
        """Whether the runner exited."""
        return self.proc is not None and self.proc.poll() is not None

    def children(self) -> list[int]:
        """The runner's child processes (claude)."""
        assert self.proc is not None
        pids: list[int] = []
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            text = (task / "children").read_text().split()
            pids += [int(p) for p in text]
        return pids

    async def kill9(self) -> None:
        """kill -9 the runner and wait for it (and its claude, which dies with it) to be gone."""
        assert self.proc is not None
        kids = self.children()
        self.proc.kill()
        await self.proc.wait()
        await until(lambda: not any(Path(f"/proc/{k}").exists() and _alive(k) for k in kids),
                    "claude to die with the runner")

    async def stop(self) -> None:
        """SIGTERM and wait."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            with trio.move_on_after(15):
                await self.proc.wait()
            if self.proc.returncode is None:
                self.proc.kill()
                await self.proc.wait()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


class Team:
    """A person (the sender) and the worker's token, bound to the alias."""

    def __init__(self, client: httpx.AsyncClient, owner: Account, token: str):
        self.client = client
        self.owner = owner
        self.token = token

    async def send(self, content: str, priority: str = "normal") -> str:
        """A task from the person to the worker; its id."""
        r = await self.client.post("/api/tasks", headers=self.owner.auth,
                                   json={"to": ALIAS, "content": content, "title": content[:40],
                                         "priority": priority})
        assert r.status_code == 200, r.text
        return r.json()["task_id"]

    async def task(self, task_id: str) -> dict[str, Any]:
        """{task, events}."""
        r = await self.client.get(f"/api/tasks/{task_id}", headers=self.owner.auth)
        assert r.status_code == 200, r.text
        return r.json()

    async def wait_status(self, task_id: str, *statuses: str) -> dict[str, Any]:
        """Wait until the task has one of these statuses; {task, events}."""
        async def check() -> dict[str, Any] | None:
            record = await self.task(task_id)
            return record if record["task"]["status"] in statuses else None
        return await until_async(check, f"task {task_id} to be {statuses}")

    async def replied_once(self, task_id: str) -> None:
        """The task is replied, by exactly one done reply."""
        record = await self.wait_status(task_id, "replied")
        events = [e["event"] for e in record["events"]]
        assert events.count("replied") == 1, events


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    """The scripted model API."""
    f = FakeAnthropic().start()
    yield f
    f.stop()


@pytest.fixture
async def team(client: httpx.AsyncClient) -> Team:
    """The sender and the worker's token."""
    owner = await register(client)
    token = await create_token(client, owner, "worker", alias=ALIAS)
    return Team(client, owner, token)


@pytest.fixture
async def runner(tmp_path: Path, server: ServerHandle, team: Team,
                 fake: FakeAnthropic) -> AsyncIterator[RunnerProcess]:
    """The runner, started; stopped at the end."""
    r = RunnerProcess(tmp_path, server.url, team.token, fake)
    await r.start()
    try:
        yield r
    finally:
        await r.stop()


async def test_task_sent_turn_runs_real_claude_which_replies(runner: RunnerProcess, team: Team,
                                                             fake: FakeAnthropic) -> None:
    task_id = await team.send("Say hello to the team.")
    await team.replied_once(task_id)
    record = await team.task(task_id)
    assert record["task"]["result"] == f"done by the fake model: {task_id}"
    prompts = fake.prompts(task_id)
    assert len(prompts) == 1
    prompt = prompts[0].text
    assert f"task_id: {task_id}" in prompt and "Say hello to the team." in prompt and "send_reply" in prompt
    assert f"from: {team.owner.username} (person)" in prompt
    # The MCP config is private and carries no token; the state directory is private.
    config = runner.state_dir / "claude-mcp.json"
    assert oct(config.stat().st_mode & 0o777) == "0o600"
    assert oct(runner.state_dir.stat().st_mode & 0o777) == "0o700"
    assert team.token not in config.read_text() and "${COMMHUB_AGENT_TOKEN}" in config.read_text()
    assert oct((runner.state_dir / "runner.json").stat().st_mode & 0o777) == "0o600"
    await until(lambda: runner.state().get("in_flight") == [], "the event to be done")

    async def idle() -> dict[str, Any] | None:  # the dashboard sees who drives the alias, and that it waits
        r = await team.client.get("/api/status", headers=team.owner.auth)
        rows = [s for s in r.json()["sessions"] if s["alias"] == ALIAS]
        return rows[0] if rows and rows[0]["status"] == "idle" else None
    session = await until_async(idle, "the alias to be idle")
    assert session["agent"] == "claude (commhub run)" and session["online"] is True


async def test_an_urgent_task_interrupts_the_running_claude_turn(tmp_path: Path, server: ServerHandle, team: Team,
                                                                 fake: FakeAnthropic) -> None:
    runner = RunnerProcess(tmp_path, server.url, team.token, fake)
    await runner.start("--interrupt-on", "urgent")
    try:
        slow = await team.send("slow #gate:slow")
        await until(lambda: "slow" in fake.waiting, "the slow turn to be under way")
        urgent = await team.send("urgent one", priority="urgent")
        await team.replied_once(urgent)
        assert (await team.task(slow))["task"]["status"] == "running"  # cut short, not done
        fake.release("slow")
        await team.replied_once(slow)
        order = [s.task_id for s in fake.prompts()]
        assert order == [slow, urgent, slow], order
        assert "interrupted by an urgent task" in fake.prompts(slow)[1].text
    finally:
        await runner.stop()


async def test_turn_without_reply_is_reminded_once_then_flagged_with_a_progress_reply(
        runner: RunnerProcess, team: Team, fake: FakeAnthropic) -> None:
    task_id = await team.send("Look into it #noreply")

    async def flagged() -> dict[str, Any] | None:
        record = await team.task(task_id)
        return record if record["task"]["flag"] == "unanswered" else None
    record = await until_async(flagged, "the flag")
    assert record["task"]["status"] == "running"  # not reported as done
    events = [e["event"] for e in record["events"]]
    assert events.count("progress") == 1 and "replied" not in events, events
    progress = next(e for e in record["events"] if e["event"] == "progress")
    assert f"I looked at {task_id}" in (progress["detail"] or "")
    prompts = fake.prompts(task_id)
    assert len(prompts) == 2  # the turn and the one reminder, in the same session
    assert "still open" in prompts[1].text and prompts[1].earlier == 1  # the reminder is in the same session


async def test_two_tasks_during_one_turn_are_both_handled_in_order(runner: RunnerProcess, team: Team,
                                                                   fake: FakeAnthropic) -> None:
    first = await team.send("First, slow #gate:first")
    await until(lambda: "first" in fake.waiting, "the first turn to be under way")
    second = await team.send("Second")
    third = await team.send("Third")
    fake.release("first")
    for task_id in (first, second, third):
        await team.replied_once(task_id)
    order = [s.task_id for s in fake.prompts()]
    assert order == [first, second, third], order
    replied_at = [next(e["id"] for e in (await team.task(t))["events"] if e["event"] == "replied")
                  for t in (first, second, third)]
    assert replied_at == sorted(replied_at)


async def test_runner_killed_mid_turn_and_restarted_handles_each_task_exactly_once(
        runner: RunnerProcess, team: Team, fake: FakeAnthropic) -> None:
    # A: replied, then the runner dies before the turn ends; B: queued behind A, in memory only.
    a = await team.send("A #gate-after-reply:a")
    await until(lambda: "a" in fake.waiting, "A's reply to be sent")
    b = await team.send("B")
    await until(lambda: any(p["data"].get("task_id") == a for p in runner.state().get("in_flight", [])),
                "A in flight on disk")
    await runner.kill9()
    fake.release("a")
    assert runner.state()["in_flight"][0]["data"]["task_id"] == a
    await runner.start()
    await team.replied_once(a)
    await team.replied_once(b)
    # C: the runner dies before C's reply; the restarted runner resumes C's turn in the same session.
    c = await team.send("C #gate:c")
    await until(lambda: "c" in fake.waiting, "C's turn to be under way")
    await runner.kill9()
    fake.release("c")
    await runner.start()
    await team.replied_once(c)
    assert len(fake.prompts(a)) == 1 and len(fake.prompts(b)) == 1  # A was final: no second turn
    c_prompts = fake.prompts(c)
    assert len(c_prompts) == 2 and "The runner restarted" in c_prompts[1].text
    # The same session: A's and B's turns are in the conversation. (C's own cut prompt may not be: Claude Code
    # writes its transcript lazily, so kill -9 can lose it; the resumed prompt carries the task in full.)
    assert c_prompts[1].earlier >= 2
    assert "resuming 1 event(s) in flight" in runner.log
    await until(lambda: runner.state().get("in_flight") == [], "nothing left in flight")


async def test_claude_killed_mid_turn_is_restarted_and_the_turn_resumed(runner: RunnerProcess, team: Team,
                                                                        fake: FakeAnthropic) -> None:
    await team.replied_once(await team.send("a first task, so the session has a history"))
    task_id = await team.send("K #gate:k")
    await until(lambda: "k" in fake.waiting, "the turn to be under way")
    kids = runner.children()
    assert kids, "claude runs as the runner's child"
    for pid in kids:
        os.kill(pid, signal.SIGKILL)
    fake.release("k")
    await team.replied_once(task_id)
    prompts = fake.prompts(task_id)
    assert len(prompts) == 2 and "The agent process died and was restarted" in prompts[1].text
    assert prompts[1].earlier >= 1  # resumed in the same session (the first task's turn is in it)
    assert "the agent died during the turn" in runner.log


async def test_permission_prompt_is_relayed_as_a_question_and_the_answer_lets_the_tool_run(
        server: ServerHandle, team: Team, fake: FakeAnthropic, tmp_path: Path) -> None:
    # Claude Code aborts an MCP request after MCP_TOOL_TIMEOUT (60 s by default) unless the server's entry in
    # --mcp-config sets "timeout", which wins. The user's MCP_TOOL_TIMEOUT is kept by the runner: set it to 3 s here,
    # so answering after 5 s proves the entry's timeout is what keeps the prompt waiting (without waiting a minute).
    runner = RunnerProcess(tmp_path, server.url, team.token, fake)
    runner.env["MCP_TOOL_TIMEOUT"] = str(int(SHORT_MCP_TIMEOUT * 1000))
    await runner.start()
    try:
        await _permission_relayed(team, fake, tmp_path)
    finally:
        await runner.stop()


async def _permission_relayed(team: Team, fake: FakeAnthropic, tmp_path: Path) -> None:
    out = tmp_path / "relayed.txt"
    task_id = await team.send(f"Write the file #bash:{out}")

    async def pending() -> dict[str, Any] | None:
        r = await team.client.get("/api/approvals", params={"status": "pending"}, headers=team.owner.auth)
        rows = r.json()["approvals"]
        return rows[0] if rows else None
    approval = await until_async(pending, "the permission question")
    assert approval["task_id"] == task_id and "Bash" in approval["question"]
    # The person answers after Claude Code's MCP request timeout: the runner's config entry sets a longer one, so
    # the permission prompt is still waiting. (The wait itself is what is tested here.)
    await trio.sleep(SHORT_MCP_TIMEOUT + 2)
    r = await team.client.post("/api/replies", headers=team.owner.auth,
                               json={"message_id": approval["approval_id"], "content": "yes"})
    assert r.status_code == 200, r.text
    await team.replied_once(task_id)
    assert out.read_text().strip() == "relayed-ok"
    record = await team.task(task_id)
    assert "bash said" in record["task"]["result"]
    # The answer went back through the tool: no turn was started for it.
    assert len(fake.prompts(task_id)) == 1 and len(fake.prompts()) == 1


async def test_a_message_is_a_turn_and_the_agent_answers_it(runner: RunnerProcess, team: Team,
                                                           fake: FakeAnthropic) -> None:
    r = await team.client.post("/api/messages", headers=team.owner.auth,
                               json={"to": ALIAS, "content": "Are you there?"})
    assert r.status_code == 200, r.text
    message_id = r.json()["message_id"]

    async def answered() -> list[dict[str, Any]]:
        got = await team.client.get("/api/messages", params={"alias": team.owner.username},
                                    headers=team.owner.auth)
        return [m for m in got.json()["messages"] if m.get("in_reply_to") == message_id]
    replies = await until_async(answered, "the agent's answer")
    assert replies[0]["content"] == "noted by the fake model" and replies[0]["from"] == ALIAS
    prompt = fake.prompts()[0].text
    assert f"message_id: {message_id}" in prompt and "> Are you there?" in prompt


async def test_dry_run_prints_the_command_and_config_without_the_token(tmp_path: Path) -> None:
    secret = "ntok_dry_run_secret_value"
    env = cli_env(COMMHUB_AGENT_TOKEN=secret, HOME=str(tmp_path), XDG_STATE_HOME=str(tmp_path / "state"),
                  PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    done = await run_cli("run", "claude", "--alias", ALIAS, "--hub", "http://127.0.0.1:9", "--dry-run",
                         "--", "--model", "sonnet", env=env)
    assert done.code == 0, done.err
    assert secret not in done.out and secret not in done.err
    assert "-p --output-format stream-json --verbose" in done.out
    assert "--permission-prompt-tool mcp__commhub__permission_prompt" in done.out
    assert "Bearer ${COMMHUB_AGENT_TOKEN}" in done.out and "http://127.0.0.1:9/mcp" in done.out
    assert done.out.rstrip().splitlines()[-1].endswith("--model sonnet")
    assert not (tmp_path / "state").exists()  # a dry run writes nothing
