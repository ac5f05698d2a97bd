"""`commhub migrate --from sqlite:PATH --to postgresql://…`: move a hub's data from SQLite to PostgreSQL.

How (docs/migrate.md):
- The target's schema is the PostgreSQL engine's own (created here when the database is empty); the copy reads
  the table and column lists of both catalogs, so no table or column is spelled out here. Tables are copied in
  foreign-key order, in chunks (COPY), each chunk in one transaction together with a progress row in the target
  (`commhub_migrate_tables`: last key copied, rows done). A run that is interrupted (killed, connection lost) is
  continued with `--resume`: it starts after the last committed chunk, so no row is copied twice.
- The target table's own triggers are off while its chunk is written (the counter tables are copied as they are).
  SQLite's rowid becomes the target's `seq` order column; sequences are set past the largest id copied (and past
  SQLite's AUTOINCREMENT high-water mark, so an event id is never handed out twice).
- At the end: the row count of every table on both sides and a sample of rows compared field by field.
- The source is locked (the server's own `<db>.lock`) for the whole run: a running server is refused, and none
  can start on it meanwhile. A source at an older schema is first brought up to date, as `serve` would.
A target that holds other data (or another hub's migration) is refused. Exit codes: 0 copied and verified, 1 refused
or failed (the message says why), 2 usage.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import decimal
import fcntl
import hashlib
import importlib
import importlib.util
import json
import math
import os
import random
import sys
import time
from collections.abc import Iterator
from typing import IO, Any

import apsw

from .. import db as sqlite_db
from ..store import migrate as q
from .common import EXIT_OK, EXIT_REFUSED, EXIT_USAGE, fail, json_flag, print_json

DEFAULT_CHUNK = 5000
DEFAULT_CHUNK_BYTES = 32 * 1024 * 1024  # a chunk of attachments' blobs stays this small in memory
DEFAULT_SAMPLE = 200  # rows compared field by field per table


class MigrateError(Exception):
    """A refusal or failure with the message to print and the exit code."""

    def __init__(self, message: str, code: int = EXIT_REFUSED):
        super().__init__(message)
        self.code = code


@dataclasses.dataclass
class TablePlan:
    """How one table is copied: source columns read, target columns written, the key that orders the chunks."""

    name: str
    source_columns: list[str]
    target_columns: list[str]  # source_columns (+ ROWID_COLUMN when the rowid fills it)
    key: list[str]  # ["rowid"] or the source's primary key columns (WITHOUT ROWID tables)
    rowid_to_seq: bool
    total: int = 0
    done: int = 0


# --- arguments ------------------------------------------------------------------------------------------------

def parse_source(value: str) -> str:
    """The SQLite file named by `sqlite:PATH` (or a bare path)."""
    path = value.removeprefix("sqlite://").removeprefix("sqlite:")
    if not path:
        raise MigrateError("--from needs a SQLite file: --from sqlite:/path/to/commhub.db", EXIT_USAGE)
    return path


def check_target(value: str) -> str:
    """The target URL, which must be a PostgreSQL one."""
    if not value.startswith(("postgresql://", "postgres://")):
        raise MigrateError("--to needs a PostgreSQL URL: --to postgresql://USER@HOST/DB", EXIT_USAGE)
    return value


def redacted(url: str) -> str:
    """The URL without its password (for messages and the progress record)."""
    head, sep, tail = url.partition("://")
    if "@" in tail.split("/", 1)[0]:
        auth, rest = tail.split("@", 1)
        tail = auth.split(":", 1)[0] + (":***" if ":" in auth else "") + "@" + rest
    return head + sep + tail


# --- the source -----------------------------------------------------------------------------------------------

@contextlib.contextmanager
def locked_source(path: str) -> Iterator[apsw.Connection]:
    """The source database, opened with the server's one-instance lock held (so no server runs on it meanwhile)
    and brought to the current schema version."""
    if not os.path.isfile(path):
        raise MigrateError(f"no SQLite database at {path}")
    lock_path = os.path.realpath(path) + ".lock"  # the same file `serve` locks (runtime/server.lock_database)
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise MigrateError(f"cannot create the lock file {lock_path}: {exc.strerror or exc}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise MigrateError(f"a CommHub server is running on {path}: stop it first (a migration copies a hub at "
                               "rest; the server is started on PostgreSQL afterwards)") from exc
        con = apsw.Connection(path)
        try:
            sqlite_db.configure(con)
            version = q.sqlite_user_version(con)
            if version == 0:
                raise MigrateError(f"{path} is not a CommHub database (no schema version)")
            if version > sqlite_db.SCHEMA_VERSION:
                raise MigrateError(f"{path} is at schema v{version}, newer than this CommHub "
                                   f"(v{sqlite_db.SCHEMA_VERSION}): upgrade CommHub first")
            if version < sqlite_db.SCHEMA_VERSION:
                print(f"bringing {path} from schema v{version} to v{sqlite_db.SCHEMA_VERSION} first (as serve would)",
                      file=sys.stderr)
                sqlite_db.migrate(con)
            yield con
        finally:
            con.close()
    finally:
        os.close(fd)


def fingerprint(src: apsw.Connection) -> str:
    """What identifies a hub across runs: its oldest user and network (random ids, created once)."""
    parts = []
    for table, columns in (("users", ["user_id", "created_at"]), ("networks", ["network_id", "created_at"])):
        parts.append(q.sqlite_first_row(src, table, columns))
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:32]


# --- the target -----------------------------------------------------------------------------------------------

def connect_target(url: str) -> Any:
    """A psycopg connection (autocommit: every transaction here is explicit)."""
    try:
        import psycopg
    except ImportError as exc:
        raise MigrateError("migrating to PostgreSQL needs psycopg: pip install 'commhub[postgres]' "
                           "(or 'psycopg[binary]')") from exc
    try:
        return psycopg.connect(url, autocommit=True)
    except psycopg.Error as exc:
        raise MigrateError(f"cannot connect to {redacted(url)}: {str(exc).strip()}") from exc


def create_target_schema(url: str) -> bool:
    """Create CommHub's schema in an empty target with the PostgreSQL engine (commhub_lib.db_pg), if this CommHub
    has it; False when it does not (then the target must already hold the schema)."""
    if importlib.util.find_spec("commhub_lib.db_pg") is None:
        return False
    engine = importlib.import_module("commhub_lib.db_pg")
    database = engine.PgDatabase(url)
    database.close()
    return True


def dependency_order(names: list[str], references: dict[str, set[str]]) -> list[str]:
    """Tables ordered so that every table comes after the tables its foreign keys point at (ties keep the given
    order); a cycle is an error (its rows could not be inserted table by table)."""
    ordered: list[str] = []
    placed: set[str] = set()
    pending = list(names)
    while pending:
        ready = [t for t in pending if not (references.get(t, set()) & set(pending)) - {t}]
        if not ready:
            raise MigrateError(f"the foreign keys of {', '.join(pending)} form a cycle: cannot copy table by table")
        for table in ready:
            ordered.append(table)
            placed.add(table)
        pending = [t for t in pending if t not in placed]
    return ordered


def plan_tables(src: apsw.Connection, dst: Any) -> tuple[list[TablePlan], list[str]]:
    """The copy plan from both catalogs, in foreign-key order, plus the notes on what is not copied. Refuses when a
    source table or column has no place in the target (its data would be lost)."""
    target_tables = set(q.pg_tables(dst))
    missing: list[str] = []
    plans: dict[str, TablePlan] = {}
    references: dict[str, set[str]] = {}
    for name, without_rowid in q.sqlite_tables(src):
        if name not in target_tables:
            missing.append(f"table {name}")
            continue
        source_cols = q.sqlite_columns(src, name)
        target_cols = {col: (identity, generated) for col, _type, identity, generated in q.pg_columns(dst, name)}
        names = [col for col, _pk in source_cols]
        lost = [col for col in names if col not in target_cols]
        generated = [col for col in names if col in target_cols and target_cols[col][1]]
        missing += [f"column {name}.{col}" for col in lost]
        missing += [f"column {name}.{col} (generated in the target)" for col in generated]
        rowid_to_seq = (not without_rowid and q.ROWID_COLUMN in target_cols and q.ROWID_COLUMN not in names
                        and not target_cols[q.ROWID_COLUMN][1])
        if without_rowid:
            key = [col for col, pk in sorted((c for c in source_cols if c[1]), key=lambda c: c[1])]
        else:
            key = ["rowid"]
        plans[name] = TablePlan(name, names, names + ([q.ROWID_COLUMN] if rowid_to_seq else []), key, rowid_to_seq)
        references[name] = q.sqlite_references(src, name) | q.pg_references(dst, name)
    if missing:
        raise MigrateError("the target's schema has no place for " + ", ".join(missing) + ": is it CommHub's schema "
                           "at the same version as the source?")
    skipped = sorted(target_tables - set(plans) - {q.RUN_TABLE, q.PROGRESS_TABLE})
    notes = [f"target-only tables left as the engine made them: {', '.join(skipped)}"] if skipped else []
    order = dependency_order(list(plans), references)
    return [plans[name] for name in order], notes


# --- progress on the terminal ---------------------------------------------------------------------------------

class Progress:
    """Rows done / total per table, the rate and the time left: one line rewritten in place on a terminal, plain
    lines (at most one every few seconds per table, and one when it ends) otherwise."""

    def __init__(self, total: int, done: int, stream: IO[str], quiet: bool = False):
        self.total, self.start_done, self.stream, self.quiet = total, done, stream, quiet
        self.tty = stream.isatty()
        self.started = time.monotonic()
        self.last_plain = 0.0
        self.done = done

    def rate(self) -> float:
        """Rows per second copied by this run."""
        elapsed = time.monotonic() - self.started
        return (self.done - self.start_done) / elapsed if elapsed > 0 else 0.0

    def line(self, plan: TablePlan) -> str:
        """The progress line for the table being copied."""
        rate = self.rate()
        left = (self.total - self.done) / rate if rate > 0 else math.inf
        eta = "?" if math.isinf(left) else f"{left:,.0f} s"
        return (f"{plan.name}: {plan.done:,}/{plan.total:,} rows · all {self.done:,}/{self.total:,} · "
                f"{rate:,.0f} rows/s · {eta} left")

    def update(self, plan: TablePlan, rows: int, final: bool = False) -> None:
        """Count `rows` more rows of `plan` and show it."""
        self.done += rows
        if self.quiet:
            return
        if self.tty:
            end = "\n" if final else ""
            self.stream.write("\r\x1b[K" + self.line(plan) + end)
            self.stream.flush()
        elif final or time.monotonic() - self.last_plain >= 5:
            self.last_plain = time.monotonic()
            print(self.line(plan), file=self.stream, flush=True)


# --- copy -----------------------------------------------------------------------------------------------------

def batches(rows: Iterator[tuple[Any, ...]], count: int, max_bytes: int,
            budget: list[int] | None) -> Iterator[list[tuple[Any, ...]]]:
    """Rows cut into chunks of at most `count` rows and about `max_bytes` of text and blobs (an attachment's bytes
    live in a row: a chunk must not hold thousands of them in memory). A --stop-after budget ends the stream."""
    batch: list[tuple[Any, ...]] = []
    size = 0
    for row in rows:
        if budget is not None and budget[0] - len(batch) <= 0:
            break
        batch.append(row)
        size += sum(len(v) for v in row if isinstance(v, (str, bytes)))
        if len(batch) >= count or size >= max_bytes:
            yield batch
            if budget is not None:
                budget[0] -= len(batch)
            batch, size = [], 0
    if batch:
        yield batch
        if budget is not None:
            budget[0] -= len(batch)


def hold_point(value: str | None) -> tuple[str, int] | None:
    """--hold-after TABLE:ROWS (a test knob) as (table, rows), or None."""
    if not value:
        return None
    table, _, rows = value.rpartition(":")
    if not table or not rows.isdigit():
        raise MigrateError("--hold-after takes TABLE:ROWS", EXIT_USAGE)
    return table, int(rows)


def copy_table(src: apsw.Connection, dst: Any, plan: TablePlan, after: list[Any] | None, chunk: int,
               chunk_bytes: int, progress: Progress, budget: list[int] | None,
               hold: tuple[str, int] | None = None) -> bool:
    """Copy a table's rows after the key `after`, chunk by chunk, each chunk and its progress row in one
    transaction. Returns False when the --stop-after budget ran out first. With `hold` (a test knob), once that
    table has that many rows copied, wait between two chunks until a signal ends the run: an interruption then
    lands mid-copy however loaded the machine is."""
    nkey = len(plan.key)
    for rows in batches(q.sqlite_rows_after(src, plan.name, plan.source_columns, plan.key, after), chunk,
                        chunk_bytes, budget):
        if plan.rowid_to_seq:
            values = [row[nkey:] + (row[0],) for row in rows]
        else:
            values = [row[nkey:] for row in rows]
        after = list(rows[-1][:nkey])
        with dst.transaction():
            q.pg_set_triggers(dst, plan.name, False)
            q.pg_copy_rows(dst, plan.name, plan.target_columns, values)
            q.pg_set_triggers(dst, plan.name, True)
            q.pg_save_progress(dst, plan.name, after, plan.done + len(rows), False)
        plan.done += len(rows)
        progress.update(plan, len(rows))
        if hold is not None and hold[0] == plan.name and plan.done >= hold[1]:
            while True:  # a test interrupts (SIGINT) or kills the run here
                time.sleep(3600)
    if budget is not None and budget[0] <= 0 and plan.done < plan.total:
        return False
    with dst.transaction():
        q.pg_save_progress(dst, plan.name, after, plan.done, True)
    progress.update(plan, 0, final=True)
    return True


def set_sequences(src: apsw.Connection, dst: Any, plans: list[TablePlan]) -> int:
    """Set every identity/serial sequence of the copied tables past the largest value copied (and past SQLite's
    AUTOINCREMENT mark for that table); the number set."""
    marks = q.sqlite_sequences(src)
    count = 0
    for plan in plans:
        for column, sequence in q.pg_serial_columns(dst, plan.name):
            highest = max(q.pg_max(dst, plan.name, column) or 0, marks.get(plan.name, 0) if column != q.ROWID_COLUMN
                          else 0)
            if highest > 0:
                q.pg_set_sequence(dst, sequence, highest)
                count += 1
    return count


# --- verify ---------------------------------------------------------------------------------------------------

def same(source: Any, target: Any) -> bool:
    """Whether a SQLite value and the PostgreSQL value copied from it are the same datum."""
    if source is None or target is None:
        return source is None and target is None
    if isinstance(target, bool):
        return source in (0, 1) and bool(source) is target
    if isinstance(target, (dict, list)):
        try:
            return json.loads(source) == target
        except (TypeError, ValueError):
            return False
    if isinstance(target, (bytes, bytearray, memoryview)):
        return bytes(target) == (source if isinstance(source, bytes) else str(source).encode())
    if isinstance(target, decimal.Decimal):
        return decimal.Decimal(str(source)) == target
    if isinstance(target, float) or isinstance(source, float):
        try:
            return math.isclose(float(source), float(target), rel_tol=1e-12)
        except (TypeError, ValueError):
            return False
    if isinstance(target, datetime.datetime):
        return str(source) in (target.strftime("%Y-%m-%d %H:%M:%S"), target.isoformat(), str(target))
    if type(source) is type(target):
        return source == target
    return str(source) == str(target)


def sample_rows(src: apsw.Connection, plan: TablePlan, size: int, rng: random.Random) -> list[tuple[Any, ...]]:
    """Up to `size` source rows spread over the table (rowid first for rowid tables, then the columns)."""
    if plan.key != ["rowid"]:
        return q.sqlite_first_rows(src, plan.name, plan.source_columns, size)
    span = q.sqlite_rowid_range(src, plan.name)
    if span is None:
        return []
    seen: dict[int, tuple[Any, ...]] = {}
    for rowid in [span[0], span[1], *(rng.randint(span[0], span[1]) for _ in range(size))]:
        row = q.sqlite_row_at_or_after(src, plan.name, plan.source_columns, rowid)
        if row is not None:
            seen.setdefault(int(row[0]), row)
        if len(seen) >= size:
            break
    return list(seen.values())


def verify(src: apsw.Connection, dst: Any, plans: list[TablePlan], sample: int) -> dict[str, Any]:
    """Counts per table on both sides, and a sample of rows compared field by field. The result per table."""
    rng = random.Random(0x5EED)
    tables: dict[str, Any] = {}
    for plan in plans:
        source_count, target_count = q.sqlite_count(src, plan.name), q.pg_count(dst, plan.name)
        result: dict[str, Any] = {"source_rows": source_count, "target_rows": target_count,
                                  "counts_match": source_count == target_count, "sampled": 0, "mismatches": []}
        # Sample rows carry the rowid first (rowid tables), then the columns. A row is found in the target by the
        # rowid's `seq`, else by the target's primary key.
        offset = 1 if plan.key == ["rowid"] else 0
        if plan.rowid_to_seq:
            key, positions = [q.ROWID_COLUMN], [-1]
        else:
            key = q.pg_primary_key(dst, plan.name)
            positions = [plan.source_columns.index(k) for k in key if k in plan.source_columns]
            if not key or len(positions) != len(key):
                key = []
        if key and sample > 0:
            for row in sample_rows(src, plan, sample, rng):
                values = [row[0] if p < 0 else row[offset + p] for p in positions]
                found = q.pg_rows_by_key(dst, plan.name, plan.source_columns, key, values)
                result["sampled"] += 1
                if len(found) != 1:
                    result["mismatches"].append({"key": values, "problem": f"{len(found)} rows in target"})
                    continue
                for column, want, got in zip(plan.source_columns, row[offset:], found[0], strict=True):
                    if not same(want, got):
                        result["mismatches"].append({"key": values, "column": column,
                                                     "source": repr(want)[:80], "target": repr(got)[:80]})
        elif not key:
            result["note"] = "no key to look rows up by: counts only"
        tables[plan.name] = result
    return tables


# --- the command ----------------------------------------------------------------------------------------------

def run_migration(args: argparse.Namespace) -> dict[str, Any]:
    """The whole migration; returns the summary (raises MigrateError to refuse or fail)."""
    path, url = parse_source(args.source), check_target(args.target)
    if args.chunk_size < 1 or args.chunk_bytes < 1 or args.sample < 0:
        raise MigrateError("--chunk-size must be at least 1 and --sample at least 0", EXIT_USAGE)
    with locked_source(path) as src:
        dst = connect_target(url)
        try:
            return migrate_open(src, dst, path, url, args)
        finally:
            dst.close()


def migrate_open(src: apsw.Connection, dst: Any, path: str, url: str, args: argparse.Namespace) -> dict[str, Any]:
    """The migration on open connections (the source locked)."""
    import psycopg

    started = time.monotonic()
    hub = fingerprint(src)
    run = q.pg_run(dst)
    if run is None and not set(q.pg_tables(dst)) & {name for name, _ in q.sqlite_tables(src)}:
        if not create_target_schema(url):
            raise MigrateError(f"{redacted(url)} has no CommHub schema and this CommHub has no PostgreSQL engine to "
                               "create it")
    target_version, source_version = q.pg_schema_version(dst), q.sqlite_user_version(src)
    if target_version is not None and target_version != source_version:
        raise MigrateError(f"the target's schema is v{target_version} and the source's v{source_version}: both must "
                           "be this CommHub's (a target made by an older CommHub: start a server on it once to "
                           "upgrade it, or migrate into a new database)")
    plans, notes = plan_tables(src, dst)
    if run is not None:
        if run["fingerprint"] != hub:
            raise MigrateError(f"{redacted(url)} already holds another hub's data (migrated from {run['source']} "
                               f"starting {run['started_at']:%Y-%m-%d %H:%M} UTC): migrate into a new database")
        if not args.resume:
            state = "finished" if run["finished_at"] else "was interrupted"
            raise MigrateError(f"a migration of this hub into {redacted(url)} {state} (started "
                               f"{run['started_at']:%Y-%m-%d %H:%M} UTC): re-run with --resume to continue it "
                               "(and verify it again)")
    else:
        full = [plan.name for plan in plans if q.pg_has_rows(dst, plan.name)]
        if full:
            raise MigrateError(f"{redacted(url)} already holds data (in {', '.join(full[:5])}"
                               f"{', …' if len(full) > 5 else ''}) that no migration of this hub put there: "
                               "migrate into a new, empty database")
        with dst.transaction():
            q.pg_create_progress(dst)
            q.pg_start_run(dst, os.path.realpath(path), hub)
    progress_rows = q.pg_progress(dst)
    for plan in plans:
        plan.total = q.sqlite_count(src, plan.name)
        plan.done = progress_rows.get(plan.name, (None, 0, False))[1]
    progress = Progress(sum(p.total for p in plans), sum(p.done for p in plans), sys.stderr,
                        quiet=getattr(args, "json", False) and not sys.stderr.isatty())
    budget = [args.stop_after] if args.stop_after is not None else None
    try:
        for plan in plans:
            last_key, _done, finished = progress_rows.get(plan.name, (None, 0, False))
            if finished:
                continue
            if not copy_table(src, dst, plan, last_key, args.chunk_size, args.chunk_bytes, progress, budget,
                              hold_point(args.hold_after)):
                raise MigrateError(f"stopped after {args.stop_after:,} rows (--stop-after) in {plan.name}: re-run "
                                   "with --resume to continue")
    except psycopg.Error as exc:
        raise MigrateError(f"copy failed: {str(exc).strip()}: the chunks committed so far are kept; fix the cause "
                           "and re-run with --resume") from exc
    with dst.transaction():
        sequences = set_sequences(src, dst, plans)
    tables = verify(src, dst, plans, args.sample)
    ok = all(t["counts_match"] and not t["mismatches"] for t in tables.values())
    if ok:
        with dst.transaction():
            q.pg_finish_run(dst)
    rows = sum(t["target_rows"] for t in tables.values())
    return {"ok": ok, "source": path, "target": redacted(url), "tables": tables, "rows": rows,
            "sequences_set": sequences, "seconds": round(time.monotonic() - started, 3), "notes": notes}


def print_summary(summary: dict[str, Any]) -> None:
    """The verification, one line per table, then the verdict."""
    for name, t in summary["tables"].items():
        mark = "ok" if t["counts_match"] and not t["mismatches"] else "MISMATCH"
        print(f"{mark:8} {name}: {t['source_rows']:,} -> {t['target_rows']:,} rows, {t['sampled']} sampled"
              + (f", {len(t['mismatches'])} differ" if t["mismatches"] else "") + (f" ({t['note']})" if "note" in t
                                                                                     else ""))
        for m in t["mismatches"][:5]:
            print(f"         {m}")
    for note in summary["notes"]:
        print(note)
    verdict = "migrated and verified" if summary["ok"] else "copied, but the check FAILED"
    print(f"{verdict}: {summary['rows']:,} rows in {len(summary['tables'])} tables from {summary['source']} to "
          f"{summary['target']} in {summary['seconds']} s")


def cmd_migrate(args: argparse.Namespace) -> int:
    """Copy a hub from SQLite to PostgreSQL, resumably, and verify it."""
    try:
        summary = run_migration(args)
    except MigrateError as exc:
        return fail(str(exc), exc.code)
    except KeyboardInterrupt:
        # The open chunk's transaction was rolled back; every committed one is recorded with its progress row.
        print(file=sys.stderr)
        return fail("interrupted: the chunks committed so far are kept; re-run with --resume to continue")
    if args.json:
        print_json(summary)
    else:
        print_summary(summary)
    return EXIT_OK if summary["ok"] else EXIT_REFUSED


def register(sub: argparse._SubParsersAction) -> None:
    """Add `migrate`."""
    p = sub.add_parser("migrate", parents=[json_flag()], help="copy a hub from SQLite to PostgreSQL (resumable)",
                       description="Copy every table of a stopped hub's SQLite file into a new PostgreSQL database "
                                   "(CommHub's schema is created there), showing progress; an interrupted run "
                                   "continues with --resume. Ends by comparing the row counts of every table and a "
                                   "sample of rows field by field. See docs/migrate.md.")
    p.add_argument("--from", dest="source", required=True, metavar="sqlite:PATH", help="the hub's SQLite file")
    p.add_argument("--to", dest="target", required=True, metavar="postgresql://…",
                   help="the target database (new and empty, or the one an interrupted run left)")
    p.add_argument("--resume", action="store_true", help="continue (or re-verify) a migration of this same hub")
    p.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK, metavar="ROWS",
                   help=f"rows per transaction (default {DEFAULT_CHUNK})")
    p.add_argument("--sample", type=int, default=DEFAULT_SAMPLE, metavar="ROWS",
                   help=f"rows per table compared field by field at the end (default {DEFAULT_SAMPLE})")
    p.add_argument("--chunk-bytes", type=int, default=DEFAULT_CHUNK_BYTES, help=argparse.SUPPRESS)
    # A test knob: stop (as an interruption would) after this many rows; the run is then continued with --resume.
    p.add_argument("--stop-after", type=int, default=None, help=argparse.SUPPRESS)
    # A test knob: once TABLE has ROWS copied, wait between two chunks until a signal ends the run.
    p.add_argument("--hold-after", default=None, metavar="TABLE:ROWS", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_migrate)
