"""The PostgreSQL engine: the same Database interface as db.py's SQLite one, on a pool of psycopg 3 connections.

Imported only when a `postgresql://` URL is given (`db.open_engine`): the SQLite path never imports psycopg, an
optional dependency (`pip install 'commhub[postgres]'`).

What it keeps from the SQLite engine (docs/postgresql.md):
- the store's calls: query/query_one/execute, `write()` (one transaction, BEGIN ... COMMIT, rolled back on any
  error; nested use joins it), write_together, try_write, change_watch, and the few `db.con` calls the store makes
  (execute(...).get, executemany, changes, last_insert_rowid, in_transaction);
- the store's SQL text: each statement is translated once (store/dialect.py, cached per text);
- the errors: a unique, foreign-key, check or not-null violation raises `db.ConstraintError` (what
  apsw.ConstraintError is on SQLite), a lost connection 503 database_unavailable (the pool replaces it).

Off the event loop: `run(fn, *args)` runs one service operation's synchronous work in a worker thread that holds
one pooled connection for the whole call (one thread hop per operation, not per statement); `db.con` is the
connection bound to the current thread. Code still called on the loop outside any `run` uses the loop's own
connection, as before. What an operation asks of the loop (pushing events, waking a worker: db.on_loop) is done on
the loop after it returns, in order. A serialization failure or deadlock is retried a few times.
Transactions are READ COMMITTED; with several connections the writes of one process are concurrent, like those of
several processes (docs/postgresql.md "Transactions and constraints" says what rests on row locks).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import psycopg
import psycopg.errors
import psycopg_pool
import trio
from psycopg import ClientCursor
from psycopg.adapt import Dumper, Loader
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row

from . import db as sqlite_db
from .broker import Event
from .db import ChangeWatch, ConstraintError, Database, DatabaseError, _hop
from .errors import DatabaseUnavailable
from .store.dialect import POSTGRESQL, to_postgres
from .store.events import with_text

PACKAGE_DIR = Path(__file__).resolve().parent
SCHEMA_PG_PATH = PACKAGE_DIR / "schema_pg.sql"
PG_MIGRATIONS_DIR = PACKAGE_DIR / "migrations" / "pg"
# The SQLite schema version that schema_pg.sql is (a fresh PostgreSQL database starts there; later SQLite
# migrations each have a twin in migrations/pg/, tests/test_pg_schema.py checks it).
PG_BASE_VERSION = 17
CONNECT_TIMEOUT_SECONDS = 5
# Connections of the pool by default (the `database_pool_size` setting): as many operations run at once.
POOL_SIZE = 8
# Times `run` tries an operation again after a serialization failure or a deadlock (then it fails: 500).
RETRIES = 3
# How long a call waits for a pooled connection while the server was last found unreachable.
UNREACHABLE_WAIT_SECONDS = 0.5
# The advisory lock key under which a change watch's triggers are (re)made (any constant unique to CommHub).
WATCH_DDL_LOCK = 0x636F6D6D  # "comm"
T = TypeVar("T")

log = logging.getLogger("commhub.db")

Params = tuple[Any, ...] | dict[str, Any]


class PgConstraintError(ConstraintError):
    """A constraint violation on PostgreSQL: caught where SQLite's ConstraintError is (db.ConstraintError)."""


class PgDatabaseError(DatabaseError):
    """Any other PostgreSQL failure, as the family db.DatabaseError (a crash: 500, logged)."""


class PgRetryableError(PgDatabaseError):
    """A serialization failure or a deadlock: the transaction was rolled back and may simply run again."""


class PgStaleConnection(PgRetryableError):
    """A pooled connection found dead by an operation's first statement (PostgreSQL restarted while it sat in the
    pool): nothing was done, so the operation runs again on a connection the pool has checked."""


def migration_steps() -> dict[int, str]:
    """The PostgreSQL twins of the SQLite migrations newer than PG_BASE_VERSION, by number."""
    steps = {}
    for path in sorted(PG_MIGRATIONS_DIR.glob("*.sql")):
        steps[int(path.name.split("_", 1)[0])] = path.read_text(encoding="utf-8")
    return steps


def redacted(url: str) -> str:
    """The URL without its password (for logs and messages)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    return urlunsplit(parts._replace(netloc=netloc[0].split(":", 1)[0] + ":***@" + netloc[1]))


class _NumericLoader(Loader):
    """numeric (sum() of bigint, avg) as int when whole, else float: the values SQLite gives, JSON-encodable."""

    def load(self, data: Any) -> int | float:
        value = Decimal(bytes(data).decode())
        return int(value) if value == value.to_integral_value() else float(value)


class _TextLoader(Loader):
    """json/jsonb as their text (SQLite returns JSON as text; callers json.loads what they need)."""

    def load(self, data: Any) -> str:
        return bytes(data).decode()


class _BoolAsIntDumper(Dumper):
    """A Python bool as 1/0: the schema's flags are integers, as on SQLite."""

    def dump(self, obj: Any) -> bytes:
        return b"1" if obj else b"0"

    def quote(self, obj: Any) -> bytes:
        return b"1" if obj else b"0"


def _mapped(exc: psycopg.Error) -> Exception:
    """The CommhubError family / db error classes for a psycopg failure."""
    if isinstance(exc, psycopg.errors.IntegrityError):
        return PgConstraintError(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, psycopg.errors.SerializationFailure | psycopg.errors.DeadlockDetected):
        return PgRetryableError(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        log.error("PostgreSQL unavailable: %s: %s", type(exc).__name__, exc)
        return DatabaseUnavailable("the database server cannot be reached; retry in a few seconds", retry_after=2)
    return PgDatabaseError(f"{type(exc).__name__}: {exc}")


@lru_cache(maxsize=4096)
def _pg_text(sql: str) -> bytes:
    """A store statement as PostgreSQL runs it, encoded once (psycopg takes bytes for a text built at run time)."""
    return to_postgres(sql).encode()


class PgResult:
    """What `con.execute` returns: iterable over tuples, `.get` as APSW's (one value, one tuple, or a list)."""

    __slots__ = ("rows",)

    def __init__(self, rows: list[tuple[Any, ...]]):
        self.rows = rows

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self.rows)

    @property
    def get(self) -> Any:
        """APSW's `Cursor.get`: None, the single value, the single row, or every row."""
        if not self.rows:
            return None
        if len(self.rows) == 1:
            row = self.rows[0]
            return row[0] if len(row) == 1 else row
        return [r[0] if len(r) == 1 else r for r in self.rows]


def configure_connection(pg: psycopg.Connection[Any]) -> None:
    """What every connection of the engine gets (the pool's configure step, the loop's own connection)."""
    # Client-side binding: values are written into the text as literals, so PostgreSQL types them from
    # their context as SQLite does (`? IS NULL`, an int compared with a text column's...).
    adapters = pg.adapters
    adapters.register_loader("numeric", _NumericLoader)
    adapters.register_loader("json", _TextLoader)
    adapters.register_loader("jsonb", _TextLoader)
    adapters.register_dumper(bool, _BoolAsIntDumper)


def _connect(url: str) -> psycopg.Connection[Any]:
    try:
        # A bounded connect: an unreachable server answers 503 in seconds, not a loop stalled for minutes.
        pg = psycopg.Connection.connect(url, autocommit=True, cursor_factory=ClientCursor,
                                        connect_timeout=CONNECT_TIMEOUT_SECONDS)
    except psycopg.Error as exc:
        raise _mapped(exc) from exc
    configure_connection(pg)
    return pg


def _runner() -> str:
    """The trio task (on the loop) or the thread running a statement (a debug check's label)."""
    try:
        return trio.lowlevel.current_task().name
    except RuntimeError:
        return threading.current_thread().name


class PgConnection:
    """The `db.con` of the PostgreSQL engine: the few APSW connection calls the store and db.py make. The loop's own
    connection reconnects itself after a loss; one lent by the pool (`pg` given) does not (the pool replaces it)."""

    def __init__(self, url: str, pg: psycopg.Connection[Any] | None = None,
                 commit_hooks: dict[object, Callable[[], object]] | None = None):
        self.url = url
        self._own = pg is None
        self._pg: psycopg.Connection[Any] = _connect(url) if pg is None else pg
        self._changes = 0
        # Shared by every connection of one database (set_commit_hook on any of them is for all).
        self._commit_hooks: dict[object, Callable[[], object]] = {} if commit_hooks is None else commit_hooks
        self.statements = 0  # run on this connection (the loop's: tests check the hot paths leave it alone)
        # When a list (a debug check, tests/test_pg_offloop.py): (statement, trio task or thread) of each run here.
        self.trace: list[tuple[str, str]] | None = None

    @property
    def raw(self) -> psycopg.Connection[Any]:
        """The psycopg connection (the loop's reconnected first if it was lost outside a transaction)."""
        if self._pg.closed or self._pg.broken:
            if not self._own:
                raise DatabaseUnavailable("the database server cannot be reached; retry in a few seconds",
                                          retry_after=2)
            self._pg = _connect(self.url)
        return self._pg

    @property
    def in_transaction(self) -> bool:
        """Whether a transaction is open (a failed statement inside one still counts, as in SQLite)."""
        # A lost connection has no transaction any more (what it held was rolled back by the server).
        pg = self._pg
        return not pg.closed and not pg.broken and pg.info.transaction_status != TransactionStatus.IDLE

    def run(self, sql: str, params: Params = (), rows: bool = True, as_dicts: bool = False) -> Any:
        """Run one store statement (translated); its rows (tuples or dicts) or None. A connection found dead by a
        BEGIN or a read outside a transaction (PostgreSQL restarted while the hub was idle) is made again and the
        statement run once more: nothing of it was done, so the caller never sees the restart."""
        text = _pg_text(sql)
        self.statements += 1
        if self.trace is not None:
            self.trace.append((sql, _runner()))
        repeatable = not self.in_transaction and (sql == "BEGIN" or sql.lstrip()[:6].upper() == "SELECT")
        try:
            return self._run(text, params, rows, as_dicts)
        except psycopg.OperationalError as exc:
            if not (repeatable and (self._pg.closed or self._pg.broken)):
                raise _mapped(exc) from exc
            if not self._own:
                if self.statements == 1:  # the operation's first statement: nothing of it was done, run it again
                    raise PgStaleConnection(f"a pooled connection was lost: {exc}") from exc
                raise _mapped(exc) from exc
            log.warning("PostgreSQL connection lost (%s); reconnecting", exc)
        except psycopg.Error as exc:
            raise _mapped(exc) from exc
        try:
            return self._run(text, params, rows, as_dicts)
        except psycopg.Error as exc:
            raise _mapped(exc) from exc

    def _run(self, text: bytes, params: Params, rows: bool, as_dicts: bool) -> Any:
        cur = self.raw.cursor(row_factory=dict_row) if as_dicts else self.raw.cursor()
        with cur:
            cur.execute(text, params)
            self._changes = cur.rowcount if cur.rowcount >= 0 else 0
            if rows:
                return cur.fetchall() if cur.description is not None else []
            return None

    def execute(self, sql: str, params: Params = ()) -> PgResult:
        """APSW's `Connection.execute`: the result's rows (iterate, or `.get`)."""
        return PgResult(self.run(sql, params))

    def executemany(self, sql: str, seq: Iterable[Params]) -> None:
        """Run one statement for each set of parameters."""
        for params in seq:
            self.run(sql, params, rows=False)

    def changes(self) -> int:
        """Rows changed by the last statement."""
        return self._changes

    def last_insert_rowid(self) -> int:
        """The identity value the last INSERT drew (its id/body_id/seq)."""
        return int(self.run("SELECT lastval()")[0][0])

    def data_version(self) -> int:
        """SQLite's "another connection committed" counter. One connection per hub in this round: constant
        (several processes take row locks instead, docs/scaling.md)."""
        return 0

    def set_commit_hook(self, hook: Callable[[], object] | None, id: object = None) -> None:  # noqa: A002 (APSW's)
        """Call `hook()` at each commit of a write transaction (http/writelock.py counts them)."""
        if hook is None:
            self._commit_hooks.pop(id, None)
        else:
            self._commit_hooks[id] = hook

    def commit(self) -> None:
        """COMMIT the open transaction, after the commit hooks."""
        for hook in list(self._commit_hooks.values()):
            hook()
        self.run("COMMIT", rows=False)

    def close(self) -> None:
        """Close the connection."""
        self._pg.close()


class PgChangeWatch(ChangeWatch):
    """ChangeWatch on PostgreSQL: statement triggers bump a counter row per watch (commhub_changes), so a change
    made by any connection, this process's or another's (the CLI), changes `stamp()`; one indexed read."""

    def __init__(self, db: PgDatabase, name: str, events: dict[str, tuple[str, ...]]):  # noqa: D107
        self._db = db
        con = db.pg
        self.changes = 0
        self._name = name
        func = f"commhub_changed_{name}"
        # DDL of one function and its triggers: several threads or processes making the same watch at once would
        # fail on PostgreSQL's catalog ("tuple concurrently updated"): one at a time, under an advisory lock.
        own = not con.in_transaction
        if own:
            con.run("BEGIN", rows=False)
        try:
            con.run("SELECT pg_advisory_xact_lock(?)", (WATCH_DDL_LOCK,), rows=False)
            con.run("INSERT INTO commhub_changes(name, n) VALUES (?, 0) ON CONFLICT (name) DO NOTHING", (name,),
                    rows=False)
            con.run(f"CREATE OR REPLACE FUNCTION {func}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                    f" UPDATE commhub_changes SET n = n + 1 WHERE name = '{name}'; RETURN NULL; END $$", rows=False)
            for table, kinds in events.items():
                for i, kind in enumerate(kinds):
                    con.run(f"CREATE OR REPLACE TRIGGER {func}_{table}_{i} AFTER {kind} ON {table}"
                            f" FOR EACH STATEMENT EXECUTE FUNCTION {func}()", rows=False)
            if own:
                con.run("COMMIT", rows=False)
        except BaseException:
            if own and con.in_transaction:
                with contextlib.suppress(DatabaseUnavailable, DatabaseError):
                    con.run("ROLLBACK", rows=False)
            raise

    def stamp(self) -> tuple[int, int]:
        """The watch's counter (changes when a watched table may have changed)."""
        # On the connection of the thread asking (a pooled one in an operation run off the loop).
        return 0, int(self._db.pg.run("SELECT n FROM commhub_changes WHERE name = ?", (self._name,))[0][0])


class PgDatabase(Database):
    """The Database interface on PostgreSQL (see the module). Subclasses the SQLite Database for its type and
    its engine-neutral write_together; every SQLite-specific method is overridden."""

    engine = POSTGRESQL

    off_loop = True

    def __init__(self, url: str, pool_size: int = POOL_SIZE):  # noqa: D107 (a Database on a postgresql:// URL)
        self.path = redacted(url)
        self.url = url
        self.busy_timeout_ms = 0
        self._commit_hooks: dict[object, Callable[[], object]] = {}
        # The loop's own connection: migrations, and whatever still runs on the loop outside `run`.
        self.loop_con = PgConnection(url, commit_hooks=self._commit_hooks)
        migrate(self.loop_con)
        self._local = threading.local()  # .con: the pooled connection of the operation this thread runs
        self.pool_size = pool_size
        self._pool: psycopg_pool.ConnectionPool[Any] = psycopg_pool.ConnectionPool(
            url, min_size=min(2, pool_size), max_size=pool_size, open=True, name="commhub",
            kwargs={"autocommit": True, "cursor_factory": ClientCursor, "connect_timeout": CONNECT_TIMEOUT_SECONDS},
            configure=configure_connection, timeout=CONNECT_TIMEOUT_SECONDS)
        # As many operations in threads as the pool has connections: none ever waits for one in its thread.
        self._limiter = trio.CapacityLimiter(pool_size)
        self.hops = self.retries = 0  # operations run off the loop, and tries again (tests and benchmarks)
        self._unreachable = False  # the server was found unreachable by the last operation (see _hop)
        self._watch_lock = threading.Lock()
        self._commit_lock = threading.Lock()  # a commit and the queueing of its pushes, one at a time (see write)
        self._tx = threading.local()  # .after, .once: the after-commit steps of this thread's open transaction
        self._token: trio.lowlevel.TrioToken | None = None  # the event loop's (captured by `run` or `bind_loop`)
        self.replaced_reason = None
        self.checkpoints_done = 0
        self._checkpoint_due = None
        self._column_names = {}
        self._watches = {}
        self._group = None
        self.groups_committed = 0

    @property
    def con(self) -> Any:  # type: ignore[override]  # (a PgConnection where SQLite has an apsw.Connection)
        """The connection of the current operation: the pooled one bound to this thread by `run`, else the loop's."""
        return getattr(self._local, "con", None) or self.loop_con

    @property
    def pg(self) -> PgConnection:
        """The connection of the current operation (typed)."""
        return getattr(self._local, "con", None) or self.loop_con

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` in a worker thread holding one pooled connection for the whole call (one thread hop per
        service operation); then, on the loop, what it asked for there (db.on_loop), in order. A serialization
        failure or a deadlock (rolled back) runs it again, up to RETRIES times. Called within a run (nested), it
        just calls `fn`. Not cancellable once started: the operation's transaction ends before its caller does."""
        if getattr(self._local, "con", None) is not None:
            return fn(*args)
        if self._token is None:
            self.bind_loop()
        tries = 0
        while True:
            result, error, deferred = await trio.to_thread.run_sync(self._hop, fn, args, limiter=self._limiter)
            self.hops += 1
            for call, call_args in deferred:  # committed work's pushes and wake-ups, even if it failed afterwards
                try:
                    call(*call_args)
                except Exception:  # noqa: BLE001 (the operation's own answer stands)
                    log.exception("a step deferred to the event loop failed")
            if error is None:
                return result  # type: ignore[return-value]
            if isinstance(error, PgRetryableError) and tries < RETRIES:
                tries += 1
                self.retries += 1
                log.info("retrying an operation after %s", error)
                continue
            raise error

    def bind_loop(self) -> None:
        """Remember the running event loop: committed events are pushed to it (push_to_loop). Call on the loop."""
        self._token = trio.lowlevel.current_trio_token()

    def _hop(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> tuple[Any, BaseException | None,
                                                                           list[tuple[Callable[..., object], Any]]]:
        """In the worker thread: borrow a connection, bind it (and the deferred list) to the thread, run `fn`."""
        deferred: list[tuple[Callable[..., object], Any]] = []
        # While the server was last found unreachable, a call waits only briefly for a connection (the pool keeps
        # trying to make them in the background): a 503 at once, not after the full wait a busy pool deserves.
        wait = UNREACHABLE_WAIT_SECONDS if self._unreachable else CONNECT_TIMEOUT_SECONDS
        try:
            pg = self._pool.getconn(timeout=wait)
        except psycopg_pool.PoolTimeout as exc:
            self._unreachable = True
            log.error("PostgreSQL unavailable: no pooled connection within %.1f s (%s)", wait, exc)
            return None, DatabaseUnavailable("the database server cannot be reached; retry in a few seconds",
                                             retry_after=2), deferred
        con = PgConnection(self.url, pg, self._commit_hooks)
        self._local.con = con
        _hop.deferred = deferred
        try:
            result = fn(*args)
            self._unreachable = False
            return result, None, deferred
        except DatabaseUnavailable as exc:
            self._unreachable = True
            return None, exc, deferred
        except PgStaleConnection as exc:
            self._unreachable = True  # the retry waits briefly: the pool makes new connections at once if it can
            # Its siblings idle in the pool are likely dead too (a restart): drop them all now, not one per call.
            with contextlib.suppress(Exception):
                self._pool.check()
            return None, exc, deferred
        except BaseException as exc:  # noqa: BLE001 (re-raised on the loop by run)
            return None, exc, deferred
        finally:
            self._local.con = None
            _hop.deferred = None
            if not pg.closed and not pg.broken and pg.info.transaction_status != TransactionStatus.IDLE:
                with contextlib.suppress(psycopg.Error):  # an operation that left a transaction open (a bug)
                    pg.execute(b"ROLLBACK")
            # A broken connection is discarded by the pool, which opens a new one in the background.
            self._pool.putconn(pg)

    async def write_together(self, work: Callable[[], T], after: Callable[[T], None] | None = None) -> T:
        """As SQLite's (db.Database.write_together), off the loop: `work` runs in one transaction in a worker thread
        (one hop), then `after(result)` on the loop. Concurrent callers use pooled connections and transactions of
        their own (no grouping: see write)."""
        result: T = await self.run(self._write_work, work)
        if after is not None:
            try:
                after(result)
            except Exception:  # noqa: BLE001 (committed: the work's caller still gets its result)
                log.exception("after-commit step of a grouped write failed")
        self.groups_committed += 1
        return result

    def _write_work(self, work: Callable[[], Any]) -> Any:
        with self.write():
            return work()

    def check_file(self) -> str | None:
        """No file to be replaced on PostgreSQL."""
        return None

    @contextlib.contextmanager
    def write(self) -> Iterator[Any]:
        """One transaction (BEGIN ... COMMIT), rolled back on any error; nested use joins the outer one.

        Write transactions run concurrently (one per pooled connection); what read-then-write checks need is a row
        lock each takes (docs/postgresql.md, "Transactions and constraints"). A network's event ids are drawn in
        commit order (the event insert locks the network's usage row first), and each commit queues its pushes for
        the loop under a short lock, so the loop pushes them in commit order (a stream skips an id below one it
        already sent); service/fanout.py also fills in any lower id it has not pushed yet."""
        con = self.pg
        if con.in_transaction:
            yield con
            return
        tx = self._tx
        tx.after = after = []
        tx.once = set()
        try:
            con.run("BEGIN", rows=False)
            try:
                yield con
                with self._commit_lock:
                    con.commit()
                    for fn, args in after:  # committed: in commit order (the lock), before any later commit's
                        try:
                            fn(*args)
                        except Exception:  # noqa: BLE001 (committed: the operation's answer stands)
                            log.exception("an after-commit step failed")
            except BaseException:
                if con.in_transaction:
                    try:
                        con.run("ROLLBACK", rows=False)
                    except (DatabaseUnavailable, DatabaseError):
                        log.exception("rollback failed")
                raise
        finally:
            tx.after = tx.once = None

    def after_commit(self, key: object, fn: Callable[..., object], *args: Any) -> None:
        """Call `fn(*args)` once the open write transaction has committed, in commit order (not at all if it rolls
        back); once per `key` per transaction. Outside a transaction: now."""
        after = getattr(self._tx, "after", None)
        if after is None:
            fn(*args)
            return
        once = self._tx.once
        if key not in once:
            once.add(key)
            after.append((fn, args))

    def push_to_loop(self, fn: Callable[..., object], *args: Any) -> None:
        """Have the event loop call `fn(*args)`, after everything pushed before (trio's run_sync_soon: FIFO, from
        any thread); with no loop known yet (a database used outside trio), call it now."""
        token = self._token
        if token is None:
            fn(*args)
            return
        try:
            token.run_sync_soon(fn, *args)
        except trio.RunFinishedError:  # the server stopped: no stream left to push to
            pass

    async def wait_for_write_lock(self, timeout: float) -> None:  # noqa: ASYNC109 (the interface's)
        """No database-wide write lock on PostgreSQL: nothing to wait for."""
        return

    def change_watch(self, name: str, events: dict[str, tuple[str, ...]]) -> ChangeWatch:
        """The PgChangeWatch of that name (made on first use)."""
        watch = self._watches.get(name)
        if watch is None:
            with self._watch_lock:  # made once even when several worker threads ask first at once
                watch = self._watches.get(name)
                if watch is None:
                    watch = self._watches[name] = PgChangeWatch(self, name, events)
        return watch

    def query(self, sql: str, params: Params = ()) -> list[dict[str, Any]]:
        """Run a read query (or a write with RETURNING); rows as dicts keyed by column name."""
        return self.pg.run(sql, params, as_dicts=True)  # type: ignore[no-any-return]

    def execute(self, sql: str, params: Params = ()) -> int:
        """Run a write statement (inside `write()`); returns the number of rows changed."""
        self.pg.run(sql, params, rows=False)
        return self.pg.changes()

    def checkpoint(self) -> None:
        """Nothing to fold on PostgreSQL (its WAL is the server's business)."""

    async def run_checkpointer(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """No checkpointer on PostgreSQL: started, then idle until cancelled."""
        task_status.started()
        await trio.sleep_forever()

    def close(self) -> None:
        """Close the pool and the loop's connection."""
        try:
            self._pool.close()
        finally:
            self.loop_con.close()


def schema_version(con: PgConnection) -> int | None:
    """The recorded schema version, or None for an empty database."""
    if con.run("SELECT to_regclass('commhub_schema') AS t")[0][0] is None:
        return None
    return int(con.run("SELECT version FROM commhub_schema")[0][0])


# The advisory lock a migration holds (any constant of ours; 'cmhb' in ASCII).
MIGRATE_LOCK_KEY = 0x636D6862


def migrate(con: PgConnection) -> None:
    """Bring the database to db.SCHEMA_VERSION: schema_pg.sql for an empty one, the pg/ twins after that."""
    target = sqlite_db.SCHEMA_VERSION
    version = schema_version(con)
    if version is not None and version > target:
        raise RuntimeError(f"database schema v{version} is newer than this CommHub (v{target})")
    if version == target:
        return
    con.run("BEGIN", rows=False)
    try:
        raw = con.raw
        # Several hub processes started together on one database: one migrates, the others wait for its COMMIT
        # here and then find the work done (without the lock, two CREATE the schema at once and one fails).
        raw.execute(f"SELECT pg_advisory_xact_lock({MIGRATE_LOCK_KEY})".encode())
        version = schema_version(con)
        if version is not None and version > target:
            raise RuntimeError(f"database schema v{version} is newer than this CommHub (v{target})")
        if version == target:
            con.run("COMMIT", rows=False)
            return
        if version is None:
            raw.execute(SCHEMA_PG_PATH.read_text(encoding="utf-8").encode())
            raw.execute(b"CREATE TABLE commhub_schema (version integer NOT NULL)")
            raw.execute(f"INSERT INTO commhub_schema(version) VALUES ({PG_BASE_VERSION})".encode())
            version = PG_BASE_VERSION
        steps = migration_steps()
        for step in sorted(n for n in steps if n > version):
            raw.execute(steps[step].encode())
        raw.execute(f"UPDATE commhub_schema SET version = {target}".encode())
        con.run("COMMIT", rows=False)
    except BaseException:
        with contextlib.suppress(psycopg.Error):
            con.raw.execute(b"ROLLBACK")
        raise


# --- Events across processes (docs/postgresql.md "Several processes"): NOTIFY on commit, one LISTEN per process ---

EVENTS_CHANNEL = "commhub_events"
# How the listener connection is named in pg_stat_activity (operators, and the test that cuts it, find it so).
LISTENER_APP_NAME = "commhub-listener"
# Rows one read of the listener takes (a longer backlog is read in pages of this size).
LISTENER_PAGE = 1000


def notify_events_on_commit(db: PgDatabase, origin: str, take_range: Callable[[], tuple[int, int] | None]) -> None:
    """Before each COMMIT of `db`, NOTIFY `EVENTS_CHANNEL` with '<origin> <lowest> <highest>' event id the
    transaction wrote (`take_range()`, None: it wrote none). NOTIFY is transactional: it is delivered only if
    the COMMIT succeeds, and a tiny payload whatever the number of events (a broadcast's thousand)."""
    def notify() -> None:
        ids = take_range()
        if ids is not None:  # on the connection committing (the thread's own: the loop's or a pooled one)
            db.pg.run("SELECT pg_notify(?, ?)", (EVENTS_CHANNEL, f"{origin} {ids[0]} {ids[1]}"), rows=False)

    db.pg.set_commit_hook(notify, id="events_fanout")


class _OwnConnection:
    """A process's own connection outside the pool (the event listener, the owner lock), used by one worker thread
    at a time (`_lock`); `stop` closes it now or as soon as that thread returns (its waits are bounded)."""

    def __init__(self, url: str):  # noqa: D107 (a connection to the database at `url`)
        self.url = url
        self._pg: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()  # held while a worker thread uses the connection
        self._stopped = False

    def backend_pid(self) -> int | None:
        """The server process of the connection (None when not connected)."""
        pg = self._pg
        return None if pg is None or pg.closed else pg.info.backend_pid

    def stop(self) -> None:
        """Close the connection now, or as soon as the worker thread using it returns (its wait is bounded)."""
        self._stopped = True
        if self._lock.acquire(blocking=False):
            try:
                self._close()
            finally:
                self._lock.release()

    @contextlib.contextmanager
    def _using(self, close_on_error: bool = False) -> Iterator[None]:
        """Hold the connection for one blocking call: a psycopg failure raised as the db error family (closing the
        connection first if asked), and the connection closed on the way out if `stop` came meanwhile."""
        with self._lock:
            try:
                yield
            except psycopg.Error as exc:
                if close_on_error:
                    self._close()
                raise _mapped(exc) from exc
            finally:
                if self._stopped:
                    self._close()

    def _notifications(self, pg: psycopg.Connection[Any], timeout: float) -> list[str]:
        """The payloads of the notifications received within `timeout` seconds (waits for the first only)."""
        payloads = [n.payload for n in pg.notifies(timeout=timeout, stop_after=1)]
        if payloads:  # and those already here, without waiting
            payloads += [n.payload for n in pg.notifies(timeout=0.0)]
        return payloads

    def _close(self) -> None:
        if self._pg is not None:
            with contextlib.suppress(psycopg.Error):
                self._pg.close()
            self._pg = None


class EventListener(_OwnConnection):
    """One process's own connection that LISTENs on EVENTS_CHANNEL and reads the events table. Every method
    blocks: service/fanout.py runs them in a worker thread, one at a time, never on the event loop. A lost
    connection raises DatabaseUnavailable; the next `open` makes a new one."""

    def open(self) -> None:
        """(Re)connect and LISTEN (a notification sent before this returns is not received: read the table)."""
        with self._lock:
            self._close()
            try:
                pg = psycopg.Connection.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS,
                                                application_name=LISTENER_APP_NAME)
                pg.adapters.register_loader("json", _TextLoader)
                pg.adapters.register_loader("jsonb", _TextLoader)
                pg.execute(f"LISTEN {EVENTS_CHANNEL}".encode())
            except psycopg.Error as exc:
                raise _mapped(exc) from exc
            self._pg = pg
            if self._stopped:  # stop() came while this thread was connecting
                self._close()

    def wait(self, timeout: float) -> list[str]:  # noqa: ASYNC109 (blocking, in a worker thread)
        """The payloads of the notifications received within `timeout` seconds (waits for the first only)."""
        with self._using():
            return self._notifications(self._connection(), timeout)

    def events_from(self, first_id: int) -> list[Event]:
        """The committed events with id >= first_id, in id order, each with its shared text put back."""
        with self._using():
            pg = self._connection()
            out: list[Event] = []
            while True:
                rows = pg.execute(
                    b"SELECT e.id, e.network_id, e.alias, e.event, e.data, b.content FROM events e"
                    b" LEFT JOIN bodies b ON b.body_id = e.body_id WHERE e.id >= %s ORDER BY e.id LIMIT %s",
                    (first_id, LISTENER_PAGE)).fetchall()
                for id_, network_id, alias, name, data, shared in rows:
                    if shared is not None:
                        data = with_text(data, json.dumps(shared, ensure_ascii=False))
                    out.append(Event(int(id_), network_id, alias, name, data))
                if len(rows) < LISTENER_PAGE:
                    return out
                first_id = int(rows[-1][0]) + 1

    def _connection(self) -> psycopg.Connection[Any]:
        if self._pg is None or self._pg.closed or self._pg.broken:
            raise DatabaseUnavailable("the event listener lost its connection", retry_after=2)
        return self._pg


# --- One owner of the background workers across processes (service/leader.py, docs/postgresql.md) ---

# The session-level advisory lock whose holder runs the background workers: one key per database ("CommHub!").
OWNER_LOCK_KEY = 0x436F6D6D48756221
# Other processes' wake-ups for the owner's workers (an outbox row, a schedule change made on a non-owner).
WAKE_CHANNEL = "commhub_wake"
# How the lock connection is named in pg_stat_activity: the holder, and the processes waiting to take over.
OWNER_APP_NAME = "commhub-owner"
STANDBY_APP_NAME = "commhub-standby"


class OwnerLock(_OwnConnection):
    """One process's own connection for the owner lock (pg_try_advisory_lock, session level: PostgreSQL frees it
    when the connection ends, kill -9 of the process included). Every method blocks: service/leader.py runs them in
    a worker thread, one at a time, never on the event loop. A lost connection raises DatabaseUnavailable (and with
    it the lock); the next `try_take` makes a new connection."""

    def __init__(self, url: str):  # noqa: D107 (the owner lock of the database at `url`)
        super().__init__(url)
        self.held = False

    def try_take(self) -> bool:
        """Take the lock if no other session holds it (connecting first if needed); once taken, LISTEN for
        wake-ups. True: this connection holds it until it ends."""
        with self._using(close_on_error=True):
            pg = self._connection(connect=True)
            if not pg.execute(b"SELECT pg_try_advisory_lock(%s)", (OWNER_LOCK_KEY,)).fetchone()[0]:  # type: ignore[index]
                return False
            self.held = True
            pg.execute(f"SET application_name = '{OWNER_APP_NAME}'".encode())
            pg.execute(f"LISTEN {WAKE_CHANNEL}".encode())
            return True

    def wait(self, timeout: float) -> list[str]:  # noqa: ASYNC109 (blocking, in a worker thread)
        """The owner's wait: wake-up payloads received within `timeout` seconds, then a round trip proving the
        connection (and so the lock) is still there; DatabaseUnavailable when it is not."""
        with self._using(close_on_error=True):
            pg = self._connection()
            payloads = self._notifications(pg, timeout)
            pg.execute(b"SELECT 1")
            return payloads

    def notify(self, payloads: list[str]) -> None:
        """A non-owner's wake-ups for the owner's workers (NOTIFY, autocommit: sent at once)."""
        with self._using(close_on_error=True):
            pg = self._connection(connect=True)
            for payload in payloads:
                pg.execute(b"SELECT pg_notify(%s, %s)", (WAKE_CHANNEL, payload))

    def drop(self) -> None:
        """Close the connection (and so free the lock if the server still thinks it is held)."""
        with self._lock:
            self._close()

    def _connection(self, connect: bool = False) -> psycopg.Connection[Any]:
        if self._pg is None or self._pg.closed or self._pg.broken:
            if self.held or not connect:  # the lock went with the old connection: the caller must know
                self._close()
                raise DatabaseUnavailable("the owner lock's connection was lost", retry_after=2)
            try:
                self._pg = psycopg.Connection.connect(self.url, autocommit=True,
                                                      connect_timeout=CONNECT_TIMEOUT_SECONDS,
                                                      application_name=STANDBY_APP_NAME)
            except psycopg.Error as exc:
                raise _mapped(exc) from exc
        return self._pg

    def _close(self) -> None:
        self.held = False
        super()._close()


def notify_now(db: PgDatabase, payload: str) -> None:
    """NOTIFY `EVENTS_CHANNEL` with `payload` on `db` (sent at once outside a transaction, at its COMMIT inside one):
    service/fanout.py's word to the other processes that a cache of theirs is stale."""
    db.pg.run("SELECT pg_notify(?, ?)", (EVENTS_CHANNEL, payload), rows=False)
