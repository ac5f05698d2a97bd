"""The REST list pages as one JSON value built by SQLite (store/paging.page_json).

A page is a single aggregate over the page query: SQLite returns one text, not one row per record. These
tests pin what that must keep: the records, their order (group_concat has no ORDER BY of its own, it reads
the page in the order the page query yields it), the keys and JSON types, for one network and for the
merge over several, at the 500-row cap, past the end, and with text that JSON must escape.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from commhub_lib.db import Database
from commhub_lib.store import messages as message_store
from commhub_lib.store import tasks as task_store
from tests.conftest import pg_database_at_schema, seed_owner_and_networks

NETS = ["net_a", "net_b", "net_c"]
TASKS_PER_NETWORK = 260  # the three together pass the 500-row cap of a page
# Text that JSON must escape, and characters that some readers take for line breaks.
ODD_TEXT = 'quote " backslash \\ tab \t newline \n nul-ish \x01 accent é emoji \U0001F600 sep \u2028 end'


class CountingDatabase(Database):
    """A Database that counts the rows each read query returns."""

    def __init__(self, path: str):
        super().__init__(path)
        self.rows_returned: list[int] = []

    def query(self, sql: str, params: Any = ()) -> list[dict[str, Any]]:
        """Run the query and note how many rows it gave."""
        rows = super().query(sql, params)
        self.rows_returned.append(len(rows))
        return rows


def counting_pg(url: str) -> CountingDatabase:
    """The same counting on the PostgreSQL engine (docs/postgresql.md): the pages must be the same there."""
    from commhub_lib.db_pg import PgDatabase

    class CountingPg(PgDatabase):
        def __init__(self, url: str):
            super().__init__(url)
            self.rows_returned: list[int] = []

        def query(self, sql: str, params: Any = ()) -> list[dict[str, Any]]:
            rows = super().query(sql, params)
            self.rows_returned.append(len(rows))
            return rows

    return CountingPg(url)  # type: ignore[return-value]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CountingDatabase]:
    """Tasks, inbox items, events and completions in three networks, written out of time order: rowids do not
    follow created_ts, networks interleave, and many rows share a created_ts (the rowid breaks the tie). On each
    engine (PostgreSQL: skipped where it is not installed)."""
    if request.param == "postgresql":
        cluster = request.getfixturevalue("pg_cluster")
        database = counting_pg(pg_database_at_schema(cluster))
    else:
        database = CountingDatabase(str(Path(tmp_path_factory.mktemp("pages")) / "pages.db"))
    rng = random.Random(10)
    order = [(net, i) for net in NETS for i in range(TASKS_PER_NETWORK)]
    rng.shuffle(order)
    with database.write():
        seed_owner_and_networks(database, NETS)
        for net, i in order:
            ts = 1000.0 + i // 4  # four tasks of a network share each time
            task_id, message_id = f"t-{net}-{i}", f"m-{net}-{i}"
            text = ODD_TEXT if i % 7 == 0 else f"task {i} of {net}"
            task_store.insert_task(database, {
                "task_id": task_id, "network_id": net, "from_name": "a1", "to_name": f"a{i % 3}",
                "from_kind": "agent", "to_kind": "agent", "title": text if i % 2 else None, "content": text,
                "context": None, "priority": "normal", "status": "failed" if i % 5 else "running",
                "deadline": None, "idempotency_key": None, "message_id": message_id,
                "created_at": f"2026-12-06T10:{i // 60:02d}:{i % 60:02d}Z", "created_ts": ts,
                "updated_at": "t"})
            message_store.insert_message(database, {
                "message_id": message_id, "network_id": net, "from_name": "a1", "to_name": f"a{i % 3}",
                "from_kind": "agent", "to_kind": "agent", "kind": "task", "content": "", "priority": "normal",
                "in_reply_to": None, "task_id": task_id, "status": None, "created_at": "t", "created_ts": ts})
            task_store.insert_task_event(database, task_id, net, "delivered", "a1", text, "t")
            if i % 5:
                task_store.insert_completion(database, task_id, net, f"a{i % 3}", "failed", text,
                                             json.dumps([f"file-{i}.txt"]) if i % 2 else "[]", i / 3,
                                             f"2026-12-06 11:00:{i % 60:02d}")
    yield database
    database.close()


# (what, the dict rows, the JSON text) of the same page
Pair = tuple[Callable[[Database], list[dict[str, Any]]], Callable[[Database], str]]


def pairs(nets: list[str], limit: int, offset: int) -> dict[str, Pair]:
    """Each REST list with a filter or none, as dict rows (MCP's form) and as SQLite's JSON (REST's)."""
    return {
        "tasks": (lambda d: task_store.list_tasks(d, nets, None, None, None, limit, offset),
                  lambda d: task_store.list_tasks_json(d, nets, None, None, None, limit, offset)),
        "tasks?status=failed": (lambda d: task_store.list_tasks(d, nets, "failed", None, None, limit, offset),
                                lambda d: task_store.list_tasks_json(d, nets, "failed", None, None, limit, offset)),
        "tasks?to_name=a1": (lambda d: task_store.list_tasks(d, nets, None, "a1", None, limit, offset),
                             lambda d: task_store.list_tasks_json(d, nets, None, "a1", None, limit, offset)),
        "messages": (lambda d: message_store.list_messages(d, nets, None, None, False, limit, offset),
                     lambda d: message_store.list_messages_json(d, nets, None, None, False, limit, offset)),
        "messages?alias=a2&unread=1": (
            lambda d: message_store.list_messages(d, nets, "a2", None, True, limit, offset),
            lambda d: message_store.list_messages_json(d, nets, "a2", None, True, limit, offset)),
        "completions": (lambda d: task_store.list_completions(d, nets, None, limit, offset),
                        lambda d: task_store.list_completions_json(d, nets, None, limit, offset)),
        "task_events": (lambda d: task_store.list_task_events(d, nets, None, limit, offset),
                        lambda d: task_store.list_task_events_json(d, nets, None, limit, offset)),
    }


CASES = [(who, nets, limit, offset, what)
         for who, nets in (("one network", NETS[:1]), ("three networks", NETS))
         for limit, offset in ((500, 0), (50, 0), (37, 113), (500, 700), (10, 10_000))
         for what in pairs(NETS, 1, 0)]


@pytest.mark.parametrize(("nets", "limit", "offset", "what"), [c[1:] for c in CASES],
                         ids=[f"{c[4]}, {c[0]}, limit {c[2]} offset {c[3]}" for c in CASES])
def test_a_json_page_holds_the_rows_of_the_page_in_order(db: CountingDatabase, nets: list[str], limit: int,
                                                         offset: int, what: str) -> None:
    plain, as_json = pairs(nets, limit, offset)[what]
    rows = plain(db)
    for row in rows:
        if "artifacts" in row:
            row["artifacts"] = json.loads(row["artifacts"])
    text = as_json(db)
    got = json.loads(text)
    assert got == rows  # the same records in the same order, with the same JSON types
    assert [list(r) for r in got] == [list(r) for r in rows]  # keys in the same order


def test_the_sample_has_pages_worth_checking(db: CountingDatabase) -> None:
    """The cases above cover a full 500-row page, a merge that interleaves networks, ties of created_ts and
    text JSON must escape (else they would pass for the wrong reasons)."""
    full = task_store.list_tasks(db, NETS, None, None, None, 500, 0)
    assert len(full) == 500
    assert len({r["network_id"] for r in full[:12]}) == len(NETS)
    assert sum(r["content"] == ODD_TEXT for r in full) > 50
    times = [r["created_at"] for r in full]
    assert len(set(times)) < len(times)


def test_a_json_page_is_one_value_from_sqlite(db: CountingDatabase) -> None:
    """SQLite hands over the page as one text: no row per record through APSW and no join in Python (at 500
    rows, ~775 KB, that was ~1 ms of the event loop)."""
    for nets in (NETS[:1], NETS):
        for what, (_, as_json) in pairs(nets, 500, 0).items():
            db.rows_returned.clear()
            assert len(json.loads(as_json(db))) > 0, what
            assert db.rows_returned == [1], what


@pytest.mark.parametrize("nets", [NETS[:1], NETS], ids=["one network", "three networks"])
def test_the_task_page_is_byte_for_byte_the_records_json_object_builds_one_by_one(db: CountingDatabase,
                                                                                   nets: list[str]) -> None:
    """The task page comes out of json_group_array over each row's json_object (store/paging.keyed_page_json):
    the answer's bytes must be those of the records built one at a time and joined with commas in brackets
    (what the page was before), including text JSON must escape and a result that is the completion's."""
    record = task_store.TASK_RECORD.replace("t.", "tasks.").replace("c.result", "(SELECT result FROM completions"
                                                                    " WHERE task_id = tasks.task_id)")
    for status in (None, "failed"):
        ids = [r["task_id"] for r in task_store.list_tasks(db, nets, status, None, None, 500, 0)]
        records = [db.query_one(f"SELECT {record} AS r FROM tasks WHERE task_id = ?", (i,))["r"] for i in ids]
        page = task_store.list_tasks_json(db, nets, status, None, None, 500, 0)
        assert page == "[" + ",".join(records) + "]"
        assert sum('quote \\" backslash \\\\ tab \\t' in r for r in records) > 10  # text JSON escapes
        assert sum('"result":"task ' in r for r in records) > 10  # results that are the completions'
