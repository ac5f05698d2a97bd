"""The MCP session pool: sessions by Mcp-Session-Id, capped per token and in all, and a bounded record of the
sessions that ended.

Sessions are protocol state kept in memory: a restart forgets them. A request naming an id this hub issued to
the same token but no longer knows (from before a restart) gets a session under that id again — never a 404,
which clients take as "terminated" — but such a session, like a new one, has no alias of its own until
report_status: see `service.identity.session_principal` for whom it speaks for meanwhile. An id issued to
another token, or never issued, is never taken up (mcp/protocol.py).

A session that ended stays ended: ended with DELETE /mcp, or evicted by a cap, its id is remembered (the last
ENDED_REMEMBERED of them) and every later request with it is answered 404 with the reason, as the MCP transport
says of terminated sessions.

Caps (docs/mcp.md#mcp-sessions-and-their-cap): at most `per_token` sessions per token. A session is live while
it holds a GET /mcp stream or a request in flight, or was used within `idle_seconds` (the presence timeout). At the cap,
a new session takes the place of the token's least recently used session that is not live (that one is
evicted); when all of them are live the new one is refused with an error that names the setting and says to
give each agent its own token, so 256 agents on one token see 100 work and 156 refused clearly, rather than
evicting each other in turn. Past `total` sessions in all, the token holding the most loses its least recently
used one, so one token's burst can only ever evict that token's own sessions.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from ..broker import Subscriber
from .tools import McpSession

if TYPE_CHECKING:
    from ..service.hub import Hub

log = logging.getLogger("commhub.mcp")

ENDED_REMEMBERED = 10_000  # ended session ids kept (in memory) so that requests with them are answered 404
# Why a remembered session ended.
ENDED, EVICTED_TOKEN_CAP, EVICTED_TOTAL_CAP = "session_ended", "session_evicted", "session_evicted_total"


class SessionCapReached(Exception):
    """Every session of the token is live at its cap: a new one is refused (the message says what to do)."""

    def __init__(self, per_token: int):
        super().__init__(cap_message(per_token))
        self.per_token = per_token


def cap_message(per_token: int) -> str:
    """The refusal of one more session beyond the token's cap."""
    return (f"this token already has {per_token} MCP sessions in use, the limit (COMMHUB_MCP_SESSIONS_PER_TOKEN): "
            "give each agent its own token (commhub connect, or POST /api/tokens); a session frees its place when "
            "its client ends it (DELETE /mcp) or after it has been idle for the presence timeout")


def ended_message(reason: str, per_token: int, total: int) -> str:
    """What a request naming an ended session is told."""
    if reason == EVICTED_TOKEN_CAP:
        return (f"this MCP session was evicted: its token opened more than {per_token} sessions, the limit "
                "(COMMHUB_MCP_SESSIONS_PER_TOKEN), and it was the least recently used idle one; give each agent its "
                "own token, and send initialize to start a new session")
    if reason == EVICTED_TOTAL_CAP:
        return (f"this MCP session was evicted: the hub holds {total} sessions, its limit (COMMHUB_MCP_MAX_SESSIONS), "
                "and this token held the most; give each agent its own token, and send initialize to start a new "
                "session")
    return "this MCP session was ended (DELETE /mcp); send initialize to start a new session"


@dataclass
class SessionPush:
    """What one MCP session has open: its push streams, and the requests that may still be cancelled."""

    changed: trio.Event = field(default_factory=trio.Event)
    streams: set[Subscriber] = field(default_factory=set)
    waiting: int = 0  # GET streams waiting for the session to claim an alias
    inflight: dict[tuple[str, Any], trio.CancelScope] = field(default_factory=dict)
    # (alias, its newest event id) when the session claimed it: a stream moving to that alias replays what came
    # after, so nothing sent between the claim and the stream's subscription is missed.
    claimed_at: tuple[str, int] | None = None

    @property
    def idle(self) -> bool:
        """Nothing open: the entry can go."""
        return not self.streams and not self.waiting and not self.inflight


class SessionPool:
    """MCP sessions by id, with a least-recently-used order (and last-use time) per token."""

    def __init__(self, per_token: int, total: int, idle_seconds: float = 90.0):
        self.per_token = max(1, per_token)
        self.total = max(1, total)
        self.idle_seconds = idle_seconds
        self._by_id: dict[str, McpSession] = {}
        self._by_token: dict[str, OrderedDict[str, float]] = {}  # token -> session id -> last use (monotonic)
        # Kept by mcp/push.py: each session's push state (its GET streams, its cancellable requests); a session
        # with an entry here is live.
        self.push: dict[str, SessionPush] = {}
        self.ended: OrderedDict[str, str] = OrderedDict()  # session id -> why it ended, oldest first

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._by_id

    def get(self, session_id: str) -> McpSession | None:
        """The session with this id, or None (does not count as a use)."""
        return self._by_id.get(session_id)

    def count_for_token(self, token_id: str) -> int:
        """How many sessions a token holds."""
        return len(self._by_token.get(token_id, ()))

    def use(self, session_id: str) -> McpSession | None:
        """The session with this id, marked most recently used within its token."""
        session = self._by_id.get(session_id)
        if session is not None:
            ids = self._by_token[session.token_id]
            ids[session_id] = time.monotonic()
            ids.move_to_end(session_id)
        return session

    def ended_reason(self, session_id: str) -> str | None:
        """Why a session this hub remembers ending ended (ENDED, EVICTED_*), or None."""
        return self.ended.get(session_id)

    def end(self, session_id: str, reason: str = ENDED) -> McpSession | None:
        """Forget a session and remember that it ended (DELETE /mcp, an eviction); returns it, if it was known."""
        self.ended[session_id] = reason
        self.ended.move_to_end(session_id)
        while len(self.ended) > ENDED_REMEMBERED:
            self.ended.popitem(last=False)
        return self.pop(session_id)

    def add(self, session: McpSession) -> list[str]:
        """Keep a session within the caps: returns the ids it evicted (their push state is the caller's to end);
        SessionCapReached when every session of its token is live at the cap."""
        assert session.session_id
        self.pop(session.session_id)
        evicted = []
        ids = self._by_token.get(session.token_id, OrderedDict())
        if len(ids) >= self.per_token:
            now = time.monotonic()
            idle = [sid for sid, used in ids.items() if now - used >= self.idle_seconds and sid not in self.push]
            if len(ids) - len(idle) >= self.per_token:
                raise SessionCapReached(self.per_token)
            for sid in idle[:len(ids) - self.per_token + 1]:
                self.end(sid, EVICTED_TOKEN_CAP)
                evicted.append(sid)
                log.info("mcp: session %s of token %s evicted (the token's session cap)", sid[:12], session.token_id)
        while len(self._by_id) >= self.total:
            heaviest = max(self._by_token, key=lambda t: len(self._by_token[t]))
            oldest = next(iter(self._by_token[heaviest]))
            self.end(oldest, EVICTED_TOTAL_CAP)
            evicted.append(oldest)
            log.info("mcp: session %s of token %s evicted (the server-wide session cap)", oldest[:12], heaviest)
        self._by_id[session.session_id] = session
        self._by_token.setdefault(session.token_id, OrderedDict())[session.session_id] = time.monotonic()
        return evicted

    def pop(self, session_id: str) -> McpSession | None:
        """Forget a session (without remembering it ended); returns it, or None if unknown."""
        session = self._by_id.pop(session_id, None)
        if session is not None:
            ids = self._by_token.get(session.token_id)
            if ids is not None:
                ids.pop(session_id, None)
                if not ids:
                    del self._by_token[session.token_id]
        return session


def pool_of(hub: Hub) -> SessionPool:
    """The hub's MCP session pool, typed (the service layer holds it as a plain object so it never imports mcp/)."""
    pool = hub.mcp_sessions
    assert isinstance(pool, SessionPool), "create_app sets the hub's MCP session pool"
    return pool
