"""How long `commhub backup` takes, and what it costs a busy writer (another process, WAL, one insert per
transaction as the server writes), compared with the same writer without a backup running.

    python bench/bench_backup.py [--rows 200000] [--runs 3]

Prints one line per run and the medians. Uses temporary files only.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from pathlib import Path

import apsw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from commhub_lib.db import backup_to  # noqa: E402

PAD = "x" * 200


def fill(path: str, rows: int) -> None:
    """A WAL database with `rows` rows of ~250 bytes."""
    con = apsw.Connection(path)
    con.pragma("journal_mode", "wal")
    con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, pad TEXT)")
    with con:
        con.executemany("INSERT INTO t(pad) VALUES (?)", ((PAD,) for _ in range(rows)))
    con.close()


def writer(path: str, seconds: float, out: mp.Queue) -> None:
    """Insert one row per transaction for `seconds`; report each commit's latency in ms."""
    con = apsw.Connection(path)
    con.setbusytimeout(5000)
    con.pragma("journal_mode", "wal")
    con.pragma("synchronous", "normal")
    lat = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.perf_counter()
        with con:
            con.execute("INSERT INTO t(pad) VALUES (?)", (PAD,))
        lat.append((time.perf_counter() - t0) * 1000)
    con.close()
    out.put(lat)


def summary(lat: list[float]) -> str:
    """Count, p50, p99 and max of commit latencies."""
    lat = sorted(lat)
    return (f"{len(lat)} commits, p50 {lat[len(lat) // 2]:.3f} ms, p99 {lat[int(len(lat) * 0.99)]:.3f} ms, "
            f"max {lat[-1]:.1f} ms")


def run(rows: int, window: float) -> dict[str, float]:
    """One run: baseline writer, then writer + backup."""
    with tempfile.TemporaryDirectory() as tmp:
        src = f"{tmp}/src.db"
        fill(src, rows)
        q: mp.Queue = mp.Queue()
        p = mp.Process(target=writer, args=(src, window, q))
        p.start()
        base = q.get()
        p.join()
        p = mp.Process(target=writer, args=(src, window + 30, q))
        p.start()
        time.sleep(0.5)  # the writer is going
        t0 = time.monotonic()
        pages = backup_to(src, f"{tmp}/copy.db")
        took = time.monotonic() - t0
        p.terminate()
        p.join()
        size = Path(f"{tmp}/copy.db").stat().st_size / 1e6
        # The backup's own window: rerun the writer for exactly as long as the backup took, alongside a backup.
        p = mp.Process(target=writer, args=(src, took, q))
        p.start()
        backup_to(src, f"{tmp}/copy2.db")
        during = q.get()
        p.join()
    print(f"rows {rows}: {size:.1f} MB, {pages} pages, backup {took:.2f} s | without backup: {summary(base)} | "
          f"during backup: {summary(during)}")
    return {"seconds": took, "mb": size, "base_p99": sorted(base)[int(len(base) * 0.99)],
            "during_p99": sorted(during)[int(len(during) * 0.99)], "base_max": max(base), "during_max": max(during),
            "base_rate": len(base) / window, "during_rate": len(during) / took}


def main() -> None:
    """Run and print medians."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--window", type=float, default=3.0, help="seconds of baseline writing")
    args = parser.parse_args()
    results = [run(args.rows, args.window) for _ in range(args.runs)]
    med = {k: statistics.median(r[k] for r in results) for k in results[0]}
    print(f"median of {args.runs}: {med['mb']:.1f} MB copied in {med['seconds']:.2f} s; writer commits/s "
          f"{med['base_rate']:.0f} without, {med['during_rate']:.0f} during; p99 {med['base_p99']:.3f} -> "
          f"{med['during_p99']:.3f} ms; max {med['base_max']:.1f} -> {med['during_max']:.1f} ms")


if __name__ == "__main__":
    main()
