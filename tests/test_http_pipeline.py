"""The one HTTP pipeline (commhub_lib/http/): a route is one entry of the route table plus its handler, whichever
way it is served; every failure is answered and logged by the one function; the write-lock retry runs once."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from commhub_lib.http import app as http_app
from commhub_lib.http.asgi import RouteContext
from commhub_lib.http.request import StreamRequest, query_arg
from commhub_lib.http.routes import ROUTES, Route
from commhub_lib.http.writelock import WriteLockWatch
from tests.conftest import own_server, register, tool


async def echo() -> dict:
    """A test route served by Quart."""
    return {"ok": True, "x": query_arg("x")}


async def crash() -> dict:
    """A test route that fails."""
    raise RuntimeError("boom (REST)")


def chunks(ctx: RouteContext, req: StreamRequest, name: str) -> AsyncIterator[bytes]:
    """A test stream served ahead of Quart: two frames naming the path parameter, then the end."""
    async def body() -> AsyncIterator[bytes]:
        yield f"data: {name}\n\n".encode()
        yield b"data: end\n\n"
    return body()


def crashing_stream(ctx: RouteContext, req: StreamRequest) -> AsyncIterator[bytes]:
    """A test stream whose opener fails."""
    raise RuntimeError("boom (stream)")


EXTRA = (Route("GET", "/api/test-echo", echo, "json", "test.echo"),
         Route("GET", "/api/test-crash", crash, "json", "test.crash"),
         Route("GET", "/test-stream/<name>", chunks, "stream", "test.stream"),
         Route("GET", "/test-crash-stream", crashing_stream, "stream", "test.crash_stream"))


async def test_a_new_route_is_one_table_entry_and_its_handler(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_app, "ROUTES", ROUTES + EXTRA)
    async with own_server(tmp_path, "table") as server, httpx.AsyncClient(base_url=server.url, timeout=30) as c:
        r = await c.get("/api/test-echo?x=1")  # Quart serves it
        assert r.status_code == 200 and r.json() == {"ok": True, "x": "1"}
        r = await c.put("/api/test-echo")
        assert r.status_code == 405 and r.json()["error"] == "method_not_allowed"
        r = await c.get("/test-stream/abc")  # served ahead of Quart, its path parameter passed
        assert r.status_code == 200 and r.headers["content-type"] == "text/event-stream"
        assert r.text == "data: abc\n\ndata: end\n\n"
        r = await c.head("/test-stream/abc")
        assert r.status_code == 405 and r.headers["allow"] == "GET"
        r = await c.get("/test-stream/a/b")  # one segment only: Quart answers the rest
        assert r.status_code == 404 and r.json()["error"] == "not_found"
        r = await c.post("/test-stream/abc")  # the stream's URL rule lets routing say which methods it takes
        assert r.status_code == 405 and "GET" in r.headers["allow"]
        spec = (await c.get("/openapi.json")).json()
        assert spec["paths"]["/test-stream/{name}"]["get"]["operationId"] == "test_stream_get"


async def test_every_failure_is_answered_and_logged_by_the_one_function(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(http_app, "ROUTES", ROUTES + EXTRA)
    caplog.set_level(logging.ERROR, logger="commhub")
    async with own_server(tmp_path, "crash") as server, httpx.AsyncClient(base_url=server.url, timeout=30) as c:
        rest = await c.get("/api/test-crash")
        stream = await c.get("/test-crash-stream")
    assert rest.status_code == stream.status_code == 500
    assert rest.json() == stream.json() == {
        "error": "internal_error", "message": "internal server error; the details are in the server log"}
    crashes = [(r.getMessage(), r.funcName) for r in caplog.records if r.getMessage().startswith("internal error")]
    assert crashes == [("internal error on GET /api/test-crash", "answer_for"),
                       ("internal error on GET /test-crash-stream", "answer_for")]


async def test_the_write_lock_retry_wraps_a_tool_call_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """POST /mcp ran the retry twice (around the whole POST and around the tool): now once, around the tool, the
    unit of work that writes (a batch holds several)."""
    runs: list[int] = []
    run = WriteLockWatch.run

    async def counted(self: WriteLockWatch, attempt):  # type: ignore[no-untyped-def]
        runs.append(1)
        return await run(self, attempt)

    monkeypatch.setattr(WriteLockWatch, "run", counted)
    async with own_server(tmp_path, "lock") as server, httpx.AsyncClient(base_url=server.url, timeout=30) as c:
        account = await register(c)
        await tool(c, account.network_token, "report_status", {"alias": "worker"})
        runs.clear()
        await tool(c, account.network_token, "send_message", {"to": "worker", "content": "x"})
        assert len(runs) == 1
        runs.clear()
        r = await c.post("/api/messages", headers={"Authorization": f"Bearer {account.network_token}"},
                         json={"to": "worker", "content": "y"})
        assert r.status_code == 200, r.text
        assert len(runs) == 1
