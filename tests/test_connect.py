"""`commhub connect` tells the operator how to start the agent so that CommHub wakes it, and keeps the agent's
token (COMMHUB_AGENT_TOKEN) apart from the operator's (COMMHUB_TOKEN)."""

from __future__ import annotations

import httpx
import pytest
from cli_support import cli_env, run_cli
from conftest import mcp_call, register

from commhub_lib.runtime.server import ServerHandle

pytestmark = pytest.mark.subprocess


async def test_connect_prints_the_launch_line_that_wakes_each_client(server: ServerHandle,
                                                                     client: httpx.AsyncClient) -> None:
    boss = await register(client)
    env = cli_env(server.url, boss.token)
    claude = await run_cli("connect", "--client", "claude", "--alias", "rev", env=env)
    assert claude.code == 0, claude.err
    assert "\nclaude --dangerously-load-development-channels server:commhub\n" in claude.out
    assert "~/.claude.json" in claude.out and "channelsEnabled" in claude.out  # the gates a newcomer meets
    for agent in ("codex", "gemini"):
        shown = await run_cli("connect", "--client", agent, "--alias", f"{agent}-1", env=env)
        assert shown.code == 0, shown.err
        assert f"\ncommhub run {agent} --alias {agent}-1 --url {server.url}\n" in shown.out
    gemini = (await run_cli("connect", "--client", "gemini", "--alias", "g2", "--json", env=env)).json()
    assert gemini["launch"]["command"] == f"commhub run gemini --alias g2 --url {server.url}"
    assert "--yolo" in gemini["launch"]["note"] and "trustedFolders" in gemini["launch"]["note"]
    # The agent's token is only ever named COMMHUB_AGENT_TOKEN, and it is the alias's.
    assert gemini["config"]["env"] == {"COMMHUB_AGENT_TOKEN": gemini["token"]}
    headers = gemini["config"]["content"]["mcpServers"]["commhub"]["headers"]
    assert headers == {"Authorization": "Bearer $COMMHUB_AGENT_TOKEN"}
    assert (await mcp_call(client, gemini["token"], "whoami"))["structuredContent"]["alias"] == "g2"
    for shown in (claude.out, repr(gemini)):
        assert not any(use in shown for use in ("COMMHUB_TOKEN=", "$COMMHUB_TOKEN", "${COMMHUB_TOKEN}",
                                                 '"COMMHUB_TOKEN"'))
