"""Property-based fuzzing of every REST route and of the JSON-RPC dispatcher against a real server.

Random and malformed bodies, query parameters, headers, path parts, JSON-RPC ids, methods and params must
never produce a 500 or a traceback in the log; REST errors always have the shape {"error", "message"}, and
/mcp always answers valid JSON-RPC (or a REST-shaped HTTP error before JSON-RPC starts, e.g. 401).

Bounded for CI: derandomized (the same examples every run) and a fixed number of examples, about 30 s in
all on a small machine. COMMHUB_FUZZ_EXAMPLES=N runs more (and random, not derandomized) examples.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import trio
from conftest import make_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from commhub_lib.app import create_app
from commhub_lib.db import Database
from commhub_lib.mcp.tools import TOOLS
from commhub_lib.runtime.server import ServerHandle, run_server
from commhub_lib.service.hub import Hub

EXTRA = int(os.environ.get("COMMHUB_FUZZ_EXAMPLES", "0"))
FUZZ = settings(max_examples=EXTRA or 400, deadline=None, derandomize=not EXTRA, database=None,
                suppress_health_check=list(HealthCheck))
STREAMING = re.compile(r"^/events|^/mcp$")  # GET on these may open a stream that never ends by itself
JSONRPC_METHODS = ["initialize", "ping", "tools/list", "tools/call", "notifications/initialized",
                   "notifications/cancelled", "server/discover", "resources/list", ""]
QUERY_NAMES = ["limit", "offset", "network_id", "status", "alias", "kind", "unread", "task_id", "to_name",
               "from_name", "action", "token", "last_event_id", "filter_status", "x"]


# --- a real server in a thread of its own, so hypothesis (synchronous) can drive it -------------------

@dataclass
class Target:
    """The running server and an account on it."""

    url: str
    user_token: str
    network_token: str
    network_id: str
    routes: list[tuple[str, str]]


class LogWatch(logging.Handler):
    """Collects log records that carry a traceback or are errors."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.bad: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or record.levelno >= logging.ERROR:
            self.bad.append(self.format(record))


def _routes(tmp: Path) -> list[tuple[str, str]]:
    """(method, rule) of every route of the app, from its own url map."""
    from commhub_lib.config import Settings

    hub = Hub(Settings(db=str(tmp / "routes.db")), Database(str(tmp / "routes.db")))
    app = create_app(hub)
    out = []
    for rule in app.url_map.iter_rules():
        for method in sorted(rule.methods or ()):
            # POST /mcp speaks JSON-RPC: test_fuzz_jsonrpc_dispatcher covers it.
            if method not in ("HEAD", "OPTIONS") and (method, rule.rule) != ("POST", "/mcp"):
                out.append((method, rule.rule))
    hub.db.close()
    return sorted(out)


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """Start CommHub on a thread's own trio loop; stop it after the module's tests."""
    tmp = tmp_path_factory.mktemp("fuzz")
    started = threading.Event()
    box: dict[str, Any] = {}

    async def serve() -> None:
        async with trio.open_nursery() as nursery:
            handle: ServerHandle = await nursery.start(run_server, make_settings(tmp))
            box["handle"], box["token"] = handle, trio.lowlevel.current_trio_token()
            started.set()

    thread = threading.Thread(target=trio.run, args=(serve,), daemon=True)
    thread.start()
    assert started.wait(30), "the fuzz server did not start"
    handle = box["handle"]
    with httpx.Client(base_url=handle.url, timeout=30) as client:
        r = client.post("/api/auth/register", json={"username": "fuzzer", "password": "fuzz-" + "x" * 40})
        assert r.status_code == 200, r.text
        body = r.json()
        client.post("/mcp", headers={"Authorization": f"Bearer {body['network_token']}"}, json={
            "jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "report_status", "arguments": {"alias": "fuzz-agent", "node": "fuzz-box"}}})
    watch = LogWatch()
    logging.getLogger().addHandler(watch)
    box["watch"] = watch
    try:
        yield Target(handle.url, body["token"], body["network_token"], body["network_id"], _routes(tmp))
    finally:
        logging.getLogger().removeHandler(watch)
        trio.from_thread.run_sync(handle.shutdown, trio_token=box["token"])
        thread.join(30)
    assert not watch.bad, "tracebacks or errors in the log:\n" + "\n".join(watch.bad[:5])


# --- strategies ------------------------------------------------------------------------------------

texts = st.one_of(st.text(max_size=30), st.sampled_from(["", " ", "\x00", "\ud7ff", "\u2028", "%0d%0a", "../..",
                                                         "net_x", "tok_x", "fuzz-agent", "a" * 300]))
numbers = st.one_of(st.integers(-2**70, 2**70), st.sampled_from([0, 1, -1, 2**63, 2**31, 10**4000]),
                    st.floats(allow_nan=False, allow_infinity=False))
scalars = st.one_of(st.none(), st.booleans(), numbers, texts)
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(texts, inner, max_size=4)), max_leaves=12)


def _json_text(value: Any) -> bytes:
    try:
        return json.dumps(value).encode()
    except ValueError:  # an int past the digit limit: write it out by hand
        return str(value).encode() if isinstance(value, int) else b"null"


raw_bodies = st.one_of(
    st.binary(max_size=60),
    st.sampled_from([b"", b"{", b"[" * 3000 + b"]" * 3000, b'{"a": ' + b"9" * 5000 + b"}", b'"\\ud800"',
                     b'{"name": "\\udfff"}', b"\xff\xfe", b"null", b"[]", b"{}"]),
    json_values.map(_json_text))


@st.composite
def field_bodies(draw: st.DrawFn) -> bytes:
    """A JSON object with the names real bodies use and random values (reaches the validators)."""
    names = ["name", "description", "network_id", "alias", "to", "content", "priority", "max_uses", "role",
             "expires_in_seconds", "invite_code", "username", "password", "display_name", "email", "max_members",
             "network_name", "visibility", "title", "context", "filter_status", "reason", "status", "task_id",
             "message_id", "old_password", "new_password"]
    body = draw(st.dictionaries(st.sampled_from(names), json_values, max_size=5))
    return _json_text(body)


@st.composite
def rest_requests(draw: st.DrawFn, target: Target) -> tuple[str, str, dict[str, str], dict[str, str], bytes]:
    """(method, path, query, headers, body) for one of the app's routes."""
    method, rule = draw(st.sampled_from(target.routes))

    def fill(match: re.Match[str]) -> str:
        real = target.network_id if "network" in match.group(1) else "fuzz-agent"
        # Path parts of destructive routes stay random, so the fuzzing account keeps its network and tokens.
        choices = [real] if method == "GET" else []
        part = draw(st.one_of(st.sampled_from([*choices, "x", "net_x", ".."]),
                              st.text(st.characters(codec="utf-8"), min_size=1, max_size=20)))
        return quote(part, safe="")

    path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", fill, rule)
    query = draw(st.dictionaries(st.sampled_from(QUERY_NAMES), st.one_of(texts, numbers.map(str)), max_size=3))
    token = draw(st.sampled_from([target.user_token, target.network_token, None, "ntok_bogus", "utok_x", ""]))
    headers: dict[str, str] = {"Content-Type": draw(st.sampled_from(["application/json", "text/plain", ""]))}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}" if token else "Bearer"
    if draw(st.booleans()):
        headers["Last-Event-ID"] = draw(st.sampled_from(["0", "abc", "-1", "5"]))
    body = draw(st.one_of(raw_bodies, field_bodies())) if method in ("POST", "PUT", "PATCH", "DELETE") else b""
    return method, path, query, headers, body


def _tool_arguments() -> st.SearchStrategy[Any]:
    fields = sorted({f for t in TOOLS.values() for f in t.model.model_fields})
    return st.one_of(st.dictionaries(st.sampled_from(fields), json_values, max_size=4), json_values)


@st.composite
def rpc_messages(draw: st.DrawFn) -> Any:
    """One JSON-RPC message: mostly well-framed with random parts, sometimes anything at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values)
    msg: dict[str, Any] = {"jsonrpc": draw(st.sampled_from(["2.0", "2.0", "2.0", "1.0", None]))}
    msg["method"] = draw(st.one_of(st.sampled_from(JSONRPC_METHODS), texts))
    if draw(st.integers(0, 4)):
        msg["id"] = draw(st.one_of(st.integers(-2**63, 2**63), texts, st.none(), st.booleans(), st.floats(),
                                   st.lists(st.integers(), max_size=2)))
    if msg["method"] == "tools/call" and draw(st.booleans()):
        msg["params"] = {"name": draw(st.one_of(st.sampled_from(sorted(TOOLS)), texts)),
                         "arguments": draw(_tool_arguments())}
    elif draw(st.booleans()):
        msg["params"] = draw(json_values)
    return _no_long_polls(msg)


def _no_long_polls(msg: Any) -> Any:
    """A fuzzed get_inbox must not wait (wait_seconds up to 50 would hold the run for nothing)."""
    params = msg.get("params") if isinstance(msg, dict) else None
    args = params.get("arguments") if isinstance(params, dict) else None
    if isinstance(args, dict) and "wait_seconds" in args:
        args["wait_seconds"] = 0
    return msg


# --- the properties ------------------------------------------------------------------------------

def _check_rest_error(r: httpx.Response, where: str) -> None:
    assert r.status_code < 500, f"{where}: {r.status_code} {r.text[:300]}"
    if r.status_code >= 400:
        assert r.headers.get("content-type", "").startswith("application/json"), f"{where}: {r.headers}"
        body = r.json()
        assert isinstance(body, dict) and set(body) == {"error", "message"}, f"{where}: {body}"
        assert isinstance(body["error"], str) and isinstance(body["message"], str) and body["message"], where


@pytest.mark.slow
def test_fuzz_every_rest_route(target: Target) -> None:
    with httpx.Client(base_url=target.url, timeout=30) as client:

        @FUZZ
        @given(rest_requests(target))
        def check(request: tuple[str, str, dict[str, str], dict[str, str], bytes]) -> None:
            method, path, query, headers, body = request
            where = f"{method} {path} {query} {body[:80]!r}"
            if method == "GET" and STREAMING.match(path):  # a stream: its status and headers are what matter
                with client.stream(method, path, params=query, headers=headers) as r:
                    if r.status_code >= 400:
                        r.read()
                        _check_rest_error(r, where)
                    return
            r = client.request(method, path, params=query, headers=headers, content=body)
            _check_rest_error(r, where)
            if r.status_code < 300 and r.headers.get("content-type", "").startswith("application/json"):
                r.json()

        check()


def _check_rpc_answer(answer: Any, where: str) -> None:
    assert isinstance(answer, dict) and answer.get("jsonrpc") == "2.0", f"{where}: {answer}"
    assert ("result" in answer) != ("error" in answer), f"{where}: {answer}"
    assert "id" in answer and (answer["id"] is None or isinstance(answer["id"], str | int)), f"{where}: {answer}"
    if "error" in answer:
        assert isinstance(answer["error"]["code"], int) and isinstance(answer["error"]["message"], str), where
    else:
        assert isinstance(answer["result"], dict), f"{where}: {answer}"


def test_fuzz_jsonrpc_dispatcher(target: Target) -> None:
    with httpx.Client(base_url=target.url, timeout=30) as client:

        @FUZZ
        @given(st.one_of(rpc_messages(), st.lists(rpc_messages(), max_size=6)),
               st.sampled_from([None, "2025-03-26", "2025-11-25", "1999-01-01"]),
               st.sampled_from([None, "mcp_unknown", "\x7f"]), st.booleans(), raw_bodies)
        def check(payload: Any, version: str | None, session: str | None, raw: bool, raw_body: bytes) -> None:
            headers = {"Authorization": f"Bearer {target.network_token}", "Content-Type": "application/json",
                       "Accept": "application/json, text/event-stream"}
            if version:
                headers["Mcp-Protocol-Version"] = version
            if session:
                headers["Mcp-Session-Id"] = session
            body = raw_body if raw else _json_text(payload)
            where = f"POST /mcp {headers.get('Mcp-Protocol-Version')} {body[:200]!r}"
            r = client.post("/mcp", content=body, headers=headers)
            assert r.status_code in (200, 202, 400, 413), f"{where}: {r.status_code} {r.text[:300]}"
            if r.status_code == 202:
                assert r.content == b"", where
                return
            answer = r.json()
            if r.status_code == 400 and isinstance(answer, dict) and set(answer) == {"error", "message"}:
                return  # an HTTP-level refusal before JSON-RPC (e.g. an unsupported Mcp-Protocol-Version)
            for item in answer if isinstance(answer, list) else [answer]:
                _check_rpc_answer(item, where)

        check()
