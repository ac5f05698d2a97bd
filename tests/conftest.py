"""Shared fixtures: a real CommHub (hypercorn on 127.0.0.1:0, a temp SQLite file) inside the test's nursery."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pg_cluster as pg_cluster_mod
import pytest
import trio

from commhub_lib.config import Settings
from commhub_lib.db import Database, open_engine
from commhub_lib.runtime.server import ServerHandle, run_server

_counter = itertools.count()

# Parallel runs (pytest-xdist; pyproject's addopts say `-n auto`). The tests mostly wait (real servers, real CLIs,
# Chromium), so a box keeps its cores busy with a worker more than it has cores (3 on CI's 2 cores); each worker
# beyond that adds load that the tests which time themselves feel (docs/testing.md has the measurements).
EXTRA_WORKERS = 1
MAX_WORKERS = 8


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """How many workers `-n auto` starts: none (this process runs the tests) when only files or test ids were
    named — a single module's run is quicker without the workers' start-up — else cores + EXTRA_WORKERS."""
    if config.args_source == pytest.Config.ArgsSource.ARGS and not any(
            os.path.isdir(arg.split("::", 1)[0]) for arg in config.args):
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(MAX_WORKERS, cores + EXTRA_WORKERS)


# Variables for the test harness itself, kept: where tests/pg_cluster.py finds PostgreSQL (COMMHUB_PG_BINDIR) and
# puts its clusters (COMMHUB_PG_TMP). No setting of CommHub starts so.
HARNESS_PREFIX = "COMMHUB_PG_"


def isolate_home(mp: pytest.MonkeyPatch, home: Path) -> None:
    """Point HOME, the XDG directories and TMPDIR into `home` and drop every COMMHUB_* setting but the harness's
    (undone by mp).

    Tests run in parallel workers: anything written under ~ (a CLI's default state file, an agent CLI's ~/.claude,
    ~/.codex or ~/.gemini, Chromium's ~/.pki, a cache) or to a fixed name in the temp dir would otherwise be shared
    with the tests running beside it, and with the developer's own files. Child processes inherit the environment,
    so they are isolated too; a developer's COMMHUB_URL or COMMHUB_TOKEN never reaches a test."""
    mp.setenv("HOME", str(home))
    for var, sub in (("XDG_CONFIG_HOME", ".config"), ("XDG_STATE_HOME", ".local/state"),
                     ("XDG_CACHE_HOME", ".cache"), ("XDG_DATA_HOME", ".local/share"), ("TMPDIR", "tmp")):
        (home / sub).mkdir(parents=True, exist_ok=True)
        mp.setenv(var, str(home / sub))
    for var in [v for v in os.environ if v.startswith("COMMHUB_") and not v.startswith(HARNESS_PREFIX)]:
        mp.delenv(var)


@pytest.fixture(scope="session", autouse=True)
def session_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A HOME of this test process's own, for session- and module-scoped fixtures (the module's Chromium)."""
    home = tmp_path_factory.mktemp("session-home")
    with pytest.MonkeyPatch.context() as mp:
        isolate_home(mp, home)
        yield home


@pytest.fixture(autouse=True)
def own_home(session_home: Path, tmp_path_factory: pytest.TempPathFactory,
             monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test its own HOME (see isolate_home); a test that needs a variable sets it after this fixture."""
    home = tmp_path_factory.mktemp("home")
    isolate_home(monkeypatch, home)
    return home


# Rate limits are lifted by default so tests can register many users (and one agent send another more than 30
# items a minute); tests of the limits set them. The loop guard's duplicate window stays on.
TEST_DEFAULTS = dict(port=0, register_rate_per_minute=0, login_rate_per_minute=0, token_rate_per_minute=0,
                     password_rate_per_minute=0, pair_rate_per_minute=0)


def pytest_addoption(parser: pytest.Parser) -> None:
    """--engine postgresql: the test servers (make_settings) run on PostgreSQL (docs/postgresql.md)."""
    parser.addoption("--engine", choices=("sqlite", "postgresql"), default="sqlite",
                     help="database engine of the test servers made by make_settings (default sqlite)")


# The engine of the servers make_settings describes (pytest --engine), and on PostgreSQL the database each SQLite
# path stands for (a server restarted on the same `db` finds its data again).
ENGINE = {"name": "sqlite"}
_PG_DATABASES: dict[str, str] = {}
_PG_TEMPLATE: dict[str, str] = {}


def pytest_configure(config: pytest.Config) -> None:
    """Record --engine for make_settings."""
    ENGINE["name"] = config.getoption("--engine", default="sqlite") or "sqlite"


def pg_database_at_schema(cluster: pg_cluster_mod.Cluster) -> str:
    """URL of a new PostgreSQL database already at the current schema: a copy of a template migrated once per
    cluster (CREATE DATABASE ... TEMPLATE copies files: faster than running schema_pg.sql each time)."""
    from commhub_lib.db_pg import PgDatabase

    key = str(cluster.root)
    if key not in _PG_TEMPLATE:
        url = cluster.fresh_database()
        PgDatabase(url).close()
        _PG_TEMPLATE[key] = url.split("///", 1)[1].split("?", 1)[0]
    return cluster.fresh_database(template=_PG_TEMPLATE[key])


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings for a test server: ephemeral port, a database file in tmp_path (with --engine postgresql: a
    PostgreSQL database of its own), limits off."""
    values = {**TEST_DEFAULTS, "db": str(tmp_path / "hub.db"), **overrides}
    if ENGINE["name"] == "postgresql" and "database_url" not in overrides:
        path = str(values["db"])
        if path not in _PG_DATABASES:
            _PG_DATABASES[path] = pg_database_at_schema(pg_cluster_mod.current())
        values["database_url"] = _PG_DATABASES[path]
    return Settings(**values)


async def start_server(nursery: trio.Nursery, settings: Settings) -> ServerHandle:
    """Start a real server in the nursery and return its handle (bound port, hub, shutdown())."""
    return await nursery.start(run_server, settings)


@asynccontextmanager
async def own_server(tmp_path: Path, name: str, **overrides: Any) -> AsyncIterator[ServerHandle]:
    """A server with special settings (its own database file), shut down gracefully when the block ends."""
    async with trio.open_nursery() as nursery:
        handle = await start_server(nursery, make_settings(tmp_path, db=str(tmp_path / f"{name}.db"), **overrides))
        try:
            yield handle
        finally:
            handle.shutdown()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Default test settings (override with dataclasses.replace)."""
    return make_settings(tmp_path)


@pytest.fixture
async def server(nursery: trio.Nursery, settings: Settings) -> AsyncIterator[ServerHandle]:
    """A running server; shut down gracefully at the end of the test."""
    handle = await start_server(nursery, settings)
    yield handle
    handle.shutdown()


@pytest.fixture
async def client(server: ServerHandle) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client for the running server."""
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as c:
        yield c


def seed_owner_and_networks(db: Any, network_ids: Any) -> None:
    """A store-level fixture: user 'u_1' (admin) owning one network per id (call inside db.write())."""
    db.execute("INSERT INTO users(user_id, username, display_name, password_hash, role, created_at,"
               " updated_at) VALUES ('u_1', 'p', 'p', 'x', 'admin', 't', 't')")
    for n, net in enumerate(network_ids):
        db.execute("INSERT INTO networks(network_id, name, owner_id, created_at, updated_at)"
                   " VALUES (?, ?, 'u_1', 't', 't')", (net, f"n{n}"))


def unique(prefix: str = "user") -> str:
    """A username unique within the test run."""
    return f"{prefix}{next(_counter)}"


@dataclasses.dataclass
class Account:
    """A registered user: its tokens and default network."""

    username: str
    password: str
    user_id: str
    token: str
    network_token: str
    network_id: str
    role: str

    @property
    def auth(self) -> dict[str, str]:
        """Headers with the user token."""
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def net_auth(self) -> dict[str, str]:
        """Headers with the default network token."""
        return {"Authorization": f"Bearer {self.network_token}"}


async def register(client: httpx.AsyncClient, username: str | None = None, password: str = "secret123",
                   **extra: Any) -> Account:
    """Register a user through the API and return its Account."""
    username = username or unique()
    r = await client.post("/api/auth/register", json={"username": username, "password": password, **extra})
    assert r.status_code == 200, r.text
    body = r.json()
    return Account(username, password, body["user"]["user_id"], body["token"], body["network_token"],
                   body["network_id"], body["user"]["role"])


async def create_token(client: httpx.AsyncClient, account: Account, name: str = "agent",
                       alias: str | None = None, network_id: str | None = None) -> str:
    """Create a network token (optionally bound to an alias) and return its secret."""
    payload: dict[str, Any] = {"name": name, "network_id": network_id or account.network_id}
    if alias:
        payload["alias"] = alias
    r = await client.post("/api/tokens", json=payload, headers=account.auth)
    assert r.status_code == 200, r.text
    return r.json()["token"]


async def mcp_call(client: httpx.AsyncClient, token: str, tool: str, arguments: dict[str, Any] | None = None,
                   session_id: str | None = None) -> dict[str, Any]:
    """A bare JSON-RPC tools/call (like the reference's curl); returns the JSON-RPC `result`."""
    headers = {"Authorization": f"Bearer {token}"}
    if session_id:
        headers["Mcp-Session-Id"] = session_id
    r = await client.post("/mcp", headers=headers, json={
        "jsonrpc": "2.0", "id": next(_counter), "method": "tools/call",
        "params": {"name": tool, "arguments": arguments or {}}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert "result" in body, body
    return body["result"]


async def tool(client: httpx.AsyncClient, token: str, name: str, args: dict[str, Any] | None = None,
               session_id: str | None = None) -> dict[str, Any]:
    """An MCP tool call that must succeed; its structured result."""
    result = await mcp_call(client, token, name, args, session_id)
    assert not result.get("isError"), result
    return result["structuredContent"]


async def tool_error(client: httpx.AsyncClient, token: str, name: str, args: dict[str, Any] | None = None,
                     session_id: str | None = None) -> dict[str, Any]:
    """An MCP tool call that must fail as a tool error; its {error, message} (the message never empty)."""
    result = await mcp_call(client, token, name, args, session_id)
    assert result.get("isError") is True, result
    assert result["structuredContent"]["message"], result
    return result["structuredContent"]


# --- PostgreSQL (tests/pg_cluster.py): one throwaway cluster per test process (so per xdist worker) -------------
# Skipped when PostgreSQL is not installed, except under CI=true: CI promises both engines, so there it fails.

@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[pg_cluster_mod.Cluster]:
    """A running PostgreSQL cluster (unix socket, trust), stopped and removed at the end of the session."""
    try:
        cluster = pg_cluster_mod.start_cluster()
    except pg_cluster_mod.PostgresUnavailable as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but PostgreSQL is unavailable: {exc}", pytrace=False)
        pytest.skip(f"PostgreSQL is unavailable: {exc}")
    try:
        yield cluster
    finally:
        pg_cluster_mod.stop_cluster(cluster)


@pytest.fixture(autouse=True)
def _engine_cluster(request: pytest.FixtureRequest) -> None:
    """With --engine postgresql, every test has the process's cluster running (make_settings uses it)."""
    if ENGINE["name"] == "postgresql":
        request.getfixturevalue("pg_cluster")


# The store and service tests on both engines: `engine` (parametrized) and `make_db` (new empty databases of it).
MakeDb = Callable[[], Database]


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest) -> str:
    """The engine under test."""
    if request.param == "postgresql":
        request.getfixturevalue("pg_cluster")  # skips (or fails under CI) without PostgreSQL
    return str(request.param)


@pytest.fixture
def make_db(engine: str, tmp_path: Path) -> Iterator[MakeDb]:
    """A factory of new empty databases of the engine under test (closed at the end)."""
    made: list[Database] = []

    def make() -> Database:
        if engine == "postgresql":
            db = open_engine(pg_database_at_schema(pg_cluster_mod.current()))
        else:
            db = open_engine(str(tmp_path / f"db{len(made)}.db"))
        made.append(db)
        return db

    yield make
    for db in made:
        with contextlib.suppress(Exception):  # a test may have closed it already
            db.close()


@pytest.fixture
def pg_url(pg_cluster: pg_cluster_mod.Cluster) -> Iterator[str]:
    """URL of a new empty PostgreSQL database for this test (dropped afterwards)."""
    url = pg_cluster.fresh_database()
    yield url
    pg_cluster.drop_database(url)
