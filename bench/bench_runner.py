"""`commhub run <agent>` latency: send → turn started, and send → replied, with the agent's model faked.

One run starts a fresh CommHub (benchlib.start_commhub), registers a person, creates a token bound to the alias,
starts the scripted fake of the agent vendor's API on loopback and `commhub.py run <agent> --alias bench-agent`
with the REAL agent CLI (tests/agent_clis), then sends --sends tasks one after another (each waits for its reply):

  turn started = the fake model receives the turn's first request naming the task id (the agent has been
                 started with the prompt and asked its model), measured from just before POST /api/tasks;
  replied      = GET /api/tasks/<id> says `replied` (polled every --poll-ms, which bounds the resolution).

The first --warmup tasks are not counted (the first turn creates the session). What a turn costs is dominated
by starting the agent CLI (Claude Code: one `claude -p` process per turn).

    /work/main/.venv/bin/python bench/bench_runner.py claude --sends 20
    /work/main/.venv/bin/python bench/bench_runner.py codex --sends 20
    /work/main/.venv/bin/python bench/bench_runner.py gemini --sends 20

Plug in a runner: add a function to FAKES that starts the vendor fake and returns a Fake (environment for the
runner, and "when did the model first see task X").
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

import benchlib as bl  # noqa: E402

BIN = REPO / "tests" / "agent_clis" / "node_modules" / ".bin"
ALIAS = "bench-agent"


@dataclass
class Fake:
    """A vendor fake, started: the runner's extra environment, when its model first saw a task, how to stop."""

    env: dict[str, str]
    first_seen: Callable[[str], float | None]   # task id -> time.monotonic() of the turn's first model request
    stop: Callable[[], None]


def fake_claude(home: Path) -> Fake:
    """tests/fakes/anthropic.py behind ANTHROPIC_BASE_URL."""
    from tests.fakes.anthropic import FakeAnthropic

    fake = FakeAnthropic().start()

    def first(task_id: str) -> float | None:
        seen = fake.prompts(task_id)
        return seen[0].at if seen else None

    env = {"ANTHROPIC_BASE_URL": fake.url, "ANTHROPIC_API_KEY": "sk-ant-fake", "DISABLE_AUTOUPDATER": "1",
           "DISABLE_TELEMETRY": "1", "DISABLE_ERROR_REPORTING": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"}
    return Fake(env, first, fake.stop)


def fake_codex(home: Path) -> Fake:
    """tests/fakes/openai_responses.py as a Codex model provider (CODEX_HOME/config.toml in the bench's HOME)."""
    from tests.fakes.openai_responses import FakeResponses

    fake = FakeResponses().start()
    codex_home = home / ".codex"
    codex_home.mkdir(parents=True, exist_ok=True)
    (codex_home / "config.toml").write_text(
        'model = "gpt-fake"\nmodel_provider = "fake"\ncheck_for_update_on_startup = false\n'
        '[analytics]\nenabled = false\n'
        f'[model_providers.fake]\nname = "fake"\nbase_url = "{fake.base_url}"\n'
        'wire_api = "responses"\nenv_key = "FAKE_OPENAI_KEY"\n')

    def first(task_id: str) -> float | None:
        seen = fake.prompts(task_id)
        return seen[0].at if seen else None

    return Fake({"CODEX_HOME": str(codex_home), "FAKE_OPENAI_KEY": "fake", "OTEL_SDK_DISABLED": "true"}, first,
                fake.stop)


def fake_gemini(home: Path) -> Fake:
    """tests/fakes/gemini_api.py behind GOOGLE_GEMINI_BASE_URL (~/.gemini/settings.json selects the API key)."""
    from tests.fakes.gemini_api import FakeGemini

    fake = FakeGemini().start()
    settings = home / ".gemini" / "settings.json"
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text(json.dumps({"security": {"auth": {"selectedType": "gemini-api-key"}},
                                    "privacy": {"usageStatisticsEnabled": False}, "telemetry": {"enabled": False}}))

    def first(task_id: str) -> float | None:
        seen = fake.prompts(task_id)
        return seen[0].at if seen else None

    return Fake({"GEMINI_API_KEY": "fake", "GOOGLE_GEMINI_BASE_URL": fake.url}, first, fake.stop)


FAKES: dict[str, Callable[[Path], Fake]] = {"claude": fake_claude, "codex": fake_codex, "gemini": fake_gemini}


def main() -> int:
    """Run the benchmark and print the command line and the numbers."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("agent", choices=sorted(FAKES), help="the runner to measure")
    ap.add_argument("--sends", type=int, default=20, help="tasks measured (after the warm-up)")
    ap.add_argument("--warmup", type=int, default=1, help="tasks sent first and not counted")
    ap.add_argument("--poll-ms", type=float, default=5.0, help="how often the reply and the fake are looked at")
    ap.add_argument("--turn-limit", type=float, default=120.0, help="give up on one task after this many seconds")
    ap.add_argument("--out", help="append the result as one JSON line to this file")
    args = ap.parse_args()

    print("command:", bl.this_command(), flush=True)
    server = bl.start_commhub(python=sys.executable)  # the interpreter running this, with its packages
    tmp = tempfile.TemporaryDirectory(prefix="commhub-bench-runner-")
    home = Path(tmp.name)
    fake = FAKES[args.agent](home)
    runner: subprocess.Popen[bytes] | None = None
    try:
        person = bl.register(server.base)
        http = httpx.Client(base_url=server.base, timeout=30, trust_env=False,
                            headers={"Authorization": f"Bearer {person['token']}"})
        r = http.post("/api/tokens", json={"name": ALIAS, "network_id": person["network_id"], "alias": ALIAS})
        r.raise_for_status()
        token = r.json()["token"]
        state_dir = home / "state"
        (home / "work").mkdir()
        env = {**os.environ, **fake.env, "COMMHUB_AGENT_TOKEN": token, "HOME": str(home),
               "XDG_CONFIG_HOME": str(home / ".config"), "XDG_STATE_HOME": str(home / ".state"),
               "XDG_CACHE_HOME": str(home / ".cache"), "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
        argv = [sys.executable, str(REPO / "commhub.py"), "run", args.agent, "--alias", ALIAS, "--hub", server.base,
                "--workdir", str(home / "work"), "--state-dir", str(state_dir)]
        print("runner:", " ".join(argv), flush=True)
        log = open(home / "runner.log", "wb")  # noqa: SIM115 - handed to the child
        runner = subprocess.Popen(argv, env=env, stdout=log, stderr=log)
        log.close()
        _until(lambda: (state_dir / "runner.json").exists(), 30, "the runner's stream", runner, home)

        started: list[float] = []
        replied: list[float] = []
        for i in range(args.warmup + args.sends):
            t0 = time.monotonic()
            r = http.post("/api/tasks", json={"to": ALIAS, "content": f"bench task {i}", "title": f"bench {i}"})
            r.raise_for_status()
            task_id = r.json()["task_id"]
            seen = _until(lambda t=task_id: fake.first_seen(t), args.turn_limit, "the turn", runner, home,
                          args.poll_ms)
            _until(lambda t=task_id: http.get(f"/api/tasks/{t}").json()["task"]["status"] == "replied",
                   args.turn_limit, "the reply", runner, home, args.poll_ms)
            done = time.monotonic()
            if i >= args.warmup:
                started.append(seen - t0)
                replied.append(done - t0)
        result = {"agent": args.agent, "sends": args.sends, "poll_ms": args.poll_ms,
                  "send_to_turn_started_ms": bl.lat_summary_ms(started),
                  "send_to_replied_ms": bl.lat_summary_ms(replied), "command": bl.this_command(),
                  "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        for name in ("send_to_turn_started_ms", "send_to_replied_ms"):
            s = result[name]
            print(f"{args.agent}: {name.removesuffix('_ms').replace('_', ' ')}: p50 {s.get('p50')} ms, "
                  f"p99 {s.get('p99')} ms, max {s.get('max')} ms (n={s.get('n')})")
        if args.out:
            bl.append_jsonl(args.out, result)
        print(json.dumps(result))
        return 0
    finally:
        if runner is not None and runner.poll() is None:
            runner.terminate()
            try:
                runner.wait(15)
            except subprocess.TimeoutExpired:
                runner.kill()
        fake.stop()
        server.stop()
        tmp.cleanup()


def _until(condition: Callable[[], object], limit: float, what: str, runner: subprocess.Popen[bytes],
           home: Path, poll_ms: float = 20.0) -> float:
    """Poll until truthy; the condition's value if it is a float (a time), else the moment it became true."""
    deadline = time.monotonic() + limit
    while True:
        value = condition()
        if value:
            return value if isinstance(value, float) else time.monotonic()
        if runner.poll() is not None:
            raise RuntimeError(f"the runner exited: {(home / 'runner.log').read_text()[-2000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {what} within {limit} s: {(home / 'runner.log').read_text()[-2000:]}")
        time.sleep(poll_ms / 1000)


if __name__ == "__main__":
    raise SystemExit(main())
