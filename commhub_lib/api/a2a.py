"""Routes: an alias served as an A2A agent: its opt-in (PUT/GET /api/networks/<id>/aliases/<alias>/a2a) and its Agent
Card (GET /a2a/<network_id>/<alias>/.well-known/agent-card.json). The JSON-RPC endpoint is a2a/protocol.py."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ..a2a.card import agent_card, wants_v1
from ..http.request import authenticate, bearer, client_ip, header, hub, parse, query_arg, request_host
from ..models import A2AAgentRequest
from ..service import a2a
from .oauth import public_url
from .records import Ok, Record


class A2AAgentSetting(Ok):
    """Whether an alias is served as an A2A agent, and where."""

    network_id: str
    alias: str
    enabled: bool
    description: str = Field(description="shown in the Agent Card")
    updated_by: str | None = Field(description="the username who last changed it (null: never set)")
    updated_at: str | None
    agent_card_path: str = Field(description="GET it (no token) for the Agent Card, while enabled")
    endpoint_path: str = Field(description="the A2A JSON-RPC endpoint (POST, a network token of the network)")


class AgentCard(Record):
    """An A2A Agent Card (A2A 1.0 ProtoJSON; without `A2A-Version: 1.0` also the 0.3 fields)."""

    name: str
    description: str
    supportedInterfaces: list[dict[str, Any]]
    version: str
    capabilities: dict[str, Any]
    skills: list[dict[str, Any]]
    securitySchemes: dict[str, Any]


async def put_a2a(network_id: str, alias: str) -> dict:
    """Serve an alias as an A2A agent, or stop (owner/admin of the network)."""
    principal = authenticate()
    body = await parse(A2AAgentRequest)
    return a2a.set_agent(hub(), principal, network_id, alias, body.enabled, body.description, client_ip())


async def get_a2a(network_id: str, alias: str) -> dict:
    """Whether an alias is served as an A2A agent, and its card's description (members of the network)."""
    return a2a.get_agent(hub(), authenticate(), network_id, alias)


# A2A asks cards to be cacheable; a minute keeps a changed description or report_status visible soon enough. The
# card differs by A2A-Version (1.0 or the 0.3-compatible form), so caches must key on it; the card a member's token
# gets (with what the agent is working on) is for that caller only.
CARD_HEADERS = {"Cache-Control": "public, max-age=60", "Vary": "A2A-Version, Authorization"}
MEMBER_CARD_HEADERS = {"Cache-Control": "private, max-age=60", "Vary": "A2A-Version, Authorization"}


async def card(network_id: str, alias: str) -> tuple[dict[str, Any], int, dict[str, str]]:
    """The Agent Card of an alias served as an A2A agent (no authentication needed: the card tells how to
    authenticate); 404 unless it was opted in. With a token of the network, the skill also says what the agent is
    working on now (its report_status task), which the public card leaves out."""
    h = hub()
    agent = a2a.served(h, network_id, alias)
    version = header("A2A-Version") or query_arg("A2A-Version")
    live = bool(bearer()) and a2a.may_see_live(h, authenticate(), network_id)
    return (agent_card(agent, public_url(h.settings, *request_host()), wants_v1(version), live), 200,
            MEMBER_CARD_HEADERS if live else CARD_HEADERS)
