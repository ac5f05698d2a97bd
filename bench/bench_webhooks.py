"""Webhooks: their throughput, and what the outbox costs MCP `send_message` (A/B in one run).

One run starts a fresh CommHub (`commhub.py serve`, webhook_targets=loopback, rate limits off) and, in this trio
process, a webhook receiver on 127.0.0.1 (tests/webhook_receiver.py: raw trio + h11, answers 204). It registers
a user, an agent `worker` (report_status) and --senders agents with their own MCP sessions, then alternates
segments of --seconds each, --rounds times, in the order off, outbox, on, off, outbox, on, …:

  off:    every webhook disabled (no outbox rows are written): the baseline;
  outbox: --webhooks webhooks to a second receiver that never answers (webhook_timeout_seconds 600): every send
          writes one outbox row per webhook in its own transaction, and nothing is delivered (one POST is held):
          the outbox's own cost on send_message;
  on:     --webhooks webhooks to the answering receiver: rows written, and the worker POSTs each, signed (the
          outbox plus the deliveries, which share the hub's event loop and database).

In each segment the senders call send_message to `worker` in a closed loop; the segment's sends/s and send
latency p50/p99 are measured. After each `on` segment the run waits until the receiver has every event of the
segment (bounded), so webhook throughput = events delivered / (the segment plus the time to drain). Prints one
JSON object (also appended to --out when given).

    python bench/bench_webhooks.py                       # 3 rounds of 10 s, 8 senders, 1 webhook (~80 s)
    python bench/bench_webhooks.py --webhooks 4 --rounds 2 --out bench/results/<date>-webhooks/results.jsonl
    python bench/bench_webhooks.py --cpu                 # the outbox alone: CPU µs per send, in this process

`--cpu` measures what the wall-clock run cannot on a busy shared box: process CPU µs per MCP send_message
through the app in this process (bench/request_cost.py's setup: quart's test client, no sockets), in rounds
that alternate a network without webhooks and one whose --webhooks webhooks all match (each send writes their
outbox rows; no worker runs, so nothing is delivered). Best of --rounds per side.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import httpx
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import benchlib as bl  # noqa: E402

from tests.webhook_receiver import Receiver, start_receiver  # noqa: E402

PROTOCOL = "2025-06-18"


async def segment(http: httpx.AsyncClient, base: str, sessions: list[dict[str, str]], seconds: float,
                  tag: str) -> dict:
    """Closed-loop send_message from every session for `seconds`: count, sends/s, latency."""
    latencies: list[float] = []
    deadline = trio.current_time() + seconds

    async def sender(headers: dict[str, str], index: int) -> None:
        n = 0
        while trio.current_time() < deadline:
            started = time.perf_counter()
            await bl.mcp_tool(http, base, headers, "send_message", {"to": "worker", "content": f"{tag}-{index}-{n}"})
            latencies.append(time.perf_counter() - started)
            n += 1

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for i, headers in enumerate(sessions):
            nursery.start_soon(sender, headers, i)
    took = time.perf_counter() - started
    return {"sends": len(latencies), "sends_per_s": round(len(latencies) / took, 1), **bl.lat_summary_ms(latencies)}


async def run(args: argparse.Namespace) -> dict:
    server = bl.start_commhub(env_extra={"COMMHUB_WEBHOOK_TARGETS": "loopback",
                                         "COMMHUB_WEBHOOK_TIMEOUT_SECONDS": "600"})
    try:
        async with trio.open_nursery() as nursery:
            receiver = await start_receiver(nursery)
            held = await start_receiver(nursery, mode="hang")
            result = await drive(args, server.base, receiver, held)
            nursery.cancel_scope.cancel()
    finally:
        result_stop = server.stop()
    result["server_stop"] = result_stop
    return result


async def drive(args: argparse.Namespace, base: str, receiver: Receiver, held: Receiver) -> dict:
    account = bl.register(base)
    auth = {"Authorization": f"Bearer {account['token']}"}
    network = account["network_id"]
    async with httpx.AsyncClient(timeout=30, trust_env=False,
                                 limits=httpx.Limits(max_connections=args.senders + 8)) as http:
        worker = (await http.post(f"{base}/api/tokens", headers=auth, json={
            "name": "worker", "network_id": network, "alias": "worker"})).json()["token"]
        wh = await bl.mcp_open(http, base, worker, "bench_webhooks", PROTOCOL)
        await bl.mcp_tool(http, base, wh, "report_status", {"alias": "worker"})
        sessions = []
        for i in range(args.senders):
            token = (await http.post(f"{base}/api/tokens", headers=auth, json={
                "name": f"s{i}", "network_id": network, "alias": f"s{i}"})).json()["token"]
            headers = await bl.mcp_open(http, base, token, "bench_webhooks", PROTOCOL)
            await bl.mcp_tool(http, base, headers, "report_status", {"alias": f"s{i}"})
            sessions.append(headers)
        hooks: dict[str, list[str]] = {"on": [], "outbox": []}
        for mode, target in (("on", receiver), ("outbox", held)):
            for _ in range(args.webhooks):
                r = await http.post(f"{base}/api/networks/{network}/webhooks", headers=auth,
                                    json={"url": target.url, "events": ["new_message"]})
                r.raise_for_status()
                hooks[mode].append(r.json()["webhook_id"])

        async def set_enabled(chosen: str) -> None:
            for mode, ids in hooks.items():
                for webhook_id in ids:
                    r = await http.patch(f"{base}/api/networks/{network}/webhooks/{webhook_id}", headers=auth,
                                         json={"enabled": mode == chosen})
                    r.raise_for_status()

        rows = []
        for rnd in range(args.rounds):
            for mode in ("off", "outbox", "on"):
                await set_enabled(mode)
                before = len(receiver.received)
                started = time.perf_counter()
                seg = await segment(http, base, sessions, args.seconds, f"{mode}{rnd}")
                row = {"round": rnd, "mode": mode, **seg}
                if mode == "on":
                    expected = before + seg["sends"] * args.webhooks
                    with trio.move_on_after(120):
                        await receiver.wait_until(lambda n=expected: len(receiver.received) >= n, timeout=120)
                    took = time.perf_counter() - started
                    got = len(receiver.received) - before
                    row.update(delivered=got, drain_s=round(took - args.seconds, 2),
                               deliveries_per_s=round(got / took, 1))
                rows.append(row)
                print(json.dumps(row), file=sys.stderr)

    def med(mode: str, key: str) -> float | None:
        return bl.median([r[key] for r in rows if r["mode"] == mode])

    off, outbox, on = med("off", "sends_per_s"), med("outbox", "sends_per_s"), med("on", "sends_per_s")
    return {
        "bench": "webhooks", "command": bl.this_command(), "senders": args.senders, "webhooks": args.webhooks,
        "seconds": args.seconds, "rounds": args.rounds, "segments": rows,
        "median": {
            "off_sends_per_s": off, "outbox_sends_per_s": outbox, "on_sends_per_s": on,
            "off_p50_ms": med("off", "p50"), "outbox_p50_ms": med("outbox", "p50"), "on_p50_ms": med("on", "p50"),
            "off_p99_ms": med("off", "p99"), "outbox_p99_ms": med("outbox", "p99"), "on_p99_ms": med("on", "p99"),
            "outbox_cost_pct": round(100 * (off - outbox) / off, 1) if off and outbox else None,
            "outbox_and_delivery_cost_pct": round(100 * (off - on) / off, 1) if off and on else None,
            "deliveries_per_s": med("on", "deliveries_per_s"), "drain_s": med("on", "drain_s"),
        },
    }


async def cpu_ab(args: argparse.Namespace) -> dict:
    """Process CPU µs per send_message without and with matching webhooks (outbox rows only), rounds interleaved."""
    import os

    import request_cost as rc

    from commhub_lib.ids import now_text
    from commhub_lib.store import webhooks as webhook_store

    with open(os.devnull, "w") as log_stream:  # noqa: ASYNC230 (/dev/null, before anything runs)
        env = await rc.setup(log_stream)
        hub, db = env["hub"], env["db"]
        ids = [f"wh_bench{i}" for i in range(args.webhooks)]
        with db.write():
            for webhook_id in ids:
                webhook_store.insert_webhook(db, webhook_id, env["network_id"], "https://example.invalid/x", "s",
                                             "[]", "[]", "", "bench", now_text())

        def enable(on: bool) -> None:
            with db.write():
                for webhook_id in ids:
                    webhook_store.update_webhook(db, webhook_id, "https://example.invalid/x", "[]", "[]", "", int(on))
            hub.webhooks_changed()

        sides: dict[str, list[float]] = {"off": [], "on": []}
        await rc.cpu_per_call(env, 200, 1)  # warm up
        for _ in range(args.rounds * 2):
            for side in ("off", "on"):
                enable(side == "on")
                sides[side] += (await rc.cpu_per_call(env, args.cpu_calls, 1))["cpu_us_per_call"]
        rows = db.query("SELECT count(*) AS n FROM webhook_deliveries", ())[0]["n"]
    off, on = min(sides["off"]), min(sides["on"])
    return {"bench": "webhooks-cpu", "command": bl.this_command(), "webhooks": args.webhooks,
            "calls_per_round": args.cpu_calls, "cpu_us_per_send": sides, "outbox_rows_written": rows,
            "best_off_us": off, "best_on_us": on, "outbox_cost_us": round(on - off, 1),
            "outbox_cost_pct": round(100 * (on - off) / off, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--senders", type=int, default=8)
    parser.add_argument("--webhooks", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", help="append the result as one JSON line to this file")
    parser.add_argument("--cpu", action="store_true", help="the outbox's CPU µs per send, in this process")
    parser.add_argument("--cpu-calls", type=int, default=1000, help="sends per --cpu round")
    args = parser.parse_args()
    if args.cpu:
        result = trio.run(cpu_ab, args)
        print(json.dumps({k: v for k, v in result.items() if k != "cpu_us_per_send"}, indent=1))
    else:
        result = trio.run(run, args)
        print(json.dumps(result["median"], indent=1))
    if args.out:
        bl.append_jsonl(args.out, result)


if __name__ == "__main__":
    main()
