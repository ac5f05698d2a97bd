"""Presence of stream opens: an open stores nothing by itself when its agent already holds the alias; the stale
presence it finds is stored by the presence writer of the root nursery, for every open of that moment in one
transaction (docs/performance.md#opening-streams: one COMMIT per GET /mcp open before). The stream keeps the
alias online meanwhile, and whatever is still due when the writer ends (shutdown) is stored then."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
import trio
from test_shutdown_streams import WAIT, _network, agent_tokens, counting_writes, open_streams

from commhub_lib.broker import Broker
from commhub_lib.config import Settings
from commhub_lib.db import Database
from commhub_lib.service import sessions
from commhub_lib.service.hub import Hub
from commhub_lib.store import sessions as session_store
from tests.conftest import own_server


async def test_opens_of_known_offline_agents_write_nothing_until_one_round_stores_them_all(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fails on the old code: each of the 10 opens wrote its session in a transaction of its own."""
    # The test runs the presence job's round itself: the job's own (every 0.5 s) would otherwise store the opens
    # first when the opens take that long (a loaded box, parallel workers), and the round below find none.
    monkeypatch.setattr(sessions, "PRESENCE_WRITE_SECONDS", 3600.0)
    async with trio.open_nursery() as outer:
        async with own_server(tmp_path, "due", sweep_seconds=3600.0) as server:
            db, broker = server.hub.db, server.hub.broker
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
                tokens = await agent_tokens(client, 10)
                first = await open_streams(outer, server.port, tokens, 1)  # the claims (new sessions: written)
                net = _network(db)
                for alias in tokens:
                    broker.close_alias_streams(net, alias, "test")
                with trio.fail_after(WAIT):
                    for s in first:
                        await s.ended.wait()
                # Silent long ago and stored offline, as the sweeper leaves them.
                with db.write():
                    db.execute("UPDATE sessions SET status = 'offline', last_seen_ts = 1.0")
                before = time.time()
                with counting_writes(db) as writes:
                    second = await open_streams(outer, server.port, tokens, 1)
                    at_open = writes[0]
                    # Online at once: the streams say so, whatever is stored.
                    r = await client.get("/api/status", headers={"Authorization": f"Bearer {tokens['agent-0']}"})
                    assert r.status_code == 200, r.text
                    assert {(x["alias"], x["online"], x["status"]) for x in r.json()["sessions"]} == {
                        (alias, True, "idle") for alias in tokens}
                    assert sessions.write_due_presence(server.hub) == 10
                    in_round = writes[0] - at_open
                assert at_open == 0, f"{at_open} write transactions for 10 stream opens"
                assert in_round == 1
                assert not broker.presence_due
                rows = session_store.list_sessions(db, [net])
                assert all(r["status"] == "idle" and r["last_seen_ts"] >= before - 1 for r in rows), rows
    assert all(s.ended_cleanly() for s in second)


def _hub(tmp_path: Path) -> tuple[Hub, str]:
    """A hub on its own database with one session, stored offline and silent since long ago."""
    settings = Settings(db=str(tmp_path / "writer.db"), port=0)
    db = Database(settings.db)
    with db.write():
        db.execute("INSERT INTO users(user_id, username, display_name, password_hash, role, created_at, updated_at)"
                   " VALUES ('u1', 'owner', 'owner', 'x', 'user', 'now', 'now')")
        db.execute("INSERT INTO networks(network_id, name, owner_id, created_at, updated_at)"
                   " VALUES ('net1', 'n', 'u1', 'now', 'now')")
        db.execute("INSERT INTO tokens(token_id, token_hash, kind, user_id, network_id, name, created_at)"
                   " VALUES ('t1', 'h', 'network', 'u1', 'net1', 'a', 'now')")
        session_store.insert_session(db, "net1", "agent-0", "sess1", "t1", "offline", "then", 1.0)
    return Hub(settings, db, Broker(8)), "net1"


async def test_the_writer_stores_what_is_due_each_round_and_once_more_when_it_ends(
        tmp_path: Path, autojump_clock: trio.abc.Clock) -> None:
    hub, net = _hub(tmp_path)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(sessions.write_stream_presence, hub)
            hub.broker.presence_due.add((net, "agent-0"))
            await trio.sleep(sessions.PRESENCE_WRITE_SECONDS * 1.5)  # virtual time: one round
            row = session_store.get_session(hub.db, net, "agent-0")
            assert row is not None and row["status"] == "idle" and row["last_seen_ts"] > 1.0
            assert not hub.broker.presence_due
            with hub.db.write():  # offline again; due again, and the server stops before the next round
                hub.db.execute("UPDATE sessions SET status = 'offline', last_seen_ts = 1.0")
            hub.broker.presence_due.add((net, "agent-0"))
            nursery.cancel_scope.cancel()
        row = session_store.get_session(hub.db, net, "agent-0")
        assert row is not None and row["status"] == "idle" and row["last_seen_ts"] > 1.0  # nothing lost
        assert not hub.broker.presence_due
    finally:
        hub.db.close()
