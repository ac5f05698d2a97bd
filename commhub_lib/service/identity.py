"""Whom an MCP session speaks for before it has claimed an alias of its own.

The order is: the alias the token is bound to; the alias claimed with report_status on this session; and,
for a request without any session (the reference's bare curl), the alias this token last claimed.

A session that has not claimed an alias yet — a new one, or one the server does not know (issued before
a restart, or evicted) — does NOT simply take the token's last alias: two agents sharing one token would
then act as each other. It falls back only when that cannot mix anyone up: the token holds exactly one
alias in the network (then that one). Otherwise the session has no identity until it calls
report_status, and every tool that needs a sender says so.
"""

from __future__ import annotations

import dataclasses

from ..store import sessions as session_store
from .hub import Hub, Principal


def session_principal(hub: Hub, principal: Principal, network_id: str, has_session: bool,
                      session_alias: str | None) -> Principal:
    """The principal to act with on an MCP request: `last_alias` limited to what is safe for this session."""
    if not has_session or session_alias or principal.bound_alias:
        return principal
    held = session_store.aliases_held_by_token(hub.db, network_id, principal.token_id, 2)
    fallback = held[0] if len(held) == 1 else None
    if fallback == principal.last_alias:
        return principal
    return dataclasses.replace(principal, last_alias=fallback)
