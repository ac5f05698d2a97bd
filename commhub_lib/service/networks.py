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
from ..store import tokens as token_store
from . import attachments, quotas
from .hub import Hub, Principal, clamp_limit, require_user_token
from .sessions import end_token, is_online, revoke_network_tokens_of_member


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
    """Create an invite code (owner/admin; only the owner may invite admins). The code is shown only here:
    the hub keeps its hash, and lists and the audit log name the invite by `invite_id`."""
    require_user_token(principal)
    role = require_role(hub, principal, network_id, "admin")
    if body.role == "admin" and role != "owner":
        raise Forbidden("only the network owner can invite admins; invite as member, or ask the owner",
                        code="insufficient_role")
    code = new_id("inv", 12)
    invite_id = new_id("ivt")
    expires_at = ts_text(now_ts() + body.expires_in_seconds) if body.expires_in_seconds else None
    with hub.db.write():
        quotas.check_new_invite(hub, network_id)
        network_store.insert_invite(hub.db, invite_id, auth.token_hash(code), network_id, body.role, body.max_uses,
                                    principal.user_id, now_text(), expires_at)
        hub.audit("invite_create", actor=principal.label, user_id=principal.user_id, network_id=network_id,
                  detail={"invite_id": invite_id, "role": body.role, "max_uses": body.max_uses}, ip=ip)
    return {"ok": True, "invite_code": code, "invite_id": invite_id, "network_id": network_id, "role": body.role,
            "max_uses": body.max_uses, "expires_at": expires_at}


def list_invites(hub: Hub, principal: Principal, network_id: str, limit: int | None, offset: int) -> dict[str, Any]:
    """A network's invites (owner/admin), each named by invite_id; codes are never shown again."""
    require_user_token(principal)
    require_role(hub, principal, network_id, "admin")
    rows = network_store.list_invites(hub.db, network_id, clamp_limit(limit), offset)
    now = now_text()
    for row in rows:
        row["usable"] = (row["revoked_at"] is None and row["uses"] < row["max_uses"]
                         and (row["expires_at"] is None or row["expires_at"] > now))
    return {"ok": True, "invites": rows}


def revoke_invite(hub: Hub, principal: Principal, network_id: str, invite_id: str, ip: str | None) -> dict[str, Any]:
    """Revoke an invite by id (owner/admin); it can no longer be redeemed."""
    require_user_token(principal)
    require_role(hub, principal, network_id, "admin")
    with hub.db.write():
        if not network_store.revoke_invite(hub.db, network_id, invite_id, now_text()):
            raise NotFound(f"invite '{invite_id}' not found in this network (or already revoked); list them with "
                           f"GET /api/networks/{network_id}/invites", code="invite_not_found")
        hub.audit("invite_revoke", actor=principal.label, user_id=principal.user_id, network_id=network_id,
                  detail={"invite_id": invite_id}, ip=ip)
    return {"ok": True, "invite_id": invite_id, "revoked": True}


def join(hub: Hub, principal: Principal, body: JoinRequest, ip: str | None) -> dict[str, Any]:
    """Redeem an invite code."""
    require_user_token(principal)
    invite = network_store.get_invite_by_hash(hub.db, auth.token_hash(body.invite_code))
    if invite is None:
        raise NotFound("invite_code: unknown invite code", code="invite_not_found")
    if invite["revoked_at"]:
        raise Conflict("invite_code: this invite was revoked", code="invite_revoked")
    if invite["expires_at"] and invite["expires_at"] <= now_text():
        raise Conflict("invite_code: this invite has expired", code="invite_expired")
    if invite["uses"] >= invite["max_uses"]:
        raise Conflict("invite_code: this invite has been used up", code="invite_used_up")
    network_id = invite["network_id"]
    if invite["role"] == "admin" and network_store.get_member_role(hub.db, network_id, invite["created_by"]) != "owner":
        # Admin invites are the owner's alone; one made by someone who is no longer the owner is void.
        raise Conflict("invite_code: this admin invite is no longer valid (its creator is not the owner)",
                       code="invite_revoked")
    if network_store.get_member_role(hub.db, network_id, principal.user_id):
        raise Conflict("you are already a member of this network", code="already_member")
    network = network_store.get_network(hub.db, network_id)
    assert network is not None
    if network_store.count_members(hub.db, network_id) >= network["max_members"]:
        raise Conflict(f"network is full ({network['max_members']} members)", code="network_full")
    with hub.db.write():
        if not network_store.use_invite(hub.db, invite["invite_id"]):
            raise Conflict("invite_code: this invite has been used up", code="invite_used_up")
        network_store.insert_member(hub.db, network_id, principal.user_id, invite["role"], now_text())
        hub.audit("invite_redeem", actor=principal.label, user_id=principal.user_id, network_id=network_id,
                  detail={"invite_id": invite["invite_id"], "role": invite["role"]}, ip=ip)
    result = {"ok": True, "network_id": network_id, "network_name": network["network_name"], "role": invite["role"]}
    username = principal.user["username"]
    twin = session_store.get_session(hub.db, network_id, username)
    if twin is None:
        twin = next((r for r in session_store.list_sessions(hub.db, [network_id])
                     if r["alias"].lower() == username.lower()), None)
    if twin is not None:
        # An agent already uses this person's name here: they stay apart (every record carries from_kind/to_kind,
        # and a person's events never go to the agent's stream); tell the person so they are not surprised.
        result["note"] = (f"an agent in this network uses the alias '{twin['alias']}', like your username; you and "
                          "it are kept apart: records say from_kind/to_kind person or agent, and replies to you "
                          "never reach it. An owner/admin can retire that alias if it is confusing")
    return result


def _member_target(hub: Hub, network_id: str, user_id: str) -> str:
    role = network_store.get_member_role(hub.db, network_id, user_id)
    if role is None:
        raise NotFound(f"user '{user_id}' is not a member of network '{network_id}'", code="member_not_found")
    return role


def remove_member(hub: Hub, principal: Principal, network_id: str, user_id: str, ip: str | None) -> dict[str, Any]:
    """Remove a member (owner: anyone but the owner; admin: plain members; anyone: themselves). The member's
    tokens for this network are revoked, so their agents lose access and their aliases are freed."""
    require_user_token(principal)
    leaving = user_id == principal.user_id
    caller_role = require_role(hub, principal, network_id, "member" if leaving else "admin")
    target_role = _member_target(hub, network_id, user_id)
    if target_role == "owner":
        raise Forbidden("the owner cannot be removed from their network; delete the network instead",
                        code="owner_required")
    if not leaving and target_role == "admin" and caller_role != "owner":
        raise Forbidden("only the owner can remove an admin", code="insufficient_role")
    with hub.db.write():
        network_store.delete_member(hub.db, network_id, user_id)
        revoked = revoke_network_tokens_of_member(hub, network_id, user_id)
        attachments.drop_unsent_of(hub, network_id, user_id)  # dead data now: only they could send them
        hub.audit("member_remove", actor=principal.label, user_id=principal.user_id, network_id=network_id,
                  detail={"user_id": user_id, "role": target_role, "tokens_revoked": revoked}, ip=ip)
    for token_id in revoked:
        end_token(hub, token_id)
    # Their streams in this network end now, whatever token opened them (a login token stays valid elsewhere).
    hub.guard().end_member(network_id, user_id)
    return {"ok": True, "network_id": network_id, "user_id": user_id, "removed": True, "tokens_revoked": revoked}


def set_member_role(hub: Hub, principal: Principal, network_id: str, user_id: str, role: str,
                    ip: str | None) -> dict[str, Any]:
    """Change a member's role between member and admin (owner only; the owner's own role does not change)."""
    require_user_token(principal)
    require_role(hub, principal, network_id, "owner")
    old = _member_target(hub, network_id, user_id)
    if old == "owner":
        raise Forbidden("the owner's role cannot change", code="owner_required")
    with hub.db.write():
        network_store.set_member_role(hub.db, network_id, user_id, role)
        hub.audit("member_role", actor=principal.label, user_id=principal.user_id, network_id=network_id,
                  detail={"user_id": user_id, "from": old, "to": role}, ip=ip)
    return {"ok": True, "network_id": network_id, "user_id": user_id, "role": role, "previous_role": old}


def _known_alias(hub: Hub, network_id: str, alias: str) -> dict[str, Any]:
    row = session_store.get_session(hub.db, network_id, alias)
    if row is None:
        raise NotFound(f"no agent '{alias}' has ever connected to network '{network_id}'", code="alias_not_found")
    return row


def release_alias(hub: Hub, principal: Principal, network_id: str, alias: str, ip: str | None) -> dict[str, Any]:
    """Free an alias from the token holding it (owner/admin): its streams end and another token may claim it."""
    require_user_token(principal)
    require_role(hub, principal, network_id, "admin")
    _known_alias(hub, network_id, alias)
    with hub.db.write():
        holder = session_store.release_alias(hub.db, network_id, alias)
        hub.audit("alias_release", actor=principal.label, user_id=principal.user_id, network_id=network_id,
                  detail={"alias": alias, "token_id": holder}, ip=ip)
    hub.broker.close_alias_streams(network_id, alias, "alias_released")
    bound = token_store.live_tokens_bound_to(hub.db, network_id, alias, now_text())
    result = {"ok": True, "network_id": network_id, "alias": alias, "released": True, "previous_token_id": holder}
    if bound:
        result["note"] = (f"{len(bound)} live token(s) are bound to '{alias}' and keep it reserved; revoke them to "
                          "let any token claim it")
    return result


def retire_alias(hub: Hub, principal: Principal, network_id: str, alias: str, ip: str | None) -> dict[str, Any]:
    """Retire an alias for good (owner/admin): nothing can be sent to it or claim it; its streams end."""
    require_user_token(principal)
    require_role(hub, principal, network_id, "admin")
    row = _known_alias(hub, network_id, alias)
    if row["retired_at"]:
        raise Conflict(f"alias '{alias}' is already retired (since {row['retired_at']})", code="alias_retired")
    with hub.db.write():
        session_store.retire_alias(hub.db, network_id, alias, now_text())
        hub.audit("alias_retire", actor=principal.label, user_id=principal.user_id, network_id=network_id,
                  detail={"alias": alias, "token_id": row["token_id"]}, ip=ip)
    hub.broker.close_alias_streams(network_id, alias, "alias_retired")
    return {"ok": True, "network_id": network_id, "alias": alias, "retired": True}


def audit_log(hub: Hub, principal: Principal, network_id: str | None, action: str | None, limit: int | None,
              offset: int) -> dict[str, Any]:
    """Audit entries: the system admin sees all; owners/admins see their networks'. People only: the entries
    hold client IPs and account actions, which an agent (a network token) has no need to read."""
    if principal.kind != "user":
        raise Forbidden("the audit log is for people: use a login token (utok_) of an owner or admin, not an "
                        "agent's network token", code="user_token_required")
    if principal.is_system_admin and not network_id:
        ids = None
    elif network_id:
        require_role(hub, principal, network_id, "admin")
        ids = [network_id]
    else:
        rows = network_store.list_networks_of_user(hub.db, principal.user_id)
        ids = [r["network_id"] for r in rows if auth.role_at_least(r["member_role"], "admin")]
        if not ids:
            raise Forbidden("the audit log needs the owner or admin role in a network", code="insufficient_role")
    entries = audit_store.list_entries(hub.db, ids, action, clamp_limit(limit), offset)
    return {"ok": True, "entries": entries}
