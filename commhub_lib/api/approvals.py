"""Routes: approvals, an agent's question to a person that it waits on (docs/runner-server.md)."""

from __future__ import annotations

from ..errors import Forbidden, ValidationFailed
from ..http.request import authenticate, hub, parse, query_arg
from ..models import RestApproval
from ..service import approvals, networks, sessions
from .common import query_choice, query_int

APPROVAL_STATUSES = ("pending", "approved", "denied")


def _wait_seconds() -> float:
    """?wait_seconds= (seconds, fractions allowed, 0 to approvals.MAX_WAIT_SECONDS)."""
    raw = query_arg("wait_seconds") or "0"
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= approvals.MAX_WAIT_SECONDS:  # NaN fails this too
        raise ValidationFailed(f"wait_seconds: must be a number from 0 to {approvals.MAX_WAIT_SECONDS:g}")
    return value


async def ask() -> dict:
    """An agent asks a person (on its task, or its owner) and waits up to wait_seconds for the answer."""
    principal = authenticate()
    if principal.kind != "network":
        raise Forbidden("approvals are asked by agents: use the agent's network token (ntok_); a person answers "
                        "them with POST /api/replies", code="network_token_required")
    body = await parse(RestApproval)
    network_id = networks.single_network(hub(), principal, body.network_id)
    alias = sessions.resolve_caller(hub(), principal, network_id, None)
    asked = approvals.ask(hub(), principal, network_id, alias, body.question, body.task_id)
    return await approvals.wait(hub(), [network_id], asked["approval_id"], body.wait_seconds, principal.token_id)


async def get_approval(approval_id: str) -> dict:
    """One approval; with wait_seconds, once answered or after that long (a long-poll)."""
    principal = authenticate()
    scope = networks.scope(hub(), principal, query_arg("network_id") or None)
    return await approvals.wait(hub(), scope, approval_id, _wait_seconds(), principal.token_id)


async def list_approvals() -> dict:
    """Approvals of the caller's networks, newest first (status pending: what waits for a person)."""
    principal = authenticate()
    scope = networks.scope(hub(), principal, query_arg("network_id") or None)
    return approvals.list_approvals(hub(), scope, query_choice("status", APPROVAL_STATUSES),
                                    query_arg("alias") or None, query_int("limit", None, 1),
                                    query_int("offset", 0) or 0)
