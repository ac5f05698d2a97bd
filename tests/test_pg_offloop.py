"""PostgreSQL off the event loop (docs/postgresql.md "Off the event loop"): the hot paths' store calls run in worker
threads with pooled connections (db_pg.PgDatabase.run), never on the loop; concurrent operations keep every stream
in id order; a serialization failure is retried; the loop keeps serving while the database is slow."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from test_sse import message, sse, team, tool

from commhub_lib import db_pg
from commhub_lib.errors import DatabaseUnavailable
from commhub_lib.runtime.server import ServerHandle
from tests.conftest import make_settings, start_server

# Tasks of the server's own background jobs (presence writer, sweeps, listener...): not request paths.
REQUEST_TASK_HINTS = ("hypercorn", "serve_stream", "handle", "_pump", "app", "asgi")


@contextlib.asynccontextmanager
async def pg_server(pg_url: str, tmp_path: Path, **overrides: Any) -> AsyncIterator[tuple[ServerHandle,
                                                                                         httpx.AsyncClient]]:
    """An in-process server on a fresh PostgreSQL database, and a client of it."""
    async with trio.open_nursery() as nursery:
        handle = await start_server(nursery, make_settings(tmp_path, database_url=pg_url, **overrides))
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{handle.port}", timeout=30) as client:
                yield handle, client
        finally:
            handle.shutdown()


def loop_con(handle: ServerHandle) -> db_pg.PgConnection:
    db = handle.hub.db
    assert isinstance(db, db_pg.PgDatabase)
    return db.loop_con


async def test_the_hot_paths_run_no_statement_on_the_event_loop(pg_url: str, tmp_path: Path) -> None:
    async with pg_server(pg_url, tmp_path) as (handle, client):
        t = await team(client)
        first = await message(client, t.boss, "worker", "before")  # something to replay
        db = handle.hub.db
        assert isinstance(db, db_pg.PgDatabase)
        hops = db.hops
        trace: list[tuple[str, str]] = []
        loop_con(handle).trace = trace
        auth = {"Authorization": f"Bearer {t.boss}"}
        # MCP send_message / get_inbox / get_task; REST send / list / status; an SSE open with a replay.
        sent = await tool(client, t.boss, "send_task", {"to": "worker", "title": "t", "content": "do it"})
        await message(client, t.boss, "worker", "hello")
        inbox = await tool(client, t.worker, "get_inbox", {})
        assert inbox["count"] >= 2
        await tool(client, t.worker, "get_task", {"task_id": sent["task_id"]})
        r = await client.post("/api/messages", headers=auth, json={"to": "worker", "content": "rest"})
        assert r.status_code == 200, r.text
        assert (await client.get("/api/messages", headers=auth)).status_code == 200
        assert (await client.get("/api/tasks", headers=auth)).status_code == 200
        assert (await client.get("/api/status", headers=auth)).status_code == 200
        async with sse(client, "worker", t.worker, last_event_id=0) as frames:
            replayed = await frames.event(within=10)
            assert first in str(replayed["data"])
        loop_con(handle).trace = None
        on_loop = [(sql, task) for sql, task in trace if not task.startswith(("commhub_lib.service",
                                                                               "commhub_lib.runtime",
                                                                               "commhub_lib.db"))]
        assert on_loop == [], on_loop
        assert db.hops > hops


async def test_concurrent_sends_reach_a_stream_once_in_id_order(pg_url: str, tmp_path: Path) -> None:
    async with pg_server(pg_url, tmp_path, database_pool_size=4) as (_handle, client):
        t = await team(client)
        senders, per_sender = 8, 6
        async with sse(client, "worker", t.worker) as frames:
            async def burst(index: int) -> None:
                for n in range(per_sender):
                    await message(client, t.boss, "worker", f"{index}:{n}")

            async with trio.open_nursery() as nursery:
                for i in range(senders):
                    nursery.start_soon(burst, i)
            got = [await frames.event(within=10) for _ in range(senders * per_sender)]
        ids = [int(e["id"]) for e in got]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)


async def test_a_serialization_failure_is_retried(pg_url: str, tmp_path: Path) -> None:
    db = db_pg.PgDatabase(pg_url, pool_size=2)
    try:
        calls = []

        def flaky() -> str:
            calls.append(1)
            if len(calls) < 3:
                with db.write():
                    db.execute("SELECT 1")
                    raise db_pg.PgRetryableError("SerializationFailure: could not serialize access")
            return "done"

        assert await db.run(flaky) == "done"
        assert len(calls) == 3 and db.retries == 2
        calls.clear()

        def always() -> None:
            calls.append(1)
            raise db_pg.PgRetryableError("DeadlockDetected: deadlock detected")

        with pytest.raises(db_pg.PgRetryableError):
            await db.run(always)
        assert len(calls) == db_pg.RETRIES + 1
    finally:
        db.close()


async def test_a_real_deadlock_maps_to_the_retryable_error(pg_url: str, tmp_path: Path) -> None:
    db = db_pg.PgDatabase(pg_url, pool_size=2)
    try:
        with pytest.raises(db_pg.PgRetryableError):
            db.pg.run("DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = '40P01'; END $$", rows=False)
        with pytest.raises(db_pg.PgRetryableError):
            db.pg.run("DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = '40001'; END $$", rows=False)
    finally:
        db.close()


async def test_a_lost_pooled_connection_answers_503_and_the_pool_replaces_it(pg_url: str) -> None:
    """A pooled connection lost while idle (PostgreSQL restarted, the backend terminated) is found by the next
    operation's first statement: nothing was done, so it runs again on a new connection and its caller sees
    nothing. One lost in the middle of an operation answers 503, and the pool replaces it."""
    db = db_pg.PgDatabase(pg_url, pool_size=1)
    try:
        def backend() -> int:
            return int(db.pg.run("SELECT pg_backend_pid()")[0][0])

        pid = await db.run(backend)
        db.loop_con.run("SELECT pg_terminate_backend(?, 5000)", (pid,), rows=False)  # waits until it is gone
        retries = db.retries
        second = await db.run(backend)
        assert second != pid and db.retries == retries + 1  # run again on a new connection, unseen by the caller

        def lost_midway() -> int:
            mine = backend()
            db.loop_con.run("SELECT pg_terminate_backend(?, 5000)", (mine,), rows=False)
            return backend()  # the operation's second statement: part of it may be done, so no retry

        with pytest.raises(DatabaseUnavailable):
            await db.run(lost_midway)
        assert await db.run(backend) not in (pid, second)  # a new connection, made by the pool
    finally:
        db.close()
