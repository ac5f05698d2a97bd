"""Retention of inbox items, tasks and audit entries: only what the settings allow goes; counts follow."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from commhub_lib.config import Settings
from commhub_lib.runtime.server import ServerHandle
from commhub_lib.service.retention import apply_retention
from commhub_lib.store import messages as message_store
from tests.conftest import make_settings, mcp_call, register

DAY = 86400


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, message_retention_days=1, task_retention_days=1, audit_retention_days=1)


async def test_retention_deletes_old_read_items_ended_tasks_and_old_audit(server: ServerHandle,
                                                                          client: httpx.AsyncClient) -> None:
    account = await register(client)
    await mcp_call(client, account.network_token, "report_status", {"alias": "worker"})
    ids = {}
    for name in ("ended", "open"):
        r = await client.post("/api/tasks", headers=account.auth, json={"to": "worker", "content": name})
        assert r.status_code == 200, r.text
        ids[name] = r.json()["task_id"]
    await mcp_call(client, account.network_token, "ack_inbox", {"all": True})
    done = await mcp_call(client, account.network_token, "send_reply",
                          {"task_id": ids["ended"], "content": "result", "status": "done"})
    assert not done["isError"], done
    db = server.hub.db
    with db.write():  # everything so far happened two days ago
        db.execute("UPDATE messages SET created_ts = created_ts - ?", (2 * DAY,))
        db.execute("UPDATE tasks SET created_ts = created_ts - ?, updated_at = '2000-01-01 00:00:00'", (2 * DAY,))
        db.execute("UPDATE audit_log SET created_at = '2000-01-01 00:00:00'")
    r = await client.post("/api/tasks", headers=account.auth, json={"to": "worker", "content": "fresh"})
    assert r.status_code == 200

    deleted = await apply_retention(server.hub)

    # The two acked task notices went; the reply to the person (unread) and the fresh notice stay.
    left = message_store.list_messages(db, [account.network_id], None, None, False, 10, 0)
    assert [(m["kind"], m["content"]) for m in left] == [("task", "fresh"), ("reply", "result")]
    # The ended task went with its events and completion; the open one stays however old.
    tasks = {t["content"]: t["status"] for t in db.query("SELECT content, status FROM tasks")}
    assert tasks == {"open": "running", "fresh": "delivered"}
    assert db.query("SELECT count(*) AS n FROM task_events WHERE task_id = ?", (ids["ended"],)) == [{"n": 0}]
    assert db.query("SELECT count(*) AS n FROM completions") == [{"n": 0}]
    assert db.query("SELECT count(*) AS n FROM audit_log") == [{"n": 0}]
    assert deleted == {"messages": 2, "tasks": 1, "audit": 2}
    # /api/stats reads counts kept by triggers: they follow the deletions.
    stats = (await client.get("/api/stats", headers=account.auth)).json()["tasks"]
    assert stats["total"] == 2 and stats["running"] == 1 and stats["delivered"] == 1 and stats["replied"] == 0
    assert await apply_retention(server.hub) == {"messages": 0, "tasks": 0, "audit": 0}


def test_retention_is_off_by_default() -> None:
    settings = Settings()
    assert (settings.message_retention_days, settings.task_retention_days, settings.audit_retention_days) == (0, 0, 0)
