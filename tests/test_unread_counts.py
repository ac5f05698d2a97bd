"""The unread count kept per recipient (schema.sql, unread_counts) always equals a count(*) of the unread items.

inbox_count (every new_task event, report_status, get_inbox, ack_inbox) reads the kept count instead of counting
the backlog, so it must stay exact through every way an item is written, read, acked or deleted: sends of every
kind, acks by message id, by task id and of everything, retention pruning, a deleted network, and (below the
service) any sequence of store writes.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from commhub_lib.config import Settings
from commhub_lib.db import Database
from commhub_lib.runtime.server import ServerHandle
from commhub_lib.service.retention import apply_retention
from commhub_lib.store import messages as message_store
from commhub_lib.store import retention as retention_store
from tests.conftest import MakeDb, create_token, make_settings, mcp_call, register, seed_owner_and_networks, tool

DAY = 86400


def counted(db: Database) -> dict[tuple[str, str, str], int]:
    """The truth: unread items per recipient, counted."""
    return {(r["network_id"], r["to_name"], r["to_kind"]): r["n"] for r in db.query(
        "SELECT network_id, to_name, to_kind, count(*) AS n FROM messages WHERE read_at IS NULL GROUP BY 1, 2, 3")}


def kept(db: Database) -> dict[tuple[str, str, str], int]:
    """What the triggers keep (a recipient whose items were all read keeps a row with 0)."""
    return {(r["network_id"], r["to_name"], r["to_kind"]): r["n"]
            for r in db.query("SELECT network_id, to_name, to_kind, n FROM unread_counts") if r["n"] != 0}


def assert_exact(db: Database) -> None:
    """Kept counts equal counted ones, and unread_count answers the counted number for every recipient."""
    truth = counted(db)
    assert kept(db) == truth
    for (network_id, name, kind), n in truth.items():
        assert message_store.unread_count(db, network_id, name, kind) == n


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """The server of these tests prunes read items and ended tasks older than a day."""
    return make_settings(tmp_path, message_retention_days=1, task_retention_days=1)


async def send_task(client: httpx.AsyncClient, auth: dict[str, str], to: str, content: str) -> dict[str, Any]:
    r = await client.post("/api/tasks", headers=auth, json={"to": to, "content": content})
    assert r.status_code == 200, r.text
    return r.json()


def last_new_task_count(db: Database, network_id: str, alias: str) -> int:
    """inbox_count of the newest new_task event pushed to an alias."""
    row = db.query("SELECT data FROM events WHERE network_id = ? AND alias = ? AND event = 'new_task'"
                   " ORDER BY id DESC LIMIT 1", (network_id, alias))[0]
    return json.loads(row["data"])["inbox_count"]


async def test_kept_count_follows_sends_reads_acks_retention_and_deletion(server: ServerHandle,
                                                                           client: httpx.AsyncClient) -> None:
    db = server.hub.db
    account = await register(client)
    helper = await create_token(client, account, "helper")
    await tool(client, account.network_token, "report_status", {"alias": "worker"})
    await tool(client, helper, "report_status", {"alias": "helper"})
    net = account.network_id

    tasks = [await send_task(client, account.auth, "worker", f"job {i}") for i in range(4)]
    assert_exact(db)
    # Every new_task event carries the recipient's unread count at that moment.
    assert last_new_task_count(db, net, "worker") == 4
    r = await client.post("/api/messages", headers=account.auth, json={"to": "worker", "content": "hello"})
    assert r.status_code == 200, r.text
    r = await client.post("/api/broadcast", headers=account.auth, json={"content": "everyone"})
    assert r.status_code == 200, r.text
    await tool(client, helper, "send_message", {"to": "worker", "content": "from helper"})
    assert_exact(db)
    assert message_store.unread_count(db, net, "worker") == 7
    assert (await tool(client, account.network_token, "report_status", {"status": "idle"}))["inbox_count"] == 7

    # Reading the inbox changes nothing; acks by message id, by task id, and of everything each count down.
    inbox = await tool(client, account.network_token, "get_inbox", {"limit": 50})
    assert inbox["inbox_count"] == 7
    assert_exact(db)
    message_ids = [i["message_id"] for i in inbox["items"] if i["kind"] != "task"][:2]
    acked = await tool(client, account.network_token, "ack_inbox", {"message_ids": message_ids})
    assert acked["inbox_count"] == 5
    assert_exact(db)
    acked = await tool(client, account.network_token, "ack_inbox", {"ids": [tasks[0]["task_id"]]})
    assert acked["inbox_count"] == 4
    assert_exact(db)
    # The worker answers two tasks: the replies are unread items of the person (to_kind person).
    for t in tasks[:2]:
        await tool(client, account.network_token, "send_reply",
                   {"task_id": t["task_id"], "content": "done", "status": "done"})
    assert message_store.unread_count(db, net, account.username, "person") == 2
    assert_exact(db)
    # A cancelled task sends the worker a notice.
    r = await client.post(f"/api/tasks/{tasks[3]['task_id']}/cancel", headers=account.auth, json={})
    assert r.status_code == 200, r.text
    assert_exact(db)
    await send_task(client, account.auth, "worker", "one more")
    assert last_new_task_count(db, net, "worker") == message_store.unread_count(db, net, "worker")
    assert_exact(db)

    # Retention: everything so far is two days old. Read items go, and so do ended tasks with their notice,
    # read or not (tasks[1] was answered without its notice ever being acked).
    with db.write():
        db.execute("UPDATE messages SET created_ts = created_ts - ?", (2 * DAY,))
        db.execute("UPDATE tasks SET created_ts = created_ts - ?, updated_at = '2000-01-01 00:00:00'", (2 * DAY,))
    before = message_store.unread_count(db, net, "worker")
    deleted = await apply_retention(server.hub)
    assert deleted["messages"] > 0 and deleted["tasks"] >= 3
    assert message_store.unread_count(db, net, "worker") < before
    assert_exact(db)
    acked = await tool(client, account.network_token, "ack_inbox", {"all": True})
    assert acked["inbox_count"] == 0
    assert_exact(db)
    await send_task(client, account.auth, "worker", "after the ack")
    assert last_new_task_count(db, net, "worker") == 1

    # A deleted network takes its items and its counts with it.
    other = await client.post("/api/networks", headers=account.auth, json={"name": "second"})
    assert other.status_code == 200, other.text
    other_id = other.json()["network_id"]
    second = await create_token(client, account, "second", network_id=other_id)
    await tool(client, second, "report_status", {"alias": "far"})
    r = await client.post("/api/tasks", headers=account.auth, json={"to": "far", "content": "x",
                                                                    "network_id": other_id})
    assert r.status_code == 200, r.text
    assert message_store.unread_count(db, other_id, "far") == 1
    await mcp_call(client, second, "report_status", {"status": "idle"})
    with db.write():  # the agent is online, so the API refuses (409): delete below it, as an operator would
        db.execute("DELETE FROM networks WHERE network_id = ?", (other_id,))
    assert db.query("SELECT * FROM unread_counts WHERE network_id = ?", (other_id,)) == []
    assert_exact(db)


# --- any sequence of store writes ---------------------------------------------------------------------------

NETS = ("net_a", "net_b")
NAMES = ("a1", "a2", "p")
OPS = st.lists(st.one_of(
    st.tuples(st.just("insert"), st.sampled_from(NETS), st.sampled_from(NAMES), st.sampled_from(("agent", "person")),
              st.booleans()),
    st.tuples(st.just("mark_read"), st.sampled_from(NETS), st.sampled_from(NAMES), st.integers(0, 30)),
    st.tuples(st.just("mark_task_read"), st.sampled_from(NETS), st.sampled_from(NAMES), st.integers(0, 5)),
    st.tuples(st.just("mark_all"), st.sampled_from(NETS), st.sampled_from(NAMES)),
    st.tuples(st.just("delete"), st.integers(0, 30)),
    st.tuples(st.just("delete_task"), st.integers(0, 5)),
    st.tuples(st.just("move"), st.integers(0, 30), st.sampled_from(NAMES)),
    st.tuples(st.just("unread_again"), st.integers(0, 30)),
), max_size=60)
_FILES = itertools.count()


@hyp_settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_kept_count_equals_count_after_any_store_writes(engine: str, make_db: MakeDb, ops: list[tuple]) -> None:
    # A new database per example (hypothesis runs many in one test); on PostgreSQL one emptied per example instead
    # (a CREATE DATABASE each costs more than the example).
    if engine == "postgresql":
        if id(make_db) not in _REUSED:
            _REUSED.clear()
            _REUSED[id(make_db)] = make_db()
        db = _REUSED[id(make_db)]
        with db.write():
            db.execute("TRUNCATE users, bodies CASCADE")
    else:
        db = make_db()
    try:
        with db.write():
            seed_owner_and_networks(db, NETS)
        seq = 0
        for op in ops:
            with db.write():
                apply_op(db, op, seq)
            seq += 1
            assert_exact(db)
    finally:
        if engine != "postgresql":
            db.close()


_REUSED: dict[int, Database] = {}


def apply_op(db: Database, op: tuple, seq: int) -> None:
    """One store write (the functions the service uses), or a raw change no service path makes today."""
    kind = op[0]
    if kind == "insert":
        _, net, name, to_kind, is_task = op
        message_store.insert_message(db, {
            "message_id": f"m{seq}", "network_id": net, "from_name": "x", "to_name": name, "from_kind": "agent",
            "to_kind": to_kind, "kind": "task" if is_task else "message", "content": "c", "priority": "normal",
            "in_reply_to": None, "task_id": f"t{seq % 6}" if is_task else None, "status": None, "created_at": "t",
            "created_ts": float(seq)})
    elif kind == "mark_read":
        _, net, name, n = op
        message_store.mark_read(db, net, name, [f"m{n}", f"m{n + 1}"], "now")
    elif kind == "mark_task_read":
        _, net, name, n = op
        message_store.mark_task_items_read(db, net, name, [f"t{n}"], "now")
    elif kind == "mark_all":
        _, net, name = op
        message_store.mark_all_read(db, net, name, "now")
    elif kind == "delete":
        rowids = [r["rowid"] for r in db.query("SELECT rowid FROM messages WHERE message_id = ?", (f"m{op[1]}",))]
        if rowids:
            retention_store.delete_messages(db, rowids)
    elif kind == "delete_task":
        db.execute("DELETE FROM messages WHERE task_id = ?", (f"t{op[1]}",))
    elif kind == "move":
        db.execute("UPDATE messages SET to_name = ? WHERE message_id = ?", (op[2], f"m{op[1]}"))
    elif kind == "unread_again":
        db.execute("UPDATE messages SET read_at = NULL WHERE message_id = ?", (f"m{op[1]}",))
