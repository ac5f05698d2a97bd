"""Background jobs: presence is written only when it changes, and events are pruned in small batches."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
import trio

from commhub_lib.ids import now_ts
from commhub_lib.service import jobs
from commhub_lib.store import events as event_store
from tests.conftest import mcp_call, own_server, register


def wal_size(db_path: str) -> int:
    """Bytes in the database's WAL file (0 if there is none)."""
    wal = db_path + "-wal"
    return os.path.getsize(wal) if os.path.exists(wal) else 0


def session_row(db, alias: str) -> dict:  # noqa: ANN001
    row = db.query_one("SELECT status, last_seen_ts FROM sessions WHERE alias = ?", (alias,))
    assert row is not None
    return row


async def test_sweeper_writes_a_streaming_session_only_when_its_stored_presence_is_stale(tmp_path: Path) -> None:
    # sweep_seconds is long: the test runs sweep_once itself.
    async with own_server(tmp_path, "presence", sweep_seconds=3600, presence_timeout_seconds=90) as server:
        db = server.hub.db
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            account = await register(client)
            await mcp_call(client, account.network_token, "report_status", {"alias": "streamer"})
            async with client.stream("GET", "/events/streamer", params={"token": account.network_token}) as r:
                assert r.status_code == 200
                with trio.fail_after(5):
                    while True:
                        if server.hub.broker.online_aliases():
                            break
                        await trio.sleep(0.01)
                fresh = session_row(db, "streamer")["last_seen_ts"]
                changes = db.con.total_changes()
                for _ in range(3):
                    await jobs.sweep_once(server.hub)
                # Recently seen and streaming: nothing to write (it used to be rewritten every round).
                assert session_row(db, "streamer")["last_seen_ts"] == fresh
                assert db.con.total_changes() == changes

                # Stored presence older than a third of the timeout: refreshed.
                with db.write():
                    db.execute("UPDATE sessions SET last_seen_ts = ? WHERE alias = 'streamer'", (now_ts() - 40,))
                await jobs.sweep_once(server.hub)
                assert session_row(db, "streamer")["last_seen_ts"] > now_ts() - 5

                # Stored offline while a stream is open: back to idle at the next sweep.
                with db.write():
                    db.execute("UPDATE sessions SET status = 'offline' WHERE alias = 'streamer'")
                await jobs.sweep_once(server.hub)
                assert session_row(db, "streamer")["status"] == "idle"


async def test_sweeper_marks_silent_sessions_offline_in_batches(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobs, "BATCH", 7)
    async with own_server(tmp_path, "batches", sweep_seconds=3600, presence_timeout_seconds=90) as server:
        db = server.hub.db
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            account = await register(client)
            for i in range(20):
                await mcp_call(client, account.network_token, "report_status", {"alias": f"a{i}"})
        with db.write():
            db.execute("UPDATE sessions SET last_seen_ts = ?, last_call_ts = ? WHERE alias != 'a0'",
                       (now_ts() - 1000, now_ts() - 1000))
        assert await jobs.sweep_once(server.hub) == 19
        statuses = {r["status"] for r in db.query("SELECT status FROM sessions WHERE alias != 'a0'")}
        assert statuses == {"offline"} and session_row(db, "a0")["status"] == "idle"
        assert await jobs.sweep_once(server.hub) == 0  # already offline: nothing more to write


async def test_prune_deletes_in_batches_and_keeps_recent_events(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobs, "PRUNE_BATCH", 50)
    monkeypatch.setattr(jobs, "CHECKPOINT_AFTER_ROWS", 100)
    deletes: list[int] = []
    real_delete = jobs.maintenance_store.delete_events_through

    def counting_delete(db, last_id, cutoff):  # noqa: ANN001, ANN202
        deletes.append(real_delete(db, last_id, cutoff))
        return deletes[-1]

    monkeypatch.setattr(jobs.maintenance_store, "delete_events_through", counting_delete)
    async with own_server(tmp_path, "prune", sweep_seconds=3600) as server:
        db = server.hub.db
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            account = await register(client)
        with db.write():
            for i in range(230):
                event_store.insert_event(db, account.network_id, "x", "new_message", f'{{"n":{i}}}',
                                         "2000-01-01 00:00:00")
            for _ in range(5):
                event_store.insert_event(db, account.network_id, "x", "new_message", '{"recent":true}',
                                         "2999-01-01 00:00:00")
        assert await jobs.prune_events(server.hub) == 230
        assert len(deletes) == 5 and max(deletes) <= 50  # five transactions of at most 50 rows
        left = db.query("SELECT data FROM events WHERE alias = 'x'")
        assert [r["data"] for r in left] == ['{"recent":true}'] * 5
        assert await jobs.prune_events(server.hub) == 0
        # The WAL was checkpointed after the big prune (not left to grow).
        assert wal_size(db.path) == 0


async def test_the_expiry_round_opens_no_write_transaction_when_nothing_is_due(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sweeper runs expire_tasks every round: with nothing past its start_by it only reads (a write transaction
    per round took the write lock every few seconds on an idle hub); a due task is still expired."""
    async with own_server(tmp_path, "expiry", sweep_seconds=3600) as server:
        db = server.hub.db
        writes = []
        real_write = db.write

        def counting_write():  # noqa: ANN202
            writes.append(1)
            return real_write()

        monkeypatch.setattr(db, "write", counting_write)
        assert await jobs.expire_tasks(server.hub) == 0
        assert writes == []
        monkeypatch.setattr(db, "write", real_write)
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            account = await register(client)
            await mcp_call(client, account.network_token, "report_status", {"alias": "worker"})
            sent = await client.post("/api/tasks", headers=account.auth,
                                     json={"to": "worker", "content": "soon", "start_by": 1})
            assert sent.status_code == 200, sent.text
        with db.write():
            db.execute("UPDATE tasks SET start_by_ts = ? WHERE task_id = ?", (now_ts() - 1, sent.json()["task_id"]))
        monkeypatch.setattr(db, "write", counting_write)
        assert await jobs.expire_tasks(server.hub) == 1
        assert writes
