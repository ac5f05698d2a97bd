"""The Gemini driver of `commhub run` with the REAL Gemini CLI in ACP mode (tests/agent_clis), its model a scripted
fake Gemini API on loopback (tests/fakes/gemini_api.py), CommHub a real server on port 0."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
import trio
from cli_support import cli_env, run_cli

from commhub_lib.cli.run import gemini
from commhub_lib.cli.run.driver import AgentDied, Answer, DriverContext
from commhub_lib.runtime.server import ServerHandle
from tests.conftest import Account, create_token, register, tool
from tests.fakes.gemini_api import FakeGemini
from tests.runner_e2e import RunnerProcess, Sender, children, until_async
from tests.runner_e2e import until as until_true

BIN = Path(__file__).parent / "agent_clis" / "node_modules" / ".bin" / "gemini"
TURN_SECONDS = 90.0
pytestmark = [
    pytest.mark.skipif(not BIN.exists(), reason="the pinned Gemini CLI is not installed (tests/agent_clis)"),
    pytest.mark.subprocess,
    pytest.mark.slow,
]


@dataclass
class Relay:
    """A Relay that records each question and answers it as told."""

    approve: bool = True
    asked: list[tuple[str, str | None]] = field(default_factory=list)

    async def ask(self, question: str, *, task_id: str | None) -> Answer:
        """Record the question and answer at once."""
        self.asked.append((question, task_id))
        return Answer(self.approve, "yes" if self.approve else "no, not that")


@dataclass
class World:
    """A hub with a person (alice) and the agent's alias `gem`, and the fake model."""

    server: ServerHandle
    client: httpx.AsyncClient
    alice: Account
    token: str
    fake: FakeGemini
    tmp: Path

    @property
    def home(self) -> Path:
        """The agent's HOME (its ~/.gemini holds the API-key login and telemetry off, as a user's would)."""
        return self.tmp / "home"

    def env(self) -> dict[str, str]:
        """The agent's environment: HOME whose ~/.gemini selects the API key, the fake API's URL."""
        settings = self.home / ".gemini" / "settings.json"
        settings.parent.mkdir(parents=True, exist_ok=True)
        settings.write_text(json.dumps({"security": {"auth": {"selectedType": "gemini-api-key"}},
                                        "privacy": {"usageStatisticsEnabled": False},
                                        "telemetry": {"enabled": False}}))
        return {"HOME": str(self.home), "GEMINI_API_KEY": "fake", "GOOGLE_GEMINI_BASE_URL": self.fake.url,
                "COMMHUB_AGENT_TOKEN": self.token}

    def context(self, *agent_args: str) -> DriverContext:
        """The driver's context."""
        workdir = self.tmp / "work"
        workdir.mkdir(exist_ok=True)
        env = {**self.env(), "PATH": f"{BIN.parent}:{os.environ.get('PATH', '')}"}
        return DriverContext(alias="gem", hub_url=self.server.url, token_env="COMMHUB_AGENT_TOKEN",
                             workdir=workdir, state_dir=self.tmp / "state" / "gem", agent_args=agent_args,
                             env=env)

    async def task(self, content: str) -> str:
        """A task from alice to gem; its id."""
        r = await self.client.post("/api/tasks", json={"to": "gem", "content": content}, headers=self.alice.auth)
        assert r.status_code == 200, r.text
        return r.json()["task_id"]

    async def status(self, task_id: str) -> dict[str, object]:
        """The task record."""
        r = await self.client.get(f"/api/tasks/{task_id}", headers=self.alice.auth)
        assert r.status_code == 200, r.text
        body = r.json()
        return body.get("task", body)


async def until(condition: Callable[[], bool]) -> None:
    """Poll a condition until it holds (the caller's fail_after bounds it)."""
    while True:
        if condition():
            return
        await trio.sleep(0.02)


def chat_file_of_an_earlier_minute(home: Path, session_id: str) -> None:
    """Rename the session's chat file (~/.gemini/tmp/<project>/chats/session-<YYYY-MM-DDTHH-MM>-<id[:8]>.jsonl) to
    the minute before the one it was created in: what a restart a minute or more later finds."""
    [chat] = (home / ".gemini" / "tmp").glob(f"*/chats/session-*-{session_id[:8]}.jsonl")
    minute = re.fullmatch(r"session-(\d{4}-\d\d-\d\dT\d\d-\d\d)-\w{8}\.jsonl", chat.name)
    assert minute, chat.name  # Gemini names its chat files otherwise now: see the test's comment
    earlier = datetime.strptime(minute[1], "%Y-%m-%dT%H-%M") - timedelta(minutes=1)
    chat.rename(chat.with_name(chat.name.replace(minute[1], f"{earlier:%Y-%m-%dT%H-%M}")))


def prompt(task_id: str, content: str) -> str:
    """A turn's prompt in the runner's shape (ids on lines of their own)."""
    return (f"You are the agent `gem` on CommHub. A new task has arrived for you.\nfrom: alice (person)\n"
            f"task_id: {task_id}\n\nThe sender wrote:\n> {content}\n\nAnswer with send_reply "
            f'{{"task_id": "{task_id}", "status": "done", "content": "<your result>"}}.')


@pytest.fixture
async def world(server: ServerHandle, tmp_path: Path) -> AsyncIterator[World]:
    """The hub, alice, gem's token (bound to the alias), the fake model."""
    fake = FakeGemini().start()
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        alice = await register(client)
        token = await create_token(client, alice, "gem", alias="gem")
        await tool(client, token, "report_status", {"alias": "gem", "status": "idle"})
        yield World(server, client, alice, token, fake, tmp_path)
    fake.stop()


async def test_gemini_turn_replies_to_the_task_through_commhub(world: World) -> None:
    task_id = await world.task("say hello")
    ctx = world.context()
    driver = gemini.make_driver(ctx)
    await driver.start()
    try:
        with trio.fail_after(TURN_SECONDS):
            result = await driver.run_turn(prompt(task_id, "say hello"), Relay())
    finally:
        await driver.close()
    assert result.completed and result.error is None
    assert result.last_message == "Sent my answer (mcp_commhub_send_reply)."
    assert (await world.status(task_id))["status"] == "replied"
    session_file = ctx.state_dir / gemini.SESSION_FILE
    assert stat.S_IMODE(session_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(ctx.state_dir.stat().st_mode) == 0o700
    # The token went over the agent's stdin only: not on the command line, in no file Gemini or the runner wrote.
    assert all(world.token not in line for line in driver.dry_run())
    for root in (ctx.state_dir, world.home, ctx.workdir):
        for path in root.rglob("*"):
            if path.is_file():
                assert world.token not in path.read_text(errors="replace"), path


async def test_gemini_gets_all_tools(world: World) -> None:
    """The real Gemini CLI connected to CommHub hands every CommHub tool to the model."""
    r = await world.client.post("/mcp", headers={"Authorization": f"Bearer {world.token}"},
                                json={"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}})
    served = {t["name"] for t in r.json()["result"]["tools"]}
    assert {"send_reply", "get_inbox", "report_status"} <= served
    task_id = await world.task("list your tools")
    driver = gemini.make_driver(world.context())
    await driver.start()
    try:
        with trio.fail_after(TURN_SECONDS):
            await driver.run_turn(prompt(task_id, "list your tools"), Relay())
    finally:
        await driver.close()
    given = {n.removeprefix("mcp_commhub_") for n in world.fake.prompt_tools if n.startswith("mcp_commhub_")}
    assert given == served, (served - given, given - served)


async def test_gemini_restart_resumes_the_session(world: World) -> None:
    ctx = world.context()
    first_task = await world.task("first")
    driver = gemini.make_driver(ctx)
    await driver.start()
    with trio.fail_after(TURN_SECONDS):
        assert (await driver.run_turn(prompt(first_task, "first"), Relay())).completed
    await driver.close()
    session_id = json.loads((ctx.state_dir / gemini.SESSION_FILE).read_text())["session_id"]

    # Gemini 0.61 resets a session's chat file when it is loaded in the minute it was created (its file name has
    # the minute in it; see docs/runner-agents.md). A runner restarting after backoff meets the file of an earlier
    # minute: name it so, rather than wait up to a minute for the wall clock to turn.
    chat_file_of_an_earlier_minute(world.home, session_id)
    second_task = await world.task("second")
    again = gemini.make_driver(ctx)
    await again.start()
    try:
        assert isinstance(again, gemini.GeminiDriver) and again.session_id == session_id
        with trio.fail_after(TURN_SECONDS):
            result = await again.run_turn(prompt(second_task, "second"), Relay())
    finally:
        await again.close()
    assert result.completed and result.last_message == "Sent my answer (mcp_commhub_send_reply)."
    assert first_task in world.fake.prompts(second_task)[-1].context  # the model saw the first turn
    assert (await world.status(second_task))["status"] == "replied"


async def test_gemini_killed_mid_turn_is_agent_died(world: World) -> None:
    task_id = await world.task("slow #gate:hold")
    driver = gemini.make_driver(world.context())
    await driver.start()
    assert isinstance(driver, gemini.GeminiDriver) and driver.rpc is not None
    pid = driver.rpc.pid
    assert pid is not None
    died: list[BaseException] = []

    async def turn() -> None:
        try:
            await driver.run_turn(prompt(task_id, "slow #gate:hold"), Relay())
        except AgentDied as exc:
            died.append(exc)

    try:
        with trio.fail_after(TURN_SECONDS):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(turn)
                await until(lambda: "hold" in world.fake.waiting)
                os.kill(pid, signal.SIGKILL)
    finally:
        world.fake.release("hold")
        await driver.close()
    assert len(died) == 1 and "exited" in str(died[0])
    assert (await world.status(task_id))["status"] != "replied"


async def test_gemini_interrupt_cancels_the_turn(world: World) -> None:
    task_id = await world.task("slow #gate:cut")
    driver = gemini.make_driver(world.context())
    await driver.start()
    results = []

    async def turn() -> None:
        results.append(await driver.run_turn(prompt(task_id, "slow #gate:cut"), Relay()))

    try:
        with trio.fail_after(TURN_SECONDS):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(turn)
                await until(lambda: "cut" in world.fake.waiting)
                await driver.interrupt()
    finally:
        world.fake.release("cut")
        await driver.close()
    assert len(results) == 1 and not results[0].completed and results[0].error == "cancelled"


@pytest.mark.parametrize("approve", [True, False])
async def test_gemini_shell_permission_is_relayed_and_answered(world: World, approve: bool) -> None:
    made = world.tmp / "work" / "made.txt"
    content = f"make a file #shell:{made}"
    task_id = await world.task(content)
    relay = Relay(approve=approve)
    driver = gemini.make_driver(world.context())
    await driver.start()
    try:
        with trio.fail_after(TURN_SECONDS):
            result = await driver.run_turn(prompt(task_id, content), relay)
    finally:
        await driver.close()
    assert len(relay.asked) == 1, relay.asked  # the shell only: CommHub's own tools ask nobody
    question, asked_task = relay.asked[0]
    assert asked_task == task_id
    assert question.startswith("Gemini CLI asks to use a tool (execute): touch ")
    assert f"touch {made}" in question and "Reply yes to allow" in question
    assert made.exists() is approve
    if approve:
        assert result.completed
        assert (await world.status(task_id))["status"] == "replied"


# -- end to end: `commhub run gemini` as a real process --------------------------------------------------------------


@pytest.fixture
async def runner(world: World) -> AsyncIterator[RunnerProcess]:
    """`commhub run gemini --alias gem`, started; stopped at the end."""
    r = RunnerProcess("gemini", "gem", world.tmp, world.server.url, world.env())
    await r.start()
    try:
        yield r
    finally:
        await r.stop()


@pytest.fixture
def sender(world: World) -> Sender:
    """alice, sending to gem."""
    return Sender(world.client, world.alice, "gem")


async def test_run_gemini_task_sent_is_replied(runner: RunnerProcess, sender: Sender, world: World) -> None:
    task_id = await sender.send("Say hello to the team.")
    record = await sender.replied_once(task_id)
    assert record["task"]["result"] == f"done by the fake model: {task_id}"
    prompts = world.fake.prompts(task_id)
    assert len(prompts) == 1 and "Say hello to the team." in prompts[0].text
    assert f"from: {world.alice.username} (person)" in prompts[0].text
    await until_true(lambda: runner.state().get("in_flight") == [], "the event to be done")


async def test_run_gemini_turn_without_reply_is_reminded_then_flagged(runner: RunnerProcess, sender: Sender,
                                                                      world: World) -> None:
    task_id = await sender.send("Look into it #noreply")
    record = await sender.flagged(task_id)
    assert record["task"]["status"] == "running"  # not reported as done
    events = [e["event"] for e in record["events"]]
    assert events.count("progress") == 1 and "replied" not in events, events
    progress = next(e for e in record["events"] if e["event"] == "progress")
    assert f"I looked at {task_id}" in (progress["detail"] or "")
    prompts = world.fake.prompts(task_id)
    assert len(prompts) == 2 and "still open" in prompts[1].text
    assert prompts[1].earlier == 1  # the reminder went to the same session


async def test_run_gemini_runner_killed_mid_turn_handles_each_task_exactly_once(
        runner: RunnerProcess, sender: Sender, world: World) -> None:
    # A: replied, then the runner dies before the turn ends; B: queued behind A, in memory only.
    a = await sender.send("A #gate-after-reply:a")
    await until_true(lambda: "a" in world.fake.waiting, "A's reply to be sent")
    b = await sender.send("B")
    await until_true(lambda: any(p["data"].get("task_id") == a for p in runner.state().get("in_flight", [])),
                     "A in flight on disk")
    await runner.kill9()
    world.fake.release("a")
    await runner.start()
    await sender.replied_once(a)
    await sender.replied_once(b)
    assert len(world.fake.prompts(a)) == 1 and len(world.fake.prompts(b)) == 1  # A was final: no second turn
    # C: the runner dies before C's reply; the restarted runner runs C's turn again.
    c = await sender.send("C #gate:c")
    await until_true(lambda: "c" in world.fake.waiting, "C's turn to be under way")
    await runner.kill9()
    world.fake.release("c")
    await runner.start()
    await sender.replied_once(c)
    c_prompts = world.fake.prompts(c)
    assert len(c_prompts) == 2 and "The runner restarted" in c_prompts[1].text
    await until_true(lambda: runner.state().get("in_flight") == [], "nothing left in flight")


async def test_run_gemini_approval_is_asked_on_the_task_and_the_answer_runs_the_command(
        runner: RunnerProcess, sender: Sender, world: World) -> None:
    made = runner.workdir / "made.txt"
    task_id = await sender.send(f"Make the file #shell:{made}")
    approval = await sender.pending_approval()
    assert approval["task_id"] == task_id and f"touch {made}" in approval["question"], approval
    assert not made.exists()
    await sender.answer(approval["approval_id"], "yes")
    record = await sender.replied_once(task_id)
    assert made.exists() and "relayed-ok" in record["task"]["result"]
    assert len(world.fake.prompts(task_id)) == 1  # the answer went back through the approval: no turn for it


async def test_run_gemini_dry_run_prints_the_command_without_the_token(tmp_path: Path) -> None:
    secret = "ntok_dry_run_secret_value"
    env = cli_env(COMMHUB_AGENT_TOKEN=secret, HOME=str(tmp_path), XDG_STATE_HOME=str(tmp_path / "state"),
                  PATH=f"{BIN.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    done = await run_cli("run", "gemini", "--alias", "gem", "--hub", "http://127.0.0.1:9", "--dry-run",
                         "--", "--extra-arg", env=env)
    assert done.code == 0, done.err
    assert secret not in done.out and secret not in done.err
    assert "--acp --skip-trust" in done.out and "Bearer $COMMHUB_AGENT_TOKEN" in done.out
    assert "http://127.0.0.1:9/mcp" in done.out and "--extra-arg" in done.out
    assert not (tmp_path / "state").exists()  # a dry run writes nothing


class FailingRelay:
    """A Relay whose hub cannot be reached."""

    async def ask(self, question: str, *, task_id: str | None) -> Answer:
        """Fail like HubRelay does when the hub is down."""
        raise RuntimeError("cannot reach the hub")


async def test_gemini_approval_without_a_reachable_person_is_denied(world: World) -> None:
    made = world.tmp / "work" / "made.txt"
    content = f"make a file #shell:{made}"
    task_id = await world.task(content)
    driver = gemini.make_driver(world.context())
    await driver.start()
    try:
        with trio.fail_after(TURN_SECONDS):
            result = await driver.run_turn(prompt(task_id, content), FailingRelay())
    finally:
        await driver.close()
    assert not made.exists()  # fail closed
    assert result.completed and (await world.status(task_id))["status"] == "replied"


async def test_gemini_that_cannot_start_is_agent_died(world: World) -> None:
    ctx = world.context()
    driver = gemini.make_driver(DriverContext(**{**ctx.__dict__, "env": {**ctx.env, "COMMHUB_GEMINI_BIN": "false"}}))
    with trio.fail_after(TURN_SECONDS), pytest.raises(AgentDied, match="exited"):
        await driver.start()


async def test_run_gemini_two_tasks_during_one_turn_are_both_handled_in_order(
        runner: RunnerProcess, sender: Sender, world: World) -> None:
    first = await sender.send("First, slow #gate:first")
    await until_true(lambda: "first" in world.fake.waiting, "the first turn to be under way")
    second = await sender.send("Second")
    third = await sender.send("Third")
    world.fake.release("first")
    for task_id in (first, second, third):
        await sender.replied_once(task_id)
    order = [s.task_id for s in world.fake.prompts()]
    assert order == [first, second, third], order


async def test_run_gemini_agent_killed_mid_turn_is_restarted_and_the_task_answered_once(
        runner: RunnerProcess, sender: Sender, world: World) -> None:
    await sender.replied_once(await sender.send("a first task, so the thread has a history"))
    task_id = await sender.send("K #gate:k")
    await until_true(lambda: "k" in world.fake.waiting, "the turn to be under way")
    assert runner.proc is not None
    kids = children(runner.proc.pid)
    assert kids, "the agent runs as the runner's child"
    for pid in kids:
        os.kill(pid, signal.SIGKILL)
    world.fake.release("k")
    await sender.replied_once(task_id)
    prompts = world.fake.prompts(task_id)
    assert len(prompts) == 2 and "The agent process died and was restarted" in prompts[1].text
    assert "the agent died during the turn" in runner.log


async def test_run_gemini_urgent_task_interrupts_the_turn_which_goes_on_after(world: World, sender: Sender) -> None:
    r = RunnerProcess("gemini", "gem", world.tmp, world.server.url, world.env())
    await r.start("--interrupt-on", "urgent")
    try:
        slow = await sender.send("Slow #gate:slow")
        await until_true(lambda: "slow" in world.fake.waiting, "the slow turn to be under way")
        urgent = await sender.send("Urgent", priority="urgent")
        await sender.replied_once(urgent)
        world.fake.release("slow")
        await sender.replied_once(slow)
    finally:
        await r.stop()
    order = [s.task_id for s in world.fake.prompts()]
    assert order == [slow, urgent, slow], order
    assert "interrupted by an urgent task" in world.fake.prompts(slow)[1].text
    assert "interrupting the turn" in r.log


async def test_run_gemini_a_message_is_a_turn_and_the_agent_answers_it(runner: RunnerProcess, sender: Sender,
                                                                   world: World) -> None:
    r = await world.client.post("/api/messages", headers=world.alice.auth,
                                json={"to": "gem", "content": "Are you there?"})
    assert r.status_code == 200, r.text
    message_id = r.json()["message_id"]

    async def answered() -> list[dict[str, object]]:
        got = await world.client.get("/api/messages", params={"alias": world.alice.username},
                                     headers=world.alice.auth)
        return [m for m in got.json()["messages"] if m.get("in_reply_to") == message_id]
    replies = await until_async(answered, "the agent's answer")
    assert replies[0]["content"] == "noted by the fake model" and replies[0]["from"] == "gem"
    assert world.fake.prompts()[0].text.count(f"message_id: {message_id}") == 1
