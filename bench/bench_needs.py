"""Latency and server CPU of what the dashboard's Overview reads on every refresh (every 2 s while visible):
GET /api/needs across the person's networks, and the feed's opening read GET /api/networks/<id>/events.

Build the database first (bench/gen_db.py: 4 networks x 250 aliases, the person owns all four), then (under
`flock /tmp/cpu.lock` on a shared box):

    .venv/bin/python bench/gen_db.py --messages 300000 --out /tmp/needsdb/300k.db
    .venv/bin/python bench/bench_needs.py --db /tmp/needsdb/300k.db

The server runs on a copy of the database, with stuck_delivered_seconds and stuck_running_seconds at 1 s so the
stuck checks find the generated open tasks (the generated sessions are long offline). Requests are sequential over
one keep-alive connection, measured client side; the server's CPU per request is read from /proc.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as bl  # noqa: E402


def measure(base: str, token: str, path: str, n: int, pid: int) -> dict[str, object]:
    """p50/p99/max ms of n sequential GETs (after 3 warm-ups) and the server's CPU ms per request."""
    times = []
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60, trust_env=False) as c:
        for i in range(n + 3):
            if i == 3:
                cpu0 = bl.proc_cpu_s(pid)
            t0 = time.perf_counter()
            r = c.get(path)
            dt = time.perf_counter() - t0
            r.raise_for_status()
            if i >= 3:
                times.append(dt)
            body = r.json()
        cpu = (bl.proc_cpu_s(pid) - cpu0) / n * 1000
    sizes = {k: len(v) for k, v in body.items() if isinstance(v, list)}
    return {"path": path, **bl.lat_summary_ms(times), "cpu_ms": round(cpu, 2), "lists": sizes, "bytes": len(r.content)}


def main() -> None:
    """Command line."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--db", required=True, help="a database made by bench/gen_db.py (copied, never changed)")
    ap.add_argument("-n", type=int, default=50, help="requests per endpoint")
    args = ap.parse_args()
    meta = json.loads(Path(args.db + ".tokens.json").read_text())
    with tempfile.TemporaryDirectory(prefix="needs-bench-") as tmp:
        copy = str(Path(tmp) / "copy.db")
        shutil.copy(args.db, copy)
        server = bl.start_commhub(["--stuck-delivered-seconds", "1", "--stuck-running-seconds", "1"], db=copy)
        try:
            network_id = meta["networks"][0]["network_id"]
            for path in ("/api/needs", f"/api/needs?network_id={network_id}",
                         f"/api/networks/{network_id}/events?limit=50"):
                print(json.dumps(measure(server.base, meta["user_token"], path, args.n, server.proc.pid)))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
