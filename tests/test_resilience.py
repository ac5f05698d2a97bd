"""The hub survives the disk and the lock: another process holding the write lock, a full disk, a failing
background round, a database file replaced under it, a second server on the same file, an unusable file."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import apsw
import httpx
import pytest
import trio

from commhub_lib.runtime.server import ServerHandle, StartupError, run_server
from commhub_lib.store import maintenance as maintenance_store
from tests.conftest import make_settings, mcp_call, own_server, register

ROOT = Path(__file__).resolve().parents[1]
WAIT = 10

# A second process that takes the database's write lock and holds it until told (a line on stdin).
LOCK_HOLDER = """
import sys, apsw
con = apsw.Connection(sys.argv[1])
con.setbusytimeout(5000)
con.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
con.execute("ROLLBACK")
"""


@contextmanager
def lock_held_by_another_process(db_path: str) -> Iterator[subprocess.Popen]:
    """Hold the write lock of db_path from a separate process until the block ends."""
    proc = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, db_path], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"locked"
        yield proc
    finally:
        release(proc)


def release(proc: subprocess.Popen) -> None:
    """Let the lock holder roll back and exit."""
    if proc.poll() is None:
        assert proc.stdin is not None
        proc.stdin.write(b"\n")
        proc.stdin.flush()
        proc.wait(timeout=10)


async def task_to(client: httpx.AsyncClient, account, alias: str, content: str = "work") -> httpx.Response:
    """Send a task over REST (a write)."""
    return await client.post("/api/tasks", headers=account.auth, json={"to": alias, "content": content})


async def wait_for_log(caplog: pytest.LogCaptureFixture, logger: str, text: str) -> None:
    """Wait until a record of `logger` containing `text` has been logged."""
    with trio.fail_after(WAIT):
        while True:
            if any(rec.name == logger and text in rec.getMessage() for rec in caplog.records):
                return
            await trio.sleep(0.05)


# --- the write lock held by another process --------------------------------------------------------

@pytest.mark.subprocess
async def test_lock_held_by_another_process_neither_freezes_reads_nor_loses_writes(tmp_path: Path) -> None:
    async with own_server(tmp_path, "locked", write_lock_wait_seconds=1.0) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            account = await register(client)
            await mcp_call(client, account.network_token, "report_status", {"alias": "worker"})
            assert (await client.get("/api/status", headers=account.auth)).status_code == 200

            with lock_held_by_another_process(server.hub.db.path) as holder:
                busy: dict[str, httpx.Response] = {}

                async def blocked_write() -> None:
                    busy["r"] = await task_to(client, account, "worker")

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(blocked_write)
                    await trio.sleep(0.2)  # let the write start waiting for the lock
                    # While it waits (1 s), the loop keeps serving: each answer well inside the old 5 s stall.
                    for _ in range(3):
                        with trio.fail_after(1):
                            assert (await client.get("/health")).status_code == 200
                    with trio.fail_after(1):
                        r = await client.get("/api/status", headers=account.auth)
                    assert r.status_code == 200 and r.json()["sessions"][0]["alias"] == "worker"
                    # MCP: a reading tool still answers; a writing one says database_busy (a tool error).
                    status = await mcp_call(client, account.network_token, "get_all_status")
                    assert not status["isError"], status
                    sent = await mcp_call(client, account.network_token, "send_message",
                                          {"to": "worker", "content": "hi"})
                    assert sent["isError"] and sent["structuredContent"]["error"] == "database_busy", sent
                r = busy["r"]
                assert r.status_code == 503, r.text
                assert r.json()["error"] == "database_busy" and "retry" in r.json()["message"]
                assert int(r.headers["Retry-After"]) >= 1

                # A write that starts while the lock is held and sees it released within its deadline succeeds.
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(blocked_write)
                    await trio.sleep(0.3)
                    await trio.to_thread.run_sync(release, holder)
                assert busy["r"].status_code == 200, busy["r"].text

            tasks = (await client.get("/api/tasks", headers=account.auth)).json()["tasks"]
            assert len(tasks) == 1  # the refused write left nothing behind, the accepted one is stored


# --- disk full -------------------------------------------------------------------------------------

@contextmanager
def small_disk(tmp_path: Path) -> Iterator[Path | None]:
    """A 4 MiB tmpfs when this machine lets us mount one (root), else None."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = False
    if os.geteuid() == 0 and shutil.which("mount"):
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)],
                                 capture_output=True).returncode == 0
    try:
        yield mount_point if mounted else None
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def fill(directory: Path) -> Path:
    """Write a file until the disk is full; returns it (delete it to free the space)."""
    filler = directory / "filler"
    chunk = b"\0" * 65536
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(chunk)
                f.flush()
        except OSError:
            pass
    return filler


@pytest.mark.subprocess
async def test_full_disk_answers_507_keeps_serving_reads_and_recovers(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    """A full disk while an agent holds a stream: the sweeper's presence writes fail (logged, retried, the
    server lives), a send answers 507 storage_full, reads go on, and writes work again once space is freed.
    Uses a real tmpfs where it can be mounted; else SQLite's max_page_count gives the same SQLITE_FULL."""
    caplog.set_level(logging.INFO)
    with small_disk(tmp_path) as disk:
        db_dir = disk or tmp_path
        async with own_server(db_dir, "full", presence_timeout_seconds=0.3, sweep_seconds=0.05) as server:
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
                account = await register(client)
                await mcp_call(client, account.network_token, "report_status", {"alias": "agent"})
                async with client.stream("GET", "/events/agent", params={"token": account.network_token}) as stream:
                    assert stream.status_code == 200
                    if disk is not None:
                        filler = fill(disk)
                    else:
                        con = server.hub.db.con
                        con.pragma("max_page_count", con.pragma("page_count"))
                    r = await task_to(client, account, "agent", "x" * 60_000)
                    assert r.status_code == 507, r.text
                    assert r.json()["error"] == "storage_full" and "disk is full" in r.json()["message"]
                    # Background rounds fail and are retried, never ending the server.
                    await wait_for_log(caplog, "commhub.jobs", "storage_full")
                    assert (await client.get("/health")).status_code == 200
                    r = await client.get("/api/status", headers=account.auth)
                    assert r.status_code == 200 and r.json()["sessions"][0]["alias"] == "agent"

                    if disk is not None:
                        filler.unlink()
                    else:
                        con.pragma("max_page_count", 1 << 30)
                    r = await task_to(client, account, "agent", "after the disk was freed")
                    assert r.status_code == 200, r.text
                    await wait_for_log(caplog, "commhub.jobs", "recovered")


# --- a failing background round --------------------------------------------------------------------

async def test_sweeper_survives_errors_and_retries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    calls = {"n": 0}
    real = maintenance_store.presence_candidates

    def failing_twice(db, *args):  # noqa: ANN001, ANN002, ANN202
        calls["n"] += 1
        if calls["n"] == 1:
            raise apsw.IOError("injected I/O error")
        if calls["n"] == 2:
            raise RuntimeError("injected bug")
        return real(db, *args)

    monkeypatch.setattr(maintenance_store, "presence_candidates", failing_twice)
    async with own_server(tmp_path, "sweep", presence_timeout_seconds=0.3, sweep_seconds=0.05) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            account = await register(client)
            await mcp_call(client, account.network_token, "report_status", {"alias": "quiet"})
            with trio.fail_after(WAIT):  # after two failed rounds the sweeper still marks it offline
                while True:
                    r = await client.get("/api/status", headers=account.auth)
                    row = server.hub.db.query_one("SELECT status FROM sessions WHERE alias = 'quiet'")
                    if row and row["status"] == "offline":
                        break
                    await trio.sleep(0.05)
            assert r.status_code == 200
    messages = [rec.getMessage() for rec in caplog.records if rec.name == "commhub.jobs"]
    assert any("unexpected error" in m for m in messages), messages
    assert any("recovered after 2 failed round(s)" in m for m in messages), messages


# --- one instance per database, a replaced file, an unusable file -----------------------------------

@pytest.mark.subprocess
async def test_second_server_on_the_same_database_refuses_to_start(server: ServerHandle, settings) -> None:
    with pytest.raises(StartupError, match="another CommHub server is already running"):
        await run_server(settings)
    # The CLI says it in one line and exits 1.
    proc = await trio.run_process([sys.executable, str(ROOT / "commhub.py"), "serve", "--db", settings.db,
                                   "--port", "0"], capture_stdout=True, capture_stderr=True, check=False)
    lines = proc.stderr.decode().strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and "already running" in lines[0], proc.stderr
    # The first server is unaffected.
    async with httpx.AsyncClient(base_url=server.url) as client:
        assert (await client.get("/health")).status_code == 200


@pytest.mark.parametrize("how", ["replaced", "deleted"])
async def test_database_file_replaced_or_deleted_under_the_server_refuses_writes(
        tmp_path: Path, how: str, caplog: pytest.LogCaptureFixture) -> None:
    async with own_server(tmp_path, how) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            account = await register(client)
            await mcp_call(client, account.network_token, "report_status", {"alias": "worker"})
            path = server.hub.db.path
            if how == "replaced":
                shutil.copy(path, path + ".copy")
                os.replace(path + ".copy", path)
            else:
                os.unlink(path)
            r = await task_to(client, account, "worker")
            assert r.status_code == 503, r.text
            assert r.json()["error"] == "database_replaced" and "restart" in r.json()["message"]
            result = await mcp_call(client, account.network_token, "send_message", {"to": "worker", "content": "x"})
            assert result["isError"] and result["structuredContent"]["error"] == "database_replaced"
            assert (await client.get("/health")).status_code == 200
    assert any(rec.levelno == logging.CRITICAL and how in rec.getMessage() for rec in caplog.records)


def remount_read_only(mount_point: Path) -> None:
    """Make a tmpfs read-only (even root cannot write it then)."""
    assert subprocess.run(["mount", "-o", "remount,ro", str(mount_point)], capture_output=True).returncode == 0


@pytest.mark.subprocess
async def test_unusable_database_at_start_is_one_line_and_exit_1(tmp_path: Path) -> None:
    not_a_db = tmp_path / "notes.db"
    not_a_db.write_bytes(b"this is not a database, just some text that is long enough " * 100)
    newer = str(tmp_path / "newer.db")
    con = apsw.Connection(newer)
    con.pragma("user_version", 9999)
    con.execute("CREATE TABLE t(x)")
    con.close()
    cases = {str(tmp_path / "missing" / "hub.db"): "No such file or directory",
             str(not_a_db): "not a SQLite database",
             newer: "newer than this CommHub"}
    for db, expected in cases.items():
        with pytest.raises(StartupError) as caught:
            await run_server(make_settings(tmp_path, db=db))
        message = str(caught.value)
        assert message.startswith(f"cannot open the database {db}: ") and expected in message
        assert "\n" not in message
    # The CLI prints it as one line and exits 1 (no traceback).
    proc = await trio.run_process([sys.executable, str(ROOT / "commhub.py"), "serve", "--db", str(not_a_db),
                                   "--port", "0"], capture_stdout=True, capture_stderr=True, check=False)
    lines = proc.stderr.decode().strip().splitlines()
    assert proc.returncode == 1 and lines == [f"commhub: cannot open the database {not_a_db}: it is not a SQLite "
                                              "database"], proc.stderr


@pytest.mark.subprocess
async def test_read_only_database_at_start_is_one_line(tmp_path: Path) -> None:
    """Root ignores file modes, so the read-only case needs a read-only mount (skipped where none can be made)."""
    with small_disk(tmp_path) as disk:
        if disk is None:
            pytest.skip("needs a tmpfs mount (root) to make a truly read-only file")
        db = str(disk / "hub.db")
        con = apsw.Connection(db)
        con.pragma("journal_mode", "wal")
        con.close()
        remount_read_only(disk)
        with pytest.raises(StartupError) as caught:
            await run_server(make_settings(tmp_path, db=db))
        assert str(caught.value).startswith(f"cannot open the database {db}: ")
        assert "read-only" in str(caught.value).lower()


async def test_settings_give_a_fresh_server_after_the_first_one_stops(tmp_path: Path) -> None:
    """The one-instance lock is released at shutdown: the same database can be served again."""
    settings = make_settings(tmp_path, db=str(tmp_path / "again.db"))
    for _ in range(2):
        async with trio.open_nursery() as nursery:
            handle = await nursery.start(run_server, settings)
            handle.shutdown()
