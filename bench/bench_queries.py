"""Latency of every list and stats endpoint on a big database, for an agent token and a user token, and how
long /health waits while those queries run.

Build the database first (bench/gen_db.py), then (under `flock /tmp/cpu.lock` on a shared box):

    .venv/bin/python bench/bench_queries.py --db /tmp/scaledb/1m.db \\
        --json-out bench/results/$(date -u +%F)-lists-1m/results_queries.jsonl
    .venv/bin/python bench/bench_queries.py \\
        --table bench/results/2026-12-06-final-main-evening/results_queries_15l.jsonl

The server runs on a copy of the database (start-up migrations must not change the original) from this
checkout, or from `--repo DIR` (another version of the code, e.g. `git archive main | tar -x -C DIR`).
Requests are sequential over one keep-alive connection (latency, not throughput), measured client side.
Phase 2 loops over the same requests from 2 clients for `--load-seconds` while a separate process probes
GET /health every 20 ms: its max is how long any query held the event loop.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as bl  # noqa: E402


def endpoints(meta: dict, task_id: str) -> list[str]:
    """Every list/stats query with and without each filter (agent-001 is busy; the quiet alias has nothing)."""
    quiet = meta["quiet_alias"]
    return [
        "/api/tasks", "/api/tasks?status=running", "/api/tasks?status=delivered", "/api/tasks?status=replied",
        f"/api/tasks?to_name={quiet}", "/api/tasks?to_name=agent-001", "/api/tasks?from_name=agent-001",
        "/api/tasks?to_name=agent-001&status=replied", f"/api/tasks?from_name={quiet}&status=running",
        "/api/tasks?offset=200", "/api/tasks?status=failed&limit=500",
        "/api/messages", f"/api/messages?alias={quiet}", "/api/messages?alias=agent-001",
        "/api/messages?kind=notice", "/api/messages?kind=broadcast", "/api/messages?unread=1",
        "/api/messages?alias=agent-001&unread=1", f"/api/messages?alias={quiet}&kind=task",
        "/api/messages?kind=task&unread=1",
        "/api/stats", "/api/status", "/api/status?status=working", "/api/status?status=offline",
        "/api/status?status=idle&limit=50", "/api/nodes",
        "/api/completions", f"/api/completions?alias={quiet}", "/api/completions?alias=agent-001",
        "/api/task_events", f"/api/task_events?task_id={task_id}",
    ]


def proc_sys_and_faults(pid: int) -> tuple[float, int]:
    """System CPU seconds and minor page faults of one process so far (/proc/<pid>/stat)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[12]) / bl.CLK_TCK, int(fields[7])
    except (OSError, IndexError, ValueError):
        return 0.0, 0


def measure(base: str, token: str, paths: list[str], n: int, server_pid: int) -> dict[str, dict]:
    """p50/p99/max ms of each path, n sequential requests each (after 3 warm-up requests), and the server's
    CPU ms per request (the number least moved by other jobs on a shared machine), with its kernel part and
    minor page faults per request (a large answer that lands in freshly mapped memory pays for both)."""
    out = {}
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60,
                      trust_env=False) as c:
        for path in paths:
            times = []
            for i in range(n + 3):
                if i == 3:
                    cpu0, (sys0, faults0) = bl.proc_cpu_s(server_pid), proc_sys_and_faults(server_pid)
                t0 = time.perf_counter()
                r = c.get(path)
                dt = time.perf_counter() - t0
                if r.status_code != 200:
                    raise RuntimeError(f"{path}: {r.status_code} {r.text[:200]}")
                if i >= 3:
                    times.append(dt)
            cpu_ms = (bl.proc_cpu_s(server_pid) - cpu0) * 1000 / n
            sys1, faults1 = proc_sys_and_faults(server_pid)
            out[path] = bl.lat_summary_ms(times) | {"bytes": len(r.content), "server_cpu_ms": round(cpu_ms, 2),
                                                    "server_sys_ms": round((sys1 - sys0) * 1000 / n, 2),
                                                    "server_minflt": round((faults1 - faults0) / n)}
    return out


def load_loop(base: str, token: str, paths: list[str], stop: threading.Event, count: list[int]) -> None:
    """Request the paths round-robin until stopped (phase 2)."""
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60,
                      trust_env=False) as c:
        while not stop.is_set():
            for path in paths:
                if stop.is_set():
                    break
                c.get(path)
                count[0] += 1


def run(a: argparse.Namespace) -> dict:
    """One run: copy the database, start a server on it, measure both phases, stop it."""
    meta = json.loads(Path(a.db + ".tokens.json").read_text())
    load_at_start = [round(x, 2) for x in os.getloadavg()]  # how busy the box was (shared machines)
    tmp = tempfile.mkdtemp(prefix="commhub-queries-")
    db = str(Path(tmp) / "bench.db")
    t0 = time.monotonic()
    shutil.copy(a.db, db)
    copy_s = time.monotonic() - t0
    srv = bl.start_commhub(db=db, repo=Path(a.repo), python=a.python, start_limit=900)
    start_s = time.monotonic() - t0 - copy_s
    try:
        user, agent = meta["user_token"], meta["networks"][0]["token"]
        with httpx.Client(base_url=srv.base, headers={"Authorization": f"Bearer {agent}"}, trust_env=False) as c:
            task_id = c.get("/api/tasks?limit=1&offset=100").json()["tasks"][0]["task_id"]
        paths = endpoints(meta, task_id)
        result = {"db": a.db, "repo": str(a.repo), "n": a.n, "copy_s": round(copy_s, 1),
                  "start_s": round(start_s, 2), "agent": measure(srv.base, agent, paths, a.n, srv.pid),
                  "user": measure(srv.base, user, paths, a.n, srv.pid)}
        probe = subprocess.Popen([sys.executable, str(Path(bl.__file__)), "probe", str(srv.port),
                                  str(a.load_seconds)], stdout=subprocess.PIPE, text=True)
        cpu = bl.CpuWindow(srv.pid).start()
        stop, counts = threading.Event(), [[0], [0]]
        workers = [threading.Thread(target=load_loop, args=(srv.base, tok, paths, stop, cnt))
                   for tok, cnt in ((user, counts[0]), (agent, counts[1]))]
        for w in workers:
            w.start()
        out, _ = probe.communicate(timeout=a.load_seconds + 120)
        stop.set()
        for w in workers:
            w.join()
        result["health_under_load"] = json.loads(out) | {"requests": counts[0][0] + counts[1][0]} | cpu.stop()
    finally:
        result_stop = srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    result["stop"] = result_stop
    result["command"] = bl.this_command()
    result["when"] = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime())
    result["loadavg_start"] = load_at_start
    return result


def table(path: str) -> None:
    """Print a markdown table (median over the runs in the file, per database) of p50/p99 ms."""
    runs = bl.read_jsonl(path)
    by_db: dict[str, list[dict]] = {}
    for r in runs:
        by_db.setdefault(f"{Path(r['db']).name} ({Path(r['repo']).name})", []).append(r)
    for name, rs in by_db.items():
        print(f"\n### {name}: {len(rs)} run(s), {rs[0]['n']} requests per endpoint and token\n")
        print("| endpoint | agent p50 | agent p99 | agent CPU | user p50 | user p99 | user CPU |")
        print("|---|---|---|---|---|---|---|")
        for path in rs[0]["agent"]:
            cells = [bl.median([r[kind][path][q] for r in rs if path in r[kind]])
                     for kind in ("agent", "user") for q in ("p50", "p99", "server_cpu_ms")]
            print(f"| `{path}` | " + " | ".join(str(c) for c in cells) + " |")
        worst = {q: max(bl.median([r[k][p][q] for r in rs]) for k in ("agent", "user") for p in rs[0]["agent"])
                 for q in ("p50", "p99")}
        print(f"\nworst p50 {worst['p50']} ms, worst p99 {worst['p99']} ms; /health under load: max "
              f"{[r['health_under_load']['health_ms']['max'] for r in rs]} ms, p99 "
              f"{[r['health_under_load']['health_ms']['p99'] for r in rs]} ms; start-up (migrations) "
              f"{[r['start_s'] for r in rs]} s")


def main() -> None:
    """Command line."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--db", help="a database built by gen_db.py (its .tokens.json next to it)")
    ap.add_argument("--repo", default=str(bl.REPO), help="checkout whose commhub.py serves")
    ap.add_argument("--python", default=sys.executable, help="interpreter for the server")
    ap.add_argument("-n", "--n", type=int, default=100, help="requests per endpoint and token")
    ap.add_argument("--load-seconds", type=float, default=10.0)
    ap.add_argument("--json-out")
    ap.add_argument("--table", metavar="JSONL", help="print the table of a results file and exit")
    a = ap.parse_args()
    if a.table:
        table(a.table)
        return
    result = run(a)
    text = json.dumps(result)
    if a.json_out:
        bl.append_jsonl(a.json_out, result)
    for kind in ("agent", "user"):
        for path, s in result[kind].items():
            print(f"{kind:5} {path:50} p50 {s['p50']:8} p99 {s['p99']:8} max {s['max']:8} ms,"
                  f" server CPU {s['server_cpu_ms']} ms (sys {s['server_sys_ms']}), {s['server_minflt']} faults")
    print("health under load:", json.dumps(result["health_under_load"]))
    print("stop:", result["stop"], "start:", result["start_s"], "s")
    print(len(text), "bytes of results", "->", a.json_out or "(not saved)")


if __name__ == "__main__":
    main()
