"""MCP sessions: capped per token (idle ones evicted within the token, live ones never), and a lost session
never takes another agent's alias (two agents sharing one token stay apart)."""

from __future__ import annotations

from pathlib import Path

import httpx
from conftest import create_token, own_server, register
from test_mcp_protocol import call, call_error, initialize

from commhub_lib.mcp.sessions import SessionPool
from commhub_lib.mcp.tools import McpSession


async def test_sessions_are_capped_per_token_and_evicted_within_it(tmp_path: Path) -> None:
    async with own_server(tmp_path, "cap", mcp_sessions_per_token=3) as handle, \
            httpx.AsyncClient(base_url=handle.url, timeout=30) as client:
        acct = await register(client)
        other = await create_token(client, acct, name="other")
        theirs, _ = await initialize(client, other)
        mine = [(await initialize(client, acct.network_token))[0] for _ in range(3)]
        pool = handle.hub.mcp_sessions
        for sid in mine[:2]:  # idle for longer than the presence timeout: they may make room
            pool._by_token[pool.get(sid).token_id][sid] -= 1000
        mine += [(await initialize(client, acct.network_token))[0] for _ in range(2)]
        assert [sid in pool for sid in mine] == [False, False, True, True, True]  # the idle ones went
        assert [pool.ended_reason(sid) for sid in mine[:2]] == ["session_evicted"] * 2
        assert theirs in pool and pool.count_for_token(handle.hub.mcp_sessions.get(theirs).token_id) == 1
        assert len(pool) == 4


async def test_a_burst_of_sessions_cannot_evict_another_tokens(tmp_path: Path) -> None:
    async with own_server(tmp_path, "total", mcp_sessions_per_token=50, mcp_max_sessions=5) as handle, \
            httpx.AsyncClient(base_url=handle.url, timeout=30) as client:
        acct = await register(client)
        victim = await create_token(client, acct, name="victim")
        sid, _ = await initialize(client, victim)
        await call(client, victim, "report_status", {"alias": "victim"}, session_id=sid)
        for _ in range(20):
            await initialize(client, acct.network_token)
        assert sid in handle.hub.mcp_sessions and len(handle.hub.mcp_sessions) == 5
        assert (await call(client, victim, "whoami", session_id=sid))["alias"] == "victim"


def test_pool_uses_least_recently_used_order() -> None:
    pool = SessionPool(per_token=2, total=100, idle_seconds=0)  # every session idle: each may be evicted
    for sid in ("a", "b"):
        pool.add(McpSession(sid, "tok", "2025-11-25"))
    assert pool.use("a") is not None  # "b" is now the least recently used
    assert pool.add(McpSession("c", "tok", "2025-11-25")) == ["b"]
    assert "a" in pool and "b" not in pool and "c" in pool and pool.ended_reason("b") == "session_evicted"
    assert pool.pop("a") is not None and pool.pop("a") is None and len(pool) == 1


async def test_lost_session_of_a_shared_token_does_not_take_the_other_alias(tmp_path: Path) -> None:
    async with own_server(tmp_path, "lost", mcp_sessions_per_token=2) as handle, \
            httpx.AsyncClient(base_url=handle.url, timeout=30) as client:
        acct = await register(client)
        token = acct.network_token
        sid_one, _ = await initialize(client, token)
        sid_two, _ = await initialize(client, token)
        await call(client, token, "report_status", {"alias": "one"}, session_id=sid_one)
        await call(client, token, "report_status", {"alias": "two"}, session_id=sid_two)  # the token's last alias
        for sid in (sid_one, sid_two):  # both forgotten, as by a restart of the hub
            handle.hub.mcp_sessions.pop(sid)
            if handle.hub.shared is not None:  # PostgreSQL keeps sessions in the database too: forgotten there also
                with handle.hub.db.write():
                    handle.hub.db.execute("DELETE FROM mcp_sessions WHERE session_id = ?", (sid,))
        assert sid_one not in handle.hub.mcp_sessions and sid_two not in handle.hub.mcp_sessions
        # The agent behind session one comes back with its old id: it is not "two".
        assert (await call(client, token, "whoami", session_id=sid_one))["alias"] is None
        text = await call_error(client, token, "send_message", {"to": "one", "content": "as whom?"},
                                session_id=sid_one)
        assert "report_status" in text
        assert "alias" in await call_error(client, token, "report_status", {"status": "working"}, session_id=sid_one)
        # Saying who it is restores it; the other agent is untouched.
        assert (await call(client, token, "report_status", {"alias": "one"}, session_id=sid_one))["alias"] == "one"
        assert (await call(client, token, "whoami", session_id=sid_one))["alias"] == "one"
        # A brand-new session of that token is no one either until it reports.
        fresh, _ = await initialize(client, token)
        assert (await call(client, token, "whoami", session_id=fresh))["alias"] is None
        # Session-less calls (the reference's bare curl) keep the token's last alias.
        assert (await call(client, token, "whoami"))["alias"] == "one"


async def test_lost_session_of_a_single_alias_token_keeps_its_alias(client: httpx.AsyncClient) -> None:
    acct = await register(client)
    solo = await create_token(client, acct, name="solo")
    await call(client, solo, "report_status", {"alias": "solo"})
    assert (await call(client, solo, "whoami", session_id="mcp_from-before-a-restart"))["alias"] == "solo"
    bound = await create_token(client, acct, name="bound", alias="pinned")
    assert (await call(client, bound, "whoami", session_id="mcp_never-issued"))["alias"] == "pinned"
