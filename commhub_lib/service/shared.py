"""What several hub processes on one PostgreSQL database share besides the tables of record: the streams that
hold aliases online (presence) and the MCP sessions (docs/postgresql.md "Several processes").

Only on PostgreSQL (`Hub.shared` is None on SQLite, where one process serves a database file and memory is the
whole truth: nothing here runs and nothing is slower).

- **Stream presence.** Each process keeps, in `stream_presence`, one row per alias its agent streams hold (how many,
  and the strongest holder kind) under its own process tag. The broker notes the aliases whose holding streams open
  or close; every PRESENCE_WRITE_SECONDS the presence writer (service/sessions.py) stores what changed in one
  transaction, and every third of `stream_presence_ttl_seconds` pushes back the expiry of all its rows. A stream
  closing that leaves its alias without a stream here deletes the row at once (with the session's own "offline from
  now"). Readers add the unexpired rows of the other processes to their own broker's counts. A process that stops
  deletes its rows; one that is killed stops refreshing them, and they lapse within the TTL.
- **MCP sessions.** `mcp_sessions` holds what a request needs from its Mcp-Session-Id on any process: the token it
  was issued to, the negotiated protocol version, the client's name and the alias claimed on it; `ended` says why it
  ended (DELETE /mcp, a cap's eviction), so every process answers it 404. mcp/protocol.py looks a session up in
  memory and reads its row on each request that names one (one primary-key read); rows unused for a day go.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from dataclasses import dataclass, field
from typing import Any

from ..broker import Key
from ..db import DatabaseError
from ..errors import CommhubError
from ..ids import now_ts
from ..store import sessions as session_store
from ..store.dialect import POSTGRESQL
from ..vocabulary import STREAM_HOLDERS, StreamHolder
from .hub import Hub

log = logging.getLogger("commhub.presence")

# An MCP session's row is kept this long after its last use (a use refreshes it at most every MCP_USE_REFRESH).
MCP_SESSION_KEEP_SECONDS = 86400.0
MCP_USE_REFRESH_SECONDS = 600.0


def process_tag() -> str:
    """A name for this process's rows: host, pid and a random part (a restarted process is another one)."""
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{secrets.token_hex(4)}"


@dataclass
class SharedState:
    """This process's side of the shared state: its tag, and which of its stream rows the table holds."""

    ttl: float
    process: str = field(default_factory=process_tag)
    written: dict[Key, tuple[int, StreamHolder]] = field(default_factory=dict)  # what the table holds for us
    refreshed_ts: float = 0.0  # when our rows' expiry was last pushed back


def start(hub: Hub) -> SharedState | None:
    """Share presence and MCP sessions with the other processes (PostgreSQL only); the state, or None on SQLite."""
    if hub.db.engine != POSTGRESQL:
        return None
    hub.shared = SharedState(hub.settings.stream_presence_ttl_seconds)
    hub.broker.track_holders = True
    log.info("presence and MCP sessions shared through the database as process %s", hub.shared.process)
    return hub.shared


def strongest(*kinds: StreamHolder | None) -> StreamHolder | None:
    """The strongest of some holder kinds (runner, then channel, then stream)."""
    return next((kind for kind in STREAM_HOLDERS if kind in kinds), None)


def _local(hub: Hub, key: Key) -> tuple[int, StreamHolder | None]:
    return hub.broker.stream_count(*key), hub.broker.held_by(*key)


# --- stream presence: writing this process's rows ---

def write_presence(hub: Hub, state: SharedState) -> int:
    """Store the stream presence of the aliases whose streams opened or closed since the last call, and push back
    the expiry of every row of this process when a third of the TTL has passed (pruning expired rows of dead
    processes then too): one transaction, and none when nothing is due. Returns how many rows it wrote.
    Best effort: a failed write leaves the changes due for the next call."""
    broker = hub.broker
    changed, broker.holders_changed = broker.holders_changed, set()
    now = now_ts()
    put: list[tuple[str, str, str, int, str, float]] = []
    drop: list[Key] = []
    for key in changed:
        count, held = _local(hub, key)
        if count and held is not None:
            if state.written.get(key) != (count, held):
                put.append((key[0], key[1], state.process, count, held, now + state.ttl))
        elif key in state.written:
            drop.append(key)
    refresh = now - state.refreshed_ts >= state.ttl / 3
    if not put and not drop and not refresh:
        return 0

    def apply() -> None:
        if put:
            session_store.put_stream_presence(hub.db, put)
        if drop:
            session_store.drop_stream_presence(hub.db, drop, state.process)
        if refresh:
            session_store.extend_stream_presence(hub.db, state.process, now + state.ttl)
            session_store.prune_stream_presence(hub.db, now)
            session_store.prune_mcp_sessions(hub.db, now - MCP_SESSION_KEEP_SECONDS)

    try:
        written = hub.db.try_write(apply)
    except (CommhubError, DatabaseError) as exc:  # PostgreSQL away: our rows lapse meanwhile, as a dead process's
        log.warning("presence: could not store this process's streams (%s)", exc)
        written = False
    if not written:
        broker.holders_changed |= changed
        return 0
    for row in put:
        state.written[(row[0], row[1])] = (row[3], row[4])  # type: ignore[assignment]
    for key in drop:
        state.written.pop(key, None)
    if refresh:
        state.refreshed_ts = now
    return len(put) + len(drop)


def closed_last_stream(hub: Hub, key: Key) -> None:
    """Inside the transaction of a stream's close that left its alias without a stream here: delete the row now, so
    the other processes show the alias offline as this one does (not a moment later). `dropped` after the commit."""
    state = hub.shared
    if state is not None and key in state.written:
        session_store.drop_stream_presence(hub.db, [key], state.process)


def dropped(hub: Hub, key: Key) -> None:
    """The transaction of closed_last_stream committed: the table holds no row of this alias for this process."""
    if hub.shared is not None:
        hub.shared.written.pop(key, None)


def clear_presence(hub: Hub) -> None:
    """This process stops: delete its rows (best effort; a killed process's rows lapse by their TTL instead)."""
    state = hub.shared
    if state is None:
        return
    try:
        hub.db.try_write(lambda: session_store.clear_stream_presence(hub.db, state.process))
    except (CommhubError, DatabaseError) as exc:
        log.warning("presence: could not delete this process's streams (%s); they lapse in %.0f s", exc, state.ttl)
    state.written.clear()


# --- stream presence: reading the other processes' rows ---

def other_streams_of(hub: Hub, network_id: str, alias: str) -> tuple[int, StreamHolder | None]:
    """How many streams the other processes hold for one alias, and the strongest kind; (0, None) on SQLite."""
    state = hub.shared
    if state is None:
        return 0, None
    rows = session_store.other_stream_presence_of(hub.db, network_id, alias, state.process, now_ts())
    return sum(r["streams"] for r in rows), strongest(*(r["held_by"] for r in rows))


def other_streams(hub: Hub, network_ids: list[str] | None) -> dict[Key, tuple[int, StreamHolder]]:
    """The aliases (of some networks; None: all) with streams on the other processes: count and strongest kind."""
    state = hub.shared
    if state is None:
        return {}
    found: dict[Key, tuple[int, StreamHolder]] = {}
    for r in session_store.other_stream_presence(hub.db, network_ids, state.process, now_ts()):
        key = (r["network_id"], r["alias"])
        count, held = found.get(key, (0, r["held_by"]))
        found[key] = (count + r["streams"], strongest(held, r["held_by"]) or r["held_by"])
    return found


# --- MCP sessions ---

def mcp_session(hub: Hub, session_id: str) -> dict[str, Any] | None:
    """The stored MCP session with this id (None on SQLite, or when no process recorded it)."""
    if hub.shared is None:
        return None
    return session_store.get_mcp_session(hub.db, session_id)


def mcp_session_created(hub: Hub, session_id: str, token_id: str, protocol_version: str, alias: str | None,
                        client: str | None) -> None:
    """Record a new (or taken up) MCP session for the other processes."""
    if hub.shared is not None:
        with hub.db.write():
            session_store.insert_mcp_session(hub.db, session_id, token_id, protocol_version, alias, client, now_ts())


def mcp_session_claimed(hub: Hub, session_id: str, alias: str) -> None:
    """An MCP session claimed an alias: the other processes act as it too."""
    if hub.shared is not None:
        with hub.db.write():
            session_store.set_mcp_session_alias(hub.db, session_id, alias, now_ts())


def mcp_session_ended(hub: Hub, session_id: str, token_id: str, protocol_version: str, reason: str) -> None:
    """An MCP session ended (DELETE /mcp, or evicted by a cap): every process answers its id 404 from now on."""
    if hub.shared is not None:
        with hub.db.write():
            session_store.end_mcp_session(hub.db, session_id, token_id, protocol_version, reason, now_ts())


def mcp_sessions_evicted(hub: Hub, reasons: dict[str, str]) -> None:
    """Sessions this process's caps evicted (id -> why): ended for every process."""
    if hub.shared is not None and reasons:
        ts = now_ts()
        with hub.db.write():
            for session_id, reason in reasons.items():
                session_store.mark_mcp_session_ended(hub.db, session_id, reason, ts)


def mcp_session_used(hub: Hub, row: dict[str, Any]) -> None:
    """A stored MCP session was used: keep its row (written at most every MCP_USE_REFRESH_SECONDS; best effort)."""
    ts = now_ts()
    if hub.shared is not None and row["used_ts"] < ts - MCP_USE_REFRESH_SECONDS:
        hub.db.try_write(lambda: session_store.touch_mcp_session(hub.db, row["session_id"], ts))
