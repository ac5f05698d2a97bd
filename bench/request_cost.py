"""What one MCP send_message costs inside the app, measured in this process: less moved by other jobs on a shared
box than the wall-clock benchmarks, so a small change to the request path shows.

The request goes through quart's test client (no hypercorn, no sockets: those cost the same as the ceiling's),
text access log on (to /dev/null), as `serve` runs it. Modes:

    .venv/bin/python bench/request_cost.py                     # CPU µs per call: --rounds of --calls, best round
    .venv/bin/python bench/request_cost.py --count             # Python calls and SQL statements per request
    .venv/bin/python bench/request_cost.py --parts             # the service parts alone, and what a checkpoint adds
    .venv/bin/python bench/request_cost.py --repo /tmp/old     # the same for another checkout of the code
    .venv/bin/python bench/request_cost.py --asgi 8            # 8 calls at once into the ASGI entry, no test client

`--count` is deterministic (the same on a busy box); the CPU figures are best-of-rounds of process time.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

HERE = Path(__file__).resolve().parent


async def setup(log_stream: Any, clients: int = 2, extra: dict[str, str] | None = None) -> dict[str, Any]:
    """A hub on a temp database, a user, `clients` network tokens, each with an MCP session and an alias; `extra`
    settings (--setting NAME=VALUE) on top."""
    from commhub_lib.broker import Broker
    from commhub_lib.config import Settings
    from commhub_lib.db import LOOP_BUSY_TIMEOUT_MS, Database
    try:
        from commhub_lib.http.app import create_app
    except ImportError:  # a checkout from before the one HTTP pipeline (--repo)
        from commhub_lib.app import create_app  # type: ignore[no-redef]
    from commhub_lib.runtime.log_setup import setup_logging
    from commhub_lib.service.hub import Hub

    tmp = tempfile.mkdtemp(prefix="commhub-cost-")
    setup_logging("info", "text")
    logging.getLogger().handlers[0].stream = log_stream
    # The loop guard's pair limit on but out of reach, so its cost is measured (a checkout without it: nothing).
    guard = {"pair_rate_per_minute": 10**9} if hasattr(Settings, "pair_rate_per_minute") else {}
    settings = Settings(db=os.path.join(tmp, "cost.db"), port=0, register_rate_per_minute=0,
                        login_rate_per_minute=0, token_rate_per_minute=0, **{**guard, **(extra or {})})
    if getattr(settings, "database_url", ""):  # --setting database_url=postgresql://... (docs/postgresql.md)
        from commhub_lib.db import open_engine
        db = open_engine(settings.database_url)
        bind_loop = getattr(db, "bind_loop", None)  # (pg-offloop) committed events are pushed to this loop
        if bind_loop is not None:
            bind_loop()
    else:
        db = Database(settings.db, busy_timeout_ms=LOOP_BUSY_TIMEOUT_MS)
    hub = Hub(settings, db, Broker(settings.sse_buffer))
    client = create_app(hub).test_client()
    reg = await (await client.post("/api/auth/register", json={"username": "cost", "password": "cost-password-1234"})
                 ).get_json()
    headers = []
    for i in range(clients):
        r = await client.post("/api/tokens", json={"name": f"a{i}", "network_id": reg["network_id"]},
                              headers={"Authorization": "Bearer " + reg["token"]})
        token = (await r.get_json())["token"]
        h = {"Authorization": "Bearer " + token, "Accept": "application/json, text/event-stream"}
        r = await client.post("/mcp", headers=h, json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "cost", "version": "1"}}})
        h.update({"Mcp-Session-Id": r.headers["Mcp-Session-Id"], "Mcp-Protocol-Version": "2025-06-18",
                  "Content-Type": "application/json"})
        r = await client.post("/mcp", headers=h, json={"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
            "name": "report_status", "arguments": {"alias": f"agent-{i}", "status": "idle"}}})
        assert r.status_code == 200
        headers.append(h)
    gc.collect()
    gc.freeze()  # as serve does after start-up
    return {"hub": hub, "db": db, "client": client, "headers": headers, "network_id": reg["network_id"],
            "token": headers[0]["Authorization"][7:], "n": 0}


async def send(env: dict[str, Any]) -> None:
    """One send_message from agent-0 to agent-1."""
    env["n"] += 1
    body = json.dumps({"jsonrpc": "2.0", "id": env["n"], "method": "tools/call", "params": {
        "name": "send_message", "arguments": {"to": "agent-1", "content": f"hello {env['n']} from agent-0"}}})
    r = await env["client"].post("/mcp", data=body, headers=env["headers"][0])
    assert r.status_code == 200 and b'"isError":false' in await r.get_data(), await r.get_data()


async def asgi_round(env: dict[str, Any], k: int) -> None:
    """`k` send_message calls at once (agent-i -> agent-i+1), straight into the ASGI entry as hypercorn's trio
    worker makes them: the body queued on a trio memory channel (a chunk, then the empty last message)."""
    app = env["client"].app
    if "asgi_headers" not in env:
        env["asgi_headers"] = [[(k.lower().encode(), v.encode()) for k, v in h.items()] for h in env["headers"]]

    async def one(i: int) -> None:
        env["n"] += 1
        body = json.dumps({"jsonrpc": "2.0", "id": env["n"], "method": "tools/call", "params": {
            "name": "send_message", "arguments": {"to": f"agent-{(i + 1) % len(env['headers'])}",
                                                  "content": f"hello {env['n']} from agent-{i}"}}}).encode()
        scope = {"type": "http", "method": "POST", "path": "/mcp", "query_string": b"", "client": ("127.0.0.1", 1),
                 "headers": [*env["asgi_headers"][i], (b"content-length", str(len(body)).encode())]}
        queue_in, queue_out = trio.open_memory_channel[dict[str, Any]](10)
        queue_in.send_nowait({"type": "http.request", "body": body, "more_body": True})
        queue_in.send_nowait({"type": "http.request", "body": b"", "more_body": False})
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app.asgi_app(scope, queue_out.receive, send)
        assert sent[0]["status"] == 200 and b'"isError":false' in sent[1]["body"], sent

    async with trio.open_nursery() as nursery:
        for i in range(k):
            nursery.start_soon(one, i)


async def asgi_cpu_per_call(env: dict[str, Any], k: int, calls: int, rounds: int) -> dict[str, Any]:
    """Process CPU µs per call with `k` calls in flight at once, through the ASGI entry (no test client)."""
    import apsw

    for _ in range(max(1, 200 // k)):
        await asgi_round(env, k)
    per = []
    for _ in range(rounds):
        env["db"].con.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_TRUNCATE)  # what the server's checkpointer does
        n = max(1, calls // k)
        t0 = time.process_time()
        for _ in range(n):
            await asgi_round(env, k)
        per.append(round((time.process_time() - t0) * 1e6 / (n * k), 1))
    return {"asgi_concurrent": k, "cpu_us_per_call": per, "best": min(per)}


async def cpu_per_call(env: dict[str, Any], calls: int, rounds: int) -> dict[str, Any]:
    """Process CPU µs per call in each round, and the event loop thread's own (on PostgreSQL the database work runs
    in worker threads: the loop's share is what bounds one process)."""
    per, loop = [], []
    for _ in range(rounds):
        t0, l0 = time.process_time(), time.thread_time()
        for _ in range(calls):
            await send(env)
        per.append(round((time.process_time() - t0) * 1e6 / calls, 1))
        loop.append(round((time.thread_time() - l0) * 1e6 / calls, 1))
    return {"cpu_us_per_call": per, "best": min(per), "loop_cpu_us_per_call": loop, "loop_best": min(loop)}


async def counts(env: dict[str, Any], calls: int = 200) -> dict[str, Any]:
    """Python function calls (server and test client), SQL statements, and transactions per request: each
    statement run outside a transaction is a transaction of its own (a read takes and drops the WAL read lock,
    two fcntl calls)."""
    stmts = [0]
    py = [0]
    txns = [0]
    con = env["db"].con

    def tracer(cursor: Any, sql: str, bindings: Any) -> bool:
        stmts[0] += 1
        if not con.in_transaction:
            txns[0] += 1
        return True

    def profiler(frame: Any, event: str, arg: Any) -> None:
        if event == "call":
            py[0] += 1

    env["db"].con.exec_trace = tracer
    sys.setprofile(profiler)
    try:
        for _ in range(calls):
            await send(env)
    finally:
        sys.setprofile(None)
        env["db"].con.exec_trace = None
    return {"python_calls_per_request": round(py[0] / calls, 1), "sql_statements_per_request": stmts[0] / calls,
            "transactions_per_request": txns[0] / calls}


def parts(env: dict[str, Any]) -> dict[str, Any]:
    """CPU µs of the service calls alone (best of 5 rounds), and send_message's wall time with SQLite's automatic
    checkpoint (every 1000 WAL pages, on the committing connection: here, the event loop) and without it."""
    from commhub_lib import models
    from commhub_lib.service import accounts, messaging, sessions
    from commhub_lib.store import sessions as session_store

    hub, db, net = env["hub"], env["db"], env["network_id"]
    principal = accounts.authenticate(hub, env["token"])
    body = models.SendMessage.model_validate({"to": "agent-1", "content": "hello there from agent-0"})

    def best(fn: Any, n: int = 2000) -> float:
        out = []
        for _ in range(5):
            t0 = time.process_time()
            for _ in range(n):
                fn()
            out.append((time.process_time() - t0) * 1e6 / n)
        return round(min(out), 1)

    res: dict[str, Any] = {
        "authenticate_us": best(lambda: accounts.authenticate(hub, env["token"])),
        "get_session_us": best(lambda: session_store.get_session(db, net, "agent-1")),
        "resolve_caller_us": best(lambda: sessions.resolve_caller(hub, principal, net, "agent-0")),
        "send_message_service_us": best(lambda: messaging.send_message(hub, net, "agent-0", body), 500),
        "lock_probe_us": best(db._try_lock),
    }
    for pages in (1000, 0):
        db.con.pragma("wal_autocheckpoint", pages)
        walls = []
        c0 = time.process_time()
        for _ in range(3000):
            t0 = time.perf_counter()
            messaging.send_message(hub, net, "agent-0", body)
            walls.append(time.perf_counter() - t0)
        cpu = (time.process_time() - c0) / 3000
        walls.sort()
        total = sum(walls)
        res[f"autocheckpoint_{pages}"] = {
            "cpu_us": round(cpu * 1e6, 1), "wall_mean_us": round(total / 3000 * 1e6, 1),
            "wall_p50_us": round(walls[1500] * 1e6, 1), "wall_p99_us": round(walls[2970] * 1e6, 1),
            "wall_max_us": round(walls[-1] * 1e6, 1),
            "share_of_wall_in_calls_over_1ms": round(sum(w for w in walls if w > 0.001) / total, 3)}
    return res


async def measure(a: argparse.Namespace, log_stream: Any) -> dict[str, Any]:
    """Set up, then measure what the command line asked for."""
    env = await setup(log_stream, clients=max(2, a.asgi + 1),
                      extra=dict(s.split("=", 1) for s in a.setting))
    if a.asgi:
        env["db"].con.pragma("wal_autocheckpoint", 0)  # the server checkpoints in a thread, not in the COMMIT
        return await asgi_cpu_per_call(env, a.asgi, a.calls, a.rounds)
    if a.count:
        return await counts(env)
    if a.parts:
        return parts(env)
    return await cpu_per_call(env, a.calls, a.rounds)


def main() -> None:
    """Command line."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repo", default=str(HERE.parent), help="checkout whose commhub_lib is measured")
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--count", action="store_true")
    ap.add_argument("--parts", action="store_true")
    ap.add_argument("--asgi", type=int, default=0, metavar="K",
                    help="send K calls at once straight into the ASGI entry (no test client), as many agents do")
    ap.add_argument("--setting", action="append", default=[], metavar="NAME=VALUE",
                    help="a server setting for the measured hub (string settings only, e.g. metrics=loopback)")
    a = ap.parse_args()
    sys.path.insert(0, a.repo)
    import commhub_lib

    assert Path(commhub_lib.__file__).resolve().is_relative_to(Path(a.repo).resolve()), commhub_lib.__file__
    with open(os.devnull, "w") as log_stream:
        print(json.dumps({"repo": a.repo, **trio.run(measure, a, log_stream)}))


if __name__ == "__main__":
    main()
