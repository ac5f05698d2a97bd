"""Writes committed together (db.Database.write_together, used by MCP send_message): the works of one scheduler
pass share one transaction, each is undone alone when it fails, nobody hears back before the commit, and events
go out in the order they were written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import apsw
import httpx
import pytest
import trio

from commhub_lib.db import Database
from commhub_lib.errors import DatabaseBusy, NotFound
from commhub_lib.store import messages as message_store
from tests.conftest import create_token, own_server, register, tool


def stored(path: str) -> list[str]:
    """The texts in `bodies`, read through a connection of its own (what is committed, not what is pending)."""
    con = apsw.Connection(path)
    try:
        return [row[0] for row in con.execute("SELECT content FROM bodies ORDER BY body_id")]
    finally:
        con.close()


async def run_together(db: Database, works: list[Any], afters: list[Any] | None = None) -> list[Any]:
    """Call write_together once per work, all from tasks started in the same pass; each outcome or exception."""
    outcomes: list[Any] = [None] * len(works)

    async def one(i: int) -> None:
        try:
            outcomes[i] = await db.write_together(works[i], afters[i] if afters else None)
        except Exception as exc:  # noqa: BLE001 (the test looks at it)
            outcomes[i] = exc

    async with trio.open_nursery() as nursery:
        for i in range(len(works)):
            nursery.start_soon(one, i)
    return outcomes


async def test_the_works_of_one_pass_share_one_commit(tmp_path: Path) -> None:
    async with own_server(tmp_path, "together") as server:
        db = server.hub.db
        before = db.groups_committed
        outcomes = await run_together(db, [lambda i=i: message_store.insert_body(db, f"text {i}") for i in range(6)])
        assert db.groups_committed == before + 1
        assert sorted(stored(db.path)) == [f"text {i}" for i in range(6)]
        assert len(set(outcomes)) == 6 and all(isinstance(o, int) for o in outcomes)  # each got its own body_id


async def test_a_work_that_fails_is_undone_alone(tmp_path: Path) -> None:
    async with own_server(tmp_path, "undo") as server:
        db = server.hub.db

        def failing() -> None:
            message_store.insert_body(db, "half written")
            raise NotFound("no such thing", code="not_found")

        outcomes = await run_together(db, [lambda: message_store.insert_body(db, "first"), failing,
                                           lambda: message_store.insert_body(db, "third")])
        assert isinstance(outcomes[1], NotFound)
        assert sorted(stored(db.path)) == ["first", "third"]
        assert not db.con.in_transaction


async def test_nobody_hears_back_before_the_commit(tmp_path: Path) -> None:
    """`after` runs once the rows are visible to another connection, in the order the works ran; the caller
    gets its result after that."""
    async with own_server(tmp_path, "durable") as server:
        db = server.hub.db
        ran: list[int] = []
        seen: list[tuple[int, list[str]]] = []

        def work(i: int) -> int:
            ran.append(i)
            return message_store.insert_body(db, f"t{i}")

        afters = [lambda body_id, i=i: seen.append((i, stored(db.path))) for i in range(3)]
        outcomes = await run_together(db, [lambda i=i: work(i) for i in range(3)], afters)
        assert [i for i, _ in seen] == ran and sorted(ran) == [0, 1, 2]
        assert all(texts == [f"t{i}" for i in ran] for _, texts in seen)
        assert all(isinstance(o, int) for o in outcomes)


async def test_a_failed_transaction_reaches_every_caller(tmp_path: Path) -> None:
    """Another process holds the write lock: every work of the group gets the 503 write() gives, none is stored."""
    async with own_server(tmp_path, "locked") as server:
        db = server.hub.db
        other = apsw.Connection(db.path)
        other.execute("BEGIN IMMEDIATE")
        try:
            outcomes = await run_together(db, [lambda i=i: message_store.insert_body(db, f"x{i}") for i in range(3)])
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert all(isinstance(o, DatabaseBusy) for o in outcomes)
        assert stored(db.path) == []


async def test_not_inside_a_write_transaction(tmp_path: Path) -> None:
    async with own_server(tmp_path, "nested") as server:
        db = server.hub.db
        with pytest.raises(RuntimeError, match="inside a write transaction"):
            with db.write():
                await db.write_together(lambda: None)


async def test_concurrent_mcp_sends_are_each_stored_once_and_pushed_in_order(tmp_path: Path) -> None:
    """Agents sending at once over MCP: grouped commits, every answer's message in the recipient's inbox once,
    and the recipient's stream of events in ascending id order."""
    async with own_server(tmp_path, "sends") as server:
        async with httpx.AsyncClient(base_url=server.url) as client:
            account = await register(client)
            tokens = [await create_token(client, account, f"a{i}") for i in range(6)]
            for i, token in enumerate(tokens):
                await tool(client, token, "report_status", {"alias": f"s{i}"})
            before = server.hub.db.groups_committed
            sub = server.hub.broker.subscribe(account.network_id, "s0", buffer=100)
            sent: list[str] = []

            async def send(i: int, n: int) -> None:
                r = await client.post("/mcp", headers={"Authorization": f"Bearer {tokens[i]}"}, json={
                    "jsonrpc": "2.0", "id": n, "method": "tools/call",
                    "params": {"name": "send_message", "arguments": {"to": "s0", "content": f"m{i}.{n}"}}})
                result = r.json()["result"]
                assert result["isError"] is False, result
                sent.append(result["structuredContent"]["message_id"])

            with sub as subscriber:
                async with trio.open_nursery() as nursery:
                    for i in range(1, 6):
                        for n in range(4):
                            nursery.start_soon(send, i, n)
                ids = []
                while len(ids) < 20:
                    with trio.fail_after(5):
                        event = await subscriber.receive.receive()
                    ids.append(event.id)
                    assert json.loads(event.data)["message_id"] in sent
            assert ids == sorted(ids)
            assert server.hub.db.groups_committed - before < 20  # some sends shared a commit
            r = await client.post("/mcp", headers={"Authorization": f"Bearer {tokens[0]}"}, json={
                "jsonrpc": "2.0", "id": 9, "method": "tools/call",
                "params": {"name": "get_inbox", "arguments": {"limit": 100}}})
            items = r.json()["result"]["structuredContent"]["items"]
            assert sorted(i["message_id"] for i in items) == sorted(sent)


async def test_each_work_runs_in_its_callers_context(tmp_path: Path) -> None:
    """A work runs in the leader's task but sees its own caller's context variables (the surface an error's
    advice speaks of)."""
    import contextvars

    who: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="nobody")
    async with own_server(tmp_path, "context") as server:
        db = server.hub.db
        seen: dict[int, str] = {}

        async def one(i: int) -> None:
            who.set(f"caller {i}")
            await db.write_together(lambda: seen.__setitem__(i, who.get()))

        async with trio.open_nursery() as nursery:
            for i in range(4):
                nursery.start_soon(one, i)
        assert seen == {i: f"caller {i}" for i in range(4)}
