"""SSE event retention: old events are pruned, inbox items stay."""

from __future__ import annotations

import httpx

from commhub_lib.runtime.server import ServerHandle
from commhub_lib.service.jobs import prune_events
from commhub_lib.store import events as event_store
from tests.conftest import mcp_call, register


async def test_prune_drops_only_events_past_retention(server: ServerHandle, client: httpx.AsyncClient) -> None:
    account = await register(client)
    await mcp_call(client, account.network_token, "report_status", {"alias": "sender"})
    r = await client.post("/api/tasks", headers=account.auth, json={"to": "sender", "content": "old"})
    assert r.status_code == 200
    hub = server.hub
    db = hub.db
    with db.write():  # age the first event past the 30-day default
        db.execute("UPDATE events SET created_at = '2000-01-01 00:00:00'")
    r = await client.post("/api/tasks", headers=account.auth, json={"to": "sender", "content": "new"})
    assert r.status_code == 200
    assert await prune_events(hub) == 1
    left = event_store.events_after(db, account.network_id, "sender", 0, 10)
    assert len(left) == 1 and '"new_task"' in left[0]["data"]
    inbox = (await mcp_call(client, account.network_token, "get_inbox"))["structuredContent"]["items"]
    assert [i["content"] for i in inbox] == ["old", "new"]
    assert await prune_events(hub) == 0
