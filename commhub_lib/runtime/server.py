"""The server lifecycle: one root nursery owns hypercorn (and through it every SSE stream, each with its own
heartbeat deadline), the presence sweeper and, in `serve`, the stream gc job.

Shutdown (SIGINT/SIGTERM, or `ServerHandle.shutdown()` in tests): store presence for every streaming alias
once, close every SSE stream and long-poll at once ourselves (hypercorn would wait its grace period and then
cut them), let in-flight requests finish, stop the background jobs, checkpoint and close the database.
"""

from __future__ import annotations

import fcntl
import gc
import ipaddress
import logging
import os
import signal
import socket
from dataclasses import dataclass, field
from functools import partial

import apsw
import trio
from hypercorn.config import Config as HyperConfig
from hypercorn.config import Sockets
from hypercorn.trio import serve

from .. import auth
from ..bridge.forwarder import run_bridge
from ..broker import Broker
from ..config import Settings
from ..db import LOOP_BUSY_TIMEOUT_MS, Database, DatabaseError, others_can_read
from ..errors import CommhubError
from ..http.app import create_app
from ..service import sessions
from ..service.fanout import Fanout, run_fanout
from ..service.hub import Hub
from ..service.jobs import run_sweeper
from ..service.leader import Leadership
from ..service.schedules import run_scheduler
from ..service.webhooks import run_webhooks
from ..store import users as user_store
from . import patches
from .gc_tuning import keep_streams_frozen, tune_after_startup
from .malloc_tuning import keep_freed_memory
from .stalls import log_loop_stalls

log = logging.getLogger("commhub")


@dataclass
class ServerHandle:
    """What a started server reports: where it listens, its hub, and how to stop it."""

    hub: Hub
    binds: list[str]
    port: int
    _stop: trio.Event = field(default_factory=trio.Event)
    # Connections still sending request headers, by client address (what max_incomplete_headers_per_ip caps).
    incomplete_headers: dict[str, int] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """Base URL of the first bind, e.g. http://127.0.0.1:9200."""
        return self.binds[0]

    def shutdown(self) -> None:
        """Begin a graceful shutdown: end every stream and long-poll at once, then stop accepting and drain.

        Every stream's loop waits on its own channel, and closing them all here wakes them all in the same
        tick: each writes its closing comment and ends, and hypercorn closes each connection once its response
        is complete. What a closing stream would write one by one (its alias's last sign of life, a log line)
        is done here once for all of them."""
        if not self._stop.is_set():
            touched = sessions.touch_streaming(self.hub)
            log.info("shutting down: closing %d stream(s) (%d alias(es) online)",
                     self.hub.broker.subscriber_count(), touched)
            self.hub.broker.close_all()
            self._stop.set()


# Hypercorn shields its socket writes from cancellation, so a client that stops reading while its connection
# stays up (a stuck SSE reader) would hold its stream, and every shutdown, for ever. The kernel cuts off a
# peer that accepts no data for this long (TCP_USER_TIMEOUT, inherited by accepted sockets; Linux).
SEND_STALL_TIMEOUT_MS = 30_000


class _HyperConfig(HyperConfig):
    # Connections still sending their request headers, by client address, and how many one address may hold
    # (max_incomplete_headers_per_ip; 0 = no limit): see patches.cap_incomplete_headers.
    incomplete_headers: dict[str, int]
    max_incomplete_headers_per_ip: int = 0

    def create_sockets(self) -> Sockets:
        """Hypercorn's listening sockets, with the stall timeout set (accepted connections inherit it)."""
        sockets = super().create_sockets()
        if hasattr(socket, "TCP_USER_TIMEOUT"):
            for sock in sockets.secure_sockets + sockets.insecure_sockets:
                if sock.family in (socket.AF_INET, socket.AF_INET6):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, SEND_STALL_TIMEOUT_MS)
        return sockets


def hypercorn_config(settings: Settings) -> _HyperConfig:
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
    # Hypercorn's idle timer runs from connection start until complete request headers arrive, and between
    # requests: it is what bounds a client that sends half its headers (or dribbles them). Streams and
    # long-polls are requests in progress, so it never cuts them. Slow bodies: BODY_TIMEOUT in http/app.py.
    config.keep_alive_timeout = settings.header_timeout_seconds
    config.incomplete_headers = {}
    config.max_incomplete_headers_per_ip = settings.max_incomplete_headers_per_ip
    return config


class StartupError(Exception):
    """The server cannot start (database unusable, another instance running): one line for the operator."""


def lock_database(path: str) -> int:
    """Take the one-instance lock: an exclusive flock on `<db>.lock`, held (through the returned fd) for
    the server's life and dropped by the kernel when the process ends, even on kill -9.

    A separate file, not the database: closing any other descriptor of the database file would drop
    SQLite's own POSIX locks; and not in Database(), since CLI commands (backup) open the file while a
    server runs."""
    lock_path = os.path.realpath(path) + ".lock"  # one lock whatever path (relative, a symlink) names the file
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise StartupError(f"cannot open the database {path}: cannot create {lock_path}: "
                           f"{exc.strerror or exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StartupError(f"another CommHub server is already running on {path}; stop it first (one server "
                           "per database: a second one would never deliver to the first one's streams)") from None
    return fd


def open_database(path: str) -> Database:
    """Open (and migrate) the server's database, or a StartupError that says why in one line."""
    try:
        db = Database(path, busy_timeout_ms=LOOP_BUSY_TIMEOUT_MS)
    except RuntimeError as exc:  # newer schema
        raise StartupError(f"cannot open the database {path}: {exc}") from exc
    except apsw.CantOpenError as exc:
        raise StartupError(f"cannot open the database {path}: the file or its directory does not exist or is not "
                           "accessible") from exc
    except apsw.NotADBError as exc:
        raise StartupError(f"cannot open the database {path}: it is not a SQLite database") from exc
    except (apsw.ReadOnlyError, apsw.PermissionsError, apsw.AuthError) as exc:
        raise StartupError(f"cannot open the database {path}: it is read-only here (CommHub needs to write it "
                           "and its directory)") from exc
    except (apsw.Error, OSError) as exc:
        raise StartupError(f"cannot open the database {path}: {type(exc).__name__}: {exc}") from exc
    if db.con.readonly("main"):  # SQLite silently falls back to read-only for a file it may not write
        db.con.close()
        raise StartupError(f"cannot open the database {path}: it is read-only here (CommHub needs to write it "
                           "and its directory)")
    return db


def open_postgres(url: str, pool_size: int | None = None) -> Database:
    """Open (and migrate) a PostgreSQL database (db_pg.py), or a StartupError that says why in one line."""
    try:
        from ..db_pg import PgDatabase, redacted  # noqa: PLC0415 (optional dependency: psycopg)
    except ImportError as exc:
        raise StartupError("--database postgresql://... needs the postgres extra: pip install "
                           f"'commhub[postgres]' ({exc})") from exc
    try:
        return PgDatabase(url) if pool_size is None else PgDatabase(url, pool_size=pool_size)
    except RuntimeError as exc:  # newer schema
        raise StartupError(f"cannot open the database {redacted(url)}: {exc}") from exc
    except CommhubError as exc:  # cannot connect
        raise StartupError(f"cannot open the database {redacted(url)}: {exc.message}") from exc
    except DatabaseError as exc:
        raise StartupError(f"cannot open the database {redacted(url)}: {exc}") from exc


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _database_name(settings: Settings) -> str:
    """The database the server runs on, as logs show it (a URL's password hidden)."""
    if not settings.database_url:
        return settings.db
    from ..db_pg import redacted  # noqa: PLC0415 (only a PostgreSQL hub gets here)

    return redacted(settings.database_url)


def log_startup(settings: Settings, binds: list[str], users: int = 0) -> None:
    """Where the server listens, the first step on a hub with no users yet, and a warning for an open
    registration."""
    log.info("CommHub listening on %s (database %s, %d user(s))", ", ".join(binds),
             _database_name(settings), users)
    if not users:
        log.info("first step: register the admin (the first user is the admin): curl -X POST "
                 "%s/api/auth/register -H 'Content-Type: application/json' "
                 "-d '{\"username\": \"admin\", \"password\": \"<at least 6 characters>\"}'", binds[0])
    if not _is_loopback(settings.host) and not settings.public_url and not settings.allowed_hosts:
        log.info("requests are answered when they name this hub by an IP address, localhost or this machine's name "
                 "(%s); for a DNS name clients use, set COMMHUB_ALLOWED_HOSTS or COMMHUB_PUBLIC_URL (others get 421: "
                 "the guard against DNS rebinding)", socket.gethostname())
    if not _is_loopback(settings.host) and not settings.auth_token:
        log.warning("listening on %s beyond loopback without COMMHUB_AUTH_TOKEN: anyone who can reach this port "
                    "can register (and the first user becomes admin); set COMMHUB_AUTH_TOKEN", settings.host)


async def _watch_signals(handle: ServerHandle) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("received %s", signal.Signals(signum).name)
            # The process is about to exit: a collection now (closing thousands of streams frees enough to
            # trigger several, a full one pausing ~0.3-0.7 s at 5,000 streams) would only delay the exit.
            gc.disable()
            handle.shutdown()


async def _start_fanout(hub: Hub, url: str, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """NOTIFY on each commit that writes events, and the listener job (service/fanout.py), on PostgreSQL."""
    from ..db_pg import EventListener, PgDatabase, notify_events_on_commit, notify_now  # noqa: PLC0415 (optional)

    db = hub.db
    assert isinstance(db, PgDatabase)
    hub.fanout = fanout = Fanout(hub)
    notify_events_on_commit(db, fanout.origin, fanout.take_range)
    fanout.notify = partial(notify_now, db)
    await run_fanout(hub, EventListener(url), task_status=task_status)


# The background workers that run once per database (service/leader.py): the webhook outbox (service/webhooks.py),
# schedules' runs (service/schedules.py), the A2A client's outbox (bridge/forwarder.py) and the sweeper's upkeep
# (task expiry, pruning, retention: service/jobs.py; on SQLite the one sweeper does its presence part too).
OWNED_WORKERS = (run_webhooks, run_scheduler, run_bridge)


async def _start_owner(hub: Hub, url: str, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """On PostgreSQL: the workers run in the process holding the owner lock (service/leader.py, db_pg.OwnerLock)."""
    from ..db_pg import OwnerLock  # noqa: PLC0415 (optional: psycopg)

    hub.leadership = leadership = Leadership(hub, OwnerLock(url),
                                             [partial(run_sweeper, presence=False), *OWNED_WORKERS])
    await leadership.run(task_status=task_status)


async def run_server(settings: Settings, *, handle_signals: bool = False,
                     task_status: trio.TaskStatus[ServerHandle] = trio.TASK_STATUS_IGNORED) -> None:
    """Run CommHub until shut down; reports a ServerHandle (with the bound port) through task_status.

    Raises StartupError (one line for the operator) when the database is unusable or already served."""
    patches.install()  # hypercorn's fixes, before it serves anything (idempotent: tests run many servers)
    if settings.database_url:  # PostgreSQL: no file to lock or to keep private
        lock_fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)  # closed at the end like the file lock
        try:
            db = open_postgres(settings.database_url, settings.database_pool_size)
        except BaseException:
            os.close(lock_fd)
            raise
    else:
        lock_fd = lock_database(settings.db)
        try:
            db = open_database(settings.db)
        except BaseException:
            os.close(lock_fd)
            raise
    if not settings.database_url and (exposed := others_can_read(settings.db)):
        log.warning("the database is readable by other users of this machine: %s; it holds every message and "
                    "token hash: chmod 600 it (and its -wal and -shm files)", ", ".join(exposed))
    auth.ARGON2_GATE.set_limit(settings.argon2_concurrency)
    hub = Hub(settings, db, Broker(settings.sse_buffer))
    app = create_app(hub)
    try:
        async with trio.open_nursery() as root:
            await root.start(db.run_checkpointer)
            if settings.database_url:  # PostgreSQL: one process of all those on the database runs the workers
                await root.start(partial(run_sweeper, hub, upkeep=False))  # the presence of this process's streams
                await root.start(_start_owner, hub, settings.database_url)
            else:  # SQLite: the .lock file already means this is the one process
                await root.start(run_sweeper, hub)
                for worker in OWNED_WORKERS:
                    await root.start(worker, hub)
            await root.start(sessions.write_stream_presence, hub)  # presence of stream opens, batched
            if settings.database_url:  # PostgreSQL: other processes' events reach this one's streams
                await root.start(_start_fanout, hub, settings.database_url)
            if handle_signals:  # the process's own server (serve): gc is process-wide, tests run many servers
                root.start_soon(keep_streams_frozen, hub.broker)
            # The stall job of the process's own server; also of any server whose metrics count stalls.
            if settings.stall_log_ms and (handle_signals or hub.metrics is not None):
                root.start_soon(partial(log_loop_stalls, threshold_ms=settings.stall_log_ms,
                                        closing=lambda: hub.broker.closing,
                                        on_stall=hub.metrics.observe_stall if hub.metrics is not None else None))
            handle: ServerHandle | None = None
            async with trio.open_nursery() as http:
                stop = trio.Event()
                config = hypercorn_config(settings)
                binds = await http.start(partial(serve, app, config, shutdown_trigger=stop.wait))
                port = int(binds[0].rsplit(":", 1)[1])
                handle = ServerHandle(hub, binds, port, stop, config.incomplete_headers)
                if handle_signals:
                    root.start_soon(_watch_signals, handle)
                log_startup(settings, binds, user_store.count_users(db))
                if handle_signals:  # the process's own server (serve), not one of many in a test process
                    tune_after_startup()  # gc: freeze start-up objects, fewer young collections
                    keep_freed_memory()  # large answers reuse heap memory instead of faulting in fresh pages
                task_status.started(handle)
            log.info("every connection closed; stopping")
            root.cancel_scope.cancel()
    finally:
        if hub.metrics is not None:
            hub.metrics.close()
        try:
            db.close()
            log.info("stopped; database checkpointed")
        except DatabaseError as exc:  # a full disk or a vanished file: the WAL keeps the data; say so and go
            log.error("stopped; the final checkpoint failed (%s: %s): the -wal file next to the database "
                      "holds the latest writes, keep it with the .db", type(exc).__name__, exc)
        finally:
            os.close(lock_fd)
