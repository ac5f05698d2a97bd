"""Fixes to hypercorn, installed by an explicit call when the server starts (`install()`, from run_server), not
as a side effect of an import.

Each one replaces a method of a hypercorn internal (TCPServer._close, H11Protocol._create_stream and .handle):
tests/test_stack_internals.py checks that they still exist, and pyproject.toml bounds hypercorn's version.
"""

from __future__ import annotations

import h11
import trio
from hypercorn.events import Closed, Event, RawData
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.trio.tcp_server import TCPServer

from ..api.common import error_bytes
from ..asgi import AMBIGUOUS_LENGTH_BODY
from ..logs import log_access


def install() -> None:
    """Install every fix (idempotent: a process that runs many servers, like the tests, installs them once)."""
    shield_connection_close()
    refuse_ambiguous_length()
    cap_incomplete_headers()


def installed() -> bool:
    """Whether install() has run in this process."""
    return all(getattr(method, marker, False) for method, marker in (
        (TCPServer._close, "_commhub_shielded"), (H11Protocol._create_stream, "_commhub_refuses"),
        (H11Protocol.handle, "_commhub_caps")))


def shield_connection_close() -> None:
    """Make hypercorn's connection close uncancellable.

    When a response ends before its request body was fully received (a 408 for a slow body, a 413), the last
    send runs inside quart-trio's request nursery, which the disconnect it triggers has just cancelled:
    hypercorn's `_close()` then dies at its first checkpoint (send_eof) and the socket stays open for as long
    as the client likes (measured: never closed), pinning a file descriptor. Both steps are immediate
    syscalls, so shielding them cannot hang."""
    original = TCPServer._close
    if getattr(original, "_commhub_shielded", False):
        return

    async def _close(self: TCPServer) -> None:
        with trio.CancelScope(shield=True):
            await original(self)

    _close._commhub_shielded = True  # type: ignore[attr-defined]
    TCPServer._close = _close  # type: ignore[method-assign]


_AMBIGUOUS_ANSWER = (b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                     b"connection: close\r\n\r\n%s" % (len(AMBIGUOUS_LENGTH_BODY), AMBIGUOUS_LENGTH_BODY))


def refuse_ambiguous_length() -> None:
    """Refuse an HTTP/1.1 request with both Content-Length and Transfer-Encoding before anything reads it: 400,
    then the connection is closed.

    h11 frames such a body as chunked and passes the request on; a proxy in front that framed it by its
    Content-Length would see different requests on the same bytes (request smuggling). Refused here, at the
    connection, nothing after the headers is parsed: answering from the app instead raced hypercorn's reader,
    which closed the connection under the answer when more bytes followed (measured: a head without body)."""
    original = H11Protocol._create_stream
    if getattr(original, "_commhub_refuses", False):
        return

    async def _create_stream(self: H11Protocol, request: h11.Request) -> None:
        names = [name for name, _ in request.headers]
        if b"transfer-encoding" in names and b"content-length" in names:
            log_access(self.client[0] if self.client else None, request.method.decode("ascii", "replace"),
                       request.target.decode("latin-1").split("?", 1)[0], 400, 0.0)
            await self.send(RawData(data=_AMBIGUOUS_ANSWER))
            await self.send(Closed())  # no stream: hypercorn's reader stops at the body's first bytes
            return
        await original(self, request)

    _create_stream._commhub_refuses = True  # type: ignore[attr-defined]
    H11Protocol._create_stream = _create_stream  # type: ignore[method-assign]


def _incomplete_headers(protocol: H11Protocol) -> bool:
    """Whether this connection holds part of a request's headers (bytes arrived, the head not complete)."""
    connection = protocol.connection
    return (isinstance(connection, h11.Connection) and connection.their_state is h11.IDLE
            and bool(connection.trailing_data[0]))


def cap_incomplete_headers() -> None:
    """Count, per client address, the connections that have sent part of a request's headers and not the rest;
    past max_incomplete_headers_per_ip the connection is answered 429 and closed at once.

    The header timeout (keep_alive_timeout) bounds how long one such connection lasts; this bounds how many one
    address holds at once (slowloris: each costs a file descriptor and a task). A real client sends its head in
    one packet, so it is never counted: only a head that arrives in pieces is, for as long as it is unfinished."""
    original = H11Protocol.handle
    if getattr(original, "_commhub_caps", False):
        return

    async def handle(self: H11Protocol, event: Event) -> None:
        await original(self, event)
        config = self.config
        # runtime/server.py's config carries the cap and the table; hypercorn's own Config has neither.
        cap = getattr(config, "max_incomplete_headers_per_ip", 0)
        if not cap:
            return
        counted = getattr(self, "_commhub_incomplete", False)
        pending = isinstance(event, RawData) and _incomplete_headers(self)
        if pending == counted:
            return
        address = self.client[0] if self.client else "unknown"
        table: dict[str, int] = config.incomplete_headers  # type: ignore[attr-defined]
        if not pending:
            self._commhub_incomplete = False  # type: ignore[attr-defined]
            if table.get(address, 0) <= 1:
                table.pop(address, None)
            else:
                table[address] -= 1
            return
        if table.get(address, 0) >= cap:
            log_access(address, "-", "(incomplete request headers)", 429, 0.0)
            await self.send(RawData(data=_too_many_incomplete(cap, config.keep_alive_timeout)))
            await self.send(Closed())
            return
        self._commhub_incomplete = True  # type: ignore[attr-defined]
        table[address] = table.get(address, 0) + 1

    handle._commhub_caps = True  # type: ignore[attr-defined]
    H11Protocol.handle = handle  # type: ignore[method-assign]


def _too_many_incomplete(cap: int, header_timeout: float) -> bytes:
    body = error_bytes("too_many_connections", f"this address already has {cap} connection(s) still sending their "
                       "request headers; finish or close them first (max_incomplete_headers_per_ip, "
                       "COMMHUB_MAX_INCOMPLETE_HEADERS_PER_IP)")
    return (b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"retry-after: %d\r\nconnection: close\r\n\r\n%s" % (len(body), max(1, round(header_timeout)), body))
