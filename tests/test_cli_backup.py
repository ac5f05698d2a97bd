"""`commhub backup FILE`: an online, consistent copy while the server's writer is busy."""

from __future__ import annotations

from pathlib import Path

import apsw
import httpx
import pytest
import trio
from cli_support import run_cli
from conftest import create_token, mcp_call, own_server, register

from commhub_lib.runtime.server import ServerHandle

pytestmark = pytest.mark.subprocess


def _message_ids(path: Path) -> set[str]:
    con = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        assert con.pragma("integrity_check") == "ok"
        return {row[0] for row in con.execute("SELECT message_id FROM messages WHERE kind = 'message'")}
    finally:
        con.close()


async def test_backup_while_a_writer_is_busy(server: ServerHandle, client: httpx.AsyncClient,
                                             tmp_path: Path) -> None:
    boss = await register(client)
    agent = await create_token(client, boss, alias="sink")
    await mcp_call(client, agent, "report_status", {"alias": "sink"})
    committed: list[str] = []  # message ids in the order the server acknowledged them

    async def send(n: int) -> None:
        r = await client.post("/api/messages", headers=boss.auth, json={"to": "sink", "content": f"{n:06d}" * 300})
        assert r.status_code == 200, r.text
        committed.append(r.json()["message_id"])

    for n in range(200):  # ~1 MB, so the copy takes many small steps
        await send(n)
    backup_done = trio.Event()
    before: list[str] = []
    during = 0

    async def writer() -> None:
        nonlocal during
        n = 1000
        while not backup_done.is_set():
            await send(n)
            n += 1
            during += 1

    copy = tmp_path / "copy.db"
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer)
        before = list(committed)
        run = await run_cli("backup", str(copy), "--db", server.hub.settings.db, "--pages-per-step", "16",
                            "--pause", "0.002", "--json", limit_seconds=60)
        backup_done.set()
    assert run.code == 0, run.err
    report = run.json()
    assert report["integrity"] == "ok" and report["pages"] > 64  # many steps, interleaved with the writer
    assert during > 0, "the writer committed nothing while the backup ran"
    in_copy = _message_ids(copy)
    assert set(before) <= in_copy  # every row committed before the backup started
    # One snapshot: the copy holds exactly the first k messages in commit order (never a later one without an
    # earlier one), possibly one more whose answer had not reached the writer yet.
    k = len(in_copy)
    assert set(committed[:k]) == in_copy or set(committed[: k - 1]) <= in_copy <= set(committed[: k + 1])
    for leftover in (f"{copy}.partial", f"{copy}-wal", f"{copy}-shm", f"{copy}.partial-wal"):
        assert not await trio.Path(leftover).exists(), f"{leftover}: the backup is one self-contained file"

    again = await run_cli("backup", str(copy), "--db", server.hub.settings.db)
    assert again.code == 1 and "--force" in again.err
    replaced = await run_cli("backup", str(copy), "--db", server.hub.settings.db, "--force")
    assert replaced.code == 0, replaced.err
    assert set(committed) <= _message_ids(copy)  # the writer has stopped: the new copy has everything

    # The documented restore: the copy becomes a server's database file, and everything is there.
    await trio.Path(copy).rename(tmp_path / "restored.db")
    async with own_server(tmp_path, "restored") as restored, httpx.AsyncClient(base_url=restored.url) as http:
        seen: set[str] = set()
        while True:
            r = await http.get("/api/messages", headers=boss.auth, params={
                "alias": "sink", "kind": "message", "limit": 500, "offset": len(seen)})
            assert r.status_code == 200, r.text
            page = {m["message_id"] for m in r.json()["messages"]}
            if not page:
                break
            seen |= page
        assert seen == set(committed)

    missing = await run_cli("backup", str(tmp_path / "x.db"), "--db", str(tmp_path / "none.db"))
    assert missing.code == 1 and "no database at" in missing.err
