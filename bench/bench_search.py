"""Full-text search (GET /api/search) latency on a big database, for an agent token (one network) and a user
token (four networks), and what migration 0009 costs there (start-up time, file size).

Build the database first (bench/gen_db.py), then (under `flock /tmp/cpu.lock` on a shared box):

    .venv/bin/python bench/gen_db.py --messages 1000000 --out /tmp/1m.db
    .venv/bin/python bench/bench_search.py --db /tmp/1m.db -n 100 \\
        --json-out bench/results/$(date -u +%F)-search-1m/results_search.jsonl

The server runs on a copy of the database (the copy is migrated: 0009 indexes every existing text at start-up),
from this checkout or `--repo DIR`. Requests are sequential over one keep-alive connection, measured client
side (latency, not throughput). gen_db's texts repeat eight phrases, so most words occur in most texts: the
newest-first walk stops at the limit. The harder cases: a prefix (FTS5 reads all its hits first), several words,
and a common word in a network that has none of it (WORST).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as bl  # noqa: E402

QUERIES = [
    {"q": "parser"},                      # in most texts: the walk stops after `limit` hits
    {"q": "flaky test", "limit": 100},    # two words of one phrase, the largest page
    {"q": "migra*"},                      # a prefix
    {"q": "parser", "kind": "reply"},     # one kind: messages only, replies kept
    {"q": "parser", "kind": "task"},      # the tasks' own index
    {"q": "the"},                         # in nearly every text
    {"q": "nosuchword"},                  # found nowhere: an empty doclist
    {"q": "parser suite dependency docs"},  # four words, rarely together: FTS5 intersects four doclists
]
# The worst case: a word in nearly every text, none of them in the caller's network (an empty network of the
# same person): every hit must be skipped. Measured with the user token and network_id= that network.
WORST = {"q": "the"}


def label(params: dict) -> str:
    """A query as its URL query string."""
    return "&".join(f"{k}={v}" for k, v in params.items())


def measure(base: str, token: str, n: int) -> dict:
    """p50/p99 ms of each query, n times each (after 3 unmeasured warm-up requests), and the hits found."""
    out = {}
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, trust_env=False,
                      timeout=120) as c:
        for params in QUERIES:
            for _ in range(3):
                c.get("/api/search", params=params)
            times = []
            for _ in range(n):
                t0 = time.perf_counter()
                r = c.get("/api/search", params=params)
                times.append(time.perf_counter() - t0)
                assert r.status_code == 200, r.text
            out[label(params)] = bl.lat_summary_ms(times) | {"hits": len(r.json()["results"])}
    return out


def measure_empty_network(base: str, user_token: str, n: int) -> dict:
    """WORST in a new, empty network of the user: p50/p99 ms."""
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {user_token}"}, trust_env=False,
                      timeout=120) as c:
        net = c.post("/api/networks", json={"name": f"empty-{time.time_ns()}"}).json()["network_id"]
        params = WORST | {"network_id": net}
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            r = c.get("/api/search", params=params)
            times.append(time.perf_counter() - t0)
            assert r.status_code == 200 and r.json()["results"] == [], r.text
        c.delete(f"/api/networks/{net}")
    return {label(WORST) + " (empty network)": bl.lat_summary_ms(times) | {"hits": 0}}


def run(a: argparse.Namespace) -> dict:
    """One run: copy the database, start a server on it (migrating it), measure, stop it."""
    meta = json.loads(Path(a.db + ".tokens.json").read_text())
    tmp = tempfile.mkdtemp(prefix="commhub-search-")
    db = str(Path(tmp) / "bench.db")
    t0 = time.monotonic()
    shutil.copy(a.db, db)
    copy_s = time.monotonic() - t0
    size_before = os.path.getsize(db)
    srv = bl.start_commhub(db=db, repo=Path(a.repo), python=a.python, start_limit=1800)
    start_s = time.monotonic() - t0 - copy_s
    try:
        result = {"db": a.db, "repo": str(a.repo), "n": a.n, "copy_s": round(copy_s, 1), "start_s": round(start_s, 1),
                  "mib_before": round(size_before / 2**20), "mib_after": round(os.path.getsize(db) / 2**20),
                  "agent": measure(srv.base, meta["networks"][0]["token"], a.n),
                  "user": measure(srv.base, meta["user_token"], a.n)}
        result["worst"] = measure_empty_network(srv.base, meta["user_token"], a.n)
    finally:
        result_stop = srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    result["stop"] = result_stop
    result["command"] = bl.this_command()
    result["when"] = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime())
    result["loadavg_start"] = bl.loadavg1()
    return result


def print_table(result: dict) -> None:
    """A markdown table of one run."""
    print(f"\n{Path(result['db']).name}: start-up with migration 0009 {result['start_s']} s, file "
          f"{result['mib_before']} -> {result['mib_after']} MiB, {result['n']} requests per query and token\n")
    print("| query | agent p50 | agent p99 | agent hits | user p50 | user p99 | user hits |")
    print("|---|---|---|---|---|---|---|")
    for q, ag in result["agent"].items():
        us = result["user"][q]
        print(f"| `{q}` | {ag['p50']} | {ag['p99']} | {ag['hits']} | {us['p50']} | {us['p99']} | {us['hits']} |")
    for q, us in result.get("worst", {}).items():
        print(f"| `{q}` | | | | {us['p50']} | {us['p99']} | 0 |")


def main() -> None:
    """Command line."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", required=True, help="a database built by gen_db.py (its .tokens.json next to it)")
    ap.add_argument("--repo", default=str(bl.REPO), help="checkout whose commhub.py serves")
    ap.add_argument("--python", default=bl.VENV_PY, help="the Python that runs the server")
    ap.add_argument("-n", type=int, default=100, help="requests per query and token")
    ap.add_argument("--json-out", help="append the run's JSON line here")
    a = ap.parse_args()
    result = run(a)
    if a.json_out:
        bl.append_jsonl(a.json_out, result)
    print_table(result)


if __name__ == "__main__":
    main()
