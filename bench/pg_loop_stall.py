"""The event loop's worst stall while K agents send at once on a slow PostgreSQL (pg-offloop, docs/postgresql.md).

Each statement is made `--latency-ms` slower (a sleep in the driver's call, as a distant database's round trip:
the GIL is released meanwhile); K send_message calls run at once straight into the ASGI entry (request_cost's
asgi_round), round after round, while a heartbeat task sleeps 5 ms in a loop and records how late it wakes. With
the driver on the loop every statement's wait stalls the loop; with the hop only the worker threads wait.

    .venv/bin/python bench/pg_loop_stall.py --setting database_url=postgresql://...             # this checkout
    .venv/bin/python bench/pg_loop_stall.py --repo /tmp/old --setting database_url=postgresql://...
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import trio

HERE = Path(__file__).resolve().parent


async def measure(a: argparse.Namespace, log_stream: Any) -> dict[str, Any]:
    sys.path.insert(0, str(HERE))
    import request_cost  # noqa: PLC0415 (bench/ next to this file)

    from commhub_lib import db_pg  # noqa: PLC0415 (the measured checkout's)

    extra = dict(s.split("=", 1) for s in a.setting)
    env = await request_cost.setup(log_stream, clients=a.k, extra=extra)
    original = db_pg.PgConnection.run
    delay = a.latency_ms / 1000

    def slow_run(self: Any, *args: Any, **kwargs: Any) -> Any:
        time.sleep(delay)  # the round trip of a distant database (releases the GIL, as a socket wait does)
        return original(self, *args, **kwargs)

    db_pg.PgConnection.run = slow_run  # type: ignore[method-assign]
    # A checkout from before 2026-12-07's evening had a one-writer lock per process (`_write_lock`); since then
    # write transactions run concurrently and only the commit is serialised. --no-write-lock lifts the old lock.
    write_lock = hasattr(env["db"], "_write_lock")
    if a.no_write_lock and write_lock:
        import contextlib  # noqa: PLC0415

        env["db"]._write_lock = contextlib.nullcontext()
        write_lock = False
    lags: list[float] = []
    done = trio.Event()

    async def heartbeat() -> None:
        while not done.is_set():
            t0 = trio.current_time()
            await trio.sleep(0.005)
            lags.append((trio.current_time() - t0 - 0.005) * 1000)

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(heartbeat)
        for _ in range(a.rounds):
            await request_cost.asgi_round(env, a.k)
        done.set()
    wall = time.perf_counter() - started
    db_pg.PgConnection.run = original  # type: ignore[method-assign]
    lags.sort()
    sends = a.rounds * a.k
    return {"k": a.k, "write_lock": write_lock, "latency_ms": a.latency_ms, "sends": sends,
            "sends_per_s": round(sends / wall, 1), "loop_lag_ms_p50": round(lags[len(lags) // 2], 2),
            "loop_lag_ms_p99": round(lags[int(len(lags) * .99)], 2), "loop_lag_ms_max": round(lags[-1], 2),
            "beats": len(lags), "write_together_groups": getattr(env["db"], "groups_committed", None)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", default=str(HERE.parent), help="checkout whose commhub_lib is measured")
    ap.add_argument("--k", type=int, default=20, help="sends at once")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--latency-ms", type=float, default=5.0)
    ap.add_argument("--setting", action="append", default=[], metavar="NAME=VALUE")
    ap.add_argument("--no-write-lock", action="store_true", help="measure without db_pg's one-writer lock")
    a = ap.parse_args()
    sys.path.insert(0, a.repo)
    import commhub_lib  # noqa: PLC0415

    assert Path(commhub_lib.__file__).resolve().is_relative_to(Path(a.repo).resolve()), commhub_lib.__file__
    with open(os.devnull, "w") as log_stream:
        print(json.dumps({"repo": a.repo, **trio.run(measure, a, log_stream)}))


if __name__ == "__main__":
    main()
