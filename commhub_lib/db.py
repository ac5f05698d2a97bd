"""The SQLite database: one APSW connection, its pragmas, migrations, and the one write choke point.

Everything runs on the trio event loop: a short APSW write (WAL, synchronous=NORMAL) takes ~30 µs,
ten times less than a thread hop. Long work (backups) uses its own connection in a thread.
Never `await` inside `db.write()`: another task's statements would join the transaction.

Failures of the disk or of the lock never escape as raw APSW errors from a write: `write()` turns them into
the CommhubError family (503 database_busy / database_replaced / storage_error, 507 storage_full), so a
request gets a clear answer and a background job can log and retry. The server's connection waits at
most `busy_timeout_ms` (short) for the write lock inside the event loop; callers that can wait longer do
it asynchronously first with `await db.wait_for_write_lock()` (probes with no busy wait, sleeps between).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import apsw
import trio

from .errors import DatabaseBusy, DatabaseReplaced, StorageError, StorageFull

PACKAGE_DIR = Path(__file__).resolve().parent
SCHEMA_PATH = PACKAGE_DIR / "schema.sql"
MIGRATIONS_DIR = PACKAGE_DIR / "migrations"
BUSY_TIMEOUT_MS = 5000  # CLI commands and other blocking users of the file
# The server's connection lives on the event loop: a write that waits on another process's lock stalls every
# request for as long as it waits, so it waits this long at most (the real wait is async: wait_for_write_lock).
LOOP_BUSY_TIMEOUT_MS = 50
CACHE_KIB = 64 * 1024
# SQLite checkpoints the WAL inside the COMMIT that takes it past 1,000 pages: it copies ~4 MiB into the
# database file and fsyncs both, ~5 ms on this machine's disk, every ~40 task sends, on the event loop. The
# server hands that to a worker thread instead (Database.run_checkpointer), and lets the WAL grow to 4,000
# pages (~16 MiB, the size the -wal file is cut back to) first: the pages every send rewrites (index leaves,
# counters, the events tail) are copied once per checkpoint, so the thread's CPU per MCP send fell from
# ~0.033 to ~0.023 ms (3 runs each, docs/performance.md#writes-and-the-wal); the loop's own CPU did not rise.
CHECKPOINT_PAGES = 4000
# After a checkpoint that could not copy everything (another process reads an old snapshot: a backup), the
# next try waits this long, so a long reader does not turn every commit into a checkpoint attempt.
CHECKPOINT_RETRY_SECONDS = 1.0
# On each WAL reset SQLite truncates the -wal file to this size, so one burst does not leave a large file.
JOURNAL_SIZE_LIMIT_BYTES = 16 * 1024 * 1024
# Prepared statements kept per connection (apsw's default: 100). A busy hub's mixed traffic runs more distinct
# statements than that (list filters x JSON or rows x networks; tests/test_statement_cache.py), and re-preparing a
# list query costs 8-22 µs. A cached statement takes a few KiB.
STATEMENT_CACHE_SIZE = 512

log = logging.getLogger("commhub.db")
T = TypeVar("T")


def migration_steps() -> dict[int, str]:
    """Numbered migration scripts: `NNNN_name.sql` brings a database to user_version NNNN."""
    steps = {}
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        steps[int(path.name.split("_", 1)[0])] = path.read_text(encoding="utf-8")
    return steps


SCHEMA_VERSION = max(migration_steps())

# Engine-neutral names of the errors code outside db.py catches (the PostgreSQL engine, db_pg.py, raises
# subclasses of these): the same classes as APSW's, so the SQLite path pays nothing for the other engine.
DatabaseError = apsw.Error
ConstraintError = apsw.ConstraintError
BusyError = apsw.BusyError
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


# The operation a worker thread runs for PostgreSQL's Database.run (db_pg.py): `deferred` holds what must happen on
# the event loop once it returns (broker pushes, trio.Event.set: neither is safe from another thread). Never set on
# SQLite (no thread hop): on_loop then calls at once.
_hop = threading.local()


def in_hop() -> bool:
    """Whether this thread runs a PostgreSQL operation off the event loop (Database.run on db_pg)."""
    return getattr(_hop, "deferred", None) is not None


def on_loop(fn: Callable[..., object], *args: Any) -> None:
    """Call `fn(*args)` now, or, inside an operation run off the loop (Database.run on PostgreSQL), on the event loop
    right after that operation returns, in the order asked (what touches trio or the broker: never from a thread)."""
    deferred = getattr(_hop, "deferred", None)
    if deferred is None:
        fn(*args)
    else:
        deferred.append((fn, args))


def is_postgres_url(target: str) -> bool:
    """Whether a database setting names a PostgreSQL server (else it is a SQLite file path)."""
    return target.startswith(POSTGRES_SCHEMES)


def open_engine(target: str, busy_timeout_ms: int = BUSY_TIMEOUT_MS, pool_size: int | None = None) -> Database:
    """The Database for a setting: a `postgresql://` URL opens db_pg's engine (psycopg imported only then; `pool_size`
    connections at most, None: its default), anything else is a SQLite file."""
    if is_postgres_url(target):
        from .db_pg import PgDatabase  # noqa: PLC0415 (optional dependency: only a PostgreSQL hub imports it)

        return PgDatabase(target) if pool_size is None else PgDatabase(target, pool_size=pool_size)
    return Database(target, busy_timeout_ms=busy_timeout_ms)


class Database:
    """Owns the connection. Reads are plain calls; every write goes through `write()`.

    The engine interface (store/ calls only these, plus the few `con` calls db_pg.PgConnection also has): this
    class is the SQLite engine; db_pg.PgDatabase is the PostgreSQL one. `engine` tells them apart where a store
    function's SQL differs (store/dialect.py)."""

    engine = "sqlite"
    # Whether `run` moves its work to a worker thread (PostgreSQL); SQLite runs it inline on the loop.
    off_loop = False

    def __init__(self, path: str, busy_timeout_ms: int = BUSY_TIMEOUT_MS):
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        create_private(path)
        self.con = apsw.Connection(path, statementcachesize=STATEMENT_CACHE_SIZE)
        configure(self.con, busy_timeout_ms)
        migrate(self.con)
        # Identity of the file we opened: a file deleted or replaced under us is noticed by comparing it.
        st = os.stat(path)
        self._identity = (st.st_dev, st.st_ino)
        self.replaced_reason: str | None = None
        self.checkpoints_done = 0  # by the background checkpointer (tests and logs read it)
        self._checkpoint_due: trio.Event | None = None
        self._column_names: dict[str, tuple[str, ...]] = {}  # query(): each statement's column names
        self._watches: dict[str, ChangeWatch] = {}
        self._group: list[_GroupMember] | None = None  # write_together(): the works waiting for the next commit
        self.groups_committed = 0  # write_together() transactions (tests and benchmarks read them)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run one service operation's synchronous database work: `fn(*args)`. SQLite runs it inline on the loop
        (an APSW statement is ~30 µs, less than a thread hop); PostgreSQL (db_pg) runs it in a worker thread with
        one pooled connection for the whole call, and does what it asked for the loop (db.on_loop) on return."""
        return fn(*args)

    def check_file(self) -> str | None:
        """Why the path no longer names the file we have open (deleted, replaced), or None if it still does.

        One stat() (a few µs): cheap enough before every write. Logged loudly once when it first happens."""
        try:
            st = os.stat(self.path)
            reason = None if (st.st_dev, st.st_ino) == self._identity else "replaced by another file"
        except FileNotFoundError:
            reason = "deleted"
        except OSError as exc:
            reason = f"no longer readable ({exc.strerror or exc})"
        if reason and reason != self.replaced_reason:
            log.critical("database file %s was %s while the server runs: writes are refused (503) until the "
                         "server is restarted on the right file", self.path, reason)
        self.replaced_reason = reason
        return reason

    @contextlib.contextmanager
    def write(self) -> Iterator[apsw.Connection]:
        """The write choke point: one short BEGIN IMMEDIATE transaction, rolled back on any error;
        lock and disk failures come out as 503/507 CommhubErrors."""
        if self.con.in_transaction:
            # Nested use joins the outer transaction (a service call composed of store writes).
            yield self.con
            return
        reason = self.check_file()
        if reason:
            raise DatabaseReplaced(f"the database file {self.path} was {reason} while the server runs; a write "
                                   "now would be lost. The operator must restart the server; retry after that")
        try:
            self.con.execute("BEGIN IMMEDIATE")
        except apsw.Error as exc:
            _raise_mapped(exc)
        try:
            yield self.con
            self.con.execute("COMMIT")
        except BaseException as exc:
            if self.con.in_transaction:  # SQLite may already have rolled back (e.g. after SQLITE_FULL)
                try:
                    self.con.execute("ROLLBACK")
                except apsw.Error:
                    log.exception("rollback failed")
            if isinstance(exc, apsw.Error):
                _raise_mapped(exc)
            raise

    async def write_together(self, work: Callable[[], T], after: Callable[[T], None] | None = None) -> T:
        """Run `work` (synchronous writes, no await) in one write transaction with the work of the other tasks
        that call this in the same pass of the scheduler, and return its result once that transaction has
        committed; `after(result)` runs right after the commit, in the order the works ran (push events there).

        Each send on its own rewrites ~12.7 pages of the WAL (index leaves, the events tail, the counters), two
        pwrite calls each: works committed together share those pages and one BEGIN/COMMIT. Nothing is answered
        before its commit, as with write(). Each work runs in a SAVEPOINT of its own: one that raises is undone
        alone and its caller gets its exception; a failure of the transaction itself (lock, disk) reaches every
        caller whose work it held, as write() would give it. Once queued, a work runs within one scheduler pass
        even if its caller is cancelled meanwhile (no cancel shield: entering one cost more than the wait), so it
        may be committed without an answer, as when a server stops right after a commit. Not for use inside
        write()."""
        if self.con.in_transaction:
            raise RuntimeError("write_together() inside a write transaction: its commit would not be its own")
        member = _GroupMember(work, after)
        if self._group is not None:
            self._group.append(member)
            await member.done.wait()
        else:
            self._group = [member]
            try:
                await trio.lowlevel.checkpoint()  # the other tasks ready in this pass queue their works
            finally:
                # Even when this caller is cancelled meanwhile: the others' works are committed (and so is its
                # own, though it will not answer, as when a server stops right after a commit).
                group, self._group = self._group, None
                self._commit_group(group)
        if member.error is not None:
            raise member.error
        return member.result  # type: ignore[no-any-return]

    def _commit_group(self, group: list[_GroupMember]) -> None:
        """Run the queued works in one transaction, each in a savepoint; commit; run their `after`; wake them."""
        ran: list[_GroupMember] = []
        try:
            try:
                with self.write():
                    for member in group:
                        self.con.execute("SAVEPOINT member")
                        try:
                            # In the caller's context (which surface it came through, its request's state).
                            member.result = member.context.run(member.work)
                        except Exception as exc:  # noqa: BLE001 (handed to the work's own caller)
                            if not self.con.in_transaction:  # SQLite rolled the whole transaction back (disk)
                                raise
                            self.con.execute("ROLLBACK TO member")
                            self.con.execute("RELEASE member")
                            member.error = storage_error(exc) if isinstance(exc, apsw.Error) else exc
                            continue
                        self.con.execute("RELEASE member")
                        ran.append(member)
            except Exception as exc:  # noqa: BLE001 (the transaction failed: every work it held is undone)
                for member in group:
                    if member.error is None:
                        member.error = exc
                ran = []
            else:
                self.groups_committed += 1
            for member in ran:
                if member.after is not None:
                    try:
                        member.after(member.result)
                    except Exception:  # noqa: BLE001 (committed: the work's caller still gets its result)
                        log.exception("after-commit step of a grouped write failed")
        finally:
            for member in group:
                member.done.set()

    def try_write(self, apply: Callable[[], object]) -> bool:
        """A best-effort write (a "last used"/"last seen" refresh on a read): `apply()` in its own transaction;
        when the lock is held, the disk is full or the file was replaced, it is skipped with a log line instead
        of failing the request that carries it. Returns whether it was written."""
        try:
            with self.write():
                apply()
            return True
        except (DatabaseBusy, StorageError, StorageFull) as exc:
            log.warning("skipped a best-effort write (%s)", exc.code)
            return False

    def _try_lock(self) -> bool:
        """Take and drop the write lock without waiting: True if it was free."""
        self.con.setbusytimeout(0)
        try:
            self.con.execute("BEGIN IMMEDIATE")
            self.con.execute("ROLLBACK")
            return True
        except apsw.BusyError:
            return False
        finally:
            self.con.setbusytimeout(self.busy_timeout_ms)

    async def wait_for_write_lock(self, timeout: float) -> None:  # noqa: ASYNC109 (a deadline, then 503)
        """Wait (asynchronously, so the loop keeps serving) until the write lock is free, or raise 503.

        Another process (a CLI command, a backup, a second writer) may hold the lock for seconds; a write
        that waited inside SQLite's busy handler would freeze the event loop for that long. Free lock: one
        BEGIN IMMEDIATE/ROLLBACK pair, a few µs. A write right after still has the short loop busy timeout
        for the rare race in between."""
        if self.con.in_transaction or self._try_lock():
            return
        delay = 0.005
        with trio.move_on_after(timeout):
            while True:
                await trio.sleep(delay)
                if self._try_lock():
                    return
                delay = min(delay * 2, 0.25)
        raise DatabaseBusy(f"the database is locked by another process for more than {timeout:g} s; "
                           "retry in a few seconds", retry_after=max(1, round(timeout)))

    def change_watch(self, name: str, events: dict[str, tuple[str, ...]]) -> ChangeWatch:
        """The connection's ChangeWatch of that name (made on first use; every cache of those rows shares it)."""
        watch = self._watches.get(name)
        if watch is None:
            watch = self._watches[name] = ChangeWatch(self.con, name, events)
        return watch

    def query(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> list[dict[str, Any]]:
        """Run a read query; rows come back as dicts keyed by column name."""
        cur = self.con.execute(sql, params)
        names = self._column_names.get(sql)
        if names is None:
            # Asking SQLite for the names costs ~2 µs a query (two per MCP call just for sessions); a statement's
            # columns are fixed once migrate() has run (no DDL changes a table of the running server).
            try:
                names = tuple(d[0] for d in cur.getdescription())
            except apsw.ExecutionCompleteError:
                return []
            if len(self._column_names) >= STATEMENT_CACHE_SIZE:
                self._column_names.clear()
            self._column_names[sql] = names
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

    def _on_wal_commit(self, _con: apsw.Connection, _name: str, pages: int) -> int:
        """SQLite's WAL hook, called after each commit with the WAL's size in pages: wake the checkpointer."""
        if pages >= CHECKPOINT_PAGES and self._checkpoint_due is not None:
            self._checkpoint_due.set()
        return apsw.SQLITE_OK

    async def run_checkpointer(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Background job (root nursery): checkpoint the WAL in a worker thread, never inside a COMMIT on the loop.

        Installing the WAL hook turns off SQLite's own autocheckpoint on this connection. The thread uses its own
        connection and a PASSIVE checkpoint, which neither waits for nor blocks the loop's readers and writers
        (APSW releases the GIL while SQLite works). The final checkpoint at close stays on the loop's connection."""
        con = apsw.Connection(self.path)
        # A connection that has not read the file yet does not know it is in WAL mode: its checkpoint would be
        # a silent no-op (-1, -1). Asking for the journal mode reads it.
        if con.pragma("journal_mode") != "wal":
            raise RuntimeError(f"the database {self.path} is not in WAL mode")
        con.pragma("journal_size_limit", JOURNAL_SIZE_LIMIT_BYTES)
        self.con.pragma("journal_size_limit", JOURNAL_SIZE_LIMIT_BYTES)
        self._checkpoint_due = trio.Event()
        self.con.set_wal_hook(self._on_wal_commit)
        task_status.started()
        try:
            while True:
                await self._checkpoint_due.wait()
                self._checkpoint_due = trio.Event()
                try:
                    # Not abandoned on cancel: shutdown waits the few ms for the thread before closing `con`.
                    wal, copied = await trio.to_thread.run_sync(con.wal_checkpoint, None,
                                                                apsw.SQLITE_CHECKPOINT_PASSIVE)
                except apsw.Error as exc:  # full disk, I/O error: the WAL keeps every write; try again later
                    log.warning("WAL checkpoint failed (%s: %s); retrying in %.0f s", type(exc).__name__, exc,
                                CHECKPOINT_RETRY_SECONDS)
                    await trio.sleep(CHECKPOINT_RETRY_SECONDS)
                    continue
                self.checkpoints_done += 1
                if copied < wal:
                    await trio.sleep(CHECKPOINT_RETRY_SECONDS)
        finally:
            self.con.set_wal_hook(None)
            self._checkpoint_due = None
            con.close()

    def close(self) -> None:
        """Checkpoint and close the connection."""
        try:
            self.checkpoint()
        finally:
            self.con.close()


class _GroupMember:
    """One caller's work in a write_together() transaction, and its outcome."""

    __slots__ = ("after", "context", "done", "error", "result", "work")

    def __init__(self, work: Callable[[], Any], after: Callable[[Any], None] | None):
        self.work = work
        self.context = contextvars.copy_context()
        self.after = after
        self.result: Any = None
        self.error: Exception | None = None
        self.done = trio.Event()


class ChangeWatch:
    """Tells a cache of rows read from some tables when those rows may have changed: `stamp()` differs from the
    last one whenever a watched change was made through this connection (TEMP triggers that call back into Python:
    every statement, foreign-key cascades included, committed or rolled back) or any other connection committed
    anything (PRAGMA data_version: the CLI on the same file, a second server). Cheap to read (~3 µs, one pragma);
    a false alarm only costs the cache a refill."""

    def __init__(self, con: apsw.Connection, name: str, events: dict[str, tuple[str, ...]]):
        """`events`: table -> trigger events to watch ("INSERT", "DELETE", "UPDATE" or "UPDATE OF a, b")."""
        self._con = con
        self.changes = 0
        func = f"commhub_changed_{name}"
        con.create_scalar_function(func, self._bump, 0)
        for table, kinds in events.items():
            for i, kind in enumerate(kinds):
                # TEMP: the trigger lives with this connection only (not in the schema other processes see).
                con.execute(f"CREATE TEMP TRIGGER IF NOT EXISTS {func}_{table}_{i} AFTER {kind} ON main.{table}"
                            f" BEGIN SELECT {func}(); END")

    def _bump(self, *_args: Any) -> None:
        self.changes += 1

    def stamp(self) -> tuple[int, int]:
        """A value that changes when a watched table may have changed (see the class)."""
        return self.changes, self._con.execute("PRAGMA data_version").get


def storage_error(exc: apsw.Error) -> Exception:
    """The CommhubError for an APSW failure (lock, full disk, I/O); other errors (constraint bugs) unchanged."""
    if isinstance(exc, apsw.BusyError | apsw.LockedError):
        return DatabaseBusy("the database is locked by another process; retry in a few seconds", retry_after=2)
    if isinstance(exc, apsw.FullError):
        log.error("write failed: the disk holding the database is full (%s)", exc)
        return StorageFull("the server's disk is full: nothing can be stored until the operator frees space; "
                           "reads still work")
    if isinstance(exc, apsw.IOError | apsw.ReadOnlyError | apsw.CantOpenError | apsw.CorruptError
                  | apsw.NotADBError | apsw.ProtocolError):
        log.error("write failed: %s: %s", type(exc).__name__, exc)
        return StorageError(f"the database could not be written ({type(exc).__name__}); the operator should "
                            "check the server log and the disk; retry later")
    return exc


def create_private(path: str) -> None:
    """Create a new database file readable by its owner only (0600, whatever the umask): it holds every message
    and token hash. SQLite gives its -wal, -shm and -journal files the database file's mode. An existing file
    is left as it is (see others_can_read)."""
    if path in ("", ":memory:") or path.startswith("file:"):
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError:  # exists (kept as it is), or cannot be created: SQLite's open says why
        return
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def others_can_read(path: str) -> list[str]:
    """The database's files (the file, -wal, -shm, -journal) that users other than its owner may read."""
    found = []
    for name in (path, f"{path}-wal", f"{path}-shm", f"{path}-journal"):
        try:
            mode = os.stat(name).st_mode
        except OSError:
            continue
        if mode & 0o044:
            found.append(f"{name} ({mode & 0o777:04o})")
    return found


def _raise_mapped(exc: apsw.Error) -> None:
    mapped = storage_error(exc)
    if mapped is exc:
        raise exc
    raise mapped from exc


def configure(con: apsw.Connection, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> None:
    """Set the pragmas one at a time: a multi-statement PRAGMA string silently stops after the first row."""
    con.setbusytimeout(busy_timeout_ms)
    con.pragma("journal_mode", "wal")
    con.pragma("synchronous", "normal")
    con.pragma("foreign_keys", "on")
    # SQLite's default page cache is 2 MiB: at a million messages a 500-row list page re-read most of its
    # pages from the OS each time (~4 ms of its ~9.7 ms). Up to 64 MiB, allocated only as pages are read.
    con.pragma("cache_size", -CACHE_KIB)


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
    copied = 0
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
