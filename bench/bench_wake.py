"""SSE wake latency, send throughput with streams open, and the RSS of idle streams, for CommHub.

One run starts a fresh CommHub (`commhub.py serve --port 0 --db <temp>`, rate limits off), registers a user,
creates one network token per agent (plus one for a sender) and, in one trio process with httpx + httpx_sse:

  1. idle streams: opens 100 SSE streams (GET /events/agent-i?token=ntok_i), then 900 more; the server's
     VmRSS (/proc/<pid>/status) before, with 100 and with 1000 idle streams; the server's CPU while the
     1000 streams sit idle for --idle-seconds, and the worst /health round trip during that time (a stall
     of the event loop, e.g. by the presence sweeper, shows up there); a short wake-latency sample at 1000;
  2. closes all but 30 streams; wake latency at 30: --sends sequential send_task calls over MCP (from a
     separate "sender" agent) to random agents; latency = from just before the POST to the moment the
     `new_task` event is parsed off the recipient's stream (same process, time.perf_counter);
  3. reopens streams up to 100; wake latency at 100, over MCP and over POST /api/tasks;
  4. throughput: --senders agents (each its own MCP session) send tasks to random agents, closed loop, for
     --load-seconds (or --load-sends); sends/s, send latency, wake latency under load, events lost;
  5. SIGTERM with 100 streams open: seconds to exit and the exit code.

Each task's title is a unique tag; the stream reader matches it, so a lost or misrouted event is counted.

    /work/venv/bin/python bench/bench_wake.py                   # one run (~70 s)
    /work/venv/bin/python bench/bench_wake.py --table bench/results/2026-11-28-sse-wake/results_wake_after.jsonl

Bounded: counts, per-call timeouts, a per-phase deadline and a whole-run limit (--hard-timeout). Loopback only.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import resource
import sys
import time
from dataclasses import dataclass, field

import httpx
import trio
from httpx_sse import aconnect_sse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import benchlib as bl  # noqa: E402

PROTOCOL = "2025-06-18"


@dataclass
class Agent:
    index: int
    alias: str
    token: str
    scope: trio.CancelScope | None = None
    ready: trio.Event = field(default_factory=trio.Event)
    closed: trio.Event = field(default_factory=trio.Event)
    error: str | None = None
    events: int = 0


class Bench:
    def __init__(self, a: argparse.Namespace, base: str, pid: int, agents: list[Agent], sender_token: str):
        self.a, self.base, self.pid = a, base, pid
        self.port = int(base.rsplit(":", 1)[1])
        self.agents = agents
        self.sender_token = sender_token
        self.rng = random.Random(a.seed)
        self.waiters: dict[str, trio.Event] = {}
        self.arrived: dict[str, tuple[float, int]] = {}
        self.misrouted = 0
        self.stream_errors: dict[str, int] = {}
        self.out: dict = {}
        self.ready_for_shutdown = trio.Event()
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
        self.streams = httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(15.0, read=None), trust_env=False)
        self.http = httpx.AsyncClient(limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
                                      timeout=httpx.Timeout(a.call_timeout), trust_env=False)

    # ------------------------------------------------------------------------------------ streams
    async def _hold(self, ag: Agent, task_status=trio.TASK_STATUS_IGNORED) -> None:
        with trio.CancelScope() as scope:
            ag.scope = scope
            ag.ready = trio.Event()
            task_status.started()
            try:
                async with aconnect_sse(self.streams, "GET", f"{self.base}/events/{ag.alias}",
                                        params={"token": ag.token}) as es:
                    if es.response.status_code != 200:
                        await es.response.aread()
                        ag.error = f"http_{es.response.status_code}: {es.response.text[:120]}"
                        return
                    async for sse in es.aiter_sse():
                        if not ag.ready.is_set():
                            ag.ready.set()  # the preamble (retry:) comes after the server subscribed us
                        if sse.event != "new_task":
                            continue
                        t = time.perf_counter()
                        ag.events += 1
                        title = json.loads(sse.data).get("title") or ""
                        self.arrived[title] = (t, ag.index)
                        w = self.waiters.get(title)
                        if w is not None:
                            w.set()
            except (httpx.HTTPError, ValueError) as e:
                kind = type(e).__name__
                self.stream_errors[kind] = self.stream_errors.get(kind, 0) + 1
                ag.error = f"{kind}: {e}"[:160]
            finally:
                ag.ready.set()
                ag.closed.set()

    async def open_streams(self, nursery: trio.Nursery, idx: list[int], parallel: int = 50) -> float:
        """Open streams for these agents (at most `parallel` connecting at once); seconds until all are live."""
        t0 = time.perf_counter()
        limiter = trio.CapacityLimiter(parallel)

        async def one(ag: Agent) -> None:
            async with limiter:
                ag.closed = trio.Event()
                await nursery.start(self._hold, ag)
                with trio.move_on_after(self.a.call_timeout):
                    await ag.ready.wait()

        async with trio.open_nursery() as n:
            for i in idx:
                n.start_soon(one, self.agents[i])
        bad = [self.agents[i].error for i in idx if self.agents[i].error or not self.agents[i].ready.is_set()]
        if bad:
            raise RuntimeError(f"{len(bad)} of {len(idx)} streams failed to open, e.g. {bad[0]}")
        return time.perf_counter() - t0

    async def close_streams(self, idx: list[int]) -> None:
        for i in idx:
            if self.agents[i].scope is not None:
                self.agents[i].scope.cancel()
        with trio.move_on_after(10):
            for i in idx:
                await self.agents[i].closed.wait()

    # ------------------------------------------------------------------------------------ MCP
    async def mcp_session(self, token: str, alias: str) -> dict[str, str]:
        """initialize + report_status; the headers to use for this agent's calls."""
        h = await bl.mcp_open(self.http, self.base, token, "bench_wake", PROTOCOL)
        await self.tool(h, "report_status", {"alias": alias, "status": "working", "agent": "bench_wake",
                                             "model": "none"})
        return h

    async def tool(self, h: dict[str, str], name: str, args: dict) -> dict:
        return await bl.mcp_tool(self.http, self.base, h, name, args)

    # ------------------------------------------------------------------------------------ sends
    async def send_one(self, via: str, h: dict[str, str], to: int, title: str) -> None:
        alias = self.agents[to].alias
        if via == "mcp":
            await self.tool(h, "send_task", {"to": alias, "content": f"wake {title}", "title": title})
        else:
            r = await self.http.post(f"{self.base}/api/tasks", headers={"Authorization": h["Authorization"]},
                                     json={"to": alias, "content": f"wake {title}", "title": title})
            r.raise_for_status()

    async def latency(self, label: str, via: str, h: dict[str, str], live: list[int], n: int) -> dict:
        """n sequential sends to random live agents; each waits for its event (or a timeout) before the next."""
        wake, resp, before_resp = [], [], 0
        lost = errors = 0
        err_sample = None
        deadline = time.perf_counter() + self.a.phase_seconds
        for k in range(n):
            if time.perf_counter() > deadline:
                break
            to = self.rng.choice(live)
            title = f"{label}-{k}"
            ev = self.waiters[title] = trio.Event()
            t0 = time.perf_counter()
            try:
                with trio.fail_after(self.a.call_timeout):
                    await self.send_one(via, h, to, title)
            except (httpx.HTTPError, RuntimeError, trio.TooSlowError) as e:
                errors += 1
                err_sample = err_sample or repr(e)[:200]
                self.waiters.pop(title, None)
                continue
            t1 = time.perf_counter()
            with trio.move_on_after(self.a.event_timeout):
                await ev.wait()
            self.waiters.pop(title, None)
            got = self.arrived.pop(title, None)
            resp.append(t1 - t0)
            if got is None:
                lost += 1
                continue
            if got[1] != to:
                self.misrouted += 1
            wake.append(got[0] - t0)
            before_resp += got[0] < t1
        return {"streams": len(live), "via": via, "sent": len(resp), "errors": errors, "error_sample": err_sample,
                "lost": lost, "wake_ms": bl.lat_summary_ms(wake), "send_ms": bl.lat_summary_ms(resp),
                "event_before_response": before_resp}

    async def throughput(self, live: list[int]) -> dict:
        """--senders closed-loop MCP senders (agents 0..senders-1) to random live agents."""
        a = self.a
        heads = [await self.mcp_session(self.agents[i].token, self.agents[i].alias) for i in range(a.senders)]
        sent_at: dict[str, tuple[float, int]] = {}
        resp: list[float] = []
        errors: dict[str, int] = {}
        budget = [a.load_sends]
        win = bl.CpuWindow(self.pid).start()
        t_start = time.perf_counter()
        stop_at = t_start + a.load_seconds
        cpu0, ru0 = bl.proc_cpu_s(self.pid), resource.getrusage(resource.RUSAGE_SELF)

        async def worker(w: int) -> None:
            rng = random.Random(a.seed * 1000 + w)
            k = 0
            while budget[0] > 0 and time.perf_counter() < stop_at:
                budget[0] -= 1
                to = rng.choice(live)
                title = f"load-{w}-{k}"
                k += 1
                self.waiters[title] = trio.Event()
                t0 = time.perf_counter()
                sent_at[title] = (t0, to)
                try:
                    with trio.fail_after(a.call_timeout):
                        await self.send_one("mcp", heads[w], to, title)
                except (httpx.HTTPError, RuntimeError, trio.TooSlowError) as e:
                    errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
                    sent_at.pop(title, None)
                    self.waiters.pop(title, None)
                    continue
                resp.append(time.perf_counter() - t0)

        async with trio.open_nursery() as n:
            for w in range(a.senders):
                n.start_soon(worker, w)
        t_load = time.perf_counter() - t_start
        cpu_window = win.stop()
        cpu1, ru1 = bl.proc_cpu_s(self.pid), resource.getrusage(resource.RUSAGE_SELF)
        with trio.move_on_after(self.a.event_timeout):  # stragglers
            for title in sent_at:
                await self.waiters[title].wait()
        wake, lost = [], 0
        for title, (t0, to) in sent_at.items():
            self.waiters.pop(title, None)
            got = self.arrived.pop(title, None)
            if got is None:
                lost += 1
                continue
            if got[1] != to:
                self.misrouted += 1
            wake.append(got[0] - t0)
        ok = len(resp)
        return {"streams": len(live), "senders": a.senders, "ok": ok, "errors": errors, "load_s": round(t_load, 2),
                "sends_per_s": round(ok / t_load, 1) if t_load else None, "send_ms": bl.lat_summary_ms(resp),
                "wake_ms": bl.lat_summary_ms(wake), "lost": lost,
                "server_cpu_s": round(cpu1 - cpu0, 2),
                "server_cpu_ms_per_send": round((cpu1 - cpu0) * 1000 / ok, 3) if ok else None,
                "client_cpu_s": round(ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime, 2),
                "cpu_window": cpu_window}

    async def idle_watch(self, seconds: float, probe_seconds: float) -> dict:
        """Server CPU while nothing at all is sent (`seconds`), then GET /health every 20 ms for `probe_seconds`
        from a separate process (its max shows event-loop stalls: presence sweeps, heartbeat fan-out)."""
        cpu0, t0 = bl.proc_cpu_s(self.pid), time.perf_counter()
        await trio.sleep(seconds)
        took = time.perf_counter() - t0
        cpu = bl.proc_cpu_s(self.pid) - cpu0
        cmd = [sys.executable, os.path.join(HERE, "benchlib.py"), "probe", str(self.port), str(probe_seconds)]
        p = await trio.run_process(cmd, capture_stdout=True, check=True)
        return {"seconds": round(took, 1), "server_cpu_s": round(cpu, 3),
                "server_cpu_pct_of_core": round(100 * cpu / took, 2), "probe_seconds": probe_seconds,
                **json.loads(p.stdout)}

    def rss(self) -> dict[str, int]:
        return bl.proc_status_kb(self.pid)

    # ------------------------------------------------------------------------------------ the run
    async def run(self) -> dict:
        a, out = self.a, self.out
        n_all = len(self.agents)
        out["rss_base_kb"] = self.rss()
        async with trio.open_nursery() as streams:
            # 1. idle streams: 100, then 1000
            out["open_100_s"] = round(await self.open_streams(streams, list(range(100))), 2)
            await trio.sleep(a.settle)
            out["rss_100_kb"] = self.rss()
            out["open_rest_s"] = round(await self.open_streams(streams, list(range(100, n_all))), 2)
            await trio.sleep(a.settle)
            out["rss_all_kb"] = self.rss()
            # The client's own garbage collector would pause this process (~100-150 ms with 1000 streams) and
            # show up as wake latency: collect now, then keep it off while measuring.
            gc.collect()
            gc.freeze()
            gc.disable()
            out["idle_all"] = await self.idle_watch(a.idle_seconds, a.probe_seconds)
            h = await self.mcp_session(self.sender_token, "sender")
            out["lat_all_mcp"] = await self.latency("l1000", "mcp", h, list(range(n_all)), a.sends_1000)
            out["rss_all_after_sends_kb"] = self.rss()
            # 2. 30 streams
            t = time.perf_counter()
            await self.close_streams(list(range(30, n_all)))
            out["close_all_but_30_s"] = round(time.perf_counter() - t, 2)
            await trio.sleep(1.0)
            out["lat_30_mcp"] = await self.latency("l30", "mcp", h, list(range(30)), a.sends)
            # 3. 100 streams
            await self.open_streams(streams, list(range(30, 100)))
            await trio.sleep(1.0)
            out["lat_100_mcp"] = await self.latency("l100", "mcp", h, list(range(100)), a.sends)
            out["lat_100_rest"] = await self.latency("l100r", "rest", h, list(range(100)), a.sends)
            # 4. throughput with 100 streams open
            out["load_100"] = await self.throughput(list(range(100)))
            out["rss_100_after_load_kb"] = self.rss()
            out["misrouted"] = self.misrouted
            out["stream_errors"] = dict(self.stream_errors)
            out["streams_alive_before_shutdown"] = sum(1 for ag in self.agents[:100] if not ag.closed.is_set())
            # 5. the caller stops the server while these streams are open; the readers end by themselves.
            # Idle keep-alive connections are closed first unless asked (see --keepalive-at-shutdown).
            if not a.keepalive_at_shutdown:
                await self.http.aclose()
            else:
                (await self.http.get(f"{self.base}/health")).raise_for_status()
            self.ready_for_shutdown.set()
            with trio.move_on_after(30):
                for ag in self.agents[:100]:
                    await ag.closed.wait()
            out["streams_ended_by_server"] = sum(1 for ag in self.agents[:100] if ag.closed.is_set())
            streams.cancel_scope.cancel()
        gc.enable()
        await self.streams.aclose()
        await self.http.aclose()
        return out


async def amain(a: argparse.Namespace, srv: bl.Server, agents: list[Agent], sender_token: str) -> dict:
    b = Bench(a, srv.base, srv.pid, agents, sender_token)
    stop_info: dict = {}

    async def stopper() -> None:
        await b.ready_for_shutdown.wait()
        stop_info.update(await trio.to_thread.run_sync(srv.stop))

    with trio.fail_after(a.hard_timeout):
        async with trio.open_nursery() as n:
            n.start_soon(stopper)
            out = await b.run()
    out["shutdown_with_100_streams"] = stop_info
    return out


def summary(r: dict) -> str:
    def lat(key: str) -> str:
        x = r[key]
        w, s = x["wake_ms"], x["send_ms"]
        return (f"{key}: {x['sent']} sends, wake ms p50={w['p50']} p95={w['p95']} p99={w['p99']} max={w['max']}; "
                f"send-call ms p50={s['p50']} p99={s['p99']}; lost={x['lost']} errors={x['errors']}; "
                f"event before response: {x['event_before_response']}")
    n_all = r["agents"]
    ld = r["load_100"]
    kb = {k: v.get("VmRSS") for k, v in r.items() if k.startswith("rss_") and isinstance(v, dict)}
    idle = r["idle_all"]
    lines = [
        f"[bench_wake] run {r['date_utc']}  server: {r['server_cmd']}",
        "  RSS KiB: " + ", ".join(f"{k[4:-3]}={v}" for k, v in kb.items()),
        f"  per idle stream: {r['kib_per_stream_0_100']} KiB (0->100), {r['kib_per_stream_100_n']} KiB "
        f"(100->{n_all}); opening 100 took {r['open_100_s']} s, the next {n_all - 100} "
        f"{r['open_rest_s']} s",
        f"  idle with {n_all} streams for {idle['seconds']} s: server CPU {idle['server_cpu_pct_of_core']}% of a core;"
        f" then /health every 20 ms for {idle['probe_seconds']} s (other process): ms p50={idle['health_ms']['p50']}"
        f" p99={idle['health_ms']['p99']} max={idle['health_ms']['max']}; spikes (t s, ms): {idle['spikes_over_50ms']}",
        "  " + lat("lat_all_mcp"), "  " + lat("lat_30_mcp"), "  " + lat("lat_100_mcp"), "  " + lat("lat_100_rest"),
        f"  load with 100 streams, {ld['senders']} MCP senders: {ld['sends_per_s']} sends/s ({ld['ok']} in "
        f"{ld['load_s']} s), send ms p50={ld['send_ms']['p50']} p99={ld['send_ms']['p99']}; wake ms "
        f"p50={ld['wake_ms']['p50']} p99={ld['wake_ms']['p99']} max={ld['wake_ms']['max']}; lost={ld['lost']} "
        f"errors={ld['errors']}; server CPU {ld['server_cpu_ms_per_send']} ms/send, client CPU {ld['client_cpu_s']} s;"
        f" cores busy: {ld['cpu_window']}",
        f"  misrouted={r['misrouted']} stream errors={r['stream_errors']}; shutdown with 100 streams: "
        f"{r['shutdown_with_100_streams']}, streams ended by server {r['streams_ended_by_server']}/100",
    ]
    return "\n".join(lines)


TABLE = [
    ("wake p50 ms, 30 streams (MCP)", "lat_30_mcp.wake_ms.p50"),
    ("wake p95 ms, 30 streams (MCP)", "lat_30_mcp.wake_ms.p95"),
    ("wake p99 ms, 30 streams (MCP)", "lat_30_mcp.wake_ms.p99"),
    ("wake max ms, 30 streams (MCP)", "lat_30_mcp.wake_ms.max"),
    ("wake p50 ms, 100 streams (MCP)", "lat_100_mcp.wake_ms.p50"),
    ("wake p95 ms, 100 streams (MCP)", "lat_100_mcp.wake_ms.p95"),
    ("wake p99 ms, 100 streams (MCP)", "lat_100_mcp.wake_ms.p99"),
    ("wake max ms, 100 streams (MCP)", "lat_100_mcp.wake_ms.max"),
    ("wake p50 ms, 100 streams (REST POST /api/tasks)", "lat_100_rest.wake_ms.p50"),
    ("wake p99 ms, 100 streams (REST POST /api/tasks)", "lat_100_rest.wake_ms.p99"),
    ("wake max ms, 100 streams (REST POST /api/tasks)", "lat_100_rest.wake_ms.max"),
    ("wake p50 ms, 1000 streams (MCP)", "lat_all_mcp.wake_ms.p50"),
    ("wake p99 ms, 1000 streams (MCP)", "lat_all_mcp.wake_ms.p99"),
    ("wake max ms, 1000 streams (MCP)", "lat_all_mcp.wake_ms.max"),
    ("send_task call p50 ms, 100 streams (MCP, sequential)", "lat_100_mcp.send_ms.p50"),
    ("sends/s with 100 streams open (MCP send_task, closed loop)", "load_100.sends_per_s"),
    ("  send call p50 / p99 ms under load", "load_100.send_ms.p50", "load_100.send_ms.p99"),
    ("  wake p50 / p99 / max ms under load", "load_100.wake_ms.p50", "load_100.wake_ms.p99", "load_100.wake_ms.max"),
    ("  server CPU ms per send under load", "load_100.server_cpu_ms_per_send"),
    ("  client CPU s / server CPU s during load", "load_100.client_cpu_s", "load_100.server_cpu_s"),
    ("  other jobs on the machine during load, cores", "load_100.cpu_window.other_cores"),
    ("server RSS MiB, no stream (after setup)", "rss_base_kb.VmRSS/1024"),
    ("server RSS MiB, 100 idle streams", "rss_100_kb.VmRSS/1024"),
    ("server RSS MiB, 1000 idle streams", "rss_all_kb.VmRSS/1024"),
    ("KiB per idle stream (0 -> 100)", "kib_per_stream_0_100"),
    ("KiB per idle stream (100 -> 1000)", "kib_per_stream_100_n"),
    ("open 900 streams, s (50 connecting at once)", "open_rest_s"),
    ("server CPU % of a core, 1000 idle streams", "idle_all.server_cpu_pct_of_core"),
    ("/health max ms while 1000 streams idle (loop stall)", "idle_all.health_ms.max"),
    ("shutdown (SIGTERM -> exit) s with 100 streams", "shutdown_with_100_streams.exit_s"),
    ("events lost (all phases)", "lost_total"),
]


def _val(r: dict, path: str):
    div = 1.0
    if "/" in path:
        path, d = path.split("/")
        div = float(d)
    v = bl.dig(r, path)
    return None if v is None else v / div


def table(recs: list[dict]) -> str:
    recs = [r for r in recs if r.get("bench") == "wake"]
    if not recs:
        return "(no runs)"
    lines = [f"runs: {len(recs)}", "| metric | median | per run |", "|---|---|---|"]
    for label, *paths in TABLE:
        meds, per = [], []
        for p in paths:
            vs = [_val(r, p) for r in recs]
            meds.append(str(bl.median(vs)))
            per.append("/".join("-" if v is None else str(round(v, 2 if abs(v) < 100 else 1)) for v in vs))
        lines.append(f"| {label} | {' / '.join(meds)} | {' ; '.join(per)} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--agents", type=int, default=1000, help="streams in the idle phase (>= 100)")
    p.add_argument("--sends", type=int, default=500, help="sequential sends per latency phase (30 and 100)")
    p.add_argument("--sends-1000", type=int, default=200, help="sequential sends with all streams open")
    p.add_argument("--senders", type=int, default=16, help="concurrent MCP senders in the throughput phase")
    p.add_argument("--load-seconds", type=float, default=15.0)
    p.add_argument("--load-sends", type=int, default=8000, help="upper bound of sends in the throughput phase")
    p.add_argument("--idle-seconds", type=float, default=16.0, help="idle CPU watch (covers a 15 s heartbeat)")
    p.add_argument("--probe-seconds", type=float, default=16.0, help="/health probe (covers sweeps and a heartbeat)")
    p.add_argument("--settle", type=float, default=2.0, help="seconds to wait before reading RSS")
    p.add_argument("--call-timeout", type=float, default=15.0)
    p.add_argument("--event-timeout", type=float, default=5.0, help="wait this long for an event, then lost")
    p.add_argument("--phase-seconds", type=float, default=40.0, help="time cap of each latency phase")
    p.add_argument("--hard-timeout", type=float, default=170.0, help="whole-run limit, seconds")
    p.add_argument("--keepalive-at-shutdown", action="store_true",
                   help="leave an idle keep-alive HTTP connection open when the server is stopped")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--server-arg", action="append", default=[], help="extra argument for `commhub.py serve`")
    p.add_argument("--json-out", default=bl.results_path("sse-wake", "results_wake.jsonl"))
    p.add_argument("--table", metavar="JSONL", help="only print the medians table of recorded runs")
    a = p.parse_args()
    if a.table:
        print(table(bl.read_jsonl(a.table)))
        return 0
    if a.agents <= 100 or a.senders > 100:
        p.error("--agents must be > 100 (memory per stream is measured beyond the first 100) and --senders <= 100")
    print(f"# {bl.this_command()}", flush=True)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    load = bl.loadavg1()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < a.agents + 200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, a.agents + 1000), hard))
    srv = bl.start_commhub(a.server_arg)
    try:
        t0 = time.monotonic()
        reg = bl.register(srv.base)
        tokens = bl.create_tokens(srv.base, reg["token"], reg["network_id"], a.agents + 1)
        setup_s = time.monotonic() - t0
        agents = [Agent(i, f"agent-{i}", tokens[i]) for i in range(a.agents)]
        out = trio.run(amain, a, srv, agents, tokens[-1])
    finally:
        final_stop = srv.stop()  # no-op if the run already stopped it
    n_all = a.agents
    rss = {k: (out.get(k) or {}).get("VmRSS") for k in ("rss_base_kb", "rss_100_kb", "rss_all_kb")}
    out.update({
        "bench": "wake", "date_utc": started, "agents": n_all, "loadavg1_before": load, "setup_s": round(setup_s, 2),
        "command": bl.this_command(), "server_cmd": srv.command(), "final_stop": final_stop,
        "kib_per_stream_0_100": round((rss["rss_100_kb"] - rss["rss_base_kb"]) / 100, 1),
        "kib_per_stream_100_n": round((rss["rss_all_kb"] - rss["rss_100_kb"]) / (n_all - 100), 1),
        "lost_total": sum(out[k]["lost"] for k in out if k.startswith(("lat_", "load_"))),
        "params": vars(a),
    })
    print(summary(out), flush=True)
    if a.json_out:
        bl.append_jsonl(a.json_out, out)
    ok = out["lost_total"] == 0 and out["misrouted"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
