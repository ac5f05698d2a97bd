"""The server lifecycle: one root nursery owns hypercorn (and through it every SSE stream, each with its own
heartbeat deadline) and the presence sweeper.

Shutdown (SIGINT/SIGTERM, or `ServerHandle.shutdown()` in tests): close every SSE stream and long-poll
ourselves (hypercorn would wait its grace period and then cut them), let in-flight requests finish,
stop the background jobs, checkpoint and close the database.
"""

from __future__ import annotations

import logging
import signal
import socket
from dataclasses import dataclass, field
from functools import partial

import trio
from hypercorn.config import Config as HyperConfig
from hypercorn.config import Sockets
from hypercorn.trio import serve

from .app import create_app
from .broker import Broker
from .config import Settings
from .db import Database
from .gc_tuning import tune_after_startup
from .service.hub import Hub
from .service.sessions import run_sweeper

log = logging.getLogger("commhub")


@dataclass
class ServerHandle:
    """What a started server reports: where it listens, its hub, and how to stop it."""

    hub: Hub
    binds: list[str]
    port: int
    _stop: trio.Event = field(default_factory=trio.Event)

    @property
    def url(self) -> str:
        """Base URL of the first bind, e.g. http://127.0.0.1:9200."""
        return self.binds[0]

    def shutdown(self) -> None:
        """Begin a graceful shutdown: end streams and long-polls, then stop accepting and drain."""
        if not self._stop.is_set():
            log.info("shutting down: closing %d stream(s)", self.hub.broker.subscriber_count())
            self.hub.broker.close_all()
            self._stop.set()


# Hypercorn shields its socket writes from cancellation, so a client that stops reading while its connection
# stays up (a stuck SSE reader) would hold its stream, and every shutdown, for ever. The kernel cuts off a
# peer that accepts no data for this long (TCP_USER_TIMEOUT, inherited by accepted sockets; Linux).
SEND_STALL_TIMEOUT_MS = 30_000


class _HyperConfig(HyperConfig):
    def create_sockets(self) -> Sockets:
        """Hypercorn's listening sockets, with the stall timeout set (accepted connections inherit it)."""
        sockets = super().create_sockets()
        if hasattr(socket, "TCP_USER_TIMEOUT"):
            for sock in sockets.secure_sockets + sockets.insecure_sockets:
                if sock.family in (socket.AF_INET, socket.AF_INET6):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, SEND_STALL_TIMEOUT_MS)
        return sockets


def hypercorn_config(settings: Settings) -> HyperConfig:
    """Hypercorn settings for CommHub."""
    config = _HyperConfig()
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    config.bind = [f"{host}:{settings.port}"]
    config.backlog = 2048  # bursts of agents reconnecting at once
    config.accesslog = None  # one line per request is logged by the app
    config.errorlog = logging.getLogger("hypercorn.error")  # through our handler, not a second one
    # Streams and long-polls are ended by us first and requests take milliseconds; an idle keep-alive
    # connection otherwise holds the exit for the whole grace period (measured: 5 s with 5.0).
    config.graceful_timeout = 2.0
    config.keep_alive_timeout = 75.0
    return config


async def _watch_signals(handle: ServerHandle) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("received %s", signal.Signals(signum).name)
            handle.shutdown()


async def run_server(settings: Settings, *, handle_signals: bool = False,
                     task_status: trio.TaskStatus[ServerHandle] = trio.TASK_STATUS_IGNORED) -> None:
    """Run CommHub until shut down; reports a ServerHandle (with the bound port) through task_status."""
    db = Database(settings.db)
    hub = Hub(settings, db, Broker(settings.sse_buffer))
    app = create_app(hub)
    try:
        async with trio.open_nursery() as root:
            await root.start(run_sweeper, hub)
            handle: ServerHandle | None = None
            async with trio.open_nursery() as http:
                stop = trio.Event()
                binds = await http.start(partial(serve, app, hypercorn_config(settings), shutdown_trigger=stop.wait))
                port = int(binds[0].rsplit(":", 1)[1])
                handle = ServerHandle(hub, binds, port, stop)
                if handle_signals:
                    root.start_soon(_watch_signals, handle)
                log.info("CommHub listening on %s (database %s)", ", ".join(binds), settings.db)
                if handle_signals:  # the process's own server (serve), not one of many in a test process
                    tune_after_startup()  # gc: freeze start-up objects, fewer young collections
                task_status.started(handle)
            root.cancel_scope.cancel()
    finally:
        db.close()
        log.info("stopped; database checkpointed")
