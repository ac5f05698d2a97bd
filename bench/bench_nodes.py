"""GET /api/nodes with many nodes and sessions: seconds per call, and /health while it runs.

    BENCH_SERVER_PY=$PWD/.venv/bin/python .venv/bin/python bench/bench_nodes.py [--nodes 5000] [--aliases 500]
        [--repo PATH]   # another checkout's commhub.py (to measure before/after on the same box)

One agent reports 5,000 different hostnames (so 5,000 nodes), then `--aliases` more aliases report from
them; GET /api/nodes?limit=500 (one page) and the whole list (every page; one call where the server does
not page) are timed 5 times each (medians), and a /health probe runs in its own process meanwhile.
Quotas are lifted for the run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--aliases", type=int, default=500)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--repo", default=None)
    args = parser.parse_args()
    if args.repo:
        benchlib.REPO = Path(args.repo).resolve()
    server = benchlib.start_commhub(env_extra={"COMMHUB_MAX_NODES_PER_NETWORK": "0",
                                               "COMMHUB_MAX_ALIASES_PER_NETWORK": "0"})
    try:
        account = benchlib.register(server.base)
        headers = {"Authorization": f"Bearer {account['network_token']}"}
        t0 = time.perf_counter()
        with httpx.Client(base_url=server.base, headers=headers, timeout=60, trust_env=False) as c:
            for i in range(args.nodes + args.aliases):
                alias = "agent" if i < args.nodes else f"agent-{i}"
                r = c.post("/mcp", json={"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {
                    "name": "report_status", "arguments": {"alias": alias, "node": f"host-{i % args.nodes}"}}})
                assert r.status_code == 200 and not r.json()["result"]["isError"], r.text
        fill_s = time.perf_counter() - t0
        probe = subprocess.Popen([sys.executable, str(Path(benchlib.__file__)), "probe", str(server.port),
                                  str(max(3.0, args.runs * 1.5))], stdout=subprocess.PIPE, text=True)
        times, whole = [], []
        with httpx.Client(base_url=server.base, headers={"Authorization": f"Bearer {account['token']}"},
                          timeout=120, trust_env=False) as c:
            for _ in range(args.runs):
                s = time.perf_counter()
                r = c.get("/api/nodes", params={"limit": 500})
                times.append(time.perf_counter() - s)
                assert r.status_code == 200 and r.json()["nodes"], r.text
            for _ in range(args.runs):  # the whole list: every page (one call where the server does not page)
                s, seen, offset = time.perf_counter(), 0, 0
                while True:
                    page = c.get("/api/nodes", params={"limit": 500, "offset": offset}).json()["nodes"]
                    seen += len(page)
                    if len(page) != 500:
                        break
                    offset += 500
                whole.append(time.perf_counter() - s)
                assert seen == args.nodes, seen
        health = json.loads(probe.communicate(timeout=120)[0])
        print(json.dumps({"repo": str(benchlib.REPO), "nodes": args.nodes, "aliases": args.aliases + 1,
                          "fill_s": round(fill_s, 1), "nodes_call_ms_median": round(statistics.median(times) * 1000, 1),
                          "nodes_call_ms": [round(t * 1000, 1) for t in times],
                          "whole_list_ms_median": round(statistics.median(whole) * 1000, 1),
                          "health_ms": health["health_ms"], "command": benchlib.this_command()}))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
