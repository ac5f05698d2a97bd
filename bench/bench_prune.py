"""One SSE-event prune with a backlog: wall time, longest event-loop stall, and the WAL size it leaves.

Usage:  python bench/bench_prune.py [--old 200000] [--recent 20000]
Runs against whatever `commhub_lib` is importable (PYTHONPATH=<an old checkout> for "before").
"""

from __future__ import annotations

import argparse
import inspect
import os
import tempfile
from pathlib import Path

import trio
from bench_sweep import one_sweep_like, populate

from commhub_lib.broker import Broker
from commhub_lib.config import Settings
from commhub_lib.db import Database
from commhub_lib.service.hub import Hub

try:
    from commhub_lib.service.jobs import prune_events
except ImportError:
    from commhub_lib.service.sessions import prune_events  # type: ignore[no-redef]


def wal_size(db_path: str) -> int:
    """Bytes in the database's WAL file (0 if none)."""
    wal = db_path + "-wal"
    return os.path.getsize(wal) if os.path.exists(wal) else 0


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--old", type=int, default=200_000)
    parser.add_argument("--recent", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(str(Path(tmp) / "bench.db"))
        populate(db, 1)
        data = '{"from":"someone","content":"' + "x" * 200 + '"}'
        with db.write():
            for i in range(args.old + args.recent):
                created = "2000-01-01 00:00:00" if i < args.old else "2999-01-01 00:00:00"
                db.execute("INSERT INTO events(network_id, alias, event, data, created_at) VALUES ('n1', 'a0',"
                           " 'new_message', ?, ?)", (data, created))
        db.checkpoint()
        hub = Hub(Settings(db=db.path), db, Broker(16))

        async def prune() -> None:
            result = prune_events(hub)
            if inspect.isawaitable(result):
                await result

        wall, stall = await one_sweep_like(prune)
        wal = wal_size(db.path)
        left = db.query_one("SELECT count(*) AS n FROM events")["n"]
        print(f"prune old={args.old} recent={args.recent}: wall {wall:.0f} ms, longest loop stall {stall:.1f} ms, "
              f"WAL after {wal / 2**20:.1f} MiB, events left {left}")
        db.close()


if __name__ == "__main__":
    trio.run(main)
