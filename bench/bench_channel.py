"""Wake latency of the two new paths: the MCP channel (GET /mcp) and `commhub listen --exec`.

One run starts a fresh CommHub (`commhub.py serve --port 0`, rate limits and stream caps off), registers a user,
creates one network token per agent plus senders, and in one trio process with httpx:

  1. channel: --agents MCP sessions (initialize, report_status agent-i, then GET /mcp with Accept:
     text/event-stream and the session id) hold their push streams; --senders sender sessions send
     `send_task` to random agents, open loop at --rate sends/s for --seconds; latency = from just before the
     POST to the moment the `notifications/claude/channel` with that task's title is parsed off the agent's
     stream (time.perf_counter: CLOCK_MONOTONIC, the same clock in every process). The agents' streams are held
     by --holders child processes (default 4), so that parsing 1,000 streams does not queue behind the
     sender in one Python loop; --holders 0 holds them in the sending process as before. Every client process
     freezes and disables its collector for the timed window (--client-gc): its pauses are reported
     (client_gc), as is how late its own 2 ms timer fired (client_loop_lag_ms), and the eight slowest sends
     with when they happened. Lost = sent (200) but never notified within --event-timeout.
  2. listen: `commhub listen agent-L --exec CMD` as a child process, CMD = `echo "$COMMHUB_TITLE" > FIFO`;
     --listen-sends sequential send_task calls (one every --listen-gap s); latency = from just before the POST
     to the moment the title is read off the FIFO, i.e. to the start of CMD (plus one `sh` start and echo).

    .venv/bin/python bench/bench_channel.py                        # one run (~60 s)
    .venv/bin/python bench/bench_channel.py \\
        --table bench/results/2026-12-06-channel-200-sends/results_channel_1206_final.jsonl

Bounded: counts, per-call timeouts, --hard-timeout for the whole run. Loopback only.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import httpx
import trio

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import benchlib as bl  # noqa: E402

PROTOCOL = "2025-11-25"
CHANNEL = "notifications/claude/channel"


@dataclass
class Agent:
    index: int
    alias: str
    token: str
    headers: dict[str, str] | None = None
    events: int = 0


class Lines:
    """Newline-delimited text over a trio byte stream (a child's stdout)."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream, self.buf = stream, b""

    async def line(self) -> str:
        while b"\n" not in self.buf:
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                raise EOFError("the holder process ended")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()


async def holder_child() -> None:
    """--holder-child: hold the GET /mcp streams of the agents given as JSON on stdin; report arrivals.

    Protocol on stdin/stdout, one line each: in the job ({"base", "agents": [{"alias", "headers"}]}); out
    "ready <holding> <errors>"; then each "report" line in gets one JSON line out with the arrivals
    {title: perf_counter} seen since the last report; "stop" ends the process. time.perf_counter is
    CLOCK_MONOTONIC on Linux, so the parent compares these times with its own."""
    stdin = Lines(trio.lowlevel.FdStream(os.dup(0)))
    job = json.loads(await stdin.line())
    arrived: dict[str, float] = {}
    errors: list[str] = []
    client = httpx.AsyncClient(limits=httpx.Limits(max_connections=None, max_keepalive_connections=None),
                               timeout=httpx.Timeout(15.0, read=None), trust_env=False)

    async def hold(headers: dict[str, str], task_status=trio.TASK_STATUS_IGNORED) -> None:
        started = False
        try:
            async with client.stream("GET", f"{job['base']}/mcp", headers={**headers, "Accept": "text/event-stream"}
                                     ) as resp:
                if resp.status_code != 200:
                    errors.append(f"http {resp.status_code}")
                    return
                async for line in resp.aiter_lines():
                    if not started:
                        started = True
                        task_status.started()
                    if not line.startswith("data: {"):
                        continue
                    t = time.perf_counter()
                    msg = json.loads(line[6:])
                    if msg.get("method") == CHANNEL and '"' in msg["params"]["content"]:
                        arrived[msg["params"]["content"].split('"', 2)[1]] = t
        except httpx.HTTPError as e:
            errors.append(repr(e)[:160])
        finally:
            if not started:
                task_status.started()

    async with trio.open_nursery() as nursery:
        limiter = trio.CapacityLimiter(50)

        async def start(headers: dict[str, str]) -> None:
            async with limiter:
                await nursery.start(hold, headers)

        async with trio.open_nursery() as opening:
            for ag in job["agents"]:
                opening.start_soon(start, ag["headers"])
        gc.collect()
        gc.freeze()
        gc.disable()  # a bounded run: no collector pause counted as the server's latency
        out = trio.lowlevel.FdStream(os.dup(1))
        await out.send_all(f"ready {len(job['agents']) - len(errors)} {len(errors)}\n".encode())
        sent: set[str] = set()
        while (cmd := await stdin.line()) != "stop":
            assert cmd == "report", cmd
            new = {t: v for t, v in list(arrived.items()) if t not in sent}
            sent.update(new)
            await out.send_all((json.dumps({"arrived": new, "errors": errors[:2]}) + "\n").encode())
        nursery.cancel_scope.cancel()
    await client.aclose()


class Holders:
    """--holders child processes, each holding a share of the agents' GET /mcp streams."""

    def __init__(self) -> None:
        self.procs: list[trio.Process] = []
        self.outs: list[Lines] = []

    async def start(self, nursery: trio.Nursery, base: str, agents: list[Agent], count: int) -> int:
        shares = [agents[i::count] for i in range(count)]
        for share in shares:
            proc = await nursery.start(partial(trio.run_process, [sys.executable, __file__, "--holder-child"],
                                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, check=False))
            self.procs.append(proc)
            self.outs.append(Lines(proc.stdout))
            job = {"base": base, "agents": [{"alias": a.alias, "headers": a.headers} for a in share]}
            await proc.stdin.send_all((json.dumps(job) + "\n").encode())
        holding = 0
        for out in self.outs:
            _, ok, _errors = (await out.line()).split()
            holding += int(ok)
        return holding

    async def collect(self, into: dict[str, float], errors: list[str]) -> None:
        for proc, out in zip(self.procs, self.outs, strict=True):
            await proc.stdin.send_all(b"report\n")
            rep = json.loads(await out.line())
            into.update(rep["arrived"])
            errors[:] = rep["errors"] or errors

    async def stop(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await proc.stdin.send_all(b"stop\n")
        with trio.move_on_after(10):
            for proc in self.procs:
                await proc.wait()


class Bench:
    def __init__(self, a: argparse.Namespace, base: str, server_pid: int):
        self.a, self.base, self.server_pid = a, base, server_pid
        self.arrived: dict[str, float] = {}
        self.waiting: dict[str, trio.Event] = {}
        self.stream_errors: list[str] = []
        self.ready = 0
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
        self.streams = httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(15.0, read=None), trust_env=False)
        self.http = httpx.AsyncClient(limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
                                      timeout=httpx.Timeout(a.call_timeout), trust_env=False)

    async def session(self, ag: Agent) -> None:
        """initialize + report_status: the agent's MCP session headers."""
        h = await bl.mcp_open(self.http, self.base, ag.token, "bench_channel", PROTOCOL)
        await self.tool(h, "report_status", {"alias": ag.alias, "status": "idle"})
        ag.headers = h

    async def tool(self, h: dict[str, str], name: str, args: dict) -> dict:
        return await bl.mcp_tool(self.http, self.base, h, name, args)

    async def hold(self, ag: Agent, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Hold the agent's GET /mcp stream; record each channel notification's arrival by task title."""
        assert ag.headers is not None
        headers = {**ag.headers, "Accept": "text/event-stream"}
        started = False
        try:
            async with self.streams.stream("GET", f"{self.base}/mcp", headers=headers) as resp:
                if resp.status_code != 200:
                    self.stream_errors.append(f"http {resp.status_code}: {(await resp.aread())[:120]!r}")
                    return
                async for line in resp.aiter_lines():
                    if not started:
                        started = True
                        self.ready += 1
                        task_status.started()
                    if not line.startswith("data: {"):
                        continue
                    t = time.perf_counter()
                    msg = json.loads(line[6:])
                    if msg.get("method") != CHANNEL:
                        continue
                    ag.events += 1
                    title = msg["params"]["content"].split('"', 2)[1] if '"' in msg["params"]["content"] else ""
                    self.arrived[title] = t
                    ev = self.waiting.pop(title, None)
                    if ev is not None:
                        ev.set()
        except httpx.HTTPError as e:
            self.stream_errors.append(repr(e)[:160])
        finally:
            if not started:
                task_status.started()

    async def channel(self, nursery: trio.Nursery, agents: list[Agent], senders: list[Agent]) -> dict:
        """Phase 1: open-loop sends at --rate/s; latency to the channel notification."""
        limiter = trio.CapacityLimiter(50)

        holders = Holders() if self.a.holders else None

        async def prepare(ag: Agent, hold: bool) -> None:
            async with limiter:
                await self.session(ag)
                if hold:
                    await nursery.start(self.hold, ag)

        t0 = time.perf_counter()
        async with trio.open_nursery() as n:
            for ag in agents:
                n.start_soon(prepare, ag, holders is None)
            for ag in senders:
                n.start_soon(prepare, ag, True)
        if holders is not None:
            self.ready += await holders.start(nursery, self.base, agents, self.a.holders)
        open_s = time.perf_counter() - t0
        sends: dict[str, float] = {}
        errors, err_sample = 0, None
        rng = random.Random(self.a.seed)
        period = 1.0 / self.a.rate
        total = int(self.a.rate * self.a.seconds)

        async def send(k: int) -> None:
            nonlocal errors, err_sample
            to = rng.choice(agents)
            title = f"c{k}"
            sender = senders[k % len(senders)]
            t = time.perf_counter()
            try:
                with trio.fail_after(self.a.call_timeout):
                    await self.tool(sender.headers or {}, "send_task",
                                    {"to": to.alias, "content": "wake", "title": title})
                sends[title] = t
            except (httpx.HTTPError, RuntimeError, trio.TooSlowError) as e:
                errors += 1
                err_sample = err_sample or repr(e)[:200]

        if self.a.client_gc in ("tuned", "off"):
            # What the server does after start-up (commhub_lib/runtime/gc_tuning.py): the 1,000 open streams' objects
            # go to the permanent generation, so the client's own collections stay short.
            gc.collect()
            gc.freeze()
            gc.set_threshold(10_000, 10, 10)
        if self.a.client_gc == "off":
            gc.disable()  # the timed window is bounded (--seconds); the collector runs again right after it
        pauses = bl.GcPauses()
        gc.callbacks.append(pauses)
        lags: list[tuple[float, float]] = []  # (when, how late): the load client's own loop, busy or starved

        async def lag_probe() -> None:
            while True:
                due = time.perf_counter() + 0.002
                await trio.sleep(0.002)
                now = time.perf_counter()
                lags.append((now, now - due))

        probe_scope = trio.CancelScope()

        async def run_probe() -> None:
            with probe_scope:
                await lag_probe()

        nursery.start_soon(run_probe)
        cpu = bl.CpuWindow(self.server_pid).start()
        start, paced_from = time.perf_counter(), trio.current_time()  # trio's clock paces, perf_counter measures
        async with trio.open_nursery() as n:
            for k in range(total):
                await trio.sleep_until(paced_from + k * period)  # open loop: a slow answer does not slow the rate
                n.start_soon(send, k)
        load_s = time.perf_counter() - start
        cpu_used = cpu.stop()
        with trio.move_on_after(self.a.event_timeout):
            while True:
                if holders is not None:
                    await holders.collect(self.arrived, self.stream_errors)
                if all(t in self.arrived for t in sends):
                    break
                await trio.sleep(0.05)
        if holders is not None:
            await holders.stop()
        gc.callbacks.remove(pauses)
        gc.enable()
        probe_scope.cancel()
        lag_ms = sorted(x * 1000 for _, x in lags)
        lat = [self.arrived[t] - s for t, s in sends.items() if t in self.arrived]
        lost = sum(1 for t in sends if t not in self.arrived)
        # Where the tail sits in the run (seconds after the first send): a cluster names a stall, not noise.
        slowest = sorted(((self.arrived[t] - s, s - start) for t, s in sends.items() if t in self.arrived),
                         reverse=True)[:8]

        def client_lag_during(at: float, took: float) -> float:
            t0 = start + at
            return max((x for w, x in lags if t0 <= w <= t0 + took + 0.002), default=0.0)
        return {"agents_holding": self.ready - len(senders), "open_s": round(open_s, 2), "sends_ok": len(sends),
                "send_errors": errors, "error_sample": err_sample, "rate_target": self.a.rate,
                "rate_achieved": round(len(sends) / load_s, 1), "lost": lost, "latency_ms": bl.lat_summary_ms(lat),
                "client_gc": pauses.summary(), "client_gc_mode": self.a.client_gc,
                "slowest_ms_at_s": [[round(d * 1000, 1), round(at, 2)] for d, at in slowest],
                # How late the client's own 2 ms timer fired: a tail the client caused shows here too.
                "client_loop_lag_ms": {"p50": round(lag_ms[len(lag_ms) // 2], 2) if lag_ms else None,
                                       "p99": round(lag_ms[int(len(lag_ms) * 0.99)], 2) if lag_ms else None,
                                       "max": round(lag_ms[-1], 2) if lag_ms else None},
                "client_lag_at_slowest_ms": [round(client_lag_during(at, d) * 1000, 1) for d, at in slowest],
                "stream_errors": len(self.stream_errors), "stream_error_sample": self.stream_errors[:2],
                "cpu": cpu_used, "server_cpu_ms_per_send": round(cpu_used["server_cores"] * cpu_used["wall_s"] * 1000
                                                                  / max(1, len(sends)), 2)}

    async def listen(self, listener: Agent, sender: Agent, tmp: str) -> dict:
        """Phase 2: send -> start of CMD under `commhub listen`."""
        fifo = os.path.join(tmp, "wake.fifo")
        os.mkfifo(fifo)
        rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        keep = os.open(fifo, os.O_WRONLY)  # no EOF between CMD runs
        reader = trio.lowlevel.FdStream(rfd)
        argv = [bl.VENV_PY, str(bl.REPO / "commhub.py"), "listen", listener.alias, "--exec",
                f'echo "$COMMHUB_TITLE" > {fifo}', "--state", os.path.join(tmp, "listen.json")]
        env = {**os.environ, "COMMHUB_URL": self.base, "COMMHUB_AGENT_TOKEN": listener.token}
        proc = await trio.lowlevel.open_process(argv, env=env, stdin=subprocess.DEVNULL,
                                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        lat, lost = [], 0
        buffer = b""
        try:
            state = trio.Path(tmp) / "listen.json"
            with trio.fail_after(30):
                while not await state.exists():  # noqa: ASYNC110 - another process writes it
                    await trio.sleep(0.05)
            for k in range(self.a.listen_sends):
                title = f"L{k}"
                t = time.perf_counter()
                await self.tool(sender.headers or {}, "send_task",
                                {"to": listener.alias, "content": "w", "title": title})
                got = None
                with trio.move_on_after(self.a.event_timeout):
                    while got is None:
                        if b"\n" in buffer:
                            line, buffer = buffer.split(b"\n", 1)
                            if line.decode() == title:
                                got = time.perf_counter()
                            continue
                        buffer += await reader.receive_some(4096)
                if got is None:
                    lost += 1
                else:
                    lat.append(got - t)
                await trio.sleep(self.a.listen_gap)
        finally:
            proc.terminate()
            with trio.move_on_after(5):
                await proc.wait()
            await reader.aclose()
            os.close(keep)
        return {"sends": self.a.listen_sends, "lost": lost, "latency_ms": bl.lat_summary_ms(lat)}


async def amain(a: argparse.Namespace, srv: bl.Server, agents: list[Agent], senders: list[Agent],
                listener: Agent) -> dict:
    b = Bench(a, srv.base, srv.pid)
    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench-channel-") as tmp:
        async with trio.open_nursery() as nursery:
            out["channel"] = await b.channel(nursery, agents, senders)
            out["server_rss_mib"] = round(bl.proc_status_kb(srv.pid).get("VmRSS", 0) / 1024, 1)
            await b.session(listener)
            out["listen"] = await b.listen(listener, senders[0], tmp)
            nursery.cancel_scope.cancel()
    await b.streams.aclose()
    await b.http.aclose()
    return out


def summary(r: dict) -> str:
    c, li = r["channel"], r["listen"]
    return (f"channel: {c['agents_holding']} sessions holding GET /mcp, {c['sends_ok']} sends at "
            f"{c['rate_achieved']}/s (target {c['rate_target']}), lost {c['lost']}, errors {c['send_errors']}; "
            f"send->notification p50 {c['latency_ms']['p50']} ms p99 {c['latency_ms']['p99']} ms "
            f"max {c['latency_ms']['max']} ms; server {c['server_cpu_ms_per_send']} ms CPU/send; cores: server "
            f"{c['cpu']['server_cores']}, client {c['cpu']['client_cores']}, other jobs {c['cpu']['other_cores']}\n"
            f"listen: {li['sends']} sends, lost {li['lost']}; send->start of CMD p50 {li['latency_ms']['p50']} ms "
            f"p99 {li['latency_ms']['p99']} ms max {li['latency_ms']['max']} ms")


def table(recs: list[dict]) -> str:
    rows = [("channel p50 ms", "result.channel.latency_ms.p50"), ("channel p99 ms", "result.channel.latency_ms.p99"),
            ("channel max ms", "result.channel.latency_ms.max"), ("channel sends/s", "result.channel.rate_achieved"),
            ("channel lost", "result.channel.lost"), ("sessions holding", "result.channel.agents_holding"),
            ("server CPU ms/send", "result.channel.server_cpu_ms_per_send"),
            ("other jobs, cores busy", "result.channel.cpu.other_cores"),
            ("server RSS MiB", "result.server_rss_mib"), ("listen p50 ms", "result.listen.latency_ms.p50"),
            ("listen p99 ms", "result.listen.latency_ms.p99"), ("listen lost", "result.listen.lost")]
    out = [f"runs: {len(recs)} (medians)", "", "| measure | value |", "|---|---|"]
    for label, path in rows:
        out.append(f"| {label} | {bl.median([bl.dig(r, path) for r in recs])} |")
    return "\n".join(out)


def main() -> int:
    if sys.argv[1:] == ["--holder-child"]:
        trio.run(holder_child)
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--agents", type=int, default=1000)
    p.add_argument("--senders", type=int, default=8)
    p.add_argument("--rate", type=float, default=200.0)
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--listen-sends", type=int, default=100)
    p.add_argument("--listen-gap", type=float, default=0.05)
    p.add_argument("--call-timeout", type=float, default=15.0)
    p.add_argument("--event-timeout", type=float, default=10.0)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--hard-timeout", type=float, default=300.0)
    p.add_argument("--out", default=bl.results_path("channel-wake", "results_channel.jsonl"))
    p.add_argument("--table", help="print the medians of a results file and exit")
    p.add_argument("--holders", type=int, default=4,
                   help="child processes holding the agents' streams (0: the sending process holds them all)")
    p.add_argument("--client-gc", choices=("off", "tuned", "default"), default="off",
                   help="the load client's collector during the timed window: off (default; its pauses would "
                        "be counted as latency), tuned (frozen start-up objects, as the server), default")
    p.add_argument("--repo", default=str(bl.REPO), help="the checkout whose commhub.py serves (A/B runs)")
    p.add_argument("--server-log", help="keep the server's log here (its slow-gc and stall lines)")
    a = p.parse_args()
    if a.table:
        print(table(bl.read_jsonl(a.table)))
        return 0
    srv = bl.start_commhub(env_extra={"COMMHUB_MAX_STREAMS_PER_IP": "0", "COMMHUB_MAX_STREAMS_PER_TOKEN": "0"},
                           keep_log=a.server_log, repo=Path(a.repo))
    print("server:", srv.command(), flush=True)
    try:
        acct = bl.register(srv.base)
        tokens = bl.create_tokens(srv.base, acct["token"], acct["network_id"], a.agents + a.senders + 1)
        agents = [Agent(i, f"agent-{i}", tokens[i]) for i in range(a.agents)]
        senders = [Agent(i, f"sender-{i}", tokens[a.agents + i]) for i in range(a.senders)]
        listener = Agent(-1, "listener", tokens[-1])

        async def bounded() -> dict:
            with trio.fail_after(a.hard_timeout):
                return await amain(a, srv, agents, senders, listener)

        result = trio.run(bounded)
    finally:
        stop = srv.stop()
    rec = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "command": bl.this_command(), "args": vars(a),
           "load1": bl.loadavg1(), "result": result, "stop": stop}
    bl.append_jsonl(a.out, rec)
    print(summary(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
