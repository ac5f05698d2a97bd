"""Each text is stored once: a broadcast's body is shared by its copies, a task notice's text is the task's,
a task's result is its completion's; every read puts the text back, and old databases are migrated."""

from __future__ import annotations

from pathlib import Path

import apsw
import httpx

from commhub_lib import db as dbmod
from commhub_lib.db import Database
from commhub_lib.runtime.server import ServerHandle
from commhub_lib.store import messages as message_store
from commhub_lib.store import tasks as task_store
from tests.conftest import create_token, mcp_call, register


async def test_texts_are_stored_once_and_read_back_whole(server: ServerHandle, client: httpx.AsyncClient) -> None:
    account = await register(client)
    tokens = {a: await create_token(client, account, a) for a in ("w1", "w2", "w3")}
    for alias, token in tokens.items():
        await mcp_call(client, token, "report_status", {"alias": alias})
    db = server.hub.db

    r = await client.post("/api/broadcast", headers=account.auth, json={"content": "all hands: deploy at noon"})
    assert r.status_code == 200 and r.json()["recipients"] == 3
    assert db.query("SELECT content FROM bodies") == [{"content": "all hands: deploy at noon"}]
    assert {m["content"] for m in db.query("SELECT content FROM messages WHERE kind = 'broadcast'")} == {""}

    r = await client.post("/api/tasks", headers=account.auth, json={"to": "w1", "content": "refactor the parser"})
    task_id = r.json()["task_id"]
    assert db.query("SELECT content FROM messages WHERE kind = 'task'") == [{"content": ""}]

    inbox = (await mcp_call(client, tokens["w1"], "get_inbox"))["structuredContent"]["items"]
    assert sorted(i["content"] for i in inbox) == ["all hands: deploy at noon", "refactor the parser"]
    listed = (await client.get("/api/messages?alias=w2", headers=account.auth)).json()["messages"]
    assert [m["content"] for m in listed] == ["all hands: deploy at noon"]

    done = await mcp_call(client, tokens["w1"], "send_reply", {"task_id": task_id, "content": "parser refactored",
                                                               "status": "done"})
    assert not done["isError"], done
    assert db.query("SELECT result FROM tasks") == [{"result": None}]
    task = (await client.get(f"/api/tasks?network_id={account.network_id}", headers=account.auth)).json()["tasks"]
    assert task[0]["result"] == "parser refactored"

    # The body goes with the last copy or SSE event that uses it (the events hold it, not a copy of it).
    assert db.query("SELECT count(*) AS n FROM events WHERE event = 'broadcast' AND body_id IS NOT NULL") == [{"n": 3}]
    with db.write():
        db.execute("DELETE FROM messages WHERE kind = 'broadcast' AND to_name IN ('w1', 'w2')")
        assert db.query("SELECT count(*) AS n FROM bodies") == [{"n": 1}]
        db.execute("DELETE FROM messages WHERE kind = 'broadcast'")
        assert db.query("SELECT count(*) AS n FROM bodies") == [{"n": 1}]
        db.execute("DELETE FROM events WHERE event = 'broadcast'")
    assert db.query("SELECT count(*) AS n FROM bodies") == [{"n": 0}]


def test_an_old_database_keeps_its_texts_once_each(tmp_path: Path) -> None:
    path = str(tmp_path / "old.db")
    old = apsw.Connection(path)
    with old:
        old.execute(dbmod.migration_steps()[1])
        old.pragma("user_version", 1)
        old.execute("INSERT INTO users VALUES ('u', 'p', 'p', NULL, 'x', 'admin', 't', 't');"
                    "INSERT INTO networks(network_id, name, owner_id, created_at, updated_at) VALUES ('n', 'n', 'u',"
                    " 't', 't');"
                    "INSERT INTO tasks(task_id, network_id, from_name, to_name, content, priority, status, message_id,"
                    " result, created_at, created_ts, updated_at) VALUES ('t1', 'n', 'a', 'b', 'do it', 'normal',"
                    " 'replied', 'm1', 'did it', 't', 1, 't');"
                    "INSERT INTO completions(task_id, network_id, alias, status, result, duration_seconds,"
                    " completed_at) VALUES ('t1', 'n', 'b', 'replied', 'did it', 1, 't');")
        for i, (kind, to, content) in enumerate([("task", "b", "do it"), ("broadcast", "b", "hello all"),
                                                 ("broadcast", "c", "hello all"), ("message", "c", "just you")]):
            old.execute("INSERT INTO messages(message_id, network_id, from_name, to_name, kind, content, task_id,"
                        " created_at, created_ts) VALUES (?, 'n', 'a', ?, ?, ?, ?, 't', ?)",
                        (f"m{i + 1}", to, kind, content, "t1" if kind == "task" else None, i))
    old.close()
    db = Database(path)
    try:
        stored = [r["content"] for r in db.query("SELECT content FROM messages ORDER BY rowid")]
        assert stored == ["", "", "", "just you"]
        assert db.query("SELECT content FROM bodies") == [{"content": "hello all"}]
        assert db.query("SELECT result FROM tasks") == [{"result": None}]
        read = [m["content"] for m in message_store.list_messages(db, ["n"], None, None, False, 10, 0)]
        assert read == ["just you", "hello all", "hello all", "do it"]
        assert task_store.get_task(db, "n", "t1")["result"] == "did it"
    finally:
        db.close()
