"""Issue 17, storage items: storage bounded per network (3), backup cannot hurt the live database (7), file
modes (8). Each test is named after its item."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import apsw
import httpx
import pytest
import trio
from cli_support import cli_env, run_cli, run_cli_sync
from conftest import create_token, mcp_call, own_server, register, tool, tool_error
from test_dashboard import Browser, chrome, chrome_available, log_in, page  # noqa: F401 (fixtures)

from commhub_lib import db as dbmod
from commhub_lib.db import Database
from commhub_lib.ids import now_text, now_ts
from commhub_lib.runtime.server import ServerHandle
from commhub_lib.service.jobs import prune_events
from commhub_lib.service.retention import apply_retention
from commhub_lib.store import events as event_store
from commhub_lib.store import sessions as session_store


def _recount_sql() -> str:
    """The migration's own recount (a full scan): what the triggers must always agree with."""
    migration = (dbmod.MIGRATIONS_DIR / "0006_network_usage.sql").read_text(encoding="utf-8")
    start = migration.index("SELECT network_id, sum(t) AS text_bytes")
    return migration[start:migration.index("GROUP BY network_id)", start)] + "GROUP BY network_id"


def _count(db: Database, sql: str) -> int:
    row = db.query_one(sql)
    assert row is not None
    return int(row["n"])


def _used_bytes(db: Database) -> int:
    """Bytes of pages in use (WAL included, free pages left out)."""
    con = db.con
    return (con.pragma("page_count") - con.pragma("freelist_count")) * con.pragma("page_size")


def _counters(db: Database) -> dict[str, tuple[int, int]]:
    """The kept counters of the networks that hold something (every network has a row, from its creation)."""
    return {r["network_id"]: (r["text_bytes"], r["event_bytes"])
            for r in db.query("SELECT network_id, text_bytes, event_bytes FROM network_usage")
            if (r["text_bytes"], r["event_bytes"]) != (0, 0)}


def _counter(db: Database, network_id: str) -> tuple[int, int]:
    row = db.query_one("SELECT text_bytes, event_bytes FROM network_usage WHERE network_id = ?", (network_id,))
    assert row is not None, "every network has its usage row"
    return row["text_bytes"], row["event_bytes"]


def _recount(db: Database) -> dict[str, tuple[int, int]]:
    return {r["network_id"]: (r["text_bytes"], r["event_bytes"]) for r in db.query(_recount_sql())}


def _add_aliases(db: Database, network_id: str, n: int) -> list[str]:
    aliases = [f"a{i:04d}" for i in range(n)]
    with db.write():
        for alias in aliases:
            session_store.insert_session(db, network_id, alias, f"r-{alias}", None, "idle", now_text(), now_ts())
    return aliases


# --- 3a: a broadcast's body once ------------------------------------------------------------------------------

async def test_h17_03_broadcast_body_is_stored_once_not_per_recipient(server: ServerHandle,
                                                                      client: httpx.AsyncClient) -> None:
    account = await register(client)
    db = server.hub.db
    aliases = _add_aliases(db, account.network_id, 1000)
    text = "€x" * 20_000 + "\n\u2028\"end\""  # 60 KB of UTF-8, with characters JSON escapes
    before = _used_bytes(db)
    r = await client.post("/api/broadcast", headers=account.auth, json={"content": text})
    assert r.status_code == 200, r.text
    assert r.json()["recipients"] == 1000
    grown = _used_bytes(db) - before
    # Before: the text was in each of the 1,000 SSE events (~62 MB). Now: once, plus small rows.
    assert grown < 2 * 1024 * 1024, f"one 60 KB broadcast to 1,000 aliases grew the database by {grown} bytes"
    assert db.query("SELECT count(*) AS n FROM bodies") == [{"n": 1}]

    # Every replay still carries the whole text, exactly as the live push did.
    for row in event_store.events_after(db, account.network_id, aliases[7], 0, 10):
        data = json.loads(row["data"])
        assert data["type"] == "broadcast" and data["content"] == text and data["from"] == account.username
    rows = event_store.network_events_after(db, account.network_id, 0, 1000)
    assert len(rows) == 1000 and all(json.loads(r["data"])["content"] == text for r in rows)
    ids = {json.loads(r["data"])["message_id"] for r in rows}
    assert len(ids) == 1000  # each recipient's own message id
    # Through a real SSE replay too.
    async with client.stream("GET", f"/events/{aliases[3]}?network_id={account.network_id}",
                             headers={**account.auth, "Last-Event-ID": "0"}) as stream:
        buffer = ""
        with trio.fail_after(10):
            async for chunk in stream.aiter_text():
                buffer += chunk
                if "event: broadcast" in buffer and buffer.endswith("\n\n"):
                    break
    line = next(x for x in buffer.split("\n") if x.startswith("data: ") and "broadcast" in x)
    assert json.loads(line[len("data: "):])["content"].startswith("€x€x")


# --- 3b: quota per network, send rate per token -----------------------------------------------------------------

async def test_h17_03_network_byte_quota_answers_409_naming_the_setting(tmp_path: Path) -> None:
    async with own_server(tmp_path, "quota", max_network_bytes=300_000) as srv, \
            httpx.AsyncClient(base_url=srv.url, timeout=30) as client:
        owner = await register(client)
        agent = await create_token(client, owner, alias="w1")
        await tool(client, agent, "report_status", {"alias": "w1"})
        chunk = "q" * 50_000
        sent = 0
        while True:
            r = await client.post("/api/messages", headers=owner.auth, json={"to": "w1", "content": chunk})
            if r.status_code != 200:
                break
            sent += 1
            assert sent < 10, "the quota never answered"
        assert r.status_code == 409 and r.json()["error"] == "quota_exceeded", r.text
        assert "COMMHUB_MAX_NETWORK_BYTES" in r.json()["message"]
        assert 2 <= sent <= 3  # each 50 KB text is kept twice (inbox item, SSE event)
        used = _count(srv.hub.db, "SELECT text_bytes + event_bytes AS n FROM network_usage")
        assert used <= 300_000
        # Over MCP: a tool error that names the setting; broadcasts and tasks too.
        err = await tool_error(client, agent, "send_message", {"to": "w1", "content": chunk})
        assert err["error"] == "quota_exceeded" and "COMMHUB_MAX_NETWORK_BYTES" in err["message"]
        err = await tool_error(client, agent, "send_task", {"to": "w1", "content": chunk})
        assert err["error"] == "quota_exceeded"
        # A broadcast's text is kept once (not twice, nor per recipient): one more fits, the next does not.
        r = await client.post("/api/broadcast", headers=owner.auth, json={"content": chunk})
        assert r.status_code == 200, r.text
        r = await client.post("/api/broadcast", headers=owner.auth, json={"content": chunk})
        assert r.status_code == 409 and r.json()["error"] == "quota_exceeded"
        # Small texts still fit; another network is not touched by this one's quota.
        assert (await client.post("/api/messages", headers=owner.auth, json={"to": "w1", "content": "hi"})
                ).status_code == 200
        other = await register(client)
        await tool(client, other.network_token, "report_status", {"alias": "o1"})
        r = await client.post("/api/messages", headers=other.auth, json={"to": "o1", "content": chunk})
        assert r.status_code == 200, r.text


async def test_h17_03_send_rate_by_bytes_answers_429_with_retry_after(tmp_path: Path) -> None:
    async with own_server(tmp_path, "rate", send_bytes_per_minute=100_000) as srv, \
            httpx.AsyncClient(base_url=srv.url, timeout=30) as client:
        owner = await register(client)
        a1 = await create_token(client, owner, alias="w1")
        a2 = await create_token(client, owner, alias="w2")
        await tool(client, a1, "report_status", {"alias": "w1"})
        await tool(client, a2, "report_status", {"alias": "w2"})
        big = "r" * 60_000
        assert (await tool(client, a1, "send_message", {"to": "w2", "content": big}))["ok"]
        big = "s" * 60_000  # other content: the same again would be the loop guard's duplicate, never stored
        err = await tool_error(client, a1, "send_message", {"to": "w2", "content": big})
        assert err["error"] == "rate_limited" and "COMMHUB_SEND_BYTES_PER_MINUTE" in err["message"]
        # REST with the same token: 429 with Retry-After, and nothing was stored.
        before = _count(srv.hub.db, "SELECT count(*) AS n FROM messages")
        r = await client.post("/api/messages", headers={"Authorization": f"Bearer {a1}"},
                              json={"to": "w2", "content": big})
        assert r.status_code == 429 and r.json()["error"] == "rate_limited", r.text
        assert int(r.headers["Retry-After"]) >= 1 and "COMMHUB_SEND_BYTES_PER_MINUTE" in r.json()["message"]
        assert _count(srv.hub.db, "SELECT count(*) AS n FROM messages") == before
        # A broadcast is counted once, not per recipient; other tokens have their own budget.
        assert (await tool(client, a2, "broadcast", {"content": big}))["recipients"] == 1
        r = await client.post("/api/broadcast", headers=owner.auth, json={"content": big})
        assert r.status_code == 200, r.text


async def test_h17_03_usage_counters_follow_every_write_and_delete(server: ServerHandle,
                                                                   client: httpx.AsyncClient) -> None:
    db = server.hub.db
    owner = await register(client)
    a1 = await create_token(client, owner, alias="w1")
    await tool(client, a1, "report_status", {"alias": "w1"})
    await tool(client, owner.network_token, "report_status", {"alias": "boss"})
    await tool(client, owner.network_token, "send_message", {"to": "w1", "content": "héllo " * 100})
    task = await tool(client, owner.network_token, "send_task", {"to": "w1", "content": "do it", "title": "t",
                                                                 "context": "ctx " * 50})
    await tool(client, a1, "send_reply", {"task_id": task["task_id"], "content": "done: " + "x" * 999,
                                          "status": "done"})
    await tool(client, a1, "broadcast", {"content": "all " * 300})
    task2 = await tool(client, owner.network_token, "send_task", {"to": "w1", "content": "another"})
    r = await client.post(f"/api/tasks/{task2['task_id']}/cancel", headers=owner.auth, json={"reason": "no"})
    assert r.status_code == 200
    counters = _counters(db)
    assert counters == _recount(db) and counters[owner.network_id][0] > 3000
    # Deletes (what retention does, and a cascade) bring them down by what went.
    with db.write():
        db.execute("DELETE FROM messages WHERE kind = 'broadcast'")
        db.execute("DELETE FROM events WHERE event = 'broadcast'")
    assert _counters(db) == _recount(db)
    assert db.query("SELECT count(*) AS n FROM bodies") == [{"n": 0}]
    other = await register(client)
    await tool(client, other.network_token, "report_status", {"alias": "solo"})
    await tool(client, other.network_token, "send_message", {"to": "solo", "content": "me"})
    with db.write():
        db.execute("DELETE FROM networks WHERE network_id = ?", (other.network_id,))
    assert other.network_id not in _counters(db)
    assert db.query_one("SELECT count(*) AS n FROM network_usage WHERE network_id = ?", (other.network_id,)) == {"n": 0}
    assert _counters(db) == _recount(db)


def test_h17_03_migration_counts_what_an_old_database_holds(tmp_path: Path) -> None:
    path = str(tmp_path / "old.db")
    old = apsw.Connection(path)
    steps = dbmod.migration_steps()
    with old:
        for n in sorted(s for s in steps if s < 6):
            old.execute(steps[n])
        old.pragma("user_version", 5)
        old.execute("INSERT INTO users VALUES ('u', 'p', 'p', NULL, 'x', 'admin', 't', 't');"
                    "INSERT INTO networks(network_id, name, owner_id, created_at, updated_at) VALUES ('n', 'n', 'u',"
                    " 't', 't');"
                    "INSERT INTO bodies(content) VALUES ('shared text');"
                    "INSERT INTO messages(message_id, network_id, from_name, to_name, kind, content, created_at,"
                    " created_ts, body_id) VALUES ('m1', 'n', 'a', 'b', 'broadcast', '', 't', 1, 1),"
                    " ('m2', 'n', 'a', 'c', 'broadcast', '', 't', 1, 1),"
                    " ('m3', 'n', 'a', 'c', 'message', 'plain', 't', 1, NULL);"
                    "INSERT INTO events(network_id, alias, event, data, created_at) VALUES ('n', 'c', 'x', '{}', 't');")
    old.close()
    db = Database(path)
    try:
        assert db.query("SELECT network_id FROM bodies") == [{"network_id": "n"}]
        counters = _counters(db)
        assert counters == _recount(db)
        assert counters["n"] == (3 * 200 + len("plain") + len("shared text"), 100 + 2)
    finally:
        db.close()


# --- 3c: the operator sees usage --------------------------------------------------------------------------------

@pytest.mark.subprocess
async def test_h17_03_usage_over_rest_and_cli_for_owners_admins_and_the_system_admin(
        server: ServerHandle, client: httpx.AsyncClient) -> None:
    admin = await register(client)  # the first user: system admin
    owner = await register(client)
    await tool(client, owner.network_token, "report_status", {"alias": "w1"})
    await tool(client, owner.network_token, "send_message", {"to": "w1", "content": "z" * 5000})
    url = f"/api/networks/{owner.network_id}/usage"
    r = await client.get(url, headers=owner.auth)
    assert r.status_code == 200, r.text
    usage = r.json()
    assert usage["network_id"] == owner.network_id and usage["bytes"] == usage["text_bytes"] + usage["event_bytes"]
    assert usage["text_bytes"] > 5000 and usage["event_bytes"] > 5000 and usage["aliases"] == 1
    assert usage["max_network_bytes"] == server.hub.settings.max_network_bytes and usage["percent"] is not None
    assert (await client.get(url, headers=admin.auth)).status_code == 200
    invite = (await client.post(f"/api/networks/{owner.network_id}/invite", headers=owner.auth,
                                json={"role": "member"})).json()["invite_code"]
    member = await register(client)
    assert (await client.post("/api/networks/join", headers=member.auth,
                              json={"invite_code": invite})).status_code == 200
    r = await client.get(url, headers=member.auth)
    assert r.status_code == 403 and r.json()["error"] == "insufficient_role"
    stranger = await register(client)
    assert (await client.get(url, headers=stranger.auth)).status_code == 404

    run = await run_cli("network", "usage", owner.network_id, "--json", env=cli_env(server.url, owner.token))
    assert run.code == 0, run.err
    assert run.json()["bytes"] == usage["bytes"]
    run = await run_cli("network", "usage", env=cli_env(server.url, owner.token))
    assert run.code == 0 and owner.network_id in run.out and "of 1.0 GiB" in run.out, run.out + run.err
    run = await run_cli("network", "usage", owner.network_id, env=cli_env(server.url, member.token))
    assert run.code != 0 and "insufficient_role" in run.err + run.out


async def test_h17_03_retention_and_event_pruning_decrease_the_counters(server: ServerHandle,
                                                                        client: httpx.AsyncClient) -> None:
    hub = server.hub
    db = hub.db
    owner = await register(client)
    await tool(client, owner.network_token, "report_status", {"alias": "w1"})
    for _ in range(5):
        await tool(client, owner.network_token, "send_message", {"to": "w1", "content": "k" * 10_000})
    task = await tool(client, owner.network_token, "send_task", {"to": "w1", "content": "t" * 20_000})
    await tool(client, owner.network_token, "ack_inbox", {"all": True})  # read: retention may take them
    await tool(client, owner.network_token, "report_completion", {"task_id": task["task_id"], "result": "r" * 9000})
    full = _counter(db, owner.network_id)
    with db.write():
        db.execute("UPDATE messages SET created_ts = 1000")
        db.execute("UPDATE tasks SET updated_at = '2000-01-01 00:00:00'")
        db.execute("UPDATE events SET created_at = '2000-01-01 00:00:00'")
    hub.settings = dataclasses.replace(hub.settings, message_retention_days=1.0, task_retention_days=1.0)
    done = await apply_retention(hub)
    assert done["messages"] >= 5 and done["tasks"] == 1
    after_messages = _counter(db, owner.network_id)
    # The messages, the task (its text) and its completion (its result) went; the counters say so.
    assert after_messages[0] <= full[0] - 5 * 10_000 - 20_000 - 9000
    assert after_messages == _recount(db).get(owner.network_id, (0, 0))
    assert await prune_events(hub) >= 5
    after_events = _counter(db, owner.network_id)
    assert after_events[1] <= full[1] - 5 * 10_000 and after_events == _recount(db).get(owner.network_id, (0, 0))
    usage = (await client.get(f"/api/networks/{owner.network_id}/usage", headers=owner.auth)).json()
    assert usage["bytes"] == sum(after_events)


# --- 7: backup cannot hurt the live database --------------------------------------------------------------------

@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.subprocess
@pytest.mark.slow
def test_h17_07_backup_refuses_the_live_database_files(tmp_path: Path, umask_022: None) -> None:
    live = tmp_path / "live" / "hub.db"
    live.parent.mkdir()
    db = Database(str(live))
    with db.write():
        db.execute("INSERT INTO users VALUES ('u', 'p', 'p', NULL, 'x', 'admin', 't', 't')")
    # Keep it open (as a server would): its -wal and -shm exist.
    assert Path(f"{live}-wal").exists() and Path(f"{live}-shm").exists()
    wal_before = Path(f"{live}-wal").read_bytes()
    link_dir = tmp_path / "elsewhere"
    link_dir.symlink_to(live.parent)
    (tmp_path / "alias.db").symlink_to(live)
    targets = [str(live), f"{live}-wal", f"{live}-shm", f"{live}-journal", f"{live}.lock",
               str(link_dir / "hub.db-wal"), str(tmp_path / "alias.db"), str(link_dir / "hub.db")]
    try:
        for target in targets:
            for extra in ((), ("--force",)):
                run = run_cli_sync("backup", target, "--db", str(live), *extra)
                assert run.code == 2, (target, run.out, run.err)
                assert "refusing" in run.err and "live database" in run.err, run.err
        # A target whose work file would be the database's -wal: the database named "x.partial".
        odd = tmp_path / "x.partial"
        Database(str(odd)).close()
        run = run_cli_sync("backup", str(tmp_path / "x"), "--db", str(odd))
        assert run.code == 2 and "refusing" in run.err, run.err
        assert Path(f"{live}-wal").read_bytes() == wal_before and Path(f"{live}-shm").exists()
        assert db.query("SELECT username FROM users") == [{"username": "p"}]
        assert db.con.pragma("integrity_check") == "ok"
        # A good target: written 0600 whatever the umask, also over an existing 0644 file with --force.
        good = tmp_path / "copy.db"
        run = run_cli_sync("backup", str(good), "--db", str(live))
        assert run.code == 0, run.err
        assert stat.S_IMODE(good.stat().st_mode) == 0o600
        other = tmp_path / "world.db"
        other.write_bytes(b"")
        other.chmod(0o644)
        run = run_cli_sync("backup", str(other), "--db", str(live), "--force")
        assert run.code == 0, run.err
        assert stat.S_IMODE(other.stat().st_mode) == 0o600
        check = apsw.Connection(str(other), flags=apsw.SQLITE_OPEN_READONLY)
        assert check.execute("SELECT username FROM users").get == "p"
        check.close()
    finally:
        db.close()


# --- 8: file modes ---------------------------------------------------------------------------------------------

async def test_h17_08_serve_creates_its_files_0600_and_warns_about_a_readable_database(
        tmp_path: Path, umask_022: None, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="commhub")
    async with own_server(tmp_path, "fresh") as srv, httpx.AsyncClient(base_url=srv.url, timeout=30) as client:
        owner = await register(client)
        await mcp_call(client, owner.network_token, "report_status", {"alias": "w1"})
        path = srv.hub.settings.db  # a plain path in tmp_path (no symlink): its lock is <path>.lock
        for name in (path, f"{path}-wal", f"{path}-shm", f"{path}.lock"):
            assert stat.S_IMODE(os.stat(name).st_mode) == 0o600, name
    assert not [r for r in caplog.records if "readable by other users" in r.getMessage()]

    exposed = tmp_path / "exposed.db"
    Database(str(exposed)).close()
    exposed.chmod(0o644)
    async with own_server(tmp_path, "exposed"):
        pass
    warnings = [r.getMessage() for r in caplog.records if "readable by other users" in r.getMessage()]
    assert len(warnings) == 1 and str(exposed) in warnings[0] and "chmod 600" in warnings[0]


@pytest.mark.skipif(not chrome_available(), reason="chromium and chromium-driver are not installed")
@pytest.mark.browser
async def test_h17_03_dashboard_shows_the_network_storage_to_owners_only(
        page: Browser, client: httpx.AsyncClient) -> None:  # noqa: F811 (the page fixture)
    owner = await register(client)
    await tool(client, owner.network_token, "report_status", {"alias": "w1"})
    await tool(client, owner.network_token, "send_message", {"to": "w1", "content": "s" * 3000})
    used = (await client.get(f"/api/networks/{owner.network_id}/usage", headers=owner.auth)).json()
    await log_in(page, owner)
    await page.open_view("network")
    await page.wait_for(lambda d: "KiB" in d.find_element("id", "usage").text, "the storage table")
    text = await page.run(lambda d: d.find_element("id", "usage").text)
    assert "1.0 GiB" in text and f"{used['bytes'] / 1024:.1f} KiB" in text, text
    assert await page.run(lambda d: d.find_element("id", "usage-card").is_displayed())
    # A plain member is not offered it (the endpoint would answer 403).
    invite = (await client.post(f"/api/networks/{owner.network_id}/invite", headers=owner.auth,
                                json={"role": "member"})).json()["invite_code"]
    member = await register(client)
    assert (await client.post("/api/networks/join", headers=member.auth,
                              json={"invite_code": invite})).status_code == 200
    await page.run(lambda d: d.execute_script("sessionStorage.clear()"))
    await log_in(page, member)
    await page.run(lambda d: d.execute_script(
        "const s = document.getElementById('network-select'); s.value = arguments[0];"
        " s.dispatchEvent(new Event('change'))", owner.network_id))
    await page.open_view("network")
    await page.wait_for(lambda d: owner.username in d.find_element("id", "members").text, "the owner's network")
    assert not await page.run(lambda d: d.find_element("id", "usage-card").is_displayed())
