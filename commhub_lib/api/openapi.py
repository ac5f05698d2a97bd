"""GET /openapi.json: the REST API described from the app's own routes and the same pydantic models."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel
from quart import Blueprint, current_app

from .. import __version__
from .. import models as m

bp = Blueprint("openapi", __name__)

# Request bodies and query parameters per endpoint (blueprint.function); everything else comes from the routes.
BODIES: dict[str, type[BaseModel]] = {
    "accounts.register": m.RegisterRequest, "accounts.login": m.LoginRequest, "accounts.put_me": m.UpdateMeRequest,
    "accounts.change_password": m.PasswordChangeRequest, "accounts.create_token": m.TokenCreateRequest,
    "networks.create_network": m.NetworkCreateRequest, "networks.update_network": m.NetworkUpdateRequest,
    "networks.create_invite": m.InviteCreateRequest, "networks.join": m.JoinRequest,
    "data.send_task": m.RestSendTask, "data.send_message": m.RestSendMessage, "data.broadcast": m.RestBroadcast,
    "data.reply": m.RestReply, "data.cancel_task": m.RestCancel, "networks.set_member_role": m.MemberRoleRequest,
}
PAGING = ["limit", "offset"]
QUERIES: dict[str, list[str]] = {
    "accounts.list_users": PAGING, "accounts.audit_log": ["network_id", "action", *PAGING],
    "data.status": ["network_id", "status", *PAGING], "networks.list_networks": PAGING,
    "networks.list_members": PAGING, "accounts.list_tokens": PAGING,
    "data.list_tasks": ["network_id", "status", "to_name", "from_name", *PAGING],
    "data.list_nodes": ["network_id", *PAGING],
    "data.list_messages": ["network_id", "alias", "kind", "unread", *PAGING],
    "data.list_completions": ["network_id", "alias", *PAGING],
    "data.list_task_events": ["network_id", "task_id", *PAGING], "data.stats": ["network_id"],
    "data.get_task": ["network_id"], "networks.list_invites": PAGING,
    "sse.stream": ["token", "last_event_id", "network_id"],
}
PUBLIC = {"health", "accounts.register", "accounts.login", "openapi.openapi"}
ERROR = {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def build_spec() -> dict[str, Any]:
    """The OpenAPI 3.1 document of every REST route of the running app."""
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {"Error": {"type": "object", "required": ["error", "message"], "properties": {
        "error": {"type": "string"}, "message": {"type": "string"}}}}
    for rule in current_app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.rule.startswith("/mcp"):
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        view = current_app.view_functions[rule.endpoint]
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            op: dict[str, Any] = {"operationId": rule.endpoint.replace(".", "_") + "_" + method.lower(),
                                  "summary": (view.__doc__ or "").strip().splitlines()[0] if view.__doc__ else "",
                                  "responses": {"200": {"description": "ok"}, "default": ERROR}}
            params = [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
                      for n in rule.arguments]
            params += [{"name": n, "in": "query", "schema": {"type": "string"}} for n in QUERIES.get(rule.endpoint, [])]
            if params:
                op["parameters"] = params
            model = BODIES.get(rule.endpoint)
            if model is not None:
                schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                schemas.update(schema.pop("$defs", {}))
                schemas[model.__name__] = schema
                op["requestBody"] = {"required": True, "content": {"application/json": {
                    "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}
            if rule.endpoint not in PUBLIC:
                op["security"] = [{"bearer": []}, {"query_token": []}]
            if rule.endpoint == "sse.stream":
                op["responses"]["200"] = {"description": "text/event-stream of new_task, new_message, new_reply, "
                                                         "broadcast and heartbeat events"}
            paths.setdefault(path, {})[method.lower()] = op
    return {"openapi": "3.1.0", "info": {"title": "CommHub", "version": __version__},
            "paths": dict(sorted(paths.items())),
            "components": {"schemas": schemas, "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "query_token": {"type": "apiKey", "in": "query", "name": "token"}}}}


@bp.get("/openapi.json")
async def openapi() -> dict:
    """The OpenAPI description of this API."""
    return build_spec()
