"""Events across hub processes on one PostgreSQL database (service/fanout.py, db_pg.EventListener).

Two real `commhub serve --database <pg_url>` processes: what is sent through one reaches the streams held by
the other, once and in id order; Last-Event-ID replay works on either; a listener whose connection is cut
reconnects and catches up from the events table.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import trio
from pg_hubs import serve_hub
from test_sse import Frames, message, sse, team, tool, wait_for

from commhub_lib import db_pg
from commhub_lib.db_pg import LISTENER_APP_NAME, EventListener
from tests.conftest import own_server

pytestmark = [pytest.mark.subprocess, pytest.mark.slow]

WITHIN = 30  # seconds, for one event on a loaded machine (a bound, not a wait)


@asynccontextmanager
async def serve(url: str, log: Path) -> AsyncIterator[str]:
    """A `commhub.py serve --database <url> --port 0` child; yields its base URL once /health answers."""
    async with serve_hub(url, log) as (base, _process):
        yield base


@asynccontextmanager
async def two_hubs(url: str, tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """Clients of two hub processes on the same PostgreSQL database."""
    async with serve(url, tmp_path / "a.log") as a, serve(url, tmp_path / "b.log") as b:
        async with httpx.AsyncClient(base_url=a, timeout=30) as ca, httpx.AsyncClient(base_url=b, timeout=30) as cb:
            yield ca, cb


async def events(frames: Frames, n: int) -> list[dict[str, Any]]:
    """The next n event frames of a stream (each bounded)."""
    return [await frames.event(within=WITHIN) for _ in range(n)]


def listener_pids(url: str) -> set[int]:
    """The server processes of the hubs' listener connections."""
    with psycopg.connect(url, autocommit=True) as con:
        rows = con.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s",
                           (LISTENER_APP_NAME,)).fetchall()
    return {int(r[0]) for r in rows}


async def test_a_burst_through_one_process_reaches_a_stream_on_the_other_once_in_order(
        pg_url: str, tmp_path: Path) -> None:
    async with two_hubs(pg_url, tmp_path) as (a, b):
        t = await team(a)  # the team lives in the database: process B knows it as well
        senders = 5
        per_sender = 10
        async with sse(a, "worker", t.worker) as frames:
            sent: list[str] = []

            async def burst(index: int) -> None:
                for n in range(per_sender):
                    sent.append(await message(b, t.boss, "worker", f"{index}:{n}"))

            async with trio.open_nursery() as nursery:
                for i in range(senders):
                    nursery.start_soon(burst, i)
            task = await tool(b, t.boss, "send_task", {"to": "worker", "content": "a task through B"})
            got = await events(frames, senders * per_sender + 1)
            # The marker after the burst: had anything come twice, it would have taken the task's place.
            assert got[-1]["event"] == "new_task" and got[-1]["json"]["task_id"] == task["task_id"], got[-1]
            ids = [int(f["id"]) for f in got]
            assert ids == sorted(set(ids)), ids  # in id order, each once
            burst_events = got[:-1]
            assert all(f["event"] == "new_message" for f in burst_events)
            assert sorted(f["json"]["message_id"] for f in burst_events) == sorted(sent)
            for i in range(senders):  # each sender's messages in the order it sent them
                mine = [f["json"]["message"] for f in burst_events if f["json"]["message"].startswith(f"{i}:")]
                assert mine == [f"{i}:{n}" for n in range(per_sender)], mine
            # A message sent through A itself still comes once (its own push; its listener skips it).
            local = await message(a, t.boss, "worker", "through A")
            marker = await message(b, t.boss, "worker", "through B after")
            tail = await events(frames, 2)
            assert [f["json"]["message_id"] for f in tail] == [local, marker]
            # A broadcast's events share one stored text: the listener puts it back, as the live push does.
            text = "to all — ünïcode\u2028and \"quotes\""
            await tool(b, t.boss, "broadcast", {"content": text})
            shared = await frames.event(within=WITHIN)
            assert shared["event"] == "broadcast" and shared["json"]["content"] == text, shared


async def test_last_event_id_replay_on_one_process_of_events_made_through_the_other(
        pg_url: str, tmp_path: Path) -> None:
    async with two_hubs(pg_url, tmp_path) as (a, b):
        t = await team(a)
        async with sse(a, "worker", t.worker) as frames:
            first = await message(a, t.boss, "worker", "before")
            position = int((await frames.event(within=WITHIN))["id"])
        assert (await frames_json(b, t.worker, position, 0)) == []
        made = [await message(a, t.boss, "worker", f"missed {n}") for n in range(5)]
        replayed = await frames_json(b, t.worker, position, 5)
        assert [f["message_id"] for f in replayed] == made
        assert first not in made


async def frames_json(client: httpx.AsyncClient, token: str, last_event_id: int, n: int) -> list[dict[str, Any]]:
    """The first n events a stream on `client` replays after `last_event_id` (n=0: checks there is none yet,
    by a marker sent to the stream's alias through the same process)."""
    async with sse(client, "worker", token, last_event_id=last_event_id) as frames:
        if n:
            return [f["json"] for f in await events(frames, n)]
        return []


async def test_the_listener_survives_a_dropped_connection_and_catches_up(pg_url: str, tmp_path: Path) -> None:
    async with two_hubs(pg_url, tmp_path) as (a, b):
        t = await team(a)
        async with sse(a, "worker", t.worker) as frames:
            await message(b, t.boss, "worker", "before the cut")  # the listeners are up
            await events(frames, 1)
            before = listener_pids(pg_url)
            assert len(before) == 2, before
            with psycopg.connect(pg_url, autocommit=True) as con:
                con.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                            (LISTENER_APP_NAME,))
            # Sent while the listeners are gone (their retry waits 0.2 s at least): no notification reaches A,
            # only its catch-up from the table can deliver these.
            sent = [await message(b, t.boss, "worker", f"during the cut {n}") for n in range(10)]
            got = await events(frames, 10)
            assert [f["json"]["message_id"] for f in got] == sent
            # Both listeners are back, on new connections.
            await wait_for(lambda: len(now := listener_pids(pg_url)) == 2 and not now & before, within=WITHIN)
            after = await message(b, t.boss, "worker", "after the reconnect")
            assert (await frames.event(within=WITHIN))["json"]["message_id"] == after


class GatedListener(EventListener):
    """The real listener, whose (re)connects wait while the test holds the gate closed."""

    gate = threading.Event()
    waiting = 0  # opens now held at the gate

    def open(self) -> None:
        """Connect once the gate is open."""
        if not GatedListener.gate.is_set():
            GatedListener.waiting += 1
            GatedListener.gate.wait(WITHIN)
            GatedListener.waiting -= 1
        super().open()


async def test_events_committed_while_the_listener_is_away_come_from_the_table(
        pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(db_pg, "EventListener", GatedListener)
    GatedListener.gate.set()
    try:
        async with own_server(tmp_path, "a", database_url=pg_url) as hub_a, \
                own_server(tmp_path, "b", database_url=pg_url) as hub_b:
            async with httpx.AsyncClient(base_url=hub_a.url, timeout=30) as a, \
                    httpx.AsyncClient(base_url=hub_b.url, timeout=30) as b:
                t = await team(a)
                async with sse(a, "worker", t.worker) as frames:
                    await message(b, t.boss, "worker", "before the cut")
                    await events(frames, 1)
                    GatedListener.gate.clear()
                    with psycopg.connect(pg_url, autocommit=True) as con:
                        con.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                                    " WHERE application_name = %s", (LISTENER_APP_NAME,))
                    # Both listeners lost their connection and wait at the gate.
                    await wait_for(lambda: GatedListener.waiting >= 2, within=WITHIN)
                    assert listener_pids(pg_url) == set()
                    # Committed with nobody listening: no notification of these ever reaches process A.
                    sent = [await message(b, t.boss, "worker", f"while away {n}") for n in range(10)]
                    assert hub_a.hub.fanout is not None and hub_a.hub.fanout.reconnects >= 1
                    GatedListener.gate.set()
                    got = await events(frames, 10)
                    assert [f["json"]["message_id"] for f in got] == sent
                    after = await message(b, t.boss, "worker", "after the reconnect")
                    assert (await frames.event(within=WITHIN))["json"]["message_id"] == after
    finally:
        GatedListener.gate.set()


async def test_a_sqlite_hub_has_no_fanout(tmp_path: Path) -> None:
    async with own_server(tmp_path, "lite", database_url="") as handle:
        assert handle.hub.fanout is None
