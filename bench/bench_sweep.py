"""One presence sweep with N streaming aliases: wall time and the longest event-loop stall it causes.

Usage:  python bench/bench_sweep.py [--aliases 5000] [--runs 5]
Runs against whatever `commhub_lib` is importable (run it with PYTHONPATH=<an old checkout> for "before").
Scenarios: `steady` (every streaming session was seen recently, the common case) and `all_stale` (every
stored last_seen is 40 s old with the default 90 s timeout, so every session needs a presence write).
The stall is the longest gap seen by a task that wakes every millisecond while the sweep runs.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import statistics
import tempfile
import time
from pathlib import Path

import trio

from commhub_lib.broker import Broker
from commhub_lib.config import Settings
from commhub_lib.db import Database
from commhub_lib.service.hub import Hub
from commhub_lib.vocabulary import STREAM

try:  # after the move
    from commhub_lib.service.jobs import sweep_once
except ImportError:  # before: a synchronous function in service/sessions.py
    from commhub_lib.service.sessions import sweep_once  # type: ignore[no-redef]

NOW = "2026-11-29 00:00:00"


def populate(db: Database, aliases: int) -> None:
    """One user, one network, `aliases` sessions."""
    with db.write():
        db.execute("INSERT INTO users(user_id, username, display_name, password_hash, role, created_at, updated_at)"
                   " VALUES ('u1', 'bench', 'bench', 'x', 'admin', ?, ?)", (NOW, NOW))
        db.execute("INSERT INTO networks(network_id, name, owner_id, created_at, updated_at)"
                   " VALUES ('n1', 'bench', 'u1', ?, ?)", (NOW, NOW))
        for i in range(aliases):
            db.execute("INSERT INTO sessions(network_id, alias, resume_id, status, last_seen_at, last_seen_ts,"
                       " created_at) VALUES ('n1', ?, ?, 'idle', ?, ?, ?)", (f"a{i}", f"r{i}", NOW, time.time(), NOW))


async def one_sweep(hub: Hub) -> tuple[float, float]:
    """(wall ms, longest loop stall ms) of one sweep."""

    async def sweep() -> None:
        result = sweep_once(hub)
        if inspect.isawaitable(result):
            await result

    return await one_sweep_like(sweep)


async def one_sweep_like(job) -> tuple[float, float]:  # noqa: ANN001
    """(wall ms, longest loop stall ms) of one run of an async job, measured by a 1 ms ticker task."""
    worst = 0.0
    done = False

    async def ticker() -> None:
        nonlocal worst
        last = time.perf_counter()
        while not done:
            await trio.sleep(0.001)
            now = time.perf_counter()
            worst = max(worst, now - last - 0.001)
            last = now

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        await trio.sleep(0.01)
        start = time.perf_counter()
        await job()
        wall = time.perf_counter() - start
        await trio.sleep(0.005)
        done = True
    return wall * 1000, worst * 1000


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--aliases", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(str(Path(tmp) / "bench.db"))
        populate(db, args.aliases)
        broker = Broker(16)
        hub = Hub(Settings(db=db.path), db, broker)
        with contextlib.ExitStack() as stack:
            for i in range(args.aliases):
                stack.enter_context(broker.subscribe("n1", f"a{i}", holds=STREAM))
            for scenario in ("steady", "all_stale"):
                walls, stalls = [], []
                for _ in range(args.runs):
                    with db.write():
                        db.execute("UPDATE sessions SET last_seen_ts = ?",
                                   (time.time() - (40 if scenario == "all_stale" else 0),))
                    wall, stall = await one_sweep(hub)
                    walls.append(wall)
                    stalls.append(stall)
                print(f"{scenario:10s} aliases={args.aliases} sweep wall median {statistics.median(walls):7.1f} ms"
                      f"  longest loop stall median {statistics.median(stalls):7.1f} ms  (runs={args.runs})")
        db.close()


if __name__ == "__main__":
    trio.run(main)
