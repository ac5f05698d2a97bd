"""The store's SQL as PostgreSQL runs it: one lexical translation per SQL text, cached.

The store is written once, in SQLite's dialect (the default engine pays nothing for the other). The PostgreSQL
engine (db_pg.py) hands every statement to `to_postgres` the first time it sees that text; the answer is cached
by text (the store builds a bounded set of texts: placeholders, never values, vary). What it rewrites, and why
the answers keep their shapes:

- placeholders `?` / `:name` -> `%s` / `%(name)s` (a literal `%` -> `%%`);
- `rowid` -> `seq` (every table the store orders by rowid has `seq bigint generated always as identity`,
  schema_pg.sql); a selected bare `rowid` keeps its name (`seq AS rowid`);
- `json_object('k', v, ...)` -> `(SELECT row_to_json(_r) FROM (SELECT v AS "k", ...) _r)`: compact text
  (`{"k":v}`, no spaces, keys in the written order) as SQLite's; `json(x)` -> `(x)::json`;
  `json_group_array(x [ORDER BY ...])` -> `'[' || coalesce(string_agg((x)::text, ',' [ORDER BY ...]), '') || ']'`;
  `group_concat(x, s)` -> `string_agg((x)::text, s)`;
- `json_each(x) a` -> `json_array_elements((x)::json) AS a(value)`; `json_extract(a.value, '$[N]')` ->
  `(a.value ->> N)`;
- two-argument `max`/`min` -> `greatest`/`least`;
- `IS NOT ?` / `IS ?` -> `IS DISTINCT FROM` / `IS NOT DISTINCT FROM`;
- `INSERT OR IGNORE` -> `INSERT ... ON CONFLICT DO NOTHING`;
- `LIMIT ?` -> `LIMIT nullif(?, -1)` and `LIMIT -1` -> `LIMIT ALL` (SQLite's "no limit");
- `CASE WHEN ? THEN` (a Python bool, bound as 1/0 as SQLite stores it) -> `CASE WHEN ? <> 0 THEN`;
- `CROSS JOIN` (SQLite planner steering) -> `JOIN`; the unary `+column` (SQLite: "not by this index") dropped.
`COLLATE NOCASE` needs no rewrite: schema_pg.sql creates a case-insensitive ICU collation named `nocase`.

What a lexical rewrite cannot say (FTS5 search, sqlite_sequence, json_insert) is written per engine in its store
module, behind `db.engine`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache

POSTGRESQL = "postgresql"
SQLITE = "sqlite"

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _quoted_end(sql: str, i: int) -> int:
    """Index just past the quoted string or identifier opening at `i` (a doubled quote inside does not end it)."""
    ch, j, n = sql[i], i + 1, len(sql)
    while j < n:
        if sql[j] == ch:
            if j + 1 < n and sql[j + 1] == ch:  # doubled quote inside
                j += 2
                continue
            break
        j += 1
    return j + 1


def _split_code(sql: str) -> list[tuple[bool, str]]:
    """The SQL cut into (is_code, text) pieces: quoted strings and identifiers are not code."""
    pieces: list[tuple[bool, str]] = []
    i, start, n = 0, 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch in "'\"":
            if i > start:
                pieces.append((True, sql[start:i]))
            end = _quoted_end(sql, i)
            pieces.append((False, sql[i:end]))
            i = start = end
            continue
        i += 1
    if start < n:
        pieces.append((True, sql[start:]))
    return pieces


def _map_code(sql: str, fn: Callable[[str], str], quoted: Callable[[str], str] = str) -> str:
    return "".join(fn(text) if code else quoted(text) for code, text in _split_code(sql))


def _close_paren(sql: str, open_at: int) -> int:
    """Index of the parenthesis closing the one at `open_at` (quotes skipped)."""
    depth, i, n = 0, open_at, len(sql)
    while i < n:
        ch = sql[i]
        if ch in "'\"":
            i = _quoted_end(sql, i)
            continue
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise ValueError(f"unbalanced parentheses in SQL: {sql[:200]}")


def _split_args(text: str) -> list[str]:
    """Top-level comma-separated arguments of a call's inside."""
    args, depth, start, i, n = [], 0, 0, 0, len(text)
    while i < n:
        ch = text[i]
        if ch in "'\"":
            i = _quoted_end(text, i)
            continue
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            args.append(text[start:i].strip())
            start = i + 1
        i += 1
    args.append(text[start:].strip())
    return args


def _split_order_by(text: str) -> tuple[str, str]:
    """An aggregate's argument and its trailing top-level ` ORDER BY ...` (or '')."""
    depth = 0
    upper = text.upper()
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif depth == 0 and upper.startswith(" ORDER BY ", i):
            return text[:i], text[i:]
    return text, ""


def _rewrite_calls(sql: str, name: str, rewrite: Callable[[str], str | None]) -> str:
    """Replace each call `name(...)` (innermost last: arguments are rewritten first) by rewrite(inside)."""
    pattern = re.compile(r"(?<![\w.])" + name + r"\s*\(", re.IGNORECASE)
    pos = 0
    while True:
        m = pattern.search(sql, pos)
        if m is None:
            return sql
        if not _is_code_at(sql, m.start()):
            pos = m.end()
            continue
        open_at = m.end() - 1
        close_at = _close_paren(sql, open_at)
        inside = _rewrite_calls(sql[open_at + 1:close_at], name, rewrite)
        new = rewrite(inside)
        if new is None:
            new = sql[m.start():open_at + 1] + inside + ")"
        tail = sql[close_at + 1:]
        sql = sql[:m.start()] + new + tail
        pos = len(sql) - len(tail)


def _is_code_at(sql: str, index: int) -> bool:
    at = 0
    for code, text in _split_code(sql):
        if at <= index < at + len(text):
            return code
        at += len(text)
    return True


def _json_object(inside: str) -> str:
    args = _split_args(inside)
    fields = ", ".join(f'{value} AS "{key.strip(chr(39))}"' for key, value in zip(args[::2], args[1::2], strict=True))
    return f"(SELECT row_to_json(_r) FROM (SELECT {fields}) AS _r)"


def _json_group_array(inside: str) -> str:
    value, order = _split_order_by(inside)
    return f"('[' || coalesce(string_agg(({value})::text, ','{order}), '') || ']')"


# SQLite's json(x) gives x minified: every run of white space outside a JSON string dropped (the first branch keeps
# a whole string, escapes and all; the second matches white space elsewhere and leaves nothing).
_MINIFY = "'(\"(?:[^\"\\\\]|\\\\.)*\")|\\s+'"


def _json(inside: str) -> str:
    return f"(regexp_replace(({inside})::json::text, {_MINIFY}, '\\1', 'g')::json)"


def real_json(expr: str) -> str:
    """A double as SQLite's JSON writes a REAL: a whole number keeps its `.0` (2.0, not PostgreSQL's 2)."""
    return (f"(CASE WHEN {expr} = trunc({expr}) AND abs({expr}) < 1e15 THEN to_json({expr})::text || '.0'"
            f" ELSE to_json({expr})::text END)::json")


def _group_concat(inside: str) -> str:
    args = _split_args(inside)
    sep = args[1] if len(args) > 1 else "','"
    return f"string_agg(({args[0]})::text, {sep})"


def _min_max(function: str) -> Callable[[str], str | None]:
    def rewrite(inside: str) -> str | None:
        args = _split_args(inside)
        return f"{function}({inside})" if len(args) > 1 else None
    return rewrite


_JSON_EACH = re.compile(r"json_each\(([^()]*)\)(\s+AS)?\s+([A-Za-z_]\w*)", re.IGNORECASE)
_JSON_EXTRACT = re.compile(r"json_extract\(\s*([A-Za-z_][\w.]*)\s*,\s*'\$\[(\d+)\]'\s*\)", re.IGNORECASE)
_IS_NOT_PARAM = re.compile(r"\bIS\s+NOT\s+(\?|:\w+)", re.IGNORECASE)
_IS_PARAM = re.compile(r"\bIS\s+(\?|:\w+)", re.IGNORECASE)
_INSERT_OR_IGNORE = re.compile(r"\bINSERT\s+OR\s+IGNORE\s+INTO\b", re.IGNORECASE)
_LIMIT_PARAM = re.compile(r"\bLIMIT\s+\?", re.IGNORECASE)
_LIMIT_ALL = re.compile(r"\bLIMIT\s+-1\b", re.IGNORECASE)
_WHEN_PARAM = re.compile(r"\bWHEN\s+\?\s+THEN\b", re.IGNORECASE)
_CROSS_JOIN = re.compile(r"\bCROSS\s+JOIN\b", re.IGNORECASE)
_UNARY_PLUS = re.compile(r"(?<=[\s(=,])\+(?=[A-Za-z_])")
_SELECT_ROWID = re.compile(r"\bSELECT\s+rowid\s*(?=,|\s+FROM\b)", re.IGNORECASE)
_ROWID = re.compile(r"\browid\b", re.IGNORECASE)


def _code_rules(text: str) -> str:
    """The rewrites that see only code (never inside a quoted string)."""
    text = _SELECT_ROWID.sub("SELECT seq AS _ROWID_NAME_", text)
    text = _ROWID.sub("seq", text).replace("_ROWID_NAME_", "rowid")
    text = _IS_NOT_PARAM.sub(r"IS DISTINCT FROM \1", text)
    text = _IS_PARAM.sub(r"IS NOT DISTINCT FROM \1", text)
    text = _LIMIT_ALL.sub("LIMIT ALL", text)
    text = _LIMIT_PARAM.sub("LIMIT nullif(?, -1)", text)
    text = _CROSS_JOIN.sub("JOIN", text)
    text = _WHEN_PARAM.sub("WHEN ? <> 0 THEN", text)
    return _UNARY_PLUS.sub("", text)


def _placeholders(text: str) -> str:
    text = text.replace("%", "%%")
    text = re.sub(r"(?<!:):([A-Za-z_]\w*)", r"%(\1)s", text)
    return text.replace("?", "%s")


@lru_cache(maxsize=4096)
def to_postgres(sql: str) -> str:
    """The PostgreSQL text of one store statement (see the module); cached per text."""
    sql = _JSON_EACH.sub(lambda m: f"json_array_elements(({m.group(1)})::json) AS {m.group(3)}(value)", sql)
    sql = _JSON_EXTRACT.sub(r"(\1 ->> \2)", sql)
    ignore = _INSERT_OR_IGNORE.search(sql) is not None
    sql = _map_code(sql, _code_rules)
    sql = _rewrite_calls(sql, "json_object", _json_object)
    sql = _rewrite_calls(sql, "json_group_array", _json_group_array)
    sql = _rewrite_calls(sql, "group_concat", _group_concat)
    sql = _rewrite_calls(sql, "json", _json)
    sql = _rewrite_calls(sql, "max", _min_max("greatest"))
    sql = _rewrite_calls(sql, "min", _min_max("least"))
    if ignore:
        sql = _INSERT_OR_IGNORE.sub("INSERT INTO", sql).rstrip().rstrip(";") + " ON CONFLICT DO NOTHING"
    return _map_code(sql, _placeholders, lambda text: text.replace("%", "%%"))
