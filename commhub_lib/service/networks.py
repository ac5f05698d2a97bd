"""Networks, membership, invites, and who may see which network."""

from __future__ import annotations

from typing import Any

from .. import auth
from ..errors import Conflict, Forbidden, NotFound, ValidationFailed
from ..ids import new_id, now_text, now_ts, ts_text
from ..models import MAX_LIMIT, InviteCreateRequest, JoinRequest, NetworkCreateRequest, NetworkUpdateRequest
from ..store import audit as audit_store
from ..store import networks as network_store
from ..store import sessions as session_store
from . import quotas
from .hub import Hub, Principal, clamp_limit, require_user_token
from .sessions import is_online


def create_network_rows(hub: Hub, owner_id: str, name: str, description: str) -> str:
    """Insert a network with its owner as member (inside db.write()); returns its id."""
    if network_store.find_user_network_by_name(hub.db, owner_id, name):
        raise Conflict(f"you already own a network named '{name}'", code="network_exists")
    network_id = new_id("net")
    now = now_text()
    network_store.insert_network(hub.db, network_id, name, description, owner_id, now)
    network_store.insert_member(hub.db, network_id, owner_id, "owner", now)
    return network_id


def require_role(hub: Hub, principal: Principal, network_id: str, needed: str) -> str:
    """The caller's role in a network, or an error: 404 if not visible to them, 403 if too low."""
    if principal.kind == "network" and principal.network_id != network_id:
        raise NotFound(f"network '{network_id}' not found", code="network_not_found")
    role = network_store.get_member_role(hub.db, network_id, principal.user_id)
    if role is None:
        if principal.is_system_admin and network_store.get_network(hub.db, network_id):
            # The system admin may look after any network, but owner-only actions stay the owner's.
            if needed == "owner":
                raise Forbidden(f"only the owner of network '{network_id}' can do this", code="insufficient_role")
            return "admin"
        raise NotFound(f"network '{network_id}' not found", code="network_not_found")
    if not auth.role_at_least(role, needed):
        raise Forbidden(f"this needs the {needed} role in network '{network_id}' (you are {role})",
                        code="insufficient_role")
    return role


def scope(hub: Hub, principal: Principal, network_id: str | None) -> list[str]:
    """The networks a data query may read: a network token's own; a user's chosen one or all of theirs."""
    if principal.kind == "network":
        if network_id and network_id != principal.network_id:
            raise NotFound(f"network '{network_id}' not found", code="network_not_found")
        return [principal.network_id or ""]
    if network_id:
        require_role(hub, principal, network_id, "member")
        return [network_id]
    return network_store.list_network_ids_of_user(hub.db, principal.user_id)


def single_network(hub: Hub, principal: Principal, network_id: str | None) -> str:
    """The one network an action happens in: a network token's, or the user's chosen/default network."""
    if principal.kind == "network":
        return scope(hub, principal, network_id)[0]
    if network_id:
        require_role(hub, principal, network_id, "member")
        return network_id
    default = network_store.default_network_of_user(hub.db, principal.user_id)
    if default is None:
        raise ValidationFailed("network_id: required (you belong to no network)")
    return default["network_id"]


def list_networks(hub: Hub, principal: Principal, limit: int | None = None, offset: int = 0) -> dict[str, Any]:
    """The networks the caller belongs to (a network token: its own), a page of up to 500."""
    rows = network_store.list_networks_of_user(hub.db, principal.user_id)
    if principal.kind == "network":
        rows = [r for r in rows if r["network_id"] == principal.network_id]
    return {"ok": True, "networks": rows[offset:offset + clamp_limit(limit, MAX_LIMIT)]}


def create_network(hub: Hub, principal: Principal, body: NetworkCreateRequest, ip: str | None) -> dict[str, Any]:
    """Create a network owned by the caller."""
    require_user_token(principal)
    with hub.db.write():
        quotas.check_new_network(hub, principal.user_id)
        network_id = create_network_rows(hub, principal.user_id, body.name, body.description)
        hub.audit("network_create", actor=principal.label, user_id=principal.user_id, network_id=network_id,
                  detail={"name": body.name}, ip=ip)
    return {"ok": True, "network_id": network_id, "network_name": body.name}


def get_network(hub: Hub, principal: Principal, network_id: str) -> dict[str, Any]:
    """One network with the caller's role and its member count."""
    role = require_role(hub, principal, network_id, "member")
    row = network_store.get_network(hub.db, network_id)
    assert row is not None
    row["member_role"] = role
    row["member_count"] = network_store.count_members(hub.db, network_id)
    return {"ok": True, "network": row}


def update_network(hub: Hub, principal: Principal, network_id: str, body: NetworkUpdateRequest,
                   ip: str | None) -> dict[str, Any]:
    """Rename or reconfigure a network (owner only)."""
    require_user_token(principal)
    require_role(hub, principal, network_id, "owner")
    name = body.network_name or body.name
    changes = body.model_dump(exclude_none=True)
    if not changes:
        raise ValidationFailed("body: give at least one of network_name, description, visibility, max_members")
    with hub.db.write():
        if name:
            current = network_store.get_network(hub.db, network_id)
            if current and current["network_name"] != name and network_store.find_user_network_by_name(
                    hub.db, current["owner_id"], name):
                raise Conflict(f"the owner already has a network named '{name}'", code="network_exists")
        network_store.update_network(hub.db, network_id, name, body.description, body.visibility,
                                     body.max_members, now_text())
        hub.audit("network_update", actor=principal.label, user_id=principal.user_id, network_id=network_id,
                  detail=changes, ip=ip)
    return get_network(hub, principal, network_id)


def delete_network(hub: Hub, principal: Principal, network_id: str, ip: str | None) -> dict[str, Any]:
    """Delete a network and everything in it (owner only; refused while sessions are online)."""
    require_user_token(principal)
    require_role(hub, principal, network_id, "owner")
    # Online exactly as /api/status shows it: an open stream, or presence not yet lapsed.
    online = [r["alias"] for r in session_store.list_sessions(hub.db, [network_id]) if is_online(hub, r)]
    if online:
        names = ", ".join(online)
        raise Conflict(f"network has online sessions ({names}); stop them or wait until they go offline",
                       code="network_has_online_sessions")
    with hub.db.write():
        network_store.delete_network(hub.db, network_id)
        hub.audit("network_delete", actor=principal.label, user_id=principal.user_id, network_id=network_id,
                  ip=ip)
    return {"ok": True, "network_id": network_id, "deleted": True}


def list_members(hub: Hub, principal: Principal, network_id: str, limit: int | None = None,
                 offset: int = 0) -> dict[str, Any]:
    """The members of a network (any member may look), a page of up to 500."""
    require_role(hub, principal, network_id, "member")
    return {"ok": True, "members": network_store.list_members(hub.db, network_id, clamp_limit(limit, MAX_LIMIT),
                                                              offset)}


def create_invite(hub: Hub, principal: Principal, network_id: str, body: InviteCreateRequest,
                  ip: str | None) -> dict[str, Any]:
    """Create an invite code (owner/admin; only the owner may invite admins)."""
    require_user_token(principal)
    role = require_role(hub, principal, network_id, "admin")
    if body.role == "admin" and role != "owner" and not principal.is_system_admin:
        raise Forbidden("only the network owner can invite admins", code="insufficient_role")
    code = new_id("inv", 8)
    expires_at = ts_text(now_ts() + body.expires_in_seconds) if body.expires_in_seconds else None
    with hub.db.write():
        quotas.check_new_invite(hub, network_id)
        network_store.insert_invite(hub.db, code, network_id, body.role, body.max_uses, principal.user_id,
                                    now_text(), expires_at)
        hub.audit("invite_create", actor=principal.label, user_id=principal.user_id, network_id=network_id,
                  detail={"invite_code": code, "role": body.role, "max_uses": body.max_uses}, ip=ip)
    return {"ok": True, "invite_code": code, "network_id": network_id, "role": body.role,
            "max_uses": body.max_uses, "expires_at": expires_at}


def join(hub: Hub, principal: Principal, body: JoinRequest, ip: str | None) -> dict[str, Any]:
    """Redeem an invite code."""
    require_user_token(principal)
    invite = network_store.get_invite(hub.db, body.invite_code)
    if invite is None:
        raise NotFound("invite_code: unknown invite code", code="invite_not_found")
    if invite["expires_at"] and invite["expires_at"] <= now_text():
        raise Conflict("invite_code: this invite has expired", code="invite_expired")
    if invite["uses"] >= invite["max_uses"]:
        raise Conflict("invite_code: this invite has been used up", code="invite_used_up")
    network_id = invite["network_id"]
    if network_store.get_member_role(hub.db, network_id, principal.user_id):
        raise Conflict("you are already a member of this network", code="already_member")
    network = network_store.get_network(hub.db, network_id)
    assert network is not None
    if network_store.count_members(hub.db, network_id) >= network["max_members"]:
        raise Conflict(f"network is full ({network['max_members']} members)", code="network_full")
    with hub.db.write():
        if not network_store.use_invite(hub.db, body.invite_code):
            raise Conflict("invite_code: this invite has been used up", code="invite_used_up")
        network_store.insert_member(hub.db, network_id, principal.user_id, invite["role"], now_text())
        hub.audit("invite_redeem", actor=principal.label, user_id=principal.user_id, network_id=network_id,
                  detail={"invite_code": body.invite_code, "role": invite["role"]}, ip=ip)
    return {"ok": True, "network_id": network_id, "network_name": network["network_name"], "role": invite["role"]}


def audit_log(hub: Hub, principal: Principal, network_id: str | None, action: str | None, limit: int | None,
              offset: int) -> dict[str, Any]:
    """Audit entries: the system admin sees all; owners/admins see their networks'."""
    if principal.is_system_admin and not network_id:
        ids = None
    elif network_id:
        require_role(hub, principal, network_id, "admin")
        ids = [network_id]
    else:
        rows = network_store.list_networks_of_user(hub.db, principal.user_id)
        ids = [r["network_id"] for r in rows if auth.role_at_least(r["member_role"], "admin")]
        if principal.kind == "network":
            ids = [i for i in ids if i == principal.network_id]
        if not ids:
            raise Forbidden("the audit log needs the owner or admin role in a network", code="insufficient_role")
    entries = audit_store.list_entries(hub.db, ids, action, clamp_limit(limit), offset)
    return {"ok": True, "entries": entries}
