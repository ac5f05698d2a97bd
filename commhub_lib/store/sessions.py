"""Agent sessions (one row per alias per network) and nodes."""

from __future__ import annotations

import json
from typing import Any

from ..db import Database
from .dialect import POSTGRESQL

Row = dict[str, Any]
SESSION_COLUMNS = ("s.network_id, s.resume_id, s.alias, s.status, s.agent, s.model, s.task, s.progress,"
                   " s.node_id, s.last_seen_at, s.last_seen_ts, s.created_at, s.token_id, s.retired_at, s.last_call_ts")


def get_session(db: Database, network_id: str, alias: str) -> Row | None:
    """One session by alias."""
    return db.query_one(f"SELECT {SESSION_COLUMNS} FROM sessions s"
                        " WHERE s.network_id = ? AND s.alias = ?", (network_id, alias))


def aliases_held_by_token(db: Database, network_id: str, token_id: str, limit: int) -> list[str]:
    """Up to `limit` aliases of a network whose current claimant is this token."""
    return [r[0] for r in db.con.execute("SELECT alias FROM sessions WHERE network_id = ? AND token_id = ?"
                                         " ORDER BY alias LIMIT ?", (network_id, token_id, limit))]


def insert_session(db: Database, network_id: str, alias: str, resume_id: str, token_id: str | None,
                   status: str, now: str, now_ts: float, call_ts: float = 0.0) -> bool:
    """Create a session for a newly claimed alias (`call_ts`: now when a tool call claimed it, 0 for a stream).
    False when the alias has a session already: another writer (process, or connection of a pool) created it
    since the caller read it; on PostgreSQL the insert waits for that writer's commit rather than failing."""
    return db.execute("INSERT INTO sessions(network_id, alias, resume_id, token_id, status, last_seen_at,"
                      " last_seen_ts, created_at, last_call_ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                      " ON CONFLICT (network_id, alias) DO NOTHING",
                      (network_id, alias, resume_id, token_id, status, now, now_ts, now, call_ts)) == 1


def claim_session(db: Database, network_id: str, alias: str, token_id: str | None, resume_id: str | None,
                  held_by: str | None) -> bool:
    """Give an alias to a (new) claimant, if it is still held by `held_by` (the token the caller read there); False
    when another writer changed its holder meanwhile (PostgreSQL re-checks the row it waited for)."""
    return db.execute("UPDATE sessions SET token_id = ?, resume_id = coalesce(?, resume_id)"
                      " WHERE network_id = ? AND alias = ? AND token_id IS ?",
                      (token_id, resume_id, network_id, alias, held_by)) == 1


def update_report(db: Database, network_id: str, alias: str, fields: dict[str, Any]) -> None:
    """Set reported fields (status, agent, model, task, progress, node_id, resume_id); keys are fixed names."""
    allowed = ("status", "agent", "model", "task", "progress", "node_id", "resume_id")
    cols = [k for k in allowed if k in fields]
    if not cols:
        return
    assignments = ", ".join(f"{c} = ?" for c in cols)
    db.execute(f"UPDATE sessions SET {assignments} WHERE network_id = ? AND alias = ?",
               (*[fields[c] for c in cols], network_id, alias))


def touch_session(db: Database, network_id: str, alias: str, now: str, now_ts: float) -> None:
    """Refresh presence; an offline session comes back as idle. A session nobody holds (its token was revoked,
    or the alias released) stays offline: a stream closing after the revocation is no sign of life."""
    db.execute("UPDATE sessions SET last_seen_at = ?, last_seen_ts = ?,"
               " status = CASE status WHEN 'offline' THEN 'idle' ELSE status END"
               " WHERE network_id = ? AND alias = ? AND token_id IS NOT NULL", (now, now_ts, network_id, alias))


def touch_call(db: Database, network_id: str, alias: str, now: str, now_ts: float) -> None:
    """A tool call (or a REST call as the agent): a sign of life that keeps the session online for the presence
    timeout without a stream (docs/presence.md); an offline session comes back as idle. Not for an alias nobody
    holds (as touch_session)."""
    db.execute("UPDATE sessions SET last_seen_at = ?, last_seen_ts = ?, last_call_ts = ?,"
               " status = CASE status WHEN 'offline' THEN 'idle' ELSE status END"
               " WHERE network_id = ? AND alias = ? AND token_id IS NOT NULL",
               (now, now_ts, now_ts, network_id, alias))


def stream_closed(db: Database, network_id: str, alias: str, now: str, now_ts: float, still_held: bool,
                  call_cutoff_ts: float) -> None:
    """A stream of the alias closed (not at shutdown): it was seen until now. Unless another stream still holds it
    or a tool call within the presence timeout (after `call_cutoff_ts`) keeps it online, it is offline at once
    (a health check that opened and closed GET /mcp leaves nothing online behind)."""
    db.execute("UPDATE sessions SET last_seen_at = ?, last_seen_ts = ?,"
               " status = CASE WHEN ? THEN (CASE status WHEN 'offline' THEN 'idle' ELSE status END)"
               " WHEN last_call_ts < ? THEN 'offline' ELSE status END"
               " WHERE network_id = ? AND alias = ? AND token_id IS NOT NULL",
               (now, now_ts, still_held, call_cutoff_ts, network_id, alias))


def touch_sessions(db: Database, keys: list[tuple[str, str]], now: str, now_ts: float) -> None:
    """touch_session for many (network_id, alias) at once (one statement run per key, in the caller's
    transaction)."""
    db.con.executemany("UPDATE sessions SET last_seen_at = ?, last_seen_ts = ?,"
                       " status = CASE status WHEN 'offline' THEN 'idle' ELSE status END"
                       " WHERE network_id = ? AND alias = ? AND token_id IS NOT NULL",
                       [(now, now_ts, network_id, alias) for network_id, alias in keys])


def clear_work(db: Database, network_id: str, alias: str) -> None:
    """A task ended: the agent is idle again, with no task or progress shown."""
    db.execute("UPDATE sessions SET task = NULL, progress = NULL,"
               " status = CASE status WHEN 'working' THEN 'idle' ELSE status END"
               " WHERE network_id = ? AND alias = ?", (network_id, alias))


def alias_in_use(db: Database, alias: str) -> bool:
    """True if any network has an agent with this alias (case-insensitive)."""
    return db.query_one("SELECT 1 AS used FROM sessions WHERE alias = ? COLLATE NOCASE LIMIT 1", (alias,)) is not None


def release_token_sessions(db: Database, token_id: str) -> list[Row]:
    """Free every alias a token holds (it was revoked): offline and unclaimed; returns the aliases."""
    return db.query("UPDATE sessions SET token_id = NULL, status = 'offline' WHERE token_id = ?"
                    " RETURNING network_id, alias", (token_id,))


def release_alias(db: Database, network_id: str, alias: str) -> str | None:
    """Free one alias (an owner/admin released it): offline and unclaimed; returns the former holder's token id."""
    row = db.query_one("SELECT token_id FROM sessions WHERE network_id = ? AND alias = ?", (network_id, alias))
    db.execute("UPDATE sessions SET token_id = NULL, status = 'offline' WHERE network_id = ? AND alias = ?",
               (network_id, alias))
    return row["token_id"] if row else None


def retire_alias(db: Database, network_id: str, alias: str, now: str) -> None:
    """Retire an alias for good: nobody may claim it or send to it again."""
    db.execute("UPDATE sessions SET retired_at = ?, token_id = NULL, status = 'offline'"
               " WHERE network_id = ? AND alias = ?", (now, network_id, alias))


def list_sessions(db: Database, network_ids: list[str]) -> list[Row]:
    """Sessions of some networks, by network then alias."""
    marks = ",".join("?" * len(network_ids)) or "NULL"
    return db.query(f"SELECT {SESSION_COLUMNS} FROM sessions s WHERE s.network_id IN ({marks})"
                    " ORDER BY s.network_id, s.alias", tuple(network_ids))


# The sessions of some networks as /api/status shows them, as JSON text built by SQLite (a page of 500 built as
# Python dicts and encoded by json.dumps costs ~5 ms; SQLite builds the same text in under 1 ms). The shown
# status here ignores live streams, which only the broker knows (in memory): a session is online while it is
# not stored offline and made a tool call since the presence cutoff (held by "polling"); its shown status is
# offline when it is not online, else the stored one. The service corrects the few sessions that have a live
# stream (and what holds them).
_SHOWN = ("SELECT *, CASE WHEN status != 'offline' AND last_call_ts >= ? THEN status"
          " ELSE 'offline' END AS shown FROM sessions WHERE network_id IN ({marks})")
_RECORD = ("json_object('resume_id', resume_id, 'alias', alias, 'status', shown, 'agent', agent, 'model', model,"
           " 'task', task, 'progress', progress, 'last_seen_at', last_seen_at, 'network_id', network_id,"
           " 'node_id', node_id, 'created_at', created_at, 'retired_at', retired_at,"
           " 'online', json(CASE WHEN shown = 'offline' THEN 'false' ELSE 'true' END), 'streams', 0,"
           " 'held_by', CASE WHEN shown = 'offline' THEN NULL ELSE 'polling' END)")


def _alias(db: Database) -> str:
    """The name a subquery in FROM needs on PostgreSQL (15); SQLite's plans (tests/test_query_plans.py) keep none."""
    return " AS s" if db.engine == POSTGRESQL else ""


def status_page_json(db: Database, network_ids: list[str], cutoff_ts: float, status: str | None, limit: int,
                     offset: int) -> str:
    """A JSON array of the /api/status records of some networks, by network then alias, optionally only those
    shown with `status`, one page; for networks where no alias has a live stream."""
    marks = ",".join("?" * len(network_ids)) or "NULL"
    shown = _SHOWN.format(marks=marks)
    # SQLite lets the WHERE name the `shown` column of the same SELECT; PostgreSQL filters the select around it.
    filtered = (f"SELECT * FROM ({shown}) AS v WHERE (? IS NULL OR shown = ?)" if db.engine == POSTGRESQL
                else f"{shown} AND (? IS NULL OR shown = ?)")
    row = db.query_one(f"SELECT json_group_array({_RECORD} ORDER BY network_id, alias) AS sessions FROM"
                       f" ({filtered} ORDER BY network_id, alias LIMIT ? OFFSET ?){_alias(db)}",
                       (cutoff_ts, *network_ids, status, status, limit, offset))
    assert row is not None  # an aggregate always answers one row
    return row["sessions"]


def status_records(db: Database, network_ids: list[str], cutoff_ts: float, limit: int, offset: int) -> list[Row]:
    """The /api/status records of some networks (JSON text each, `record`) with the stored and shown status,
    by network then alias, one page (limit -1: all)."""
    marks = ",".join("?" * len(network_ids)) or "NULL"
    shown = _SHOWN.format(marks=marks)
    return db.query(f"SELECT network_id, alias, status, shown, {_RECORD} AS record FROM ({shown}"
                    f" ORDER BY network_id, alias LIMIT ? OFFSET ?){_alias(db)}",
                    (cutoff_ts, *network_ids, limit, offset))


def session_counts(db: Database, network_ids: list[str], cutoff_ts: float) -> Row:
    """How many sessions some networks have, and how many are shown offline if none has a live stream."""
    marks = ",".join("?" * len(network_ids)) or "NULL"
    # An aggregate: one row. A CASE, not a sum of the comparison: both engines' SQL.
    return db.query(f"SELECT count(*) AS total, coalesce(sum(CASE WHEN shown = 'offline' THEN 1 ELSE 0 END), 0)"
                    f" AS offline FROM ({_SHOWN.format(marks=marks)}){_alias(db)}",
                    (cutoff_ts, *network_ids))[0]


def count_lapsed(db: Database, keys: str, cutoff_ts: float) -> int:
    """How many of some sessions (`keys`: a JSON array of [network_id, alias]) are stored offline or made no tool
    call since the cutoff; each is looked up by its primary key."""
    row = db.query_one("SELECT count(*) AS n FROM json_each(?) j JOIN sessions s"
                       " ON s.network_id = j.value ->> 0 AND s.alias = j.value ->> 1"
                       " WHERE s.status = 'offline' OR s.last_call_ts < ?", (keys, cutoff_ts))
    assert row is not None
    return row["n"]


def upsert_node(db: Database, node_id: str, network_id: str, hostname: str, platform: str | None,
                agent: str | None, now: str) -> str:
    """Record a machine seen in a report; returns the node id (existing or new)."""
    row = db.query_one("SELECT node_id, agents FROM nodes WHERE network_id = ? AND hostname = ?",
                       (network_id, hostname))
    if row is None:
        agents = json.dumps([agent] if agent else [])  # never formatted by hand: a quote in `agent` is data
        if db.execute("INSERT INTO nodes(node_id, network_id, hostname, platform, agents, created_at, last_seen_at)"
                      " VALUES (?, ?, ?, ?, json(?), ?, ?) ON CONFLICT (network_id, hostname) DO NOTHING",
                      (node_id, network_id, hostname, platform, agents, now, now)) == 1:
            return node_id
        # Another writer (PostgreSQL: a process, a pool's connection) recorded the hostname since: update it.
        row = db.query_one("SELECT node_id, agents FROM nodes WHERE network_id = ? AND hostname = ?",
                           (network_id, hostname))
        assert row is not None
    if db.engine == POSTGRESQL:
        db.execute("UPDATE nodes SET platform = coalesce(?, platform), last_seen_at = ?,"
                   " agents = CASE WHEN ? IS NULL OR EXISTS (SELECT 1 FROM json_array_elements_text(agents::json) AS a"
                   " WHERE a = ?) THEN agents"
                   # Appended as text, as SQLite's json_insert does: the array stays compact (`["a","b"]`).
                   " WHEN agents = '[]' THEN '[' || to_json(?::text)::text || ']'"
                   " ELSE left(agents, -1) || ',' || to_json(?::text)::text || ']' END"
                   " WHERE node_id = ?", (platform, now, agent, agent, agent, agent, row["node_id"]))
        return row["node_id"]
    db.execute("UPDATE nodes SET platform = coalesce(?, platform), last_seen_at = ?,"
               " agents = CASE WHEN ? IS NULL OR EXISTS (SELECT 1 FROM json_each(agents) WHERE value = ?)"
               " THEN agents ELSE json_insert(agents, '$[#]', ?) END WHERE node_id = ?",
               (platform, now, agent, agent, agent, row["node_id"]))
    return row["node_id"]


def list_nodes(db: Database, network_ids: list[str], limit: int = -1, offset: int = 0) -> list[Row]:
    """Nodes of some networks with how many sessions run on each.

    One pass: the networks' sessions are counted per node once (a range of the sessions primary key) and
    joined to the nodes, instead of two correlated scans of every session for every node."""
    marks = ",".join("?" * len(network_ids)) or "NULL"
    return db.query(f"SELECT n.node_id, n.network_id, n.hostname, n.platform, n.agents, n.created_at,"
                    f" n.last_seen_at, coalesce(c.sessions, 0) AS sessions,"
                    f" coalesce(c.online_sessions, 0) AS online_sessions FROM nodes n"
                    f" LEFT JOIN (SELECT s.node_id, count(*) AS sessions,"
                    f" sum(CASE WHEN s.status != 'offline' THEN 1 ELSE 0 END) AS online_sessions FROM sessions s"
                    f" WHERE s.network_id IN ({marks}) AND s.node_id IS NOT NULL GROUP BY s.node_id) c"
                    f" ON c.node_id = n.node_id WHERE n.network_id IN ({marks})"
                    f" ORDER BY n.hostname LIMIT ? OFFSET ?", (*network_ids, *network_ids, limit, offset))


# --- State several hub processes share (PostgreSQL; service/shared.py). On SQLite these tables stay empty. ---

def put_stream_presence(db: Database, rows: list[tuple[str, str, str, int, str, float]]) -> None:
    """Store this process's streams of some aliases: (network_id, alias, process, streams, held_by, expires_ts)."""
    db.con.executemany("INSERT INTO stream_presence(network_id, alias, process, streams, held_by, expires_ts)"
                       " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (network_id, alias, process) DO UPDATE SET"
                       " streams = excluded.streams, held_by = excluded.held_by, expires_ts = excluded.expires_ts",
                       rows)


def drop_stream_presence(db: Database, keys: list[tuple[str, str]], process: str) -> None:
    """Forget this process's streams of some aliases (none left)."""
    db.con.executemany("DELETE FROM stream_presence WHERE network_id = ? AND alias = ? AND process = ?",
                       [(network_id, alias, process) for network_id, alias in keys])


def extend_stream_presence(db: Database, process: str, expires_ts: float) -> int:
    """Push back the expiry of every row of this process (it is alive); how many rows it has."""
    return db.execute("UPDATE stream_presence SET expires_ts = ? WHERE process = ?", (expires_ts, process))


def clear_stream_presence(db: Database, process: str) -> None:
    """Forget every stream of this process (it stops)."""
    db.execute("DELETE FROM stream_presence WHERE process = ?", (process,))


def prune_stream_presence(db: Database, now_ts: float) -> int:
    """Delete expired rows (of processes that died without clearing theirs); how many."""
    return db.execute("DELETE FROM stream_presence WHERE expires_ts < ?", (now_ts,))


def other_stream_presence(db: Database, network_ids: list[str] | None, process: str, now_ts: float) -> list[Row]:
    """The unexpired streams of the other processes, per (network_id, alias, held_by), in some networks (None: all)."""
    if network_ids is None:
        return db.query("SELECT network_id, alias, streams, held_by FROM stream_presence"
                        " WHERE process != ? AND expires_ts >= ?", (process, now_ts))
    marks = ",".join("?" * len(network_ids)) or "NULL"
    return db.query(f"SELECT network_id, alias, streams, held_by FROM stream_presence WHERE network_id IN ({marks})"
                    " AND process != ? AND expires_ts >= ?", (*network_ids, process, now_ts))


def other_stream_presence_of(db: Database, network_id: str, alias: str, process: str, now_ts: float) -> list[Row]:
    """The unexpired streams of one alias held by the other processes (a range of the primary key)."""
    return db.query("SELECT streams, held_by FROM stream_presence WHERE network_id = ? AND alias = ?"
                    " AND process != ? AND expires_ts >= ?", (network_id, alias, process, now_ts))


MCP_SESSION_COLUMNS = "session_id, token_id, protocol_version, alias, client, used_ts, ended"


def insert_mcp_session(db: Database, session_id: str, token_id: str, protocol_version: str, alias: str | None,
                       client: str | None, now_ts: float) -> None:
    """Record an MCP session (created, or taken up again) unless it is recorded already."""
    db.execute("INSERT INTO mcp_sessions(session_id, token_id, protocol_version, alias, client, created_ts, used_ts)"
               " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (session_id) DO NOTHING",
               (session_id, token_id, protocol_version, alias, client, now_ts, now_ts))


def get_mcp_session(db: Database, session_id: str) -> Row | None:
    """One recorded MCP session."""
    return db.query_one(f"SELECT {MCP_SESSION_COLUMNS} FROM mcp_sessions WHERE session_id = ?", (session_id,))


def set_mcp_session_alias(db: Database, session_id: str, alias: str, now_ts: float) -> None:
    """The alias an MCP session claimed (report_status)."""
    db.execute("UPDATE mcp_sessions SET alias = ?, used_ts = ? WHERE session_id = ?", (alias, now_ts, session_id))


def touch_mcp_session(db: Database, session_id: str, now_ts: float) -> None:
    """An MCP session was used (keeps its row from expiring)."""
    db.execute("UPDATE mcp_sessions SET used_ts = ? WHERE session_id = ?", (now_ts, session_id))


def end_mcp_session(db: Database, session_id: str, token_id: str, protocol_version: str, reason: str,
                    now_ts: float) -> None:
    """An MCP session ended (DELETE /mcp, an eviction): kept, with why, so every process answers its id 404."""
    db.execute("INSERT INTO mcp_sessions(session_id, token_id, protocol_version, created_ts, used_ts, ended)"
               " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (session_id) DO UPDATE SET ended = excluded.ended,"
               " used_ts = excluded.used_ts", (session_id, token_id, protocol_version, now_ts, now_ts, reason))


def mark_mcp_session_ended(db: Database, session_id: str, reason: str, now_ts: float) -> None:
    """end_mcp_session for a session recorded already (one a cap evicted)."""
    db.execute("UPDATE mcp_sessions SET ended = ?, used_ts = ? WHERE session_id = ?", (reason, now_ts, session_id))


def prune_mcp_sessions(db: Database, before_ts: float) -> int:
    """Delete MCP sessions unused since `before_ts`; how many."""
    return db.execute("DELETE FROM mcp_sessions WHERE used_ts < ?", (before_ts,))
