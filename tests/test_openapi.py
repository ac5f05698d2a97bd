"""GET /openapi.json describes every route (a missing one fails by name), validates as OpenAPI 3.1, and the
answers the server really gives match the schemas it declares. GET /docs renders it without the internet."""

from __future__ import annotations

import re
from typing import Any

import httpx
import jsonschema
from conftest import create_token, mcp_call, register
from openapi_spec_validator import validate

from commhub_lib.api.openapi import OPERATIONS


async def _spec(client: httpx.AsyncClient) -> dict[str, Any]:
    r = await client.get("/openapi.json")
    assert r.status_code == 200
    return r.json()


async def test_the_document_is_valid_openapi(client: httpx.AsyncClient) -> None:
    spec = await _spec(client)
    validate(spec)  # raises with the first problem
    assert spec["openapi"] == "3.1.0"
    assert {"userToken", "networkToken", "queryToken", "serverAuthToken"} <= set(spec["components"]["securitySchemes"])


async def test_every_route_is_described(client: httpx.AsyncClient) -> None:
    spec = await _spec(client)
    missing = [f"{method.upper()} {path}" for path, ops in spec["paths"].items() for method, op in ops.items()
               if op.get("x-undocumented")]
    assert not missing, (f"routes without an entry in OPERATIONS (commhub_lib/api/openapi.py): {missing}; add "
                         "one saying the tag, the answer model, the body and query models and who may call it")
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            assert op["tags"] and op["summary"], (method, path)
            assert "4XX" in op["responses"], (method, path)
            assert any(code.startswith("2") for code in op["responses"]) or path == "/mcp", (method, path)


def test_operations_name_only_real_endpoints() -> None:
    from commhub_lib.config import Settings
    from commhub_lib.http.app import create_app
    from commhub_lib.service.hub import Hub

    class _NoDb:
        pass

    app = create_app(Hub(settings=Settings(), db=_NoDb()))  # type: ignore[arg-type]
    endpoints = {rule.endpoint for rule in app.url_map.iter_rules()}
    stale = sorted(set(OPERATIONS) - endpoints)
    assert not stale, f"OPERATIONS describes endpoints that no longer exist: {stale}"
    undescribed = sorted(endpoints - set(OPERATIONS) - {"static"})
    assert not undescribed, f"routes without an entry in OPERATIONS (commhub_lib/api/openapi.py): {undescribed}"


async def test_bodies_and_typed_queries_come_from_the_models(client: httpx.AsyncClient) -> None:
    spec = await _spec(client)
    register_op = spec["paths"]["/api/auth/register"]["post"]
    ref = register_op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema = spec["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert set(schema["required"]) == {"username", "password"}
    assert {"email", "display_name"} <= set(schema["properties"])
    assert {} in register_op["security"]  # open unless COMMHUB_AUTH_TOKEN is set
    params = {p["name"]: p for p in spec["paths"]["/api/tasks"]["get"]["parameters"]}
    assert {"status", "to_name", "from_name", "limit", "offset", "network_id"} <= set(params)
    assert params["limit"]["schema"] == {"type": "integer", "minimum": 1}
    assert "running" in params["status"]["schema"]["enum"]
    assert spec["paths"]["/api/tasks"]["get"]["security"]
    stream = spec["paths"]["/events/{alias}"]["get"]
    assert "text/event-stream" in stream["responses"]["200"]["content"]
    assert stream["parameters"][0] == {"name": "alias", "in": "path", "required": True, "schema": {"type": "string"}}


class AnswerChecker:
    """Validates real answers against the schema the document declares for them."""

    def __init__(self, spec: dict[str, Any]):
        self.spec = spec
        self.checked: set[tuple[str, str]] = set()

    def __call__(self, r: httpx.Response, method: str, path: str) -> dict[str, Any]:
        assert r.status_code < 300, (method, path, r.text)
        op = self.spec["paths"][path][method]
        content = op["responses"][str(r.status_code)]["content"]["application/json"]
        schema = {**content["schema"], "components": self.spec["components"]}
        jsonschema.Draft202012Validator(schema).validate(r.json())
        self.checked.add((method, path))
        return r.json()

    def error(self, r: httpx.Response) -> None:
        assert r.status_code >= 400
        schema = {"$ref": "#/components/schemas/Error", "components": self.spec["components"]}
        jsonschema.Draft202012Validator(schema).validate(r.json())


async def test_real_answers_match_the_declared_schemas(client: httpx.AsyncClient) -> None:
    check = AnswerChecker(await _spec(client))
    check(await client.get("/health"), "get", "/health")
    for path in ("/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp"):
        check(await client.get(path), "get", path)
    r = await client.post("/api/auth/register", json={"username": "docadmin", "password": "secret123",
                                                      "email": "a@example.com"})
    admin = check(r, "post", "/api/auth/register")
    auth = {"Authorization": f"Bearer {admin['token']}"}
    check(await client.post("/api/auth/login", json={"username": "docadmin", "password": "secret123"}),
          "post", "/api/auth/login")
    check(await client.get("/api/auth/me", headers=auth), "get", "/api/auth/me")
    check(await client.put("/api/auth/me", headers=auth, json={"display_name": "Doc"}), "put", "/api/auth/me")
    check(await client.get("/api/users", headers=auth), "get", "/api/users")
    net = check(await client.post("/api/networks", headers=auth, json={"name": "docs"}), "post", "/api/networks")
    nid = net["network_id"]
    check(await client.get("/api/networks", headers=auth), "get", "/api/networks")
    check(await client.get(f"/api/networks/{nid}", headers=auth), "get", "/api/networks/{network_id}")
    check(await client.put(f"/api/networks/{nid}", headers=auth, json={"description": "d"}), "put",
          "/api/networks/{network_id}")
    invite = check(await client.post(f"/api/networks/{nid}/invite", headers=auth, json={"max_uses": 2}), "post",
                   "/api/networks/{network_id}/invite")
    guest = await register(client)
    check(await client.post("/api/networks/join", headers=guest.auth, json={"invite_code": invite["invite_code"]}),
          "post", "/api/networks/join")
    check(await client.get(f"/api/networks/{nid}/members", headers=auth), "get", "/api/networks/{network_id}/members")
    invites = check(await client.get(f"/api/networks/{nid}/invites", headers=auth), "get",
                    "/api/networks/{network_id}/invites")["invites"]
    check(await client.delete(f"/api/networks/{nid}/invites/{invites[0]['invite_id']}", headers=auth), "delete",
          "/api/networks/{network_id}/invites/{invite_id}")
    check(await client.put(f"/api/networks/{nid}/members/{guest.user_id}", headers=auth, json={"role": "admin"}),
          "put", "/api/networks/{network_id}/members/{user_id}")
    check(await client.delete(f"/api/networks/{nid}/members/{guest.user_id}", headers=auth), "delete",
          "/api/networks/{network_id}/members/{user_id}")
    second = (await client.post("/api/auth/login", json={"username": "docadmin", "password": "secret123"})).json()
    logins = check(await client.get("/api/auth/tokens", headers=auth), "get", "/api/auth/tokens")["tokens"]
    other_login = next(t["token_id"] for t in logins if not t["current"])
    assert second["token"]
    check(await client.delete(f"/api/auth/tokens/{other_login}", headers=auth), "delete", "/api/auth/tokens/{token_id}")

    account = await register(client)
    made = check(await client.post("/api/tokens", headers=account.auth, json={
        "name": "w", "network_id": account.network_id, "alias": "worker"}), "post", "/api/tokens")
    worker = made["token"]
    await mcp_call(client, worker, "report_status", {"alias": "worker", "node": {"hostname": "box1"}})
    check(await client.get("/api/tokens", headers=account.auth), "get", "/api/tokens")
    upload = check(await client.post("/api/attachments", headers=account.auth, params={"filename": "a.txt"},
                                     content=b"a file"), "post", "/api/attachments")
    task = check(await client.post("/api/tasks", headers=account.auth, json={
        "to": "worker", "content": "x", "attachments": [upload["attachment_id"]]}), "post", "/api/tasks")
    check(await client.post("/api/messages", headers=account.auth, json={"to": "worker", "content": "hi"}),
          "post", "/api/messages")
    check(await client.post("/api/broadcast", headers=account.auth, json={"content": "all"}), "post", "/api/broadcast")
    await mcp_call(client, worker, "report_completion", {"task_id": task["task_id"], "result": "done",
                                                         "artifacts": ["a.txt"]})
    check(await client.get(f"/api/tasks/{task['task_id']}", headers=account.auth), "get", "/api/tasks/{task_id}")
    asked = (await client.post("/api/tasks", headers=account.auth, json={"to": "worker", "content": "y"})).json()
    await mcp_call(client, worker, "send_reply", {"task_id": asked["task_id"], "status": "question",
                                                  "content": "which one?"})
    check(await client.post("/api/replies", headers=account.auth, json={"task_id": asked["task_id"],
                                                                         "content": "the first"}),
          "post", "/api/replies")
    worker_auth = {"Authorization": f"Bearer {worker}"}
    check(await client.post(f"/api/tasks/{asked['task_id']}/flag", headers=worker_auth, json={"flag": "unanswered"}),
          "post", "/api/tasks/{task_id}/flag")
    approval = check(await client.post("/api/approvals", headers=worker_auth, json={
        "task_id": asked["task_id"], "question": "may I?"}), "post", "/api/approvals")
    await client.post("/api/replies", headers=account.auth, json={"message_id": approval["approval_id"],
                                                                   "content": "yes"})
    check(await client.get(f"/api/approvals/{approval['approval_id']}", headers=account.auth), "get",
          "/api/approvals/{approval_id}")
    check(await client.get("/api/approvals", headers=account.auth), "get", "/api/approvals")
    needs = check(await client.get("/api/needs", headers=account.auth), "get", "/api/needs")
    assert [s["reason"] for s in needs["stuck"]] == ["unanswered"], needs
    feed = check(await client.get(f"/api/networks/{account.network_id}/events", headers=account.auth), "get",
                 "/api/networks/{network_id}/events")
    assert "which one?" in [e["content"] for e in feed["events"]], feed
    check(await client.post(f"/api/tasks/{asked['task_id']}/cancel", headers=account.auth, json={"reason": "done"}),
          "post", "/api/tasks/{task_id}/cancel")
    for path in ("/api/status", "/api/tasks", "/api/nodes", "/api/messages", "/api/completions", "/api/task_events",
                 "/api/stats", "/api/audit-log"):
        body = check(await client.get(path, headers=account.auth), "get", path)
        assert any(isinstance(v, list) and v for v in body.values()) or path == "/api/stats", (path, body)
    check(await client.get("/api/messages?alias=worker&unread=1", headers=account.auth), "get", "/api/messages")
    found = check(await client.get("/api/search", headers=account.auth, params={"q": "may"}), "get", "/api/search")
    assert found["results"], found
    sched = check(await client.post("/api/schedules", headers=account.auth, json={
        "to": "worker", "content": "nightly", "cron": "0 3 * * *", "tz": "Europe/Berlin"}), "post", "/api/schedules")
    one_sched = f"/api/schedules/{sched['schedule']['schedule_id']}"
    check(await client.get("/api/schedules", headers=account.auth), "get", "/api/schedules")
    check(await client.get(one_sched, headers=account.auth), "get", "/api/schedules/{schedule_id}")
    assert check(await client.post(f"{one_sched}/run", headers=account.auth), "post",
                 "/api/schedules/{schedule_id}/run")["ran"] is True
    check(await client.post(f"{one_sched}/pause", headers=account.auth), "post", "/api/schedules/{schedule_id}/pause")
    check(await client.post(f"{one_sched}/resume", headers=account.auth), "post",
          "/api/schedules/{schedule_id}/resume")
    check(await client.delete(one_sched, headers=account.auth), "delete", "/api/schedules/{schedule_id}")
    other = await create_token(client, account, name="spare")
    spare_id = next(t["token_id"] for t in (await client.get("/api/tokens", headers=account.auth)).json()["tokens"]
                    if t["name"] == "spare")
    assert other.startswith("ntok_")
    check(await client.delete(f"/api/tokens/{spare_id}", headers=account.auth), "delete", "/api/tokens/{token_id}")
    hooks = f"/api/networks/{account.network_id}/webhooks"
    hook = check(await client.post(hooks, headers=account.auth, json={"url": "https://example.invalid/hook"}),
                 "post", "/api/networks/{network_id}/webhooks")
    one = f"{hooks}/{hook['webhook_id']}"
    await client.post("/api/messages", headers=account.auth, json={"to": "worker", "content": "for the hook"})
    check(await client.get(hooks, headers=account.auth), "get", "/api/networks/{network_id}/webhooks")
    check(await client.get(one, headers=account.auth), "get", "/api/networks/{network_id}/webhooks/{webhook_id}")
    check(await client.patch(one, headers=account.auth, json={"description": "d"}), "patch",
          "/api/networks/{network_id}/webhooks/{webhook_id}")
    logged = check(await client.get(f"{one}/deliveries", headers=account.auth), "get",
                   "/api/networks/{network_id}/webhooks/{webhook_id}/deliveries")["deliveries"]
    check(await client.post(f"{one}/deliveries/{logged[0]['delivery_id']}/redeliver", headers=account.auth), "post",
          "/api/networks/{network_id}/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver")
    check(await client.delete(one, headers=account.auth), "delete", "/api/networks/{network_id}/webhooks/{webhook_id}")
    bound, bound_path = (f"/api/networks/{account.network_id}/aliases/outside/a2a-remote",
                         "/api/networks/{network_id}/aliases/{alias}/a2a-remote")
    check(await client.put(bound, headers=account.auth, json={"url": "https://example.invalid/.well-known/agent-card.json",
                                                               "token": "t"}), "put", bound_path)
    check(await client.get(bound, headers=account.auth), "get", bound_path)
    check(await client.delete(bound, headers=account.auth), "delete", bound_path)
    check(await client.get(f"/api/networks/{account.network_id}/usage", headers=account.auth), "get",
          "/api/networks/{network_id}/usage")
    a2a_setting = f"/api/networks/{account.network_id}/aliases/worker/a2a"
    check(await client.put(a2a_setting, headers=account.auth, json={"enabled": True}), "put",
          "/api/networks/{network_id}/aliases/{alias}/a2a")
    check(await client.get(a2a_setting, headers=account.auth), "get", "/api/networks/{network_id}/aliases/{alias}/a2a")
    check(await client.get(f"/a2a/{account.network_id}/worker/.well-known/agent-card.json"), "get",
          "/a2a/{network_id}/{alias}/.well-known/agent-card.json")
    check(await client.post(f"/a2a/{account.network_id}/worker", headers=worker_auth, json={
        "jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {"id": "x"}}), "post", "/a2a/{network_id}/{alias}")
    check(await client.post(f"/api/networks/{account.network_id}/aliases/worker/release", headers=account.auth),
          "post", "/api/networks/{network_id}/aliases/{alias}/release")
    check(await client.post(f"/api/networks/{account.network_id}/aliases/worker/retire", headers=account.auth),
          "post", "/api/networks/{network_id}/aliases/{alias}/retire")
    check(await client.post("/api/auth/password", headers=auth, json={"old_password": "secret123",
                                                                       "new_password": "secret456"}),
          "post", "/api/auth/password")
    check(await client.delete(f"/api/networks/{nid}", headers=auth), "delete", "/api/networks/{network_id}")
    check.error(await client.get("/api/status"))
    check.error(await client.get("/api/nope"))
    json_ops = {(method, path) for path, ops in check.spec["paths"].items() for method, op in ops.items()
                if "application/json" in next(iter(op["responses"].values())).get("content", {})
                and path not in ("/openapi.json", "/mcp")}
    assert json_ops <= check.checked, f"answers not checked against their schema: {sorted(json_ops - check.checked)}"


async def test_docs_page_is_self_contained(client: httpx.AsyncClient) -> None:
    r = await client.get("/docs")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert "/openapi.json" in r.text
    for needle in ("http://", "https://", "//cdn"):
        assert needle not in r.text, f"the docs page must not load {needle} resources"
    assert re.findall(r'(?:href|src)="(/[^"]*)"', r.text) == ["/assets/docs.css", "/openapi.json", "/assets/docs.js"]
