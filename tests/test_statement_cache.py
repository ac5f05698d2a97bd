"""The server's prepared-statement cache holds every statement a busy hub runs: re-preparing a list query costs
8-22 µs (db.py STATEMENT_CACHE_SIZE), and the mixed traffic below alone runs more distinct statements than
apsw's default cache of 100 keeps."""

from __future__ import annotations

import itertools
from typing import Any

import httpx
from conftest import create_token, register, tool

from commhub_lib.runtime.server import ServerHandle


async def test_mixed_traffic_never_evicts_a_prepared_statement(client: httpx.AsyncClient,
                                                               server: ServerHandle) -> None:
    con = server.hub.db.con
    distinct: set[str] = set()

    def trace(_cursor: Any, sql: str, _bindings: Any) -> bool:
        distinct.add(sql)
        return True

    con.exec_trace = trace
    try:
        acct = await register(client)
        r = await client.post("/api/networks", json={"name": "second"}, headers=acct.auth)
        second = r.json()["network_id"]
        a, b = acct.network_token, await create_token(client, acct, "b")
        await create_token(client, acct, "c", network_id=second)
        await tool(client, a, "report_status", {"alias": "alpha", "status": "working", "task": "t", "progress": 5,
                                                "node": {"hostname": "box", "platform": "linux"}})
        await tool(client, b, "report_status", {"alias": "beta", "status": "idle"})
        task = await tool(client, a, "send_task", {"to": "beta", "content": "do it", "title": "T",
                                                   "idempotency_key": "k1", "priority": "high"})
        await tool(client, a, "send_message", {"to": "beta", "content": "hello"})
        await tool(client, a, "broadcast", {"content": "all"})
        inbox = await tool(client, b, "get_inbox")
        await tool(client, b, "ack_inbox", {"ids": [i["message_id"] for i in inbox["items"]][:1]})
        await tool(client, b, "send_reply", {"task_id": task["task_id"], "status": "question", "content": "?"})
        await tool(client, a, "send_reply", {"task_id": task["task_id"], "content": "answer"})
        await tool(client, b, "report_completion", {"task_id": task["task_id"], "result": "done"})
        await tool(client, a, "get_inbox")
        await tool(client, a, "ack_inbox", {"all": True})
        for name, args in [("whoami", {}), ("get_all_status", {}), ("get_task", {"task_id": task["task_id"]}),
                           ("list_tasks", {}), ("list_tasks", {"status": "replied"}), ("get_completions", {}),
                           ("list_nodes", {})]:
            await tool(client, a, name, args)
        lists = {"/api/tasks": [{}, {"status": "running"}, {"to_name": "beta"}, {"from_name": "alpha"},
                                {"to_name": "beta", "status": "replied"}],
                 "/api/messages": [{}, {"alias": "beta"}, {"kind": "task"}, {"unread": "1"},
                                   {"alias": "beta", "unread": "1"}, {"alias": "beta", "kind": "reply"}],
                 "/api/completions": [{}, {"alias": "beta"}],
                 "/api/task_events": [{}, {"task_id": task["task_id"]}],
                 "/api/status": [{}, {"status": "idle"}], "/api/nodes": [{}], "/api/stats": [{}]}
        for (path, variants), auth in itertools.product(lists.items(), (acct.auth, acct.net_auth)):
            for params in variants:
                r = await client.get(path, params=params, headers=auth)
                assert r.status_code == 200, (path, params, r.text)
        for path in ("/api/networks", f"/api/networks/{second}/members", "/api/tokens", "/api/auth/me",
                     "/api/audit-log", f"/api/tasks/{task['task_id']}"):
            assert (await client.get(path, headers=acct.auth)).status_code == 200, path
    finally:
        con.exec_trace = None
    assert len(distinct) > 100, len(distinct)  # more than apsw's default cache would keep
    stats = con.cache_stats()
    assert stats["evictions"] == 0, stats
