"""`commhub migrate --from sqlite:… --to postgresql://…` (docs/migrate.md): a hub made by a real server on SQLite is
copied into a throwaway PostgreSQL database (tests/pg_cluster.py), interrupted and resumed without a duplicate row,
checked (counts and a sample field by field), and refused where it would mix hubs."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import apsw
import httpx
import pytest
import trio
from conftest import create_token, own_server, register, tool

from commhub_lib import cli
from commhub_lib.cli import migrate as migrate_cli
from commhub_lib.config import Settings

psycopg = pytest.importorskip("psycopg")

ROOT = Path(__file__).resolve().parents[1]
# The PostgreSQL engine (pg-store) creates the target's schema; until it is in this tree the tests build one from
# the SQLite catalog (below), with the same `seq` order columns, so the copy is tested on a schema it never saw.
HAS_ENGINE = importlib.util.find_spec("commhub_lib.db_pg") is not None
SEQ_TABLES = ("messages", "tasks", "sessions", "approvals", "completions", "schedules", "tokens")


# --- a populated SQLite hub -----------------------------------------------------------------------------------

async def populate(tmp_path: Path, name: str = "hub") -> Path:
    """A hub made through a real server on SQLite: two people, networks, agents' tokens, tasks with replies,
    messages, a broadcast, events and search rows; returned once the server has stopped (its lock released)."""
    async with own_server(tmp_path, name) as server, httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        for _person in range(2):
            acct = await register(client)
            boss = await create_token(client, acct, "boss", alias="boss")
            worker = await create_token(client, acct, "worker", alias="worker")
            await tool(client, boss, "report_status", {"alias": "boss"})
            await tool(client, worker, "report_status", {"alias": "worker"})
            for n in range(6):
                sent = await tool(client, boss, "send_task", {"to": "worker", "title": f"ünïcode task {n} ✓",
                                                              "content": f"do thing {n}\nwith 'quotes' \"and\" \\"})
                if n % 2 == 0:
                    await tool(client, worker, "send_reply", {"task_id": sent["task_id"], "status": "done",
                                                              "content": f"done {n}"})
                await tool(client, boss, "send_message", {"to": "worker", "content": f"note {n}"})
            r = await client.post("/api/broadcast", headers=acct.auth, json={"content": "standup now"})
            assert r.status_code == 200, r.text
    return tmp_path / f"{name}.db"


def sqlite_rows(path: Path, table: str) -> int:
    """Rows in a SQLite table."""
    con = apsw.Connection(str(path))
    try:
        return int(con.execute(f'SELECT count(*) FROM "{table}"').fetchall()[0][0])
    finally:
        con.close()


def pg_value(url: str, sql: str, params: tuple[Any, ...] = ()) -> Any:
    """One value from the target."""
    with psycopg.connect(url) as con:
        row = con.execute(sql, params).fetchone()
        return None if row is None else row[0]


# --- a target schema when the PostgreSQL engine is not in this tree -------------------------------------------

PG_TYPES = {"INTEGER": "bigint", "TEXT": "text", "REAL": "double precision", "BLOB": "bytea", "": "text"}


def pg_schema_from_sqlite(path: Path, url: str) -> None:
    """CommHub's tables in the target, translated from the SQLite catalog (types, NOT NULL, keys, foreign keys),
    with `seq` identities where the engine has them and, on messages, a trigger that fails any insert it sees:
    the copy must run with the table's own triggers off."""
    con = apsw.Connection(str(path))
    ddl: list[str] = []
    try:
        tables = [t for (t,) in con.execute("SELECT name FROM pragma_table_list WHERE schema = 'main' AND type ="
                                            " 'table' AND name NOT LIKE 'sqlite%' ORDER BY name")]
        order = {t: i for i, (t,) in enumerate(con.execute("SELECT name FROM sqlite_schema WHERE type = 'table'"))}
        for table in sorted(tables, key=lambda t: order[t]):
            cols = con.execute("SELECT name, type, \"notnull\", pk FROM pragma_table_info(?)", (table,)).fetchall()
            autoinc = "AUTOINCREMENT" in con.execute("SELECT sql FROM sqlite_schema WHERE name = ?",
                                                     (table,)).fetchall()[0][0].upper()
            pks = [c[0] for c in sorted((c for c in cols if c[3]), key=lambda c: c[3])]
            lines = []
            for name, ctype, notnull, pk in cols:
                line = f'"{name}" {PG_TYPES.get(ctype.upper(), "text")}'
                if pk and len(pks) == 1 and ctype.upper() == "INTEGER":
                    line += " GENERATED BY DEFAULT AS IDENTITY" if autoinc else ""
                if notnull:
                    line += " NOT NULL"
                lines.append(line)
            if table in SEQ_TABLES:
                lines.append("seq bigint GENERATED ALWAYS AS IDENTITY UNIQUE")
            if pks:
                lines.append(f"PRIMARY KEY ({', '.join(pks)})")
            for ref, src_col, dst_col in con.execute('SELECT "table", "from", "to" FROM pragma_foreign_key_list(?)',
                                                     (table,)):
                lines.append(f'FOREIGN KEY ("{src_col}") REFERENCES "{ref}" ("{dst_col or src_col}")')
            ddl.append(f'CREATE TABLE "{table}" (\n  ' + ",\n  ".join(lines) + "\n)")
    finally:
        con.close()
    ddl.append("CREATE FUNCTION fail_insert() RETURNS trigger LANGUAGE plpgsql AS "
               "$$ BEGIN RAISE EXCEPTION 'a trigger ran during the copy'; END $$")
    ddl.append("CREATE TRIGGER messages_fail AFTER INSERT ON messages FOR EACH ROW EXECUTE FUNCTION fail_insert()")
    with psycopg.connect(url, autocommit=True) as pg:
        for statement in ddl:
            pg.execute(statement)


def prepare_target(source: Path, url: str) -> None:
    """Make the target's schema unless migrate makes it itself (with the PostgreSQL engine)."""
    if not HAS_ENGINE:
        pg_schema_from_sqlite(source, url)


def migrate(source: Path, url: str, *extra: str) -> int:
    """`commhub migrate` in-process; its exit code."""
    return cli.main(["migrate", "--from", f"sqlite:{source}", "--to", url, *extra])


@pytest.fixture
async def hub(tmp_path: Path) -> Path:
    """A populated SQLite hub file (its server stopped)."""
    return await populate(tmp_path)


# --- tests ----------------------------------------------------------------------------------------------------

async def test_migrate_copies_every_table_and_verifies(hub: Path, pg_url: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """A full run: every table's count matches, the sample matches field by field, rowid order became `seq`,
    sequences continue past the copied ids (and SQLite's AUTOINCREMENT mark), progress lines were shown."""
    prepare_target(hub, url := pg_url)
    assert migrate(hub, url, "--chunk-size", "7") == 0
    out, err = capsys.readouterr()
    assert "migrated and verified" in out and "MISMATCH" not in out, out
    assert "rows/s" in err and "left" in err, err  # plain progress lines (stderr is not a terminal here)
    for table in ("users", "networks", "tokens", "tasks", "messages", "events", "task_counts", "network_usage"):
        assert f"ok       {table}:" in out, out
        assert pg_value(url, f'SELECT count(*) FROM "{table}"') == sqlite_rows(hub, table), table
    assert sqlite_rows(hub, "tasks") == 12 and sqlite_rows(hub, "messages") > 12
    # rowid order -> seq: the newest task is the one with the largest seq
    con = apsw.Connection(str(hub))
    newest = con.execute("SELECT task_id FROM tasks ORDER BY rowid DESC LIMIT 1").fetchall()[0][0]
    events_mark = con.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchall()[0][0]
    con.close()
    assert pg_value(url, "SELECT task_id FROM tasks ORDER BY seq DESC LIMIT 1") == newest
    assert pg_value(url, "SELECT nextval(pg_get_serial_sequence('events', 'id'))") > events_mark
    assert pg_value(url, "SELECT nextval(pg_get_serial_sequence('tasks', 'seq'))") > 12
    assert pg_value(url, "SELECT finished_at IS NOT NULL FROM commhub_migrate_run") is True


async def test_interrupted_run_resumes_without_duplicates(hub: Path, pg_url: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """--stop-after interrupts mid-table; a re-run without --resume is refused; --resume finishes it: every count
    matches (a row copied twice would make a target count larger, or break a key)."""
    prepare_target(hub, pg_url)
    assert migrate(hub, pg_url, "--chunk-size", "5", "--stop-after", "23") == 1
    err = capsys.readouterr().err
    assert "stopped after 23 rows" in err and "--resume" in err, err
    done = pg_value(pg_url, "SELECT sum(rows_done) FROM commhub_migrate_tables")
    assert done == 23
    assert migrate(hub, pg_url) == 1
    assert "re-run with --resume" in capsys.readouterr().err
    # a second interruption further on, then the rest
    assert migrate(hub, pg_url, "--resume", "--chunk-size", "4", "--stop-after", "30") == 1
    assert pg_value(pg_url, "SELECT sum(rows_done) FROM commhub_migrate_tables") == 53
    capsys.readouterr()
    assert migrate(hub, pg_url, "--resume", "--chunk-size", "50") == 0
    out = capsys.readouterr().out
    assert "migrated and verified" in out, out
    for table in ("users", "tokens", "tasks", "messages", "events", "audit_log"):
        assert pg_value(pg_url, f'SELECT count(*) FROM "{table}"') == sqlite_rows(hub, table), table
    # a finished migration re-verified with --resume changes nothing
    assert migrate(hub, pg_url, "--resume") == 0


async def test_a_tampered_row_fails_the_check(hub: Path, pg_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The sample is compared field by field: a changed field (or a missing row) makes the check fail, exit 1."""
    prepare_target(hub, pg_url)
    assert migrate(hub, pg_url, "--sample", "1000") == 0
    with psycopg.connect(pg_url, autocommit=True) as con:
        con.execute("ALTER TABLE tasks DISABLE TRIGGER USER")
        con.execute("UPDATE tasks SET title = 'changed' WHERE seq = (SELECT min(seq) FROM tasks)")
        con.execute("ALTER TABLE tasks ENABLE TRIGGER USER")
    capsys.readouterr()
    assert migrate(hub, pg_url, "--resume", "--sample", "1000") == 1
    out = capsys.readouterr().out
    assert "MISMATCH tasks:" in out and "'changed'" in out and "check FAILED" in out, out


async def test_another_hubs_target_is_refused(tmp_path: Path, pg_url: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """A target holding another hub's migration is refused, --resume or not; so is one holding any other data."""
    first = await populate(tmp_path, "first")
    second = await populate(tmp_path, "second")
    prepare_target(first, pg_url)
    assert await trio.to_thread.run_sync(migrate, first, pg_url, "--stop-after", "10") == 1
    capsys.readouterr()
    for extra in ((), ("--resume",)):
        assert await trio.to_thread.run_sync(migrate, second, pg_url, *extra) == 1
        assert "already holds another hub's data" in capsys.readouterr().err
    # data that no migration put there
    with psycopg.connect(pg_url, autocommit=True) as con:
        con.execute("DROP TABLE commhub_migrate_run")
    assert await trio.to_thread.run_sync(migrate, second, pg_url) == 1
    assert "already holds data (in users" in capsys.readouterr().err


async def test_a_running_server_is_refused_and_usage_errors(tmp_path: Path, pg_url: str,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """The source is locked like the server locks it: a hub whose server runs is refused (1); bad URLs are usage
    errors (2); a missing file is refused (1)."""
    async with own_server(tmp_path, "live"):
        code = await trio.to_thread.run_sync(migrate, tmp_path / "live.db", pg_url)
        assert code == 1
        assert "a CommHub server is running" in capsys.readouterr().err
    assert cli.main(["migrate", "--from", f"sqlite:{tmp_path / 'live.db'}", "--to", "mysql://x/y"]) == 2
    assert cli.main(["migrate", "--from", "sqlite:", "--to", pg_url]) == 2
    assert migrate(tmp_path / "nope.db", pg_url) == 1
    assert "no SQLite database" in capsys.readouterr().err


async def test_a_target_at_another_schema_version_is_refused(hub: Path, pg_url: str,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """A target whose recorded schema version is not the source's is refused before anything is copied."""
    if HAS_ENGINE:
        importlib.import_module("commhub_lib.db_pg").PgDatabase(pg_url).close()
    else:
        pg_schema_from_sqlite(hub, pg_url)
    with psycopg.connect(pg_url, autocommit=True) as con:
        con.execute("CREATE TABLE IF NOT EXISTS commhub_schema (version integer NOT NULL)")
        con.execute("DELETE FROM commhub_schema")
        con.execute("INSERT INTO commhub_schema VALUES (1)")
    assert migrate(hub, pg_url) == 1
    assert "the target's schema is v1 and the source's v" in capsys.readouterr().err
    assert pg_value(pg_url, "SELECT to_regclass('commhub_migrate_run')") is None


def test_progress_on_a_terminal_rewrites_one_line() -> None:
    """On a terminal the progress is one line rewritten in place: rows done/total, rate, time left."""

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Tty()
    progress = migrate_cli.Progress(total=100, done=0, stream=stream)
    plan = migrate_cli.TablePlan("tasks", ["a"], ["a"], ["rowid"], False, total=100)
    plan.done = 40
    progress.started -= 2  # as if 40 rows took 2 s
    progress.update(plan, 40)
    plan.done = 100
    progress.update(plan, 60, final=True)
    text = stream.getvalue()
    assert text.startswith("\r\x1b[K") and text.count("\r\x1b[K") == 2 and text.endswith("\n"), text
    assert "tasks: 40/100 rows" in text and "rows/s" in text and " s left" in text, text


def test_chunks_are_cut_by_rows_and_by_bytes() -> None:
    """A chunk holds at most --chunk-size rows and about --chunk-bytes of text and blobs; --stop-after ends it."""
    rows = [(i, b"x" * 40) for i in range(10)]
    assert [len(b) for b in migrate_cli.batches(iter(rows), 4, 10_000, None)] == [4, 4, 2]
    assert [len(b) for b in migrate_cli.batches(iter(rows), 4, 100, None)] == [3, 3, 3, 1]
    budget = [5]
    assert [len(b) for b in migrate_cli.batches(iter(rows), 4, 10_000, budget)] == [4, 1] and budget == [0]


async def test_attachment_blobs_are_copied_byte_for_byte(hub: Path, pg_url: str,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Binary rows (attachments' blobs) come over as bytea, in byte-bounded chunks, and the sample compares them."""
    con = apsw.Connection(str(hub))
    with con:
        network = con.execute("SELECT network_id FROM networks LIMIT 1").fetchall()[0][0]
        for n in range(6):
            data = bytes(range(256)) * 300 + bytes([n])
            con.execute("INSERT INTO attachment_blobs (network_id, sha256, size, data) VALUES (?, ?, ?, ?)",
                        (network, f"sha{n}", len(data), data))
    con.close()
    prepare_target(hub, pg_url)
    assert migrate(hub, pg_url, "--chunk-bytes", "100000", "--stop-after", "1000000") == 0
    assert "ok       attachment_blobs: 6 -> 6 rows, 6 sampled" in capsys.readouterr().out
    copied = pg_value(pg_url, "SELECT data FROM attachment_blobs WHERE sha256 = 'sha5'")
    assert copied == bytes(range(256)) * 300 + b"\x05"


@pytest.mark.subprocess
@pytest.mark.slow
async def test_interrupted_and_killed_mid_copy_resumes(tmp_path: Path, pg_url: str) -> None:
    """Ctrl-C (exit 1, says --resume) and then kill -9 of `commhub migrate` mid-copy (small chunks over many rows);
    --resume then copies the rest, once."""
    hub = await populate(tmp_path)
    con = apsw.Connection(str(hub))
    with con:  # bulk rows make the copy long enough to be killed in the middle
        network = con.execute("SELECT network_id FROM networks LIMIT 1").fetchall()[0][0]
        columns = [c for (c,) in con.execute("SELECT name FROM pragma_table_info('audit_log') WHERE name <> 'id'")]
        con.executemany(f"INSERT INTO audit_log ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                        [tuple(network if c == "network_id" else ("x" if c != "detail" else "{}") for c in columns)
                         for _ in range(60_000)])
    con.close()
    prepare_target(hub, pg_url)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def audit_rows_done() -> int:
        with contextlib.suppress(psycopg.Error):
            return pg_value(pg_url, "SELECT rows_done FROM commhub_migrate_tables WHERE table_name = 'audit_log'") or 0
        return 0

    async def interrupt(extra: list[str], at_least: int, sig: signal.Signals) -> tuple[int, str]:
        """Run migrate, wait until `at_least` audit_log rows are committed (where it holds: --hold-after, so the
        signal lands mid-copy however slow or fast the run), send `sig`; its exit code and stderr."""
        with open(tmp_path / "err.txt", "w+") as err:  # noqa: ASYNC230 (a local file: the child's stderr)
            process = await trio.lowlevel.open_process(
                [sys.executable, str(ROOT / "commhub.py"), "migrate", "--from", f"sqlite:{hub}", "--to", pg_url,
                 "--chunk-size", "200", "--hold-after", f"audit_log:{at_least}", *extra], env=env,
                stdout=subprocess.DEVNULL, stderr=err)
            try:
                deadline = time.monotonic() + 120
                while audit_rows_done() < at_least:
                    assert process.poll() is None, "the migration ended before it could be interrupted"
                    assert time.monotonic() < deadline
                    await trio.sleep(0.05)
                process.send_signal(sig)
                with trio.fail_after(30):
                    code = await process.wait()
            finally:
                if process.poll() is None:
                    process.kill()
                    await process.wait()
            err.seek(0)
            return code, err.read()

    code, err = await interrupt([], 1000, signal.SIGINT)
    assert code == 1 and "interrupted" in err and "--resume" in err, err
    first = pg_value(pg_url, "SELECT count(*) FROM audit_log")
    assert first == audit_rows_done() >= 1000
    code, _ = await interrupt(["--resume"], first + 2000, signal.SIGKILL)
    assert code == -signal.SIGKILL
    copied = pg_value(pg_url, "SELECT count(*) FROM audit_log")
    assert first + 2000 <= copied < sqlite_rows(hub, "audit_log")
    assert copied == audit_rows_done()  # what is committed is exactly what the progress row says
    assert await trio.to_thread.run_sync(migrate, hub, pg_url, "--resume") == 0
    assert pg_value(pg_url, "SELECT count(*) FROM audit_log") == sqlite_rows(hub, "audit_log")


@pytest.mark.skipif(not HAS_ENGINE or "database_url" not in Settings.__dataclass_fields__,
                    reason="needs the PostgreSQL engine (commhub_lib/db_pg.py, Settings.database_url)")
async def test_a_server_on_the_migrated_database_serves_the_hub(tmp_path: Path, pg_url: str) -> None:
    """After the migration a server on PostgreSQL answers with the hub's data: the same task read back over REST."""
    async with own_server(tmp_path, "src") as server, httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        acct = await register(client, password="secret123")
        boss = await create_token(client, acct, "boss", alias="boss")
        worker = await create_token(client, acct, "worker", alias="worker")
        await tool(client, worker, "report_status", {"alias": "worker"})
        sent = await tool(client, boss, "send_task", {"to": "worker", "title": "carried over", "content": "body"})
        r = await client.get(f"/api/tasks/{sent['task_id']}", headers=acct.auth)
        assert r.status_code == 200, r.text
        before = r.json()
    assert await trio.to_thread.run_sync(migrate, tmp_path / "src.db", pg_url) == 0
    async with own_server(tmp_path, "unused", database_url=pg_url) as server, \
            httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        r = await client.get(f"/api/tasks/{sent['task_id']}", headers=acct.auth)
        assert r.status_code == 200, r.text
        assert r.json() == before
        login = await client.post("/api/auth/login", json={"username": acct.username, "password": "secret123"})
        assert login.status_code == 200, login.text
