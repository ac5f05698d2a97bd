"""Several hub processes on one PostgreSQL database share presence, MCP sessions, quotas and the alias claim
(service/shared.py, docs/postgresql.md "Several processes").

Two real `commhub serve --database <pg_url>` processes: a stream held on one shows its alias online (and held by
what) on the other, offline once it closes, and offline within the TTL once its process is killed; an MCP session
made on one is used on the other as the alias it claimed and with the version it negotiated. Two real concurrent
writers (threads, each with its own PostgreSQL connection, held at a barrier so both have read before either writes)
race for one alias and for the last place of each quota: exactly one wins, the other gets the documented error.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from pg_hubs import serve_hub
from test_sse import sse, wait_for

from commhub_lib.config import Settings
from commhub_lib.errors import CommhubError, DatabaseUnavailable
from commhub_lib.ids import now_text
from commhub_lib.models import NetworkCreateRequest, ReportStatus, ScheduleTask, SendMessage, TokenCreateRequest
from commhub_lib.service import accounts, messaging, networks, schedules, sessions
from commhub_lib.service.hub import Hub, Principal
from commhub_lib.store import messages as message_store
from commhub_lib.store import quotas as quota_store
from commhub_lib.store import sessions as session_store
from tests.conftest import Account, create_token, make_settings, own_server, register, tool

WITHIN = 30  # seconds, for one step on a loaded machine (a bound, not a wait)
TTL = 3.0  # stream_presence_ttl_seconds of the processes of these tests


# --- two real hub processes ---

@asynccontextmanager
async def serve(url: str, log: Path) -> AsyncIterator[tuple[str, trio.Process]]:
    """A `commhub.py serve --database <url> --port 0` child with a short presence TTL; yields its base URL (once
    /health answers) and the process."""
    async with serve_hub(url, log, {"COMMHUB_STREAM_PRESENCE_TTL_SECONDS": str(TTL)}) as served:
        yield served


@asynccontextmanager
async def two_hubs(url: str, tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient,
                                                                     trio.Process]]:
    """Clients of two hub processes on one database, and the first one's process."""
    async with serve(url, tmp_path / "a.log") as (a, process_a), serve(url, tmp_path / "b.log") as (b, _):
        async with httpx.AsyncClient(base_url=a, timeout=30) as ca, httpx.AsyncClient(base_url=b, timeout=30) as cb:
            yield ca, cb, process_a


async def record_of(client: httpx.AsyncClient, account: Account, alias: str) -> dict[str, Any]:
    """The /api/status record of one alias, as a process shows it."""
    r = await client.get("/api/status", params={"network_id": account.network_id}, headers=account.auth)
    assert r.status_code == 200, r.text
    found = [s for s in r.json()["sessions"] if s["alias"] == alias]
    assert len(found) == 1, r.json()
    return found[0]


async def until_shown(client: httpx.AsyncClient, account: Account, alias: str,
                      check: Callable[[dict[str, Any]], bool], within: float = WITHIN) -> dict[str, Any]:
    """Poll a process's /api/status until the alias's record passes `check` (bounded); that record."""
    with trio.fail_after(within):
        while True:
            record = await record_of(client, account, alias)
            if check(record):
                return record
            await trio.sleep(0.05)  # polling another process's view, bounded by fail_after


def online(held_by: str, streams: int = 1) -> Callable[[dict[str, Any]], bool]:
    """A record shown online, held by a stream of that kind (and that many streams)."""
    return lambda r: r["online"] and r["held_by"] == held_by and r["streams"] == streams


def offline(record: dict[str, Any]) -> bool:
    """A record shown offline."""
    return not record["online"] and record["status"] == "offline" and record["held_by"] is None


@asynccontextmanager
async def held_stream(client: httpx.AsyncClient, alias: str, token: str,
                      params: dict[str, str] | None = None) -> AsyncIterator[None]:
    """An SSE stream of the alias held open in the background (its process may be killed meanwhile)."""
    opened = trio.Event()

    async def hold() -> None:
        try:
            async with sse(client, alias, token, params=params):
                opened.set()
                await trio.sleep_forever()
        except (httpx.TransportError, httpx.RemoteProtocolError):
            opened.set()  # the process went away

    async with trio.open_nursery() as nursery:
        nursery.start_soon(hold)
        with trio.fail_after(WITHIN):
            await opened.wait()
        yield
        nursery.cancel_scope.cancel()


@pytest.mark.subprocess
@pytest.mark.slow
async def test_a_stream_on_one_process_shows_its_alias_online_on_the_other_until_it_closes_or_the_process_dies(
        pg_url: str, tmp_path: Path) -> None:
    async with two_hubs(pg_url, tmp_path) as (a, b, process_a):
        account = await register(a)
        watcher = await create_token(a, account, "watcher")  # claims its alias by its stream only: no tool call
        boss = await create_token(a, account, "boss")
        await tool(b, boss, "report_status", {"alias": "boss"})
        async with sse(a, "watcher", watcher):
            await until_shown(b, account, "watcher", online("stream"))
            sent = await tool(b, boss, "send_message", {"to": "watcher", "content": "are you there?"})
            assert sent["recipient_online"] is True  # is_online on B counts A's stream
            async with sse(a, "watcher", watcher, params={"holder": "runner"}):
                await until_shown(b, account, "watcher", online("runner", streams=2))
            await until_shown(b, account, "watcher", online("stream"))
        # Closed: offline on B as on A (the close deletes A's row in its own transaction).
        await until_shown(b, account, "watcher", offline)
        sent = await tool(b, boss, "send_message", {"to": "watcher", "content": "gone?"})
        assert sent["recipient_online"] is False
        stats = (await b.get("/api/stats", params={"network_id": account.network_id}, headers=account.auth)).json()
        assert stats["sessions"]["online"] == 1  # the boss, by its tool calls

        async with held_stream(a, "watcher", watcher):
            await until_shown(b, account, "watcher", online("stream"))
            os.kill(process_a.pid, signal.SIGKILL)  # no chance to delete its rows: they must lapse by their TTL
            killed = time.monotonic()
            await until_shown(b, account, "watcher", offline, within=TTL + WITHIN)
            lapsed = time.monotonic() - killed
        # Within the TTL (plus what a loaded machine adds to B's polling), not the 90 s presence timeout.
        assert lapsed <= TTL + 5, lapsed


# --- MCP sessions across processes ---

def _mcp_headers(token: str, sid: str | None, version: str | None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream"}
    if sid:
        headers["Mcp-Session-Id"] = sid
    if version:
        headers["Mcp-Protocol-Version"] = version
    return headers


async def rpc(client: httpx.AsyncClient, token: str, method: str, params: dict[str, Any] | None = None,
              sid: str | None = None, version: str | None = None) -> httpx.Response:
    """One JSON-RPC request to POST /mcp."""
    return await client.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}},
                             headers=_mcp_headers(token, sid, version))


async def initialize(client: httpx.AsyncClient, token: str, version: str) -> str:
    """initialize (+ notifications/initialized) with a protocol version; the session id."""
    r = await rpc(client, token, "initialize", {"protocolVersion": version, "capabilities": {},
                                                "clientInfo": {"name": "pg-shared-test", "version": "1"}})
    assert r.status_code == 200 and r.json()["result"]["protocolVersion"] == version, r.text
    sid = r.headers["mcp-session-id"]
    done = await client.post("/mcp", json={"jsonrpc": "2.0", "method": "notifications/initialized"},
                             headers=_mcp_headers(token, sid, None))
    assert done.status_code == 202, done.text
    return sid


async def call(client: httpx.AsyncClient, token: str, sid: str, name: str, args: dict[str, Any]) -> dict[str, Any]:
    """tools/call in a session that must succeed; the result (structured, or the text's JSON for old versions)."""
    r = await rpc(client, token, "tools/call", {"name": name, "arguments": args}, sid)
    assert r.status_code == 200, r.text
    result = r.json()["result"]
    assert not result.get("isError"), result
    return result.get("structuredContent") or json.loads(result["content"][0]["text"])


@pytest.mark.subprocess
@pytest.mark.slow
async def test_an_mcp_session_made_on_one_process_works_on_the_other_as_its_alias_and_version(
        pg_url: str, tmp_path: Path) -> None:
    async with two_hubs(pg_url, tmp_path) as (a, b, _):
        account = await register(a)
        token = await create_token(a, account, "two agents on one token")
        old = await initialize(a, token, "2024-11-05")  # tools/list without annotations at this version
        assert (await call(a, token, old, "report_status", {"alias": "first"}))["alias"] == "first"
        new = await initialize(a, token, "2025-11-25")
        assert (await call(a, token, new, "report_status", {"alias": "second"}))["alias"] == "second"
        # The token now holds two aliases and last claimed "second": only the stored session says "first".
        assert (await call(b, token, old, "report_status", {}))["alias"] == "first"
        await call(b, token, old, "send_message", {"to": "second", "content": "from the old session, through B"})
        inbox = await call(b, token, new, "get_inbox", {})
        assert [(i["from"], i["content"]) for i in inbox["items"]] == [("first", "from the old session, through B")]
        # The negotiated version came along: 2024-11-05 lists tools without annotations, 2025-11-25 with them.
        listed_old = (await rpc(b, token, "tools/list", {}, old)).json()["result"]["tools"]
        listed_new = (await rpc(b, token, "tools/list", {}, new, "2025-11-25")).json()["result"]["tools"]
        assert not any("annotations" in t for t in listed_old)
        assert any("annotations" in t for t in listed_new)
        # A claim through B is what A acts as from then on.
        assert (await call(b, token, new, "report_status", {"alias": "third"}))["alias"] == "third"
        assert (await call(a, token, new, "report_status", {}))["alias"] == "third"
        # Ended through B (DELETE /mcp): A answers its id 404, as the process that ended it does.
        gone = await b.delete("/mcp", headers=_mcp_headers(token, old, None))
        assert gone.status_code == 204, gone.text
        for client in (a, b):
            r = await rpc(client, token, "tools/call", {"name": "report_status", "arguments": {}}, old)
            assert r.status_code == 404, r.text
            assert r.json()["error"]["data"]["error"] == "session_ended"
        # Another token never takes the session over, on either process.
        stranger = await create_token(a, account, "stranger")
        await tool(a, stranger, "report_status", {"alias": "stranger"})
        r = await rpc(b, stranger, "tools/call", {"name": "report_status", "arguments": {}}, new)
        assert r.status_code == 200 and r.json()["result"]["structuredContent"]["alias"] == "stranger", r.text


# --- two concurrent writers: the alias claim and the quotas ---

BEFORE, AFTER, SKIP = "before", "after", "skip"


class Race:
    """Two writers, each in a thread with its own Hub on its own PostgreSQL connection (what two processes are),
    held at a barrier at the first of some points (module functions wrapped: BEFORE or AFTER the real call; SKIP:
    not called at all, no barrier), so that both have read what the race is about before either writes."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, settings: Settings,
                 points: list[tuple[Any, str, str]]):
        self.settings = settings
        self.barrier = threading.Barrier(2, timeout=WITHIN)
        local = threading.local()

        def hold() -> None:
            if not getattr(local, "held", False):
                local.held = True
                self.barrier.wait()

        for module, name, when in points:
            real = getattr(module, name)

            def wrapped(*args: Any, _real: Any = real, _when: str = when, **kwargs: Any) -> Any:
                if _when == SKIP:
                    return None
                if _when == BEFORE:
                    hold()
                answer = _real(*args, **kwargs)
                if _when == AFTER:
                    hold()
                return answer

            monkeypatch.setattr(module, name, wrapped)

    def run(self, *works: Callable[[Hub], Any]) -> list[Any]:
        """Run each work against its own Hub at once; each one's answer, or the exception it raised."""
        outcomes: list[Any] = [None] * len(works)

        def worker(index: int) -> None:
            db = pg(self.settings)
            try:
                outcomes[index] = works[index](Hub(self.settings, db))
            except Exception as exc:  # the outcome under test
                outcomes[index] = exc
                self.barrier.abort()  # the other must not wait for one that failed before the barrier
            finally:
                db.close()

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(works))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(WITHIN * 2)
        assert not any(t.is_alive() for t in threads)
        return outcomes


def pg(settings: Settings) -> Any:
    """A new connection to the settings' PostgreSQL database (a PgDatabase)."""
    from commhub_lib.db_pg import PgDatabase

    return PgDatabase(settings.database_url)


def read(settings: Settings, query: Callable[[Any], Any]) -> Any:
    """One read on a fresh connection."""
    db = pg(settings)
    try:
        return query(db)
    finally:
        db.close()


def one_wins(outcomes: list[Any], code: str) -> Any:
    """Exactly one outcome is an answer and the other the CommhubError `code` (never a crash); the answer."""
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(errors) == 1, outcomes
    assert isinstance(errors[0], CommhubError) and errors[0].code == code, repr(errors[0])
    assert errors[0].status == 409, errors[0].status
    return next(o for o in outcomes if not isinstance(o, BaseException))


@pytest.fixture
async def pg_team(pg_url: str, tmp_path: Path) -> AsyncIterator[tuple[Settings, Account, list[Principal], Principal]]:
    """Settings of a hub on pg_url, an account, the principals of two of its network tokens (nothing claimed yet)
    and the person's own."""
    async with own_server(tmp_path, "setup", database_url=pg_url) as handle:
        async with httpx.AsyncClient(base_url=handle.url, timeout=30) as client:
            account = await register(client)
            secrets = [await create_token(client, account, f"racer {i}") for i in range(2)]
    settings = make_settings(tmp_path, database_url=pg_url)
    db = pg(settings)
    try:
        hub = Hub(settings, db)
        agents = [accounts.authenticate(hub, s) for s in secrets]
        person = accounts.authenticate(hub, account.token)
    finally:
        db.close()
    yield settings, account, agents, person


def report(principal: Principal, network_id: str, **fields: Any) -> Callable[[Hub], Any]:
    """report_status as this principal."""
    return lambda hub: sessions.report_status(hub, principal, network_id, None, ReportStatus(**fields))


Team = tuple[Settings, Account, list[Principal], Principal]


async def test_two_writers_claiming_one_new_alias_one_gets_it_the_other_alias_taken(
        pg_team: Team, monkeypatch: pytest.MonkeyPatch) -> None:
    settings, account, (p1, p2), _ = pg_team
    # Both found no session for the alias before either writes: without the conflict-safe insert, the second
    # insert is a primary-key violation (a 500) instead of the claim's own answer.
    race = Race(monkeypatch, settings, [(sessions, "_check_claim", AFTER)])
    won = one_wins(race.run(report(p1, account.network_id, alias="shared"),
                            report(p2, account.network_id, alias="shared")), "alias_taken")
    assert won["alias"] == "shared"
    assert read(settings, lambda db: quota_store.count_aliases(db, account.network_id)) == 1


async def test_two_writers_taking_over_a_freed_alias_one_gets_it(pg_team: Team,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    settings, account, (p1, p2), _ = pg_team

    def free_alias(db: Any) -> None:  # a session nobody holds (its token revoked): free for anyone to claim
        with db.write():
            session_store.insert_session(db, account.network_id, "freed", "sess_x", None, "offline", "then", 1.0)

    read(settings, free_alias)
    # Both read the free row before either writes: without the update conditional on the holder read, both
    # "win" and the last writer silently takes the alias from the first.
    race = Race(monkeypatch, settings, [(sessions, "_check_claim", AFTER)])
    outcomes = race.run(report(p1, account.network_id, alias="freed"), report(p2, account.network_id, alias="freed"))
    one_wins(outcomes, "alias_taken")
    winner = p1 if not isinstance(outcomes[0], BaseException) else p2
    row = read(settings, lambda db: session_store.get_session(db, account.network_id, "freed"))
    assert row is not None and row["token_id"] == winner.token_id


@pytest.mark.parametrize("locked", [True, False], ids=["row-locked", "unlocked-control"])
async def test_two_writers_racing_for_the_last_alias_of_the_quota(pg_team: Team, monkeypatch: pytest.MonkeyPatch,
                                                            locked: bool) -> None:
    settings, account, (p1, p2), _ = pg_team
    limit = read(settings, lambda db: quota_store.count_aliases(db, account.network_id)) + 1
    settings = replace(settings, max_aliases_per_network=limit)
    # Held just before the network's row lock. The control takes no lock and is held after its count: both count
    # the same rows and both insert, the race the lock closes.
    points = [(quota_store, "lock_network", BEFORE)] if locked else [
        (quota_store, "lock_network", SKIP), (quota_store, "count_aliases", AFTER)]
    with monkeypatch.context() as m:
        outcomes = Race(m, settings, points).run(report(p1, account.network_id, alias="last-1"),
                                                 report(p2, account.network_id, alias="last-2"))
    count = read(settings, lambda db: quota_store.count_aliases(db, account.network_id))
    if locked:
        one_wins(outcomes, "quota_exceeded")
        assert count == limit
    else:
        assert not any(isinstance(o, BaseException) for o in outcomes), outcomes
        assert count == limit + 1


async def test_two_writers_racing_for_the_last_node_of_the_quota(pg_team: Team,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    settings, account, (p1, p2), _ = pg_team
    read(settings, lambda db: [report(p, account.network_id, alias=f"n{i}")(Hub(settings, db))
                               for i, p in enumerate((p1, p2))])  # the aliases exist: only the nodes are new
    limit = read(settings, lambda db: quota_store.count_nodes(db, account.network_id)) + 1
    settings = replace(settings, max_nodes_per_network=limit)
    race = Race(monkeypatch, settings, [(quota_store, "lock_network", BEFORE)])
    one_wins(race.run(report(p1, account.network_id, node="host-one"), report(p2, account.network_id,
                                                                            node="host-two")), "quota_exceeded")
    assert read(settings, lambda db: quota_store.count_nodes(db, account.network_id)) == limit


async def test_two_writers_recording_one_new_node_both_succeed_on_one_row(pg_team: Team,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    settings, account, (p1, p2), _ = pg_team
    read(settings, lambda db: [report(p, account.network_id, alias=f"m{i}")(Hub(settings, db))
                               for i, p in enumerate((p1, p2))])
    settings = replace(settings, max_nodes_per_network=0)  # no quota, so no lock: only the insert can tell
    race = Race(monkeypatch, settings, [])

    def reporting(principal: Principal, agent: str) -> Callable[[Hub], Any]:
        def work(hub: Hub) -> Any:
            # Held after the store's lookup of the hostname: both find no node, both insert; the second one's
            # insert meets the first's row and updates it instead of failing on the unique (network, hostname).
            original = hub.db.query_one

            def query_one(sql: str, params: Any = ()) -> Any:
                row = original(sql, params)
                if "FROM nodes" in sql and not getattr(hub, "held", False):
                    hub.held = True  # type: ignore[attr-defined]
                    race.barrier.wait()
                return row

            hub.db.query_one = query_one  # type: ignore[method-assign]
            return report(principal, account.network_id, node="same-host", agent=agent)(hub)
        return work

    outcomes = race.run(reporting(p1, "a1"), reporting(p2, "a2"))
    assert not any(isinstance(o, BaseException) for o in outcomes), outcomes
    nodes = read(settings, lambda db: session_store.list_nodes(db, [account.network_id]))
    assert [n["hostname"] for n in nodes] == ["same-host"]
    assert sorted(json.loads(nodes[0]["agents"])) == ["a1", "a2"]


async def test_two_writers_racing_for_the_last_token_network_and_schedule_of_their_quotas(
        pg_team: Team, monkeypatch: pytest.MonkeyPatch) -> None:
    settings, account, (agent, _), person = pg_team
    # Live network tokens of one user: locked per user.
    live = read(settings, lambda db: quota_store.count_live_network_tokens(db, person.user_id, now_text()))
    with monkeypatch.context() as m:
        race = Race(m, replace(settings, max_tokens_per_user=live + 1), [(quota_store, "lock_user", BEFORE)])
        one_wins(race.run(*[lambda hub, i=i: accounts.create_token(
            hub, person, TokenCreateRequest(name=f"late {i}", network_id=account.network_id), None)
            for i in range(2)]), "quota_exceeded")
    assert read(settings, lambda db: quota_store.count_live_network_tokens(db, person.user_id, now_text())) == live + 1
    # Networks one user owns: locked per user.
    owned = read(settings, lambda db: quota_store.count_owned_networks(db, person.user_id))
    with monkeypatch.context() as m:
        race = Race(m, replace(settings, max_networks_per_user=owned + 1), [(quota_store, "lock_user", BEFORE)])
        one_wins(race.run(*[lambda hub, i=i: networks.create_network(hub, person, NetworkCreateRequest(
            name=f"net {i}"), None) for i in range(2)]), "quota_exceeded")
    assert read(settings, lambda db: quota_store.count_owned_networks(db, person.user_id)) == owned + 1
    # Schedules of one network: locked per network.
    read(settings, lambda db: report(agent, account.network_id, alias="scheduled")(Hub(settings, db)))
    with monkeypatch.context() as m:
        race = Race(m, replace(settings, max_schedules_per_network=1), [(quota_store, "lock_network", BEFORE)])
        one_wins(race.run(*[lambda hub, i=i: schedules.create_schedule(
            hub, person, account.network_id, None, ScheduleTask(to="scheduled", content=f"tick {i}",
                                                                every_seconds=3600)) for i in range(2)]),
            "schedule_limit_reached")


@pytest.mark.parametrize("locked", [True, False], ids=["hash-locked", "unlocked-control"])
async def test_two_writers_sending_the_same_content_store_it_once(pg_team: Team, monkeypatch: pytest.MonkeyPatch,
                                                                  locked: bool) -> None:
    settings, account, (p1, p2), _ = pg_team
    read(settings, lambda db: [report(p, account.network_id, alias=a)(Hub(settings, db))
                               for p, a in ((p1, "dup-from"), (p2, "dup-to"))])
    # The loop guard's duplicate check (find, then insert): held before the lock-then-lookup; the control takes no
    # lock (the plain lookup instead) and is held after it, so both find nothing and both store.
    send = lambda hub: messaging.send_message(hub, account.network_id, "dup-from",  # noqa: E731
                                              SendMessage(to="dup-to", content="the same words twice"))
    with monkeypatch.context() as m:
        if not locked:
            m.setattr(quota_store, "find_duplicate_locked", message_store.find_duplicate)
        outcomes = Race(m, settings, [(quota_store, "find_duplicate_locked", BEFORE if locked else AFTER)]).run(
            send, send)
    assert not any(isinstance(o, BaseException) for o in outcomes), outcomes
    stored = read(settings, lambda db: db.query("SELECT message_id FROM messages WHERE from_name = 'dup-from'"))
    if locked:
        assert sorted(o["duplicate"] for o in outcomes) == [False, True]
        assert {o["message_id"] for o in outcomes} == {r["message_id"] for r in stored} and len(stored) == 1
    else:
        assert len(stored) == 2


async def test_the_presence_writer_outlives_a_database_that_is_away(pg_url: str, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"touch": 0, "put": 0}

    def away(name: str) -> Callable[..., None]:
        def fail(*_args: Any) -> None:
            calls[name] += 1
            raise DatabaseUnavailable("the database server cannot be reached; retry in a few seconds", retry_after=2)
        return fail

    async with own_server(tmp_path, "away", database_url=pg_url) as handle:
        async with httpx.AsyncClient(base_url=handle.url, timeout=30) as client:
            account = await register(client)
            token = await create_token(client, account, "w")
            monkeypatch.setattr(session_store, "touch_sessions", away("touch"))
            monkeypatch.setattr(session_store, "put_stream_presence", away("put"))
            handle.hub.broker.presence_due.add((account.network_id, "w"))
            async with sse(client, "w", token):
                # Round after round fails (503 from the engine), and the job, so the server, goes on.
                await wait_for(lambda: calls["touch"] >= 3 and calls["put"] >= 3, within=WITHIN)
                assert (await client.get("/health")).status_code == 200
                monkeypatch.undo()
                # The database is back: what was due is stored.
                await until_shown(client, account, "w", online("stream"))
                state = handle.hub.shared
                assert state is not None
                await wait_for(lambda: (account.network_id, "w") in state.written, within=WITHIN)


async def test_a_sqlite_hub_shares_nothing_and_keeps_the_tables_empty(tmp_path: Path) -> None:
    async with own_server(tmp_path, "lite", database_url="") as handle:
        assert handle.hub.shared is None and not handle.hub.broker.track_holders
        async with httpx.AsyncClient(base_url=handle.url, timeout=30) as client:
            account = await register(client)
            token = await create_token(client, account, "w")
            async with sse(client, "w", token):
                assert (await record_of(client, account, "w"))["held_by"] == "stream"
            sid = await initialize(client, token, "2025-11-25")
            await call(client, token, sid, "report_status", {"alias": "w"})
        db = handle.hub.db
        assert db.query("SELECT * FROM stream_presence") == [] and db.query("SELECT * FROM mcp_sessions") == []
        assert not handle.hub.broker.holders_changed

