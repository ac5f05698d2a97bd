"""The SQL of `commhub migrate` (SQLite -> PostgreSQL): catalog reads on both engines, chunk reads, COPY, and the
progress tables kept in the target. One named function per query, as everywhere in store/.

Unlike the rest of store/ these functions take the raw connections (an `apsw.Connection` for the source, a
`psycopg.Connection` for the target): the copy works table by table on whatever schema both catalogs hold, so it
never hard-codes a table or a column. psycopg is imported by the caller only (cli/migrate.py), never here, so the
SQLite path stays free of it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import apsw

# A psycopg.Connection. Typed loosely on purpose: psycopg's stubs accept only literal SQL, and these statements
# are built from catalog names (always quoted by qi()), never from values.
PgCon = Any

# The PostgreSQL schema orders lists by an explicit `seq` identity where SQLite uses rowid (store/dialect.py):
# a target table with this column, whose source has no column of that name, gets the source's rowid in it, so
# the order (and the keys that pages hand out) carry over exactly.
ROWID_COLUMN = "seq"

PROGRESS_TABLE = "commhub_migrate_tables"
RUN_TABLE = "commhub_migrate_run"


def qi(name: str) -> str:
    """A quoted SQL identifier (the same rule on both engines)."""
    return '"' + name.replace('"', '""') + '"'


# --- source: SQLite -------------------------------------------------------------------------------------------

def sqlite_user_version(src: apsw.Connection) -> int:
    """The source's schema version (PRAGMA user_version)."""
    return int(src.pragma("user_version"))


def sqlite_tables(src: apsw.Connection) -> list[tuple[str, bool]]:
    """The source's ordinary tables in creation order, as (name, without_rowid); FTS5 virtual tables, their shadow
    tables and SQLite's own are left out (the target indexes text its own way)."""
    rows = src.execute("SELECT name, wr FROM pragma_table_list WHERE schema = 'main' AND type = 'table'"
                       " AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'").fetchall()
    order = {name: i for i, (name,) in enumerate(src.execute("SELECT name FROM sqlite_schema WHERE type = 'table'"))}
    return sorted(((str(name), bool(wr)) for name, wr in rows), key=lambda row: order.get(row[0], 1 << 30))


def sqlite_columns(src: apsw.Connection, table: str) -> list[tuple[str, int]]:
    """A source table's columns in order, as (name, position in its primary key or 0)."""
    return [(str(name), int(pk)) for name, pk in src.execute("SELECT name, pk FROM pragma_table_info(?) ORDER BY cid",
                                                             (table,))]


def sqlite_references(src: apsw.Connection, table: str) -> set[str]:
    """The tables a source table's foreign keys point at."""
    return {str(name) for (name,) in src.execute('SELECT "table" FROM pragma_foreign_key_list(?)', (table,))}


def sqlite_count(src: apsw.Connection, table: str) -> int:
    """Rows in a source table."""
    count: Any = src.execute(f"SELECT count(*) FROM {qi(table)}").fetchall()[0][0]
    return int(count)


def sqlite_sequences(src: apsw.Connection) -> dict[str, int]:
    """AUTOINCREMENT high-water marks (sqlite_sequence): ids once handed out, even if their rows were pruned."""
    if not src.execute("SELECT 1 FROM sqlite_schema WHERE name = 'sqlite_sequence'").fetchall():
        return {}
    return {str(name): int(seq) for name, seq in src.execute("SELECT name, seq FROM sqlite_sequence")}


def sqlite_rows_after(src: apsw.Connection, table: str, columns: Sequence[str], key: Sequence[str],
                      after: Sequence[Any] | None) -> Iterator[tuple[Any, ...]]:
    """The source table's rows in key order after the key values `after` (None: from the start), read lazily.
    Each row is the key values followed by `columns`. `key` is ["rowid"] or the primary key's columns."""
    keys = ", ".join(k if k == "rowid" else qi(k) for k in key)
    select = ", ".join([keys, *(qi(c) for c in columns)])
    where, params = "", ()
    if after is not None:
        where = f" WHERE ({keys}) > ({', '.join('?' * len(key))})"
        params = tuple(after)
    for row in src.execute(f"SELECT {select} FROM {qi(table)}{where} ORDER BY {keys}", params):
        yield tuple(row)


def sqlite_rowid_range(src: apsw.Connection, table: str) -> tuple[int, int] | None:
    """The smallest and largest rowid of a source table, or None when it is empty."""
    low, high = src.execute(f"SELECT min(rowid), max(rowid) FROM {qi(table)}").fetchall()[0]
    return None if low is None else (int(low), int(high))  # type: ignore[arg-type]  # both ints when not NULL


def sqlite_row_at_or_after(src: apsw.Connection, table: str, columns: Sequence[str],
                           rowid: int) -> tuple[Any, ...] | None:
    """The first source row at or after `rowid` (rowid first, then `columns`): how a sample is drawn."""
    rows = src.execute(f"SELECT rowid, {', '.join(qi(c) for c in columns)} FROM {qi(table)} WHERE rowid >= ?"
                       " ORDER BY rowid LIMIT 1", (rowid,)).fetchall()
    return tuple(rows[0]) if rows else None


def sqlite_first_rows(src: apsw.Connection, table: str, columns: Sequence[str], limit: int) -> list[tuple[Any, ...]]:
    """Up to `limit` rows of a source table in no particular order (the sample of a WITHOUT ROWID table)."""
    return [tuple(row) for row in src.execute(f"SELECT {', '.join(qi(c) for c in columns)} FROM {qi(table)}"
                                              " LIMIT ?", (limit,))]


def sqlite_first_row(src: apsw.Connection, table: str, columns: Sequence[str]) -> tuple[Any, ...] | None:
    """The oldest row (lowest rowid) of a source table: part of the hub's fingerprint."""
    rows = src.execute(f"SELECT {', '.join(qi(c) for c in columns)} FROM {qi(table)} ORDER BY rowid LIMIT 1"
                       ).fetchall()
    return tuple(rows[0]) if rows else None


# --- target: PostgreSQL ---------------------------------------------------------------------------------------

def pg_tables(dst: PgCon) -> list[str]:
    """The target's ordinary tables in its current schema."""
    rows = dst.execute("SELECT c.relname FROM pg_class c WHERE c.relnamespace = current_schema()::regnamespace"
                       " AND c.relkind IN ('r', 'p') ORDER BY c.oid").fetchall()
    return [str(name) for (name,) in rows]


def pg_schema_version(dst: PgCon) -> int | None:
    """The target's CommHub schema version (the engine keeps it in `commhub_schema`), or None without that table."""
    if dst.execute("SELECT to_regclass('commhub_schema')").fetchone() in (None, (None,)):
        return None
    row = dst.execute("SELECT max(version) FROM commhub_schema").fetchone()
    return None if row is None or row[0] is None else int(row[0])


def pg_columns(dst: PgCon, table: str) -> list[tuple[str, str, bool, bool]]:
    """A target table's columns in order, as (name, type, is_identity, is_generated)."""
    rows = dst.execute("SELECT attname, format_type(atttypid, atttypmod), attidentity <> '', attgenerated <> ''"
                       " FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped"
                       " ORDER BY attnum", (qi(table),)).fetchall()
    return [(str(n), str(t), bool(i), bool(g)) for n, t, i, g in rows]


def pg_primary_key(dst: PgCon, table: str) -> list[str]:
    """A target table's primary key columns in key order (empty when it has none)."""
    rows = dst.execute("SELECT a.attname FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY"
                       " AS k(attnum, n) JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum"
                       " WHERE i.indrelid = to_regclass(%s) AND i.indisprimary ORDER BY k.n", (qi(table),)).fetchall()
    return [str(name) for (name,) in rows]


def pg_references(dst: PgCon, table: str) -> set[str]:
    """The tables a target table's foreign keys point at."""
    rows = dst.execute("SELECT confrelid::regclass::text FROM pg_constraint WHERE conrelid = to_regclass(%s)"
                       " AND contype = 'f'", (qi(table),)).fetchall()
    return {str(name).strip('"') for (name,) in rows}


def pg_count(dst: PgCon, table: str) -> int:
    """Rows in a target table."""
    row = dst.execute(f"SELECT count(*) FROM {qi(table)}").fetchone()
    return int(row[0]) if row else 0


def pg_has_rows(dst: PgCon, table: str) -> bool:
    """Whether a target table holds any row (cheaper than a count on a big table)."""
    return dst.execute(f"SELECT 1 FROM {qi(table)} LIMIT 1").fetchone() is not None


def pg_rows_by_key(dst: PgCon, table: str, columns: Sequence[str], key: Sequence[str],
                   values: Sequence[Any]) -> list[tuple[Any, ...]]:
    """The target rows whose `key` columns equal `values` (`columns` selected): a sample row read back."""
    where = " AND ".join(f"{qi(k)} = %s" for k in key)
    sql = f"SELECT {', '.join(qi(c) for c in columns)} FROM {qi(table)} WHERE {where}"
    return [tuple(row) for row in dst.execute(sql, tuple(values)).fetchall()]


def pg_set_triggers(dst: PgCon, table: str, enabled: bool) -> None:
    """Turn the target table's own triggers (counters, change marks; not its foreign keys) off or on. Called inside
    each chunk's transaction, so a crash mid-copy never leaves them off: the copied rows bring their counters
    with them (the counter tables are copied too) and must not be counted twice."""
    dst.execute(f"ALTER TABLE {qi(table)} {'ENABLE' if enabled else 'DISABLE'} TRIGGER USER")


def pg_copy_rows(dst: PgCon, table: str, columns: Sequence[str],
                 rows: Iterable[Sequence[Any]]) -> None:
    """COPY rows into a target table (identity columns included: COPY writes the values given)."""
    with dst.cursor().copy(f"COPY {qi(table)} ({', '.join(qi(c) for c in columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def pg_serial_columns(dst: PgCon, table: str) -> list[tuple[str, str]]:
    """A target table's columns backed by a sequence (identity or serial), as (column, sequence name)."""
    rows = dst.execute("SELECT a.attname, pg_get_serial_sequence(%s, a.attname) FROM pg_attribute a"
                       " WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped"
                       " AND pg_get_serial_sequence(%s, a.attname) IS NOT NULL",
                       (qi(table), qi(table), qi(table))).fetchall()
    return [(str(col), str(seq)) for col, seq in rows]


def pg_max(dst: PgCon, table: str, column: str) -> int | None:
    """The largest value of a target column, or None when the table is empty."""
    row = dst.execute(f"SELECT max({qi(column)}) FROM {qi(table)}").fetchone()
    return None if row is None or row[0] is None else int(row[0])


def pg_set_sequence(dst: PgCon, sequence: str, last: int) -> None:
    """Make a sequence's next value `last + 1`."""
    dst.execute("SELECT setval(%s::regclass, %s, true)", (sequence, last))


def pg_create_progress(dst: PgCon) -> None:
    """The progress tables: the run (which hub, when) and one row per table (last key copied, rows done)."""
    dst.execute(f"CREATE TABLE IF NOT EXISTS {RUN_TABLE} (id int PRIMARY KEY CHECK (id = 1), source text NOT NULL,"
                " fingerprint text NOT NULL, started_at timestamptz NOT NULL DEFAULT now(), finished_at timestamptz)")
    dst.execute(f"CREATE TABLE IF NOT EXISTS {PROGRESS_TABLE} (table_name text PRIMARY KEY, last_key text,"
                " rows_done bigint NOT NULL DEFAULT 0, done boolean NOT NULL DEFAULT false)")


def pg_run(dst: PgCon) -> dict[str, Any] | None:
    """The recorded migration run in the target ({source, fingerprint, started_at, finished_at}) or None."""
    if dst.execute("SELECT to_regclass(%s)", (RUN_TABLE,)).fetchone() in (None, (None,)):
        return None
    row = dst.execute(f"SELECT source, fingerprint, started_at, finished_at FROM {RUN_TABLE}").fetchone()
    if row is None:
        return None
    return {"source": row[0], "fingerprint": row[1], "started_at": row[2], "finished_at": row[3]}


def pg_start_run(dst: PgCon, source: str, fingerprint: str) -> None:
    """Record which hub is being copied into the target."""
    dst.execute(f"INSERT INTO {RUN_TABLE} (id, source, fingerprint) VALUES (1, %s, %s)", (source, fingerprint))


def pg_finish_run(dst: PgCon) -> None:
    """Mark the run finished (verified)."""
    dst.execute(f"UPDATE {RUN_TABLE} SET finished_at = now() WHERE id = 1")


def pg_progress(dst: PgCon) -> dict[str, tuple[list[Any] | None, int, bool]]:
    """Per table: (last key copied, rows done, finished)."""
    rows = dst.execute(f"SELECT table_name, last_key, rows_done, done FROM {PROGRESS_TABLE}").fetchall()
    return {str(t): (json.loads(k) if k is not None else None, int(n), bool(d)) for t, k, n, d in rows}


def pg_save_progress(dst: PgCon, table: str, last_key: Sequence[Any] | None, rows_done: int,
                     done: bool) -> None:
    """Record how far a table is copied (in the same transaction as the rows it counts)."""
    dst.execute(f"INSERT INTO {PROGRESS_TABLE} (table_name, last_key, rows_done, done) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (table_name) DO UPDATE SET last_key = excluded.last_key,"
                " rows_done = excluded.rows_done, done = excluded.done",
                (table, None if last_key is None else json.dumps(list(last_key)), rows_done, done))
