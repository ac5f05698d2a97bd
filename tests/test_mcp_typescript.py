"""The official TypeScript MCP SDK (@modelcontextprotocol/sdk) against a real CommHub on port 0.

tests/ts_client/roundtrip.mjs drives two agents through the SDK's Client + StreamableHTTPClientTransport:
initialize, tools/list, report_status, send_task, get_inbox, send_reply, get_inbox, DELETE /mcp. Install its
pinned dependencies first with `npm ci --prefix tests/ts_client`; without node or those node_modules the test
is skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import trio
from conftest import create_token, register

from commhub_lib.mcp.protocol import SUPPORTED_VERSIONS
from commhub_lib.runtime.server import ServerHandle

pytestmark = pytest.mark.subprocess

TS_CLIENT = Path(__file__).resolve().parent / "ts_client"
SCRIPT = TS_CLIENT / "roundtrip.mjs"
TIMEOUT = 60


@pytest.fixture
def node() -> str:
    """The node executable; skips (a sync fixture, so pytest shows the reason) without node or the SDK install."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the TypeScript MCP SDK interop test needs Node.js >= 20")
    if not (TS_CLIENT / "node_modules").is_dir():
        pytest.skip("tests/ts_client/node_modules is missing: run `npm ci --prefix tests/ts_client` to install "
                    "@modelcontextprotocol/sdk")
    return node


def _pinned_sdk_version() -> str:
    return json.loads((TS_CLIENT / "package.json").read_text())["dependencies"]["@modelcontextprotocol/sdk"]


async def test_typescript_sdk_roundtrip(node: str, server: ServerHandle, client: httpx.AsyncClient) -> None:
    account = await register(client)
    token_a = await create_token(client, account, name="ts-agent-a")
    token_b = await create_token(client, account, name="ts-agent-b")
    env = {**os.environ, "COMMHUB_URL": server.url, "COMMHUB_TOKEN_A": token_a, "COMMHUB_TOKEN_B": token_b,
           "COMMHUB_ALIAS_A": "ts-alpha", "COMMHUB_ALIAS_B": "ts-beta"}
    started = time.monotonic()
    with trio.fail_after(TIMEOUT):
        proc = await trio.run_process([node, str(SCRIPT)], cwd=str(TS_CLIENT), env=env, check=False,
                                      stdin=subprocess.DEVNULL, capture_stdout=True, capture_stderr=True)
    elapsed = time.monotonic() - started
    stdout, stderr = proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
    assert proc.returncode == 0, f"roundtrip.mjs exited {proc.returncode} after {elapsed:.1f}s\n{stderr}\n{stdout}"

    lines = [line for line in stdout.splitlines() if line.strip()]
    assert lines, f"roundtrip.mjs printed no summary\n{stderr}"
    summary = json.loads(lines[-1])
    assert summary["ok"] is True
    assert summary["sdk_version"] == _pinned_sdk_version()
    # The SDK offers its latest version; the server answers it when supported (docs/mcp-versions.md).
    assert summary["protocol_version"] in SUPPORTED_VERSIONS
    assert summary["protocol_version"] == SUPPORTED_VERSIONS[0]
    assert summary["server"]["name"] == "commhub"
    assert summary["aliases"] == ["ts-alpha", "ts-beta"]
    assert summary["tools"] >= 15
    task_id = summary["task_id"]
    assert isinstance(task_id, str) and task_id
    assert summary["reply_received"] is True
    assert summary["reply_status"] == "done"
    assert summary["task_status"] == "replied"

    # DELETE /mcp from terminateSession() ended both SDK sessions on the server.
    assert len(summary["sessions"]) == 2
    for sid in summary["sessions"]:
        assert sid not in server.hub.mcp_sessions

    # Server side, over REST with the user token: the task ended replied.
    r = await client.get("/api/tasks", params={"from_name": "ts-alpha"}, headers=account.auth)
    assert r.status_code == 200, r.text
    tasks = {t["task_id"]: t for t in r.json()["tasks"]}
    assert task_id in tasks, r.json()
    task = tasks[task_id]
    assert task["status"] == "replied"
    assert (task["from_name"], task["to_name"]) == ("ts-alpha", "ts-beta")
