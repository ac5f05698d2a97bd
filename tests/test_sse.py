"""SSE push (`GET /events/<alias>`) against a real server: event shapes, ids, replay, fan-out, slow readers,
authentication, presence and shutdown. Frames are parsed from the raw stream so that what is *not* sent
(an `id:` on a heartbeat, a repeated event) is visible too."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from httpx_sse import aconnect_sse

from commhub_lib.runtime import server as server_module
from commhub_lib.runtime.server import ServerHandle
from tests.conftest import Account, create_token, make_settings, own_server, register, start_server, tool

REFERENCE_FIELDS = {
    "new_task": {"inbox_count", "priority", "from"},
    "new_message": {"message", "from", "message_id"},
    "new_reply": {"from", "message_id", "in_reply_to", "status"},
    "broadcast": {"content", "from"},
    "heartbeat": {"time"},
}
WAIT = 10.0  # upper bound for anything that should happen "at once"


# --- helpers ------------------------------------------------------------------------------------

class Frames:
    """Reads an SSE response frame by frame; a frame is a dict of its fields as sent (no id inheritance)."""

    def __init__(self, response: httpx.Response):
        self.response = response
        self._lines = response.aiter_lines()
        self.ended = False

    async def next(self, within: float = WAIT) -> dict[str, Any] | None:
        """The next frame, or None when the stream has ended."""
        frame: dict[str, Any] = {}
        with trio.fail_after(within):
            while True:
                try:
                    line = await self._lines.__anext__()
                except (StopAsyncIteration, httpx.RemoteProtocolError, httpx.ReadError):
                    self.ended = True
                    return frame or None
                if line == "":
                    if frame:
                        return frame
                    continue
                if line.startswith(":"):
                    frame.setdefault("comments", []).append(line[1:].strip())
                    continue
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "data" and "data" in frame:
                    frame["data"] += "\n" + value
                else:
                    frame[name] = value

    async def event(self, *, heartbeats: bool = False, within: float = WAIT) -> dict[str, Any]:
        """The next frame that carries an event (heartbeats skipped unless asked for); fails if the stream ends."""
        with trio.fail_after(within):
            while True:
                frame = await self.next()
                assert frame is not None, "the stream ended while an event was expected"
                if "event" not in frame or (frame["event"] == "heartbeat" and not heartbeats):
                    continue
                frame["json"] = json.loads(frame["data"])
                return frame

    async def until_end(self, within: float = WAIT) -> list[dict[str, Any]]:
        """Every frame until the server ends the stream."""
        frames = []
        with trio.fail_after(within):
            while (frame := await self.next()) is not None:
                frames.append(frame)
        return frames


@asynccontextmanager
async def sse(client: httpx.AsyncClient, alias: str, token: str, *, via: str = "query",
              last_event_id: int | None = None, replay_via: str = "header",
              params: dict[str, str] | None = None) -> AsyncIterator[Frames]:
    """Open an SSE stream that must succeed; yields after the connect preamble, i.e. once subscribed."""
    async with open_raw(client, alias, token, via=via, last_event_id=last_event_id, replay_via=replay_via,
                        params=params) as response:
        assert response.status_code == 200, (response.status_code, (await response.aread()).decode())
        assert response.headers["content-type"].startswith("text/event-stream")
        frames = Frames(response)
        first = await frames.next()
        assert first is not None and "retry" in first, first
        yield frames


@asynccontextmanager
async def open_raw(client: httpx.AsyncClient, alias: str, token: str | None, *, via: str = "query",
                   last_event_id: int | str | None = None, replay_via: str = "header",
                   params: dict[str, str] | None = None) -> AsyncIterator[httpx.Response]:
    """GET /events/<alias> as a streaming response, whatever its status."""
    query: dict[str, str] = dict(params or {})
    headers: dict[str, str] = {"Accept": "text/event-stream"}
    if token is not None:
        if via == "query":
            query["token"] = token
        else:
            headers["Authorization"] = f"Bearer {token}"
    if last_event_id is not None:
        if replay_via == "header":
            headers["Last-Event-ID"] = str(last_event_id)
        else:
            query["last_event_id"] = str(last_event_id)
    async with client.stream("GET", f"/events/{alias}", params=query, headers=headers) as response:
        yield response


async def error_json(response: httpx.Response) -> dict[str, Any]:
    """The body of an error response, checked against the reference's error shape."""
    body = json.loads(await response.aread())
    assert set(body) >= {"error", "message"} and body["message"], body
    return body


class Team:
    """One user with two agents: `boss` and `worker`, each with its own network token."""

    def __init__(self, account: Account, boss: str, worker: str):
        self.account = account
        self.boss = boss
        self.worker = worker


async def team(client: httpx.AsyncClient) -> Team:
    """A new user whose agents `boss` and `worker` have each claimed their alias."""
    account = await register(client)
    t = Team(account, await create_token(client, account, "boss"), await create_token(client, account, "worker"))
    await tool(client, t.boss, "report_status", {"alias": "boss"})
    await tool(client, t.worker, "report_status", {"alias": "worker"})
    return t


async def message(client: httpx.AsyncClient, token: str, to: str, content: str) -> str:
    """send_message over MCP; returns the message id."""
    return (await tool(client, token, "send_message", {"to": to, "content": content}))["message_id"]


async def wait_for(predicate: Callable[[], bool], within: float = WAIT, what: str | None = "condition") -> bool:
    """Poll a condition in a bounded loop; fails (or returns False with what=None) if it never holds."""
    with trio.move_on_after(within):
        while True:
            if predicate():
                return True
            await trio.sleep(0.01)
    if what is None:
        return False
    raise AssertionError(f"timed out waiting for {what}")


# --- event shapes and ids -------------------------------------------------------------------------

async def test_every_event_type_has_reference_fields_and_increasing_ids(client: httpx.AsyncClient) -> None:
    t = await team(client)
    # The worker writes to the boss first, so that the boss can reply to it (-> new_reply for the worker).
    mid = await message(client, t.worker, "boss", "question?")
    async with sse(client, "worker", t.worker) as frames:
        task = await tool(client, t.boss, "send_task", {"to": "worker", "content": "build it", "priority": "high"})
        got = [await frames.event()]
        msg_id = await message(client, t.boss, "worker", "hello worker")
        got.append(await frames.event())
        reply = await tool(client, t.boss, "send_reply", {"message_id": mid, "content": "answer", "status": "done"})
        got.append(await frames.event())
        await tool(client, t.boss, "broadcast", {"content": "all hands"})
        got.append(await frames.event())

    assert [f["event"] for f in got] == ["new_task", "new_message", "new_reply", "broadcast"]
    for frame in got:
        assert REFERENCE_FIELDS[frame["event"]] <= set(frame["json"]), frame
        assert frame["json"].get("type", frame["event"]) == frame["event"], frame
    ids = [int(f["id"]) for f in got]
    assert ids == sorted(ids) and len(set(ids)) == 4, ids

    new_task, new_message, new_reply, bcast = (f["json"] for f in got)
    assert new_task["inbox_count"] == 1 and new_task["priority"] == "high" and new_task["from"] == "boss"
    assert new_task.get("task_id", task["task_id"]) == task["task_id"]
    assert new_message == {**new_message, "message": "hello worker", "from": "boss", "message_id": msg_id}
    assert new_reply["from"] == "boss" and new_reply["message_id"] == reply["message_id"]
    assert new_reply["in_reply_to"] == mid and new_reply["status"] == "done"
    assert bcast["content"] == "all hands" and bcast["from"] == "boss"


async def test_rest_sends_push_events_with_ids(client: httpx.AsyncClient) -> None:
    t = await team(client)
    async with sse(client, "worker", t.worker) as frames:
        r = await client.post("/api/tasks", headers=t.account.auth, json={"to": "worker", "content": "via rest"})
        assert r.status_code == 200, r.text
        first = await frames.event()
        r = await client.post("/api/messages", headers=t.account.auth, json={"to": "worker", "content": "note"})
        assert r.status_code == 200, r.text
        note_id = r.json()["message_id"]
        second = await frames.event()
        r = await client.post("/api/broadcast", headers=t.account.auth, json={"content": "ping all"})
        assert r.status_code == 200, r.text
        third = await frames.event()
    assert [f["event"] for f in (first, second, third)] == ["new_task", "new_message", "broadcast"]
    assert first["json"]["from"] == t.account.username and first["json"]["priority"] == "normal"
    assert second["json"]["message_id"] == note_id and second["json"]["message"] == "note"
    assert int(first["id"]) < int(second["id"]) < int(third["id"])


async def test_retry_hint_on_connect(client: httpx.AsyncClient) -> None:
    t = await team(client)
    async with open_raw(client, "worker", t.worker) as response:
        assert response.status_code == 200
        assert response.headers["cache-control"] == "no-cache"
        first = await Frames(response).next()
    assert first is not None and int(first["retry"]) > 0, first
    # The connect frame states the stream's position (an id) and dispatches no event (no event:, no data:).
    assert "event" not in first and "data" not in first and first["id"] == "0"


async def test_heartbeat_at_configured_interval_without_id(tmp_path: Path) -> None:
    async with own_server(tmp_path, "hb", heartbeat_seconds=0.2) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            t = await team(client)
            async with sse(client, "worker", t.worker) as frames:
                stamps, beats = [], []
                for _ in range(5):
                    beat = await frames.event(heartbeats=True, within=3)
                    stamps.append(trio.current_time())
                    beats.append(beat)
    for beat in beats:
        assert beat["event"] == "heartbeat" and "id" not in beat, beat
        assert set(beat["json"]) >= {"time"}
        stamp = beat["json"]["time"]
        assert stamp.endswith("Z"), stamp
        datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    assert all(0.05 < g < 1.0 for g in gaps), gaps
    assert 0.12 < sum(gaps) / len(gaps) < 0.5, gaps


async def test_no_heartbeat_before_the_interval(tmp_path: Path) -> None:
    """A long interval means no heartbeat soon: the setting is really used (a live event arrives first)."""
    async with own_server(tmp_path, "hb", heartbeat_seconds=30) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            t = await team(client)
            async with sse(client, "worker", t.worker) as frames:
                await message(client, t.boss, "worker", "first")
                frame = await frames.event(heartbeats=True)
    assert frame["event"] == "new_message"


# --- authentication -------------------------------------------------------------------------------

async def test_token_in_query_and_in_bearer_header(client: httpx.AsyncClient) -> None:
    t = await team(client)
    async with sse(client, "worker", t.worker, via="query") as by_query:
        async with sse(client, "worker", t.worker, via="header") as by_header:
            mid = await message(client, t.boss, "worker", "both")
            a, b = await by_query.event(), await by_header.event()
    assert a["json"]["message_id"] == b["json"]["message_id"] == mid
    assert a["id"] == b["id"]


async def test_curl_example_as_written(server: ServerHandle, client: httpx.AsyncClient) -> None:
    """`curl -N "http://localhost:9200/events/coder-1?token=ntok_xxx"` (plain GET, no extra headers)."""
    account = await register(client)
    async with httpx.AsyncClient(timeout=30) as bare:
        url = f"{server.url}/events/coder-1?token={account.network_token}"
        async with bare.stream("GET", url) as response:
            assert response.status_code == 200
            frames = Frames(response)
            assert "retry" in (await frames.next() or {})
            r = await client.post("/api/tasks", headers=account.auth, json={"to": "coder-1", "content": "go"})
            assert r.status_code == 200, r.text
            frame = await frames.event()
    assert frame["event"] == "new_task" and frame["json"]["from"] == account.username


async def test_httpx_sse_client_reads_the_stream(client: httpx.AsyncClient) -> None:
    t = await team(client)
    async with aconnect_sse(client, "GET", "/events/worker", params={"token": t.worker}) as source:
        events = source.aiter_sse()
        mid = await message(client, t.boss, "worker", "through httpx-sse")
        with trio.fail_after(WAIT):
            first = await events.__anext__()  # the connect preamble (retry hint, no data)
            sse_event = await events.__anext__()
        await events.aclose()
    assert first.retry and first.retry > 0 and first.data == ""
    assert sse_event.event == "new_message" and sse_event.json()["message_id"] == mid
    assert sse_event.id and int(sse_event.id) > 0


async def test_missing_or_invalid_token_is_401_json(client: httpx.AsyncClient) -> None:
    for token in (None, "ntok_not-a-real-token", "garbage"):
        async with open_raw(client, "worker", token) as response:
            assert response.status_code == 401, token
            assert response.headers["content-type"].startswith("application/json")
            await error_json(response)


async def test_wrong_network_is_refused(client: httpx.AsyncClient) -> None:
    await register(client)  # the first user is the system admin, who may look after any network
    mine = await register(client)
    other = await register(client)
    # A person may watch aliases only in networks they belong to.
    async with open_raw(client, "worker", mine.token, params={"network_id": other.network_id}) as response:
        assert response.status_code == 403, response.status_code
        await error_json(response)
    # An agent token asking for another network's stream is refused, not silently given its own network's.
    async with open_raw(client, "worker", mine.network_token, params={"network_id": other.network_id}) as response:
        assert response.status_code == 403, response.status_code
        await error_json(response)


async def test_person_with_cjk_username_gets_replies_live(client: httpx.AsyncClient) -> None:
    """A person's replies land in the inbox named by their username, CJK included, and stream live."""
    person = await register(client, "陈文")
    worker = await create_token(client, person, "worker")
    await tool(client, worker, "report_status", {"alias": "worker"})
    r = await client.post("/api/tasks", headers=person.auth, json={"to": "worker", "content": "build it"})
    assert r.status_code == 200, r.text
    task_id = r.json()["task_id"]
    async with sse(client, "陈文", person.token, via="header") as stream:
        await tool(client, worker, "send_reply", {"task_id": task_id, "content": "built", "status": "done"})
        frame = await stream.event()
    assert frame["event"] == "new_reply" and frame["json"]["task_id"] == task_id
    assert frame["json"]["from"] == "worker" and frame["json"]["status"] == "done"


async def test_revoked_token_is_401_and_revoking_closes_open_stream(client: httpx.AsyncClient) -> None:
    account = await register(client)
    r = await client.post("/api/tokens", headers=account.auth,
                          json={"name": "doomed", "network_id": account.network_id})
    assert r.status_code == 200, r.text
    token_id, secret = r.json()["token_id"], r.json()["token"]
    async with sse(client, "doomed", secret) as frames:
        r = await client.delete(f"/api/tokens/{token_id}", headers=account.auth)
        assert r.status_code == 200, r.text
        rest = await frames.until_end(within=5)
    assert not any("event" in f for f in rest), rest
    async with open_raw(client, "doomed", secret) as response:
        assert response.status_code == 401
        await error_json(response)


async def test_token_bound_to_another_alias_is_403(client: httpx.AsyncClient) -> None:
    account = await register(client)
    bound = await create_token(client, account, "bound", alias="alpha")
    async with open_raw(client, "beta", bound) as response:
        assert response.status_code == 403
        body = await error_json(response)
    assert "alpha" in body["message"]
    async with sse(client, "alpha", bound):
        pass


async def test_alias_held_by_another_online_token_is_409(client: httpx.AsyncClient) -> None:
    t = await team(client)
    async with sse(client, "worker", t.worker):
        async with open_raw(client, "worker", t.boss) as response:
            assert response.status_code == 409
            await error_json(response)


# --- replay ---------------------------------------------------------------------------------------

async def _replay_exactly_missed(client: httpx.AsyncClient, replay_via: str) -> None:
    t = await team(client)
    async with sse(client, "worker", t.worker) as frames:
        await message(client, t.boss, "worker", "seen")
        seen = await frames.event()
    last = int(seen["id"])
    missed = [await message(client, t.boss, "worker", f"missed {i}") for i in range(7)]
    async with sse(client, "worker", t.worker, last_event_id=last, replay_via=replay_via) as frames:
        replayed = [await frames.event() for _ in missed]
        live_id = await message(client, t.boss, "worker", "live")
        after = await frames.event()
    assert [f["json"]["message_id"] for f in replayed] == missed
    assert [f["json"]["message"] for f in replayed] == [f"missed {i}" for i in range(7)]
    ids = [int(f["id"]) for f in replayed]
    assert ids == sorted(ids) and len(set(ids)) == len(ids) and ids[0] > last
    # Nothing repeated and nothing extra: the next frame after the replay is the new live event.
    assert after["json"]["message_id"] == live_id and int(after["id"]) > ids[-1]


async def test_reconnect_with_last_event_id_header_replays_exactly_the_missed(client: httpx.AsyncClient) -> None:
    await _replay_exactly_missed(client, "header")


async def test_reconnect_with_last_event_id_query_replays_exactly_the_missed(client: httpx.AsyncClient) -> None:
    await _replay_exactly_missed(client, "query")


async def test_replay_of_more_than_one_batch_is_complete(client: httpx.AsyncClient) -> None:
    """More missed events than the server replays per database query (500): all come, in order, once."""
    t = await team(client)
    async with sse(client, "worker", t.worker) as frames:
        await message(client, t.boss, "worker", "mark")
        last = int((await frames.event())["id"])
    missed = []
    for i in range(505):
        r = await client.post("/api/messages", headers=t.account.auth, json={"to": "worker", "content": f"n{i}"})
        assert r.status_code == 200, r.text
        missed.append(r.json()["message_id"])
    async with sse(client, "worker", t.worker, last_event_id=last) as frames:
        replayed = [await frames.event() for _ in missed]
        live = await message(client, t.boss, "worker", "live")
        after = await frames.event()
    assert [f["json"]["message_id"] for f in replayed] == missed
    ids = [int(f["id"]) for f in replayed]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert after["json"]["message_id"] == live


async def test_replay_covers_every_event_type(client: httpx.AsyncClient) -> None:
    t = await team(client)
    mid = await message(client, t.worker, "boss", "q")
    async with sse(client, "worker", t.worker) as frames:
        await message(client, t.boss, "worker", "before")
        last = int((await frames.event())["id"])
    await tool(client, t.boss, "send_task", {"to": "worker", "content": "t", "priority": "urgent"})
    await tool(client, t.boss, "send_reply", {"message_id": mid, "content": "a", "status": "progress"})
    await tool(client, t.boss, "broadcast", {"content": "b"})
    async with sse(client, "worker", t.worker, last_event_id=last) as frames:
        got = [await frames.event() for _ in range(3)]
    assert [f["event"] for f in got] == ["new_task", "new_reply", "broadcast"]
    for frame in got:
        assert REFERENCE_FIELDS[frame["event"]] <= set(frame["json"]), frame
    assert got[0]["json"]["priority"] == "urgent" and got[1]["json"]["status"] == "progress"


async def test_bad_last_event_id_is_400_json(client: httpx.AsyncClient) -> None:
    t = await team(client)
    async with open_raw(client, "worker", t.worker, last_event_id="abc") as response:
        assert response.status_code == 400
        body = await error_json(response)
    assert "Last-Event-ID" in body["message"]


async def test_replay_does_not_leak_other_aliases_events(client: httpx.AsyncClient) -> None:
    t = await team(client)
    third = await create_token(client, t.account, "third")
    await tool(client, third, "report_status", {"alias": "third"})
    async with sse(client, "worker", t.worker) as frames:
        await message(client, t.boss, "worker", "mark")
        last = int((await frames.event())["id"])
    await message(client, t.boss, "third", "not for worker")
    mine = await message(client, t.boss, "worker", "for worker")
    async with sse(client, "worker", t.worker, last_event_id=last) as frames:
        frame = await frames.event()
    assert frame["json"]["message_id"] == mine


# --- fan-out --------------------------------------------------------------------------------------

async def test_several_streams_for_one_alias_each_get_every_event(client: httpx.AsyncClient) -> None:
    t = await team(client)
    async with sse(client, "worker", t.worker) as s1, sse(client, "worker", t.worker) as s2, \
            sse(client, "worker", t.worker, via="header") as s3:
        sent = [await message(client, t.boss, "worker", f"m{i}") for i in range(4)]
        received = [[(await s.event())["json"]["message_id"] for _ in sent] for s in (s1, s2, s3)]
        r = await client.get("/api/status", headers=t.account.net_auth)
    assert received == [sent, sent, sent]
    worker = next(s for s in r.json()["sessions"] if s["alias"] == "worker")
    assert worker.get("streams", 3) == 3


# --- slow readers ---------------------------------------------------------------------------------

async def _raw_stuck_reader(port: int, alias: str, token: str) -> trio.SocketStream:
    """A client that sends the GET and then never reads (tiny receive buffer, so the server's writes block)."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect(("127.0.0.1", port))
    stream = trio.SocketStream(sock)
    await stream.send_all(f"GET /events/{alias}?token={token} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                          "Accept: text/event-stream\r\n\r\n".encode())
    return stream


async def test_slow_reader_is_disconnected_not_blocking(tmp_path: Path) -> None:
    async with own_server(tmp_path, "slow", sse_buffer=4) as server:
        broker = server.hub.broker
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            t = await team(client)
            net = t.account.network_id
            async with sse(client, "worker", t.worker) as frames:
                await message(client, t.boss, "worker", "baseline")
                baseline = int((await frames.event())["id"])
            await wait_for(lambda: broker.subscriber_count() == 0, what="the first stream to go away")

            stuck = await _raw_stuck_reader(server.port, "worker", t.worker)
            await wait_for(lambda: broker.stream_count(net, "worker") == 1, what="the stuck reader to subscribe")
            big = "x" * 48_000
            sent: list[str] = []
            slowest = 0.0
            for i in range(400):
                start = trio.current_time()
                with trio.fail_after(5):
                    sent.append(await message(client, t.boss, "worker", f"{i}:{big}"))
                    health = await client.get("/health")
                slowest = max(slowest, trio.current_time() - start)
                assert health.status_code == 200
                if broker.stream_count(net, "worker") == 0:
                    break
            assert broker.stream_count(net, "worker") == 0, f"not dropped after {len(sent)} events"
            assert slowest < 2.0, slowest
            # The hub still answers at once while the stuck client holds its connection.
            with trio.fail_after(1):
                assert (await client.get("/health")).status_code == 200
            # A few more events after the drop are not queued for the dead subscriber.
            sent += [await message(client, t.boss, "worker", f"after drop {i}") for i in range(3)]

            # The client comes back and replays everything it may have missed, in order, once.
            async with sse(client, "worker", t.worker, last_event_id=baseline) as frames:
                replayed = [(await frames.event())["json"]["message_id"] for _ in sent]
                live = await message(client, t.boss, "worker", "live again")
                assert (await frames.event())["json"]["message_id"] == live
            assert replayed == sent

            # The stuck connection was ended by the server: reading what is left reaches the end of the response.
            with trio.fail_after(WAIT):
                tail = b""
                while not tail.endswith(b"0\r\n\r\n"):
                    chunk = await stuck.receive_some(1 << 20)
                    if not chunk:
                        break
                    tail = (tail + chunk)[-256:]
            assert b"slow_reader" in tail and tail.endswith(b"0\r\n\r\n"), tail
            await stuck.aclose()
            await wait_for(lambda: broker.subscriber_count() == 0, what="every subscriber to be released")


async def test_reader_that_never_reads_is_cut_off_and_does_not_hold_shutdown(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Hypercorn shields its socket writes, so a client that stops reading (connection still up) would hold a
    dropped stream, and every shutdown, forever. The kernel must cut such a peer off (TCP_USER_TIMEOUT)."""
    monkeypatch.setattr(server_module, "SEND_STALL_TIMEOUT_MS", 1000)
    settings = make_settings(tmp_path, db=str(tmp_path / "stuck.db"), sse_buffer=4)
    finished = trio.Event()

    async def run(task_status: trio.TaskStatus[ServerHandle] = trio.TASK_STATUS_IGNORED) -> None:
        await server_module.run_server(settings, task_status=task_status)
        finished.set()

    outcome: dict[str, Any] = {}
    async with trio.open_nursery() as nursery:
        server: ServerHandle = await nursery.start(run)
        broker = server.hub.broker
        stuck: trio.SocketStream | None = None
        try:
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
                t = await team(client)
                net = t.account.network_id
                stuck = await _raw_stuck_reader(server.port, "worker", t.worker)
                await wait_for(lambda: broker.stream_count(net, "worker") == 1, what="the stuck reader")
                for i in range(100):
                    await message(client, t.boss, "worker", f"{i}:" + "y" * 48_000)
                    if broker.stream_count(net, "worker") == 0:
                        break
                assert broker.stream_count(net, "worker") == 0, "the stuck reader was never dropped"
            # While the hub runs, the dead connection is released (not held for ever).
            outcome["released"] = await wait_for(lambda: broker.subscriber_count() == 0, within=10, what=None)
            started = trio.current_time()
            server.shutdown()
            with trio.move_on_after(5):
                await finished.wait()
            outcome["shutdown"] = trio.current_time() - started if finished.is_set() else None
        finally:
            server.shutdown()
            if stuck is not None:
                await stuck.aclose()  # unblocks a server that is still stuck, so the test always ends
    assert outcome["released"], "the hub kept a stream whose client never reads"
    assert outcome["shutdown"] is not None and outcome["shutdown"] < 2.0, outcome


# --- presence -------------------------------------------------------------------------------------

async def test_open_stream_makes_and_keeps_the_session_online(tmp_path: Path) -> None:
    async with own_server(tmp_path, "presence", heartbeat_seconds=0.1, presence_timeout_seconds=0.3,
                          sweep_seconds=0.05) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            account = await register(client)

            async def listener() -> dict[str, Any] | None:
                r = await client.get("/api/status", headers=account.net_auth)
                assert r.status_code == 200, r.text
                return next((s for s in r.json()["sessions"] if s["alias"] == "listener"), None)

            async with sse(client, "listener", account.network_token) as frames:
                row = await listener()
                assert row is not None and row["status"] != "offline", row
                # Well past the presence timeout (8 heartbeats of 0.1 s), the stream alone keeps it online.
                for _ in range(8):
                    await frames.event(heartbeats=True, within=3)
                row = await listener()
                assert row is not None and row["status"] != "offline", row
            # Stream closed, no MCP calls: the sweeper marks it offline; last_seen_at stays.
            with trio.fail_after(WAIT):
                while True:
                    row = await listener()
                    if row is None or row["status"] == "offline":
                        break
                    await trio.sleep(0.05)
            assert row is not None and row["last_seen_at"]


# --- shutdown -------------------------------------------------------------------------------------

async def test_graceful_shutdown_ends_open_streams_promptly(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, db=str(tmp_path / "shutdown.db"))
    outcome: dict[str, Any] = {}
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, settings)
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
                t = await team(client)
                async with sse(client, "worker", t.worker) as s1, sse(client, "worker", t.worker) as s2:
                    started = trio.current_time()
                    server.shutdown()
                    outcome["rest1"] = await s1.until_end(within=3)
                    outcome["rest2"] = await s2.until_end(within=3)
                    outcome["streams_ended"] = trio.current_time() - started
        outcome["server_done"] = trio.current_time() - started
    assert outcome["streams_ended"] < 1.0, outcome
    # Far below hypercorn's grace period (it would otherwise wait, then cut the streams).
    assert outcome["server_done"] < 2.0, outcome
    assert any("shutdown" in c for f in outcome["rest1"] for c in f.get("comments", [])), outcome
