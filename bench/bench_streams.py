"""5,000 open SSE streams: time to open them, memory per stream, wake latency at a paced 200 sends/s,
/health while that runs, garbage-collection pauses, and SIGTERM with every stream open.

Reuses bench_wake.py's stream readers and MCP senders. One run:
  1. a fresh server (its own temp database), a user, one network token per agent (+ senders);
  2. opens --streams streams (--parallel connecting at once): seconds until all are live; server RSS before
     and after: KiB per stream;
  3. paced load: --rate MCP send_task calls per second for --seconds from --senders sessions to random
     streaming agents (open loop: each send starts at its slot); wake latency = send start -> event parsed
     off the recipient's stream; lost = no event within --event-timeout; meanwhile another process probes
     GET /health every 20 ms: its max is the longest the server's loop stood still;
  4. SIGTERM with every stream open: seconds to exit, exit code;
  5. the server log's "garbage collection ... paused" lines (commhub_lib/gc_tuning.py logs collections
     over 50 ms; only when the server tunes gc, i.e. `serve`).

    .venv/bin/python bench/bench_streams.py --streams 5000 --json-out bench/results_streams.jsonl
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import re
import resource
import sys
import time

import trio

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import benchlib as bl  # noqa: E402
from bench_wake import Agent, Bench  # noqa: E402

GC_LINE = re.compile(r"garbage collection of generation (\d) paused the server (\d+) ms")


async def paced_load(b: Bench, a: argparse.Namespace, live: list[int]) -> dict:
    """--rate sends/s for --seconds from --senders MCP sessions; wake latency and losses."""
    heads = [await b.mcp_session(b.agents[i].token, b.agents[i].alias) for i in range(a.senders)]
    n = int(a.rate * a.seconds)
    sent_at: dict[str, tuple[float, int]] = {}
    late, errors = [0], [0]
    rng = random.Random(a.seed)
    cpu0 = bl.proc_cpu_s(b.pid)
    probe_cmd = [sys.executable, os.path.join(HERE, "benchlib.py"), "probe", str(b.port), str(a.seconds)]
    probe_out: list[bytes] = []

    async def probe() -> None:
        p = await trio.run_process(probe_cmd, capture_stdout=True, check=True)
        probe_out.append(p.stdout)

    async def one(k: int, to: int, head: dict[str, str]) -> None:
        title = f"pace-{k}"
        b.waiters[title] = trio.Event()
        t0 = time.perf_counter()
        sent_at[title] = (t0, to)
        try:
            with trio.fail_after(a.call_timeout):
                await b.send_one("mcp", head, to, title)
        except Exception:  # noqa: BLE001 - counted, the run goes on
            errors[0] += 1
            sent_at.pop(title, None)

    t_start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(probe)
        for k in range(n):
            slot = t_start + k / a.rate
            delay = slot - time.perf_counter()
            if delay > 0:
                await trio.sleep(delay)
            elif delay < -0.05:
                late[0] += 1
            nursery.start_soon(one, k, rng.choice(live), heads[k % a.senders])
    load_s = time.perf_counter() - t_start
    cpu = bl.proc_cpu_s(b.pid) - cpu0
    with trio.move_on_after(a.event_timeout):
        for title in list(sent_at):
            await b.waiters[title].wait()
    wake, lost = [], 0
    for title, (t0, to) in sent_at.items():
        b.waiters.pop(title, None)
        got = b.arrived.pop(title, None)
        if got is None:
            lost += 1
            continue
        if got[1] != to:
            b.misrouted += 1
        wake.append(got[0] - t0)
    import json

    return {"rate": a.rate, "sent": len(sent_at), "errors": errors[0], "late_slots": late[0],
            "load_s": round(load_s, 2), "wake_ms": bl.lat_summary_ms(wake), "lost": lost,
            "misrouted": b.misrouted, "server_cpu_s": round(cpu, 2), "health": json.loads(probe_out[0])}


async def amain(a: argparse.Namespace, srv: bl.Server, agents: list[Agent]) -> dict:
    """Open the streams, measure, then stop the server with them open."""
    b = Bench(a, srv.base, srv.pid, agents, agents[-1].token)
    out: dict = {"rss_base_kb": bl.proc_status_kb(srv.pid)}
    with trio.fail_after(a.hard_timeout):
        async with trio.open_nursery() as streams:
            live = list(range(a.senders, len(agents)))
            t0 = time.perf_counter()
            try:
                await b.open_streams(streams, live, parallel=a.parallel)
            except RuntimeError as exc:  # some refused or cut: count them, measure with the rest
                out["open_error"] = str(exc)
            out["open_s"] = round(time.perf_counter() - t0, 2)
            failed = [i for i in live if agents[i].error or agents[i].closed.is_set()]
            out["open_failed"] = len(failed)
            live = [i for i in live if i not in set(failed)]
            await trio.sleep(a.settle)
            out["rss_open_kb"] = bl.proc_status_kb(srv.pid)
            # This process's own collector would pause the readers and count as wake latency.
            gc.collect()
            gc.freeze()
            gc.disable()
            out["load"] = await paced_load(b, a, live)
            out["streams_alive"] = sum(1 for i in live if not agents[i].closed.is_set())
            await b.http.aclose()
            proc = srv.proc
            proc.send_signal(15)  # SIGTERM; srv.stop() afterwards would remove the log with the temp dir
            t_stop = time.perf_counter()
            rc = await trio.to_thread.run_sync(proc.wait, 60)
            out["stop"] = {"rc": rc, "exit_s": round(time.perf_counter() - t_stop, 2)}
            with trio.move_on_after(10):
                for i in live:
                    await agents[i].closed.wait()
            out["streams_ended"] = sum(1 for i in live if agents[i].closed.is_set())
            streams.cancel_scope.cancel()
    gc.enable()
    await b.streams.aclose()
    return out


def main() -> int:
    """Command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--streams", type=int, default=5000)
    p.add_argument("--parallel", type=int, default=200, help="streams connecting at once")
    p.add_argument("--senders", type=int, default=16)
    p.add_argument("--rate", type=float, default=200.0, help="sends per second (paced)")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--settle", type=float, default=3.0)
    p.add_argument("--call-timeout", type=float, default=15.0)
    p.add_argument("--event-timeout", type=float, default=5.0)
    p.add_argument("--hard-timeout", type=float, default=600.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--server-arg", action="append", default=[])
    p.add_argument("--repo", default=str(bl.REPO), help="checkout whose commhub.py serves")
    p.add_argument("--json-out")
    a = p.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < a.streams * 2 + 500:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, a.streams * 2 + 1000), hard))
    from pathlib import Path

    srv = bl.start_commhub(a.server_arg, repo=Path(a.repo), python=sys.executable)
    log_path = srv.log_path
    try:
        t0 = time.monotonic()
        reg = bl.register(srv.base)
        n = a.streams + a.senders
        tokens = bl.create_tokens(srv.base, reg["token"], reg["network_id"], n)
        setup_s = round(time.monotonic() - t0, 1)
        agents = [Agent(i, f"agent-{i}", tokens[i]) for i in range(n)]
        log_text = ""
        out = trio.run(amain, a, srv, agents)
    finally:
        try:
            log_text = Path(log_path).read_text()
        except OSError:
            log_text = ""
        final = srv.stop()
    pauses = [(int(g), int(ms)) for g, ms in GC_LINE.findall(log_text)]
    base, opened = out["rss_base_kb"]["VmRSS"], out["rss_open_kb"]["VmRSS"]
    out.update({"bench": "streams", "streams": a.streams, "setup_s": setup_s, "final_stop": final,
                "kib_per_stream": round((opened - base) / a.streams, 1), "gc_pauses_over_50ms": pauses,
                "command": bl.this_command(), "server_cmd": srv.command(),
                "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "loadavg1": bl.loadavg1()})
    ld = out["load"]
    print(f"{a.streams} streams: open {out['open_s']} s ({out['open_failed']} failed), "
          f"{out['kib_per_stream']} KiB/stream "
          f"(RSS {base // 1024} -> {opened // 1024} MiB)\n"
          f"paced {ld['rate']}/s for {ld['load_s']} s: {ld['sent']} sent, wake ms {ld['wake_ms']}, lost {ld['lost']},"
          f" errors {ld['errors']}, late slots {ld['late_slots']}, server CPU {ld['server_cpu_s']} s\n"
          f"/health during load: {ld['health']['health_ms']}, spikes {ld['health']['spikes_over_50ms'][:10]}\n"
          f"SIGTERM with {out['streams_alive']} streams open: {out['stop']}, ended {out['streams_ended']}\n"
          f"server gc pauses > 50 ms (generation, ms): {pauses}")
    if a.json_out:
        bl.append_jsonl(a.json_out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
