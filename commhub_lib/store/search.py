"""Full-text search over the texts stored once: tasks, messages (and replies, notices), broadcast bodies.

Each table has its own FTS5 index (migrations/0009_search.sql) keyed by the table's rowid. A search reads
the index newest first (rowid order, which is insertion order) and joins each hit to its row, keeping the
rows of the caller's networks; the LIMIT stops the walk early, so no query sorts all its matches.
`CROSS JOIN` keeps the index the outer loop: SQLite would otherwise walk a network's rows and probe the
index for each.
"""

from __future__ import annotations

import re
from typing import Any

from ..db import Database
from .dialect import POSTGRESQL

Row = dict[str, Any]

SNIPPET_TOKENS = 16  # words of context around the match in `snippet`


def _in(network_ids: list[str]) -> str:
    return ",".join("?" * len(network_ids))


def _scoped(columns: str, match: str, network_ids: list[str]) -> str:
    """The FTS5 expression: `match` in the text columns, AND one of the networks in the network_id column, so
    FTS5 skips other networks' hits itself (the join's network_id IN (...) stays the rule; this is the speed).

    A network id is searched by its random part: `net_ab12` is the tokens `net` and `ab12`, and the phrase
    "net ab12" would read the doclist of `net`, which every row has (a user's four networks cost 4-10 ms
    instead of 2-3 ms at 1M messages)."""
    nets = " OR ".join('"' + n.split("_", 1)[-1].replace('"', '""') + '"' for n in network_ids)
    return f"{columns} : ({match}) AND network_id : ({nets})"


def search_tasks(db: Database, network_ids: list[str], match: str, limit: int) -> list[Row]:
    """Tasks of `network_ids` whose title, content or context match the FTS5 expression, newest first."""
    if not network_ids:
        return []
    if db.engine == POSTGRESQL:
        return _pg_search(db, "'task' AS kind, t.task_id AS id, t.task_id, t.network_id, t.from_name, t.from_kind,"
                          " t.to_name, t.to_kind, t.title, t.status, t.created_at, t.created_ts AS _ts", "tasks t",
                          "coalesce(t.title, '') || ' ' || t.content || ' ' || coalesce(t.context, '')", "t",
                          network_ids, match, "", [], limit)
    return db.query(
        "SELECT 'task' AS kind, t.task_id AS id, t.task_id, t.network_id, t.from_name, t.from_kind, t.to_name,"
        " t.to_kind, t.title, t.status, t.created_at, t.created_ts AS _ts,"
        f" snippet(search_tasks, 1, '', '', '…', {SNIPPET_TOKENS}) AS snippet"
        " FROM search_tasks s CROSS JOIN tasks t ON t.rowid = s.rowid"
        f" WHERE search_tasks MATCH ? AND t.network_id IN ({_in(network_ids)})"
        " ORDER BY s.rowid DESC LIMIT ?",
        (_scoped("{title content context}", match, network_ids), *network_ids, limit))


def search_messages(db: Database, network_ids: list[str], match: str, kind: str | None, limit: int) -> list[Row]:
    """Messages, replies and notices of `network_ids` (of one `kind`) whose own text matches, newest first."""
    if not network_ids:
        return []
    kind_sql = " AND m.kind = ?" if kind else ""
    if db.engine == POSTGRESQL:
        return _pg_search(db, "m.kind, m.message_id AS id, m.task_id, m.network_id, m.from_name, m.from_kind,"
                          " m.to_name, m.to_kind, NULL AS title, m.status, m.created_at, m.created_ts AS _ts",
                          "messages m", "m.content", "m", network_ids, match, kind_sql, [kind] if kind else [], limit)
    return db.query(
        "SELECT m.kind, m.message_id AS id, m.task_id, m.network_id, m.from_name, m.from_kind, m.to_name,"
        " m.to_kind, NULL AS title, m.status, m.created_at, m.created_ts AS _ts,"
        f" snippet(search_messages, 0, '', '', '…', {SNIPPET_TOKENS}) AS snippet"
        " FROM search_messages s CROSS JOIN messages m ON m.rowid = s.rowid"
        f" WHERE search_messages MATCH ? AND m.network_id IN ({_in(network_ids)}){kind_sql}"
        " ORDER BY s.rowid DESC LIMIT ?",
        (_scoped("content", match, network_ids), *network_ids, *([kind] if kind else []), limit))


def search_broadcasts(db: Database, network_ids: list[str], match: str, limit: int) -> list[Row]:
    """Broadcasts of `network_ids` whose body matches, newest first: one hit per broadcast (its first copy,
    addressed to '*'), not one per recipient. A body whose copies are all gone is not found."""
    if not network_ids:
        return []
    if db.engine == POSTGRESQL:
        query, words = _pg_query(match)
        return db.query(
            "SELECT m.kind, m.message_id AS id, m.task_id, m.network_id, m.from_name, m.from_kind, '*' AS to_name,"
            " m.to_kind, NULL AS title, m.status, m.created_at, m.created_ts AS _ts,"
            f" ts_headline('simple', b.content, w.q, {_PG_HEADLINE}) AS snippet"
            f" FROM (SELECT {query} AS q) AS w JOIN bodies b ON b.search_tsv @@ w.q"
            " JOIN messages m ON m.seq = (SELECT min(c.seq) FROM messages c WHERE c.body_id = b.body_id)"
            f" WHERE m.network_id IN ({_in(network_ids)}) ORDER BY b.body_id DESC LIMIT ?",
            (*words, *network_ids, limit))
    return db.query(
        "SELECT m.kind, m.message_id AS id, m.task_id, m.network_id, m.from_name, m.from_kind, '*' AS to_name,"
        " m.to_kind, NULL AS title, m.status, m.created_at, m.created_ts AS _ts,"
        f" snippet(search_bodies, 0, '', '', '…', {SNIPPET_TOKENS}) AS snippet"
        " FROM search_bodies s CROSS JOIN messages m"
        " ON m.rowid = (SELECT min(c.rowid) FROM messages c WHERE c.body_id = s.rowid)"
        f" WHERE search_bodies MATCH ? AND m.network_id IN ({_in(network_ids)})"
        " ORDER BY s.rowid DESC LIMIT ?", (_scoped("content", match, network_ids), *network_ids, limit))


# PostgreSQL (docs/postgresql.md#search): each table has a stored tsvector (`search_tsv`, the 'simple' configuration:
# lower-cased words, no stemming, diacritics kept) and a GIN index; hits are the caller's networks' rows, newest first
# (the insertion order, `seq`), the snippet ts_headline's. The FTS5 expression service/search.py builds (quoted words,
# a trailing * a prefix, all required) is read back into a tsquery.
_PG_TERM = re.compile(r'"((?:[^"]|"")*)"(\*?)')
_PG_HEADLINE = f"'StartSel=\"\", StopSel=\"\", MaxWords={SNIPPET_TOKENS}, MinWords={SNIPPET_TOKENS // 2}'"


def _pg_query(match: str) -> tuple[str, list[str]]:
    """The tsquery SQL for the FTS5 expression `match`, and its parameters (one per word)."""
    parts, params = [], []
    for word, star in _PG_TERM.findall(match):
        params.append(word.replace('""', '"'))
        if star:
            # The last word of the phrase as a prefix; a word of no letters adds nothing.
            parts.append("(SELECT CASE WHEN numnode(q) = 0 THEN q ELSE (q::text || ':*')::tsquery END"
                         " FROM phraseto_tsquery('simple', ?) AS q)")
        else:
            parts.append("phraseto_tsquery('simple', ?)")
    return " && ".join(parts) or "''::tsquery", params


def _pg_search(db: Database, select: str, table: str, text: str, joined: str, network_ids: list[str], match: str,
               extra: str, extra_params: list[Any], limit: int) -> list[Row]:
    query, words = _pg_query(match)
    return db.query(
        f"SELECT {select}, ts_headline('simple', {text}, w.q, {_PG_HEADLINE}) AS snippet"
        f" FROM (SELECT {query} AS q) AS w JOIN {table} ON {joined}.search_tsv @@ w.q"
        f" WHERE {joined}.network_id IN ({_in(network_ids)}){extra} ORDER BY {joined}.seq DESC LIMIT ?",
        (*words, *network_ids, *extra_params, limit))
