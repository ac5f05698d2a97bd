"""The README's walk-through pastes as written: its marked bash blocks run, in order, against a real server."""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import pytest
import trio

from commhub_lib.runtime.server import ServerHandle

pytestmark = pytest.mark.subprocess

ROOT = Path(__file__).resolve().parents[1]
MARK = "<!-- walk-through:"


def walkthrough_blocks(text: str) -> list[str]:
    """The ```bash blocks that directly follow a walk-through marker."""
    return re.findall(re.escape(MARK) + r"[^\n]*\n```bash\n(.*?)\n```", text, flags=re.S)


@pytest.mark.skipif(not (shutil.which("curl") and shutil.which("jq")), reason="the walk-through needs curl and jq")
async def test_readme_walkthrough_runs_as_written(server: ServerHandle) -> None:
    blocks = walkthrough_blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    assert len(blocks) >= 2, "the README lost its marked walk-through blocks"
    script = "set -eo pipefail\n" + "\n".join(blocks)
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMMHUB_")}
    env["COMMHUB_URL"] = server.url  # the block's HUB=${COMMHUB_URL:-http://localhost:9200}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # `commhub` of this install
    with trio.fail_after(60):
        done = await trio.run_process(["bash", "-c", script], capture_stdout=True, capture_stderr=True, check=False,
                                      env=env, cwd=ROOT)
    out, err = done.stdout.decode(), done.stderr.decode()
    assert done.returncode == 0, f"exit {done.returncode}\nstdout:\n{out}\nstderr:\n{err}"
    lines = out.splitlines()
    assert '"alias":"coder-1"' in out  # report_status answered
    assert "Run the test suite" in lines  # the agent read its task
    assert lines[lines.index("Run the test suite") + 2:][:4] == ["delivered", "running", "replied", "42 passed"]
    assert re.search(r"^coder-1\s+idle", out, re.M)  # `commhub status`
    assert re.search(r"^task \S+ sent to coder-1 \(online\)", out, re.M)  # `commhub send`
    assert "changelog" in out and "Run the test suite" in out  # `commhub tasks`
    assert re.search(r"^status\s+replied", out, re.M)  # `commhub task $TASK`
