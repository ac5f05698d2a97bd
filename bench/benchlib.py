"""Shared helpers for the CommHub benchmarks: start/stop a fresh server, accounts and tokens, /proc readings.

Everything talks to 127.0.0.1 only. A server started here is a child process in its own session (process
group), stopped with SIGTERM (then SIGKILL of that group after a grace period) by the code that started it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
# The Python that runs the servers and the harness: $BENCH_SERVER_PY, else /work/venv's, else this checkout's
# .venv (the setup every worktree has; /work/venv is not on every machine).
VENV_PY = os.environ.get("BENCH_SERVER_PY") or next(
    (p for p in ("/work/venv/bin/python", str(REPO / ".venv" / "bin" / "python")) if os.path.exists(p)),
    "/work/venv/bin/python")
# A benchmark is one client on loopback playing a whole fleet: rate limits and the per-user/per-network quotas
# (hundreds of tokens, aliases and streams from one user and one address) are lifted for it.
NO_LIMITS = {"COMMHUB_REGISTER_RATE_PER_MINUTE": "0", "COMMHUB_LOGIN_RATE_PER_MINUTE": "0",
             "COMMHUB_TOKEN_RATE_PER_MINUTE": "0", "COMMHUB_MAX_TOKENS_PER_USER": "0",
             "COMMHUB_MAX_ALIASES_PER_NETWORK": "0", "COMMHUB_MAX_STREAMS_PER_IP": "0",
             "COMMHUB_MAX_STREAMS_PER_TOKEN": "0", "COMMHUB_MAX_LOGINS_PER_USER": "0",
             # The loop guard's pair limit stays ON (so its cost is measured) but is never reached: a bench agent
             # sends its neighbour hundreds of messages a second (a checkout without the setting ignores it).
             "COMMHUB_PAIR_RATE_PER_MINUTE": "1000000000"}
LISTEN_RE = re.compile(r"CommHub listening on http://127\.0\.0\.1:(\d+)")
CLK_TCK = os.sysconf("SC_CLK_TCK")
SHARED_BENCH = os.environ.get("BENCH_HARNESS_DIR", "/work/shared/bench")
CEILING_DIR = SHARED_BENCH


# ---------------------------------------------------------------------------------------------- /proc
def proc_status_kb(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM / RssAnon of one process, in KiB (empty if it is gone)."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM", "RssAnon"):
                    out[key] = int(rest.split()[0])
    except OSError:
        pass
    return out


def children_of(pid: int) -> list[int]:
    """Direct and indirect children of pid (from /proc/<pid>/task/*/children)."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    kids = [int(x) for x in f.read().split()]
                found.extend(kids)
                todo.extend(kids)
        except OSError:
            continue
    return found


def tree_rss_kb(pid: int) -> int:
    """Summed VmRSS of a process and its descendants."""
    return sum(proc_status_kb(p).get("VmRSS", 0) for p in [pid, *children_of(pid)])


def proc_cpu_s(pid: int) -> float:
    """utime + stime of one process, seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return 0.0


def machine_busy_s() -> float:
    """CPU seconds all cores spent busy since boot (/proc/stat: everything but idle and iowait)."""
    with open("/proc/stat") as f:
        vals = [int(x) for x in f.readline().split()[1:]]
    return (sum(vals[:8]) - vals[3] - vals[4]) / CLK_TCK


def tree_cpu_s(pid: int) -> float:
    """utime + stime of a process and its live descendants."""
    return sum(proc_cpu_s(p) for p in [pid, *children_of(pid)])


class CpuWindow:
    """Who used the CPU between start() and stop(): the server tree, this process's children (the harness), this
    process itself, and everything else on the machine (other people's jobs: the noise)."""

    def __init__(self, server_pid: int):
        self.server_pid = server_pid

    def start(self) -> CpuWindow:
        import resource

        self.t0, self.m0, self.s0 = time.monotonic(), machine_busy_s(), tree_cpu_s(self.server_pid)
        self.c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.r0 = resource.getrusage(resource.RUSAGE_SELF)
        return self

    def stop(self) -> dict[str, float]:
        import resource

        wall = time.monotonic() - self.t0
        busy = machine_busy_s() - self.m0
        srv = tree_cpu_s(self.server_pid) - self.s0
        c1, r1 = resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF)
        kids = (c1.ru_utime + c1.ru_stime) - (self.c0.ru_utime + self.c0.ru_stime)
        me = (r1.ru_utime + r1.ru_stime) - (self.r0.ru_utime + self.r0.ru_stime)
        others = max(0.0, busy - srv - kids - me)
        return {"wall_s": round(wall, 2), "machine_busy_cores": round(busy / wall, 2),
                "server_cores": round(srv / wall, 2), "client_cores": round((kids + me) / wall, 2),
                "other_cores": round(others / wall, 2)}


def loadavg1() -> float:
    return os.getloadavg()[0]


# ---------------------------------------------------------------------------------------------- servers
def free_port() -> int:
    """A free loopback TCP port (for servers that cannot report the port they bound)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, limit: float = 30.0) -> float:
    """Poll url until it answers (any status); raises if the process exits first or time runs out."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early with rc {proc.returncode}")
        try:
            httpx.get(url, timeout=1.0, trust_env=False)
            return time.monotonic() - t0
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {limit} s")


@dataclass
class Server:
    """A server process this benchmark started."""

    name: str
    proc: subprocess.Popen
    port: int
    log_path: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    tmpdir: tempfile.TemporaryDirectory | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> str:
        env = " ".join(f"{k}={v}" for k, v in self.env.items())
        cd = f"cd {self.cwd} && " if self.cwd else ""
        return cd + (env + " " if env else "") + " ".join(self.argv)

    def stop(self, grace: float = 20.0) -> dict[str, float | int | None]:
        """SIGTERM, wait up to `grace` s (then SIGKILL the group). Returns rc and seconds to exit."""
        t0 = time.monotonic()
        killed = False
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                killed = True
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        took = time.monotonic() - t0
        if self.tmpdir is not None:
            self.tmpdir.cleanup()
            self.tmpdir = None
        return {"rc": self.proc.returncode, "exit_s": round(took, 3), "killed": killed}


def start_commhub(extra_args: list[str] | None = None, env_extra: dict[str, str] | None = None,
                  keep_log: str | None = None, db: str | None = None, repo: Path = REPO,
                  python: str = VENV_PY, start_limit: float = 30.0) -> Server:
    """A CommHub on 127.0.0.1 (port 0, read back from its log line), on `db` or a fresh temp database;
    `repo` is the checkout whose commhub.py runs (to measure another version of the code)."""
    tmp = tempfile.TemporaryDirectory(prefix="commhub-bench-")
    db = db or os.path.join(tmp.name, "bench.db")
    log_path = keep_log or os.path.join(tmp.name, "server.log")
    argv = [python, str(repo / "commhub.py"), "serve", "--host", "127.0.0.1", "--port", "0", "--db", db,
            *(extra_args or [])]
    env_show = {**NO_LIMITS, **(env_extra or {})}
    log = open(log_path, "w")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env_show},
                            cwd=tmp.name, start_new_session=True)
    log.close()
    port = None
    t0 = time.monotonic()
    while port is None and time.monotonic() - t0 < start_limit:
        if proc.poll() is not None:
            raise RuntimeError(f"commhub exited early (rc {proc.returncode}): {Path(log_path).read_text()[-2000:]}")
        m = LISTEN_RE.search(Path(log_path).read_text())
        if m:
            port = int(m.group(1))
        else:
            time.sleep(0.05)
    if port is None:
        proc.kill()
        raise RuntimeError(f"commhub did not report its port within {start_limit} s")
    srv = Server("commhub", proc, port, log_path, argv, env_show, None, tmp)
    wait_http(srv.base + "/health", proc)
    return srv


def start_ceiling(port: int | None = None) -> Server:
    """The shared ceiling server (hypercorn + quart-trio, no MCP, no storage), started as its README says,
    but with the hypercorn beside VENV_PY: `cd /work/shared/bench && hypercorn --worker-class trio --workers 1 ...`."""
    port = port or free_port()
    hyper = str(Path(VENV_PY).parent / "hypercorn")
    argv = [hyper, "--worker-class", "trio", "--workers", "1", "--bind", f"127.0.0.1:{port}", "ceiling_server:app"]
    tmp = tempfile.TemporaryDirectory(prefix="ceiling-bench-")
    log_path = os.path.join(tmp.name, "ceiling.log")
    log = open(log_path, "w")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=CEILING_DIR,
                            start_new_session=True)
    log.close()
    srv = Server("ceiling", proc, port, log_path, argv, {}, CEILING_DIR, tmp)
    # GET /mcp is 405 on the ceiling: any answer means it is up.
    wait_http(srv.base + "/mcp", proc)
    return srv


# ---------------------------------------------------------------------------------------------- accounts
def register(base: str, username: str = "bench", password: str = "bench-password-12345") -> dict:
    """POST /api/auth/register -> {"token": utok, "network_token": ntok, "network_id"}."""
    r = httpx.post(base + "/api/auth/register", json={"username": username, "password": password},
                   timeout=30, trust_env=False)
    r.raise_for_status()
    return r.json()


def create_tokens(base: str, utok: str, network_id: str, n: int, prefix: str = "agent") -> list[str]:
    """n network tokens (one per agent), created over one keep-alive connection."""
    out = []
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {utok}"}, timeout=30,
                      trust_env=False) as c:
        for i in range(n):
            r = c.post("/api/tokens", json={"name": f"{prefix}-{i}", "network_id": network_id})
            r.raise_for_status()
            out.append(r.json()["token"])
    return out


# ---------------------------------------------------------------------------------------------- stats
def pct(sorted_vals: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an already sorted list (same rule as mcp_bench.py)."""
    if not sorted_vals:
        return None
    k = min(len(sorted_vals) - 1, max(0, int(round(q * (len(sorted_vals) - 1)))))
    return sorted_vals[k]


def lat_summary_ms(vals_s: list[float]) -> dict[str, float | int | None]:
    v = sorted(vals_s)

    def ms(x: float | None) -> float | None:
        return None if x is None else round(x * 1000, 2)

    return {"n": len(v), "p50": ms(pct(v, .5)), "p95": ms(pct(v, .95)), "p99": ms(pct(v, .99)),
            "max": ms(v[-1] if v else None), "mean": ms(statistics.fmean(v) if v else None)}


def median(xs: list[float | int | None]) -> float | None:
    ys = [x for x in xs if x is not None]
    if not ys:
        return None
    m = statistics.median(ys)
    return round(m, 2 if abs(m) < 100 else 1)


def dig(d: dict, path: str):
    """d['a']['b'] for path 'a.b' (None if missing)."""
    for part in path.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def read_jsonl(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def results_path(topic: str, name: str) -> str:
    """Where a new run's raw results go by default: bench/results/<UTC date>-<topic>/<name> (see bench/README.md)."""
    day = time.strftime("%Y-%m-%d", time.gmtime())
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", f"{day}-{topic}", name)


def append_jsonl(path: str, obj: dict) -> None:
    """Append one JSON line to `path`, creating its folder (a new results/<date>-<topic>/) when needed."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(obj) + "\n")


def this_command() -> str:
    return " ".join([sys.executable, *sys.argv])


# ---------------------------------------------------------------------------------------------- probe
def health_probe(port: int, seconds: float, interval: float = 0.02) -> dict:
    """GET /health over one keep-alive connection every `interval` s for `seconds` s (stdlib only); run it in
    its own process (`python benchlib.py probe PORT SECONDS`) so the caller's own pauses do not count."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    t0 = time.perf_counter()
    rtts, spikes = [], []
    while time.perf_counter() - t0 < seconds:
        s = time.perf_counter()
        conn.request("GET", "/health")
        conn.getresponse().read()
        d = time.perf_counter() - s
        rtts.append(d)
        if d > 0.05:
            spikes.append([round(s - t0, 2), round(d * 1000, 1)])
        time.sleep(interval)
    conn.close()
    return {"seconds": seconds, "health_ms": lat_summary_ms(rtts), "spikes_over_50ms": spikes}


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "probe":
        print(json.dumps(health_probe(int(sys.argv[2]), float(sys.argv[3]))))
    else:
        print("usage: benchlib.py probe PORT SECONDS", file=sys.stderr)
        sys.exit(2)


class GcPauses:
    """A load client's own garbage-collection pauses (append to gc.callbacks): a pause in the client delays
    the moment it sees an answer or an event, and would be counted as the server's latency if not shown."""

    def __init__(self) -> None:
        self.pauses_ms: list[float] = []
        self._t = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._t = time.perf_counter()
        else:
            self.pauses_ms.append((time.perf_counter() - self._t) * 1000)

    def summary(self) -> dict:
        p = self.pauses_ms
        return {"n": len(p), "max_ms": round(max(p, default=0.0), 1), "total_ms": round(sum(p), 1),
                "over_5ms": sum(1 for x in p if x > 5)}


async def mcp_open(http: httpx.AsyncClient, base: str, token: str, client: str, protocol: str) -> dict[str, str]:
    """initialize + notifications/initialized: the headers (token, session id, protocol) for this session's calls."""
    h = {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream"}
    r = await http.post(f"{base}/mcp", headers=h, json={
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": protocol, "capabilities": {}, "clientInfo": {"name": client}}})
    r.raise_for_status()
    h["Mcp-Session-Id"] = r.headers["mcp-session-id"]
    h["Mcp-Protocol-Version"] = protocol
    await http.post(f"{base}/mcp", headers=h, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
    return h


async def mcp_tool(http: httpx.AsyncClient, base: str, headers: dict[str, str], name: str, args: dict) -> dict:
    """One MCP tools/call over an httpx.AsyncClient; its structuredContent, or RuntimeError on any error."""
    r = await http.post(f"{base}/mcp", headers=headers, json={
        "jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": name, "arguments": args}})
    r.raise_for_status()
    body = r.json()
    if "error" in body or body["result"].get("isError"):
        raise RuntimeError(f"{name} failed: {str(body)[:200]}")
    return body["result"]["structuredContent"]
