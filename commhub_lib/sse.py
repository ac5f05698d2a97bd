"""GET /events/<alias> (one alias) and GET /events?network_id= (every alias of a network, for people).

Authentication, the alias claim and the caps live here; the stream itself (position, replay since
Last-Event-ID, live events, heartbeats) is the shared loop of stream.py, written in plain SSE.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from . import events
from .broker import SHUTDOWN
from .db import on_loop
from .errors import Forbidden, NotFound, ValidationFailed
from .http.asgi import RouteContext
from .http.auth import authenticate_token
from .http.request import AsgiRequest, StreamRequest
from .models import ALIAS_RE, ALIAS_RULE
from .service import networks, sessions
from .service.hub import Hub, Principal
from .stream import Progress, Scope, follow, parse_last_event_id, take_stream_slot
from .vocabulary import EVENTS_HOLDERS, RUNNER, STREAM, StreamHolder

log = logging.getLogger("commhub.sse")


class SseWire:
    """Plain SSE: `event:` names and JSON `data:`; on the network stream each event's data names its alias."""

    def __init__(self, name_alias: bool):
        self.name_alias = name_alias

    def opening(self, position: int) -> bytes:
        """retry hint and position."""
        return events.preamble(position)

    def event(self, event_id: int, alias: str, name: str, data: str, at: str | None = None) -> bytes:
        """One event frame (a replayed one says when it happened, in a comment line: docs/events.md)."""
        return events.frame(event_id, name, events.with_alias(data, alias) if self.name_alias else data, at)

    def heartbeat(self) -> bytes:
        """The reference's heartbeat event (no id)."""
        return events.heartbeat_frame()

    def closing(self, reason: str, last: int) -> bytes:
        """A comment naming the id to resume from."""
        return events.comment(f"stream closed: {reason}; reconnect with Last-Event-ID: {last}")


def last_event_id(h: Hub, req: AsgiRequest) -> int | None:
    """The request's Last-Event-ID header (or ?last_event_id=), checked; None when absent."""
    raw = req.headers.get("last-event-id")
    if raw is None or not raw.strip():
        raw = req.arg("last_event_id")
    return parse_last_event_id(raw, h.db)


def _readable_network(h: Hub, principal: Principal, req: AsgiRequest) -> str:
    """The network named by ?network_id= (or the caller's only one); one the caller may not read is 403 here
    (docs/events.md#the-network-stream), where the data endpoints hide it as 404."""
    try:
        # An explicit ?network_id= must be the token's own network (as on the data endpoints), never ignored;
        # a person (dashboard, `commhub tail`) watches an alias of a network they belong to.
        return networks.single_network(h, principal, req.arg("network_id") or None)
    except NotFound as exc:
        raise Forbidden(f"{exc.message}: this token cannot listen in that network", code="wrong_network") from exc


def _holder(req: AsgiRequest) -> StreamHolder:
    """What the stream makes of its alias while it lives: `?holder=runner` from `commhub run` (a process that turns
    each event into a turn of its agent), else a plain SSE stream (docs/presence.md)."""
    holder = req.arg("holder") or STREAM
    if holder not in EVENTS_HOLDERS:
        raise ValidationFailed(f"holder: '{RUNNER}' (a runner holds this stream, `commhub run`), '{STREAM}' or absent")
    return RUNNER if holder == RUNNER else STREAM


def alias_stream(ctx: RouteContext, req: StreamRequest, alias: str) -> AsyncIterator[bytes]:
    """GET /events/<alias>: Server-Sent Events for one alias; an agent token claims it (the stream keeps it
    online, held by `stream`, or by `runner` with ?holder=runner). Everything that can refuse the stream is checked
    before it returns."""
    if not ALIAS_RE.match(alias):
        raise ValidationFailed(f"alias: {ALIAS_RULE}")
    h = ctx.hub
    holder = _holder(req)
    principal = authenticate_token(h, ctx.token_limiter, req.bearer())
    after = last_event_id(h, req)
    network_id = _readable_network(h, principal, req)
    ip = req.client_ip
    is_agent = principal.kind == "network"
    guard = h.guard()

    async def generate() -> AsyncIterator[bytes]:
        progress = Progress()
        try:
            with h.hold_grant(principal, network_id) as grant, \
                    h.broker.subscribe(network_id, alias, holds=holder if is_agent else None,
                                       token_id=principal.token_id) as sub:
                grant.subscriber = sub
                try:
                    async for chunk in follow(h.db, sub, Scope(network_id, alias), after, SseWire(False),
                                              h.settings.heartbeat_seconds, progress, lambda: guard.allowed(grant)):
                        yield chunk
                finally:
                    # At shutdown every stream closes at once and the server stores presence and logs for all of
                    # them in one go (ServerHandle.shutdown): nothing per stream here.
                    if progress.reason != SHUTDOWN:
                        if is_agent:  # seen until now; offline from now unless something else holds it
                            sessions.stream_closed(h, sub)
                        log.info("sse %s/%s closed (%s)", network_id, alias, progress.reason)
        finally:
            slot.release()

    body = generate()
    # Counted now, with the caps check, before anything can await: a burst of opens cannot overshoot the caps.
    slot = take_stream_slot(h.broker, h.settings, principal.token_id, ip, body, kind="events")
    if is_agent:
        try:
            sessions.claim_for_stream(h, principal, network_id, alias)
        except BaseException:
            on_loop(slot.release)  # the broker's counts change on the loop only (this may run off it: PostgreSQL)
            raise
    return body


def network_stream(ctx: RouteContext, req: StreamRequest) -> AsyncIterator[bytes]:
    """GET /events?network_id=: every event of every alias of a network, for a person (user token); each event's
    data names its alias."""
    h = ctx.hub
    principal = authenticate_token(h, ctx.token_limiter, req.bearer())
    if principal.kind != "user":
        raise Forbidden("the network stream GET /events?network_id= needs a user token (utok_); an agent listens "
                        "to its own alias at GET /events/<alias>", code="user_token_required")
    after = last_event_id(h, req)
    network_id = _readable_network(h, principal, req)
    ip = req.client_ip
    guard = h.guard()

    async def generate() -> AsyncIterator[bytes]:
        progress = Progress()
        try:
            with h.hold_grant(principal, network_id) as grant, \
                    h.broker.subscribe(network_id, None, token_id=principal.token_id) as sub:
                grant.subscriber = sub
                try:
                    async for chunk in follow(h.db, sub, Scope(network_id, None), after, SseWire(True),
                                              h.settings.heartbeat_seconds, progress, lambda: guard.allowed(grant)):
                        yield chunk
                finally:
                    if progress.reason != SHUTDOWN:
                        log.info("sse %s (network) closed (%s)", network_id, progress.reason)
        finally:
            slot.release()

    body = generate()
    slot = take_stream_slot(h.broker, h.settings, principal.token_id, ip, body, kind="network")
    return body
