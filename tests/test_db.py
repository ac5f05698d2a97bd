"""The SQLite layer: APSW pragmas, fresh schema vs migrated schema, version guard, foreign keys, checkpoint."""

from __future__ import annotations

import re
from pathlib import Path

import apsw
import pytest
import trio
from conftest import register

from commhub_lib import db as dbmod
from commhub_lib.db import CHECKPOINT_PAGES, Database
from commhub_lib.runtime.server import ServerHandle

ROOT = Path(__file__).resolve().parents[1]


def assert_pragmas(con: apsw.Connection, busy_timeout_ms: int = dbmod.BUSY_TIMEOUT_MS) -> None:
    assert con.pragma("journal_mode") == "wal"
    assert con.pragma("synchronous") == 1  # NORMAL
    assert con.pragma("foreign_keys") == 1
    assert con.pragma("busy_timeout") == busy_timeout_ms
    assert con.pragma("cache_size") == -dbmod.CACHE_KIB


async def test_pragmas_of_the_running_server(server: ServerHandle, client) -> None:
    # The server's connection waits only briefly inside SQLite (it would stall the event loop); longer waits
    # for the lock happen asynchronously (tests/test_resilience.py). CLI connections keep the long timeout.
    assert dbmod.BUSY_TIMEOUT_MS >= 1000 and 0 < dbmod.LOOP_BUSY_TIMEOUT_MS <= 100
    assert_pragmas(server.hub.db.con, dbmod.LOOP_BUSY_TIMEOUT_MS)
    # Still set after the connection has done real work.
    await register(client)
    assert_pragmas(server.hub.db.con, dbmod.LOOP_BUSY_TIMEOUT_MS)


def test_pragmas_of_a_fresh_database_and_wal_persists(tmp_path: Path) -> None:
    path = str(tmp_path / "fresh.db")
    database = Database(path)
    assert_pragmas(database.con)
    database.close()
    plain = apsw.Connection(path)  # WAL is a property of the file; the others are per connection
    try:
        assert plain.pragma("journal_mode") == "wal"
    finally:
        plain.close()


def _normalize_sql(sql: str | None) -> str | None:
    if sql is None:
        return None
    sql = re.sub(r"--[^\n]*", " ", sql)
    sql = re.sub(r"\s+", " ", sql)
    sql = re.sub(r"\s*([(),])\s*", r"\1", sql)
    return sql.strip().lower()


def schema_of(path: str) -> dict:
    """Everything that defines a schema: sqlite_master (SQL normalized for whitespace) plus the column,
    index and foreign-key details SQLite reports, and the user_version."""
    con = apsw.Connection(path)
    try:
        master = sorted((t, n, tbl, _normalize_sql(sql)) for t, n, tbl, sql in con.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"))
        details = {}
        for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
                                    ).fetchall():
            details[table] = {
                "columns": list(con.execute(f"PRAGMA table_xinfo('{table}')")),
                "foreign_keys": sorted(con.execute(f"PRAGMA foreign_key_list('{table}')")),
                "indexes": sorted((name, unique, origin, partial, list(con.execute(f"PRAGMA index_xinfo('{name}')")))
                                  for _, name, unique, origin, partial in con.execute(f"PRAGMA index_list('{table}')")),
            }
        return {"master": master, "details": details, "user_version": con.pragma("user_version")}
    finally:
        con.close()


def test_fresh_and_migrated_databases_have_the_same_schema(tmp_path: Path) -> None:
    steps = dbmod.migration_steps()
    # Numbered from 1; gaps are allowed (parallel branches each take their own number).
    assert min(steps) == 1 and max(steps) == dbmod.SCHEMA_VERSION, "migration steps must be numbered 1..N"
    assert (dbmod.MIGRATIONS_DIR / "0001_initial.sql").is_file()

    fresh = str(tmp_path / "fresh.db")
    Database(fresh).close()  # schema.sql

    migrated = str(tmp_path / "migrated.db")
    old = apsw.Connection(migrated)  # a database made by the first release ...
    with old:
        old.execute(steps[1])
        old.pragma("user_version", 1)
    old.execute("INSERT INTO users(user_id, username, display_name, password_hash, role, created_at, updated_at)"
                " VALUES ('u_old', 'old_user', 'Old', 'x', 'admin', '2026-01-01 00:00:00', '2026-01-01 00:00:00')")
    old.close()
    database = Database(migrated)  # ... brought up to date by the later steps
    assert_pragmas(database.con)
    assert database.query_one("SELECT username FROM users WHERE user_id = 'u_old'") == {"username": "old_user"}
    assert database.con.pragma("integrity_check") == "ok"
    assert list(database.con.execute("PRAGMA foreign_key_check")) == []
    database.close()

    want, got = schema_of(fresh), schema_of(migrated)
    assert want["user_version"] == got["user_version"] == dbmod.SCHEMA_VERSION
    assert got["master"] == want["master"]
    assert got["details"] == want["details"]
    assert {t for t, *_ in want["master"]} >= {"table", "index"} and len(want["details"]) >= 10


def test_the_top_level_schema_is_the_package_schema() -> None:
    assert (ROOT / "schema.sql").read_text(encoding="utf-8") == dbmod.SCHEMA_PATH.read_text(encoding="utf-8")


def test_reopening_keeps_data_and_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "hub.db")
    database = Database(path)
    with database.write():
        database.execute("INSERT INTO users(user_id, username, display_name, password_hash, role, created_at,"
                         " updated_at) VALUES ('u_1', 'keep_me', 'K', 'x', 'admin', 't', 't')")
    database.close()
    database = Database(path)
    assert database.con.pragma("user_version") == dbmod.SCHEMA_VERSION
    assert database.query("SELECT username FROM users") == [{"username": "keep_me"}]
    database.con.pragma("user_version", dbmod.SCHEMA_VERSION + 1)
    database.close()
    with pytest.raises(RuntimeError, match="newer"):
        Database(path)


def test_foreign_keys_are_enforced_and_cascade(tmp_path: Path) -> None:
    database = Database(str(tmp_path / "fk.db"))
    try:
        with pytest.raises(apsw.ConstraintError):
            with database.write():
                database.execute("INSERT INTO members(network_id, user_id, role, joined_at)"
                                 " VALUES ('net_missing', 'u_missing', 'member', 't')")
        with database.write():
            database.execute("INSERT INTO users(user_id, username, display_name, password_hash, role, created_at,"
                             " updated_at) VALUES ('u_1', 'owner', 'O', 'x', 'admin', 't', 't')")
            database.execute("INSERT INTO networks(network_id, name, owner_id, created_at, updated_at)"
                             " VALUES ('net_1', 'default', 'u_1', 't', 't')")
            database.execute("INSERT INTO members(network_id, user_id, role, joined_at) VALUES ('net_1', 'u_1',"
                             " 'owner', 't')")
        with database.write():
            database.execute("DELETE FROM networks WHERE network_id = 'net_1'")
        assert database.query("SELECT * FROM members") == []
    finally:
        database.close()


def test_write_rolls_back_on_error_and_close_checkpoints(tmp_path: Path) -> None:
    path = tmp_path / "wal.db"
    database = Database(str(path))
    with pytest.raises(ZeroDivisionError):
        with database.write():
            database.execute("INSERT INTO users(user_id, username, display_name, password_hash, role, created_at,"
                             " updated_at) VALUES ('u_1', 'gone', 'G', 'x', 'admin', 't', 't')")
            1 / 0  # noqa: B018
    assert database.query("SELECT * FROM users") == []
    with database.write():
        database.execute("INSERT INTO users(user_id, username, display_name, password_hash, role, created_at,"
                         " updated_at) VALUES ('u_2', 'kept', 'K', 'x', 'admin', 't', 't')")
    wal = Path(str(path) + "-wal")
    assert wal.exists() and wal.stat().st_size > 0  # the write sits in the WAL ...
    database.close()
    assert not wal.exists() or wal.stat().st_size == 0  # ... and is folded into the main file at close
    con = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        assert con.execute("SELECT username FROM users").fetchall() == [("kept",)]
    finally:
        con.close()


def _wal_bytes(db: Database) -> int:
    wal = Path(db.path + "-wal")
    return wal.stat().st_size if wal.exists() else 0


def _write_pages(db: Database, pages: int) -> None:
    """About `pages` WAL pages in commits of ~50 pages, without yielding to the event loop."""
    blob = b"x" * (50 * 4000)
    for _ in range(pages // 50):
        with db.write():
            db.execute("INSERT INTO wal_pad(b) VALUES (?)", (blob,))


async def test_the_running_server_checkpoints_in_a_thread_not_inside_commit(server: ServerHandle) -> None:
    db = server.hub.db
    with db.write():
        db.execute("CREATE TABLE wal_pad(b BLOB)")
    before = db.checkpoints_done
    page = db.con.pragma("page_size")
    # Half again the checkpoint size with no await in between: the checkpointer cannot run, and no COMMIT
    # checkpoints on the loop (SQLite's autocheckpoint would have kept the WAL near 1,000 pages: ~4 MiB).
    pages = CHECKPOINT_PAGES * 3 // 2
    _write_pages(db, pages)
    grown = _wal_bytes(db)
    assert grown >= (pages - 200) * page, f"the WAL was checkpointed inside a COMMIT ({grown} bytes)"
    # Once the loop runs, the background checkpointer copies it in its thread ...
    with trio.fail_after(10):
        while db.checkpoints_done == before:  # noqa: ASYNC110 - a worker thread does the work
            await trio.sleep(0.01)
    # ... and the next writes reuse the WAL from its start instead of growing it.
    _write_pages(db, pages)
    assert _wal_bytes(db) <= grown + 100 * page
    assert db.query_one("SELECT count(*) AS n FROM wal_pad") == {"n": 2 * (pages // 50)}
    assert db.con.pragma("integrity_check") == "ok"
