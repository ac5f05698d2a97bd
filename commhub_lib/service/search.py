"""Full-text search over the tasks, messages and replies a caller may read (docs/search.md).

Visibility is the lists': the caller passes the networks its lists read (networks.scope for REST, the
session's network for MCP), and only rows of those networks are returned. The query is plain words, each
matched as a word (all of them must occur); a word ending in `*` matches as a prefix. User input never
reaches FTS5 as syntax: every word is quoted, so AND/OR/NEAR, quotes, colons and brackets are just text.
"""

from __future__ import annotations

from typing import Any

from ..errors import ValidationFailed
from ..store import search as search_store
from ..vocabulary import BROADCAST, MESSAGE_KINDS, TASK
from .hub import Hub, clamp_limit

MAX_QUERY_CHARS = 500
MAX_QUERY_WORDS = 16
DEFAULT_LIMIT = 20
MAX_LIMIT = 100


def fts_query(text: str) -> str:
    """The FTS5 expression for plain words: each word a quoted string (a trailing `*` a prefix), all required.

    Raises ValidationFailed when there is no word or the query is too long."""
    if len(text) > MAX_QUERY_CHARS:
        raise ValidationFailed(f"q: at most {MAX_QUERY_CHARS} characters")
    terms: list[str] = []
    for word in text.split():
        prefix = word.endswith("*")
        word = word.rstrip("*")
        if not word:
            continue
        # Inside an FTS5 string only '"' is special (doubled); the tokenizer then splits it into words.
        terms.append('"' + word.replace('"', '""') + '"' + ("*" if prefix else ""))
    if not terms:
        raise ValidationFailed("q: give at least one word to search for")
    if len(terms) > MAX_QUERY_WORDS:
        raise ValidationFailed(f"q: at most {MAX_QUERY_WORDS} words")
    return " ".join(terms)


def search(hub: Hub, network_ids: list[str], query: str, limit: int | None = None,
           kind: str | None = None) -> dict[str, Any]:
    """Tasks, messages, replies, notices and broadcasts of `network_ids` matching `query`, newest first.

    `kind` keeps one kind (a message kind: task is the task itself, broadcast one hit per broadcast)."""
    if kind is not None and kind not in MESSAGE_KINDS:
        raise ValidationFailed(f"kind: must be one of {', '.join(MESSAGE_KINDS)}")
    match = fts_query(query)
    n = clamp_limit(limit, DEFAULT_LIMIT, MAX_LIMIT)
    rows: list[dict[str, Any]] = []
    if kind in (None, TASK):
        rows += search_store.search_tasks(hub.db, network_ids, match, n)
    if kind is None or kind not in (TASK, BROADCAST):
        rows += search_store.search_messages(hub.db, network_ids, match, kind, n)
    if kind in (None, BROADCAST):
        rows += search_store.search_broadcasts(hub.db, network_ids, match, n)
    # Each arm is newest first and at most n long: the newest n of their union are the answer.
    rows.sort(key=lambda r: r["_ts"], reverse=True)
    del rows[n:]
    for row in rows:
        del row["_ts"]
    return {"ok": True, "query": query, "results": rows}
