"""/api/status and /api/stats show every session as presence has it, whichever way the listing is built.

SQLite builds the /api/status records; a session with a live stream (known only to the broker, in memory) is
corrected in Python. Both must give what the presence rules say: online while it has a live stream, or while it
is not stored offline and made a tool call within the presence timeout; shown offline otherwise, idle when it is
online but stored offline; `held_by` names what keeps it online (docs/presence.md). Checked here against those
rules applied row by row, with every status filter and page.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

import httpx
import trio

from commhub_lib.runtime.server import ServerHandle
from commhub_lib.service.sessions import held_by, is_online, write_due_presence
from tests.conftest import create_token, register, tool

FIELDS = ("resume_id", "alias", "status", "agent", "model", "task", "progress", "last_seen_at", "network_id",
          "node_id", "created_at", "retired_at")


def expected(server: ServerHandle, network_ids: list[str]) -> list[dict[str, Any]]:
    """The /api/status records by the presence rules, one session at a time."""
    hub = server.hub
    rows = hub.db.query("SELECT * FROM sessions WHERE network_id IN (" + ",".join("?" * len(network_ids)) + ")"
                        " ORDER BY network_id, alias", tuple(network_ids))
    out = []
    for row in rows:
        record = {k: row[k] for k in FIELDS}
        streams = hub.broker.stream_count(row["network_id"], row["alias"])
        online = is_online(hub, row, streams)
        record["status"] = ("idle" if row["status"] == "offline" else row["status"]) if online else "offline"
        record.update(online=online, streams=streams, held_by=held_by(hub, row))
        out.append(record)
    return out


async def check_listing(server: ServerHandle, client: httpx.AsyncClient, headers: dict[str, str],
                        network_ids: list[str]) -> None:
    """Every filter and several pages of /api/status, and /api/stats, against the rules."""
    want = expected(server, network_ids)
    r = await client.get("/api/status", headers=headers)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json"), r.text
    got = r.json()
    assert [s for s in got["sessions"] if s not in want] == [], [s for s in want if s not in got["sessions"]]
    assert got == {"ok": True, "sessions": want}
    for status in ("idle", "working", "offline"):
        shown = [s for s in want if s["status"] == status]
        assert (await client.get(f"/api/status?status={status}", headers=headers)).json()["sessions"] == shown
        page = await client.get(f"/api/status?status={status}&limit=2&offset=1", headers=headers)
        assert page.json()["sessions"] == shown[1:3], status
    for offset in (0, 2, 5, 50):
        page = await client.get(f"/api/status?limit=3&offset={offset}", headers=headers)
        assert page.json()["sessions"] == want[offset:offset + 3]
    stats = (await client.get("/api/stats", headers=headers)).json()["sessions"]
    offline = sum(1 for s in want if not s["online"])
    assert stats == {"total": len(want), "online": len(want) - offline, "offline": offline}


async def test_status_and_stats_follow_the_presence_rules(server: ServerHandle, client: httpx.AsyncClient) -> None:
    account = await register(client)
    second = await client.post("/api/networks", headers=account.auth, json={"name": "second-net"})
    assert second.status_code == 200, second.text
    nets = [account.network_id, second.json()["network_id"]]
    tokens = {}
    for net in nets:
        for alias in ("busy", "calm", "gone", "lapsed", "streamed", "streamed-busy"):
            tokens[(net, alias)] = token = await create_token(client, account, alias, alias=alias, network_id=net)
            await tool(client, token, "report_status", {
                "status": "working" if "busy" in alias else "idle", "task": "t" if "busy" in alias else None,
                "agent": "claude-code", "model": "m", "progress": 40 if "busy" in alias else None})
    db = server.hub.db
    with db.write():  # stored offline; silent past the timeout; stored offline and silent, but streaming soon
        db.execute("UPDATE sessions SET status = 'offline' WHERE alias IN ('gone', 'streamed')")
        db.execute("UPDATE sessions SET last_seen_ts = last_seen_ts - 10000, last_call_ts = last_call_ts - 10000"
                   " WHERE alias IN ('lapsed', 'streamed', 'streamed-busy')")
    agent = {"Authorization": f"Bearer {tokens[(nets[0], 'calm')]}"}

    # No live stream: SQLite builds the whole page.
    assert {s["status"] for s in expected(server, nets)} == {"idle", "working", "offline"}
    await check_listing(server, client, account.auth, nets)
    await check_listing(server, client, agent, nets[:1])

    # Live streams on two aliases of the first network: those records are corrected (online, idle/working).
    async with AsyncExitStack() as stack:
        for alias in ("streamed", "streamed-busy"):
            response = await stack.enter_async_context(client.stream(
                "GET", f"/events/{alias}", params={"token": tokens[(nets[0], alias)]}))
            assert response.status_code == 200
            lines = response.aiter_lines()
            stack.push_async_callback(lines.aclose)  # (dropping the iterator would close the stream)
            with trio.fail_after(10):
                await lines.__anext__()  # the preamble: the stream is registered
        # Opening a stream is a sign of life, stored by the presence job within PRESENCE_WRITE_SECONDS: store it now,
        # so the job cannot refresh last_seen after the UPDATE below (it did, on a loaded box).
        write_due_presence(server.hub)
        assert not server.hub.broker.presence_due
        with db.write():  # make both lapsed again, one stored offline
            db.execute("UPDATE sessions SET last_seen_ts = last_seen_ts - 10000, last_call_ts = last_call_ts - 10000,"
                       " status = CASE alias WHEN 'streamed' THEN 'offline' ELSE status END"
                       " WHERE alias IN ('streamed', 'streamed-busy') AND network_id = ?", (nets[0],))
        live = {s["alias"]: s for s in expected(server, nets[:1]) if s["streams"]}
        assert set(live) == {"streamed", "streamed-busy"}
        assert live["streamed"]["status"] == "idle" and live["streamed-busy"]["status"] == "working"
        await check_listing(server, client, account.auth, nets)
        await check_listing(server, client, agent, nets[:1])
