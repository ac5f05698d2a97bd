"""The MCP session pool: sessions by Mcp-Session-Id, capped per token, evicted within the token.

Sessions are protocol state kept in memory: a restart forgets them. A request naming an id the pool does
not know (from before a restart, or evicted) still gets a session under that id — never a 404, which
clients take as "terminated" — but such a session, like a new one, has no alias of its own until
report_status: see `service.identity.session_principal` for whom it speaks for meanwhile.

Bounds: at most `per_token` sessions per token (its least recently used one goes first), and at most
`total` in all; past that the token holding the most sessions loses its least recently used one, so one
token's burst of `initialize` calls can only ever evict that token's own sessions.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

from .tools import McpSession

log = logging.getLogger("commhub.mcp")


class SessionPool:
    """MCP sessions by id, with a least-recently-used order per token."""

    def __init__(self, per_token: int, total: int):
        self.per_token = max(1, per_token)
        self.total = max(1, total)
        self._by_id: dict[str, McpSession] = {}
        self._by_token: dict[str, OrderedDict[str, None]] = {}
        # Kept by mcp/push.py: each session's push state (its GET streams, its cancellable requests), and
        # the ids ended with DELETE (oldest first), so that they are never taken up again.
        self.push: dict[str, Any] = {}
        self.ended: OrderedDict[str, None] = OrderedDict()

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
            self._by_token[session.token_id].move_to_end(session_id)
        return session

    def add(self, session: McpSession) -> None:
        """Keep a session, evicting the token's least recently used ones beyond the caps."""
        assert session.session_id
        self.pop(session.session_id)
        ids = self._by_token.setdefault(session.token_id, OrderedDict())
        while len(ids) >= self.per_token:
            self._evict_oldest(session.token_id, "the token's session cap")
        while len(self._by_id) >= self.total:
            heaviest = max(self._by_token, key=lambda t: len(self._by_token[t]))
            self._evict_oldest(heaviest, "the server-wide session cap")
        self._by_id[session.session_id] = session
        self._by_token.setdefault(session.token_id, OrderedDict())[session.session_id] = None

    def pop(self, session_id: str) -> McpSession | None:
        """Forget a session (DELETE /mcp); returns it, or None if unknown."""
        session = self._by_id.pop(session_id, None)
        if session is not None:
            ids = self._by_token.get(session.token_id)
            if ids is not None:
                ids.pop(session_id, None)
                if not ids:
                    del self._by_token[session.token_id]
        return session

    def _evict_oldest(self, token_id: str, reason: str) -> None:
        oldest = next(iter(self._by_token[token_id]))
        self.pop(oldest)
        log.debug("mcp: session of token %s evicted (%s)", token_id, reason)
