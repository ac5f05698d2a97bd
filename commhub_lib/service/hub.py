"""The Hub: settings, database and broker bundled for the service functions, plus shared helpers."""

from __future__ import annotations

import json
import threading
import time
from contextlib import AbstractContextManager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from ..broker import Broker, Event
from ..config import Settings
from ..db import Database, in_hop, on_loop
from ..errors import Forbidden, ValidationFailed
from ..ids import now_text
from ..ratelimit import ByteRate
from ..store import audit as audit_store
from ..store import bridge as bridge_store
from ..store import events as event_store
from ..store import tokens as token_store
from ..store import webhooks as webhook_store
from ..vocabulary import ANSWER, FORWARD_ANSWER, FORWARD_CANCEL, FORWARD_TASK, NEW_MESSAGE, NEW_REPLY, NEW_TASK
from .guard import Grant, StreamGuard

if TYPE_CHECKING:
    from ..metrics import Metrics
    from .fanout import Fanout
    from .leader import Leadership
    from .shared import SharedState

# Held while a lazily made part of the Hub is made (on PostgreSQL requests run in worker threads: two could each make
# one, and a stream would hold a grant of a guard nobody checks).
_MAKING = threading.Lock()

# The caches each process keeps of what other processes may change (service/fanout.py tells them across processes).
WEBHOOKS_CACHE, A2A_CACHE = "webhooks", "a2a_bindings"
# Which surface the current call came through: "mcp" (tool calls) or "rest". Answers speak of tools to
# agents and of endpoints to REST callers (set by mcp/tools.call_tool for the duration of a tool call).
SURFACE: ContextVar[str] = ContextVar("commhub_surface", default="rest")
# The token behind the current request (set when it is authenticated): the key of the per-token send rate by bytes
# (service/quotas.py check_store); None for work no token asked for.
CALLER_TOKEN: ContextVar[str | None] = ContextVar("commhub_caller_token", default=None)


def hint(mcp: str, rest: str) -> str:
    """The next-step advice for the caller's surface: tool names over MCP, endpoints over REST."""
    return mcp if SURFACE.get() == "mcp" else rest


@dataclass
class Principal:
    """Who is calling: a person (user token) or an agent (network token)."""

    kind: str  # "user" | "network"
    token_id: str
    user: dict[str, Any]
    network_id: str | None = None  # network tokens only
    bound_alias: str | None = None  # network tokens bound to one alias
    last_alias: str | None = None
    expires_at: str | None = None  # the token's expiry ('YYYY-MM-DD HH:MM:SS' UTC); streams end at it

    @property
    def user_id(self) -> str:
        """The user behind the token (for network tokens: the user who created it)."""
        return self.user["user_id"]

    @property
    def is_system_admin(self) -> bool:
        """True for the system admin (the first user), and only through a user token."""
        return self.kind == "user" and self.user["role"] == "admin"

    @property
    def label(self) -> str:
        """How this caller is named in logs and audit entries."""
        return self.user["username"] if self.kind == "user" else f"{self.user['username']}/{self.token_id}"


@dataclass(frozen=True)
class SharedText:
    """A text stored once in `bodies` that several events carry (record_event): its id and its JSON string."""

    body_id: int
    quoted: str

    @classmethod
    def of(cls, body_id: int, text: str) -> SharedText:
        """The shared text of a stored body."""
        return cls(body_id, json.dumps(text, ensure_ascii=False))


@dataclass
class Hub:
    """Shared state of one running server."""

    settings: Settings
    db: Database
    broker: Broker = field(default_factory=lambda: Broker(256))
    started: float = field(default_factory=time.monotonic)
    # MCP sessions by Mcp-Session-Id (protocol state, kept here so it is per server, not global): set by create_app
    # through mcp.protocol.create_session_pool, absent on a hub that serves no MCP.
    # Typed `object` here so the service layer never imports mcp/ (not even for types): mcp.sessions.pool_of(hub)
    # gives it back typed.
    mcp_sessions: object = field(init=False, repr=False, compare=False)
    # The hub's Prometheus metrics (commhub_lib/metrics.py), made by create_app when the `metrics` setting is not off;
    # None: nothing is counted (each hook is one `is not None` test).
    metrics: Metrics | None = field(default=None, init=False, repr=False, compare=False)
    # Events across processes (service/fanout.py): set by run_server on the PostgreSQL engine only; None on SQLite.
    fanout: Fanout | None = field(default=None, init=False, repr=False, compare=False)
    # The owner lock of the background workers (service/leader.py): set by run_server on PostgreSQL; None on SQLite.
    leadership: Leadership | None = field(default=None, init=False, repr=False, compare=False)
    # Presence and MCP sessions shared with the other processes of one PostgreSQL database (service/shared.py): set
    # by the presence writer job on PostgreSQL only; None on SQLite.
    shared: SharedState | None = field(default=None, init=False, repr=False, compare=False)
    _live_tokens: token_store.LiveTokenCache | None = field(default=None, init=False, repr=False)
    _send_rate: ByteRate | None = field(default=None, init=False, repr=False)

    def send_rate(self) -> ByteRate:
        """The per-token send rate by bytes (settings.send_bytes_per_minute), made on first use."""
        if self._send_rate is None:
            with _MAKING:
                if self._send_rate is None:
                    self._send_rate = ByteRate(self.settings.send_bytes_per_minute)
        return self._send_rate
    _guard: StreamGuard | None = field(default=None, init=False, repr=False)
    # Webhooks (service/webhooks.py): the enabled webhooks' filters by network, read once and dropped on every
    # change (record_event consults it for each event: a dict lookup when a network has none); the webhooks with
    # new outbox rows since the delivery worker last looked, and the event that wakes it (set by publish).
    _webhook_filters: dict[str, list[tuple[str, frozenset[str], frozenset[str]]]] | None = \
        field(default=None, init=False, repr=False)
    webhooks_due: set[str] = field(default_factory=set, init=False, repr=False)
    webhook_wakeup: trio.Event = field(default_factory=trio.Event, init=False, repr=False)

    def webhook_filters(self) -> dict[str, list[tuple[str, frozenset[str], frozenset[str]]]]:
        """The enabled webhooks by network: (id, event names, aliases), an empty set matching every one."""
        if self._webhook_filters is None:
            filters: dict[str, list[tuple[str, frozenset[str], frozenset[str]]]] = {}
            for row in webhook_store.enabled_filters(self.db):
                filters.setdefault(row["network_id"], []).append(
                    (row["webhook_id"], frozenset(json.loads(row["events"])), frozenset(json.loads(row["aliases"]))))
            self._webhook_filters = filters
        return self._webhook_filters

    def webhooks_changed(self, *, here_only: bool = False) -> None:
        """Forget the webhook filters (a webhook was added, changed, disabled or deleted); on PostgreSQL every other
        process forgets them too (service/fanout.py), unless `here_only` (it is one of them)."""
        self._webhook_filters = None
        if self.fanout is not None and not here_only:
            self.fanout.changed(WEBHOOKS_CACHE)

    def wake_webhooks(self, *webhook_ids: str) -> None:
        """Tell the delivery worker that these webhooks have something to send."""
        if in_hop():  # a trio.Event is set on the loop only (PostgreSQL runs operations in worker threads)
            on_loop(self.wake_webhooks, *webhook_ids)
            return
        self.webhooks_due.update(webhook_ids)
        self.webhook_wakeup.set()
    # Schedules (service/schedules.py): the event the scheduler sleeps on until its next run, set on every change.
    schedule_wakeup: trio.Event = field(default_factory=trio.Event, init=False, repr=False)

    def schedules_changed(self) -> None:
        """Wake the scheduler: a schedule was created, paused, resumed, run or deleted (its next run may differ)."""
        on_loop(self.schedule_wakeup.set)  # from a worker thread (PostgreSQL's Database.run): on the loop after it
    # The A2A client (commhub_lib/bridge/, docs/a2a-client.md): the aliases bound to external A2A agents, read once
    # and dropped on every change (record_event consults it for each event: one set lookup); the tasks with bridge
    # work since the bridge job last looked, and the event that wakes it (set by publish).
    _a2a_bound: frozenset[tuple[str, str]] | None = field(default=None, init=False, repr=False)
    bridge_due: set[str] = field(default_factory=set, init=False, repr=False)
    bridge_wakeup: trio.Event = field(default_factory=trio.Event, init=False, repr=False)

    def _bound(self) -> frozenset[tuple[str, str]]:
        """The bound (enabled) aliases as (network_id, alias), read once until a binding changes."""
        if self._a2a_bound is None:
            self._a2a_bound = frozenset((r["network_id"], r["alias"]) for r in bridge_store.enabled_remotes(self.db))
        return self._a2a_bound

    def a2a_bound(self, network_id: str, alias: str) -> bool:
        """Whether the alias is bound (enabled) to an external A2A agent: its tasks are forwarded there."""
        return (network_id, alias) in self._bound()

    def a2a_bound_in(self, network_ids: list[str]) -> set[tuple[str, str]]:
        """The bound (enabled) aliases of these networks, as (network_id, alias)."""
        wanted = set(network_ids)
        return {key for key in self._bound() if key[0] in wanted}

    def a2a_bindings_changed(self, *, here_only: bool = False) -> None:
        """Forget the bound aliases (one was bound, changed or unbound); on PostgreSQL every other process forgets
        them too (service/fanout.py), unless `here_only` (it is one of them)."""
        self._a2a_bound = None
        if self.fanout is not None and not here_only:
            self.fanout.changed(A2A_CACHE)
    # The loop guard's pair buckets (service/loopguard.guard_of types it; `object` here: hub.py imports no service).
    loop_guard: object = field(default=None, init=False, repr=False, compare=False)

    def guard(self) -> StreamGuard:
        """The grants of the open streams and long-polls, re-checked on their heartbeats (made on first use)."""
        if self._guard is None:
            with _MAKING:
                if self._guard is None:
                    self._guard = StreamGuard(self.db, self.settings.heartbeat_seconds)
        return self._guard

    def hold_grant(self, principal: Principal, network_id: str) -> AbstractContextManager[Grant]:
        """A stream's grant for the duration of the block (service/guard.py)."""
        return self.guard().hold(principal.token_id, principal.user_id, network_id, principal.expires_at)

    def live_tokens(self) -> token_store.LiveTokenCache:
        """The cache of live tokens and their users that authentication reads (made on first use)."""
        if self._live_tokens is None:
            with _MAKING:
                if self._live_tokens is None:
                    self._live_tokens = token_store.LiveTokenCache(self.db)
        return self._live_tokens

    def audit(self, action: str, *, actor: str, user_id: str | None = None, network_id: str | None = None,
              detail: dict[str, Any] | str = "", ip: str | None = None) -> None:
        """Append an audit entry (call inside db.write())."""
        text = detail if isinstance(detail, str) else json.dumps(detail, ensure_ascii=False, sort_keys=True)
        audit_store.insert_entry(self.db, network_id, user_id, actor, action, text, ip, now_text())

    def record_event(self, pending: list[Event], network_id: str, alias: str, name: str,
                     data: dict[str, Any], shared: SharedText | None = None) -> None:
        """Write an SSE event durably (inside db.write()) and queue it for `publish` after commit. With `shared`,
        data["content"] is that stored body: the row keeps a reference, not a copy (a broadcast's thousand
        events hold its text once)."""
        if shared is None:
            text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
            event_id = event_store.insert_event(self.db, network_id, alias, name, text, now_text())
        else:
            stored = json.dumps({**data, "content": ""}, ensure_ascii=False, separators=(",", ":"))
            event_id = event_store.insert_event(self.db, network_id, alias, name, stored, now_text(), shared.body_id)
            text = event_store.with_text(stored, shared.quoted)
        if self.db.off_loop:  # PostgreSQL: pushed as the transaction commits, in commit order (see _push_committed)
            self.db.after_commit(id(pending), self._push_committed, pending, len(pending))  # type: ignore[attr-defined]
        pending.append(Event(event_id, network_id, alias, name, text))
        if self.fanout is not None:  # PostgreSQL: the commit NOTIFYs the other processes of this id
            self.fanout.recorded(event_id)
        if alias and self.a2a_bound(network_id, alias):
            self._queue_for_bridge(network_id, alias, name, data)
        hooks = self.webhook_filters().get(network_id)
        if hooks:  # the durable outbox: written in this same transaction, so an event is never lost to a webhook
            self._queue_for_webhooks(hooks, event_id, network_id, alias, name, text)

    def _queue_for_webhooks(self, hooks: list[tuple[str, frozenset[str], frozenset[str]]], event_id: int,
                            network_id: str, alias: str, name: str, text: str) -> None:
        payload = None
        for webhook_id, events, aliases in hooks:
            if (events and name not in events) or (aliases and alias not in aliases):
                continue
            if payload is None:  # what the receiver gets: the event's id (for dedup), name, alias and data
                now = now_text()
                payload = (f'{{"id":{event_id},"event":{json.dumps(name)},"network_id":{json.dumps(network_id)},'
                           f'"alias":{json.dumps(alias, ensure_ascii=False)},"created_at":"{now}","data":{text}}}')
            webhook_store.insert_delivery(self.db, webhook_id, event_id, name, alias, payload, now_text())
            on_loop(self.webhooks_due.add, webhook_id)  # the worker reads the set on the loop

    def _queue_for_bridge(self, network_id: str, alias: str, name: str, data: dict[str, Any]) -> None:
        """The bridge's durable outbox (docs/a2a-client.md): what an alias bound to an A2A agent must tell that agent,
        written in the event's own transaction: a new task, the sender's answer to its question, a cancel notice."""
        task_id = data.get("task_id")
        if not task_id:
            return
        if name == NEW_TASK:
            kind, message_id = FORWARD_TASK, None
        elif name == NEW_REPLY and data.get("status") == ANSWER:
            kind, message_id = FORWARD_ANSWER, data.get("message_id")
        elif name == NEW_MESSAGE:  # the one new_message with a task_id: the cancel notice (tasks.cancel_task)
            kind, message_id = FORWARD_CANCEL, None
        else:
            return
        bridge_store.insert_outbox(self.db, network_id, alias, kind, task_id, message_id, now_text())
        on_loop(self.bridge_due.add, task_id)  # the bridge job reads the set on the loop

    def _push_committed(self, pending: list[Event], start: int) -> None:
        """PostgreSQL (db_pg): the events this transaction recorded, from `start` in its pending list, are pushed by
        the loop in commit order (queued under db_pg's commit lock), whichever thread
        committed; `publish` then only wakes the workers. Concurrent operations would otherwise push in the order
        their threads return, and a stream skips an id below one it already sent."""
        self.db.push_to_loop(self._push, pending[start:])  # type: ignore[attr-defined]

    def _push(self, events: list[Event]) -> None:
        if self.fanout is not None:  # PostgreSQL: in id order with other processes' events, once (service/fanout)
            self.fanout.push_own(events)
            return
        for event in events:
            self.broker.publish(event)

    def publish(self, pending: list[Event]) -> None:
        """Push committed events to live subscribers (never before the transaction commits). Called in an operation
        run off the loop (PostgreSQL), it pushes them on the loop right after that operation returns, in order:
        trio's channels and events are not safe from another thread."""
        if in_hop():
            on_loop(self.publish, pending)
            return
        if not self.db.off_loop:  # (PostgreSQL pushed them as they committed: _push_committed)
            for event in pending:
                self.broker.publish(event)
        if self.webhooks_due:
            self.webhook_wakeup.set()
        if self.bridge_due:
            self.bridge_wakeup.set()


def clamp_limit(limit: int | None, default: int = 50, maximum: int = 500) -> int:
    """A list limit between 1 and the cap."""
    if limit is None:
        return default
    if limit < 1:
        raise ValidationFailed("limit: must be at least 1")
    return min(limit, maximum)


def require_user_token(principal: Principal) -> None:
    """Account management needs a person's token, not an agent's."""
    if principal.kind != "user":
        raise Forbidden("this endpoint needs a user token (utok_), not a network token", code="user_token_required")
