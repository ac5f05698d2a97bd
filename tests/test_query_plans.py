"""Every list and stats query reads along the index meant for it: no full scan, no sort of all matching rows.

The store functions run against a small real database; each SQL statement they issue is re-run under
EXPLAIN QUERY PLAN with the same parameters. The server never runs ANALYZE, so SQLite plans from the
schema alone and the plan seen here is the plan at a million rows (bench/bench_queries.py measures that).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import apsw
import pytest

from commhub_lib import db as dbmod
from commhub_lib.db import Database
from commhub_lib.store import audit as audit_store
from commhub_lib.store import messages as message_store
from commhub_lib.store import sessions as session_store
from commhub_lib.store import tasks as task_store
from tests.conftest import seed_owner_and_networks

NETS = ["net_a", "net_b", "net_c"]
UNIQUE_LOOKUP = re.compile(r"SEARCH \w+ USING (INTEGER PRIMARY KEY \(rowid=\?\)"
                           r"|INDEX sqlite_autoindex_\w+ \(\w+=\?\))( LEFT-JOIN)?$")
A = NETS[:1]


class PlanRecorder(Database):
    """A Database that keeps the query plan of every read it runs."""

    plans: list[tuple[str, list[str]]]

    def __init__(self, path: str):
        super().__init__(path)
        self.plans = []

    def query(self, sql: str, params: Any = ()) -> list[dict[str, Any]]:
        """Record the plan, then run the query."""
        details = [row[3] for row in self.con.execute("EXPLAIN QUERY PLAN " + sql, params)]
        self.plans.append((sql, details))
        return super().query(sql, params)


@pytest.fixture(scope="module", params=["fresh", "migrated"])
def db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlanRecorder]:
    """A database made from schema.sql, or by the migration steps (their indexes come in another order, and
    SQLite breaks ties between equally good indexes by that order: there must be no ties)."""
    path = str(Path(tmp_path_factory.mktemp("plans")) / "plans.db")
    if request.param == "migrated":
        old = apsw.Connection(path)
        with old:
            old.execute(dbmod.migration_steps()[1])
            old.pragma("user_version", 1)
        old.close()
    database = PlanRecorder(path)
    with database.write():
        seed_owner_and_networks(database, NETS)
        for n, net in enumerate(NETS):
            for i in range(20):
                ts = 1000.0 + i
                task = {"task_id": f"t{n}-{i}", "network_id": net, "from_name": "a1", "to_name": f"a{i % 3}",
                        "from_kind": "agent", "to_kind": "agent",
                        "title": None, "content": "c", "context": None, "priority": "normal",
                        "status": "running" if i % 2 else "replied", "deadline": None, "idempotency_key": None,
                        "message_id": f"m{n}-{i}", "created_at": "t", "created_ts": ts, "updated_at": "t"}
                task_store.insert_task(database, task)
                message_store.insert_message(database, {
                    "message_id": f"m{n}-{i}", "network_id": net, "from_name": "a1", "to_name": f"a{i % 3}",
                    "from_kind": "agent", "to_kind": "agent",
                    "kind": "task", "content": "c", "priority": "normal", "in_reply_to": None,
                    "task_id": task["task_id"], "status": None, "created_at": "t", "created_ts": ts})
                task_store.insert_task_event(database, task["task_id"], net, "delivered", "a1", None, "t")
                task_store.insert_completion(database, task["task_id"], net, f"a{i % 3}", "replied", "r", "[]",
                                             1.0, f"2026-01-01 00:00:{i:02d}")
    yield database
    database.close()


def plan_of(db: PlanRecorder, call: Callable[[PlanRecorder], Any]) -> list[str]:
    """The plan lines of the one query `call` issues."""
    db.plans.clear()
    call(db)
    assert len(db.plans) == 1, [sql for sql, _ in db.plans]
    return db.plans[0][1]


# (what, call, index each table read must use)
CASES: list[tuple[str, Callable[[PlanRecorder], Any], str]] = []
for nets, who in ((A, "agent token (one network)"), (NETS, "user token (all networks)")):
    CASES += [
        (f"tasks, {who}", lambda db, n=nets: task_store.list_tasks(db, n, None, None, None, 50, 0),
         "tasks_by_network"),
        (f"tasks?status=running, {who}",
         lambda db, n=nets: task_store.list_tasks(db, n, "running", None, None, 50, 0), "tasks_by_status"),
        (f"tasks?to_name=, {who}",
         lambda db, n=nets: task_store.list_tasks(db, n, None, "quiet", None, 50, 0), "tasks_by_to_name"),
        (f"tasks?to_name=&status=, {who}",
         lambda db, n=nets: task_store.list_tasks(db, n, "running", "a1", None, 50, 0), "tasks_by_to_name"),
        (f"tasks?from_name=&status=, {who}",
         lambda db, n=nets: task_store.list_tasks(db, n, "replied", None, "a1", 50, 0), "tasks_by_from_name"),
        (f"tasks?from_name=, {who}",
         lambda db, n=nets: task_store.list_tasks(db, n, None, None, "a1", 50, 10), "tasks_by_from_name"),
        (f"tasks?flag=, {who}",
         lambda db, n=nets: task_store.list_tasks(db, n, None, None, None, 50, 0, "unanswered"), "tasks_flagged"),
        (f"tasks?flag=&status=, {who}",
         lambda db, n=nets: task_store.list_tasks(db, n, "running", None, None, 50, 0, "unanswered"), "tasks_flagged"),
        (f"tasks?to_name=&flag=, {who}",
         lambda db, n=nets: task_store.list_tasks(db, n, None, "a1", None, 50, 0, "unanswered"), "tasks_by_to_name"),
        (f"messages, {who}",
         lambda db, n=nets: message_store.list_messages(db, n, None, None, False, 50, 0), "messages_by_network"),
        (f"messages?alias=, {who}",
         lambda db, n=nets: message_store.list_messages(db, n, "quiet", None, False, 50, 0),
         "messages_by_recipient"),
        (f"messages?alias=&kind=, {who}",
         lambda db, n=nets: message_store.list_messages(db, n, "quiet", "task", False, 50, 0),
         "messages_by_recipient"),
        (f"messages?alias=&unread=1, {who}",
         lambda db, n=nets: message_store.list_messages(db, n, "a1", None, True, 50, 0), "messages_unread"),
        (f"messages?kind=&unread=1, {who}",
         lambda db, n=nets: message_store.list_messages(db, n, None, "task", True, 50, 0),
         "messages_unread_by_network"),
        (f"messages?kind=, {who}",
         lambda db, n=nets: message_store.list_messages(db, n, None, "notice", False, 50, 0), "messages_by_kind"),
        (f"messages?unread=1, {who}",
         lambda db, n=nets: message_store.list_messages(db, n, None, None, True, 50, 0),
         "messages_unread_by_network"),
        (f"completions, {who}",
         lambda db, n=nets: task_store.list_completions(db, n, None, 50, 0), "completions_by_network"),
        (f"completions?alias=, {who}",
         lambda db, n=nets: task_store.list_completions(db, n, "quiet", 50, 0), "completions_by_alias"),
        (f"task_events, {who}",
         lambda db, n=nets: task_store.list_task_events(db, n, None, 50, 0), "task_events_by_network"),
        (f"task_events?task_id=, {who}",
         lambda db, n=nets: task_store.list_task_events(db, n, "t0-1", 50, 0), "task_events_by_task"),
        (f"stats task counts, {who}", lambda db, n=nets: task_store.task_counts(db, n), "task_counts"),
        (f"stats session counts, {who}", lambda db, n=nets: session_store.session_counts(db, n, 0.0),
         "sqlite_autoindex_sessions_1"),
    ]
# Each list also has a variant whose rows SQLite builds as JSON text (the REST answers): same filters, same plan.
JSON_TWINS = {task_store.list_tasks: task_store.list_tasks_json,
              message_store.list_messages: message_store.list_messages_json,
              task_store.list_completions: task_store.list_completions_json,
              task_store.list_task_events: task_store.list_task_events_json}
PAIRS: list[tuple[str, Callable[[PlanRecorder], Any], Callable[[PlanRecorder], Any]]] = []


def _json_twin(call: Callable[[PlanRecorder], Any]) -> Callable[[PlanRecorder], Any] | None:
    """The same call to the JSON variant of the store function `call` uses (None if it has none): the case's
    lambda looks the function up on its module when it runs, so the twin stands in for it there meanwhile."""
    for plain, twin in JSON_TWINS.items():
        if plain.__name__ in call.__code__.co_names:
            def run(db: PlanRecorder, call: Callable[[PlanRecorder], Any] = call, plain: Any = plain,
                    twin: Any = twin) -> Any:
                module = task_store if plain.__module__ == task_store.__name__ else message_store
                setattr(module, plain.__name__, twin)
                try:
                    return call(db)
                finally:
                    setattr(module, plain.__name__, plain)
            return run
    return None


for what, call, index in list(CASES):
    twin = _json_twin(call)
    if twin is not None:
        PAIRS.append((what, call, twin))
        CASES.append((f"{what} (JSON)", twin, index))
CASES += [
    ("audit log of networks", lambda db: audit_store.list_entries(db, A, None, 50, 0), "audit_by_network"),
    ("inbox count (kept by triggers)", lambda db: message_store.unread_count(db, "net_a", "a1"), "unread_counts"),
]


@pytest.mark.parametrize(("call", "index"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_query_reads_along_its_index(db: PlanRecorder, call: Callable[[PlanRecorder], Any], index: str) -> None:
    plan = plan_of(db, call)
    reads = [line for line in plan if line.startswith(("SEARCH", "SCAN"))]
    if plan[0].startswith("CO-ROUTINE (subquery-"):
        # A JSON page (page_json): one aggregate reads the page query, run as a co-routine, in its order.
        assert reads[-1] == "SCAN " + plan[0].removeprefix("CO-ROUTINE "), plan
        reads = reads[:-1]
    elif plan[0] == "CO-ROUTINE p":
        # A keyed JSON page (keyed_page_json): the page query walks its index for the keys alone, then each row
        # of the page is read once by rowid, with its one-row lookups (a task's completion).
        keys_end = reads.index("SCAN p")
        rows = reads[keys_end + 1:]
        assert rows[0].startswith("SEARCH t USING INTEGER PRIMARY KEY (rowid=?)"), plan
        assert all(UNIQUE_LOOKUP.match(line) for line in rows), plan
        reads = reads[:keys_end]
    assert reads, plan
    main, lookups = reads[0], reads[1:]
    # The table read: a SEARCH with the intended index (or the primary key of a WITHOUT ROWID table).
    assert main.startswith("SEARCH") and (f"INDEX {index} " in main or ("PRIMARY KEY" in main and index in main)), plan
    for line in lookups:
        # Other reads: the intended index again (a merge has one walk per network), or the one-row lookups
        # that put a text stored once back (a task's content, a completion's result, a shared body).
        assert line == main or UNIQUE_LOOKUP.match(line), plan
    # Ordered lists must come out of the index in order (a temp B-tree sorts every matching row).
    if "task_counts" not in index:
        assert not any("TEMP B-TREE" in line for line in plan), plan


def test_the_inbox_sort_only_sorts_unread_items(db: PlanRecorder) -> None:
    """The inbox orders by priority first, so it sorts; the index bounds that to the alias's unread items."""
    plan = plan_of(db, lambda d: message_store.unread(d, "net_a", "a1", 50))
    assert any("INDEX messages_unread (network_id=? AND to_name=? AND read_at=?)" in line for line in plan), plan


def test_the_inbox_reads_only_the_agents_open_tasks(db: PlanRecorder) -> None:
    """Open tasks come urgent first (a sort), over the agent's open tasks only, not all it ever received."""
    plan = plan_of(db, lambda d: task_store.open_tasks_of(d, "net_a", "a1", 50))
    assert plan[0] == "SEARCH tasks USING INDEX tasks_by_recipient (network_id=? AND to_name=? AND status=?)", plan


def test_a_list_over_many_networks_merges_one_index_walk_per_network(db: PlanRecorder) -> None:
    plan = plan_of(db, lambda d: task_store.list_tasks(d, NETS, "running", None, None, 50, 0))
    assert sum("MERGE (UNION ALL)" in line for line in plan) == len(NETS) - 1, plan


@pytest.mark.parametrize("nets", [A, NETS], ids=["one network", "all networks"])
def test_the_task_page_walks_keys_then_reads_each_task_and_completion_once(db: PlanRecorder,
                                                                           nets: list[str]) -> None:
    """The REST task page (up to 500 rows, ~775 KB): the index walks (merged for a person's networks) carry only
    the order keys and the rowid, not each ~1.5 KB record; each task is then read by rowid and its completion
    joined once, with no correlated subquery per row (docs/performance.md#lists-at-a-million-messages)."""
    plan = plan_of(db, lambda d: task_store.list_tasks_json(d, nets, "failed", None, None, 500, 0))
    walks = [line for line in plan if line.startswith("SEARCH tasks ")]
    assert len(walks) == len(nets), plan
    assert all(line.startswith("SEARCH tasks USING COVERING INDEX tasks_by_status ") for line in walks), plan
    assert plan[plan.index("SCAN p") + 1:] == ["SEARCH t USING INTEGER PRIMARY KEY (rowid=?)",
                                               "SEARCH c USING INDEX sqlite_autoindex_completions_1 (task_id=?)"
                                               " LEFT-JOIN"], plan
    assert not any("SUBQUERY" in line for line in plan), plan


@pytest.mark.parametrize("nets", [A, NETS], ids=["one network", "all networks"])
def test_lists_are_newest_first_with_filters_and_offset(db: PlanRecorder, nets: list[str]) -> None:
    """The merged and the single-network queries return the same rows as a plain sort would."""
    rows = task_store.list_tasks(db, nets, "running", None, None, 7, 3)
    want = db.query(f"SELECT task_id FROM tasks WHERE network_id IN ({','.join('?' * len(nets))})"
                    " AND status = 'running' ORDER BY created_ts DESC, rowid DESC LIMIT 7 OFFSET 3", tuple(nets))
    assert [r["task_id"] for r in rows] == [r["task_id"] for r in want]
    assert "_ts" not in rows[0] and "_seq" not in rows[0] and "created_ts" not in rows[0]
    msgs = message_store.list_messages(db, nets, "a1", "task", False, 5, 2)
    want = db.query(f"SELECT message_id FROM messages WHERE network_id IN ({','.join('?' * len(nets))})"
                    " AND to_name = 'a1' ORDER BY created_ts DESC, rowid DESC LIMIT 5 OFFSET 2", tuple(nets))
    assert [m["message_id"] for m in msgs] == [m["message_id"] for m in want]
    assert task_store.task_counts(db, nets) == {"running": 10 * len(nets), "replied": 10 * len(nets)}


@pytest.mark.parametrize("nets", [A, NETS], ids=["one network", "all networks"])
@pytest.mark.parametrize("status", [None, "idle"])
def test_the_status_page_walks_the_sessions_key_in_order(db: PlanRecorder, nets: list[str],
                                                         status: str | None) -> None:
    """/api/status: one walk of the sessions primary key in (network, alias) order, stopped at the page; the
    only sort is of the page itself (json_group_array keeps its order), never of every session."""
    for call in (lambda d: session_store.status_page_json(d, nets, 0.0, status, 500, 0),
                 lambda d: session_store.status_records(d, nets, 0.0, -1, 0)):
        plan = plan_of(db, call)
        assert "SEARCH sessions USING INDEX sqlite_autoindex_sessions_1 (network_id=?)" in plan, plan
        assert [line for line in plan if "TEMP B-TREE" in line] in (
            [], ["USE TEMP B-TREE FOR json_group_array(ORDER BY)"]), plan
        assert [line for line in plan if line.startswith("SCAN")] == ["SCAN (subquery-1)"], plan


def test_sessions_with_live_streams_are_looked_up_by_key(db: PlanRecorder) -> None:
    """/api/stats with streams open: the live aliases (from memory) drive the loop, each session found by its key."""
    plan = plan_of(db, lambda d: session_store.count_lapsed(d, json.dumps([["net_a", "a1"], ["net_b", "a2"]]), 0.0))
    assert plan[0].startswith("SCAN j VIRTUAL TABLE"), plan
    assert plan[1:] == ["SEARCH s USING INDEX sqlite_autoindex_sessions_1 (network_id=? AND alias=?)"], plan


@pytest.mark.parametrize(("plain", "as_json"), [p[1:] for p in PAIRS], ids=[p[0] for p in PAIRS])
def test_json_lists_hold_the_same_records(db: PlanRecorder, plain: Callable[[PlanRecorder], Any],
                                          as_json: Callable[[PlanRecorder], Any]) -> None:
    """The REST lists (JSON built by SQLite) hold what the dict rows hold, in the same order, with the same keys
    in the same order and the same JSON types (a completion's artifacts: an array)."""
    rows, text = plain(db), as_json(db)
    for row in rows:
        if "artifacts" in row:
            row["artifacts"] = json.loads(row["artifacts"])
    got = json.loads(text)
    assert got == rows and [list(r) for r in got] == [list(r) for r in rows]
