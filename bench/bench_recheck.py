"""What re-authorising every stream on its heartbeat costs: server CPU per second with N open idle streams and a
short heartbeat, this checkout against another one (before the re-check), A/B in the same run.

Each stream asks service/guard.py on every heartbeat whether it may go on: its token's expiry (a float held by
the stream) and, at most once per interval per process, PRAGMA data_version (one change watch for all streams).
Nothing else happens while the streams are idle, so the difference between the two servers is that check.

One run, for each target (this checkout, then --compare-repo; the order alternates between runs):
  1. a fresh server (`serve --heartbeat-seconds H`, its own temp database, caps lifted), one user;
  2. --holders child processes (bench/stream_holders.py, raw trio sockets) open --streams `GET /events/<alias>`
     streams with the user's login token (one alias per stream: no claims, no writes);
  3. after --settle seconds, the server's CPU (utime + stime of its process tree) over --seconds of idle:
     CPU seconds per second, i.e. cores;
  4. the holders are killed and the server stopped.
Prints each measurement and, at the end, the medians over --runs, with the command line.

    BENCH_SERVER_PY=/path/to/.venv/bin/python python bench/bench_recheck.py --streams 5000 \\
        --heartbeat-seconds 1 --compare-repo /tmp/base-tree      # git archive <base> | tar -x -C /tmp/base-tree
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import benchlib as bl  # noqa: E402


def read_line(proc: subprocess.Popen, prefix: str, limit: float) -> str:
    """The next line of a holder that starts with `prefix` (others skipped), within `limit` seconds."""
    deadline = time.monotonic() + limit
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline().decode()
        if not line:
            raise RuntimeError(f"holder exited before saying {prefix!r}")
        if line.startswith(prefix):
            return line.strip()
    raise RuntimeError(f"holder did not say {prefix!r} within {limit} s")


def measure(a: argparse.Namespace, name: str, repo: Path) -> dict:
    """One target: start it, open the streams, measure idle CPU, stop it."""
    srv = bl.start_commhub(["--heartbeat-seconds", str(a.heartbeat_seconds)], repo=repo)
    holders: list[subprocess.Popen] = []
    try:
        reg = bl.register(srv.base)
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump([[f"idle-{i}", reg["token"]] for i in range(a.streams)], f)
            agents_path = f.name
        share = -(-a.streams // a.holders)
        for k in range(a.holders):
            start, end = k * share, min(a.streams, (k + 1) * share)
            holders.append(subprocess.Popen(
                [sys.executable, os.path.join(HERE, "stream_holders.py"), str(srv.port), agents_path, str(start),
                 str(end), str(a.parallel)], stdin=subprocess.PIPE, stdout=subprocess.PIPE))
        for proc in holders:
            read_line(proc, "loaded", 60)
        t0 = time.monotonic()
        for proc in holders:
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            proc.stdin.flush()
        opened = failed = 0
        for proc in holders:
            _, ok, bad, *_ = read_line(proc, "open", 120).split()
            opened, failed = opened + int(ok), failed + int(bad)
        open_s = time.monotonic() - t0
        time.sleep(a.settle)  # the opening burst's garbage collected, first heartbeats spread
        cpu0, wall0 = bl.tree_cpu_s(srv.pid), time.monotonic()
        time.sleep(a.seconds)
        cores = (bl.tree_cpu_s(srv.pid) - cpu0) / (time.monotonic() - wall0)
        result = {"target": name, "repo": str(repo), "streams_open": opened, "failed": failed,
                  "open_s": round(open_s, 1), "server_cores": round(cores, 4),
                  "server_cpu_ms_per_s": round(cores * 1000, 1),
                  "us_per_stream_beat": round(cores * 1e6 * a.heartbeat_seconds / max(1, opened), 2),
                  "loadavg1": round(bl.loadavg1(), 2)}
        print(f"  {name}: {opened} streams open ({failed} failed) in {open_s:.1f} s; idle server CPU "
              f"{result['server_cpu_ms_per_s']} ms/s ({result['us_per_stream_beat']} us per stream heartbeat); "
              f"load {result['loadavg1']}", flush=True)
        os.unlink(agents_path)
        return result
    finally:
        for proc in holders:
            proc.kill()
            proc.wait(10)
        srv.stop()


def check_cost(calls: int = 200_000) -> dict[str, float]:
    """In-process, no server: what one stream's heartbeat check costs (guard.allowed on a live grant, the change
    watch read at most once per interval included), and one read of the change watch."""
    import trio

    sys.path.insert(0, str(bl.REPO))
    from commhub_lib.db import Database
    from commhub_lib.service.guard import StreamGuard

    out: dict[str, float] = {}

    async def run() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            db = Database(os.path.join(tmp, "check.db"))
            guard = StreamGuard(db, 1.0)
            with guard.hold("tok_1", "u_1", "net_1", "2099-01-01 00:00:00") as grant:
                t0 = time.perf_counter()
                for _ in range(calls):
                    guard.allowed(grant)
                out["us_per_check"] = round((time.perf_counter() - t0) / calls * 1e6, 3)
                t0 = time.perf_counter()
                for _ in range(calls // 10):
                    guard._watch.stamp()
                out["us_per_watch_read"] = round((time.perf_counter() - t0) / (calls // 10) * 1e6, 3)
            db.close()

    trio.run(run)
    return out


def main() -> int:
    """Command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--streams", type=int, default=5000)
    p.add_argument("--heartbeat-seconds", type=float, default=1.0)
    p.add_argument("--holders", type=int, default=4, help="child processes holding the streams")
    p.add_argument("--parallel", type=int, default=200, help="connections each holder opens at a time")
    p.add_argument("--settle", type=float, default=3.0, help="seconds between the last open and the measurement")
    p.add_argument("--seconds", type=float, default=10.0, help="seconds of idle measured")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--compare-repo", metavar="CHECKOUT", help="the checkout to compare with (before the re-check)")
    p.add_argument("--json-out", help="append each run's record here (JSON lines)")
    a = p.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < a.streams * 2 + 500:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, a.streams * 2 + 1000), hard))
    print(f"$ {bl.this_command()}", flush=True)
    targets = [("recheck", bl.REPO)] + ([("base", Path(a.compare_repo))] if a.compare_repo else [])
    results: dict[str, list[float]] = {name: [] for name, _ in targets}
    for run in range(a.runs):
        order = targets if run % 2 == 0 else list(reversed(targets))
        print(f"--- run {run + 1}/{a.runs}", flush=True)
        for name, repo in order:
            rec = measure(a, name, repo)
            results[name].append(rec["server_cpu_ms_per_s"])
            if a.json_out:
                bl.append_jsonl(a.json_out, {"bench": "recheck", "run": run + 1, "streams": a.streams,
                                             "heartbeat_s": a.heartbeat_seconds, **rec})
    print(f"=== {a.streams} idle streams, heartbeat {a.heartbeat_seconds:g} s: server CPU ms per second, "
          f"median of {a.runs}")
    for name, values in results.items():
        print(f"  {name:8s} {statistics.median(values):8.1f}   (runs: {', '.join(f'{v:.1f}' for v in values)})")
    if a.compare_repo:
        new, old = statistics.median(results["recheck"]), statistics.median(results["base"])
        print(f"  difference {new - old:+.1f} ms/s ({(new - old) / old * 100:+.1f} %)")
    cost = check_cost()
    beats = a.streams / a.heartbeat_seconds
    print(f"  in-process: one heartbeat check {cost['us_per_check']} us (x {beats:.0f} beats/s = "
          f"{cost['us_per_check'] * beats / 1000:.1f} ms/s); one change-watch read {cost['us_per_watch_read']} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
