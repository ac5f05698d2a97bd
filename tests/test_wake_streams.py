"""The cursor of every event stream, the network observer stream, and the stream bounds (issues: wake, harden).

- A stream opens with `id: <position>` (no data), so a client that drops before any event arrives resumes from
  there; `Last-Event-ID: 0` replays everything retained; the closing comment names the right id.
- `GET /events?network_id=` carries every alias's events, same ids and replay, data naming the alias.
- U+2028 and the other characters `str.splitlines` breaks on never appear raw in a `data:` line.
- An out-of-range Last-Event-ID is a clean 400; open streams are capped per token and per client address.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import trio
from test_sse import Frames, message, open_raw, sse, team, tool

from tests.conftest import own_server

WAIT = 10.0


async def test_position_on_connect_lets_a_client_that_saw_no_event_miss_nothing(client: httpx.AsyncClient) -> None:
    """Fails on the old main: its stream carried no id until the first event, so this client had nothing to
    resume from, and reconnecting with 0 replayed nothing: the task sent while it was away was never pushed."""
    t = await team(client)
    await message(client, t.boss, "worker", "an old message")
    async with open_raw(client, "worker", t.worker) as response:
        first = await Frames(response).next()
    assert first is not None and "data" not in first and "event" not in first
    position = int(first["id"])
    assert position > 0  # the old message's id: the alias's newest event
    task = await tool(client, t.boss, "send_task", {"to": "worker", "content": "sent while away"})
    async with sse(client, "worker", t.worker, last_event_id=position) as frames:
        frame = await frames.event()
    assert frame["event"] == "new_task" and frame["json"]["task_id"] == task["task_id"]
    assert int(frame["id"]) > position


async def test_last_event_id_zero_replays_everything_retained(client: httpx.AsyncClient) -> None:
    t = await team(client)
    sent = [await message(client, t.boss, "worker", f"m{i}") for i in range(3)]
    async with sse(client, "worker", t.worker, last_event_id=0) as frames:
        got = [(await frames.event())["json"]["message_id"] for _ in sent]
    assert got == sent


async def test_no_header_is_live_from_now(client: httpx.AsyncClient) -> None:
    t = await team(client)
    await message(client, t.boss, "worker", "old")
    async with sse(client, "worker", t.worker) as frames:
        new = await message(client, t.boss, "worker", "new")
        assert (await frames.event())["json"]["message_id"] == new


async def test_closing_comment_names_the_position_when_no_event_came(tmp_path: Path) -> None:
    async with own_server(tmp_path, "close") as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            t = await team(client)
            await message(client, t.boss, "worker", "before")
            async with open_raw(client, "worker", t.worker) as response:
                frames = Frames(response)
                position = (await frames.next())["id"]
                server.shutdown()
                rest = await frames.until_end(within=WAIT)
    comments = [c for f in rest for c in f.get("comments", [])]
    assert any(c.endswith(f"Last-Event-ID: {position}") for c in comments), comments


async def test_network_stream_shows_every_alias_in_order_with_replay(client: httpx.AsyncClient) -> None:
    t = await team(client)
    headers = {**t.account.auth, "Accept": "text/event-stream"}
    params = {"network_id": t.account.network_id}
    async with client.stream("GET", "/events", params=params, headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        frames = Frames(response)
        opening = await frames.next()
        assert "retry" in opening and "data" not in opening
        to_worker = await message(client, t.boss, "worker", "for worker")
        to_boss = await message(client, t.worker, "boss", "for boss")
        got = [await frames.event(), await frames.event()]
    assert [(f["json"]["alias"], f["json"]["message_id"]) for f in got] == [("worker", to_worker), ("boss", to_boss)]
    assert int(got[0]["id"]) < int(got[1]["id"])
    # The same ids as the per-alias stream, and the same replay.
    headers["Last-Event-ID"] = opening["id"]
    async with client.stream("GET", "/events", params=params, headers=headers) as response:
        frames = Frames(response)
        assert (await frames.next())["id"] == opening["id"]
        replayed = [await frames.event(), await frames.event()]
    assert [f["id"] for f in replayed] == [f["id"] for f in got]
    async with sse(client, "worker", t.worker, last_event_id=int(opening["id"])) as frames:
        assert (await frames.event())["id"] == got[0]["id"]


async def test_network_stream_needs_a_user_token_of_a_member(client: httpx.AsyncClient) -> None:
    t = await team(client)
    other = await team(client)
    params = {"network_id": t.account.network_id}
    r = await client.get("/events", params=params, headers=t.account.net_auth)
    assert r.status_code == 403 and r.json()["error"] == "user_token_required"
    r = await client.get("/events", params=params, headers=other.account.auth)
    assert r.status_code == 403 and r.json()["error"] == "wrong_network"
    r = await client.get("/events", params=params)
    assert r.status_code == 401


async def test_unicode_line_breaks_are_escaped_in_data(client: httpx.AsyncClient) -> None:
    t = await team(client)
    breaks = "\u2028\u2029\x85\x0b\x0c\x1c\x1d\x1e"
    content = f"a{breaks}\u2028event: forged\u2028data: {{}}\u2029"
    headers = {"Accept": "text/event-stream", "Authorization": f"Bearer {t.worker}"}
    async with client.stream("GET", "/events/worker", headers=headers) as response:
        raw = response.aiter_raw()
        await message(client, t.boss, "worker", content)
        text = ""
        with trio.fail_after(WAIT):
            while "event: new_message" not in text or not text.endswith("\n\n"):
                text += (await raw.__anext__()).decode()
    assert not any(c in text for c in breaks)
    data_lines = [line for line in text.splitlines() if line.startswith("data: ")]  # split as httpx's readers do
    assert len(data_lines) == 1 and not any(line.startswith("event: forged") for line in text.splitlines())
    assert json.loads(data_lines[0][6:])["message"] == content


@pytest.mark.parametrize("raw", [str(2**63), str(2**64 + 5), "1" * 40])
async def test_out_of_range_last_event_id_is_400_not_a_dying_stream(client: httpx.AsyncClient, raw: str) -> None:
    t = await team(client)
    for replay_via in ("header", "query"):
        async with open_raw(client, "worker", t.worker, last_event_id=raw, replay_via=replay_via) as response:
            assert response.status_code == 400
            body = json.loads(await response.aread())
        assert body["error"] == "validation_error" and "Last-Event-ID" in body["message"]


async def test_last_event_id_ahead_of_the_hub_is_400(client: httpx.AsyncClient) -> None:
    t = await team(client)
    async with open_raw(client, "worker", t.worker, last_event_id=10**12) as response:
        assert response.status_code == 400
        assert "ahead of the newest event" in json.loads(await response.aread())["message"]


async def test_streams_are_capped_per_token(tmp_path: Path) -> None:
    async with own_server(tmp_path, "cap_token", max_streams_per_token=2) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            t = await team(client)
            async with sse(client, "worker", t.worker), sse(client, "worker", t.worker):
                async with open_raw(client, "worker", t.worker) as response:
                    assert response.status_code == 429
                    body = json.loads(await response.aread())
                assert "COMMHUB_MAX_STREAMS_PER_TOKEN" in body["message"] and "2" in body["message"]
                async with sse(client, "boss", t.boss):  # another token is not affected
                    pass
            async with sse(client, "worker", t.worker):  # closing one frees its slot
                pass


async def test_streams_are_capped_per_client_address(tmp_path: Path) -> None:
    async with own_server(tmp_path, "cap_ip", max_streams_per_ip=2) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            t = await team(client)
            async with sse(client, "worker", t.worker), sse(client, "boss", t.boss):
                headers = {**t.account.auth, "Accept": "text/event-stream"}
                r = await client.get("/events", params={"network_id": t.account.network_id}, headers=headers)
                assert r.status_code == 429 and "COMMHUB_MAX_STREAMS_PER_IP" in r.json()["message"]
                assert r.headers["Retry-After"]
