"""Hardening of the CLI against what members send (issue 17 items 2 and 6, issue 16 item 5's token names).

Every test runs the real `commhub` CLI as a subprocess against a real server; hostile text is sent through the
server's own API, as a member would send it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from cli_support import run_cli
from conftest import create_token, own_server, register, tool

from commhub_lib.cli.common import json_text, safe_text
from commhub_lib.cli.listen import ENV_VALUE_MAX_CHARS, _run, sanitize_env_value

ROOT = Path(__file__).resolve().parents[1]
WAIT = 30.0

# Retitles the window (OSC 0), clears the screen (CSI 2J), writes the clipboard (OSC 52), goes back to the start
# of the line to overwrite it (CR), forges a new line (LF), erases (BS), rings (BEL), then the same as C1 controls
# (U+009B CSI, U+009D OSC, U+009C ST), NEL, the Unicode separators and the bidi overrides and isolates.
HOSTILE = ("ok\x1b]0;pwned\x07\x1b[2J\x1b]52;c;ZXZpbA==\x07\rFORGED 12:00:00 #1 task\nsecond line\x08\x08"
           "\x9b31m\x9d0;c1 title\x9c\x85\u2028\u2029\u202eevil\u202c\u2066iso\u2069\u200f\u061c\x7f\x00end")

# UTF-8 bytes a terminal may act on: C0 (all but LF, which ends a record), DEL, C1 as UTF-8 (C2 80..C2 9F),
# U+2028/2029, bidi (U+202A..U+202E, U+2066..U+2069, U+200E/200F, U+061C).
_C0 = {bytes([b]) for b in range(0x20) if b != 0x0A} | {b"\x7f"}
_MULTIBYTE = {bytes([0xC2, b]) for b in range(0x80, 0xA0)} | {
    chr(c).encode() for c in (0x2028, 0x2029, 0x202A, 0x202B, 0x202C, 0x202D, 0x202E, 0x2066, 0x2067, 0x2068,
                              0x2069, 0x200E, 0x200F, 0x061C)}


def unsafe_bytes(data: bytes) -> list[bytes]:
    """Every byte sequence in `data` a terminal could act on (LF aside)."""
    return sorted({b for b in _C0 if b in data} | {m for m in _MULTIBYTE if m in data})


RUNNING: list[trio.Process] = []


@pytest.fixture(autouse=True)
def _no_stray_processes() -> Iterator[None]:
    """Kill any listen/tail a failed test left running."""
    yield
    while RUNNING:
        proc = RUNNING.pop()
        if proc.returncode is None:
            proc.kill()


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a CLI process: no COMMHUB_* from outside, then the given ones."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("COMMHUB_")}, **extra}


async def _until(condition: Callable[[], Any], what: str, within: float = WAIT) -> None:
    """Poll a condition on files written by other processes, bounded in time."""
    deadline = trio.current_time() + within
    while not condition():
        assert trio.current_time() < deadline, f"timed out waiting for {what}"
        await trio.sleep(0.05)


def _lines(path: Path) -> list[str]:
    return path.read_text().split("\n")[:-1] if path.exists() else []


async def _agents(client: httpx.AsyncClient) -> tuple[Any, str, str]:
    """A user, and two agents of their network: worker and boss (each has claimed its alias)."""
    account = await register(client)
    worker = await create_token(client, account, "worker")
    boss = await create_token(client, account, "boss")
    await tool(client, worker, "report_status", {"alias": "worker"})
    await tool(client, boss, "report_status", {"alias": "boss"})
    return account, worker, boss


# A handler that records, per event, its stdin and its COMMHUB_* environment (exactly, as JSON), each file
# written under a temporary name and renamed; done.log gets the event id last. It fails (exit 5) for an event
# whose stdin holds POISON (e.g. in a task's title), and for every event while $OUT/fail-always exists.
HANDLER = """#!/bin/sh
cat > "$OUT/stdin-$COMMHUB_EVENT_ID.tmp" && mv "$OUT/stdin-$COMMHUB_EVENT_ID.tmp" "$OUT/stdin-$COMMHUB_EVENT_ID.json"
echo "$COMMHUB_EVENT_ID" >> "$OUT/runs.log"
if [ -f "$OUT/fail-always" ] || grep -q POISON "$OUT/stdin-$COMMHUB_EVENT_ID.json"; then exit 5; fi
"{python}" -c 'import json, os; print(json.dumps({{k: v for k, v in os.environ.items() if k[:8] == "COMMHUB_"}}))' \
  > "$OUT/env-$COMMHUB_EVENT_ID.tmp" && mv "$OUT/env-$COMMHUB_EVENT_ID.tmp" "$OUT/env-$COMMHUB_EVENT_ID.json"
echo "$COMMHUB_EVENT_ID" >> "$OUT/done.log"
"""


class Listener:
    """`commhub listen worker` as a child process, its stderr in a file per start."""

    def __init__(self, out: Path, url: str, token: str, *extra: str, command: str | None = None,
                 token_var: str = "COMMHUB_AGENT_TOKEN"):
        self.out = out
        out.mkdir(exist_ok=True)
        (out / "handler.sh").write_text(HANDLER.format(python=sys.executable))
        (out / "handler.sh").chmod(0o755)
        self.args = [sys.executable, str(ROOT / "commhub.py"), "listen", "worker", "--exec",
                     command or str(out / "handler.sh"), "--state", str(out / "state.json"), *extra]
        self.env = clean_env(COMMHUB_URL=url, OUT=str(out), **{token_var: token})
        self.proc: trio.Process | None = None
        self.starts = 0

    async def start(self) -> None:
        """Start (again) and wait until it has saved its starting position."""
        self.starts += 1
        err = open(self.out / f"listen-{self.starts}.err", "wb")  # noqa: ASYNC230 - a local file, once
        self.proc = await trio.lowlevel.open_process(self.args, env=self.env, stdin=subprocess.DEVNULL,
                                                     stdout=err, stderr=err)
        RUNNING.append(self.proc)
        err.close()
        await self.until(lambda: (self.out / "state.json").exists(), "listen to save its starting position")

    def stderr_bytes(self) -> bytes:
        """Everything every start wrote to stderr."""
        return b"".join((self.out / f"listen-{i}.err").read_bytes() for i in range(1, self.starts + 1))

    def state(self) -> dict[str, Any]:
        """The state file."""
        return json.loads((self.out / "state.json").read_text())

    async def until(self, condition: Callable[[], Any], what: str) -> None:
        """Wait for a condition; fail at once if listen died meanwhile (with what it said)."""
        def alive_and() -> Any:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"listen exited {self.proc.returncode} while waiting for {what}:\n"
                                     + self.stderr_bytes().decode(errors="replace"))
            return condition()
        await _until(alive_and, what)

    async def stop(self) -> int:
        """SIGTERM, and wait for it."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        with trio.fail_after(10):
            return await self.proc.wait()


# ---- issue 17 item 2: no message can stop `commhub listen` ----

@pytest.mark.subprocess
async def test_h17_02_nul_and_45000_euro_signs_are_handled_and_the_environment_stays_short(tmp_path: Path) -> None:
    async with own_server(tmp_path, "poison_text") as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            _, worker, boss = await _agents(client)
            listener = Listener(tmp_path / "out", server.url, worker)
            await listener.start()
            texts = ["before\x00after \x1b]52;c;ZXZpbA==\x07", "€" * 45_000]
            for text in texts:
                await tool(client, boss, "send_message", {"to": "worker", "content": text})
            title = "T\x00itle\x1b[2J\r\nFORGED\u202e" + "x" * 150
            sent = await tool(client, boss, "send_task", {"to": "worker", "content": "€" * 45_000 + "\x00",
                                                          "title": title})
            await tool(client, boss, "send_message", {"to": "worker", "content": "the next one"})
            out = listener.out
            await listener.until(lambda: len(_lines(out / "done.log")) == 4, "all four events handled")
            ids = _lines(out / "done.log")
            assert _lines(out / "runs.log") == ids  # each ran once, in order, none failed
            events = [json.loads((out / f"stdin-{i}.json").read_text(encoding="utf-8")) for i in ids]
            # The whole event, exactly, on stdin.
            assert [e["data"].get("message") for e in events] == [*texts, None, "the next one"]
            assert events[2]["data"]["task_id"] == sent["task_id"] and events[2]["data"]["title"] == title
            for i in ids:
                env = json.loads((out / f"env-{i}.json").read_text(encoding="utf-8"))
                assert env["COMMHUB_EVENT_ID"] == i
                for name, value in env.items():
                    if name.startswith("COMMHUB_") and name not in ("COMMHUB_URL",):
                        assert len(value) <= ENV_VALUE_MAX_CHARS, (name, len(value))
                        assert not unsafe_bytes(value.encode()) and "\n" not in value, (name, value)
                assert "COMMHUB_CONTENT" not in env  # a message's text is on stdin only
            task_env = json.loads((out / f"env-{ids[2]}.json").read_text(encoding="utf-8"))
            assert task_env["COMMHUB_TITLE"] == "T itle [2J FORGED " + "x" * 150  # one clean line
            assert task_env["COMMHUB_TASK_ID"] == sent["task_id"] and task_env["COMMHUB_FROM"] == "boss"
            await listener.until(lambda: listener.state()["last_event_id"] == int(ids[-1]), "the cursor to move")
            assert not unsafe_bytes(listener.stderr_bytes())
            assert await listener.stop() == 0


@pytest.mark.subprocess
async def test_h17_02_a_command_that_does_not_exist_skips_each_event_after_max_attempts(tmp_path: Path) -> None:
    async with own_server(tmp_path, "no_command") as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            _, worker, boss = await _agents(client)
            listener = Listener(tmp_path / "out", server.url, worker, "--max-attempts", "2",
                                "--retry-max-seconds", "0.1", command=str(tmp_path / "no-such-handler"))
            await listener.start()
            tasks = [(await tool(client, boss, "send_task", {"to": "worker", "content": f"t{i}"}))["task_id"]
                     for i in range(2)]
            # The state file is written first, then the line that says so: wait for the line.
            await listener.until(lambda: listener.stderr_bytes().count(b"SKIPPED") == 2, "both events skipped")
            state = listener.state()
            assert [s["task_id"] for s in state["skipped"]] == tasks
            assert all(s["attempts"] == 2 and "exited 127" in s["error"] for s in state["skipped"])
            assert state["last_event_id"] == state["skipped"][-1]["event_id"] and "failing" not in state
            err = listener.stderr_bytes().decode()
            for s in state["skipped"]:
                assert f"SKIPPED event {s['event_id']} (new_task) after 2 failed attempts" in err
            assert listener.proc is not None and listener.proc.poll() is None  # still following
            assert await listener.stop() == 0


@pytest.mark.subprocess
async def test_h17_02_a_poison_event_never_blocks_the_next_one_even_across_a_restart(tmp_path: Path) -> None:
    async with own_server(tmp_path, "poison_cmd") as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            _, worker, boss = await _agents(client)
            out = tmp_path / "out"
            # First without --max-attempts: the poison event is retried (and holds back the next one).
            listener = Listener(out, server.url, worker, "--retry-max-seconds", "0.1")
            await listener.start()
            await tool(client, boss, "send_task", {"to": "worker", "content": "x", "title": "POISON: always fails"})
            good = await tool(client, boss, "send_task", {"to": "worker", "content": "a good one"})
            await listener.until(lambda: listener.state().get("failing", {}).get("attempts", 0) >= 2,
                                 "two failed attempts")
            assert not _lines(out / "done.log")  # retried for ever: the next one waits
            assert await listener.stop() == 0
            attempts_so_far = listener.state()["failing"]["attempts"]
            poison_id = listener.state()["failing"]["event_id"]
            # Restarted with --max-attempts: the attempts made before count, the event is skipped, the next runs.
            listener.args[listener.args.index("--retry-max-seconds"):] = [
                "--retry-max-seconds", "0.1", "--max-attempts", str(attempts_so_far + 1)]
            await listener.start()
            await listener.until(lambda: len(_lines(out / "done.log")) == 1, "the good event handled")
            state = listener.state()
            assert [s["event_id"] for s in state["skipped"]] == [poison_id]
            assert state["skipped"][0]["attempts"] == attempts_so_far + 1 and "exited 5" in state["skipped"][0]["error"]
            done = int(_lines(out / "done.log")[0])
            assert json.loads((out / f"stdin-{done}.json").read_text())["data"]["task_id"] == good["task_id"]
            runs = [int(x) for x in _lines(out / "runs.log")]
            assert runs == [poison_id] * (attempts_so_far + 1) + [done]
            await listener.until(lambda: listener.state()["last_event_id"] == done, "the cursor past both")
            assert await listener.stop() == 0
            # A third start never runs the poison event again.
            await listener.start()
            later = await tool(client, boss, "send_task", {"to": "worker", "content": "later"})
            await listener.until(lambda: len(_lines(out / "done.log")) == 2, "the later event handled")
            assert [int(x) for x in _lines(out / "runs.log")].count(poison_id) == attempts_so_far + 1
            last = int(_lines(out / "done.log")[1])
            assert json.loads((out / f"stdin-{last}.json").read_text())["data"]["task_id"] == later["task_id"]
            assert await listener.stop() == 0


def test_h17_02_a_command_that_cannot_start_is_a_failed_attempt_not_a_crash(tmp_path: Path) -> None:
    lock = os.open(tmp_path / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        # The exact crashes of the review, as they would reach Popen: a NUL (ValueError), a value past
        # Linux's 128 KiB per string (E2BIG).
        assert "could not start" in (_run("true", lock, b"{}", {"COMMHUB_X": "a\x00b"}) or "")
        assert "could not start" in (_run("true", lock, b"{}", {"COMMHUB_X": "€" * 45_000}) or "")
        assert _run("true", lock, b"{}", {"COMMHUB_X": sanitize_env_value("a\x00b" + "€" * 45_000)}) is None
        assert "exited 127" in (_run(str(tmp_path / "missing"), lock, b"{}", {}) or "")
    finally:
        os.close(lock)


def test_h17_02_env_values_are_one_short_clean_line() -> None:
    assert sanitize_env_value("a\x00b\x1b[2J\r\nc\u202ed\u2028e\x9bf") == "a b [2J c d e f"
    long = sanitize_env_value("€" * 45_000)
    assert len(long) == ENV_VALUE_MAX_CHARS and long.endswith("…")
    assert sanitize_env_value("\ud800x") == "x"  # a lone surrogate cannot be encoded into the environment


# ---- issue 17 item 6: terminal safety of tasks, task, status, tail, listen ----

def _assert_terminal_safe(output: bytes, what: str) -> None:
    found = unsafe_bytes(output)
    assert not found, f"{what} printed bytes a terminal acts on: {found}\n{output!r}"
    assert b"\nFORGED" not in output and b"\nsecond line" not in output, f"{what} printed a forged line"


@pytest.mark.subprocess
@pytest.mark.slow
async def test_h17_06_tasks_task_status_escape_member_text_and_json_stays_exact(tmp_path: Path) -> None:
    async with own_server(tmp_path, "terminal") as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            account, worker, boss = await _agents(client)
            await tool(client, worker, "report_status", {"status": "working", "agent": HOSTILE[:200],
                                                         "model": HOSTILE[:200], "task": HOSTILE[:200],
                                                         "progress": HOSTILE[:200]})
            sent = await tool(client, boss, "send_task", {"to": "worker", "content": HOSTILE,
                                                          "title": HOSTILE[:200], "context": HOSTILE})
            await tool(client, worker, "get_inbox")
            await tool(client, worker, "send_reply", {"task_id": sent["task_id"], "status": "done",
                                                      "content": HOSTILE})
            env = clean_env(COMMHUB_URL=server.url, COMMHUB_TOKEN=account.token)
            for args in (["tasks"], ["task", sent["task_id"]], ["status"]):
                done = await trio.run_process([sys.executable, str(ROOT / "commhub.py"), *args], env=env,
                                              capture_stdout=True, capture_stderr=True, check=False)
                assert done.returncode == 0, done.stderr
                _assert_terminal_safe(done.stdout + done.stderr, " ".join(args))
                assert b"\\x1b]0;pwned" in done.stdout or b"\\x1b]52" in done.stdout  # shown, escaped
                text = done.stdout.decode()
                if args == ["tasks"]:  # one record, one line: a heading and one task
                    assert len(text.splitlines()) == 2, text
                if args == ["status"]:  # a heading and the two agents
                    assert len(text.splitlines()) == 3, text
                listed = await trio.run_process([sys.executable, str(ROOT / "commhub.py"), *args, "--json"], env=env,
                                                capture_stdout=True, capture_stderr=True, check=False)
                _assert_terminal_safe(listed.stdout, " ".join(args) + " --json")
                answer = json.loads(listed.stdout)  # exact JSON: the very same text comes back
                if args == ["tasks"]:
                    assert answer["tasks"][0]["content"] == HOSTILE and answer["tasks"][0]["title"] == HOSTILE[:200]
                elif args == ["status"]:
                    me = next(s for s in answer["sessions"] if s["alias"] == "worker")
                    assert me["agent"] == HOSTILE[:200] and me["model"] == HOSTILE[:200]
                else:
                    assert answer["task"]["context"] == HOSTILE and answer["task"]["result"] == HOSTILE


@pytest.mark.subprocess
async def test_h17_06_tail_escapes_member_text_and_tail_json_stays_exact(tmp_path: Path) -> None:
    async with own_server(tmp_path, "tail_terminal") as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            account, _, boss = await _agents(client)
            outputs: dict[str, bytes] = {}
            for mode in ("text", "json"):
                extra = ["--json"] if mode == "json" else []
                proc = await trio.lowlevel.open_process(
                    [sys.executable, str(ROOT / "commhub.py"), "tail", "worker", "--from-start", *extra],
                    env=clean_env(COMMHUB_URL=server.url, COMMHUB_TOKEN=account.token), stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
                RUNNING.append(proc)
                assert proc.stdout is not None
                if mode == "text":
                    await tool(client, boss, "send_task", {"to": "worker", "content": "x", "title": HOSTILE[:200]})
                    await tool(client, boss, "send_message", {"to": "worker", "content": HOSTILE})
                buffer = b""
                try:
                    with trio.fail_after(WAIT):
                        while buffer.count(b"\n") < 2:
                            buffer += await proc.stdout.receive_some()
                finally:
                    proc.send_signal(signal.SIGTERM)
                    with trio.fail_after(10):
                        await proc.wait()
                outputs[mode] = buffer
            _assert_terminal_safe(outputs["text"], "tail")
            assert len(outputs["text"].splitlines()) == 2  # two events, two lines
            assert b"\\x1b]0;pwned" in outputs["text"]
            _assert_terminal_safe(outputs["json"], "tail --json")
            task, message = (json.loads(line) for line in outputs["json"].splitlines())
            assert task["data"]["title"] == HOSTILE[:200] and message["data"]["message"] == HOSTILE


@pytest.mark.subprocess
async def test_h17_06_listen_prints_nothing_a_terminal_acts_on(tmp_path: Path) -> None:
    async with own_server(tmp_path, "listen_terminal") as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            _, worker, boss = await _agents(client)
            # A failing CMD makes listen report each attempt; the hostile text is in the event it reports on.
            listener = Listener(tmp_path / "out", server.url, worker, "--max-attempts", "1",
                                command="exit 9")
            await listener.start()
            await tool(client, boss, "send_task", {"to": "worker", "content": HOSTILE, "title": HOSTILE[:200]})
            await listener.until(lambda: b"SKIPPED" in listener.stderr_bytes(), "the event to be skipped")
            assert listener.state()["skipped"]
            _assert_terminal_safe(listener.stderr_bytes(), "listen")
            assert await listener.stop() == 0


def test_h17_06_safe_text_and_json_text() -> None:
    shown = safe_text(HOSTILE)
    assert not unsafe_bytes(shown.encode()) and "\n" not in shown
    assert shown.startswith("ok\\x1b]0;pwned\\x07\\x1b[2J") and "\\u202e" in shown and "\\x9b" in shown
    assert safe_text("line 1\nline 2\ttab\r", multiline=True) == "line 1\nline 2\ttab\\x0d"
    assert safe_text("plain café 日本 👍") == "plain café 日本 👍"  # ordinary text untouched
    data = {"text": HOSTILE + "\ud800", "n": 1}
    printed = json_text(data)
    assert json.loads(printed) == data and not unsafe_bytes(printed.encode("utf-8", "surrogatepass"))
    assert "\ud800" not in printed  # a lone surrogate could not even be printed raw


# ---- issue 16 item 5 (part): an agent's token and a person's token have different variable names ----

@pytest.mark.subprocess
async def test_h16_05_listen_reads_the_agent_token_and_falls_back_with_a_note(tmp_path: Path) -> None:
    async with own_server(tmp_path, "token_names") as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            _, worker, boss = await _agents(client)
            fallback = Listener(tmp_path / "old", server.url, worker, token_var="COMMHUB_TOKEN")
            await fallback.start()
            assert b"set COMMHUB_AGENT_TOKEN instead" in fallback.stderr_bytes()
            assert await fallback.stop() == 0
            agent = Listener(tmp_path / "new", server.url, worker)
            await agent.start()
            await tool(client, boss, "send_task", {"to": "worker", "content": "hello"})
            await agent.until(lambda: len(_lines(agent.out / "done.log")) == 1, "the event handled")
            assert b"COMMHUB_TOKEN" not in agent.stderr_bytes()
            assert await agent.stop() == 0


@pytest.mark.subprocess
async def test_h16_05_no_token_names_the_variable_to_set(tmp_path: Path) -> None:
    async with own_server(tmp_path, "no_token") as server:
        done = await run_cli("tasks", env=clean_env(COMMHUB_URL=server.url))
        assert done.code == 1 and "COMMHUB_TOKEN" in done.err and "--token" in done.err, done.err
        with trio.fail_after(WAIT):
            listen = await trio.run_process(
                [sys.executable, str(ROOT / "commhub.py"), "listen", "worker", "--exec", "true", "--state",
                 str(tmp_path / "state.json")], env=clean_env(COMMHUB_URL=server.url), capture_stdout=True,
                capture_stderr=True, check=False)
        assert listen.returncode == 1 and b"COMMHUB_AGENT_TOKEN" in listen.stderr, listen.stderr
