"""The Agent Card of an alias served as an A2A agent (docs/a2a.md).

Skills come from what the agent last said of itself with report_status: one skill named after the alias, whose
description is what it is working on (`task`, else the card's description) and whose tags are its `agent` and
`model` (e.g. claude-code, opus). The card declares what the endpoint serves: JSON-RPC at
`/a2a/<network_id>/<alias>`, A2A 1.0 and 0.3 (the same URL answers both method sets), streaming, bearer auth with
a network token of the network, text in and out.

A2A 1.0 cards are ProtoJSON (`supportedInterfaces`, `securitySchemes: {"bearer": {"httpAuthSecurityScheme": …}}`);
0.3 cards had `url`, `preferredTransport`, `protocolVersion` and OpenAPI-style security schemes. A request whose
`A2A-Version` says 1.x gets the 1.0 card; any other (a 0.3 client sends none) gets the 1.0 fields plus the 0.3 ones,
with the security scheme in the 0.3 form, which 1.x SDKs read too (they convert it).
"""

from __future__ import annotations

from typing import Any

from .. import __version__
from ..service.a2a import Served
from .mapping import V03, V1

CARD_PATH = "/.well-known/agent-card.json"
BINDING = "JSONRPC"
MODES = ["text/plain"]


def endpoint_url(base: str, network_id: str, alias: str) -> str:
    """The absolute URL of an alias's A2A JSON-RPC endpoint."""
    return f"{base}/a2a/{network_id}/{alias}"


def skills(agent: Served, live: bool = False) -> list[dict[str, Any]]:
    """The agent's one skill, from its last report_status (see the module's docstring). What it is working on now
    (`Currently: <task>`) only with `live`: for a caller with a token of the network, never on the public card
    (an agent's task text may name what its network would not publish)."""
    session = agent.session
    tags = [t for t in (session.get("agent"), session.get("model")) if t] or ["commhub"]
    working_on = session.get("task") if live else None
    description = (f"Currently: {working_on}" if working_on else "") or agent.description or \
        f"Hands tasks to the CommHub agent '{agent.alias}'"
    return [{"id": agent.alias, "name": " / ".join([agent.alias, *[t for t in tags if t != "commhub"]]),
             "description": description, "tags": tags, "inputModes": MODES, "outputModes": MODES}]


def wants_v1(version_header: str | None) -> bool:
    """Whether the client asked for A2A 1.x (the A2A-Version header or query parameter); none means 0.3."""
    return bool(version_header) and version_header.strip().startswith("1")


def agent_card(agent: Served, base: str, v1_only: bool, live: bool = False) -> dict[str, Any]:
    """The Agent Card (see the module's docstring); `base` is the hub's public URL (COMMHUB_PUBLIC_URL); `live`:
    the caller holds a token of the network (the skill then says what the agent is working on)."""
    url = endpoint_url(base, agent.network_id, agent.alias)
    description = agent.description or (f"The CommHub agent '{agent.alias}': a task sent here reaches it as a "
                                         "CommHub task; its reply is the task's artifact.")
    token_note = f"a CommHub network token (ntok_…) of network {agent.network_id}"
    card: dict[str, Any] = {
        "name": agent.alias,
        "description": description,
        "supportedInterfaces": [{"url": url, "protocolBinding": BINDING, "protocolVersion": V1},
                                {"url": url, "protocolBinding": BINDING, "protocolVersion": V03}],
        "provider": {"organization": "CommHub", "url": base},
        "version": __version__,
        "documentationUrl": f"{base}/docs",
        "capabilities": {"streaming": True, "pushNotifications": False, "extendedAgentCard": False},
        "defaultInputModes": MODES,
        "defaultOutputModes": MODES,
        "skills": skills(agent, live),
    }
    if v1_only:
        card["securitySchemes"] = {"bearer": {"httpAuthSecurityScheme": {
            "scheme": "Bearer", "bearerFormat": "ntok", "description": token_note}}}
        card["securityRequirements"] = [{"schemes": {"bearer": {"list": []}}}]
        return card
    card.update({"url": url, "preferredTransport": BINDING, "protocolVersion": "0.3.0",
                 "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "ntok",
                                                "description": token_note}},
                 "security": [{"bearer": []}]})
    return card
