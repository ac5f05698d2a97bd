"""The Codex driver of `commhub run` with the REAL `codex app-server` (tests/agent_clis), its model a scripted fake
Responses API on loopback (tests/fakes/openai_responses.py), CommHub a real server on port 0."""

from __future__ import annotations

import json
import os
import signal
import stat
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import trio
from cli_support import cli_env, run_cli

from commhub_lib.cli.run import codex
from commhub_lib.cli.run.driver import AgentDied, Answer, DriverContext
from commhub_lib.runtime.server import ServerHandle
from tests.conftest import Account, create_token, register, tool
from tests.fakes.openai_responses import FakeResponses
from tests.runner_e2e import RunnerProcess, Sender, children, until_async
from tests.runner_e2e import until as until_true

BIN = Path(__file__).parent / "agent_clis" / "node_modules" / ".bin" / "codex"
TURN_SECONDS = 90.0
pytestmark = [
    pytest.mark.skipif(not BIN.exists(), reason="the pinned Codex CLI is not installed (tests/agent_clis)"),
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
    """A hub with a person (alice) and the agent's alias `coder`, and the fake model."""

    server: ServerHandle
    client: httpx.AsyncClient
    alice: Account
    token: str
    fake: FakeResponses
    tmp: Path

    def env(self) -> dict[str, str]:
        """The agent's environment: a private CODEX_HOME pointing at the fake model, HOME in the temp dir."""
        home = self.tmp / "home"
        codex_home = home / ".codex"
        codex_home.mkdir(parents=True, exist_ok=True)
        (codex_home / "config.toml").write_text(
            'model = "gpt-fake"\nmodel_provider = "fake"\ncheck_for_update_on_startup = false\n'
            '[analytics]\nenabled = false\n'
            f'[model_providers.fake]\nname = "fake"\nbase_url = "{self.fake.base_url}"\n'
            'wire_api = "responses"\nenv_key = "FAKE_OPENAI_KEY"\n')
        return {"HOME": str(home), "CODEX_HOME": str(codex_home), "FAKE_OPENAI_KEY": "fake",
                "COMMHUB_AGENT_TOKEN": self.token, "OTEL_SDK_DISABLED": "true"}

    def context(self, *agent_args: str) -> DriverContext:
        """The driver's context."""
        workdir = self.tmp / "work"
        workdir.mkdir(exist_ok=True)
        env = {**self.env(), "PATH": f"{BIN.parent}:{os.environ.get('PATH', '')}"}
        return DriverContext(alias="coder", hub_url=self.server.url, token_env="COMMHUB_AGENT_TOKEN",
                             workdir=workdir, state_dir=self.tmp / "state" / "coder", agent_args=agent_args,
                             env=env)

    async def task(self, content: str) -> str:
        """A task from alice to coder; its id."""
        r = await self.client.post("/api/tasks", json={"to": "coder", "content": content}, headers=self.alice.auth)
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


def prompt(task_id: str, content: str) -> str:
    """A turn's prompt in the runner's shape (ids on lines of their own)."""
    return (f"You are the agent `coder` on CommHub. A new task has arrived for you.\nfrom: alice (person)\n"
            f"task_id: {task_id}\n\nThe sender wrote:\n> {content}\n\nAnswer with send_reply "
            f'{{"task_id": "{task_id}", "status": "done", "content": "<your result>"}}.')


@pytest.fixture
async def world(server: ServerHandle, tmp_path: Path) -> AsyncIterator[World]:
    """The hub, alice, coder's token (bound to the alias), the fake model."""
    fake = FakeResponses().start()
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        alice = await register(client)
        token = await create_token(client, alice, "coder", alias="coder")
        await tool(client, token, "report_status", {"alias": "coder", "status": "idle"})
        yield World(server, client, alice, token, fake, tmp_path)
    fake.stop()


async def test_codex_turn_replies_to_the_task_through_commhub(world: World) -> None:
    task_id = await world.task("say hello")
    ctx = world.context()
    driver = codex.make_driver(ctx)
    await driver.start()
    try:
        with trio.fail_after(TURN_SECONDS):
            result = await driver.run_turn(prompt(task_id, "say hello"), Relay())
    finally:
        await driver.close()
    assert result.completed and result.error is None
    assert result.last_message == "Sent my answer (send_reply)."
    task = await world.status(task_id)
    assert task["status"] == "replied", task
    # The thread id is kept private; the token is on no command line and in no file of the state directory.
    thread_file = ctx.state_dir / codex.THREAD_FILE
    assert stat.S_IMODE(thread_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(ctx.state_dir.stat().st_mode) == 0o700
    assert all(world.token not in arg for arg in driver.dry_run())
    for path in ctx.state_dir.iterdir():
        assert world.token not in path.read_text(errors="replace")


async def test_codex_restart_resumes_the_thread(world: World) -> None:
    ctx = world.context()
    first_task = await world.task("first")
    driver = codex.make_driver(ctx)
    await driver.start()
    with trio.fail_after(TURN_SECONDS):
        assert (await driver.run_turn(prompt(first_task, "first"), Relay())).completed
    await driver.close()
    thread_id = json.loads((ctx.state_dir / codex.THREAD_FILE).read_text())["thread_id"]

    second_task = await world.task("second")
    again = codex.make_driver(ctx)
    await again.start()
    try:
        assert isinstance(again, codex.CodexDriver) and again.thread_id == thread_id
        with trio.fail_after(TURN_SECONDS):
            assert (await again.run_turn(prompt(second_task, "second"), Relay())).completed
    finally:
        await again.close()
    # The model saw the first turn in the second one's conversation: the same thread, resumed.
    second = world.fake.prompts(second_task)[-1]
    assert first_task in second.context
    assert (await world.status(second_task))["status"] == "replied"


async def test_codex_killed_mid_turn_is_agent_died(world: World) -> None:
    task_id = await world.task("slow #gate:hold")
    driver = codex.make_driver(world.context())
    await driver.start()
    assert isinstance(driver, codex.CodexDriver) and driver.rpc is not None
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
                os.kill(pid, signal.SIGKILL)  # the agent's own process, as an OOM killer would
    finally:
        world.fake.release("hold")
        await driver.close()
    assert len(died) == 1 and "exited" in str(died[0])
    assert (await world.status(task_id))["status"] != "replied"


@pytest.mark.parametrize("approve", [True, False])
async def test_codex_approval_is_relayed_and_answered(world: World, approve: bool) -> None:
    made = world.tmp / "work" / "made.txt"
    content = f"make a file #shell:{made}"
    task_id = await world.task(content)
    relay = Relay(approve=approve)
    # The fake model asks for an unsandboxed run; approval_policy "on-request" (the driver's) sends it to the client.
    driver = codex.make_driver(world.context())
    await driver.start()
    try:
        with trio.fail_after(TURN_SECONDS):
            result = await driver.run_turn(prompt(task_id, content), relay)
    finally:
        await driver.close()
    assert result.completed
    assert len(relay.asked) == 1, relay.asked
    question, asked_task = relay.asked[0]
    assert asked_task == task_id
    assert f"touch {made}" in question and "The task asks for a file." in question
    assert "Reply yes to allow" in question
    assert made.exists() is approve
    said = world.fake.outputs(task_id)
    assert said and ("relayed-ok" in said[0].text) is approve
    assert (await world.status(task_id))["status"] == "replied"


async def test_codex_interrupt_cuts_the_turn(world: World) -> None:
    task_id = await world.task("slow #gate:cut")
    driver = codex.make_driver(world.context())
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
    assert len(results) == 1 and not results[0].completed and results[0].error
    assert (await world.status(task_id))["status"] != "replied"


# -- end to end: `commhub run codex` as a real process ---------------------------------------------------------------


@pytest.fixture
async def runner(world: World) -> AsyncIterator[RunnerProcess]:
    """`commhub run codex --alias coder`, started; stopped at the end."""
    r = RunnerProcess("codex", "coder", world.tmp, world.server.url, world.env())
    await r.start()
    try:
        yield r
    finally:
        await r.stop()


@pytest.fixture
def sender(world: World) -> Sender:
    """alice, sending to coder."""
    return Sender(world.client, world.alice, "coder")


async def test_run_codex_task_sent_is_replied(runner: RunnerProcess, sender: Sender, world: World) -> None:
    task_id = await sender.send("Say hello to the team.")
    record = await sender.replied_once(task_id)
    assert record["task"]["result"] == f"done by the fake model: {task_id}"
    prompts = world.fake.prompts(task_id)
    assert len(prompts) == 1 and "Say hello to the team." in prompts[0].text
    assert f"from: {world.alice.username} (person)" in prompts[0].text
    await until_true(lambda: runner.state().get("in_flight") == [], "the event to be done")
    assert all(world.token not in p.read_text(errors="replace") for p in runner.state_dir.iterdir() if p.is_file())


async def test_run_codex_turn_without_reply_is_reminded_then_flagged(runner: RunnerProcess, sender: Sender,
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
    assert prompts[1].earlier == 1  # the reminder went to the same thread


async def test_run_codex_runner_killed_mid_turn_handles_each_task_exactly_once(
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
    # C: the runner dies before C's reply; the restarted runner runs C's turn again, in the same thread.
    c = await sender.send("C #gate:c")
    await until_true(lambda: "c" in world.fake.waiting, "C's turn to be under way")
    await runner.kill9()
    world.fake.release("c")
    await runner.start()
    await sender.replied_once(c)
    c_prompts = world.fake.prompts(c)
    assert len(c_prompts) == 2 and "The runner restarted" in c_prompts[1].text
    assert c_prompts[1].earlier >= 2  # A's and B's turns are in the resumed thread
    await until_true(lambda: runner.state().get("in_flight") == [], "nothing left in flight")


async def test_run_codex_approval_is_asked_on_the_task_and_the_answer_runs_the_command(
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


async def test_run_codex_dry_run_prints_the_command_without_the_token(tmp_path: Path) -> None:
    secret = "ntok_dry_run_secret_value"
    env = cli_env(COMMHUB_AGENT_TOKEN=secret, HOME=str(tmp_path), XDG_STATE_HOME=str(tmp_path / "state"),
                  PATH=f"{BIN.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    done = await run_cli("run", "codex", "--alias", "coder", "--hub", "http://127.0.0.1:9", "--dry-run",
                         "--", "--extra-arg", env=env)
    assert done.code == 0, done.err
    assert secret not in done.out and secret not in done.err
    assert " app-server " in done.out
    assert """'mcp_servers.commhub.bearer_token_env_var="COMMHUB_AGENT_TOKEN"'""" in done.out
    assert "http://127.0.0.1:9/mcp" in done.out and "--extra-arg" in done.out
    assert not (tmp_path / "state").exists()  # a dry run writes nothing


class FailingRelay:
    """A Relay whose hub cannot be reached."""

    async def ask(self, question: str, *, task_id: str | None) -> Answer:
        """Fail like HubRelay does when the hub is down."""
        raise RuntimeError("cannot reach the hub")


async def test_codex_approval_without_a_reachable_person_is_denied(world: World) -> None:
    made = world.tmp / "work" / "made.txt"
    content = f"make a file #shell:{made}"
    task_id = await world.task(content)
    driver = codex.make_driver(world.context())
    await driver.start()
    try:
        with trio.fail_after(TURN_SECONDS):
            result = await driver.run_turn(prompt(task_id, content), FailingRelay())
    finally:
        await driver.close()
    assert not made.exists()  # fail closed
    assert result.completed and (await world.status(task_id))["status"] == "replied"


async def test_codex_that_cannot_start_is_agent_died(world: World) -> None:
    ctx = world.context()
    driver = codex.make_driver(DriverContext(**{**ctx.__dict__, "env": {**ctx.env, "COMMHUB_CODEX_BIN": "false"}}))
    with trio.fail_after(TURN_SECONDS), pytest.raises(AgentDied, match="exited"):
        await driver.start()


async def test_run_codex_two_tasks_during_one_turn_are_both_handled_in_order(
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


async def test_run_codex_agent_killed_mid_turn_is_restarted_and_the_task_answered_once(
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
    assert prompts[1].earlier >= 1  # resumed in the same thread (the first task's turn is in it)
    assert "the agent died during the turn" in runner.log


async def test_codex_idle_longer_than_trios_worker_threads_lives_on(world: World) -> None:
    """The agent is forked from the trio thread: PR_SET_PDEATHSIG follows the forking thread, and trio retires an
    idle worker thread after 10 s, which would SIGKILL an agent forked there (trio.lowlevel.open_process)."""
    task_id = await world.task("after a pause")
    driver = codex.make_driver(world.context())
    await driver.start()
    try:
        await trio.sleep(12)  # not a synchronisation: the idle time is what is tested
        with trio.fail_after(TURN_SECONDS):
            result = await driver.run_turn(prompt(task_id, "after a pause"), Relay())
    finally:
        await driver.close()
    assert result.completed and (await world.status(task_id))["status"] == "replied"


async def test_run_codex_urgent_task_interrupts_the_turn_which_goes_on_after(world: World, sender: Sender) -> None:
    r = RunnerProcess("codex", "coder", world.tmp, world.server.url, world.env())
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


async def test_run_codex_a_message_is_a_turn_and_the_agent_answers_it(runner: RunnerProcess, sender: Sender,
                                                                   world: World) -> None:
    r = await world.client.post("/api/messages", headers=world.alice.auth,
                                json={"to": "coder", "content": "Are you there?"})
    assert r.status_code == 200, r.text
    message_id = r.json()["message_id"]

    async def answered() -> list[dict[str, object]]:
        got = await world.client.get("/api/messages", params={"alias": world.alice.username},
                                     headers=world.alice.auth)
        return [m for m in got.json()["messages"] if m.get("in_reply_to") == message_id]
    replies = await until_async(answered, "the agent's answer")
    assert replies[0]["content"] == "noted by the fake model" and replies[0]["from"] == "coder"
    assert world.fake.prompts()[0].text.count(f"message_id: {message_id}") == 1


async def test_codex_refusing_the_turn_is_agent_died(world: World) -> None:
    """A turn Codex refuses (its thread unusable) is AgentDied, so the loop restarts Codex and resumes or replaces
    the thread, instead of the runner ending on an unexpected error."""
    driver = codex.make_driver(world.context())
    await driver.start()
    assert isinstance(driver, codex.CodexDriver)
    driver.thread_id = "00000000-0000-0000-0000-000000000000"
    try:
        with trio.fail_after(TURN_SECONDS), pytest.raises(AgentDied, match="refused the turn"):
            await driver.run_turn(prompt("t-1", "anything"), Relay())
    finally:
        await driver.close()
