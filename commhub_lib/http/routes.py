"""The one route table: every route of the server, from which both Quart's URL rules (http/app.py) and the ASGI
dispatch ahead of Quart (http/dispatch.py) are made.

A new route is one entry here plus its handler. The kind says who serves it and what the handler is:
- "json":   a REST handler served by Quart: `async (path params) -> dict | (dict, status[, headers]) | Answer`,
            reading the request through http/request.py;
- "static": a file served by Quart (the dashboard), as "json";
- "stream": an event stream served ahead of Quart (http/asgi.serve_stream): `(RouteContext, StreamRequest,
            path params) -> AsyncIterator[bytes] | JsonAnswer`, checked before it returns; GET only (HEAD: 405);
- "mcp":    a POST served ahead of Quart (http/asgi.PostEndpoint): `async (RouteContext, PostRequest) ->
            (status, body) | AsyncIterator[bytes]`;
- "upload": a POST whose raw body the handler reads (a file), served as "mcp" is, its body capped by the setting
            `body_limit` names (plus `body_slack` bytes of framing) instead of max_body_bytes, within the same body
            timeout, and run again after waiting for another process's write lock, as a REST write is.
The routes served ahead of Quart get a URL rule too, so that routing answers their paths' other methods (405 with
the Allow list, OPTIONS) and the OpenAPI document lists them; that rule's view is never called.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from .. import sse
from ..a2a import protocol as a2a_protocol
from ..api import a2a as a2a_api
from ..api import accounts as accounts_api
from ..api import approvals as approvals_api
from ..api import attachments as attachments_api
from ..api import bridge as bridge_api
from ..api import data as data_api
from ..api import health as health_api
from ..api import metrics as metrics_api
from ..api import needs as needs_api
from ..api import networks as networks_api
from ..api import oauth as oauth_api
from ..api import openapi as openapi_api
from ..api import schedules as schedules_api
from ..api import search as search_api
from ..api import webhooks as webhooks_api
from ..mcp import protocol as mcp_protocol
from ..web import routes as web_routes

Kind = Literal["json", "static", "stream", "mcp", "upload"]
# Kinds served straight from ASGI, ahead of Quart.
FAST_KINDS = frozenset({"stream", "mcp", "upload"})
# Room for a multipart/form-data envelope (boundaries, part headers) around an uploaded file.
FORM_ENVELOPE_BYTES = 16 * 1024


@dataclass(frozen=True, slots=True)
class Route:
    """One route: method, path (Quart's rule syntax), handler, kind; its endpoint name (the OpenAPI operationId and
    api/openapi.OPERATIONS key) and, for a route served ahead of Quart, the summary its URL rule shows."""

    method: str
    path: str
    handler: Callable[..., Any]
    kind: Kind
    endpoint: str
    summary: str = ""
    body_limit: str = "max_body_bytes"  # the setting that caps the body (kind "upload": its own)
    body_slack: int = 0  # bytes allowed past it for framing (a multipart envelope)
    # A "stream" whose opener may run in a worker thread (db.run: off the loop on PostgreSQL; checked to touch the
    # broker and trio only through the loop, stream.take_stream_slot).
    off_loop: bool = False


WEBHOOKS = "/api/networks/<network_id>/webhooks"
A2A_REMOTE = "/api/networks/<network_id>/aliases/<alias>/a2a-remote"

ROUTES: tuple[Route, ...] = (
    Route("POST", "/api/auth/register", accounts_api.register, "json", "accounts.register"),
    Route("POST", "/api/auth/login", accounts_api.login, "json", "accounts.login"),
    Route("GET", "/api/auth/tokens", accounts_api.list_login_tokens, "json", "accounts.list_login_tokens"),
    Route("DELETE", "/api/auth/tokens/<token_id>", accounts_api.revoke_login_token,
          "json", "accounts.revoke_login_token"),
    Route("GET", "/api/auth/me", accounts_api.get_me, "json", "accounts.get_me"),
    Route("PUT", "/api/auth/me", accounts_api.put_me, "json", "accounts.put_me"),
    Route("POST", "/api/auth/password", accounts_api.change_password, "json", "accounts.change_password"),
    Route("GET", "/api/users", accounts_api.list_users, "json", "accounts.list_users"),
    Route("POST", "/api/tokens", accounts_api.create_token, "json", "accounts.create_token"),
    Route("GET", "/api/tokens", accounts_api.list_tokens, "json", "accounts.list_tokens"),
    Route("DELETE", "/api/tokens/<token_id>", accounts_api.revoke_token, "json", "accounts.revoke_token"),
    Route("GET", "/api/audit-log", accounts_api.audit_log, "json", "accounts.audit_log"),
    Route("GET", "/api/networks", networks_api.list_networks, "json", "networks.list_networks"),
    Route("POST", "/api/networks", networks_api.create_network, "json", "networks.create_network"),
    Route("POST", "/api/networks/join", networks_api.join, "json", "networks.join"),
    Route("GET", "/api/networks/<network_id>", networks_api.get_network, "json", "networks.get_network"),
    Route("PUT", "/api/networks/<network_id>", networks_api.update_network, "json", "networks.update_network"),
    Route("DELETE", "/api/networks/<network_id>", networks_api.delete_network, "json", "networks.delete_network"),
    Route("GET", "/api/networks/<network_id>/members", networks_api.list_members, "json", "networks.list_members"),
    Route("DELETE", "/api/networks/<network_id>/members/<user_id>", networks_api.remove_member,
          "json", "networks.remove_member"),
    Route("PUT", "/api/networks/<network_id>/members/<user_id>", networks_api.set_member_role,
          "json", "networks.set_member_role"),
    Route("POST", "/api/networks/<network_id>/invite", networks_api.create_invite, "json", "networks.create_invite"),
    Route("GET", "/api/networks/<network_id>/invites", networks_api.list_invites, "json", "networks.list_invites"),
    Route("DELETE", "/api/networks/<network_id>/invites/<invite_id>", networks_api.revoke_invite,
          "json", "networks.revoke_invite"),
    Route("POST", "/api/networks/<network_id>/aliases/<alias>/release", networks_api.release_alias,
          "json", "networks.release_alias"),
    Route("POST", "/api/networks/<network_id>/aliases/<alias>/retire", networks_api.retire_alias,
          "json", "networks.retire_alias"),
    Route("GET", "/api/networks/<network_id>/usage", networks_api.network_usage, "json", "networks.network_usage"),
    Route("PUT", A2A_REMOTE, bridge_api.put_remote, "json", "bridge.put_remote"),
    Route("GET", A2A_REMOTE, bridge_api.get_remote, "json", "bridge.get_remote"),
    Route("DELETE", A2A_REMOTE, bridge_api.delete_remote, "json", "bridge.delete_remote"),
    Route("GET", WEBHOOKS, webhooks_api.list_webhooks, "json", "webhooks.list_webhooks"),
    Route("POST", WEBHOOKS, webhooks_api.create_webhook, "json", "webhooks.create_webhook"),
    Route("GET", WEBHOOKS + "/<webhook_id>", webhooks_api.get_webhook, "json", "webhooks.get_webhook"),
    Route("PATCH", WEBHOOKS + "/<webhook_id>", webhooks_api.update_webhook, "json", "webhooks.update_webhook"),
    Route("DELETE", WEBHOOKS + "/<webhook_id>", webhooks_api.delete_webhook, "json", "webhooks.delete_webhook"),
    Route("GET", WEBHOOKS + "/<webhook_id>/deliveries", webhooks_api.list_deliveries, "json",
          "webhooks.list_deliveries"),
    Route("POST", WEBHOOKS + "/<webhook_id>/deliveries/<delivery_id>/redeliver", webhooks_api.redeliver, "json",
          "webhooks.redeliver"),
    Route("GET", "/api/status", data_api.status, "json", "data.status"),
    Route("GET", "/api/tasks", data_api.list_tasks, "json", "data.list_tasks"),
    Route("GET", "/api/nodes", data_api.list_nodes, "json", "data.list_nodes"),
    Route("GET", "/api/messages", data_api.list_messages, "json", "data.list_messages"),
    Route("GET", "/api/completions", data_api.list_completions, "json", "data.list_completions"),
    Route("GET", "/api/task_events", data_api.list_task_events, "json", "data.list_task_events"),
    Route("GET", "/api/stats", data_api.stats, "json", "data.stats"),
    Route("GET", "/api/search", search_api.search, "json", "search.search"),
    Route("GET", "/api/needs", needs_api.get_needs, "json", "needs.get_needs"),
    Route("GET", "/api/networks/<network_id>/events", needs_api.network_events, "json", "needs.network_events"),
    Route("POST", "/api/tasks", data_api.send_task, "json", "data.send_task"),
    Route("POST", "/api/messages", data_api.send_message, "json", "data.send_message"),
    Route("POST", "/api/broadcast", data_api.broadcast, "json", "data.broadcast"),
    Route("GET", "/api/tasks/<task_id>", data_api.get_task, "json", "data.get_task"),
    Route("POST", "/api/tasks/<task_id>/cancel", data_api.cancel_task, "json", "data.cancel_task"),
    Route("POST", "/api/tasks/<task_id>/flag", data_api.flag_task, "json", "data.flag_task"),
    Route("POST", "/api/replies", data_api.reply, "json", "data.reply"),
    Route("POST", "/api/attachments", attachments_api.upload, "upload", "attachments.upload",
          "Upload a file (raw body or multipart/form-data) to send with tasks, messages and replies.",
          body_limit="max_attachment_bytes", body_slack=FORM_ENVELOPE_BYTES),
    Route("GET", "/api/attachments/<attachment_id>", attachments_api.download, "json", "attachments.download"),
    Route("POST", "/api/approvals", approvals_api.ask, "json", "approvals.ask"),
    Route("GET", "/api/approvals/<approval_id>", approvals_api.get_approval, "json", "approvals.get_approval"),
    Route("GET", "/api/approvals", approvals_api.list_approvals, "json", "approvals.list_approvals"),
    Route("POST", "/api/schedules", schedules_api.create_schedule, "json", "schedules.create_schedule"),
    Route("GET", "/api/schedules", schedules_api.list_schedules, "json", "schedules.list_schedules"),
    Route("GET", "/api/schedules/<schedule_id>", schedules_api.get_schedule, "json", "schedules.get_schedule"),
    Route("DELETE", "/api/schedules/<schedule_id>", schedules_api.delete_schedule, "json",
          "schedules.delete_schedule"),
    Route("POST", "/api/schedules/<schedule_id>/pause", schedules_api.pause_schedule, "json",
          "schedules.pause_schedule"),
    Route("POST", "/api/schedules/<schedule_id>/resume", schedules_api.resume_schedule, "json",
          "schedules.resume_schedule"),
    Route("POST", "/api/schedules/<schedule_id>/run", schedules_api.run_schedule, "json", "schedules.run_schedule"),
    Route("GET", "/openapi.json", openapi_api.openapi, "json", "openapi.openapi"),
    Route("GET", "/events/<alias>", sse.alias_stream, "stream", "sse.stream",
          "Server-Sent Events for one alias (served by sse.alias_stream).", off_loop=True),
    Route("GET", "/events", sse.network_stream, "stream", "sse.network_stream",
          "Every event of a network, for a person (served by sse.network_stream).", off_loop=True),
    Route("POST", "/mcp", mcp_protocol.answer_post, "mcp", "mcp.post_mcp",
          "JSON-RPC 2.0 for agents (MCP Streamable HTTP): initialize, tools/list, tools/call, batches."),
    Route("GET", "/mcp", mcp_protocol.mcp_stream, "stream", "mcp.get_mcp",
          "The MCP session's event stream: every event for its alias as notifications/claude/channel."),
    Route("DELETE", "/mcp", mcp_protocol.delete_mcp, "json", "mcp.delete_mcp"),
    Route("GET", oauth_api.WELL_KNOWN, oauth_api.protected_resource, "json", "oauth.protected_resource"),
    Route("GET", oauth_api.WELL_KNOWN + "/mcp", oauth_api.protected_resource_mcp, "json",
          "oauth.protected_resource_mcp"),
    Route("GET", "/", web_routes.index, "static", "web.index"),
    Route("GET", "/docs", web_routes.docs, "static", "web.docs"),
    Route("GET", "/assets/<path:name>", web_routes.asset, "static", "web.asset"),
    Route("GET", "/health", health_api.health, "json", "health"),
    Route("GET", "/metrics", metrics_api.scrape, "json", "metrics.scrape"),
    Route("PUT", "/api/networks/<network_id>/aliases/<alias>/a2a", a2a_api.put_a2a, "json", "a2a.put_a2a"),
    Route("GET", "/api/networks/<network_id>/aliases/<alias>/a2a", a2a_api.get_a2a, "json", "a2a.get_a2a"),
    Route("GET", "/a2a/<network_id>/<alias>/.well-known/agent-card.json", a2a_api.card, "json", "a2a.card"),
    Route("POST", "/a2a/<network_id>/<alias>", a2a_protocol.answer_post, "mcp", "a2a.jsonrpc",
          "A2A JSON-RPC (1.0 and 0.3) of an alias served as an A2A agent (served by a2a.protocol.answer_post)."),
)
