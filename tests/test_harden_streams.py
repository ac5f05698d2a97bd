"""Issue 17, round two of hardening, the stream items: a stream is authorised for its whole life (removal,
revocation and expiry end it, whoever made the change), the MCP session rules (an ended session stays ended,
an unknown id never takes over another token's, the per-token session cap says what happened) and the stream
cap under a burst. Every test runs a real server and talks to it over real sockets."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import apsw
import httpx
import pytest
import trio
from conftest import Account, create_token, own_server, register, tool

from commhub_lib.ids import ts_text
from commhub_lib.runtime.server import ServerHandle

ROOT = Path(__file__).resolve().parents[1]
WAIT = 10.0  # bound for anything that must happen "at once"
BEAT = 0.5  # the heartbeat of the servers that test "within one heartbeat"


def bearer(token: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **extra}


async def wait_until(condition: Callable[[], bool], what: str, within: float = WAIT) -> None:
    """Poll the server's own state (in-process; it has no event to wait on), bounded in time."""
    deadline = trio.current_time() + within
    while not condition():
        assert trio.current_time() < deadline, f"timed out waiting for {what}"
        await trio.sleep(0.01)


class Stream:
    """An open event stream (any of /events/<alias>, /events?network_id=, GET /mcp) read line by line."""

    def __init__(self, name: str, response: httpx.Response):
        self.name = name
        self.response = response
        self.lines: list[str] = []
        self.ended = trio.Event()
        self.opened = trio.Event()

    async def read(self) -> None:
        """Read until the server ends the stream."""
        try:
            async for line in self.response.aiter_lines():
                self.lines.append(line)
                if line.startswith(("retry:", "id:")):
                    self.opened.set()
        except (httpx.RemoteProtocolError, httpx.ReadError):
            pass
        self.ended.set()

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@asynccontextmanager
async def streams(client: httpx.AsyncClient, requests: dict[str, tuple[str, dict[str, str]]]
                  ) -> AsyncIterator[dict[str, Stream]]:
    """Open several streams (name -> (url, headers)), each read in the background, all open before the block."""
    async with trio.open_nursery() as nursery:
        opened: dict[str, Stream] = {}
        all_open = trio.Event()

        async def hold(name: str, url: str, headers: dict[str, str]) -> None:
            async with client.stream("GET", url, headers={"Accept": "text/event-stream", **headers}) as response:
                assert response.status_code == 200, (name, response.status_code, await response.aread())
                stream = opened[name] = Stream(name, response)
                async with trio.open_nursery() as inner:
                    inner.start_soon(stream.read)
                    await stream.opened.wait()
                    if len(opened) == len(requests) and all(s.opened.is_set() for s in opened.values()):
                        all_open.set()

        for name, (url, headers) in requests.items():
            nursery.start_soon(hold, name, url, headers)
        with trio.fail_after(WAIT):
            await all_open.wait()
        try:
            yield opened
        finally:
            nursery.cancel_scope.cancel()


async def all_end(opened: dict[str, Stream], within: float) -> float:
    """Wait until every stream has been ended by the server; returns how long that took."""
    started = time.monotonic()
    with trio.fail_after(within):
        for stream in opened.values():
            await stream.ended.wait()
    return time.monotonic() - started


async def initialize(client: httpx.AsyncClient, token: str) -> str:
    r = await client.post("/mcp", headers=bearer(token), json={
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
    assert r.status_code == 200, r.text
    return r.headers["Mcp-Session-Id"]


async def join(client: httpx.AsyncClient, owner: Account, member: Account, role: str = "member") -> None:
    r = await client.post(f"/api/networks/{owner.network_id}/invite", headers=owner.auth, json={"role": role})
    assert r.status_code == 200, r.text
    r = await client.post("/api/networks/join", headers=member.auth, json={"invite_code": r.json()["invite_code"]})
    assert r.status_code == 200, r.text


def token_id_of(server: ServerHandle, secret: str) -> str:
    from commhub_lib import auth
    row = server.hub.db.query_one("SELECT token_id FROM tokens WHERE token_hash = ?", (auth.token_hash(secret),))
    assert row is not None
    return row["token_id"]


async def member_streams(client: httpx.AsyncClient, owner: Account, member: Account
                         ) -> dict[str, tuple[str, dict[str, str]]]:
    """Every kind of stream a member can hold in the owner's network: with their login token the network stream
    and an alias stream, with a network token of theirs an alias stream and a GET /mcp stream."""
    agent = await create_token(client, member, "member-agent", network_id=owner.network_id)
    await tool(client, agent, "report_status", {"alias": "member-bot"})
    sid = await initialize(client, agent)
    await tool(client, agent, "report_status", {"alias": "member-bot"}, session_id=sid)
    net = owner.network_id
    return {"network (login token)": (f"/events?network_id={net}", bearer(member.token)),
            "alias (login token)": (f"/events/member-bot?network_id={net}", bearer(member.token)),
            "alias (network token)": ("/events/member-bot", bearer(agent)),
            "GET /mcp (network token)": ("/mcp", bearer(agent, **{"Mcp-Session-Id": sid}))}


# --- item 1: a stream is authorised for its whole life ------------------------------------------------------

async def test_h17_01_member_removal_ends_streams(tmp_path: Path) -> None:
    # A long heartbeat: what ends the streams here is the removal itself, at once, not a later re-check.
    async with own_server(tmp_path, "removal", heartbeat_seconds=60) as server, \
            httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        owner, member = await register(client), await register(client)
        await join(client, owner, member)
        async with streams(client, await member_streams(client, owner, member)) as opened:
            r = await client.delete(f"/api/networks/{owner.network_id}/members/{member.user_id}", headers=owner.auth)
            assert r.status_code == 200, r.text
            await all_end(opened, WAIT)
        for stream in opened.values():
            assert "member_removed" in stream.text or "token_revoked" in stream.text, (stream.name, stream.text)
        # The member's own network (and login token) is untouched: they can still stream there.
        async with streams(client, {"own": (f"/events?network_id={member.network_id}", member.auth)}):
            pass
        # And they cannot open the removed network's streams again.
        r = await client.get(f"/events?network_id={owner.network_id}", headers=member.auth)
        assert r.status_code in (403, 404), r.text


async def test_h17_01_member_leaving_ends_streams(tmp_path: Path) -> None:
    async with own_server(tmp_path, "leaving", heartbeat_seconds=60) as server, \
            httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        owner, member = await register(client), await register(client)
        await join(client, owner, member, role="admin")
        async with streams(client, await member_streams(client, owner, member)) as opened:
            r = await client.delete(f"/api/networks/{owner.network_id}/members/{member.user_id}", headers=member.auth)
            assert r.status_code == 200, r.text
            await all_end(opened, WAIT)
        assert "member_removed" in opened["network (login token)"].text


async def run_cli(*args: str, stdin: bytes = b"") -> None:
    """The commhub CLI as its own process (a real second writer of the database file)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = await trio.run_process([sys.executable, str(ROOT / "commhub.py"), *args], stdin=stdin, env=env,
                                  capture_stdout=True, capture_stderr=True, check=False)
    assert done.returncode == 0, (done.stdout, done.stderr)


async def long_poll(client: httpx.AsyncClient, token: str, sid: str, answer: dict[str, Any]) -> None:
    r = await client.post("/mcp", headers=bearer(token, **{"Mcp-Session-Id": sid}), json={
        "jsonrpc": "2.0", "id": "poll", "method": "tools/call",
        "params": {"name": "get_inbox", "arguments": {"wait_seconds": 50}}})
    answer["status"], answer["body"] = r.status_code, r.json()
    answer["at"] = time.monotonic()


@pytest.mark.subprocess
async def test_h17_01_token_revoked_by_another_process_ends_streams_and_long_polls(tmp_path: Path) -> None:
    async with own_server(tmp_path, "cli-revoke", heartbeat_seconds=BEAT) as server, \
            httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        acct = await register(client)
        agent = await create_token(client, acct, "doomed")
        await tool(client, agent, "report_status", {"alias": "doomed"})
        sid = await initialize(client, agent)
        await tool(client, agent, "report_status", {"alias": "doomed"}, session_id=sid)
        poll_sid = await initialize(client, agent)
        answer: dict[str, Any] = {}
        async with streams(client, {"alias": ("/events/doomed", bearer(agent)),
                                    "GET /mcp": ("/mcp", bearer(agent, **{"Mcp-Session-Id": sid}))}) as opened:
            async with trio.open_nursery() as nursery:
                waiting = server.hub.broker.subscriber_count()
                nursery.start_soon(long_poll, client, agent, poll_sid, answer)
                await wait_until(lambda: server.hub.broker.subscriber_count() > waiting, "the long-poll waits")
                await run_cli("token", "revoke", token_id_of(server, agent), "--db", server.hub.db.path)
                revoked_at = time.monotonic()
                # Within one heartbeat (and a little for the scheduler), far from the 50 s of the poll.
                took = await all_end(opened, 4 * BEAT + 1)
        assert took < 4 * BEAT + 1
        for stream in opened.values():
            assert "token_revoked" in stream.text, (stream.name, stream.text)
        assert answer["at"] - revoked_at < 4 * BEAT + 1, answer
        assert answer["body"]["result"]["isError"] is True and "invalid_token" in str(answer["body"]), answer
        assert len(server.hub.guard()) == 0


@pytest.mark.subprocess
async def test_h17_01_set_password_on_the_database_ends_login_token_streams(tmp_path: Path) -> None:
    async with own_server(tmp_path, "cli-password", heartbeat_seconds=BEAT) as server, \
            httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        acct = await register(client)
        await tool(client, acct.network_token, "report_status", {"alias": "watched"})
        async with streams(client, {"network": (f"/events?network_id={acct.network_id}", acct.auth),
                                    "alias": ("/events/watched", acct.auth)}) as opened:
            await run_cli("user", "set-password", acct.username, "--db", server.hub.db.path, "--password-stdin",
                          stdin=b"a-new-password-1\n")
            await all_end(opened, 4 * BEAT + 1)
        assert all("token_revoked" in s.text for s in opened.values()), [s.text for s in opened.values()]
        assert (await client.get("/api/auth/me", headers=acct.auth)).status_code == 401
        # The network token was not a login token: its agent goes on.
        await tool(client, acct.network_token, "whoami")


@contextmanager
def statements(server: ServerHandle) -> Iterator[list[str]]:
    """The SQL statements the server's connection runs inside the block."""
    seen: list[str] = []

    def trace(_cursor: Any, sql: str, _bindings: Any) -> bool:
        seen.append(sql)
        return True

    server.hub.db.con.exec_trace = trace
    try:
        yield seen
    finally:
        server.hub.db.con.exec_trace = None


async def test_h17_01_expired_token_ends_its_stream_within_a_heartbeat(tmp_path: Path) -> None:
    async with own_server(tmp_path, "expiry", heartbeat_seconds=BEAT) as server, \
            httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        acct = await register(client)
        agent = await create_token(client, acct, "short")
        await tool(client, agent, "report_status", {"alias": "short"})
        # The shortest expiry the API offers is a minute: bring it forward on the file, before the stream opens.
        expires = int(time.time()) + 2
        con = apsw.Connection(server.hub.db.path)
        con.setbusytimeout(5000)
        con.execute("UPDATE tokens SET expires_at = ? WHERE token_id = ?",
                    (ts_text(expires), token_id_of(server, agent)))
        con.close()
        async with streams(client, {"alias": ("/events/short", bearer(agent))}) as opened:
            with statements(server) as seen:
                await all_end(opened, 2 + 4 * BEAT + 1)
            ended_at = time.time()
        assert expires <= ended_at < expires + 2 * BEAT + 0.5, (expires, ended_at)
        assert "token_expired" in opened["alias"].text, opened["alias"].text
        # The stream held its token's expiry time: no query found it.
        assert not any("FROM tokens" in sql or "json_each" in sql for sql in seen), seen


@pytest.mark.subprocess
async def test_h17_01_recheck_costs_one_pragma_per_interval_not_a_query_per_stream(tmp_path: Path) -> None:
    async with own_server(tmp_path, "cheap", heartbeat_seconds=BEAT) as server, \
            httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        acct = await register(client)
        agents = [await create_token(client, acct, f"a{i}") for i in range(40)]
        for i, agent in enumerate(agents):
            await tool(client, agent, "report_status", {"alias": f"cheap{i}"})
        requests = {f"s{i}": (f"/events/cheap{i}", bearer(agent)) for i, agent in enumerate(agents)}
        async with streams(client, requests) as opened:
            # A change by another process ends the one stream it concerns, with one query for all 40.
            with statements(server) as seen:
                await run_cli("token", "revoke", token_id_of(server, agents[0]), "--db", server.hub.db.path)
                with trio.fail_after(4 * BEAT + 1):
                    await opened["s0"].ended.wait()
            assert "token_revoked" in opened["s0"].text
            assert not any(s.ended.is_set() for name, s in opened.items() if name != "s0")
            # (One per change the other process committed, not one per stream: 40 streams would be 40.)
            assert 1 <= sum("json_each" in sql for sql in seen) <= 3, [sql for sql in seen if "tokens" in sql]
            # Idle: 40 streams beat 80 times a second; the watch is read at most once per interval, nothing else.
            with statements(server) as seen:
                await trio.sleep(1.0)  # the measured window, two heartbeats
            interval = server.hub.guard().interval
            assert interval < BEAT
            pragmas = sum("data_version" in sql for sql in seen)
            assert 1 <= pragmas <= 1.0 / interval + 2, pragmas
            assert not any("tokens" in sql or "members" in sql for sql in seen), seen


# --- item 12: an unknown session id never takes over another token's ---------------------------------------

async def test_h17_12_unknown_session_id_never_takes_over_another_tokens(client: httpx.AsyncClient,
                                                                         server: ServerHandle) -> None:
    acct = await register(client)
    mine, theirs = await create_token(client, acct, "mine"), await create_token(client, acct, "theirs")
    sid = await initialize(client, mine)
    await tool(client, mine, "report_status", {"alias": "owner-of-sid"}, session_id=sid)
    pool = server.hub.mcp_sessions
    pool.pop(sid)  # forgotten, as by a restart of the hub: the id is unknown now
    # Another token sends that id first (and a forged one in the same form): served without a session.
    await tool(client, theirs, "report_status", {"alias": "intruder"}, session_id=sid)
    forged = sid.rsplit(".", 1)[0] + "x." + token_id_of(server, mine)
    await tool(client, theirs, "whoami", session_id=forged)
    assert pool.get(sid) is None and pool.get(forged) is None
    # The id is still the token's own: its GET stream opens, and its calls speak for its alias.
    r = await client.post("/mcp", headers=bearer(mine, **{"Mcp-Session-Id": sid}),
                          json={"jsonrpc": "2.0", "id": 2, "method": "ping"})
    assert r.status_code == 200, r.text
    session = pool.get(sid)
    assert session is not None and session.token_id == token_id_of(server, mine)
    assert (await tool(client, mine, "whoami", session_id=sid))["alias"] == "owner-of-sid"
    async with streams(client, {"own": ("/mcp", bearer(mine, **{"Mcp-Session-Id": sid}))}):
        pass
    # And the intruder's request never took the id over from the other side either.
    r = await client.get("/mcp", headers=bearer(theirs, Accept="text/event-stream", **{"Mcp-Session-Id": sid}))
    assert r.status_code == 404


# --- item 13: the per-token stream cap holds under a burst ------------------------------------------------

async def burst_of_opens(server: ServerHandle, path: str, token: str, count: int) -> list[int]:
    """Open `count` connections first, then send every GET at once and read each status line (real sockets)."""
    host, port = "127.0.0.1", server.port
    socks = [await trio.open_tcp_stream(host, port) for _ in range(count)]
    request = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n"
               f"Authorization: Bearer {token}\r\n\r\n").encode()
    statuses: list[int] = []
    try:
        for sock in socks:  # no await between them that waits on the server: they arrive together
            await sock.send_all(request)

        async def status(sock: trio.SocketStream) -> None:
            head = b""
            while b"\r\n" not in head:
                chunk = await sock.receive_some(1024)
                assert chunk, "the server closed the connection without an answer"
                head += chunk
            statuses.append(int(head.split(b" ", 2)[1]))

        with trio.fail_after(WAIT):
            async with trio.open_nursery() as nursery:
                for sock in socks:
                    nursery.start_soon(status, sock)
    finally:
        for sock in socks:
            await sock.aclose()
    return statuses


async def test_h17_13_stream_cap_holds_under_a_burst(tmp_path: Path) -> None:
    async with own_server(tmp_path, "burst", max_streams_per_token=3) as server, \
            httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        acct = await register(client)
        agent = await create_token(client, acct, "bursty")
        await tool(client, agent, "report_status", {"alias": "bursty"})
        sid = await initialize(client, agent)
        # 40 opens of the alias stream, then 40 of the session's GET /mcp stream (the header rides on the token's line).
        for path, credentials in (("/events/bursty", agent), ("/mcp", f"{agent}\r\nMcp-Session-Id: {sid}")):
            statuses = await burst_of_opens(server, path, credentials, 40)
            assert statuses.count(200) == 3 and statuses.count(429) == 37, (path, sorted(statuses))
            # All closed again: the slots are free (none leaked by the refused or the closed ones).
            await wait_until(lambda: server.hub.broker.streams_of_token(token_id_of(server, agent)) == 0,
                             "every slot released")


# --- item 17: the per-token session cap says what happened --------------------------------------------------

async def rpc(client: httpx.AsyncClient, token: str, method: str, params: dict[str, Any] | None = None,
              sid: str | None = None) -> httpx.Response:
    headers = bearer(token, **({"Mcp-Session-Id": sid} if sid else {}))
    return await client.post("/mcp", headers=headers, json={"jsonrpc": "2.0", "id": 7, "method": method,
                                                             "params": params or {}})


async def test_h17_17_session_cap_refuses_clearly_and_evicted_sessions_say_so(tmp_path: Path) -> None:
    async with own_server(tmp_path, "sesscap", mcp_sessions_per_token=3) as server, \
            httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        acct = await register(client)
        token = acct.network_token
        sids = [await initialize(client, token) for _ in range(3)]
        for n, sid in enumerate(sids):
            await tool(client, token, "report_status", {"alias": f"capped{n}"}, session_id=sid)
        # A fourth session while the three are live: refused, saying why and what to do.
        r = await rpc(client, token, "initialize", {"protocolVersion": "2025-11-25", "capabilities": {},
                                                    "clientInfo": {"name": "t", "version": "1"}})
        error = r.json()["error"]
        assert "Mcp-Session-Id" not in r.headers and error["data"]["error"] == "session_cap_reached", r.text
        for needed in ("COMMHUB_MCP_SESSIONS_PER_TOKEN", "give each agent its own token"):
            assert needed in error["message"], error
        for n, sid in enumerate(sids):  # nobody lost anything
            assert (await tool(client, token, "whoami", session_id=sid))["alias"] == f"capped{n}"
        # One falls idle past the presence timeout: a new session takes its place, and it is told so.
        pool = server.hub.mcp_sessions
        pool._by_token[pool.get(sids[0]).token_id][sids[0]] -= server.hub.settings.presence_timeout_seconds + 1
        fresh = await initialize(client, token)
        r = await rpc(client, token, "tools/call", {"name": "whoami", "arguments": {}}, sid=sids[0])
        assert r.status_code == 404, r.text
        error = r.json()["error"]
        assert error["data"]["error"] == "session_evicted" and "no_identity" not in r.text
        for needed in ("COMMHUB_MCP_SESSIONS_PER_TOKEN", "give each agent its own token", "initialize"):
            assert needed in error["message"], error
        assert (await tool(client, token, "whoami", session_id=fresh))["alias"] is None  # a new session, fine


async def test_h17_17_many_agents_on_one_token_are_refused_clearly_not_every_other_call(
        client: httpx.AsyncClient, server: ServerHandle) -> None:
    """256 agents on one token (default cap 100): 100 work, every call of theirs succeeds; 156 are refused
    at initialize with the clear error. None gets no_identity."""
    acct = await register(client)
    token = acct.network_token
    outcomes: list[str] = []

    async def agent(n: int) -> None:
        r = await rpc(client, token, "initialize", {"protocolVersion": "2025-11-25", "capabilities": {},
                                                    "clientInfo": {"name": f"agent{n}", "version": "1"}})
        if "error" in r.json():
            assert r.json()["error"]["data"]["error"] == "session_cap_reached", r.text
            outcomes.append("refused")
            return
        sid = r.headers["Mcp-Session-Id"]
        await tool(client, token, "report_status", {"alias": f"many{n}"}, session_id=sid)
        assert (await tool(client, token, "whoami", session_id=sid))["alias"] == f"many{n}"
        outcomes.append("works")

    limits = trio.CapacityLimiter(32)

    async def limited(n: int) -> None:
        async with limits:
            await agent(n)

    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            for n in range(256):
                nursery.start_soon(limited, n)
    cap = server.hub.settings.mcp_sessions_per_token
    assert outcomes.count("works") == cap and outcomes.count("refused") == 256 - cap


# --- item 18: a session ended by DELETE stays ended ----------------------------------------------------------

async def test_h17_18_deleted_session_stays_ended(client: httpx.AsyncClient, server: ServerHandle) -> None:
    acct = await register(client)
    token = acct.network_token
    sid = await initialize(client, token)
    await tool(client, token, "report_status", {"alias": "ended"}, session_id=sid)
    async with streams(client, {"get": ("/mcp", bearer(token, **{"Mcp-Session-Id": sid}))}) as opened:
        r = await client.delete("/mcp", headers=bearer(token, **{"Mcp-Session-Id": sid}))
        assert r.status_code == 204
        await all_end(opened, WAIT)
    # A later POST (any method), GET or DELETE with its id: 404, and nothing revives it.
    for method in ("ping", "tools/call"):
        r = await rpc(client, token, method, {"name": "whoami", "arguments": {}}, sid=sid)
        assert r.status_code == 404 and r.json()["error"]["data"]["error"] == "session_ended", r.text
    assert sid not in server.hub.mcp_sessions
    r = await client.get("/mcp", headers=bearer(token, Accept="text/event-stream", **{"Mcp-Session-Id": sid}))
    assert r.status_code == 404, r.text
    r = await client.delete("/mcp", headers=bearer(token, **{"Mcp-Session-Id": sid}))
    assert r.status_code == 404 and r.json()["error"] == "session_ended", r.text
    # An id merely forgotten (a restart) is not 404: it is taken up again.
    other = await initialize(client, token)
    server.hub.mcp_sessions.pop(other)
    assert (await rpc(client, token, "ping", sid=other)).status_code == 200
