"""Routes: /api/networks/<network_id>/aliases/<alias>/a2a-remote, an alias bound to an external A2A agent
(docs/a2a-client.md); with the request and answer models OpenAPI describes them by."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from ..http.request import authenticate, client_ip, hub, parse
from ..models import Body
from ..service import bridge
from .accounts import NO_STORE
from .records import Ok, Record


class A2ARemoteRequest(Body):
    """PUT …/aliases/:alias/a2a-remote: the agent's Agent Card URL (or its JSON-RPC URL) and bearer credential."""

    url: Annotated[str, Field(min_length=8, max_length=2000)]
    token: str | None = Field(default=None, max_length=4000,
                              description="sent as `Authorization: Bearer <token>`; never shown again; "
                                          "omit to keep the stored one")
    enabled: bool = True


class A2AOutboxRow(Record):
    """One thing the bridge told (or tries to tell) the remote agent."""

    outbox_id: int
    kind: str = Field(description="task, answer or cancel")
    task_id: str
    status: str = Field(description="pending, sent or failed (given up)")
    attempts: int
    last_error: str | None
    created_at: str
    updated_at: str


class A2ARemote(Ok):
    """An alias's binding to an external A2A agent (the token is never shown, only whether one is set)."""

    network_id: str
    alias: str
    url: str
    token_set: bool
    enabled: bool
    created_by: str
    created_at: str
    updated_at: str
    outbox: list[A2AOutboxRow]


class A2ARemoteDeleted(Ok):
    """An alias unbound."""

    network_id: str
    alias: str
    deleted: bool


async def put_remote(network_id: str, alias: str) -> tuple[dict, int, dict[str, str]]:
    """Bind an alias to an external A2A agent, or change the binding (owner/admin)."""
    principal = authenticate()
    req = await parse(A2ARemoteRequest)
    return bridge.bind_remote(hub(), principal, network_id, alias, req.url, req.token, req.enabled,
                              client_ip()), 200, NO_STORE


async def get_remote(network_id: str, alias: str) -> dict:
    """An alias's binding (owner/admin): URL, whether a token is set, its latest forwards."""
    return bridge.get_remote(hub(), authenticate(), network_id, alias)


async def delete_remote(network_id: str, alias: str) -> dict:
    """Unbind an alias (owner/admin)."""
    return bridge.unbind_remote(hub(), authenticate(), network_id, alias, client_ip())
