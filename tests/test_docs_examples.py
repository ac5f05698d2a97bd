"""The examples of docs/schedules.md, docs/attachments.md and docs/a2a.md run as written against a real server: the
blocks marked `<!-- doc-example: ... -->`, and the A2A SDK script, with only the variables they name set (as
tests/test_readme.py does for the README's walk-through)."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

import httpx
import pytest
import trio

from commhub_lib.runtime.server import ServerHandle
from tests.conftest import Account, create_token, register, tool

pytestmark = pytest.mark.subprocess

ROOT = Path(__file__).resolve().parents[1]
MARK = "<!-- doc-example:"
DEADLINE = 60


def marked_blocks(doc: str) -> list[str]:
    """The ```sh / ```bash blocks that directly follow a doc-example marker in docs/<doc>."""
    text = (ROOT / "docs" / doc).read_text(encoding="utf-8")
    return re.findall(re.escape(MARK) + r"[^\n]*\n```(?:sh|bash)\n(.*?)\n```", text, flags=re.S)


def python_block(doc: str) -> str:
    """The first ```python block of docs/<doc>."""
    text = (ROOT / "docs" / doc).read_text(encoding="utf-8")
    found = re.search(r"```python\n(.*?)\n```", text, flags=re.S)
    assert found, f"docs/{doc} lost its python example"
    return found.group(1)


def doc_env(server: ServerHandle, **values: str) -> dict[str, str]:
    """No COMMHUB_* from outside; this install's `commhub` first on PATH; the variables the docs name."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMMHUB_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["COMMHUB_URL"] = server.url
    env.update(values)
    return env


async def run_bash(script: str, env: dict[str, str], cwd: Path) -> str:
    """Run a block with bash -e; its stdout (fails the test with both streams when it fails)."""
    with trio.fail_after(DEADLINE):
        done = await trio.run_process(["bash", "-c", "set -eo pipefail\n" + script], capture_stdout=True,
                                      capture_stderr=True, check=False, env=env, cwd=cwd)
    out, err = done.stdout.decode(), done.stderr.decode()
    assert done.returncode == 0, f"exit {done.returncode}\nstdout:\n{out}\nstderr:\n{err}"
    return out


def json_values(text: str) -> list[dict[str, object]]:
    """The JSON objects curl printed one after another (its answers end without a newline)."""
    decoder, values, at = json.JSONDecoder(), [], 0
    while (at := text.find("{", at)) >= 0:
        value, at = decoder.raw_decode(text, at)
        values.append(value)
    return values


async def connect_agents(client: httpx.AsyncClient, owner: Account, *aliases: str) -> dict[str, str]:
    """Agents that have connected once (their first tool call); their tokens."""
    tokens = {}
    for alias in aliases:
        tokens[alias] = await create_token(client, owner, name=alias, alias=alias)
        await tool(client, tokens[alias], "report_status", {"alias": alias, "status": "idle"})
    return tokens


async def test_the_schedules_doc_example_runs_as_written(server: ServerHandle, client: httpx.AsyncClient,
                                                         tmp_path: Path) -> None:
    owner = await register(client)
    await connect_agents(client, owner, "reviewer", "ops", "deployer")
    blocks = marked_blocks("schedules.md")
    assert len(blocks) == 1, "docs/schedules.md lost its marked example"
    out = await run_bash(blocks[0], doc_env(server, COMMHUB_TOKEN=owner.token), tmp_path)
    assert "cron 0 9 * * 1-5 (Europe/Berlin)" in out and "every 3600 s" in out, out
    assert "once at 2030-12-24T08:00:00Z" in out, out  # 09:00 in Berlin, shown in UTC
    listed = (await client.get("/api/schedules", headers=owner.auth)).json()["schedules"]
    assert sorted(s["to_name"] for s in listed) == ["deployer", "ops", "reviewer"]


@pytest.mark.skipif(not shutil.which("curl"), reason="the example uses curl")
async def test_the_attachments_upload_examples_run_as_written(server: ServerHandle, client: httpx.AsyncClient,
                                                              tmp_path: Path) -> None:
    owner = await register(client)
    (tmp_path / "fix.patch").write_text("--- a\n+++ b\n")
    (tmp_path / "screenshot.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 32)
    blocks = marked_blocks("attachments.md")
    assert len(blocks) == 1, "docs/attachments.md lost its marked example"
    script = blocks[0].replace("http://127.0.0.1:9200", server.url)
    out = await run_bash(script, doc_env(server, TOKEN=owner.token), tmp_path)
    answers = json_values(out)
    assert [(a["filename"], a["content_type"]) for a in answers] == [("fix.patch", "text/x-patch"),
                                                                     ("screenshot.png", "image/png")], out
    assert all(a["ok"] and a["network_id"] == owner.network_id for a in answers)


@pytest.mark.skipif(not shutil.which("curl"), reason="the example uses curl")
async def test_the_a2a_doc_examples_run_as_written(server: ServerHandle, client: httpx.AsyncClient,
                                                   tmp_path: Path) -> None:
    pytest.importorskip("a2a", reason="the SDK example needs a2a-sdk (a test extra)")
    owner = await register(client)
    tokens = await connect_agents(client, owner, "reviewer")
    blocks = marked_blocks("a2a.md")
    assert len(blocks) == 1, "docs/a2a.md lost its marked example"
    env = doc_env(server, HUB=server.url, NET=owner.network_id, UTOK=owner.token)
    out = await run_bash(blocks[0], env, tmp_path)
    assert json.loads(out)["enabled"] is True, out

    # The SDK script, with a partner's token; the agent answers the task it gets, as an agent would.
    partner = await create_token(client, owner, name="partner")
    (tmp_path / "try_a2a.py").write_text(python_block("a2a.md"))
    result: dict[str, str] = {}

    async def run_script() -> None:
        with trio.fail_after(DEADLINE):
            done = await trio.run_process([sys.executable, "try_a2a.py"], capture_stdout=True, capture_stderr=True,
                                          check=False, env={**env, "NTOK": partner}, cwd=tmp_path)
        result.update(code=str(done.returncode), out=done.stdout.decode(), err=done.stderr.decode())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_script)
        with trio.fail_after(DEADLINE):
            while True:  # the task the script sent, once it has arrived
                inbox = await tool(client, tokens["reviewer"], "get_inbox", {})
                task_ids = [i["task_id"] for i in inbox["items"] if i.get("content") == "Review PR 42"]
                if task_ids:
                    break
                await trio.sleep(0.05)
        await tool(client, tokens["reviewer"], "send_reply", {"task_id": task_ids[0], "status": "done",
                                                              "content": "LGTM"})
    assert result["code"] == "0", result
    assert "TASK_STATE_SUBMITTED" in result["out"] and 'text: "LGTM"' in result["out"], result["out"]
    assert result["out"].rstrip().count("TASK_STATE_COMPLETED") == 1, result["out"]
