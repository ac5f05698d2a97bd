"""GET /events/<alias>: authenticate, subscribe, replay since Last-Event-ID, then stream live events.

Order matters (as in ntfy): subscribe first, then replay from the database, then go live, skipping live
events already replayed; so nothing committed while connecting is lost or sent twice.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import trio
from quart import Blueprint, make_response, request

from . import events
from .api.common import authenticate, hub
from .errors import Forbidden, NotFound, ValidationFailed
from .ids import now_text, now_ts
from .models import ALIAS_RE, ALIAS_RULE
from .service import networks, sessions
from .service.hub import Hub, Principal
from .store import events as event_store
from .store import sessions as session_store

bp = Blueprint("sse", __name__)
log = logging.getLogger("commhub.sse")
REPLAY_BATCH = 500


def _last_event_id() -> int:
    raw = request.headers.get("Last-Event-ID") or request.args.get("last_event_id") or ""
    if not raw.strip():
        return 0
    try:
        value = int(raw.strip())
    except ValueError as exc:
        raise ValidationFailed("Last-Event-ID: must be the integer id of an event") from exc
    if value < 0:
        raise ValidationFailed("Last-Event-ID: must not be negative")
    return value


def _open(h: Hub, principal: Principal, alias: str) -> str:
    """Check the caller may listen as `alias`; an agent token claims it (the stream keeps it online).
    A network the caller may not read is 403 here (SPEC §5), where the data endpoints hide it as 404."""
    try:
        # An explicit ?network_id= must be the token's own network (as on the data endpoints), never ignored;
        # a person (dashboard, `commhub tail`) watches an alias of a network they belong to.
        network_id = networks.single_network(h, principal, request.args.get("network_id") or None)
    except NotFound as exc:
        raise Forbidden(f"{exc.message}: this token cannot listen in that network", code="wrong_network") from exc
    if principal.kind == "network":
        with h.db.write():
            sessions.claim(h, principal, network_id, alias)
    return network_id


@bp.get("/events/<alias>")
async def stream(alias: str):  # noqa: ANN201 - a streaming Response
    """Server-Sent Events for one alias."""
    if not ALIAS_RE.match(alias):
        raise ValidationFailed(f"alias: {ALIAS_RULE}")
    principal = authenticate()
    after = _last_event_id()
    h = hub()
    network_id = _open(h, principal, alias)
    is_agent = principal.kind == "network"

    async def generate() -> AsyncIterator[bytes]:
        reason = "closed"
        with h.broker.subscribe(network_id, alias, counts_for_presence=is_agent, token_id=principal.token_id) as sub:
            try:
                yield events.preamble()
                last = after
                if after:
                    while rows := event_store.events_after(h.db, network_id, alias, last, REPLAY_BATCH):
                        for row in rows:
                            yield events.encode_row(row)
                        last = rows[-1]["id"]
                        if len(rows) < REPLAY_BATCH:
                            break
                # Each stream keeps its own heartbeat deadline, so heartbeats are spread by connect time: one
                # ticker waking every stream at once stalled the loop ~100 ms per beat at 1,000 streams.
                beat = h.settings.heartbeat_seconds
                next_beat = trio.current_time() + beat
                while True:
                    event = None
                    with trio.move_on_at(next_beat):  # receive inside the scope, yield outside it
                        try:
                            event = await sub.receive.receive()
                        except (trio.EndOfChannel, trio.ClosedResourceError):
                            break
                    if event is None:
                        next_beat += beat
                        if next_beat <= trio.current_time():  # fell behind (a slow write): no catch-up burst
                            next_beat = trio.current_time() + beat
                        yield events.encode(events.heartbeat())
                    elif not event.id or event.id > last:  # skip what the replay already sent
                        yield events.encode(event)
                        last = event.id or last
                reason = sub.closed_reason or "closed"
                yield events.comment(f"stream closed: {reason}; reconnect with Last-Event-ID: {last}")
            finally:
                if is_agent:
                    with h.db.write():  # the stream was a sign of life until now
                        session_store.touch_session(h.db, network_id, alias, now_text(), now_ts())
                log.info("sse %s/%s closed (%s)", network_id, alias, reason)

    response = await make_response(generate(), 200, {
        "Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    response.timeout = None  # Quart's RESPONSE_TIMEOUT would otherwise cut every stream
    return response
