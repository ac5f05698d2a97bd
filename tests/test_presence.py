"""Presence that means "can work now" (docs/presence.md): an alias is online while a stream holds it (a runner, a
channel, a plain SSE stream) or it made a tool call within the presence timeout; a client that only connects and
lists tools (a health check such as `claude mcp list`) is not online, and a stream that closes leaves the alias
offline at once when nothing else holds it. `held_by` says which (`runner`, `channel`, `stream`, `polling`, null).

Everything runs against a real server: raw HTTP, the official MCP Python SDK, the real `claude mcp list`, the real
`commhub run claude` and `commhub status` as processes.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, cast

import apsw
import httpx
import pytest
import trio
from cli_support import cli_env, run_cli
from conftest import Account, create_token, register, tool
from test_mcp_sdk import sdk_session
from test_mcp_versions import _listen
from test_run_claude import ALIAS, RunnerProcess
from test_wake_mcp import _headers, _initialize

from commhub_lib import db as dbmod
from commhub_lib.db import Database
from commhub_lib.runtime.server import ServerHandle
from commhub_lib.service import jobs
from commhub_lib.vocabulary import CHANNEL, POLLING, RUNNER, STREAM
from tests.fakes.anthropic import FakeAnthropic
from tests.test_dashboard import (  # noqa: F401 (fixtures)
    Browser,
    chrome,
    chrome_available,
    log_in,
    page,
    still_same_page,
)

CLAUDE = Path(__file__).resolve().parent / "agent_clis" / "node_modules" / ".bin" / "claude"
WAIT = 15.0


async def record(client: httpx.AsyncClient, account: Account, alias: str) -> dict[str, Any] | None:
    """The alias's /api/status record as its person sees it (None: no session yet)."""
    r = await client.get("/api/status", headers=account.auth)
    assert r.status_code == 200, r.text
    return next((s for s in r.json()["sessions"] if s["alias"] == alias), None)


async def shown(client: httpx.AsyncClient, account: Account, alias: str) -> tuple[bool, str | None] | None:
    """(online, held_by) of the alias as /api/status shows it (None: no session yet)."""
    found = await record(client, account, alias)
    return None if found is None else (found["online"], found["held_by"])


async def until_shown(client: httpx.AsyncClient, account: Account, alias: str, want: tuple[bool, str | None],
                      within: float = WAIT) -> None:
    """Poll /api/status (bounded) until the alias is shown as `want` (a stream's open or close lands on the
    server's own tasks)."""
    deadline = trio.current_time() + within
    while (got := await shown(client, account, alias)) != want:
        assert trio.current_time() < deadline, f"{alias}: shown {got}, want {want}"
        await trio.sleep(0.02)


def silence(server: ServerHandle, alias: str) -> None:
    """Make the alias's last tool call and sign of life long past (as if it went quiet an hour ago)."""
    db = server.hub.db
    with db.write():
        db.execute("UPDATE sessions SET last_call_ts = last_call_ts - 3600, last_seen_ts = last_seen_ts - 3600"
                   " WHERE alias = ?", (alias,))


async def health_check_without_stream(client: httpx.AsyncClient, token: str) -> None:
    """What a health check sends over POST: initialize, notifications/initialized, tools/list, ping."""
    sid = await _initialize(client, token)
    headers = {"Authorization": f"Bearer {token}", "Mcp-Session-Id": sid, "Mcp-Protocol-Version": "2025-11-25"}
    r = await client.post("/mcp", headers=headers, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
    assert r.status_code == 202, r.text
    for n, method in enumerate(("tools/list", "ping")):
        r = await client.post("/mcp", headers=headers, json={"jsonrpc": "2.0", "id": 10 + n, "method": method})
        assert r.status_code == 200 and "result" in r.json(), r.text
    assert (await client.delete("/mcp", headers=headers)).status_code == 204


@asynccontextmanager
async def held_stream(client: httpx.AsyncClient, method: str, url: str, **kwargs: Any) -> AsyncIterator[None]:
    """A stream held open for the block, once its first frame arrived (it is registered then)."""
    async with client.stream(method, url, **kwargs) as response:
        assert response.status_code == 200, (await response.aread()).decode()
        lines = cast(AsyncGenerator[str, None], response.aiter_lines())  # an async generator: aclose() ends it
        try:
            with trio.fail_after(WAIT):
                await lines.__anext__()
            yield
        finally:
            await lines.aclose()


# --- health checks are not presence --------------------------------------------------------------------------

async def test_initialize_and_tools_list_alone_never_bring_an_agent_online(server: ServerHandle,
                                                                           client: httpx.AsyncClient) -> None:
    account = await register(client)
    token = await create_token(client, account, "w", alias="worker")
    await health_check_without_stream(client, token)
    assert await record(client, account, "worker") is None  # nothing claimed it: no session at all
    # An agent that worked before and went quiet: a health check does not bring it back.
    await tool(client, token, "report_status", {"status": "idle"})
    assert await shown(client, account, "worker") == (True, POLLING)
    silence(server, "worker")
    assert await shown(client, account, "worker") == (False, None)
    await health_check_without_stream(client, token)
    assert await shown(client, account, "worker") == (False, None)


async def test_the_sdks_connect_and_list_leaves_the_alias_offline_and_a_tool_call_makes_it_polling(
        server: ServerHandle, client: httpx.AsyncClient) -> None:
    """The official SDK opens GET /mcp by itself and sends DELETE on close: connecting and listing tools leaves
    nothing online behind; one tool call keeps the alias online (polling) for the presence timeout."""
    account = await register(client)
    token = await create_token(client, account, "w", alias="worker")
    async with sdk_session(server, token) as session:
        assert {t.name for t in (await session.list_tools()).tools} >= {"get_inbox", "report_status"}
    await until_shown(client, account, "worker", (False, None))
    assert server.hub.broker.stream_count(account.network_id, "worker") == 0
    async with sdk_session(server, token) as session:
        result = await session.call_tool("get_inbox", {})
        assert not result.is_error, result
    await until_shown(client, account, "worker", (True, POLLING))
    found = await record(client, account, "worker")
    assert found is not None and found["status"] == "idle" and found["streams"] == 0


@pytest.mark.subprocess
@pytest.mark.skipif(not CLAUDE.exists(), reason="the pinned Claude Code is not installed (npm ci in tests/agent_clis)")
async def test_claude_mcp_list_does_not_leave_the_agent_online(tmp_path: Path, server: ServerHandle,
                                                                client: httpx.AsyncClient) -> None:
    """The real `claude mcp list` (initialize, initialized, GET /mcp, tools/list, then it exits): it reports the
    hub connected, and the alias is not online afterwards. Fails on the old code: the closing GET /mcp stored a
    sign of life that kept the alias online for the whole presence timeout."""
    account = await register(client)
    token = await create_token(client, account, "w", alias="worker")
    home = tmp_path / "home"
    home.mkdir()
    # A user-scope server entry (a project's .mcp.json would wait for approval).
    (home / ".claude.json").write_text(json.dumps({"mcpServers": {"commhub": {
        "type": "http", "url": server.url + "/mcp", "headers": {"Authorization": f"Bearer {token}"}}}}))
    env = cli_env(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), XDG_STATE_HOME=str(home / ".state"),
                  XDG_CACHE_HOME=str(home / ".cache"), DISABLE_AUTOUPDATER="1", DISABLE_TELEMETRY="1",
                  DISABLE_ERROR_REPORTING="1", CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
                  ANTHROPIC_API_KEY="sk-ant-fake", ANTHROPIC_BASE_URL="http://127.0.0.1:9")
    opened = server.hub.broker.streams_opened
    with trio.fail_after(90):
        done = await trio.run_process([str(CLAUDE), "mcp", "list"], env=env, cwd=str(tmp_path), check=False,
                                      capture_stdout=True, capture_stderr=True)
    out = done.stdout.decode() + done.stderr.decode()
    assert done.returncode == 0 and "commhub" in out and "Connected" in out, out
    # Its health check held the alias's GET /mcp stream for a moment (so the session exists), then let go.
    assert server.hub.broker.streams_opened > opened
    await until_shown(client, account, "worker", (False, None))
    found = await record(client, account, "worker")
    assert found is not None and found["status"] == "offline" and found["last_seen_at"], found


GEMINI = CLAUDE.parent / "gemini"


@pytest.mark.subprocess
@pytest.mark.slow
@pytest.mark.skipif(not GEMINI.exists(), reason="the pinned Gemini CLI is not installed (npm ci in tests/agent_clis)")
async def test_gemini_mcp_list_does_not_leave_the_agent_online(tmp_path: Path, server: ServerHandle,
                                                                client: httpx.AsyncClient) -> None:
    """The real `gemini mcp list` (initialize, initialized, GET /mcp, ping): connected, and not online after."""
    account = await register(client)
    token = await create_token(client, account, "w", alias="worker")
    home, work = tmp_path / "home", tmp_path / "work"
    (home / ".gemini").mkdir(parents=True)
    work.mkdir()
    (home / ".gemini" / "settings.json").write_text(json.dumps({
        "mcpServers": {"commhub": {"httpUrl": server.url + "/mcp", "headers": {"Authorization": f"Bearer {token}"}}},
        "security": {"auth": {"selectedType": "gemini-api-key"}}}))
    # Gemini CLI ignores the MCP servers of a folder it does not trust.
    (home / ".gemini" / "trustedFolders.json").write_text(json.dumps({str(work): "TRUST_FOLDER"}))
    env = cli_env(HOME=str(home), GEMINI_API_KEY="fake", GOOGLE_GEMINI_BASE_URL="http://127.0.0.1:9")
    opened = server.hub.broker.streams_opened
    with trio.fail_after(90):
        done = await trio.run_process([str(GEMINI), "mcp", "list"], env=env, cwd=str(work), check=False,
                                      capture_stdout=True, capture_stderr=True)
    out = done.stdout.decode() + done.stderr.decode()
    assert done.returncode == 0 and "commhub" in out and "Connected" in out, out
    assert server.hub.broker.streams_opened > opened
    await until_shown(client, account, "worker", (False, None))


# --- what holds an alias --------------------------------------------------------------------------------------

async def test_an_sse_stream_holds_the_alias_and_its_close_is_offline_at_once(server: ServerHandle,
                                                                              client: httpx.AsyncClient) -> None:
    account = await register(client)
    token = await create_token(client, account, "w", alias="worker")
    async with held_stream(client, "GET", "/events/worker", params={"token": token}):
        await until_shown(client, account, "worker", (True, STREAM))
    await until_shown(client, account, "worker", (False, None))
    # With a tool call inside the presence timeout, the close leaves it online by polling instead.
    await tool(client, token, "get_inbox", {})
    async with held_stream(client, "GET", "/events/worker", params={"token": token}):
        await until_shown(client, account, "worker", (True, STREAM))
    await until_shown(client, account, "worker", (True, POLLING))


async def test_a_runner_marked_stream_shows_runner_above_the_others(server: ServerHandle,
                                                                    client: httpx.AsyncClient) -> None:
    """`?holder=runner` (what `commhub run` sends) is the strongest holder; the alias stays online while any
    stream holds it, and goes offline when the last one closes."""
    account = await register(client)
    token = await create_token(client, account, "w", alias="worker")
    async with AsyncExitStack() as plain:
        await plain.enter_async_context(held_stream(client, "GET", "/events/worker", params={"token": token}))
        async with held_stream(client, "GET", "/events/worker", params={"token": token, "holder": RUNNER}):
            await until_shown(client, account, "worker", (True, RUNNER))
            found = await record(client, account, "worker")
            assert found is not None and found["streams"] == 2
        await until_shown(client, account, "worker", (True, STREAM))  # the runner left; the plain stream holds it
    await until_shown(client, account, "worker", (False, None))
    r = await client.get("/events/worker", params={"token": token, "holder": "robot"})
    assert r.status_code == 400 and r.json()["error"] == "validation_error" and "holder" in r.json()["message"]


async def test_get_mcp_holds_the_alias_as_a_channel(server: ServerHandle, client: httpx.AsyncClient) -> None:
    """GET /mcp for a bound alias and for one claimed with report_status on the session: held by `channel`;
    closed, offline at once unless a tool call keeps it online (polling)."""
    account = await register(client)
    bound = await create_token(client, account, "w", alias="worker")
    sid = await _initialize(client, bound)
    async with held_stream(client, "GET", "/mcp", headers=_headers(bound, sid)):
        await until_shown(client, account, "worker", (True, CHANNEL))
    await until_shown(client, account, "worker", (False, None))

    free = await create_token(client, account, "c")
    sid = await _initialize(client, free)
    await tool(client, free, "report_status", {"alias": "claimer", "status": "working"}, session_id=sid)
    async with held_stream(client, "GET", "/mcp", headers=_headers(free, sid)):
        await until_shown(client, account, "claimer", (True, CHANNEL))
        found = await record(client, account, "claimer")
        assert found is not None and found["status"] == "working"
    await until_shown(client, account, "claimer", (True, POLLING))
    silence(server, "claimer")
    await until_shown(client, account, "claimer", (False, None))


async def test_a_2026_listen_stream_holds_the_alias_as_a_channel(server: ServerHandle,
                                                                 client: httpx.AsyncClient) -> None:
    account = await register(client)
    token = await create_token(client, account, "w", alias="worker")
    async with await _listen(client, token) as response:
        assert response.status_code == 200
        lines = response.aiter_lines()
        with trio.fail_after(WAIT):
            await lines.__anext__()
        await until_shown(client, account, "worker", (True, CHANNEL))
        await lines.aclose()
    await until_shown(client, account, "worker", (False, None))


async def test_get_all_status_and_the_sweeper_agree_with_the_listing(server: ServerHandle,
                                                                     client: httpx.AsyncClient) -> None:
    """get_all_status carries held_by too; the sweeper stores offline a session whose only sign of life was a
    stream (no tool call), and leaves a streaming one alone."""
    account = await register(client)
    token = await create_token(client, account, "w", alias="worker")
    other = await create_token(client, account, "o", alias="other")
    await tool(client, other, "report_status", {"status": "idle"})
    async with held_stream(client, "GET", "/events/worker", params={"token": token}):
        listed = await tool(client, other, "get_all_status", {})
        assert {(s["alias"], s["held_by"]) for s in listed["sessions"]} == {("worker", STREAM), ("other", POLLING)}
        silence(server, "other")
        silence(server, "worker")
        assert await jobs.sweep_once(server.hub) == 1  # "other"; "worker" is held by its stream
        rows = {r["alias"]: r["status"] for r in server.hub.db.query("SELECT alias, status FROM sessions")}
        assert rows == {"worker": "idle", "other": "offline"}


# --- the runner and the CLI, as processes ---------------------------------------------------------------------

@pytest.mark.subprocess
@pytest.mark.skipif(not CLAUDE.exists(), reason="the pinned Claude Code is not installed (npm ci in tests/agent_clis)")
async def test_commhub_run_holds_the_alias_as_runner_and_offline_when_it_stops(tmp_path: Path, server: ServerHandle,
                                                                              client: httpx.AsyncClient) -> None:
    account = await register(client)
    token = await create_token(client, account, "worker", alias=ALIAS)
    fake = FakeAnthropic().start()
    runner = RunnerProcess(tmp_path, server.url, token, fake)
    try:
        await runner.start()
        await until_shown(client, account, ALIAS, (True, RUNNER), within=60)
        await runner.stop()
        await until_shown(client, account, ALIAS, (False, None), within=60)
    finally:
        await runner.stop()
        fake.stop()


@pytest.mark.subprocess
async def test_commhub_status_shows_what_holds_each_agent(server: ServerHandle, client: httpx.AsyncClient) -> None:
    account = await register(client)
    token = await create_token(client, account, "w", alias="worker")
    await tool(client, await create_token(client, account, "q", alias="quiet"), "report_status", {"status": "idle"})
    silence(server, "quiet")
    await tool(client, token, "get_inbox", {})
    run = await run_cli("status", env=cli_env(server.url, account.token))
    assert run.code == 0, run.err
    lines = run.out.splitlines()
    assert "HELD BY" in lines[0], run.out
    assert any(line.split()[:3] == ["quiet", "offline", "-"] for line in lines), run.out
    assert any(line.split()[:3] == ["worker", "idle", POLLING] for line in lines), run.out


# --- the dashboard --------------------------------------------------------------------------------------------

@pytest.mark.browser
@pytest.mark.skipif(not chrome_available(), reason="chromium and chromium-driver are not installed")
async def test_the_agent_cards_say_what_holds_each_agent(page: Browser, server: ServerHandle,  # noqa: F811
                                                        client: httpx.AsyncClient) -> None:
    account = await register(client)
    tokens = {alias: await create_token(client, account, alias, alias=alias)
              for alias in ("builder", "watcher", "poller", "gone")}
    for alias in ("poller", "gone"):
        await tool(client, tokens[alias], "report_status", {"status": "working", "task": f"{alias}'s work"})
    silence(server, "gone")

    def cards(d: Any) -> dict[str, tuple[str, str]]:
        found = {}
        for card in d.find_elements("css selector", ".session"):
            held = card.find_elements("css selector", '[data-testid="session-held-by"]')
            found[card.get_attribute("data-alias")] = (
                card.find_element("css selector", '[data-testid="session-status"]').text,
                held[0].text if held else "")
        return found

    async with AsyncExitStack() as streams:
        await streams.enter_async_context(held_stream(client, "GET", "/events/watcher",
                                                      params={"token": tokens["watcher"]}))
        await streams.enter_async_context(held_stream(client, "GET", "/events/builder",
                                                      params={"token": tokens["builder"], "holder": RUNNER}))
        await log_in(page, account)
        want = {
            "builder": ("idle", "held by runner"),
            "watcher": ("idle", "held by stream"),
            "poller": ("working", "held by polling"),
            "gone": ("offline", ""),
        }
        # Read through wait_for: a card re-rendered while it is read (every 10 s at least) is read again.
        await page.wait_for(lambda d: cards(d) == want, f"the cards {want}")
        shot = await page.screenshot("presence-cards")
        assert shot.exists()
    # The runner and the stream stop: their cards go offline without a reload.
    await page.wait_for(lambda d: cards(d).get("builder") == ("offline", "") and cards(d).get("watcher") == (
        "offline", ""), "the builder and the watcher offline")
    assert await still_same_page(page)


# --- the upgrade ----------------------------------------------------------------------------------------------

def test_migration_0017_starts_each_session_from_its_last_sign_of_life(tmp_path: Path) -> None:
    """A session online before the upgrade is not shown offline by it: its last call starts as its last seen."""
    path = str(tmp_path / "v16.db")
    old = apsw.Connection(path)
    with old:
        steps = dbmod.migration_steps()
        for step in sorted(n for n in steps if n < 17):
            old.execute(steps[step])
        old.pragma("user_version", max(n for n in steps if n < 17))
        old.execute("INSERT INTO users(user_id, username, display_name, password_hash, role, created_at, updated_at)"
                    " VALUES ('u_1', 'alice', 'Alice', 'x', 'admin', 't', 't')")
        old.execute("INSERT INTO networks(network_id, name, owner_id, created_at, updated_at)"
                    " VALUES ('net_1', 'default', 'u_1', 't', 't')")
        old.execute("INSERT INTO sessions(network_id, alias, resume_id, status, last_seen_at, last_seen_ts,"
                    " created_at) VALUES ('net_1', 'worker', 'r', 'idle', 't', 1234.5, 't')")
    old.close()
    database = Database(path)
    try:
        row = database.query_one("SELECT last_seen_ts, last_call_ts FROM sessions WHERE alias = 'worker'")
        assert row == {"last_seen_ts": 1234.5, "last_call_ts": 1234.5}
    finally:
        database.close()
