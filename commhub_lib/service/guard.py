"""A stream (or a long-poll) stays authorised for its whole life, not only when it opens
(docs/events.md#streams-stay-authorised).

Each open stream holds a Grant: the token, the user and the network it was opened with, and the time its token
expires. A grant ends, and its stream with it, in three ways:

- at once, when this process removes a member (`end_member`) or revokes a token (`end_token`);
- on the stream's first heartbeat past its token's expiry: the grant holds that time, so no query;
- on the next heartbeat of any stream after anything that could take the right away changed, whoever changed it
  (this process, or another one on the database file: `commhub token revoke --db`, `user set-password --db`).
  A ChangeWatch over tokens, users and members (TEMP triggers for this connection, PRAGMA data_version for the
  others) is read at most once per `interval` per process, by whichever heartbeat comes first; only when it
  moved does one query re-check every open grant at once. At 5,000 streams that is a few pragma reads a
  second, never one query per stream per beat.
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import trio

from ..broker import Subscriber
from ..db import Database, on_loop
from ..ids import now_text
from ..store import tokens as token_store

# What can take a stream's right away: a token revoked, expired, moved or deleted (a user or network deleted
# cascades here); a user deleted or their system role changed; a membership ended. Rare writes all of them.
STREAM_AUTH_CHANGES = {"tokens": ("DELETE", "UPDATE OF revoked_at, expires_at, user_id, network_id"),
                       "users": ("DELETE", "UPDATE OF role"),
                       "members": ("DELETE", "UPDATE OF network_id, user_id")}
MAX_INTERVAL = 0.1  # seconds between two reads of the change watch, at most (a lone stream waits one heartbeat)
TOKEN_REVOKED, TOKEN_EXPIRED, MEMBER_REMOVED = "token_revoked", "token_expired", "member_removed"
ENDINGS = frozenset({TOKEN_REVOKED, TOKEN_EXPIRED, MEMBER_REMOVED})


def expiry_time(expires_at: str | None) -> float | None:
    """A token's `expires_at` ('YYYY-MM-DD HH:MM:SS', UTC) as Unix time; None for a token that never expires."""
    if not expires_at:
        return None
    return float(calendar.timegm(time.strptime(expires_at, "%Y-%m-%d %H:%M:%S")))


@dataclass(eq=False, slots=True)  # one per open stream: no __dict__
class Grant:
    """The right one open stream was given: whose token, in which network, until when."""

    token_id: str
    user_id: str
    network_id: str
    expires: float | None
    reason: str = ""  # why it ended (one of ENDINGS); empty while it stands
    ended: trio.Event = field(default_factory=trio.Event)
    subscriber: Subscriber | None = None  # the broker subscriber that carries the stream's events now

    def end(self, reason: str) -> None:
        """Take the right away: the stream's subscriber ends at once (its buffered events are dropped)."""
        if self.reason:
            return
        self.reason = reason
        self.ended.set()
        if self.subscriber is not None:
            self.subscriber.revoke(reason)


class StreamGuard:
    """Every open grant of this process, and the cheap per-heartbeat check that keeps them honest."""

    def __init__(self, db: Database, heartbeat_seconds: float):
        self._db = db
        self._grants: set[Grant] = set()
        self._watch = db.change_watch("stream_auth", STREAM_AUTH_CHANGES)
        self._stamp = self._watch.stamp()
        self.interval = min(MAX_INTERVAL, heartbeat_seconds / 20)
        self._next_poll = 0.0
        self.polls = 0  # reads of the change watch (for tests and the benchmark)
        self.rechecks = 0  # queries that re-checked every grant

    def __len__(self) -> int:
        return len(self._grants)

    @contextmanager
    def hold(self, token_id: str, user_id: str, network_id: str, expires_at: str | None) -> Iterator[Grant]:
        """A grant for the duration of the block (the stream's life)."""
        grant = Grant(token_id, user_id, network_id, expiry_time(expires_at))
        self._grants.add(grant)
        try:
            yield grant
        finally:
            self._grants.discard(grant)

    def allowed(self, grant: Grant) -> bool:
        """Whether the stream may go on (ask on every heartbeat): False once its grant ended, or its token
        expired, or a re-check found its token or membership gone."""
        if grant.reason:
            return False
        if grant.expires is not None and time.time() >= grant.expires:
            grant.end(TOKEN_EXPIRED)
            return False
        self.poll()
        return not grant.reason

    def poll(self) -> None:
        """Re-check every grant if tokens, users or members may have changed since the last look (throttled)."""
        now = trio.current_time()
        if now < self._next_poll:
            return
        self._next_poll = now + self.interval
        self.polls += 1
        stamp = self._watch.stamp()
        if stamp != self._stamp:
            self._stamp = stamp
            self.recheck()

    def recheck(self) -> int:
        """One query for every open grant: end those whose token is no longer live or whose user is no longer
        in the network. Returns how many ended."""
        if not self._grants:
            return 0
        self.rechecks += 1
        keys = {(g.token_id, g.user_id, g.network_id) for g in self._grants}
        failing = token_store.failing_stream_grants(self._db, sorted(keys), now_text())
        ended = 0
        for grant in list(self._grants):
            reason = failing.get((grant.token_id, grant.user_id, grant.network_id))
            if reason is not None:
                grant.end(TOKEN_REVOKED if reason == "token" else MEMBER_REMOVED)
                ended += 1
        return ended

    def end_member(self, network_id: str, user_id: str) -> int:
        """A member left or was removed: end every stream they hold in that network, whatever the token."""
        return self._end(lambda g: g.network_id == network_id and g.user_id == user_id, MEMBER_REMOVED)

    def end_token(self, token_id: str) -> int:
        """A token was revoked: end every stream opened with it."""
        return self._end(lambda g: g.token_id == token_id, TOKEN_REVOKED)

    def _end(self, match: Callable[[Grant], bool], reason: str) -> int:
        doomed = [g for g in self._grants if match(g)]
        for grant in doomed:
            on_loop(grant.end, reason)  # sets a trio.Event: on the loop (after the operation, from a worker thread)
        return len(doomed)
