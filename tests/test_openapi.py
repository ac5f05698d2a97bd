"""GET /openapi.json describes every REST route, with request bodies from the pydantic models."""

from __future__ import annotations

import httpx

from commhub_lib.api.openapi import BODIES, QUERIES
from commhub_lib.server import ServerHandle

EXPECTED = {
    ("/health", "get"), ("/api/auth/register", "post"), ("/api/auth/login", "post"), ("/api/auth/me", "get"),
    ("/api/auth/me", "put"), ("/api/auth/password", "post"), ("/api/networks", "get"), ("/api/networks", "post"),
    ("/api/networks/{network_id}", "get"), ("/api/networks/{network_id}", "put"),
    ("/api/networks/{network_id}", "delete"), ("/api/networks/{network_id}/members", "get"),
    ("/api/networks/{network_id}/invite", "post"), ("/api/networks/join", "post"), ("/api/status", "get"),
    ("/api/tasks", "get"), ("/api/tasks", "post"), ("/api/nodes", "get"), ("/api/messages", "get"),
    ("/api/messages", "post"), ("/api/broadcast", "post"), ("/api/completions", "get"), ("/api/task_events", "get"),
    ("/api/stats", "get"), ("/api/audit-log", "get"), ("/api/users", "get"), ("/api/tokens", "get"),
    ("/api/tokens", "post"), ("/api/tokens/{token_id}", "delete"), ("/events/{alias}", "get"),
}


async def test_openapi_lists_every_rest_endpoint(client: httpx.AsyncClient) -> None:
    r = await client.get("/openapi.json")
    assert r.status_code == 200
    spec = r.json()
    assert spec["openapi"].startswith("3.")
    listed = {(path, method) for path, ops in spec["paths"].items() for method in ops}
    assert EXPECTED <= listed, EXPECTED - listed


async def test_openapi_bodies_come_from_the_models(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    register = spec["paths"]["/api/auth/register"]["post"]
    ref = register["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema = spec["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert set(schema["required"]) == {"username", "password"}
    assert {"email", "display_name"} <= set(schema["properties"])
    assert "security" not in register
    assert spec["paths"]["/api/tasks"]["get"]["security"]
    names = {p["name"] for p in spec["paths"]["/api/tasks"]["get"]["parameters"]}
    assert {"status", "to_name", "from_name", "limit", "network_id"} <= names


async def test_openapi_tables_name_real_endpoints(server: ServerHandle, client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    operation_ids = {op["operationId"] for ops in spec["paths"].values() for op in ops.values()}
    for endpoint in [*BODIES, *QUERIES]:
        assert any(o.startswith(endpoint.replace(".", "_") + "_") for o in operation_ids), endpoint
