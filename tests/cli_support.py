"""Run the real CLI (`python commhub.py …`) as a subprocess, without blocking the test's trio loop (the server
under test runs in that loop)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parents[1]
COMMHUB = str(ROOT / "commhub.py")


@dataclass
class Run:
    """A finished CLI run."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        """stdout parsed as JSON."""
        return json.loads(self.out)


def cli_env(url: str | None = None, token: str | None = None, **extra: str) -> dict[str, str]:
    """The environment for a CLI run: no COMMHUB_* from the outside, then the given ones."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMMHUB_")}
    if url:
        env["COMMHUB_URL"] = url
    if token:
        env["COMMHUB_TOKEN"] = token
    env.update(extra)
    return env


async def run_cli(*args: str, env: dict[str, str] | None = None, stdin: str = "", cwd: Path | None = None,
                  limit_seconds: float = 30) -> Run:
    """`python commhub.py ARGS…` to completion; its exit code, stdout and stderr."""
    with trio.fail_after(limit_seconds):
        done = await trio.run_process([sys.executable, COMMHUB, *args], stdin=stdin.encode(), capture_stdout=True,
                                      capture_stderr=True, check=False, env=env or cli_env(), cwd=cwd)
    return Run(done.returncode, done.stdout.decode(), done.stderr.decode())


def run_cli_sync(*args: str, env: dict[str, str] | None = None, stdin: str = "") -> Run:
    """The same, blocking (for tests without a server)."""
    done = subprocess.run([sys.executable, COMMHUB, *args], input=stdin, capture_output=True, text=True,
                          env=env or cli_env(), timeout=30, check=False)
    return Run(done.returncode, done.stdout, done.stderr)


LISTENING = re.compile(r"listening on (http://[\d.]+:\d+)")


def _text(log: Path) -> str:
    return log.read_text(errors="replace")


async def listening_url(process: trio.Process, log: Path, since: int = 0, limit_seconds: float = 20) -> str:
    """The address a `serve --port 0` child bound, read from its log past offset `since` (an earlier server's
    lines before it), polled and bounded; fails if the child exits first.

    Port 0 rather than a port found free beforehand: tests run in parallel workers, and a port free a moment ago
    can be taken by another test's server before the child binds it (its requests would then reach that one)."""
    with trio.fail_after(limit_seconds):
        while not (found := LISTENING.search(_text(log), since)):
            if process.poll() is not None:
                raise AssertionError(f"server exited ({process.returncode}): {_text(log)}")
            await trio.sleep(0.05)  # polling the child's log file, bounded by fail_after
    return found[1]
