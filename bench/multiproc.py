"""Several hub processes on one PostgreSQL (issue 21): MCP send rate and wake, 5,000 stream opens, a reconnect storm.

Starts its own throwaway PostgreSQL cluster (tests/pg_cluster.py: initdb in /tmp, unix socket only, fsync and
synchronous_commit off -- the data is thrown away) and real `commhub.py serve` processes on 127.0.0.1 (port 0, read
back from the log), a fresh database for every configuration (a new PostgreSQL database, or a new SQLite file).
A configuration is `sqlite:1` (one process on SQLite, the default engine) or `pg:P` (P processes on one PostgreSQL
database). Every part runs its configurations one after the other in the same run (the order rotated run to run, so
the box's drift does not always favour the same one), so the ratios come from the same sitting.

Parts:
  throughput  --clients MCP sessions (raw keep-alive sockets) spread round-robin over the processes, closed loop,
              --sends `send_message` calls in all (after --warmup unmeasured ones) to random recipients among
              --recipients agents whose SSE streams (`GET /events/<alias>`) are spread round-robin over the
              processes too; calls/s, call latency, wake (send start -> the event read off the recipient's socket,
              and answer -> event), lost; CPU seconds per send of the hub processes and of PostgreSQL.
  opens       --streams new agents' SSE streams opened at once by --holders child processes (--parallel connecting
              at a time per holder), spread round-robin over the processes: seconds from `go` until every one is
              live, opens/s, hub CPU per open. (docs/performance.md: one process on SQLite ~4.3 s for 5,000.)
  storm       --storm-streams streams over 3 processes and a paced load (--rate `send_message`/s through the first
              two); after --before seconds the third process is killed with SIGKILL; its streams (the holders
              reopen a cut stream at once on another process, with Last-Event-ID) -- time from the kill until
              every one is open again, the survivors' and PostgreSQL's CPU seconds meanwhile (against their rate
              before the kill), wake p99 of the sends made during the storm, lost events.

The streams and their readers live in child processes (bench/mp_holders.py: raw sockets, collector off), the
senders in this process (raw sockets: httpx costs ~3 ms of client CPU a call). Every wait is bounded (per-call
timeouts, --event-timeout, --hard-timeout per part). Loopback and a unix socket only.

    python bench/multiproc.py all --runs 3          # the whole set, ~15 min on an idle 2-core box
    python bench/multiproc.py throughput --configs sqlite:1,pg:1,pg:2,pg:3 --runs 3
    python bench/multiproc.py opens --configs sqlite:1,pg:1,pg:3 --streams 5000
    python bench/multiproc.py storm --storm-streams 3000 --rate 100

Raw results: one JSON line per configuration per run, appended to
bench/results/<UTC date>-multiproc/results_<part>.jsonl (or --out-dir); the medians over the runs are printed at the
end and with `--table DIR`.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import trio

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import benchlib as bl  # noqa: E402
from bench_streams import RawSender  # noqa: E402

from tests import pg_cluster  # noqa: E402

PROTOCOL = "2025-06-18"
PARTS = ("throughput", "opens", "storm")


# ---------------------------------------------------------------------------------------------- hubs
@dataclass
class Hubs:
    """The hub processes of one configuration, on one database."""

    engine: str
    procs: list[subprocess.Popen] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)
    argv: list[list[str]] = field(default_factory=list)
    tmp: tempfile.TemporaryDirectory | None = None
    db_url: str | None = None

    @property
    def bases(self) -> list[str]:
        """Each process's base URL."""
        return [f"http://127.0.0.1:{p}" for p in self.ports]

    @property
    def pids(self) -> list[int]:
        """Each process's pid."""
        return [p.pid for p in self.procs]

    def command(self) -> str:
        """One process's command line (every process runs the same one)."""
        return " ".join(self.argv[0]) if self.argv else ""


def start_one(hubs: Hubs, argv: list[str], log_path: str) -> subprocess.Popen:
    """Start one `commhub serve` (its own session, so killing it spares this process)."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **bl.NO_LIMITS},
                                cwd=hubs.tmp.name if hubs.tmp else None, start_new_session=True)
    hubs.procs.append(proc)
    hubs.logs.append(log_path)
    hubs.argv.append(argv)
    return proc


def wait_port(proc: subprocess.Popen, log_path: str, limit: float = 90.0) -> int:
    """The port a hub reports in its log, then /health answering; RuntimeError if it dies or takes too long."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"commhub exited (rc {proc.returncode}): {Path(log_path).read_text()[-2000:]}")
        m = bl.LISTEN_RE.search(Path(log_path).read_text())
        if m:
            port = int(m.group(1))
            bl.wait_http(f"http://127.0.0.1:{port}/health", proc, max(1.0, deadline - time.monotonic()))
            return port
        time.sleep(0.05)
    raise RuntimeError(f"commhub did not report its port within {limit} s")


def start_hubs(config: str, cluster: pg_cluster.Cluster | None, python: str, repo: Path) -> Hubs:
    """`sqlite:1` or `pg:P`: P processes on a fresh database. The first one creates the schema before the
    others start (two fresh starts would race to create it)."""
    engine, n = config.split(":")
    hubs = Hubs(engine, tmp=tempfile.TemporaryDirectory(prefix="commhub-mp-"))
    assert hubs.tmp is not None
    if engine == "sqlite":
        if int(n) != 1:
            raise SystemExit("sqlite runs one process per database file")
        db_args = ["--db", os.path.join(hubs.tmp.name, "bench.db")]
    else:
        assert cluster is not None
        hubs.db_url = cluster.fresh_database()
        db_args = ["--database", hubs.db_url]
    argv = [python, str(repo / "commhub.py"), "serve", "--host", "127.0.0.1", "--port", "0", *db_args]
    try:
        first = start_one(hubs, argv, os.path.join(hubs.tmp.name, "hub0.log"))
        hubs.ports.append(wait_port(first, hubs.logs[0]))
        rest = [start_one(hubs, argv, os.path.join(hubs.tmp.name, f"hub{i}.log")) for i in range(1, int(n))]
        hubs.ports += [wait_port(p, hubs.logs[i + 1]) for i, p in enumerate(rest)]
    except BaseException:
        stop_hubs(hubs, cluster)
        raise
    return hubs


def stop_hubs(hubs: Hubs, cluster: pg_cluster.Cluster | None, keep_logs: str | None = None,
              label: str = "") -> list[int | None]:
    """SIGTERM every live process (SIGKILL after 20 s), drop the database, remove the temp dir (its hub logs
    copied to `keep_logs` first, if given); exit codes."""
    for p in hubs.procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    rcs: list[int | None] = []
    for p in hubs.procs:
        try:
            rcs.append(p.wait(20))
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            rcs.append(p.wait(5))
    if keep_logs:
        os.makedirs(keep_logs, exist_ok=True)
        for i, log in enumerate(hubs.logs):
            shutil.copy(log, os.path.join(keep_logs, f"{label}-hub{i}.log"))
    if hubs.db_url and cluster is not None and not os.environ.get("MULTIPROC_KEEP_DB"):
        cluster.drop_database(hubs.db_url)
    if hubs.tmp is not None:
        hubs.tmp.cleanup()
    return rcs


class PgCpu:
    """CPU seconds the PostgreSQL server (postmaster and backends) used since `start()`: per process, so a backend
    that ends meanwhile (a killed hub's connections) does not subtract what it had used before (it is left out)."""

    def __init__(self, cluster: pg_cluster.Cluster | None):
        self.cluster = cluster
        self.start = self.read()

    def read(self) -> dict[int, float]:
        """CPU seconds per live server process."""
        pid = self.cluster.postmaster_pid() if self.cluster else None
        return {p: bl.proc_cpu_s(p) for p in ([pid, *bl.children_of(pid)] if pid else [])}

    def used(self) -> float:
        """Seconds used since start by the processes alive now (a new one counts from zero)."""
        return sum(cpu - self.start.get(p, 0.0) for p, cpu in self.read().items())


class Machine:
    """The whole box's busy CPU between start and `stop()`, and the part of it that was nobody of this run's
    (neither a hub, PostgreSQL, a holder nor this process): the other jobs on a shared machine."""

    def __init__(self, pids: list[int]):
        self.pids = pids
        self.t0, self.busy0, self.ours0 = time.monotonic(), bl.machine_busy_s(), self.ours()

    def ours(self) -> float:
        """CPU seconds of this process and of the given processes' trees (hubs, the postmaster, holders)."""
        me = resource.getrusage(resource.RUSAGE_SELF)
        return me.ru_utime + me.ru_stime + sum(bl.tree_cpu_s(p) for p in self.pids)

    def stop(self) -> dict[str, float]:
        """machine_busy_cores and other_cores (cores' worth over the window)."""
        wall = time.monotonic() - self.t0
        busy, ours = bl.machine_busy_s() - self.busy0, self.ours() - self.ours0
        return {"machine_busy_cores": round(busy / wall, 2), "other_cores": round(max(0.0, busy - ours) / wall, 2)}


def make_agents(hubs: Hubs, n: int, prefix: str) -> tuple[list[str], list[str]]:
    """A user and n network tokens, created over the hub processes in parallel; (aliases, tokens)."""
    reg = bl.register(hubs.bases[0])
    chunks = min(8, max(1, n // 50))
    shares = [(n * i // chunks, n * (i + 1) // chunks) for i in range(chunks)]
    with concurrent.futures.ThreadPoolExecutor(chunks) as pool:
        made = list(pool.map(lambda ic: bl.create_tokens(hubs.bases[ic[0] % len(hubs.bases)], reg["token"],
                                                         reg["network_id"], ic[1][1] - ic[1][0], f"{prefix}{ic[0]}-"),
                             enumerate(shares)))
    tokens = [t for chunk in made for t in chunk]
    return [f"{prefix}-{i}" for i in range(n)], tokens


# ---------------------------------------------------------------------------------------------- holders
class Holders:
    """The child processes holding the streams (bench/mp_holders.py), and what they report."""

    def __init__(self, agents: list[tuple[str, str, int]], ports: list[int], k: int, parallel: int):
        self.agents, self.ports, self.parallel = agents, ports, parallel
        n = len(agents)
        self.shares = [(n * i // k, n * (i + 1) // k) for i in range(k)]
        self.procs: list[trio.Process] = []
        self.arrived: dict[int, float] = {}
        self.waiters: dict[int, trio.Event] = {}
        self.loaded = [trio.Event() for _ in range(k)]
        self.opened: list[tuple[int, int, float, str] | None] = [None] * k
        self.open_done = [trio.Event() for _ in range(k)]
        self.read_done = [trio.Event() for _ in range(k)]
        self.cut: dict[str, float] = {}
        self.reopened: dict[str, float] = {}
        self.replayed = 0
        self.gave_up: list[str] = []
        self.watch: set[str] = {"-"}  # the aliases whose reopening all_back waits for (set by the storm)
        self.all_back = trio.Event()
        self.path = ""

    async def start(self, nursery: trio.Nursery) -> None:
        """Spawn the holders and wait until each is ready for `go`."""
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(self.agents, f)
            self.path = f.name
        ports = ",".join(map(str, self.ports))
        for i, (lo, hi) in enumerate(self.shares):
            proc = await trio.lowlevel.open_process(
                [sys.executable, os.path.join(HERE, "mp_holders.py"), self.path, str(lo), str(hi), ports,
                 str(self.parallel)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
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
                    self.arrived.setdefault(k, float(parts[2]))
                    w = self.waiters.get(k)
                    if w is not None:
                        w.set()
                elif parts[0] == "x":
                    self.cut.setdefault(parts[1], float(parts[2]))
                elif parts[0] == "r":
                    self.reopened[parts[1]] = float(parts[2])
                    self.watch.discard(parts[1])
                    if not self.watch:
                        self.all_back.set()
                elif parts[0] == "rp":
                    self.replayed += int(parts[1])
                elif parts[0] == "rf":
                    self.gave_up.append(" ".join(parts[1:]))
                elif parts[0] == "loaded":
                    self.loaded[i].set()
                elif parts[0] == "open":
                    self.opened[i] = (int(parts[1]), int(parts[2]), float(parts[3]), parts[4])
                    self.open_done[i].set()
        for ev in (self.loaded[i], self.open_done[i], self.read_done[i]):
            ev.set()  # a holder that died must not hang the run

    async def go(self) -> dict:
        """Open every stream; seconds until all are live, and how many failed."""
        t0 = time.perf_counter()
        for proc in self.procs:
            assert proc.stdin is not None
            await proc.stdin.send_all(b"go\n")
        for ev in self.open_done:
            await ev.wait()
        took = time.perf_counter() - t0
        got = [o for o in self.opened if o is not None]
        ok = sum(o[0] for o in got)
        return {"open_s": round(took, 3), "open_ok": ok, "open_failed": len(self.agents) - ok,
                "open_error_sample": next((o[3] for o in got if o[3] != "-"), None)}

    async def quit(self) -> None:
        """Close every stream and let the holders exit (killed after 10 s)."""
        for proc in self.procs:
            if proc.returncode is None and proc.stdin is not None:
                try:
                    await proc.stdin.send_all(b"quit\n")
                except trio.BrokenResourceError:
                    pass
        with trio.move_on_after(10):
            for proc in self.procs:
                await proc.wait()
            for ev in self.read_done:  # their last lines (`rp`) read
                await ev.wait()
        for proc in self.procs:
            if proc.returncode is None:
                proc.kill()
        if self.path:
            os.unlink(self.path)


# ---------------------------------------------------------------------------------------------- senders
async def mcp_sessions(hubs: Hubs, aliases: list[str], tokens: list[str], call_timeout: float,
                       on: list[int] | None = None) -> list[tuple[int, dict[str, str]]]:
    """One MCP session per sender on process `on[i % len(on)]` (all of them by default), its alias claimed with
    report_status; (process index, headers) per sender."""
    on = on or list(range(len(hubs.ports)))
    out = []
    async with httpx.AsyncClient(timeout=call_timeout, trust_env=False) as http:
        for i, (alias, token) in enumerate(zip(aliases, tokens, strict=True)):
            p = on[i % len(on)]
            h = await bl.mcp_open(http, hubs.bases[p], token, "multiproc", PROTOCOL)
            await bl.mcp_tool(http, hubs.bases[p], h, "report_status", {"alias": alias, "status": "working"})
            out.append((p, h))
    return out


def send_body(k: int, to: str) -> bytes:
    """One `send_message` call whose text carries the tag the holders look for."""
    return json.dumps({"jsonrpc": "2.0", "id": k, "method": "tools/call", "params": {
        "name": "send_message", "arguments": {"to": to, "content": f"wake pace-{k}"}}}).encode()


def wake_summary(sent: dict[int, tuple[float, float, str]], arrived: dict[int, float],
                 keys: list[int] | None = None) -> dict:
    """Wake from the send's start and from its answer (negative when the event came first: counted as 0), lost."""
    keys = list(sent) if keys is None else keys
    from_start, from_answer, lost = [], [], 0
    for k in keys:
        t0, t1, _ = sent[k]
        got = arrived.get(k)
        if got is None:
            lost += 1
            continue
        from_start.append(got - t0)
        from_answer.append(max(0.0, got - t1))
    missing = sorted(k for k in keys if k not in arrived)
    return {"wake_ms": bl.lat_summary_ms(from_start), "wake_after_answer_ms": bl.lat_summary_ms(from_answer),
            "lost": lost, "lost_sample": [[k, sent[k][2]] for k in missing[:5]]}


async def await_arrivals(holders: Holders, keys: list[int], limit: float) -> None:
    """Wait (at most `limit` s in all) for every key's event."""
    with trio.move_on_after(limit):
        for k in keys:
            if k not in holders.arrived:
                ev = holders.waiters.setdefault(k, trio.Event())
                if k not in holders.arrived:
                    await ev.wait()


# ---------------------------------------------------------------------------------------------- parts
async def part_throughput(a: argparse.Namespace, hubs: Hubs, cluster: pg_cluster.Cluster | None) -> dict:
    """Closed loop: --clients sessions spread over the processes, --sends calls, wake to spread streams."""
    P = len(hubs.ports)
    aliases, tokens = make_agents(hubs, a.clients + a.recipients, "tp")
    sessions = await mcp_sessions(hubs, aliases[:a.clients], tokens[:a.clients], a.call_timeout)
    rec = [(aliases[i], tokens[i], (i - a.clients) % P) for i in range(a.clients, len(aliases))]
    recipients = [r[0] for r in rec]
    holders = Holders(rec, hubs.ports, 1, 200)
    out: dict = {}
    async with trio.open_nursery() as nursery:
        await holders.start(nursery)
        out["streams"] = await holders.go()
        rng = random.Random(a.seed)
        counter = [0]
        sent: dict[int, tuple[float, float, str]] = {}
        errors: list[str] = []

        async def client(c: int, total: int, first: int) -> None:
            p, head = sessions[c]
            raw = RawSender(hubs.ports[p])
            try:
                while counter[0] < total:
                    k = first + counter[0]
                    counter[0] += 1
                    to = rng.choice(recipients)
                    t0 = time.perf_counter()
                    try:
                        with trio.fail_after(a.call_timeout):
                            await raw.call(head, send_body(k, to))
                    except Exception as exc:  # noqa: BLE001 - counted; the run goes on
                        errors.append(repr(exc)[:160])
                        continue
                    sent[k] = (t0, time.perf_counter(), to)
            finally:
                await raw.aclose()

        async def loop(total: int, first: int) -> float:
            counter[0] = 0
            t0 = time.perf_counter()
            async with trio.open_nursery() as inner:
                for c in range(a.clients):
                    inner.start_soon(client, c, total, first)
            return time.perf_counter() - t0

        await loop(a.warmup, 10_000_000)  # statement caches, connections, the first sessions' rows
        sent.clear()
        errors.clear()
        hub0, pg = sum(bl.proc_cpu_s(p) for p in hubs.pids), PgCpu(cluster)
        window = Machine([*hubs.pids, *([cluster.postmaster_pid() or 0] if cluster else []),
                          *[h.pid for h in holders.procs]])
        took = await loop(a.sends, 0)
        machine = window.stop()
        hub_cpu, pg_cpu = sum(bl.proc_cpu_s(p) for p in hubs.pids) - hub0, pg.used()
        await await_arrivals(holders, list(sent), a.event_timeout)
        lat = [t1 - t0 for t0, t1, _ in sent.values()]
        out.update({"sent": len(sent), "errors": len(errors), "error_sample": errors[:2],
                    "seconds": round(took, 3), "calls_per_s": round(len(sent) / took, 1),
                    "call_ms": bl.lat_summary_ms(lat), **wake_summary(sent, holders.arrived),
                    "hub_cpu_ms_per_send": round(hub_cpu * 1000 / max(1, len(sent)), 3),
                    "pg_cpu_ms_per_send": round(pg_cpu * 1000 / max(1, len(sent)), 3),
                    "hub_cores": round(hub_cpu / took, 2), "pg_cores": round(pg_cpu / took, 2),
                    "machine_busy_cores": machine["machine_busy_cores"], "other_cores": machine["other_cores"]})
        await holders.quit()
        nursery.cancel_scope.cancel()
    return out


async def part_opens(a: argparse.Namespace, hubs: Hubs, cluster: pg_cluster.Cluster | None) -> dict:
    """--streams new agents' streams at once, spread over the processes."""
    P = len(hubs.ports)
    t0 = time.monotonic()
    aliases, tokens = make_agents(hubs, a.streams, "op")
    setup_s = round(time.monotonic() - t0, 1)
    holders = Holders([(al, tok, i % P) for i, (al, tok) in enumerate(zip(aliases, tokens, strict=True))],
                      hubs.ports, a.holders, a.parallel)
    async with trio.open_nursery() as nursery:
        await holders.start(nursery)
        cpu0, pg = sum(bl.proc_cpu_s(p) for p in hubs.pids), PgCpu(cluster)
        window = Machine([*hubs.pids, *([cluster.postmaster_pid() or 0] if cluster else []),
                          *[h.pid for h in holders.procs]])
        out = await holders.go()
        machine = window.stop()
        hub_cpu, pg_cpu = sum(bl.proc_cpu_s(p) for p in hubs.pids) - cpu0, pg.used()
        rss = [bl.proc_status_kb(p).get("VmRSS", 0) // 1024 for p in hubs.pids]
        await holders.quit()
        nursery.cancel_scope.cancel()
    out.update({"streams": a.streams, "opens_per_s": round(out["open_ok"] / max(out["open_s"], 1e-9), 1),
                "hub_cpu_ms_per_open": round(hub_cpu * 1000 / max(1, a.streams), 3),
                "pg_cpu_ms_per_open": round(pg_cpu * 1000 / max(1, a.streams), 3),
                "hub_rss_mib": rss, "token_setup_s": setup_s, "machine_busy_cores": machine["machine_busy_cores"],
                "other_cores": machine["other_cores"]})
    return out


async def part_storm(a: argparse.Namespace, hubs: Hubs, cluster: pg_cluster.Cluster | None) -> dict:
    """Streams over 3 processes, paced sends through the first two, SIGKILL of the last one."""
    P = len(hubs.ports)
    victim = P - 1
    aliases, tokens = make_agents(hubs, a.storm_senders + a.storm_streams, "st")
    sessions = await mcp_sessions(hubs, aliases[:a.storm_senders], tokens[:a.storm_senders], a.call_timeout,
                                  on=list(range(P - 1)))
    rec = [(aliases[i], tokens[i], (i - a.storm_senders) % P) for i in range(a.storm_senders, len(aliases))]
    recipients = [r[0] for r in rec]
    on_victim = {r[0] for r in rec if r[2] == victim}
    holders = Holders(rec, hubs.ports, a.holders, a.parallel)
    survivors = [pid for i, pid in enumerate(hubs.pids) if i != victim]
    out: dict = {"streams": len(rec), "streams_on_killed": len(on_victim)}
    async with trio.open_nursery() as nursery:
        await holders.start(nursery)
        out["open"] = await holders.go()
        await trio.sleep(1.0)  # settle: the opening's tail of work
        rng = random.Random(a.seed)
        raws = [RawSender(port) for port in hubs.ports]
        sent: dict[int, tuple[float, float, str]] = {}
        errors: list[str] = []
        marks: dict[str, float] = {}

        async def one(k: int, to: str) -> None:
            p, head = sessions[k % len(sessions)]
            t0 = time.perf_counter()
            try:
                with trio.fail_after(a.call_timeout):
                    await raws[p].call(head, send_body(k, to))
                sent[k] = (t0, time.perf_counter(), to)
            except Exception as exc:  # noqa: BLE001 - counted
                errors.append(repr(exc)[:160])

        async def reopened() -> None:
            """Wait until every stream of the killed process is open again (bounded by --storm-limit)."""
            holders.watch = set(on_victim)
            with trio.move_on_after(a.storm_limit):
                await holders.all_back.wait()
            marks["all_reopened"] = time.perf_counter()

        pg_meter: list[PgCpu] = []

        async def kill_later() -> None:
            await trio.sleep(a.before)
            surv, now = sum(bl.proc_cpu_s(p) for p in survivors), time.perf_counter()
            marks["cpu_before"] = (surv - marks["surv0"]) / (now - marks["t0"])
            marks["pg_before"] = pg_meter[0].used() / (now - marks["t0"])
            marks["surv_kill"] = surv
            pg_meter.append(PgCpu(cluster))
            marks["kill"] = time.perf_counter()
            os.kill(hubs.pids[victim], signal.SIGKILL)
            await reopened()
            marks["surv_end"], marks["pg_storm"] = sum(bl.proc_cpu_s(p) for p in survivors), pg_meter[1].used()

        marks["surv0"] = sum(bl.proc_cpu_s(p) for p in survivors)
        pg_meter.append(PgCpu(cluster))
        marks["t0"] = time.perf_counter()
        start = trio.current_time()
        t_start = time.perf_counter()
        n = int(a.rate * a.storm_seconds)
        async with trio.open_nursery() as inner:
            inner.start_soon(kill_later)
            for k in range(n):
                await trio.sleep_until(start + k / a.rate)  # open loop: a slow answer does not slow the rate
                inner.start_soon(one, k, rng.choice(recipients))
        for raw in raws[:victim]:
            await raw.aclose()
        await await_arrivals(holders, list(sent), a.event_timeout)
        await holders.quit()  # before the reading: each holder's count of replayed events comes as it quits
        kill, end = marks["kill"], marks.get("all_reopened", time.perf_counter())
        storm_s = end - kill
        before = [k for k, v in sent.items() if v[0] < kill]
        during = [k for k, v in sent.items() if kill <= v[0] <= end]
        during_victim = [k for k in during if sent[k][2] in on_victim]
        cuts = [holders.cut[al] - kill for al in on_victim if al in holders.cut]
        reopens = sorted(holders.reopened[al] - kill for al in on_victim if al in holders.reopened)
        surv_cpu = marks["surv_end"] - marks["surv_kill"]
        pg_cpu = marks["pg_storm"]
        out.update({
            "killed_pid": hubs.pids[victim], "rate": a.rate, "sent": len(sent), "errors": len(errors),
            "error_sample": errors[:2], "cut_seen": len(cuts), "cut_seen_max_s": round(max(cuts, default=0), 3),
            "reopened": len(reopens), "reopen_p50_s": round(bl.pct(reopens, .5) or 0, 3),
            "all_reopened_s": round(storm_s, 3) if len(reopens) == len(on_victim) else None,
            "replayed_events": holders.replayed, "gave_up": holders.gave_up[:3],
            "survivors_cpu_s": round(surv_cpu, 3),
            "survivors_cpu_s_at_rate_before": round(marks["cpu_before"] * storm_s, 3),
            "pg_cpu_s": round(pg_cpu, 3), "pg_cpu_s_at_rate_before": round(marks["pg_before"] * storm_s, 3),
            "survivors_cpu_ms_per_reopen": round((surv_cpu - marks["cpu_before"] * storm_s) * 1000
                                                 / max(1, len(reopens)), 3),
            "before": wake_summary(sent, holders.arrived, before),
            "during": wake_summary(sent, holders.arrived, during),
            "during_to_killed_streams": wake_summary(sent, holders.arrived, during_victim),
            "during_to_other_streams": wake_summary(sent, holders.arrived,
                                                    [k for k in during if sent[k][2] not in on_victim]),
            "all": wake_summary(sent, holders.arrived), "load_s": round(time.perf_counter() - t_start, 2)})
        nursery.cancel_scope.cancel()
    return out


PART_FUNCS = {"throughput": part_throughput, "opens": part_opens, "storm": part_storm}


def line(part: str, config: str, r: dict) -> str:
    """A one-line reading of one configuration's result."""
    if part == "throughput":
        return (f"{config:9} {r['calls_per_s']:7.1f} calls/s  call p50/p99 {r['call_ms']['p50']}/"
                f"{r['call_ms']['p99']} ms  wake p50/p99 {r['wake_ms']['p50']}/{r['wake_ms']['p99']} ms (after answer "
                f"p99 {r['wake_after_answer_ms']['p99']})  lost {r['lost']} err {r['errors']}  hub "
                f"{r['hub_cpu_ms_per_send']} + pg {r['pg_cpu_ms_per_send']} ms CPU/send  (hub {r['hub_cores']} + pg "
                f"{r['pg_cores']} cores, "
                f"machine {r['machine_busy_cores']})")
    if part == "opens":
        return (f"{config:9} {r['open_ok']} open in {r['open_s']} s = {r['opens_per_s']}/s ({r['open_failed']} failed"
                f"{', e.g. ' + r['open_error_sample'] if r['open_error_sample'] else ''}); hub "
                f"{r['hub_cpu_ms_per_open']} + pg {r['pg_cpu_ms_per_open']} ms CPU/open; RSS MiB {r['hub_rss_mib']}")
    d = r["during"]
    return (f"{config:9} {r['streams']} streams, {r['streams_on_killed']} on the killed process: all reopened "
            f"{r['all_reopened_s']} s after SIGKILL (p50 {r['reopen_p50_s']} s, {r['reopened']} reopened, "
            f"{r['replayed_events']} events replayed); survivors {r['survivors_cpu_s']} CPU s (at the rate before: "
            f"{r['survivors_cpu_s_at_rate_before']}), pg {r['pg_cpu_s']} ({r['pg_cpu_s_at_rate_before']}); wake p99 "
            f"before {r['before']['wake_ms']['p99']} ms, during {d['wake_ms']['p99']} ms (to the killed process's "
            f"streams {r['during_to_killed_streams']['wake_ms']['p99']}, others "
            f"{r['during_to_other_streams']['wake_ms']['p99']}; n={d['wake_ms']['n']}); lost {r['all']['lost']}, "
            f"errors {r['errors']}")


def number(x: object) -> float | int | None:
    """A reading as a number (None when missing)."""
    return x if isinstance(x, (int, float)) else None


def table(part: str, rows: list[dict]) -> None:
    """Medians over runs per configuration, and the per-run ratios against the first configuration."""
    configs: dict[str, list[dict]] = {}
    for r in rows:
        configs.setdefault(r["config"], []).append(r)
    keys = {"throughput": ["calls_per_s", "call_ms.p99", "wake_ms.p50", "wake_ms.p99", "wake_after_answer_ms.p99",
                           "hub_cpu_ms_per_send", "pg_cpu_ms_per_send", "lost"],
            "opens": ["open_s", "opens_per_s", "hub_cpu_ms_per_open", "pg_cpu_ms_per_open", "open_failed"],
            "storm": ["all_reopened_s", "reopen_p50_s", "survivors_cpu_s", "survivors_cpu_s_at_rate_before",
                      "pg_cpu_s", "survivors_cpu_ms_per_reopen", "before.wake_ms.p99", "during.wake_ms.p99",
                      "during_to_killed_streams.wake_ms.p99", "during_to_other_streams.wake_ms.p99", "all.lost"]}[part]
    print(f"\n{part}: medians of {max(len(v) for v in configs.values())} runs")
    for config, rs in configs.items():
        medians = [f"{k}={bl.median([number(bl.dig(r, k)) for r in rs])}" for k in keys]
        print(f"  {config:9} " + "  ".join(medians))
    if part in ("throughput", "opens") and len(configs) > 1:
        key = "calls_per_s" if part == "throughput" else "opens_per_s"
        by_run: dict[str, dict[str, float]] = {}
        for r in rows:
            by_run.setdefault(r["run_id"], {})[r["config"]] = r[key]
        base = next(iter(configs))
        for config in configs:
            ratios: list[float | int | None] = [run[config] / run[base] for run in by_run.values()
                                                if config in run and base in run and run[base]]
            if config != base and ratios:
                print(f"  {key} {config} / {base}, per run: {[round(x, 2) for x in ratios if x is not None]}, median "
                      f"{bl.median(ratios)}")


def main() -> int:
    """Command line."""
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("part", choices=[*PARTS, "all"])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--configs", help="for throughput (default sqlite:1,pg:1,pg:2,pg:3) and opens (default "
                                     "sqlite:1,pg:1,pg:3)")
    p.add_argument("--clients", type=int, default=16, help="throughput: MCP sessions sending (closed loop)")
    p.add_argument("--sends", type=int, default=2000, help="throughput: measured sends per configuration")
    p.add_argument("--warmup", type=int, default=300, help="throughput: sends before measuring")
    p.add_argument("--recipients", type=int, default=300, help="throughput: recipients' streams")
    p.add_argument("--streams", type=int, default=5000, help="opens: streams")
    p.add_argument("--holders", type=int, default=4, help="opens, storm: child processes holding the streams")
    p.add_argument("--parallel", type=int, default=500, help="streams connecting at once, per holder")
    p.add_argument("--storm-streams", type=int, default=3000)
    p.add_argument("--storm-senders", type=int, default=8)
    p.add_argument("--rate", type=float, default=100.0, help="storm: paced send_message calls/s")
    p.add_argument("--before", type=float, default=4.0, help="storm: seconds of paced load before the kill")
    p.add_argument("--storm-seconds", type=float, default=14.0, help="storm: seconds of paced load in all")
    p.add_argument("--storm-limit", type=float, default=60.0, help="storm: longest wait for every reopen")
    p.add_argument("--call-timeout", type=float, default=30.0)
    p.add_argument("--event-timeout", type=float, default=15.0)
    p.add_argument("--hard-timeout", type=float, default=900.0, help="per part and configuration")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--repo", default=str(bl.REPO), help="the checkout whose commhub.py serves")
    p.add_argument("--python", default=os.environ.get("BENCH_SERVER_PY") or sys.executable,
                   help="the Python that runs the hubs")
    p.add_argument("--out-dir", default=os.path.dirname(bl.results_path("multiproc", "x")))
    p.add_argument("--keep-logs", metavar="DIR", help="copy every hub's log here before its temp dir goes")
    p.add_argument("--table", metavar="DIR", help="print the medians of the results in DIR and exit")
    a = p.parse_args()
    parts = PARTS if a.part == "all" else (a.part,)
    if a.table:
        for part in parts:
            path = os.path.join(a.table, f"results_{part}.jsonl")
            if os.path.exists(path):
                table(part, bl.read_jsonl(path))
        return 0
    # Every stream is a socket here and in a hub: 5,000 streams need more than the usual 1,024 descriptors, in
    # this process and in the children (which inherit the limit).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4 * max(a.streams, a.storm_streams) + 1000
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want if hard == resource.RLIM_INFINITY else min(hard, want), hard))
    # Which code served: the results of several sittings sit in one file (before and after other branches' merges).
    head = subprocess.run(["git", "-C", a.repo, "describe", "--always", "--dirty"], capture_output=True,
                          text=True).stdout.strip()
    cluster = pg_cluster.start_cluster()
    print(f"# {bl.this_command()}\n# code {head}; PostgreSQL {cluster.psql('SHOW server_version')} in {cluster.root} "
          f"(fsync off, synchronous_commit off); load {os.getloadavg()[0]:.2f}; {os.cpu_count()} cores", flush=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    rows: dict[str, list[dict]] = {part: [] for part in parts}
    try:
        for run in range(a.runs):
            for part in parts:
                configs = (a.configs or {"throughput": "sqlite:1,pg:1,pg:2,pg:3", "opens": "sqlite:1,pg:1,pg:3",
                                         "storm": "pg:3"}[part]).split(",")
                order = configs[run % len(configs):] + configs[:run % len(configs)]
                print(f"## run {run + 1}/{a.runs}, {part}, order {order}", flush=True)
                for config in order:
                    load0 = os.getloadavg()[0]
                    label = f"{stamp}-{run + 1}-{part}-{config.replace(':', '')}"
                    hubs = start_hubs(config, cluster, a.python, Path(a.repo))
                    try:
                        r = trio.run(_bounded, PART_FUNCS[part], a, hubs, cluster)
                    except Exception as exc:  # noqa: BLE001 - one failed configuration must not end the others
                        # Its hub logs are kept (in the results folder) to see why; the run goes on.
                        rcs = stop_hubs(hubs, cluster, a.keep_logs or os.path.join(a.out_dir, "failed-logs"), label)
                        print(f"{config:9} FAILED: {exc!r:.300} (exit codes {rcs})", flush=True)
                        bl.append_jsonl(os.path.join(a.out_dir, f"failed_{part}.jsonl"), {
                            "part": part, "config": config, "run": run + 1, "error": repr(exc)[:2000],
                            "command": bl.this_command(),
                            "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
                        continue
                    rcs = stop_hubs(hubs, cluster, a.keep_logs, label)
                    r.update({"part": part, "config": config, "run": run + 1, "run_id": f"{stamp}-{run + 1}",
                              "processes": len(hubs.ports), "exit_codes": rcs, "commit": head,
                              "loadavg1_before": round(load0, 2),
                              "loadavg1_after": round(os.getloadavg()[0], 2), "command": bl.this_command(),
                              "server_cmd": hubs.command(), "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                      time.gmtime())})
                    print(line(part, config, r), f"[load {load0:.1f}]", flush=True)
                    rows[part].append(r)
                    bl.append_jsonl(os.path.join(a.out_dir, f"results_{part}.jsonl"), r)
    finally:
        if os.environ.get("MULTIPROC_KEEP_DB"):
            input(f"cluster {cluster.root} kept; Enter stops it: ")
        pg_cluster.stop_cluster(cluster)
    for part in parts:
        if rows[part]:
            table(part, rows[part])
    return 0


async def _bounded(func, a: argparse.Namespace, hubs: Hubs, cluster: pg_cluster.Cluster | None) -> dict:
    """One part under the --hard-timeout."""
    with trio.fail_after(a.hard_timeout):
        return await func(a, hubs, cluster)


if __name__ == "__main__":
    sys.exit(main())
