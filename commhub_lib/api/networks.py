"""Routes: /api/networks and members/invites."""

from __future__ import annotations

from ..http.request import authenticate, client_ip, hub, parse
from ..models import InviteCreateRequest, JoinRequest, MemberRoleRequest, NetworkCreateRequest, NetworkUpdateRequest
from ..service import networks, usage
from .accounts import NO_STORE
from .common import query_int


async def list_networks() -> dict:
    """Networks the caller belongs to."""
    return networks.list_networks(hub(), authenticate(), query_int("limit", None, 1), query_int("offset", 0) or 0)


async def create_network() -> dict:
    """Create a network owned by the caller."""
    principal = authenticate()
    return networks.create_network(hub(), principal, await parse(NetworkCreateRequest), client_ip())


async def join() -> dict:
    """Redeem an invite code."""
    principal = authenticate()
    return networks.join(hub(), principal, await parse(JoinRequest), client_ip())


async def get_network(network_id: str) -> dict:
    """One network."""
    return networks.get_network(hub(), authenticate(), network_id)


async def update_network(network_id: str) -> dict:
    """Update a network (owner)."""
    principal = authenticate()
    return networks.update_network(hub(), principal, network_id, await parse(NetworkUpdateRequest), client_ip())


async def delete_network(network_id: str) -> dict:
    """Delete a network (owner; 409 while sessions are online)."""
    return networks.delete_network(hub(), authenticate(), network_id, client_ip())


async def list_members(network_id: str) -> dict:
    """Members of a network."""
    return networks.list_members(hub(), authenticate(), network_id, query_int("limit", None, 1),
                                 query_int("offset", 0) or 0)


async def remove_member(network_id: str, user_id: str) -> dict:
    """Remove a member (owner/admin, or a member leaving); their tokens for the network are revoked."""
    return networks.remove_member(hub(), authenticate(), network_id, user_id, client_ip())


async def set_member_role(network_id: str, user_id: str) -> dict:
    """Change a member's role (owner only)."""
    principal = authenticate()
    body = await parse(MemberRoleRequest)
    return networks.set_member_role(hub(), principal, network_id, user_id, body.role, client_ip())


async def create_invite(network_id: str) -> tuple[dict, int, dict]:
    """Create an invite code (owner/admin); the code is shown once."""
    principal = authenticate()
    body = await parse(InviteCreateRequest)
    return networks.create_invite(hub(), principal, network_id, body, client_ip()), 200, NO_STORE


async def list_invites(network_id: str) -> dict:
    """Invites of a network (owner/admin), by invite_id, without codes."""
    return networks.list_invites(hub(), authenticate(), network_id, query_int("limit", None, 1),
                                 query_int("offset", 0) or 0)


async def revoke_invite(network_id: str, invite_id: str) -> dict:
    """Revoke an invite (owner/admin)."""
    return networks.revoke_invite(hub(), authenticate(), network_id, invite_id, client_ip())


async def release_alias(network_id: str, alias: str) -> dict:
    """Free an alias from the token holding it (owner/admin), so another token may claim it."""
    return networks.release_alias(hub(), authenticate(), network_id, alias, client_ip())


async def retire_alias(network_id: str, alias: str) -> dict:
    """Retire an alias for good (owner/admin): sends to it fail with alias_retired."""
    return networks.retire_alias(hub(), authenticate(), network_id, alias, client_ip())


async def network_usage(network_id: str) -> dict:
    """Bytes a network keeps against its storage quota (owner/admin, or the system admin)."""
    return usage.network_usage(hub(), authenticate(), network_id)
