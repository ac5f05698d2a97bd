"""Per-MCP-session push state: the session's `GET /mcp` streams and its in-flight requests.

- The stream follows the alias the session speaks for (the token's bound alias, else the alias claimed with
  report_status on this session, else the alias the token last claimed). Until one is known it waits with
  heartbeats; when report_status claims another alias, the stream moves to it.
- A request that may wait (the get_inbox long-poll) runs in a cancel scope registered under its JSON-RPC id,
  so a `notifications/cancelled` for that id, arriving on another POST, ends it at once.
- MCP 2026-07-28 has no sessions: its `subscriptions/listen` streams (mcp/listen.py) are kept under their
  token (`listen_key`) and follow the alias the token is bound to, else the one it last claimed; any claim the
  token makes (on a session or not) moves them.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import trio

from ..broker import SHUTDOWN
from ..errors import CommhubError
from ..service import sessions, shared
from ..service.hub import Hub, Principal
from ..store import events as event_store
from ..store import tokens as token_store
from ..stream import Progress, Scope, follow, slot_released, take_stream_slot
from ..vocabulary import CHANNEL
from .channel import ListenWire, McpWire
from .sessions import ENDED, SessionPush, pool_of
from .tools import McpSession

log = logging.getLogger("commhub.mcp")
ALIAS_CHANGED = "alias_changed"
LISTEN_PREFIX = "listen:"  # the push state of a token's 2026-07-28 listen streams is kept under this + token id


def _registry(h: Hub) -> dict[str, SessionPush]:
    return pool_of(h).push


@contextmanager
def _entry(session_id: str, registry: dict[str, SessionPush]) -> Iterator[SessionPush]:
    """The session's push state for the block; dropped when nothing uses it any more."""
    state = registry.setdefault(session_id, SessionPush())
    try:
        yield state
    finally:
        if state.idle and registry.get(session_id) is state:
            del registry[session_id]


def _request_key(request_id: Any) -> tuple[str, Any] | None:
    if isinstance(request_id, bool) or not isinstance(request_id, str | int):
        return None
    return (type(request_id).__name__, request_id)


@contextmanager
def cancellable(h: Hub, session: McpSession, request_id: Any) -> Iterator[trio.CancelScope]:
    """Run a request in a cancel scope that `notifications/cancelled` for its id can cancel."""
    key = _request_key(request_id)
    scope = trio.CancelScope()
    if session.session_id is None or key is None:
        with scope:
            yield scope
        return
    with _entry(session.session_id, _registry(h)) as state:
        state.inflight[key] = scope
        try:
            with scope:
                yield scope
        finally:
            if state.inflight.get(key) is scope:
                del state.inflight[key]


def cancel_request(h: Hub, session: McpSession, request_id: Any) -> bool:
    """Cancel the session's in-flight request with this id (a `notifications/cancelled`); True if one was."""
    key = _request_key(request_id)
    state = _registry(h).get(session.session_id or "")
    scope = state.inflight.get(key) if state is not None and key is not None else None
    if scope is None:
        return False
    scope.cancel()
    return True


def listen_key(token_id: str) -> str:
    """The key of a token's listen streams in the push registry."""
    return LISTEN_PREFIX + token_id


def alias_changed(h: Hub, session: McpSession) -> None:
    """The session claimed another alias: its streams, and the token's listen streams (which follow the token's
    last claim), move to it (call right after the claim, before any await)."""
    registry = _registry(h)
    for key in (session.session_id, listen_key(session.token_id)):
        state = registry.get(key) if key else None
        if state is None:
            continue
        if session.alias is not None:
            # Any event after the hub's newest id at this moment is one the stream must carry.
            state.claimed_at = (session.alias, event_store.highest_event_id_ever(h.db))
        for sub in list(state.streams):
            if sub.alias != session.alias:
                sub.close(ALIAS_CHANGED)
        state.changed.set()
        state.changed = trio.Event()


def end_session(h: Hub, session_id: str, reason: str = ENDED) -> None:
    """The session was deleted (or evicted): remember that it ended, and end its streams and waiting requests."""
    pool_of(h).end(session_id, reason)
    end_push(h, session_id, reason)


def end_push(h: Hub, session_id: str, reason: str) -> None:
    """End a session's streams and waiting requests (it ended, or a cap evicted it)."""
    state = _registry(h).get(session_id)
    if state is None:
        return
    for sub in list(state.streams):
        sub.close(reason)
    for scope in list(state.inflight.values()):
        scope.cancel()
    state.changed.set()


def push_alias(h: Hub, principal: Principal, network_id: str, session: McpSession) -> str | None:
    """The alias whose events the session's stream carries, claimed for this token; None until one is known."""
    if _is_listen(session) and not principal.bound_alias:
        # A listen stream's principal is its own copy: the token's last claim as it stands now.
        token = token_store.get_token(h.db, principal.token_id)
        principal.last_alias = token["last_alias"] if token is not None else None
    if session.alias is None and session.session_id and h.shared is not None:
        # PostgreSQL: the session may have claimed its alias through another process since this stream opened.
        row = shared.mcp_session(h, session.session_id)
        if row is not None and row["token_id"] == session.token_id and not row["ended"]:
            session.alias = row["alias"]
    alias = principal.bound_alias or session.alias or principal.last_alias
    if alias is None:
        return None
    try:
        sessions.claim_for_stream(h, principal, network_id, alias)
    except CommhubError:
        return None  # held by another token now (or the disk refused): wait for report_status to claim one
    return alias


async def _either(*events: trio.Event) -> None:
    """Wait until one of the events is set."""
    async with trio.open_nursery() as nursery:
        async def wait_for(event: trio.Event) -> None:
            await event.wait()
            nursery.cancel_scope.cancel()
        for event in events:
            nursery.start_soon(wait_for, event)


def _claimed_position(state: SessionPush, alias: str) -> int | None:
    """Where a stream that moves to `alias` starts: just before the session claimed it, if it just did."""
    if state.claimed_at is not None and state.claimed_at[0] == alias:
        return state.claimed_at[1]
    return None


def _is_listen(session: McpSession) -> bool:
    return bool(session.session_id and session.session_id.startswith(LISTEN_PREFIX))


def _alive(h: Hub, session_id: str) -> bool:
    """Whether the stream's session still exists (a token's listen streams have none to end)."""
    return session_id in pool_of(h) or session_id.startswith(LISTEN_PREFIX)


def open_stream(h: Hub, principal: Principal, network_id: str, session: McpSession, after: int | None,
                client_ip: str, listen: ListenWire | None = None) -> AsyncIterator[bytes]:
    """The session's server-to-client SSE stream of `notifications/claude/channel` messages (429 at once past the
    stream caps); with `listen`, a token's 2026-07-28 `subscriptions/listen` stream (its session is the token's
    listen key, mcp/listen.py). It ends when the session ends, the server stops, or its grant is taken away
    (service/guard.py: the member removed, the token revoked or expired)."""
    assert session.session_id is not None
    session_id = session.session_id
    wire = listen or McpWire(session.protocol_version)
    registry = _registry(h)
    guard = h.guard()

    async def generate() -> AsyncIterator[bytes]:
        progress = Progress()
        resume_after = after
        with slot_released(slot), h.hold_grant(principal, network_id) as grant, \
                _entry(session_id, registry) as state:
            try:
                alias = push_alias(h, principal, network_id, session)
                if alias is None:
                    yield wire.waiting()
                while True:
                    while alias is None:
                        state.waiting += 1
                        try:
                            with trio.move_on_after(h.settings.heartbeat_seconds):
                                await _either(state.changed, h.broker.stopping, grant.ended)
                        finally:
                            state.waiting -= 1
                        if not _alive(h, session_id) or h.broker.closing:
                            progress.reason = SHUTDOWN if h.broker.closing else "session_ended"
                            break
                        if not guard.allowed(grant):
                            progress.reason = grant.reason
                            break
                        alias = push_alias(h, principal, network_id, session)
                        if alias is None:
                            yield wire.heartbeat()
                        else:
                            resume_after = _claimed_position(state, alias)
                    if alias is None:
                        break
                    progress.reason = "closed"
                    with h.broker.subscribe(network_id, alias, holds=CHANNEL,
                                            token_id=principal.token_id) as sub:
                        state.streams.add(sub)
                        grant.subscriber = sub
                        try:
                            async for chunk in follow(h.db, sub, Scope(network_id, alias), resume_after, wire,
                                                      h.settings.heartbeat_seconds, progress,
                                                      lambda: guard.allowed(grant)):
                                yield chunk
                        finally:
                            state.streams.discard(sub)
                            grant.subscriber = None
                            # Seen until now, and offline from now unless something else holds it (a health
                            # check's GET /mcp leaves nothing online). At shutdown the server stores presence once
                            # for every streaming alias (ServerHandle.shutdown).
                            if progress.reason != SHUTDOWN:
                                sessions.stream_closed(h, sub)
                    if progress.reason != ALIAS_CHANGED:
                        break
                    alias = push_alias(h, principal, network_id, session)
                    resume_after = _claimed_position(state, alias) if alias else None
            finally:
                if progress.reason != SHUTDOWN:  # at shutdown one line counts them all
                    log.info("mcp stream %s closed (%s)", session_id[:12], progress.reason)

    body = generate()
    # Counted now, with the caps check, before anything can await: a burst of opens cannot overshoot the caps.
    slot = take_stream_slot(h.broker, h.settings, principal.token_id, client_ip, body,
                            kind="listen" if listen is not None else "mcp")
    return body
