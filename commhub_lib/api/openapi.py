"""GET /openapi.json and GET /docs: the HTTP API described from the app's own routes and pydantic models.

Paths and path parameters come from the routes; request bodies from the models the handlers validate
with (commhub_lib/models.py); answers from api/responses.py (records in api/records.py), typed query parameters
from api/queries.py. OPERATIONS says,
per endpoint, which of those apply. A route without an entry is still listed (marked
`x-undocumented`), and tests/test_openapi.py fails naming it, so a new route cannot be forgotten.

(quart-schema works on quart-trio, but it validates through its own decorators and error pages: adopting it
would mean rewriting every handler and its error shape; describing the existing handlers keeps one way.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode

from .. import __version__
from .. import models as m
from ..http.request import url_rules
from . import a2a as a2a_api
from . import bridge as bridge_api
from . import needs as needs_api
from . import queries as q
from . import responses as r
from . import schedules as schedules_api
from . import search as search_api


@dataclass(frozen=True)
class Op:
    """How one endpoint is described: tag, answer, body, query, who may call it, its media type."""

    tag: str
    answer: type[BaseModel] | None
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    auth: str = "any"  # any | user | public | auth_token (register: COMMHUB_AUTH_TOKEN when set) | metrics | network
    media: str = "application/json"
    status: str = "200"
    note: str = ""


STREAM_NOTE = ("text/event-stream. Opens with `retry:` and an `id:` line with the current position; events "
               "new_task, new_message, new_reply, broadcast (each with a durable `id:`) and heartbeat. Reconnect "
               "with Last-Event-ID to replay (0: everything retained).")
NETWORK_STREAM_NOTE = ("text/event-stream of every event of every alias of a network (a person's user token); "
                       "the same ids as the per-alias streams, and each event's data names its `alias`.")
MCP_PUSH_NOTE = ("The MCP session's push stream (Accept: text/event-stream, Mcp-Session-Id): each event of the "
                 "session's alias as a `notifications/claude/channel` JSON-RPC notification; Last-Event-ID resumes.")
MCP_NOTE = ("MCP Streamable HTTP: JSON-RPC 2.0 requests (initialize, tools/list, tools/call, …; on MCP 2026-07-28 "
            "server/discover and subscriptions/listen, without a session); see the README and docs/mcp-versions.md.")
A2A_CARD_NOTE = ("the A2A Agent Card of an alias an owner/admin opted in (404 otherwise); `A2A-Version: 1.0` gets the "
                 "pure 1.0 card, none (a 0.3 client) the 1.0 fields plus the 0.3 ones (docs/a2a.md)")
A2A_NOTE = ("A2A JSON-RPC 2.0 (docs/a2a.md): SendMessage, SendStreamingMessage (text/event-stream), GetTask, "
            "CancelTask, SubscribeToTask, and the 0.3 names message/send, message/stream, tasks/get, tasks/cancel, "
            "tasks/resubscribe; a network token of the network (401/403 otherwise, 404 if the alias is not served)")

OPERATIONS: dict[str, Op] = {
    "health": Op("meta", r.Health, auth="public"),
    "openapi.openapi": Op("meta", None, auth="public", note="this document"),
    "oauth.protected_resource": Op("meta", r.ProtectedResource, auth="public",
                                   note="OAuth 2.0 protected resource metadata (RFC 9728): {resource: the MCP "
                                        "endpoint, bearer_methods_supported: [header], ...}; every 401 points here "
                                        "in its WWW-Authenticate: Bearer challenge"),
    "oauth.protected_resource_mcp": Op("meta", r.ProtectedResource, auth="public",
                                       note="the same document, at the place RFC 9728 derives from /mcp"),
    "metrics.scrape": Op("meta", None, auth="metrics", media="text/plain",
                         note="Prometheus metrics (text format 0.0.4; docs/metrics.md). The `metrics` setting: off "
                              "(the default: 404), loopback (clients on the hub's machine only, else 403) or token "
                              "(Authorization: Bearer <COMMHUB_METRICS_TOKEN>, else 401)"),
    "web.docs": Op("meta", None, auth="public", media="text/html", note="a page that renders this document"),
    "web.index": Op("dashboard", None, auth="public", media="text/html",
                    note="the dashboard (one page; it logs in and then uses the API above)"),
    "web.asset": Op("dashboard", None, auth="public", media="application/octet-stream",
                    note="a static file of the dashboard (JavaScript, CSS)"),
    "accounts.register": Op("accounts", r.Registered, m.RegisterRequest, auth="auth_token"),
    "accounts.login": Op("accounts", r.LoggedIn, m.LoginRequest, auth="public"),
    "accounts.get_me": Op("accounts", r.UserAnswer),
    "accounts.put_me": Op("accounts", r.UserAnswer, m.UpdateMeRequest, auth="user"),
    "accounts.change_password": Op("accounts", r.Ok, m.PasswordChangeRequest, auth="user"),
    "accounts.list_users": Op("accounts", r.UserList, query=q.Paging, auth="user"),
    "accounts.audit_log": Op("accounts", r.AuditList, query=q.AuditQuery, auth="user"),
    "accounts.create_token": Op("tokens", r.TokenCreated, m.TokenCreateRequest, auth="user"),
    "accounts.list_tokens": Op("tokens", r.TokenList, query=q.Paging, auth="user"),
    "accounts.revoke_token": Op("tokens", r.TokenRevoked, auth="user"),
    "accounts.list_login_tokens": Op("accounts", r.LoginTokenList, auth="user"),
    "accounts.revoke_login_token": Op("accounts", r.LoginTokenRevoked, auth="user"),
    "networks.list_networks": Op("networks", r.NetworkList, query=q.Paging),
    "networks.create_network": Op("networks", r.NetworkCreated, m.NetworkCreateRequest, auth="user"),
    "networks.join": Op("networks", r.Joined, m.JoinRequest, auth="user"),
    "networks.get_network": Op("networks", r.NetworkAnswer),
    "networks.update_network": Op("networks", r.NetworkAnswer, m.NetworkUpdateRequest, auth="user"),
    "networks.delete_network": Op("networks", r.NetworkDeleted, auth="user"),
    "networks.list_members": Op("networks", r.MemberList, query=q.Paging),
    "networks.create_invite": Op("networks", r.InviteCreated, m.InviteCreateRequest, auth="user"),
    "networks.list_invites": Op("networks", r.InviteList, query=q.Paging, auth="user"),
    "networks.revoke_invite": Op("networks", r.InviteRevoked, auth="user"),
    "networks.remove_member": Op("networks", r.MemberRemoved, auth="user"),
    "networks.set_member_role": Op("networks", r.MemberRoleChanged, m.MemberRoleRequest, auth="user"),
    "networks.release_alias": Op("networks", r.AliasReleased, auth="user"),
    "networks.retire_alias": Op("networks", r.AliasRetired, auth="user"),
    "networks.network_usage": Op("networks", r.NetworkUsage),
    "bridge.put_remote": Op("a2a", bridge_api.A2ARemote, bridge_api.A2ARemoteRequest, auth="user"),
    "bridge.get_remote": Op("a2a", bridge_api.A2ARemote, auth="user"),
    "bridge.delete_remote": Op("a2a", bridge_api.A2ARemoteDeleted, auth="user"),
    "webhooks.list_webhooks": Op("webhooks", r.WebhookList, auth="user"),
    "webhooks.create_webhook": Op("webhooks", r.WebhookCreated, m.WebhookCreateRequest, auth="user"),
    "webhooks.get_webhook": Op("webhooks", r.Webhook, auth="user"),
    "webhooks.update_webhook": Op("webhooks", r.Webhook, m.WebhookUpdateRequest, auth="user"),
    "webhooks.delete_webhook": Op("webhooks", r.WebhookDeleted, auth="user"),
    "webhooks.list_deliveries": Op("webhooks", r.DeliveryList, query=q.DeliveriesQuery, auth="user"),
    "webhooks.redeliver": Op("webhooks", r.Redelivery, auth="user"),
    "data.status": Op("data", r.SessionList, query=q.StatusQuery),
    "data.list_tasks": Op("data", r.TaskList, query=q.TasksQuery),
    "data.list_nodes": Op("data", r.NodeList, query=q.NodesQuery),
    "data.list_messages": Op("data", r.MessageList, query=q.MessagesQuery),
    "data.list_completions": Op("data", r.CompletionList, query=q.CompletionsQuery),
    "data.list_task_events": Op("data", r.TaskEventList, query=q.TaskEventsQuery),
    "data.stats": Op("data", r.Stats, query=q.NetworkScope),
    "search.search": Op("data", search_api.SearchResults, query=search_api.SearchQuery,
                        note="full-text search over the tasks, messages and replies your lists show"),
    "needs.get_needs": Op("data", needs_api.Needs, query=needs_api.NeedsQuery, auth="user",
                          note="what needs the person across their networks: questions waiting for an answer, stuck "
                               "tasks, loops the guard broke (docs/dashboard.md#needs-you)"),
    "needs.network_events": Op("events", needs_api.NetworkEvents, query=needs_api.EventsQuery, auth="user",
                               note="a network's newest stored events, oldest first, each new_reply with its text; "
                                    "resume GET /events?network_id= with Last-Event-ID: last_event_id"),
    "data.get_task": Op("data", r.TaskDetail, query=q.NetworkScope),
    "data.send_task": Op("messaging", r.TaskSent, m.RestSendTask),
    "data.cancel_task": Op("messaging", r.TaskCancelled, m.RestCancel, query=q.NetworkScope),
    "data.reply": Op("messaging", r.Replied, m.RestReply),
    "data.send_message": Op("messaging", r.MessageSent, m.RestSendMessage),
    "data.broadcast": Op("messaging", r.Broadcasted, m.RestBroadcast),
    "data.flag_task": Op("messaging", r.TaskFlagged, m.RestFlag, query=q.NetworkScope,
                         note="flag a task for a person's attention, or clear it (docs/runner-server.md)"),
    "schedules.create_schedule": Op("schedules", schedules_api.ScheduleAnswer, m.RestScheduleTask,
                                    note="give exactly one of at, every_seconds, cron (docs/schedules.md)"),
    "schedules.list_schedules": Op("schedules", schedules_api.ScheduleList, query=schedules_api.SchedulesQuery),
    "schedules.get_schedule": Op("schedules", schedules_api.ScheduleAnswer, query=q.NetworkScope),
    "schedules.delete_schedule": Op("schedules", schedules_api.ScheduleDeleted, query=q.NetworkScope),
    "schedules.pause_schedule": Op("schedules", schedules_api.ScheduleAnswer, query=q.NetworkScope),
    "schedules.resume_schedule": Op("schedules", schedules_api.ScheduleAnswer, query=q.NetworkScope),
    "schedules.run_schedule": Op("schedules", schedules_api.ScheduleRun, query=q.NetworkScope,
                                 note="run it now (skipped while its last run's task is open); the timetable stays"),
    "attachments.upload": Op("messaging", r.AttachmentUploaded, query=q.UploadQuery, media="application/json",
                             note="upload a file to send with tasks, messages and replies: the raw body (its "
                                  "Content-Type kept; the name from ?filename= or X-Filename) or multipart/form-data "
                                  "(its first file field); up to max_attachment_bytes (docs/attachments.md)"),
    "attachments.download": Op("messaging", None, query=q.NetworkScope, media="application/octet-stream",
                               note="download an attachment (its members; the uploader before it is sent): always "
                                    "Content-Disposition: attachment, X-Content-Type-Options: nosniff, a sandboxing "
                                    "CSP, and application/octet-stream unless its type is a safe one"),
    "approvals.ask": Op("approvals", r.Approval, m.RestApproval,
                        note="an agent (network token) asks a person and waits up to wait_seconds for the answer"),
    "approvals.get_approval": Op("approvals", r.Approval, query=q.ApprovalWait),
    "approvals.list_approvals": Op("approvals", r.ApprovalList, query=q.ApprovalsQuery),
    "sse.stream": Op("events", None, query=q.StreamQuery, media="text/event-stream", note=STREAM_NOTE),
    "sse.network_stream": Op("events", None, query=q.NetworkStreamQuery, auth="user", media="text/event-stream",
                             note=NETWORK_STREAM_NOTE),
    "mcp.post_mcp": Op("mcp", r.JsonRpc, r.JsonRpc, note=MCP_NOTE),
    "mcp.get_mcp": Op("mcp", None, media="text/event-stream", note=MCP_PUSH_NOTE),
    "mcp.delete_mcp": Op("mcp", None, status="204", note="end the MCP session named by Mcp-Session-Id"),
    "a2a.put_a2a": Op("a2a", a2a_api.A2AAgentSetting, m.A2AAgentRequest, auth="user",
                      note="serve the alias as an A2A agent, or stop (owner/admin of the network; docs/a2a.md)"),
    "a2a.get_a2a": Op("a2a", a2a_api.A2AAgentSetting, note="members of the network"),
    "a2a.card": Op("a2a", a2a_api.AgentCard, auth="public", note=A2A_CARD_NOTE),
    "a2a.jsonrpc": Op("a2a", r.JsonRpc, r.JsonRpc, auth="network", note=A2A_NOTE),
}

TAGS = [("accounts", "users, logins, passwords, audit log"), ("tokens", "network tokens (ntok_) for agents"),
        ("networks", "networks, members, invites"), ("data", "what agents are doing: sessions, tasks, messages"),
        ("messaging", "send tasks, messages and broadcasts as a person or script"),
        ("approvals", "an agent asks a person for permission and waits for the answer"),
        ("schedules", "tasks sent to an alias once, every N seconds or by cron (docs/schedules.md)"),
        ("webhooks", "POST each event of a network to a URL, signed, with a delivery log (docs/webhooks.md)"),
        ("events", "Server-Sent Events push"), ("mcp", "the MCP endpoint for agents"),
        ("a2a", "aliases served as A2A agents: opt-in, Agent Card, JSON-RPC (docs/a2a.md); aliases bound to an "
                "external A2A agent, their tasks forwarded there (docs/a2a-client.md)"),
        ("dashboard", "the web dashboard"), ("meta", "health and docs")]
SECURITY = {
    "any": [{"userToken": []}, {"networkToken": []}, {"queryToken": []}],
    "user": [{"userToken": []}, {"queryToken": []}],
    "public": [],
    "auth_token": [{}, {"serverAuthToken": []}],
    "network": [{"networkToken": []}],
    "metrics": [{"metricsToken": []}],  # by the metrics setting: loopback needs none, token COMMHUB_METRICS_TOKEN
}
SECURITY_SCHEMES = {
    "userToken": {"type": "http", "scheme": "bearer", "bearerFormat": "utok_…",
                  "description": "a person's login token (register/login)"},
    "networkToken": {"type": "http", "scheme": "bearer", "bearerFormat": "ntok_…",
                     "description": "an agent's network token (POST /api/tokens); acts in its one network"},
    "queryToken": {"type": "apiKey", "in": "query", "name": "token",
                   "description": "either token as ?token=, for clients that cannot set headers (EventSource)"},
    "metricsToken": {"type": "http", "scheme": "bearer",
                     "description": "COMMHUB_METRICS_TOKEN, for GET /metrics when the metrics setting is token"},
    "serverAuthToken": {"type": "http", "scheme": "bearer",
                        "description": "COMMHUB_AUTH_TOKEN, required by register and login when the server sets it"},
}
ERROR_SCHEMA = {"type": "object", "required": ["error", "message"], "additionalProperties": False,
                "properties": {"error": {"type": "string", "description": "stable code, e.g. invalid_token"},
                               "message": {"type": "string", "description": "what went wrong and what to do"}}}


def _error(description: str) -> dict[str, Any]:
    schema = {"$ref": "#/components/schemas/Error"}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


ERRORS = {"4XX": _error("refused: 400 bad input, 401 token, 403 role, 404 unknown, 409 conflict, 413 too large, "
                        "429 rate limited (Retry-After)"),
          "5XX": _error("internal error (details in the server log)")}


class _Schemas:
    """components/schemas, filled as models are referenced."""

    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {"Error": ERROR_SCHEMA}

    def ref(self, model: type[BaseModel], mode: JsonSchemaMode) -> dict[str, Any]:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}", mode=mode, by_alias=True)
        self.schemas.update(schema.pop("$defs", {}))
        self.schemas[model.__name__] = schema
        return {"$ref": f"#/components/schemas/{model.__name__}"}


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(mode="validation")
    required = set(schema.get("required", []))
    params = []
    for name, prop in schema["properties"].items():
        prop = dict(prop)
        description = prop.pop("description", None)
        prop.pop("title", None)
        # Query values are single strings: `X | None` is "may be absent", not a JSON null.
        options = [o for o in prop.pop("anyOf", []) if o.get("type") != "null"]
        if len(options) == 1:
            prop.update(options[0])
        elif options:
            prop["anyOf"] = options
        prop.pop("default", None)
        param: dict[str, Any] = {"name": name, "in": "query", "required": name in required, "schema": prop}
        if description:
            param["description"] = description
        params.append(param)
    return params


def _operation(endpoint: str, method: str, arguments: list[str], doc: str, schemas: _Schemas) -> dict[str, Any]:
    op_id = endpoint.replace(".", "_") + "_" + method
    summary = doc.strip().splitlines()[0] if doc.strip() else endpoint
    spec = OPERATIONS.get(endpoint)
    params = [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}} for n in arguments]
    if spec is None:
        out: dict[str, Any] = {"operationId": op_id, "summary": summary, "x-undocumented": True,
                               "responses": {"200": {"description": "not described yet"}, **ERRORS}}
        if params:
            out["parameters"] = params
        return out
    if spec.query is not None:
        params += _query_parameters(spec.query)
    if spec.answer is not None:
        content = {spec.media: {"schema": schemas.ref(spec.answer, "serialization")}}
    elif spec.media == "application/json" and spec.status == "200":
        content = {spec.media: {"schema": {"type": "object"}}}
    else:
        content = {spec.media: {"schema": {"type": "string"}}} if spec.status == "200" else None
    ok: dict[str, Any] = {"description": spec.note or summary}
    if content:
        ok["content"] = content
    out = {"operationId": op_id, "summary": summary, "tags": [spec.tag], "responses": {spec.status: ok, **ERRORS}}
    if spec.note:
        out["description"] = spec.note
    if params:
        out["parameters"] = params
    if spec.body is not None:
        out["requestBody"] = {"required": spec.body is not r.JsonRpc and not _all_optional(spec.body),
                              "content": {"application/json": {"schema": schemas.ref(spec.body, "validation")}}}
    out["security"] = SECURITY[spec.auth]
    return out


def _all_optional(model: type[BaseModel]) -> bool:
    return not any(f.is_required() for f in model.model_fields.values())


def build_spec() -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route of the running app."""
    paths: dict[str, dict[str, Any]] = {}
    schemas = _Schemas()
    for rule, endpoint, methods, arguments, doc in url_rules():
        if endpoint == "static":
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule)
        for method in sorted(methods - {"HEAD", "OPTIONS"}):
            paths.setdefault(path, {})[method.lower()] = _operation(
                endpoint, method.lower(), sorted(arguments), doc, schemas)
    return {"openapi": "3.1.0",
            "info": {"title": "CommHub", "version": __version__,
                     "description": "A self-hosted hub for AI coding agents: REST for people and scripts, MCP at "
                                    "/mcp and SSE at /events/{alias} for agents. Every error is "
                                    "{\"error\": code, \"message\": text}."},
            "tags": [{"name": n, "description": d} for n, d in TAGS],
            "paths": dict(sorted(paths.items())),
            "components": {"schemas": dict(sorted(schemas.schemas.items())), "securitySchemes": SECURITY_SCHEMES}}


async def openapi() -> dict:
    """The OpenAPI description of this API."""
    return build_spec()
