"""Routes: /api/networks and members/invites."""

from __future__ import annotations

from quart import Blueprint

from ..models import InviteCreateRequest, JoinRequest, NetworkCreateRequest, NetworkUpdateRequest
from ..service import networks
from .common import authenticate, client_ip, hub, parse, query_int

bp = Blueprint("networks", __name__)


@bp.get("/api/networks")
async def list_networks() -> dict:
    """Networks the caller belongs to."""
    return networks.list_networks(hub(), authenticate(), query_int("limit", None, 1), query_int("offset", 0) or 0)


@bp.post("/api/networks")
async def create_network() -> dict:
    """Create a network owned by the caller."""
    principal = authenticate()
    return networks.create_network(hub(), principal, await parse(NetworkCreateRequest), client_ip())


@bp.post("/api/networks/join")
async def join() -> dict:
    """Redeem an invite code."""
    principal = authenticate()
    return networks.join(hub(), principal, await parse(JoinRequest), client_ip())


@bp.get("/api/networks/<network_id>")
async def get_network(network_id: str) -> dict:
    """One network."""
    return networks.get_network(hub(), authenticate(), network_id)


@bp.put("/api/networks/<network_id>")
async def update_network(network_id: str) -> dict:
    """Update a network (owner)."""
    principal = authenticate()
    return networks.update_network(hub(), principal, network_id, await parse(NetworkUpdateRequest), client_ip())


@bp.delete("/api/networks/<network_id>")
async def delete_network(network_id: str) -> dict:
    """Delete a network (owner; 409 while sessions are online)."""
    return networks.delete_network(hub(), authenticate(), network_id, client_ip())


@bp.get("/api/networks/<network_id>/members")
async def list_members(network_id: str) -> dict:
    """Members of a network."""
    return networks.list_members(hub(), authenticate(), network_id, query_int("limit", None, 1),
                                 query_int("offset", 0) or 0)


@bp.post("/api/networks/<network_id>/invite")
async def create_invite(network_id: str) -> dict:
    """Create an invite code (owner/admin)."""
    principal = authenticate()
    return networks.create_invite(hub(), principal, network_id, await parse(InviteCreateRequest), client_ip())
