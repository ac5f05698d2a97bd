"""Writes and another process's write lock (http/writelock.py WriteLockWatch): no probe before each write while
nobody else holds the lock; a write that meets it waits off the loop's back and runs again, unless it had
already committed something; after meeting it, writes wait for it first for a while."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import trio
from quart_trio import QuartTrio

from commhub_lib.db import LOOP_BUSY_TIMEOUT_MS, Database
from commhub_lib.errors import DatabaseBusy
from commhub_lib.http import writelock
from commhub_lib.http.writelock import WriteLockWatch
from tests.conftest import mcp_call, own_server, register
from tests.test_resilience import lock_held_by_another_process, release, task_to


def count_probes(db: Database, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the lock probes (BEGIN IMMEDIATE/ROLLBACK pairs) the database makes from now on."""
    probes = [0]
    try_lock = db._try_lock

    def counted() -> bool:
        probes[0] += 1
        return try_lock()

    monkeypatch.setattr(db, "_try_lock", counted)
    return probes


async def test_writes_make_no_lock_probe_while_nobody_else_holds_the_lock(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with own_server(tmp_path, "free") as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            account = await register(client)
            await mcp_call(client, account.network_token, "report_status", {"alias": "worker"})
            probes = count_probes(server.hub.db, monkeypatch)
            for _ in range(3):
                sent = await mcp_call(client, account.network_token, "send_message", {"to": "worker", "content": "x"})
                assert not sent["isError"], sent
                assert (await task_to(client, account, "worker")).status_code == 200
            assert probes[0] == 0


@pytest.mark.parametrize("surface", ["rest", "mcp"])
async def test_a_write_that_meets_the_lock_waits_for_it_and_succeeds(tmp_path: Path, surface: str) -> None:
    async with own_server(tmp_path, surface, write_lock_wait_seconds=5.0) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            account = await register(client)
            await mcp_call(client, account.network_token, "report_status", {"alias": "worker"})
            result: dict[str, object] = {}

            async def write() -> None:
                if surface == "rest":
                    result["r"] = await task_to(client, account, "worker")
                else:
                    result["r"] = await mcp_call(client, account.network_token, "send_message",
                                                 {"to": "worker", "content": "hi"})

            with lock_held_by_another_process(server.hub.db.path) as holder:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(write)
                    await trio.sleep(0.4)  # the write met the lock and waits for it
                    assert "r" not in result
                    # The loop is not held meanwhile.
                    with trio.fail_after(1):
                        assert (await client.get("/health")).status_code == 200
                    await trio.to_thread.run_sync(release, holder)
            r = result["r"]
            if surface == "rest":
                assert isinstance(r, httpx.Response) and r.status_code == 200, r
            else:
                assert isinstance(r, dict) and not r["isError"], r
            # Stored once, not twice: the failed attempt left nothing behind.
            if surface == "rest":
                tasks = (await client.get("/api/tasks", headers=account.auth)).json()["tasks"]
                assert len(tasks) == 1
            else:
                inbox = await mcp_call(client, account.network_token, "get_inbox")
                assert [i["content"] for i in inbox["structuredContent"]["items"]] == ["hi"]


async def test_after_meeting_the_lock_writes_wait_for_it_first(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    async with own_server(tmp_path, "contended", write_lock_wait_seconds=0.5) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            account = await register(client)
            await mcp_call(client, account.network_token, "report_status", {"alias": "worker"})
            with lock_held_by_another_process(server.hub.db.path):
                assert (await task_to(client, account, "worker")).status_code == 503
            probes = count_probes(server.hub.db, monkeypatch)
            assert (await task_to(client, account, "worker")).status_code == 200
            assert probes[0] == 1  # contended: the write waited for the (now free) lock before it ran


def lock_db(tmp_path: Path) -> Database:
    db = Database(str(tmp_path / "w.db"), busy_timeout_ms=LOOP_BUSY_TIMEOUT_MS)
    db.con.execute("CREATE TABLE t(x)")
    return db


async def test_an_attempt_that_failed_on_the_lock_before_committing_runs_again(tmp_path: Path) -> None:
    db = lock_db(tmp_path)
    watch = WriteLockWatch(db, 2.0)
    calls = []

    async def attempt() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise DatabaseBusy("locked")
        with db.write():
            db.execute("INSERT INTO t VALUES (1)")
        return "done"

    async with QuartTrio("t").app_context():
        watch.start_request()
        assert await watch.run(attempt) == "done"
    assert len(calls) == 2 and watch.contended()


async def test_an_attempt_that_committed_before_failing_on_the_lock_is_not_run_again(tmp_path: Path) -> None:
    db = lock_db(tmp_path)
    watch = WriteLockWatch(db, 2.0)
    calls = []

    async def attempt() -> str:
        calls.append(1)
        with db.write():
            db.execute("INSERT INTO t VALUES (1)")
        raise DatabaseBusy("locked")

    async with QuartTrio("t").app_context():
        watch.start_request()
        with pytest.raises(DatabaseBusy):
            await watch.run(attempt)
    assert len(calls) == 1
    assert db.con.execute("SELECT count(*) FROM t").get == 1


async def test_commits_of_other_tasks_are_not_counted_for_a_request(tmp_path: Path) -> None:
    db = lock_db(tmp_path)
    watch = WriteLockWatch(db, 2.0)
    seen: dict[str, object] = {}

    async def request(started: trio.Event, done: trio.Event) -> None:
        async with QuartTrio("t").app_context():
            watch.start_request()
            seen["state"] = writelock._REQUEST.get()
            started.set()
            await done.wait()
            with db.write():
                db.execute("INSERT INTO t VALUES (2)")

    async with trio.open_nursery() as nursery:
        started, done = trio.Event(), trio.Event()
        nursery.start_soon(request, started, done)
        await started.wait()
        with db.write():  # another task (a background job) commits meanwhile
            db.execute("INSERT INTO t VALUES (1)")
        done.set()
    assert seen["state"].commits == 1  # type: ignore[attr-defined]  (its own commit only)
    assert writelock._REQUEST.get() is None
