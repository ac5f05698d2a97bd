"""5,000 open SSE streams: time to open them, memory per stream, wake latency at a paced 200 sends/s,
/health while that runs, garbage-collection pauses, and SIGTERM with every stream open.

The streams are held by --holders child processes (bench/stream_holders.py: raw trio sockets, collector off),
so the load client is not the limit: the old generator (one process, every stream in httpx) could not keep
200 sends/s at 2,000 streams, and its own gc pauses (120-175 ms full collections) counted as server latency.
One run:
  1. a fresh server (its own temp database), a user, one network token per agent (+ senders);
  2. the holders open --streams streams at once (--parallel connecting at a time per holder): seconds from
     `go` until every holder has all its streams live; server RSS before and after: KiB per stream; server
     CPU per stream opened;
  3. paced load: --rate MCP send_task calls per second for --seconds from --senders sessions (this process,
     its collector frozen and off) to random streaming agents (open loop: each send starts at its slot);
     wake latency = send start (here) -> the holder read the event off the socket (time.perf_counter is
     CLOCK_MONOTONIC, one clock for every process); lost = no event within --event-timeout; meanwhile another
     process probes GET /health every 20 ms: its max is the longest the server's loop stood still;
  4. SIGTERM with every stream open: seconds to exit, exit code, and how each stream ended (clean = the
     server's closing comment and the last chunk; cut = the connection ended without them);
  5. the server log's "garbage collection ... paused" lines (commhub_lib/runtime/gc_tuning.py logs collections
     over 50 ms; only when the server tunes gc, i.e. `serve`).

    BENCH_SERVER_PY=$PWD/.venv/bin/python .venv/bin/python bench/bench_streams.py --streams 5000 \
        --json-out bench/results/$(date -u +%F)-streams-5000/results_streams.jsonl
    --pyspy open|load|stop   record the server with py-spy (raw stacks) during that phase, to --pyspy-out
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import trio

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import benchlib as bl  # noqa: E402

PROTOCOL = "2025-06-18"
GC_LINE = re.compile(r"garbage collection of generation (\d) paused the server (\d+) ms")
# commhub_lib/runtime/stalls.py: the event loop held >= --stall-log-ms (the worst of up to a second's stalls per line)
STALL_LINE = re.compile(r"the event loop stalled (\d+) ms, (busy|held off)")
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ", re.M)


def log_wall(line: str) -> float | None:
    """The wall-clock time of a server log line (its timestamp), or None."""
    m = LOG_TIME.match(line)
    if not m:
        return None
    return time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")) + int(m.group(2)) / 1000


def loop_stalls(log_text: str, start_wall: float, end_wall: float) -> list[list]:
    """The server's own event-loop stall lines logged in [start_wall, end_wall + 1 s] (a line may come up to a
    second after its stall): [seconds into the window, worst ms, "busy" or "held off"]."""
    out = []
    for line in log_text.splitlines():
        m = STALL_LINE.search(line)
        t = log_wall(line) if m else None
        if m and t is not None and start_wall <= t <= end_wall + 1.0:
            out.append([round(t - start_wall, 2), int(m.group(1)), m.group(2)])
    return out


def shutdown_timeline(log_text: str, sigterm_wall: float) -> dict:
    """Seconds after SIGTERM (wall clock, from the server log's timestamps) at which the server logged that
    it received it, the last stream closed, and the database was checkpointed."""
    def at(line: str) -> float | None:
        t = log_wall(line)
        return None if t is None else round(t - sigterm_wall, 3)

    out: dict = {}
    for line in log_text.splitlines():
        if "received SIGTERM" in line:
            out["received_s"] = at(line)
        elif "every connection closed" in line:
            out["connections_closed_s"] = at(line)
        elif "stopped; database checkpointed" in line:
            out["checkpointed_s"] = at(line)
    return out


class Holders:
    """The child processes holding the streams, and what they report."""

    def __init__(self, a: argparse.Namespace, port: int, tokens_path: str, n_streams: int, first: int):
        self.a, self.port, self.tokens_path = a, port, tokens_path
        k = a.holders
        self.shares = [(first + n_streams * i // k, first + n_streams * (i + 1) // k) for i in range(k)]
        self.procs: list[trio.Process] = []
        self.arrived: dict[int, tuple[float, str]] = {}
        self.waiters: dict[int, trio.Event] = {}
        self.loaded = [trio.Event() for _ in range(k)]
        self.opened: list[tuple[int, int, float, str] | None] = [None] * k
        self.open_done = [trio.Event() for _ in range(k)]
        self.ended: list[tuple[int, int, int, float] | None] = [None] * k
        self.end_done = [trio.Event() for _ in range(k)]
        self.gc: list[str] = [""] * k

    async def start(self, nursery: trio.Nursery) -> None:
        for i, (lo, hi) in enumerate(self.shares):
            proc = await trio.lowlevel.open_process(
                [sys.executable, os.path.join(HERE, "stream_holders.py"), str(self.port), self.tokens_path,
                 str(lo), str(hi), str(self.a.parallel), self.a.kind], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            self.procs.append(proc)
            nursery.start_soon(self._read, i, proc)
        for ev in self.loaded:
            await ev.wait()

    async def _read(self, i: int, proc: trio.Process) -> None:
        assert proc.stdout is not None
        buf = b""
        while True:
            data = await proc.stdout.receive_some(65536)
            if not data:
                break
            buf += data
            *lines, buf = buf.split(b"\n")
            for raw in lines:
                parts = raw.decode().split()
                if not parts:
                    continue
                if parts[0] == "a":
                    k = int(parts[1])
                    self.arrived.setdefault(k, (float(parts[2]), parts[3]))
                    w = self.waiters.get(k)
                    if w is not None:
                        w.set()
                elif parts[0] == "loaded":
                    self.loaded[i].set()
                elif parts[0] == "open":
                    self.opened[i] = (int(parts[1]), int(parts[2]), float(parts[3]), parts[4])
                    self.open_done[i].set()
                elif parts[0] == "end":
                    self.ended[i] = (int(parts[1]), int(parts[2]), int(parts[3]), float(parts[4]))
                    self.end_done[i].set()
                elif parts[0] == "gc":
                    self.gc[i] = " ".join(parts[1:])
        for ev in (self.loaded[i], self.open_done[i], self.end_done[i]):
            ev.set()  # a holder that died must not hang the run

    async def go(self) -> None:
        for proc in self.procs:
            assert proc.stdin is not None
            await proc.stdin.send_all(b"go\n")


class Senders:
    """MCP sessions that send the paced tasks (httpx, in this process)."""

    def __init__(self, base: str, call_timeout: float):
        self.base = base
        self.http = httpx.AsyncClient(limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
                                      timeout=httpx.Timeout(call_timeout), trust_env=False)

    async def session(self, token: str, alias: str) -> dict[str, str]:
        """initialize + report_status: the headers for this sender's calls."""
        h = await bl.mcp_open(self.http, self.base, token, "bench_streams", PROTOCOL)
        await self.tool(h, "report_status", {"alias": alias, "status": "working"})
        return h

    async def tool(self, h: dict[str, str], name: str, args: dict) -> dict:
        return await bl.mcp_tool(self.http, self.base, h, name, args)


class RawSender:
    """The paced sends on plain keep-alive sockets (httpx cost ~3 ms of client CPU per call: at 200 sends/s
    the client alone took most of a core on a 2-core box and fell behind). One connection per call in flight,
    reused; the response is read by its Content-Length and checked for a JSON-RPC or tool error."""

    def __init__(self, port: int):
        self.port = port
        self.idle: list[trio.SocketStream] = []

    async def call(self, head: dict[str, str], body: bytes) -> None:
        headers = "".join(f"{k}: {v}\r\n" for k, v in head.items())
        request = (f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                   f"{headers}Content-Length: {len(body)}\r\n\r\n").encode() + body
        while True:
            reused = bool(self.idle)
            conn = self.idle.pop() if reused else await trio.open_tcp_stream("127.0.0.1", self.port)
            buf = b""
            try:
                await conn.send_all(request)
                while b"\r\n\r\n" not in buf:
                    data = await conn.receive_some(65536)
                    if not data:
                        raise ConnectionError("closed")
                    buf += data
                break
            except (ConnectionError, trio.BrokenResourceError):
                await conn.aclose()
                if not reused or buf:
                    raise
                # The server closed this keep-alive connection while it sat idle (its keep-alive timeout): the
                # request never reached it; send it on another connection.
        top, _, rest = buf.partition(b"\r\n\r\n")
        m = re.search(rb"(?i)\r\ncontent-length: *(\d+)", top)
        if not top.startswith(b"HTTP/1.1 200") or m is None:
            raise RuntimeError(top[:200].decode(errors="replace"))
        while len(rest) < int(m.group(1)):
            data = await conn.receive_some(65536)
            if not data:
                raise ConnectionError("closed")
            rest += data
        if b'"isError":true' in rest or b'"error":' in rest[:40]:
            raise RuntimeError(rest[:200].decode(errors="replace"))
        self.idle.append(conn)

    async def aclose(self) -> None:
        for conn in self.idle:
            await conn.aclose()
        self.idle.clear()


class PySpy:
    """py-spy recording the server during one phase (raw collapsed stacks), if asked for."""

    def __init__(self, a: argparse.Namespace, pid: int, phase: str):
        self.proc: subprocess.Popen | None = None
        if a.pyspy == phase:
            spy = str(Path(sys.executable).parent / "py-spy")
            self.proc = subprocess.Popen([spy, "record", "-p", str(pid), "-f", a.pyspy_format, "-r",
                                          str(a.pyspy_rate), "-o", a.pyspy_out, "--nonblocking"],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)  # attached

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(2)
            self.proc.wait(30)


async def paced_load(a: argparse.Namespace, srv: bl.Server, holders: Holders, senders: Senders,
                     heads: list[dict[str, str]], live: list[str]) -> dict:
    """--rate sends/s for --seconds; wake latency and losses; /health from another process."""
    n = int(a.rate * a.seconds)
    sent_at: dict[int, tuple[float, str]] = {}
    errors = [0]
    err_sample: list[str] = []
    rng = random.Random(a.seed)
    probe_cmd = [sys.executable, os.path.join(HERE, "benchlib.py"), "probe", str(srv.port), str(a.seconds)]
    probe_out: list[bytes] = []

    async def probe() -> None:
        p = await trio.run_process(probe_cmd, capture_stdout=True, check=True)
        probe_out.append(p.stdout)

    raw = RawSender(srv.port)
    scrapes: list[float] = []
    scraped: dict = {}

    async def scrape() -> None:
        """GET /metrics every --scrape-every seconds, as a Prometheus would (the server runs with --metrics on)."""
        async with httpx.AsyncClient(base_url=srv.base, timeout=a.call_timeout) as http:
            while trio.current_time() < paced_from + a.seconds:  # the paced phase's length
                t0 = time.perf_counter()
                r = await http.get("/metrics")
                scrapes.append(time.perf_counter() - t0)
                r.raise_for_status()
                scraped["bytes"] = len(r.content)
                scraped["streams_open"] = sum(float(line.rsplit(" ", 1)[1]) for line in r.text.splitlines()
                                              if line.startswith("commhub_streams_open{"))
                await trio.sleep(a.scrape_every)

    async def one(k: int, to: str, head: dict[str, str]) -> None:
        holders.waiters[k] = trio.Event()
        body = json.dumps({"jsonrpc": "2.0", "id": k, "method": "tools/call", "params": {
            "name": "send_task", "arguments": {"to": to, "content": f"wake pace-{k}", "title": f"pace-{k}"}}}).encode()
        t0 = time.perf_counter()
        sent_at[k] = (t0, to)
        try:
            with trio.fail_after(a.call_timeout):
                await raw.call(head, body)
        except Exception as exc:  # noqa: BLE001 - counted, the run goes on
            errors[0] += 1
            err_sample.append(repr(exc)[:160])
            sent_at.pop(k, None)

    pauses = bl.GcPauses()
    gc.collect()
    gc.freeze()
    gc.disable()
    gc.callbacks.append(pauses)
    spy = PySpy(a, srv.pid, "load")
    cpu = bl.CpuWindow(srv.pid).start()
    start, paced_from, start_wall = time.perf_counter(), trio.current_time(), time.time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(probe)
        if a.scrape_every:
            nursery.start_soon(scrape)
        for k in range(n):
            await trio.sleep_until(paced_from + k / a.rate)  # open loop: a slow answer does not slow the rate
            nursery.start_soon(one, k, rng.choice(live), heads[k % len(heads)])
        load_s = time.perf_counter() - start
        cpu_used = cpu.stop()
        paced_wall = [start_wall, time.time()]
    spy.stop()
    with trio.move_on_after(a.event_timeout):
        for k in list(sent_at):
            await holders.waiters[k].wait()
    await raw.aclose()
    gc.callbacks.remove(pauses)
    gc.enable()
    wake, lost, misrouted = [], 0, 0
    for k, (t0, to) in sent_at.items():
        got = holders.arrived.get(k)
        if got is None:
            lost += 1
            continue
        misrouted += got[1] != to
        wake.append(got[0] - t0)
    slowest = sorted(((holders.arrived[k][0] - t0, t0 - start) for k, (t0, _) in sent_at.items()
                      if k in holders.arrived), reverse=True)[:8]
    return {"rate": a.rate, "sent": len(sent_at), "errors": errors[0], "error_sample": err_sample[:2],
            "rate_achieved": round(len(sent_at) / load_s, 1), "load_s": round(load_s, 2),
            "wake_ms": bl.lat_summary_ms(wake), "lost": lost, "misrouted": misrouted,
            "slowest_ms_at_s": [[round(d * 1000, 1), round(at, 2)] for d, at in slowest],
            "cpu": cpu_used, "server_cpu_ms_per_send": round(cpu_used["server_cores"] * cpu_used["wall_s"] * 1000
                                                             / max(1, len(sent_at)), 2),
            "client_gc": pauses.summary(), "health": json.loads(probe_out[0]) if probe_out else None,
            "metrics_scrape_ms": bl.lat_summary_ms(scrapes) if scrapes else None, "metrics_scraped": scraped or None,
            "paced_wall": paced_wall}


async def amain(a: argparse.Namespace, srv: bl.Server, tokens_path: str, aliases: list[str],
                tokens: list[str]) -> dict:
    """Open the streams, measure, then stop the server with them open."""
    out: dict = {}
    senders = Senders(srv.base, a.call_timeout)
    heads = [await senders.session(tokens[i], aliases[i]) for i in range(a.senders)]
    holders = Holders(a, srv.port, tokens_path, a.streams, a.senders)
    with trio.fail_after(a.hard_timeout):
        async with trio.open_nursery() as nursery:
            await holders.start(nursery)
            out["rss_base_kb"] = bl.proc_status_kb(srv.pid)
            spy = PySpy(a, srv.pid, "open")
            cpu0 = bl.proc_cpu_s(srv.pid)
            t0 = time.perf_counter()
            await holders.go()
            for ev in holders.open_done:
                await ev.wait()
            out["open_s"] = round(time.perf_counter() - t0, 2)
            out["open_server_cpu_ms_per_stream"] = round((bl.proc_cpu_s(srv.pid) - cpu0) * 1000 / a.streams, 3)
            spy.stop()
            got = [o for o in holders.opened if o is not None]
            out["open_ok"] = sum(o[0] for o in got)
            out["open_failed"] = sum(o[1] for o in got) + a.streams - sum(o[0] + o[1] for o in got)
            out["open_holder_s"] = [o[2] for o in got]
            out["open_error_sample"] = next((o[3] for o in got if o[3] != "-"), None)
            await trio.sleep(a.settle)
            out["rss_open_kb"] = bl.proc_status_kb(srv.pid)
            cpu_idle0, t_idle = bl.proc_cpu_s(srv.pid), time.perf_counter()
            await trio.sleep(a.idle_seconds)
            out["idle_server_core"] = round((bl.proc_cpu_s(srv.pid) - cpu_idle0) / (time.perf_counter() - t_idle), 3)
            live = aliases[a.senders:a.senders + a.streams]
            out["load"] = await paced_load(a, srv, holders, senders, heads, live)
            await senders.http.aclose()
            spy = PySpy(a, srv.pid, "stop")
            proc = srv.proc
            t_stop = time.perf_counter()
            out["sigterm_wall"] = time.time()
            proc.send_signal(15)  # SIGTERM; srv.stop() afterwards would remove the log with the temp dir
            rc = await trio.to_thread.run_sync(proc.wait, 60)
            exit_s = time.perf_counter() - t_stop
            spy.stop()
            with trio.move_on_after(15):
                for ev in holders.end_done:
                    await ev.wait()
            ends = [e for e in holders.ended if e is not None]
            out["stop"] = {"rc": rc, "exit_s": round(exit_s, 2), "clean": sum(e[0] for e in ends),
                           "cut": sum(e[1] for e in ends), "error": sum(e[2] for e in ends),
                           "last_stream_end_s": round(max((e[3] for e in ends), default=t_stop) - t_stop, 2)}
            out["holder_gc"] = holders.gc
            nursery.cancel_scope.cancel()
    for proc in holders.procs:
        if proc.returncode is None:
            proc.kill()
    return out


def main() -> int:
    """Command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--streams", type=int, default=5000)
    p.add_argument("--holders", type=int, default=4, help="child processes holding the streams")
    p.add_argument("--parallel", type=int, default=500, help="streams connecting at once, per holder")
    p.add_argument("--senders", type=int, default=16)
    p.add_argument("--rate", type=float, default=200.0, help="sends per second (paced)")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--settle", type=float, default=2.0)
    p.add_argument("--idle-seconds", type=float, default=5.0)
    p.add_argument("--call-timeout", type=float, default=15.0)
    p.add_argument("--event-timeout", type=float, default=5.0)
    p.add_argument("--hard-timeout", type=float, default=300.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--server-arg", action="append", default=[])
    p.add_argument("--repo", default=str(bl.REPO), help="checkout whose commhub.py serves")
    p.add_argument("--pyspy", choices=["open", "load", "stop"])
    p.add_argument("--pyspy-out", default="/tmp/bench_streams.pyspy.txt")
    p.add_argument("--pyspy-format", default="raw", choices=["raw", "speedscope"])
    p.add_argument("--pyspy-rate", type=int, default=200, help="py-spy samples per second")
    p.add_argument("--kind", default="events", choices=["events", "mcp"],
                   help="which streams: GET /events/<alias>, or GET /mcp of an MCP session per agent (its "
                        "initialize and report_status happen before the timed opening)")
    p.add_argument("--keep-log", help="write the server log here (kept after the run)")
    p.add_argument("--json-out")
    p.add_argument("--scrape-every", type=float, default=0.0,
                   help="seconds between GET /metrics during the paced load (give --server-arg=--metrics=loopback)")
    a = p.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < a.streams * 2 + 500:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, a.streams * 2 + 1000), hard))
    srv = bl.start_commhub(a.server_arg, repo=Path(a.repo), keep_log=a.keep_log)
    log_text = ""
    try:
        t0 = time.monotonic()
        reg = bl.register(srv.base)
        n = a.streams + a.senders
        tokens = bl.create_tokens(srv.base, reg["token"], reg["network_id"], n)
        aliases = [f"agent-{i}" for i in range(n)]
        setup_s = round(time.monotonic() - t0, 1)
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(list(zip(aliases, tokens, strict=True)), f)
            tokens_path = f.name
        try:
            out = trio.run(amain, a, srv, tokens_path, aliases, tokens)
        finally:
            os.unlink(tokens_path)
    finally:
        try:
            log_text = Path(srv.log_path).read_text()
        except OSError:
            pass
        final = srv.stop()
    pauses = [(int(g), int(ms)) for g, ms in GC_LINE.findall(log_text)]
    out["load"]["server_loop_stalls"] = loop_stalls(log_text, *out["load"].pop("paced_wall"))
    out["stop"]["server_log"] = shutdown_timeline(log_text, out.pop("sigterm_wall"))
    base, opened = out["rss_base_kb"]["VmRSS"], out["rss_open_kb"]["VmRSS"]
    out.update({"bench": "streams", "kind": a.kind, "streams": a.streams, "holders": a.holders, "setup_s": setup_s,
                "final_stop": final, "kib_per_stream": round((opened - base) / a.streams, 1),
                "server_gc_pauses_over_50ms": pauses, "command": bl.this_command(), "server_cmd": srv.command(),
                "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "loadavg1": bl.loadavg1()})
    ld, st = out["load"], out["stop"]
    print(f"{a.streams} streams on {a.holders} holders: open {out['open_s']} s ({out['open_failed']} failed"
          f"{', e.g. ' + out['open_error_sample'] if out['open_error_sample'] else ''}), server "
          f"{out['open_server_cpu_ms_per_stream']} ms CPU per open, {out['kib_per_stream']} KiB/stream "
          f"(RSS {base // 1024} -> {opened // 1024} MiB), idle server {out['idle_server_core']} core\n"
          f"paced {ld['rate']}/s for {ld['load_s']} s: {ld['sent']} sent ({ld['rate_achieved']}/s), wake ms "
          f"{ld['wake_ms']}, lost {ld['lost']}, misrouted {ld['misrouted']}, errors {ld['errors']}\n"
          f"  slowest (ms, at s): {ld['slowest_ms_at_s']}\n"
          f"  cpu {ld['cpu']}, server {ld['server_cpu_ms_per_send']} ms CPU/send, client gc {ld['client_gc']}\n"
          f"/metrics scrapes during load: {ld['metrics_scrape_ms']} {ld['metrics_scraped']}\n"
          f"/health during load: {ld['health']['health_ms'] if ld['health'] else None}, spikes "
          f"{ld['health']['spikes_over_50ms'][:10] if ld['health'] else None}\n"
          f"SIGTERM with {out['open_ok']} streams open: {st}\n"
          f"server gc pauses > 50 ms (generation, ms): {pauses}; holders' own gc: {out['holder_gc']}\n"
          f"server event-loop stalls logged in the paced phase (--stall-log-ms, default 50; s into it, ms, kind): "
          f"{ld['server_loop_stalls'] or 'none'}")
    if a.json_out:
        bl.append_jsonl(a.json_out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
