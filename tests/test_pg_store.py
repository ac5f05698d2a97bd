"""The store on both engines (docs/postgresql.md): the same store calls give the same answers, byte for byte where the
store builds JSON text, on SQLite and on PostgreSQL; the engine layer keeps write()/write_together()/try_write(), the
counters the triggers keep, and the errors.

Each test takes `make_db` (parametrized: sqlite, postgresql; PostgreSQL tests skip where it is not installed), or,
for the comparisons, both engines at once."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pg_cluster as pg_cluster_mod
import pytest
import trio
from conftest import MakeDb, pg_database_at_schema, seed_owner_and_networks

from commhub_lib import db as dbmod
from commhub_lib.db import ConstraintError, Database
from commhub_lib.errors import DatabaseUnavailable
from commhub_lib.store import approvals as approval_store
from commhub_lib.store import audit as audit_store
from commhub_lib.store import dialect
from commhub_lib.store import events as event_store
from commhub_lib.store import maintenance as maintenance_store
from commhub_lib.store import messages as message_store
from commhub_lib.store import needs as needs_store
from commhub_lib.store import networks as network_store
from commhub_lib.store import quotas as quota_store
from commhub_lib.store import retention as retention_store
from commhub_lib.store import schedules as schedule_store
from commhub_lib.store import search as search_store
from commhub_lib.store import sessions as session_store
from commhub_lib.store import tasks as task_store
from commhub_lib.store import tokens as token_store
from commhub_lib.store import usage as usage_store
from commhub_lib.store import users as user_store
from commhub_lib.store import webhooks as webhook_store

NETS = ["net_a1", "net_b2"]


@pytest.fixture
def both(tmp_path: Path, pg_cluster: pg_cluster_mod.Cluster) -> Iterator[tuple[Database, Database]]:
    """A SQLite and a PostgreSQL database, both empty."""
    lite = dbmod.open_engine(str(tmp_path / "lite.db"))
    pg = dbmod.open_engine(pg_database_at_schema(pg_cluster))
    yield lite, pg
    lite.close()
    pg.close()


def _t(n: int) -> str:
    return f"2026-12-07 10:{n // 60:02d}:{n % 60:02d}"


def scenario(db: Database) -> dict[str, Any]:
    """The same writes through the store, then every read the REST/MCP answers are built from; returns the answers."""
    out: dict[str, Any] = {}
    with db.write():
        seed_owner_and_networks(db, NETS)
        user_store.insert_user(db, "u_2", "Bob", "Bob", "b@x", "h2", "user", _t(1))
        network_store.insert_member(db, NETS[0], "u_1", "owner", _t(1))
        network_store.insert_member(db, NETS[0], "u_2", "member", _t(2))
        network_store.insert_member(db, NETS[1], "u_1", "owner", _t(2))
        token_store.insert_token(db, "tok_1", "user", b"\x01" * 32, "u_1", None, "login", None, _t(3))
        token_store.insert_token(db, "tok_2", "network", b"\x02" * 32, "u_1", NETS[0], "agent", "worker", _t(4))
        token_store.insert_token(db, "tok_3", "user", b"\x03" * 32, "u_1", None, "login2", None, _t(5))
        network_store.insert_invite(db, "inv_1", b"\x09" * 32, NETS[0], "member", 3, "u_1", _t(5), None)
        for i, alias in enumerate(["worker", "boss", "Idle"]):
            session_store.insert_session(db, NETS[0], alias, f"sess_{i}", "tok_2", "idle", _t(6 + i), 1000.0 + i)
        session_store.update_report(db, NETS[0], "worker", {"status": "working", "task": "t", "progress": "50%"})
        session_store.upsert_node(db, "node_1", NETS[0], "box", "linux", "claude", _t(9))
        session_store.upsert_node(db, "node_1", NETS[0], "box", None, "codex", _t(10))
        session_store.upsert_node(db, "node_1", NETS[0], "box", None, "codex", _t(11))
        session_store.update_report(db, NETS[0], "worker", {"node_id": "node_1"})
        for i in range(6):
            net = NETS[i % 2]
            task_store.insert_task(db, {
                "task_id": f"task_{i}", "network_id": net, "from_name": "boss", "from_kind": "agent",
                "to_name": "worker", "to_kind": "agent", "title": f"Title {i}" if i % 3 else None,
                "content": f"Please compute the zebra number {i} ünïcode “quotes” \"dq\" 100%",
                "context": None, "priority": ["low", "normal", "high", "urgent"][i % 4], "status": "delivered",
                "deadline": None, "idempotency_key": f"k{i}" if i < 2 else None, "message_id": f"msg_t{i}",
                "created_at": _t(20 + i), "created_ts": 2000.0 + i, "updated_at": _t(20 + i)})
            message_store.insert_message(db, {
                "message_id": f"msg_t{i}", "network_id": net, "from_name": "boss", "from_kind": "agent",
                "to_name": "worker", "to_kind": "agent", "kind": "task", "content": "", "priority": "normal",
                "in_reply_to": None, "task_id": f"task_{i}", "status": None, "created_at": _t(20 + i),
                "created_ts": 2000.0 + i})
            task_store.insert_task_event(db, f"task_{i}", net, "created", "boss", json.dumps({"n": i}), _t(20 + i))
        for i in range(5):
            message_store.insert_message(db, {
                "message_id": f"msg_{i}", "network_id": NETS[0], "from_name": "worker", "from_kind": "agent",
                "to_name": "boss", "to_kind": "agent", "kind": "message" if i % 2 else "reply",
                "content": f"zebra reply {i} with a 'quote' and 50% off", "priority": "high",
                "in_reply_to": None, "task_id": "task_0" if i == 4 else None,
                "status": "question" if i == 4 else None, "created_at": _t(30 + i), "created_ts": 3000.0 + i,
                "content_hash": 1234 + i})
        body = message_store.insert_body(db, "zebra broadcast to all", NETS[0])
        for alias in ("worker", "boss"):
            message_store.insert_message(db, {
                "message_id": f"msg_b_{alias}", "network_id": NETS[0], "from_name": "p", "from_kind": "person",
                "to_name": alias, "to_kind": "agent", "kind": "broadcast", "content": "", "priority": "normal",
                "in_reply_to": None, "task_id": None, "status": None, "created_at": _t(40), "created_ts": 4000.0,
                "body_id": body})
            event_store.insert_event(db, NETS[0], alias, "new_message", '{"content":"","kind":"broadcast"}', _t(40),
                                     body)
        for i in range(4):
            event_store.insert_event(db, NETS[0], "worker", "new_task", json.dumps({"task_id": f"task_{i}"}), _t(41))
        task_store.set_status(db, "task_0", ("delivered",), "running", _t(50))
        task_store.set_status(db, "task_1", ("delivered",), "input_required", _t(50))
        task_store.set_flag(db, "task_2", "unanswered", _t(51))
        task_store.set_flag(db, "task_2", "unanswered", _t(51))
        task_store.set_status(db, "task_3", ("delivered", "running"), "replied", _t(52), result="done")
        task_store.insert_completion(db, "task_3", NETS[1], "worker", "replied", "the result", '["a.txt", "b"]',
                                     2.0, _t(52))
        task_store.insert_completion(db, "task_5", NETS[1], "worker", "failed", None, "[]", 1.25, _t(53))
        approval_store.insert_approval(db, {"approval_id": "msg_4", "network_id": NETS[0], "alias": "worker",
                                            "task_id": "task_0", "asked_name": "p", "asked_kind": "person",
                                            "created_at": _t(54)})
        audit_store.insert_entry(db, NETS[0], "u_1", "p", "register", '{"a":1}', "127.0.0.1", _t(55))
        webhook_store.insert_webhook(db, "wh_1", NETS[0], "https://x.test/h", "s3cret", '["new_task"]', "[]", "d",
                                     "u_1", _t(56))
        webhook_store.insert_delivery(db, "wh_1", 1, "new_task", "worker", '{"x":1}', _t(56))
        schedule_store.insert_schedule(db, {
            "schedule_id": "sch_1", "network_id": NETS[0], "created_by": "u_1", "token_id": None,
            "from_name": "p", "from_kind": "person", "to_name": "worker", "title": None, "content": "tick",
            "context": None, "priority": "normal", "kind": "every", "run_at": None, "every_seconds": 60,
            "cron": None, "tz": "UTC", "missed": "run_once", "state": "active", "next_run_ts": 5000.5,
            "created_at": _t(57), "updated_at": _t(57)})
        schedule_store.record_run(db, "sch_1", "task_4", "active", 5060.5, _t(58))
    with db.write():
        out["read"] = sorted(map(str, message_store.mark_read(db, NETS[0], "worker", ["msg_t0", "msg_t2"], _t(60))))
        out["revoked"] = token_store.revoke_user_tokens(db, "u_1", _t(61), "tok_1")
        out["invite_used"] = network_store.use_invite(db, "inv_1")
    # reads
    out["user"] = user_store.get_user_by_username(db, "bob")
    out["users"] = user_store.list_users(db, 10, 0)
    out["count_users"] = user_store.count_users(db)
    out["networks"] = network_store.list_networks_of_user(db, "u_1")
    out["members"] = network_store.list_members(db, NETS[0])
    out["count_members"] = network_store.count_members(db, NETS[0])
    out["invites"] = network_store.list_invites(db, NETS[0], 10, 0)
    out["token"] = token_store.get_token_by_hash(db, b"\x02" * 32, _t(0))
    out["logins"] = token_store.list_login_tokens(db, "u_1", _t(0))
    out["net_tokens"] = token_store.list_network_tokens_of_user(db, "u_1")
    out["grants"] = {str(k): v for k, v in token_store.failing_stream_grants(
        db, [("tok_2", "u_1", NETS[0]), ("tok_3", "u_1", NETS[0]), ("tok_2", "u_2", NETS[1])], _t(0)).items()}
    out["session"] = session_store.get_session(db, NETS[0], "worker")
    out["sessions"] = session_store.list_sessions(db, NETS)
    out["held"] = session_store.aliases_held_by_token(db, NETS[0], "tok_2", 10)
    out["alias_in_use"] = [session_store.alias_in_use(db, "IDLE"), session_store.alias_in_use(db, "nobody")]
    out["status_json"] = session_store.status_page_json(db, NETS, 1001.0, None, 50, 0)
    out["status_json_idle"] = session_store.status_page_json(db, NETS, 1001.0, "idle", 50, 0)
    out["status_records"] = session_store.status_records(db, NETS, 1001.0, -1, 0)
    out["session_counts"] = session_store.session_counts(db, NETS, 1001.0)
    out["lapsed"] = session_store.count_lapsed(db, json.dumps([[NETS[0], "worker"], [NETS[0], "Idle"]]), 1001.5)
    out["nodes"] = session_store.list_nodes(db, NETS)
    out["tasks"] = task_store.list_tasks(db, NETS, None, None, None, 50, 0)
    for status, to, frm, flag in ((None, None, None, None), ("delivered", None, None, None),
                                  (None, "worker", None, None), (None, None, None, "unanswered")):
        for nets in (NETS, NETS[:1]):
            for limit, offset in ((50, 0), (2, 1)):
                key = f"tasks_json {status} {to} {frm} {flag} {len(nets)} {limit} {offset}"
                out[key] = task_store.list_tasks_json(db, nets, status, to, frm, limit, offset, flag)
    out["task"] = task_store.get_task(db, NETS[1], "task_3")
    out["open"] = task_store.open_tasks_of(db, NETS[0], "worker", 10)
    out["queue"] = task_store.queue_of(db, NETS[0], "worker", 10)
    out["counts"] = task_store.task_counts(db, NETS)
    out["counts_all"] = task_store.task_counts_all(db)
    out["idem"] = task_store.find_by_idempotency_key(db, NETS[0], "boss", "k0")
    out["events_list"] = task_store.list_task_events(db, NETS, None, 50, 0)
    out["events_json"] = task_store.list_task_events_json(db, NETS, None, 50, 0)
    out["events_json_one"] = task_store.list_task_events_json(db, NETS, "task_2", 50, 0)
    out["completions"] = task_store.list_completions(db, NETS, None, 50, 0)
    out["completions_json"] = task_store.list_completions_json(db, NETS, None, 50, 0)
    out["messages"] = message_store.list_messages(db, NETS, None, None, False, 50, 0)
    for alias, kind, unread in ((None, None, False), ("worker", None, True), (None, "reply", False)):
        for limit, offset in ((50, 0), (3, 2)):
            out[f"messages_json {alias} {kind} {unread} {limit} {offset}"] = message_store.list_messages_json(
                db, NETS, alias, kind, unread, limit, offset)
    out["unread"] = message_store.unread(db, NETS[0], "worker", 10)
    out["unread_count"] = [message_store.unread_count(db, NETS[0], a) for a in ("worker", "boss", "none")]
    out["dup"] = message_store.find_duplicate(db, 1235, NETS[0], "worker", "boss", 0.0)
    out["hashes"] = message_store.recent_hashes(db, 3001.0, 10.0, 10)
    out["last_sent"] = message_store.last_sent(db, NETS[0], "worker", "boss")
    out["replay"] = event_store.events_after(db, NETS[0], "worker", 0, 50)
    out["net_replay"] = event_store.network_events_after(db, NETS[0], 2, 50)
    out["latest"] = [event_store.latest_alias_event_id(db, NETS[0], "worker"),
                     event_store.latest_network_event_id(db, NETS[0]), event_store.highest_event_id_ever(db)]
    out["recent"] = event_store.recent_network_events(db, NETS[0], 3, 100)
    out["approval"] = approval_store.get_approval(db, NETS, "msg_4")
    out["approvals"] = approval_store.list_approvals(db, NETS, None, None, 10, 0)
    out["pending"] = approval_store.pending_for_reply(db, NETS[0], "worker", None, "task_0")
    out["audit"] = audit_store.list_entries(db, None, None, 10, 0)
    out["webhooks"] = webhook_store.list_webhooks(db, NETS[0])
    out["next_pending"] = webhook_store.next_pending(db, "wh_1")
    out["deliveries"] = webhook_store.list_deliveries(db, "wh_1", None, 10)
    out["with_pending"] = webhook_store.webhooks_with_pending(db)
    out["schedule"] = schedule_store.get_schedule(db, "sch_1")
    out["schedules"] = schedule_store.list_schedules(db, NETS, 10, 0)
    out["due"] = schedule_store.due_schedules(db, 6000.0, 10)
    out["earliest"] = schedule_store.earliest_next_run(db)
    out["usage"] = usage_store.usage_of(db, NETS[0])
    out["used"] = usage_store.used_bytes(db, NETS[0])
    out["counts_of"] = usage_store.counts_of(db, NETS[0])
    out["quotas"] = [quota_store.count_aliases(db, NETS[0]), quota_store.count_nodes(db, NETS[0]),
                     quota_store.node_exists(db, NETS[0], "box"), quota_store.count_live_network_tokens(db, "u_1",
                                                                                                    _t(0)),
                     quota_store.count_owned_networks(db, "u_1"), quota_store.count_open_invites(db, NETS[0], _t(0)),
                     quota_store.live_logins_past(db, "u_1", 0, _t(0))]
    out["questions"] = needs_store.questions_for_people(db, NETS, 10)
    out["flagged"] = needs_store.flagged_open_tasks(db, NETS, "unanswered", 10)
    # No order promised (no ORDER BY): compared as a set.
    out["lapsed_sessions"] = sorted(needs_store.lapsed_sessions(db, NETS, 1001.5), key=lambda r: r["alias"])
    out["delivered_before"] = needs_store.delivered_before(db, json.dumps([[NETS[0], "worker"]]), 9999.0, 10)
    out["quiet"] = needs_store.running_quiet_since(db, NETS, _t(59), 10)
    out["presence"] = [{k: v for k, v in r.items() if k != "rowid"}
                       for r in maintenance_store.presence_candidates(db, 1001.5, 0, 10)]
    out["retention_pages"] = [len(retention_store.message_page(db, 0, 100)), len(retention_store.task_page(db, 0, 100))]
    hits = {}
    for q in ('"zebra"', '"zeb"*', '"quote"', '"broadcast"', '"nothing"'):
        hits[q] = [
            [{k: v for k, v in r.items() if k != "snippet"} for r in search_store.search_tasks(db, NETS, q, 10)],
            [{k: v for k, v in r.items() if k != "snippet"}
             for r in search_store.search_messages(db, NETS, q, None, 10)],
            [{k: v for k, v in r.items() if k != "snippet"} for r in search_store.search_broadcasts(db, NETS, q, 10)]]
    out["search"] = hits
    return out


def test_every_store_answer_is_the_same_on_both_engines(both: tuple[Database, Database]) -> None:
    lite, pg = both
    expected, got = scenario(lite), scenario(pg)
    assert sorted(got) == sorted(expected)
    for key in expected:
        assert got[key] == expected[key], key
        if isinstance(expected[key], str):  # JSON text built in SQL: the very same bytes
            assert got[key].encode() == expected[key].encode(), key
    assert expected["search"]['"zebra"'][0] and expected["search"]['"zeb"*'][1]  # the sample finds something


def test_the_json_pages_are_the_rows_of_the_row_pages(both: tuple[Database, Database]) -> None:
    """The JSON fast paths hold the same rows as the row lists, in the same order, on PostgreSQL too."""
    _, pg = both
    scenario(pg)
    rows = task_store.list_tasks(pg, NETS, None, None, None, 50, 0)
    assert [r["task_id"] for r in json.loads(task_store.list_tasks_json(pg, NETS, None, None, None, 50, 0))] == \
        [r["task_id"] for r in rows]
    assert json.loads(task_store.list_tasks_json(pg, NETS, None, None, None, 50, 0)) == rows


def test_foreign_keys_cascade_and_constraints_raise_the_neutral_error(make_db: MakeDb) -> None:
    db = make_db()
    with db.write():
        seed_owner_and_networks(db, NETS)
        session_store.insert_session(db, NETS[0], "a", "s", None, "idle", _t(1), 1.0)
    with pytest.raises(ConstraintError), db.write():
        user_store.insert_user(db, "u_9", "P", "P", None, "h", "user", _t(1))  # 'p' exists: names are caseless
    with pytest.raises(ConstraintError), db.write():
        session_store.insert_session(db, "net_missing", "a", "s", None, "idle", _t(1), 1.0)
    assert user_store.count_users(db) == 1  # the failed transactions left nothing
    with db.write():
        network_store.delete_network(db, NETS[0])
    assert session_store.get_session(db, NETS[0], "a") is None
    assert not any(usage_store.usage_of(db, NETS[0]).values())


def test_write_rolls_back_on_error_and_nests(make_db: MakeDb) -> None:
    db = make_db()
    with db.write():
        seed_owner_and_networks(db, NETS)
    with pytest.raises(RuntimeError), db.write():
        network_store.insert_member(db, NETS[0], "u_1", "owner", _t(1))
        with db.write():  # joins the outer transaction
            network_store.insert_member(db, NETS[1], "u_1", "owner", _t(1))
        raise RuntimeError("undo")
    assert network_store.list_network_ids_of_user(db, "u_1") == []
    assert db.try_write(lambda: network_store.insert_member(db, NETS[0], "u_1", "owner", _t(1)))
    assert network_store.list_network_ids_of_user(db, "u_1") == [NETS[0]]


async def test_write_together_undoes_only_the_work_that_failed(make_db: MakeDb) -> None:
    db = make_db()
    with db.write():
        seed_owner_and_networks(db, NETS)
    results: dict[str, Any] = {}

    async def member(name: str, net: str, fail: bool) -> None:
        def work() -> str:
            network_store.insert_member(db, net, "u_1", "owner", _t(1))
            if fail:
                network_store.insert_member(db, net, "u_1", "owner", _t(1))  # the primary key: a conflict
            return name

        try:
            results[name] = await db.write_together(work)
        except ConstraintError:
            results[name] = "conflict"

    async with trio.open_nursery() as nursery:
        nursery.start_soon(member, "ok", NETS[0], False)
        nursery.start_soon(member, "bad", NETS[1], True)
    assert results == {"ok": "ok", "bad": "conflict"}
    assert network_store.list_network_ids_of_user(db, "u_1") == [NETS[0]]
    assert db.groups_committed == 1


def test_the_counters_the_triggers_keep_match_a_recount(make_db: MakeDb) -> None:
    db = make_db()
    scenario(db)
    with db.write():
        retention_store.delete_task(db, "task_5")
        message_store.mark_all_read(db, NETS[0], "worker", _t(70))
        network_store.delete_network(db, NETS[1])
    recount = {(r["network_id"], r["status"]): r["n"] for r in db.query(
        "SELECT network_id, status, count(*) AS n FROM tasks GROUP BY network_id, status")}
    kept = {(r["network_id"], r["status"]): r["n"] for r in db.query("SELECT * FROM task_counts") if r["n"]}
    assert kept == recount
    unread = {(r["network_id"], r["to_name"]): r["n"] for r in db.query(
        "SELECT network_id, to_name, count(*) AS n FROM messages WHERE read_at IS NULL GROUP BY network_id, to_name")}
    assert {(r["network_id"], r["to_name"]): r["n"] for r in db.query("SELECT * FROM unread_counts") if r["n"]} \
        == unread
    text = db.query_one("SELECT (SELECT coalesce(sum(200 + octet_length(content)), 0) FROM messages"
                        " WHERE network_id = ?) + (SELECT coalesce(sum(octet_length(content)), 0) FROM bodies"
                        " WHERE network_id = ?) + (SELECT coalesce(sum(300 + octet_length(content)"
                        " + coalesce(octet_length(title), 0) + coalesce(octet_length(context), 0)), 0) FROM tasks"
                        " WHERE network_id = ?) + (SELECT coalesce(sum(100 + coalesce(octet_length(detail), 0)), 0)"
                        " FROM task_events WHERE network_id = ?) AS n", (NETS[0],) * 4)
    assert text is not None and usage_store.usage_of(db, NETS[0])["text_bytes"] == text["n"]


def test_the_auth_cache_stamp_changes_when_a_token_changes(make_db: MakeDb) -> None:
    db = make_db()
    with db.write():
        seed_owner_and_networks(db, NETS)
        token_store.insert_token(db, "tok_1", "user", b"\x01" * 32, "u_1", None, "login", None, _t(1))
    cache = token_store.LiveTokenCache(db)
    assert cache.get(b"\x01" * 32, _t(2)) is not None
    assert cache.get(b"\x01" * 32, _t(2)) is not None and cache.hits == 1
    with db.write():
        token_store.touch_token(db, "tok_1", _t(3))  # "last used" is not a change the cache cares about
    assert cache.get(b"\x01" * 32, _t(3)) is not None and cache.hits == 2
    with db.write():
        token_store.revoke_token(db, "tok_1", _t(4))
    assert cache.get(b"\x01" * 32, _t(5)) is None


@pytest.mark.subprocess
def test_the_sqlite_path_never_imports_psycopg(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = ("import sys; from commhub_lib.db import open_engine; from commhub_lib.store import tasks;"
            f" db = open_engine({str(tmp_path / 'x.db')!r}); tasks.task_counts_all(db); db.close();"
            " print('psycopg' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_lost_connection_answers_503_in_a_transaction_and_is_made_again_outside_one(
        pg_url: str, pg_cluster: pg_cluster_mod.Cluster) -> None:
    db = dbmod.open_engine(pg_url)
    assert user_store.count_users(db) == 0

    def cut() -> None:
        pid = db.query_one("SELECT pg_backend_pid() AS pid")
        assert pid is not None
        pg_cluster.psql(f"SELECT pg_terminate_backend({pid['pid']})")

    cut()
    assert user_store.count_users(db) == 0  # a read outside a transaction: a new connection, run again
    with pytest.raises(DatabaseUnavailable) as raised, db.write():
        cut()
        user_store.count_users(db)  # inside one: what it did is gone with the connection, so 503
    assert raised.value.status == 503 and raised.value.code == "database_unavailable"
    assert user_store.count_users(db) == 0  # reconnected
    db.close()


@pytest.mark.parametrize(("sqlite", "postgres"), [
    ("SELECT a FROM t WHERE x = ? AND y = :y", "SELECT a FROM t WHERE x = %s AND y = %(y)s"),
    ("SELECT rowid, a FROM t WHERE rowid > ? ORDER BY rowid LIMIT ?",
     "SELECT seq AS rowid, a FROM t WHERE seq > %s ORDER BY seq LIMIT nullif(%s, -1)"),
    ("UPDATE t SET f = ? WHERE f IS NOT ? AND '50%' = '50%'",
     "UPDATE t SET f = %s WHERE f IS DISTINCT FROM %s AND '50%%' = '50%%'"),
    ("INSERT OR IGNORE INTO t(a) VALUES (?)", "INSERT INTO t(a) VALUES (%s) ON CONFLICT DO NOTHING"),
    ("SELECT max(a, b), max(c) FROM t WHERE +kind = ?", "SELECT greatest(a, b), max(c) FROM t WHERE kind = %s"),
    ("SELECT json_object('from', f, 'n', x) FROM t",
     "SELECT (SELECT row_to_json(_r) FROM (SELECT f AS \"from\", x AS \"n\") AS _r) FROM t"),
    ("SELECT json_group_array(r ORDER BY a, b) FROM t",
     "SELECT ('[' || coalesce(string_agg((r)::text, ',' ORDER BY a, b), '') || ']') FROM t"),
])
def test_the_translation_of_store_sql(sqlite: str, postgres: str) -> None:
    assert dialect.to_postgres(sqlite) == postgres


def _columns_sqlite(db: Database) -> dict[str, set[str]]:
    tables = [r["name"] for r in db.query("SELECT name FROM sqlite_master WHERE type = 'table'"
                                          " AND name NOT LIKE 'sqlite_%' AND name NOT LIKE 'search_%'")]
    return {t: {r["name"] for r in db.query(f"SELECT name FROM pragma_table_info('{t}')")} for t in tables}


def _columns_pg(db: Database) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for r in db.query("SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public'"
                      " AND table_name NOT IN ('commhub_schema', 'commhub_changes')"
                      " AND column_name NOT IN ('seq', 'search_tsv')"):
        found.setdefault(r["table_name"], set()).add(r["column_name"])
    return found


def test_postgresql_has_every_table_and_column_of_the_sqlite_schema(both: tuple[Database, Database]) -> None:
    """schema_pg.sql (+ the pg/ twins) is the SQLite schema: a migration without its twin leaves a difference here."""
    lite, pg = both
    assert _columns_pg(pg) == _columns_sqlite(lite)
    assert pg.query_one("SELECT version FROM commhub_schema") == {"version": dbmod.SCHEMA_VERSION}


def test_every_sqlite_migration_past_the_postgresql_base_has_a_twin() -> None:
    from commhub_lib import db_pg

    newer = sorted(n for n in dbmod.migration_steps() if n > db_pg.PG_BASE_VERSION)
    assert newer == sorted(n for n in db_pg.migration_steps() if n > db_pg.PG_BASE_VERSION), (
        "each migration newer than schema_pg.sql needs commhub_lib/migrations/pg/NNNN_*.sql (docs/postgresql.md)")


def test_the_database_setting_is_a_flag_its_alias_and_a_variable() -> None:
    import argparse

    from commhub_lib.config import add_arguments, load_settings

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    url = "postgresql://hub@db.internal/commhub"
    for argv in (["--database", url], ["--database-url", url]):
        assert load_settings(vars(parser.parse_args(argv)), env={}).database_url == url
    assert load_settings({}, env={"COMMHUB_DATABASE_URL": url}).database_url == url
    assert load_settings({}, env={}).database_url == ""  # SQLite stays the default
    with pytest.raises(ValueError, match="postgresql://"):
        load_settings({}, env={"COMMHUB_DATABASE_URL": "/tmp/hub.db"})


async def test_a_server_started_on_a_url_runs_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    from conftest import own_server

    async with own_server(tmp_path, "on-pg", database_url=pg_url) as server:
        assert server.hub.db.engine == dialect.POSTGRESQL
        assert not (tmp_path / "on-pg.db").exists()  # no SQLite file made beside it


def test_recent_hashes_read_newest_first_across_pages(make_db: MakeDb, monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop guard's warm-up read: newest first until older than the window; on PostgreSQL page by page."""
    monkeypatch.setattr(message_store, "HASH_PAGE", 7)
    db = make_db()
    with db.write():
        seed_owner_and_networks(db, NETS)
        for i in range(40):
            message_store.insert_message(db, {
                "message_id": f"m{i}", "network_id": NETS[0], "from_name": "a", "from_kind": "agent", "to_name": "b",
                "to_kind": "agent", "kind": "message", "content": "x", "priority": "normal", "in_reply_to": None,
                "task_id": None, "status": None, "created_at": _t(i), "created_ts": 100.0 + i,
                "content_hash": None if i % 5 == 0 else i})
    assert message_store.recent_hashes(db, 120.0, 0.0, 100) == (
        [(i, 100.0 + i) for i in range(20, 40) if i % 5], True)
    assert message_store.recent_hashes(db, 100.0, 0.0, 3) == ([(37, 137.0), (38, 138.0), (39, 139.0)], False)


def test_a_database_at_an_older_version_gets_the_twins_of_the_newer_migrations(
        pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from commhub_lib import db_pg

    db_pg.PgDatabase(pg_url).close()  # created at the current version
    twins = tmp_path / "pg"
    twins.mkdir()
    nxt = dbmod.SCHEMA_VERSION + 1
    (twins / f"{nxt:04d}_example.sql").write_text("ALTER TABLE users ADD COLUMN nickname TEXT;\n")
    monkeypatch.setattr(db_pg, "PG_MIGRATIONS_DIR", twins)
    monkeypatch.setattr(dbmod, "SCHEMA_VERSION", nxt)
    db = db_pg.PgDatabase(pg_url)
    assert db.query_one("SELECT version FROM commhub_schema") == {"version": nxt}
    assert db.query("SELECT nickname FROM users") == []
    db.close()
    monkeypatch.setattr(dbmod, "SCHEMA_VERSION", nxt - 1)
    with pytest.raises(RuntimeError, match="newer than this CommHub"):
        db_pg.PgDatabase(pg_url)
