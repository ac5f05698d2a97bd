"""The private and internal parts of quart, quart-trio and hypercorn that CommHub's fast paths and patches use
still exist with the shape we rely on.

pyproject.toml bounds these three packages from above (the next minor version may change any of this); when
raising a bound, this test says what to look at first. Each check names the CommHub code that needs it.
"""

from __future__ import annotations

import dataclasses
import inspect

import h11
import pytest
from hypercorn.config import Config, Sockets
from hypercorn.events import Closed, RawData
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.trio import serve
from hypercorn.trio.tcp_server import TCPServer
from quart.ctx import RequestContext
from quart.globals import request_ctx
from quart.wrappers import Request
from quart_trio import QuartTrio


def test_hypercorn_tcp_server_close_is_a_coroutine_method() -> None:
    """runtime/patches.py wraps TCPServer._close in a shield (a cancelled close left sockets open)."""
    assert inspect.iscoroutinefunction(TCPServer._close)
    assert list(inspect.signature(TCPServer._close).parameters) == ["self"]


@pytest.mark.parametrize(("name", "params"), [("_create_stream", ["self", "request"]), ("handle", ["self", "event"])])
def test_hypercorn_h11_protocol_methods(name: str, params: list[str]) -> None:
    """runtime/patches.py wraps H11Protocol._create_stream (refuses Content-Length with Transfer-Encoding) and
    H11Protocol.handle (caps the connections still sending their headers, per address)."""
    method = getattr(H11Protocol, name)
    assert inspect.iscoroutinefunction(method)
    assert list(inspect.signature(method).parameters) == params


def test_hypercorn_h11_protocol_state_the_patches_read() -> None:
    """The patches read the protocol's client, config, connection and send, and send RawData and Closed."""
    init = inspect.getsource(H11Protocol.__init__)
    for name in ("client", "config", "connection", "send"):
        assert f"self.{name}" in init, name
    connection = h11.Connection(h11.SERVER)
    assert connection.their_state is h11.IDLE
    assert connection.trailing_data == (b"", False)  # (bytes received and not parsed yet, closed)
    assert RawData(data=b"x").data == b"x" and Closed()


def test_hypercorn_config_sockets_hook() -> None:
    """runtime/server.py overrides Config.create_sockets to set TCP_USER_TIMEOUT on the listening sockets."""
    assert callable(Config.create_sockets)
    assert list(inspect.signature(Config.create_sockets).parameters) == ["self"]
    fields = {f.name for f in dataclasses.fields(Sockets)}
    assert {"secure_sockets", "insecure_sockets"} <= fields


def test_hypercorn_config_attributes() -> None:
    """runtime/server.py's hypercorn_config sets these (a misspelt or removed one would silently do nothing)."""
    config = Config()
    for name in ("bind", "backlog", "accesslog", "errorlog", "graceful_timeout", "keep_alive_timeout"):
        assert hasattr(config, name), name


def test_hypercorn_trio_serve_reports_binds() -> None:
    """run_server starts serve in a nursery and reads the bound addresses from task_status."""
    params = inspect.signature(serve).parameters
    assert {"shutdown_trigger", "task_status"} <= set(params)


@pytest.mark.parametrize("name", ["preprocess_request", "dispatch_request", "process_response", "asgi_app"])
def test_quart_request_steps_commhub_app_overrides(name: str) -> None:
    """app.py's CommhubApp overrides these steps (inline hooks, the write-lock retry, the ASGI fast paths) and
    calls the originals with the same arguments."""
    method = getattr(QuartTrio, name)
    assert inspect.iscoroutinefunction(method)
    params = list(inspect.signature(method).parameters)
    expected = {"preprocess_request": ["self", "request_context"],
                "dispatch_request": ["self", "request_context"],
                "process_response": ["self", "response", "request_context"],
                "asgi_app": ["self", "scope", "receive", "send"]}[name]
    assert params == expected


def test_quart_hook_registries() -> None:
    """CommhubApp skips quart's hook machinery when nothing is registered: it looks at these registries."""
    app = QuartTrio("internals")
    for name in ("before_request_funcs", "url_value_preprocessors", "after_request_funcs"):
        assert isinstance(getattr(app, name), dict), name
    assert callable(app.session_interface.is_null_session)


async def test_quart_request_context_after_request_functions() -> None:
    """CommhubApp.process_response reads the request context's private list of per-request after hooks, through
    quart.globals.request_ctx."""
    app = QuartTrio("internals")
    async with app.test_request_context("/"):
        ctx = request_ctx._get_current_object()  # type: ignore[attr-defined]
        assert isinstance(ctx, RequestContext)
        assert ctx._after_request_functions == []
        assert hasattr(ctx, "session")


def test_quart_request_get_data_without_cache() -> None:
    """api/common.read_body and app.drain_request_body read the body once with cache=False."""
    assert "cache" in inspect.signature(Request.get_data).parameters


def test_quart_config_keys() -> None:
    """create_app sets these quart config keys (body cap and body timeout)."""
    app = QuartTrio("internals")
    for key in ("MAX_CONTENT_LENGTH", "BODY_TIMEOUT"):
        assert key in app.config, key
    assert hasattr(app.json, "sort_keys") and hasattr(app.json, "ensure_ascii")
