"""A real HTTP receiver for webhook tests and the benchmark: a raw trio server on 127.0.0.1 (h11 for HTTP/1.1).

Each POST is recorded (headers, body); `mode` says how it is answered: "ok" (204), "fail" (500), "hang" (never).
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import h11
import trio


@dataclass
class Received:
    """One POST as the receiver saw it."""

    headers: dict[str, str]
    body: bytes
    status: int | None  # what it answered (None: it hung)

    @property
    def payload(self) -> dict[str, Any]:
        """The body as JSON."""
        return json.loads(self.body)


@dataclass
class Receiver:
    """The receiver's state: its port, what it received, how it answers."""

    mode: str = "ok"
    port: int = 0
    received: list[Received] = field(default_factory=list)
    answer: Callable[[Received], str] | None = None  # per request: "ok" | "fail" | "hang" (overrides mode)
    tls: ssl.SSLContext | None = None  # serve https with this context (a test CA's certificate for 127.0.0.1)
    _changed: trio.Event = field(default_factory=trio.Event)

    @property
    def url(self) -> str:
        """Where to point a webhook (to loopback: webhook_targets=loopback)."""
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/hook"

    def accepted_ids(self) -> list[int]:
        """Event ids of the POSTs answered 2xx, in arrival order, each once (the receiver dedups by id)."""
        seen: list[int] = []
        for item in self.received:
            if item.status and 200 <= item.status < 300 and item.payload["id"] not in seen:
                seen.append(item.payload["id"])
        return seen

    async def wait_until(self, condition: Callable[[], bool], timeout: float = 15) -> None:  # noqa: ASYNC109 (a deadline)
        """Wait (bounded) until condition() holds, re-checking after each request."""
        with trio.fail_after(timeout):
            while not condition():
                await self._changed.wait()

    async def _serve_one(self, stream: trio.abc.Stream) -> None:
        conn = h11.Connection(h11.SERVER)
        while True:
            headers: dict[str, str] = {}
            body = b""
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    conn.receive_data(bytes(data))
                elif isinstance(event, h11.Request):
                    headers = {k.decode().lower(): v.decode() for k, v in event.headers}
                elif isinstance(event, h11.Data):
                    body += bytes(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    return
            item = Received(headers, body, None)
            mode = self.answer(item) if self.answer else self.mode
            self.received.append(item)
            self._changed.set()
            self._changed = trio.Event()
            if mode == "hang":
                await trio.sleep_forever()
            item.status = 204 if mode == "ok" else 500
            await stream.send_all(conn.send(h11.Response(status_code=item.status, headers=[("content-length", "0")]))
                                  + (conn.send(h11.EndOfMessage()) or b""))
            self._changed.set()
            self._changed = trio.Event()
            if conn.our_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()

    async def _handle(self, stream: trio.abc.Stream) -> None:
        try:
            await self._serve_one(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError):
            pass
        finally:
            await stream.aclose()

    async def run(self, *, task_status: trio.TaskStatus[Receiver] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on 127.0.0.1:<port> (0: an ephemeral one) and serve until cancelled."""
        tcp = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
        self.port = tcp[0].socket.getsockname()[1]
        listeners: list[trio.abc.Listener[trio.abc.Stream]] = list(tcp)
        if self.tls:  # the handshake runs in the handler's task (a failed one only ends that connection)
            listeners = [trio.SSLListener(listener, self.tls, https_compatible=True) for listener in tcp]
        async with trio.open_nursery() as nursery:
            task_status.started(self)
            await trio.serve_listeners(self._handle, listeners, handler_nursery=nursery)


async def start_receiver(nursery: trio.Nursery, mode: str = "ok", port: int = 0,
                         tls: ssl.SSLContext | None = None) -> Receiver:
    """A receiver running in the nursery (https when given a server TLS context)."""
    return await nursery.start(Receiver(mode, port, tls=tls).run)
