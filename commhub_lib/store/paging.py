"""Newest-first (or oldest-first) pages over one or several networks, each read along an index.

A list over several networks (a person's token sees all of theirs) cannot be served by one index walk
with `network_id IN (...)`: SQLite would collect every matching row and sort them. Instead each network
gets its own arm, ordered by its index, and the arms are merged (`UNION ALL ... ORDER BY ... LIMIT`:
SQLite's MERGE plan reads each arm lazily and stops at the limit). The order keys must be result columns
of every arm; callers name them with a leading underscore and `strip_keys` drops them from the rows.

When two filters each have an index, SQLite may pick the one that walks more rows; callers write the
less selective column as `+column` (the unary plus keeps SQLite from using an index for that term).
"""

from __future__ import annotations

from typing import Any

from ..db import Database
from .dialect import POSTGRESQL

Row = dict[str, Any]
# SQLite allows 500 terms in a compound SELECT; past this many networks one IN query is used (correct,
# but it sorts every matching row).
MAX_MERGED_NETWORKS = 200


def _page_sql(select: str, where: list[str], params: list[Any], network_ids: list[str], order_by: str, limit: int,
              offset: int, network_column: str) -> tuple[str, tuple[Any, ...]]:
    rest = "".join(f" AND {w}" for w in where)
    if len(network_ids) == 1 or len(network_ids) > MAX_MERGED_NETWORKS:
        marks = ",".join("?" * len(network_ids))
        sql = f"{select} WHERE {network_column} IN ({marks}){rest} ORDER BY {order_by} LIMIT ? OFFSET ?"
        return sql, (*network_ids, *params, limit, offset)
    arm = f"{select} WHERE {network_column} = ?{rest}"
    sql = " UNION ALL ".join([arm] * len(network_ids)) + f" ORDER BY {order_by} LIMIT ? OFFSET ?"
    args: list[Any] = []
    for network_id in network_ids:
        args.append(network_id)
        args.extend(params)
    return sql, (*args, limit, offset)


def page(db: Database, select: str, where: list[str], params: list[Any], network_ids: list[str],
         order_by: str, limit: int, offset: int, network_column: str = "network_id") -> list[Row]:
    """Rows of `select` (no WHERE) in `network_ids` matching `where`, ordered by `order_by`, one page.

    `select` is `SELECT <columns> FROM <table>` and must return every column `order_by` names;
    `network_column` is `+network_id` when another filter's index is the one to walk."""
    if not network_ids:
        return []
    return strip_keys(db.query(*_page_sql(select, where, params, network_ids, order_by, limit, offset,
                                          network_column)))


def page_json(db: Database, select: str, where: list[str], params: list[Any], network_ids: list[str],
              order_by: str, limit: int, offset: int, network_column: str = "network_id") -> str:
    """The same page as `page`, as the text of a JSON array: `select` returns each row as a JSON object in
    a column named `record` (json_record), plus the order keys. SQLite builds the whole text.

    One value, not one row per record: at 500 rows (~775 KB) fetching the rows through APSW and joining them in Python
    cost ~1 ms more CPU than the rows' JSON itself (docs/performance.md#the-500-row-page). `group_concat` takes the rows
    in the order the page query yields them: the page is a co-routine (it has a LIMIT, so SQLite
    neither flattens it into the aggregate nor drops its ORDER BY), and the aggregate reads it in that
    order. `group_concat(... ORDER BY ...)` would say so explicitly, but re-sorts the page's text (3-5 ms at
    500 rows); tests/test_page_json.py checks the order instead."""
    if not network_ids:
        return "[]"
    sql, args = _page_sql(select, where, params, network_ids, order_by, limit, offset, network_column)
    if db.engine == POSTGRESQL:  # PostgreSQL keeps no subquery's order unless the aggregate says it
        row = db.query_one(f"SELECT string_agg(record::text, ',' ORDER BY {order_by}) AS records FROM ({sql}) AS p",
                           args)
    else:
        row = db.query_one(f"SELECT group_concat(record, ',') AS records FROM ({sql})", args)
    assert row is not None  # an aggregate always answers one row (NULL past the last page)
    # The brackets are added here, not with || in SQL: a second ~775 KB buffer inside SQLite while the first
    # is alive left glibc a larger heap top to give back after each request and fault in again before the
    # next (~730 page faults per 500-row page instead of ~350; docs/performance.md#the-500-row-page).
    return "[" + (row["records"] or "") + "]"


def keyed_page_json(db: Database, keys: str, where: list[str], params: list[Any], network_ids: list[str],
                    order_by: str, limit: int, offset: int, record: str, rows: str,
                    network_column: str = "network_id") -> str:
    """The same page as `page_json`, with the index walk and the rows apart: the page query `keys` (`SELECT
    <order keys> FROM <table>`, the last key `_seq` its rowid) reads only its index, and each of the page's
    rows is then read once by rowid: `rows` joins the table to the page `p` (`<table> AS t ON t.rowid =
    p._seq`, and any one-row lookups), and `record` is the row's JSON (json_record over t.…).

    Merging the arms of several networks then moves keys, not ~1.5 KB records (the person token's merge
    of 4 walks: ~20 % of the page's SQL), and the record is built by the aggregate's argument, so SQLite
    neither copies it out of a co-routine nor hands the text back without its JSON subtype:
    `json_group_array` appends it as it is, brackets and all, and no Python string joins 775 KB again.

    Order: `p` is a co-routine (LIMIT: never flattened into the aggregate) and CROSS JOIN keeps it the
    outer loop, so the rows reach the aggregate in the page's order (tests/test_page_json.py)."""
    if not network_ids:
        return "[]"
    sql, args = _page_sql(keys, where, params, network_ids, order_by, limit, offset, network_column)
    if db.engine == POSTGRESQL:  # a join may reorder the page: the aggregate says the order
        ordered = ", ".join(f"p.{term.strip()}" for term in order_by.split(","))
        row = db.query_one(f"SELECT json_group_array({record} ORDER BY {ordered}) AS records FROM ({sql}) AS p"
                           f" CROSS JOIN {rows}", args)
    else:
        row = db.query_one(f"SELECT json_group_array({record}) AS records FROM ({sql}) AS p CROSS JOIN {rows}", args)
    assert row is not None  # an aggregate always answers one row ("[]" past the last page)
    return row["records"]


def columns(fields: tuple[tuple[str, str], ...]) -> str:
    """The SELECT list of some (name, SQL expression) fields."""
    return ", ".join(expr if expr == name else f'{expr} AS "{name}"' for name, expr in fields)


def json_record(fields: tuple[tuple[str, str], ...]) -> str:
    """A json_object() of the same fields, keys in the same order: one row as JSON text, built by SQLite."""
    return "json_object(" + ", ".join(f"'{name}', {expr}" for name, expr in fields) + ")"


def strip_keys(rows: list[Row]) -> list[Row]:
    """Drop the order-key columns (named `_…`) that only served the merge."""
    for row in rows:
        for key in [k for k in row if k.startswith("_")]:
            del row[key]
    return rows
