"""Issue 19 item 1 ("will it still run?": start_by, the status expired, queue position) and item 8 (small CLI
things), through the real server: REST, MCP with the official SDK, and the CLI as a subprocess."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import apsw
import httpx
import pytest
import trio
from cli_support import ROOT, cli_env, run_cli
from conftest import Account, create_token, mcp_call, own_server, register, tool, tool_error
from test_mcp_sdk import fails, ok, sdk_session

from commhub_lib import db as dbmod
from commhub_lib.db import Database
from commhub_lib.errors import Conflict
from commhub_lib.mcp import channel
from commhub_lib.runtime.server import ServerHandle
from commhub_lib.service import tasks as task_service
from commhub_lib.store import tasks as task_store


async def _agent(client: httpx.AsyncClient, account: Account, alias: str) -> str:
    token = await create_token(client, account, name=alias, alias=alias)
    await mcp_call(client, token, "report_status", {"alias": alias, "status": "idle", "agent": "test"})
    return token


async def _get_task(client: httpx.AsyncClient, account: Account, task_id: str) -> dict[str, Any]:
    r = await client.get(f"/api/tasks/{task_id}", headers=account.auth)
    assert r.status_code == 200, r.text
    return r.json()


async def _until_expired(client: httpx.AsyncClient, account: Account, task_id: str,
                         limit_seconds: float = 10) -> dict[str, Any]:
    """Poll GET /api/tasks/<id> until the task is expired (bounded)."""
    deadline = trio.current_time() + limit_seconds
    while (got := await _get_task(client, account, task_id))["task"]["status"] != "expired":
        assert trio.current_time() < deadline, got
        await trio.sleep(0.05)
    return got


async def _until_past(start_by: str) -> None:
    """Wait (bounded) until the wall clock is past a start_by: the condition is the time itself."""
    moment = datetime.fromisoformat(start_by.replace("Z", "+00:00"))
    deadline = trio.current_time() + 5
    while datetime.now(UTC) <= moment:
        assert trio.current_time() < deadline
        await trio.sleep(0.05)


async def _replies_to(client: httpx.AsyncClient, token: str) -> list[dict[str, Any]]:
    inbox = await tool(client, token, "get_inbox", {"limit": 50})
    return [i for i in inbox["items"] if i["kind"] == "reply"]


async def test_rest_start_within_seconds_expires_by_the_background_job(tmp_path: Path) -> None:
    async with own_server(tmp_path, "job", sweep_seconds=0.2) as server, \
            httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        boss = await register(client)
        sender = await _agent(client, boss, "planner")
        worker = await _agent(client, boss, "coder")
        r = await client.post("/api/tasks", headers={"Authorization": f"Bearer {sender}"},
                              json={"to": "coder", "content": "deploy the fix", "start_within_seconds": 1})
        assert r.status_code == 200, r.text
        sent = r.json()
        assert sent["start_by"].endswith("Z") and sent["queue_position"] == 1 and sent["ahead"] == []
        assert sent["recipient_online"] is True and sent["recipient_busy"] is False

        got = await _until_expired(client, boss, sent["task_id"])  # nobody fetched it: the job expired it
        assert got["task"]["start_by"] == sent["start_by"]
        assert got["queue_position"] is None and got["ahead"] == []
        assert [e["event"] for e in got["events"]] == ["delivered", "expired"]
        assert got["events"][-1]["actor"] == "hub"
        assert got["completion"]["status"] == "expired"

        # The sender is told with a reply naming `expired` ...
        replies = await _replies_to(client, sender)
        assert [(i["task_id"], i["status"]) for i in replies] == [(sent["task_id"], "expired")]
        assert "expired" in replies[0]["content"]
        told = channel.describe("new_reply", {"from": "coder", "status": "expired", "task_id": sent["task_id"],
                                              "message_id": replies[0]["message_id"]})
        assert "expired" in told and "never be started" in told and "carry on" not in told
        # ... and the recipient is never handed it, nor may it start it by replying.
        inbox = await tool(client, worker, "get_inbox")
        assert inbox["items"] == [] and inbox["open_tasks"] == []
        refused = await tool_error(client, worker, "send_reply", {"task_id": sent["task_id"], "status": "progress",
                                                                  "content": "on it"})
        assert refused["error"] == "task_final" and "expired" in refused["message"]
        assert (await _get_task(client, boss, sent["task_id"]))["task"]["status"] == "expired"
        stats = (await client.get("/api/stats", headers=boss.auth)).json()
        assert stats["tasks"]["expired"] == 1 and stats["tasks"]["delivered"] == 0


async def test_start_time_check_expires_a_task_the_job_has_not_reached(tmp_path: Path) -> None:
    # The job runs hourly here: only the check at start time can stop the task.
    async with own_server(tmp_path, "late", sweep_seconds=3600) as server, \
            httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        boss = await register(client)
        sender = await _agent(client, boss, "planner")
        worker = await _agent(client, boss, "coder")
        soon = await tool(client, sender, "send_task", {"to": "coder", "content": "run the migration",
                                                        "start_within_seconds": 1})
        later = await tool(client, sender, "send_task", {"to": "coder", "content": "write the notes",
                                                         "start_by": "1h"})
        await _until_past(soon["start_by"])
        assert (await _get_task(client, boss, soon["task_id"]))["task"]["status"] == "delivered"  # job not run

        inbox = await tool(client, worker, "get_inbox")
        assert [i["task_id"] for i in inbox["items"]] == [later["task_id"]]  # the expired one is not handed out
        assert [t["task_id"] for t in inbox["open_tasks"]] == [later["task_id"]]
        assert (await _get_task(client, boss, soon["task_id"]))["task"]["status"] == "expired"
        assert (await _get_task(client, boss, later["task_id"]))["task"]["status"] == "running"
        replies = await _replies_to(client, sender)
        assert [(i["task_id"], i["status"]) for i in replies] == [(soon["task_id"], "expired")]


async def test_ack_of_a_task_past_its_start_by_expires_it(tmp_path: Path) -> None:
    async with own_server(tmp_path, "ack", sweep_seconds=3600) as server, \
            httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        boss = await register(client)
        sender = await _agent(client, boss, "planner")
        worker = await _agent(client, boss, "coder")
        soon = await tool(client, sender, "send_task", {"to": "coder", "content": "x", "start_within_seconds": 1})
        await _until_past(soon["start_by"])
        acked = await tool(client, worker, "ack_inbox", {"ids": [soon["task_id"]]})
        assert acked["tasks_started"] == [] and acked["open_task_count"] == 0
        assert (await _get_task(client, boss, soon["task_id"]))["task"]["status"] == "expired"


async def test_rest_start_by_validation(server: ServerHandle, client: httpx.AsyncClient) -> None:
    boss = await register(client)
    await _agent(client, boss, "coder")
    past = (datetime.now(UTC) - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    for body, words in (({"start_by": past}, "already passed"),
                        ({"start_by": "1h", "start_within_seconds": 60}, "not both"),
                        ({"start_within_seconds": 0}, "start_within_seconds"),
                        ({"start_within_seconds": "60"}, "start_within_seconds")):
        r = await client.post("/api/tasks", headers=boss.auth, json={"to": "coder", "content": "c", **body})
        assert r.status_code == 400, (body, r.text)
        assert r.json()["error"] == "validation_error" and words in r.json()["message"], r.text
    when = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0)
    r = await client.post("/api/tasks", headers=boss.auth,
                          json={"to": "coder", "content": "c", "start_by": when.isoformat()})
    assert r.status_code == 200 and r.json()["start_by"] == when.strftime("%Y-%m-%dT%H:%M:%SZ"), r.text
    listed = (await client.get("/api/tasks", headers=boss.auth)).json()["tasks"]
    assert listed[0]["start_by"] == r.json()["start_by"]


async def test_queue_position_over_rest_and_the_official_mcp_sdk(server: ServerHandle,
                                                                 client: httpx.AsyncClient) -> None:
    boss = await register(client)
    sender = await create_token(client, boss, name="planner")
    worker = await create_token(client, boss, name="coder")
    async with sdk_session(server, sender) as a, sdk_session(server, worker) as b:
        await ok(a, "report_status", {"alias": "planner", "status": "idle"})
        await ok(b, "report_status", {"alias": "coder", "status": "idle"})
        first = await ok(a, "send_task", {"to": "coder", "content": "one"})
        second = await ok(a, "send_task", {"to": "coder", "content": "two"})
        urgent = await ok(a, "send_task", {"to": "coder", "content": "prod is down", "priority": "urgent",
                                           "start_by": "30m"})
        assert (first["queue_position"], second["queue_position"], urgent["queue_position"]) == (1, 2, 1)
        assert second["ahead"] == [first["task_id"]] and second["ahead_count"] == 1
        assert urgent["ahead"] == [] and urgent["recipient_online"] is True and urgent["recipient_busy"] is False

        got = await ok(a, "get_task", {"task_id": second["task_id"]})
        assert got["queue_position"] == 3 and got["ahead"] == [urgent["task_id"], first["task_id"]]
        assert got["ahead_count"] == 2 and got["recipient_online"] is True and got["recipient_busy"] is False
        rest = await _get_task(client, boss, second["task_id"])
        assert {k: rest[k] for k in ("queue_position", "ahead", "recipient_online", "recipient_busy")} == {
            "queue_position": 3, "ahead": [urgent["task_id"], first["task_id"]], "recipient_online": True,
            "recipient_busy": False}

        # The recipient starts the urgent one: it is busy now, and finishing it moves the queue on.
        await ok(b, "ack_inbox", {"ids": [urgent["task_id"]]})
        got = await ok(a, "get_task", {"task_id": second["task_id"]})
        assert got["recipient_busy"] is True and got["queue_position"] == 3
        await ok(b, "send_reply", {"task_id": urgent["task_id"], "status": "done", "content": "fixed"})
        got = await ok(a, "get_task", {"task_id": second["task_id"]})
        assert got["queue_position"] == 2 and got["ahead"] == [first["task_id"]] and got["recipient_busy"] is False
        done = await ok(a, "get_task", {"task_id": urgent["task_id"]})
        assert done["queue_position"] is None and done["task"]["start_by"] == urgent["start_by"]

        error = await fails(a, "send_task", {"to": "coder", "content": "x", "start_by": "1h",
                                             "start_within_seconds": 5})
        assert "not both" in error
        tools = {t.name: t for t in (await a.list_tools()).tools}
        assert {"start_by", "start_within_seconds"} <= set(tools["send_task"].input_schema["properties"])


async def test_openapi_describes_the_new_fields(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/openapi.json")).json()
    schemas = doc["components"]["schemas"]
    assert {"queue_position", "ahead", "recipient_busy"} <= set(schemas["TaskDetail"]["properties"])
    assert {"queue_position", "start_by"} <= set(schemas["TaskSent"]["properties"])
    assert "start_by" in schemas["Task"]["properties"]
    assert json.dumps(schemas).count("start_within_seconds") >= 1


# --- the CLI (subprocesses) -------------------------------------------------------------------------------------

async def _tail_lines(server: ServerHandle, token: str, *args: str, count: int = 1) -> list[str]:
    """Run `commhub tail ... --from-start` until it printed `count` lines, then stop it."""
    errors = tempfile.TemporaryFile()  # its stderr (the reconnects it reports), shown if it prints too little
    proc = await trio.lowlevel.open_process(
        [sys.executable, str(ROOT / "commhub.py"), "tail", *args, "--from-start"],
        env=cli_env(server.url, token, TZ="UTC"), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=errors)
    assert proc.stdout is not None
    buffer = b""
    try:
        with trio.move_on_after(30):
            while buffer.count(b"\n") < count:
                chunk = await proc.stdout.receive_some()
                if not chunk:
                    break
                buffer += chunk
    finally:
        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(10):
            await proc.wait()
        errors.seek(0)
        stderr = errors.read().decode(errors="replace")
        errors.close()
    assert buffer.count(b"\n") >= count, f"tail {args} printed {buffer!r} in 30 s; its stderr: {stderr}"
    return buffer.decode().splitlines()


@pytest.mark.subprocess
async def test_cli_tail_from_start_stamps_replayed_events_with_their_own_time(tmp_path: Path) -> None:
    # No sweeper round: its first one prunes events past the retention period, and the event below is made 6 years
    # old; a run slower than sweep_seconds (5 s, as on a loaded box) then found nothing to replay.
    async with own_server(tmp_path, "tail", sweep_seconds=3600.0) as server, \
            httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        boss = await register(client)
        sender = await _agent(client, boss, "planner")
        await _agent(client, boss, "coder")
        await tool(client, sender, "send_task", {"to": "coder", "content": "x", "title": "old one"})
        with server.hub.db.write():  # the event happened long ago (its stored time is what a replay sends)
            server.hub.db.execute("UPDATE events SET created_at = '2020-01-02 03:04:05'")
        line, = await _tail_lines(server, boss.token, "coder")
        assert line.startswith("2020-01-02 03:04:05 #") and '"old one"' in line, line
        record = json.loads((await _tail_lines(server, boss.token, "coder", "--json"))[0])
        assert record["at"] == "2020-01-02T03:04:05Z" and record["event"] == "new_task"
        network, = await _tail_lines(server, boss.token, "--network")
        assert network.startswith("2020-01-02 03:04:05 #"), network


@pytest.mark.subprocess
async def test_cli_send_start_by_task_and_the_token_error(tmp_path: Path) -> None:
    async with own_server(tmp_path, "cli", sweep_seconds=0.2) as server, \
            httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        boss = await register(client)
        worker = await _agent(client, boss, "coder")
        env = cli_env(server.url, boss.token)
        sent = await run_cli("send", "coder", "write the notes", "--start-by", "1h", "--json", env=env)
        assert sent.code == 0, sent.err
        task_id = sent.json()["task_id"]
        assert sent.json()["start_by"] and sent.json()["queue_position"] == 1
        shown = await run_cli("task", task_id, env=env)
        assert shown.code == 0 and "start_by" in shown.out and "queue: 1 of coder's open tasks" in shown.out, shown

        await mcp_call(client, worker, "get_inbox", {})
        await mcp_call(client, worker, "send_reply", {"task_id": task_id, "status": "done", "content": "All pass"})
        shown = await run_cli("task", task_id, env=env)
        completed = [line for line in shown.out.splitlines() if line.startswith("completed ")]
        assert len(completed) == 1 and completed[0].endswith(" s"), shown.out  # the duration ends its line
        assert "All pass" not in completed[0] and "All pass" in shown.out

        # --wait ends when the task expires (not at its timeout), as a refusal
        waited = await run_cli("send", "coder", "too late", "--start-by", "1", "--wait", "--timeout", "25",
                               env=env, limit_seconds=30)
        assert waited.code == 1 and "status expired" in waited.err, waited

        no_token = await run_cli("tasks", env=cli_env(server.url))
        assert no_token.code == 1 and "COMMHUB_TOKEN" in no_token.err and "--token" in no_token.err, no_token


# --- the migration (0010 rebuilds tasks) -------------------------------------------------------------------------

def test_migration_0010_keeps_tasks_counts_and_usage(tmp_path: Path) -> None:
    t = "2026-01-01 00:00:00"
    path = str(tmp_path / "v7.db")
    old = apsw.Connection(path)
    with old:
        for step in sorted(n for n in dbmod.migration_steps() if n <= 7):
            old.execute(dbmod.migration_steps()[step])
        old.pragma("user_version", 7)
        old.execute("INSERT INTO users(user_id, username, display_name, password_hash, role, created_at, updated_at)"
                    " VALUES ('u_1', 'alice', 'Alice', 'x', 'admin', ?, ?)", (t, t))
        old.execute("INSERT INTO networks(network_id, name, owner_id, created_at, updated_at)"
                    " VALUES ('net_1', 'default', 'u_1', ?, ?)", (t, t))
        for n, status in enumerate(("running", "replied", "delivered")):
            old.execute("INSERT INTO tasks(task_id, network_id, from_name, to_name, content, priority, status,"
                        " message_id, created_at, created_ts, updated_at, flag) VALUES (?, 'net_1', 'alice',"
                        " 'worker', 'do it', 'high', ?, ?, ?, ?, ?, ?)",
                        (f"t{n}", status, f"msg_{n}", t, n, t, "unanswered" if n == 0 else None))
    counts = list(old.execute("SELECT network_id, status, n FROM task_counts ORDER BY status"))
    usage = list(old.execute("SELECT network_id, text_bytes, event_bytes FROM network_usage"))
    old.close()

    database = Database(path)
    try:
        assert database.con.pragma("user_version") == dbmod.SCHEMA_VERSION
        rows = database.query("SELECT task_id, status, flag, start_by, start_by_ts FROM tasks ORDER BY rowid")
        assert rows == [{"task_id": "t0", "status": "running", "flag": "unanswered", "start_by": None,
                         "start_by_ts": None},
                        {"task_id": "t1", "status": "replied", "flag": None, "start_by": None, "start_by_ts": None},
                        {"task_id": "t2", "status": "delivered", "flag": None, "start_by": None,
                         "start_by_ts": None}]
        assert list(database.con.execute("SELECT network_id, status, n FROM task_counts ORDER BY status")) == counts
        kept = list(database.con.execute("SELECT network_id, text_bytes, event_bytes FROM network_usage"))
        assert usage and kept == usage
        with database.write():  # the new status is allowed, and the counting triggers work again
            database.execute("UPDATE tasks SET status = 'expired' WHERE task_id = 't2'")
        after = {r["status"]: r["n"] for r in database.query("SELECT status, n FROM task_counts")}
        assert after["expired"] == 1 and after["delivered"] == 0
        assert database.con.pragma("integrity_check") == "ok"
    finally:
        database.close()


async def test_a_report_on_a_task_read_before_its_start_by_and_stored_after_it_is_refused(tmp_path: Path) -> None:
    """The start and the start_by check are one statement: a task row read in time does not let a reply start
    the task once its start_by has passed (the reply is refused and the task expires)."""
    async with own_server(tmp_path, "race", sweep_seconds=3600) as server, \
            httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        boss = await register(client)
        sender = await _agent(client, boss, "planner")
        await _agent(client, boss, "coder")
        soon = await tool(client, sender, "send_task", {"to": "coder", "content": "x", "start_within_seconds": 1})
        row = task_store.get_task(server.hub.db, boss.network_id, soon["task_id"])
        assert row is not None and row["status"] == "delivered"
        await _until_past(soon["start_by"])
        stale = {**row, "start_by_ts": row["start_by_ts"] + 3600}  # as read while its start_by was ahead
        with pytest.raises(Conflict, match="expired"):
            task_service.reply_on_task(server.hub, boss.network_id, "coder", "agent", stale, "on it", "progress")
        assert (await _get_task(client, boss, soon["task_id"]))["task"]["status"] == "expired"
        replies = await _replies_to(client, sender)
        assert [(i["task_id"], i["status"]) for i in replies] == [(soon["task_id"], "expired")]
