"""`subscriptions/listen` (MCP 2026-07-28): the push stream of a session-less client, as the `GET /mcp` stream
is a session's.

The response to the listen POST is the stream (mcp/channel.ListenWire): its acknowledgement first, then every
hub event for the alias the token speaks for as `notifications/claude/channel`, with the same event ids,
`Last-Event-ID` replay (header or `?last_event_id=`), heartbeats and presence as `GET /mcp`. The channel
notifications ride it when the client asks for them: the filter key `"claude/channel": true`, or the
`claude/channel` extension declared in its capabilities. A listen that asks for nothing the hub carries is
acknowledged with an empty filter and ended at once with its result.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

from ..service.hub import Hub, Principal
from . import modern, push
from .channel import ListenWire
from .tools import McpSession


def open_listen(h: Hub, principal: Principal, network_id: str, request_id: str | int, envelope: modern.Envelope,
                requested: Any, after: int | None, client_ip: str) -> AsyncIterator[bytes]:
    """The listen stream for this request (push.open_stream takes its stream slot: 429 past the caps)."""
    if not modern.wants_channel(envelope.capabilities, requested):
        return _nothing_to_carry(ListenWire(request_id, {}), request_id)
    session = McpSession(push.listen_key(principal.token_id), principal.token_id, envelope.version,
                         client=envelope.client_name)
    # Its own principal: the stream refreshes the token's last claim on it as the token claims other aliases.
    own = dataclasses.replace(principal)
    return push.open_stream(h, own, network_id, session, after, client_ip,
                            listen=ListenWire(request_id, {modern.CHANNEL: True}))


async def _nothing_to_carry(wire: ListenWire, request_id: str | int) -> AsyncIterator[bytes]:
    yield wire.acknowledgement()
    yield wire.result(request_id)
