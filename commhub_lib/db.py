"""The SQLite database: one APSW connection, its pragmas, migrations, and the one write choke point.

Everything runs on the trio event loop: a short APSW write (WAL, synchronous=NORMAL) takes ~30 µs,
ten times less than a thread hop. Long work (backups) uses its own connection in a thread.
Never `await` inside `db.write()`: another task's statements would join the transaction.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import apsw

PACKAGE_DIR = Path(__file__).resolve().parent
SCHEMA_PATH = PACKAGE_DIR / "schema.sql"
MIGRATIONS_DIR = PACKAGE_DIR / "migrations"
BUSY_TIMEOUT_MS = 5000


def migration_steps() -> dict[int, str]:
    """Numbered migration scripts: `NNNN_name.sql` brings a database to user_version NNNN."""
    steps = {}
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        steps[int(path.name.split("_", 1)[0])] = path.read_text(encoding="utf-8")
    return steps


SCHEMA_VERSION = max(migration_steps())


class Database:
    """Owns the connection. Reads are plain calls; every write goes through `write()`."""

    def __init__(self, path: str):
        self.path = path
        self.con = apsw.Connection(path)
        configure(self.con)
        migrate(self.con)

    @contextlib.contextmanager
    def write(self) -> Iterator[apsw.Connection]:
        """The write choke point: one short BEGIN IMMEDIATE transaction, rolled back on any error."""
        if self.con.in_transaction:
            # Nested use joins the outer transaction (a service call composed of store writes).
            yield self.con
            return
        self.con.execute("BEGIN IMMEDIATE")
        try:
            yield self.con
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        self.con.execute("COMMIT")

    def query(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> list[dict[str, Any]]:
        """Run a read query; rows come back as dicts keyed by column name."""
        cur = self.con.execute(sql, params)
        try:
            names = [d[0] for d in cur.getdescription()]
        except apsw.ExecutionCompleteError:
            return []
        return [dict(zip(names, row, strict=True)) for row in cur]

    def query_one(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> dict[str, Any] | None:
        """Run a read query expected to return at most one row."""
        rows = self.query(sql, params)
        return rows[0] if rows else None

    def execute(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> int:
        """Run a write statement (inside `write()`); returns the number of rows changed."""
        self.con.execute(sql, params)
        return self.con.changes()

    def checkpoint(self) -> None:
        """Fold the WAL into the main file (at shutdown, so the .db alone is a complete copy)."""
        self.con.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_TRUNCATE)

    def close(self) -> None:
        """Checkpoint and close the connection."""
        try:
            self.checkpoint()
        finally:
            self.con.close()


def configure(con: apsw.Connection) -> None:
    """Set the pragmas one at a time: a multi-statement PRAGMA string silently stops after the first row."""
    con.setbusytimeout(BUSY_TIMEOUT_MS)
    con.pragma("journal_mode", "wal")
    con.pragma("synchronous", "normal")
    con.pragma("foreign_keys", "on")


def migrate(con: apsw.Connection) -> None:
    """Bring the database to SCHEMA_VERSION: schema.sql for a new file, numbered steps for an old one."""
    version = con.pragma("user_version")
    if version > SCHEMA_VERSION:
        raise RuntimeError(f"database schema v{version} is newer than this CommHub (v{SCHEMA_VERSION})")
    if version == SCHEMA_VERSION:
        return
    has_tables = con.execute("SELECT count(*) FROM sqlite_master WHERE type='table'").get
    with con:
        if version == 0 and not has_tables:
            con.execute(SCHEMA_PATH.read_text(encoding="utf-8"))
        else:
            steps = migration_steps()
            # Steps run in number order; numbers may have gaps (parallel branches each take their own number).
            for step in sorted(n for n in steps if n > version):
                con.execute(steps[step])
        con.pragma("user_version", SCHEMA_VERSION)


def backup_to(source_path: str, dest_path: str, *, pages_per_step: int = 256, pause_seconds: float = 0.005,
              progress: Callable[[int, int], None] | None = None) -> int:
    """Online, consistent copy through SQLite's backup API (blocking: call it from a thread or the CLI).

    The copy is of one snapshot: a read transaction on the source is held for the whole backup. In WAL mode
    that never blocks the server's writers, and it is what lets the copy finish at all under a busy writer:
    without it SQLite restarts a stepped backup from page one after every write by another connection.
    Copying `pages_per_step` pages with a short pause between steps leaves the disk and CPU to the server.
    Returns the number of pages copied.
    """
    src = apsw.Connection(source_path, flags=apsw.SQLITE_OPEN_READONLY)
    src.setbusytimeout(BUSY_TIMEOUT_MS)
    dest = apsw.Connection(dest_path)
    try:
        src.execute("BEGIN")
        src.pragma("user_version")  # the first read starts the transaction and pins the snapshot
        with dest.backup("main", src, "main") as b:
            while not b.done:
                b.step(pages_per_step)
                if progress is not None:
                    progress(b.page_count - b.remaining, b.page_count)
                if not b.done and pause_seconds > 0:
                    time.sleep(pause_seconds)
            copied = b.page_count
        src.execute("COMMIT")
    finally:
        dest.close()
        src.close()
    return copied
