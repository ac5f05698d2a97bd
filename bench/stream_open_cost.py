"""What opening one stream costs the server, measured inside the server's own process: CPU, SQL statements and
commits per open, for `GET /events/<alias>` and for `GET /mcp`.

The server runs in this process as `serve` runs it (`run_server`: hypercorn on 127.0.0.1:0, the root nursery,
text access log at INFO to /dev/null, gc tuned); the streams are opened by bench/stream_holders.py child
processes, so the CPU this process spends between `go` and the last stream's first bytes is the server's
cost of the opens (the client's is elsewhere). Statements are counted with an APSW exec trace on the loop's
connection (deterministic: the same on a busy box); CPU is process time, moved by other jobs only a little.

    .venv/bin/python bench/stream_open_cost.py --streams 2000 --kind events     # or --kind mcp
    .venv/bin/python bench/stream_open_cost.py --repo /tmp/old                   # another checkout's code
    --pyspy FILE   record this process with py-spy (raw stacks) during the opens
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

HERE = Path(__file__).resolve().parent


async def measure(a: argparse.Namespace) -> dict[str, Any]:
    """Serve, create the tokens, open the streams from the holders, count what the opens cost."""
    import benchlib as bl

    from commhub_lib.config import load_settings
    from commhub_lib.gc_tuning import keep_streams_frozen, tune_after_startup
    from commhub_lib.logs import setup_logging
    from commhub_lib.server import run_server

    tmp = tempfile.mkdtemp(prefix="commhub-opencost-")
    env = {k.removeprefix("COMMHUB_").lower(): v for k, v in bl.NO_LIMITS.items()}
    settings = load_settings({"db": os.path.join(tmp, "cost.db"), "host": "127.0.0.1", "port": 0, **env})
    setup_logging(settings.log_level, settings.log_format)
    devnull = open(os.devnull, "w")  # noqa: SIM115, ASYNC230 - lives as long as the run; opening /dev/null is instant
    for handler in logging.getLogger().handlers:
        handler.stream = devnull  # type: ignore[attr-defined]
    out: dict[str, Any] = {"kind": a.kind, "streams": a.streams}
    async with trio.open_nursery() as nursery:
        handle = await nursery.start(run_server, settings)
        tune_after_startup()
        nursery.start_soon(keep_streams_frozen, handle.hub.broker)  # as `serve` runs it
        base = handle.url
        reg = await trio.to_thread.run_sync(bl.register, base)
        n = a.streams
        tokens = await trio.to_thread.run_sync(bl.create_tokens, base, reg["token"], reg["network_id"], n)
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump([[f"agent-{i}", t] for i, t in enumerate(tokens)], f)
            path = f.name
        holders = []
        for i in range(a.holders):
            lo, hi = n * i // a.holders, n * (i + 1) // a.holders
            holders.append(await trio.lowlevel.open_process(
                [sys.executable, str(HERE / "stream_holders.py"), str(handle.port), path, str(lo), str(hi),
                 str(a.parallel), a.kind], stdin=subprocess.PIPE, stdout=subprocess.PIPE))
        lines: list[trio.MemoryReceiveChannel[str]] = []

        async def read(proc: trio.Process, send: trio.MemorySendChannel[str]) -> None:
            buf = b""
            assert proc.stdout is not None
            while data := await proc.stdout.receive_some(65536):
                buf += data
                *done, buf = buf.split(b"\n")
                for line in done:
                    await send.send(line.decode())

        for proc in holders:
            send, receive = trio.open_memory_channel[str](1000)
            nursery.start_soon(read, proc, send)
            lines.append(receive)

        async def expect(word: str) -> list[str]:
            got = []
            for receive in lines:
                while not (line := await receive.receive()).startswith(word):
                    pass
                got.append(line)
            return got

        await expect("loaded")
        await trio.sleep(1.0)  # let the set-up's last writes and checkpoints settle
        db = handle.hub.db
        statements: collections.Counter[str] = collections.Counter()

        def tracer(_cursor: Any, sql: str, _bindings: Any) -> bool:
            statements[sql.split(None, 1)[0].upper()] += 1
            texts[sql] += 1
            return True

        texts: collections.Counter[str] = collections.Counter()
        spy = None
        if a.pyspy:
            spy = subprocess.Popen([  # noqa: ASYNC220 - started once, before the measured phasestr(Path(sys.executable).parent / "py-spy"), "record", "-p", str(os.getpid()),
                                    "-f", "raw", "-r", str(a.pyspy_rate), "-o", a.pyspy],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            await trio.sleep(1.0)
        gc_ms = [0.0, 0]
        started = [0.0]
        by_gen: collections.Counter[str] = collections.Counter()

        def on_gc(phase: str, info: dict[str, Any]) -> None:
            if phase == "start":
                started[0] = time.perf_counter()
            else:
                took = (time.perf_counter() - started[0]) * 1000
                gc_ms[0] += took
                gc_ms[1] += 1
                by_gen[f"gen{info['generation']}_ms"] += round(took, 2)
                by_gen[f"gen{info['generation']}_n"] += 1

        gc.callbacks.append(on_gc)
        db.con.exec_trace = tracer
        cpu0, t0 = time.process_time(), time.perf_counter()
        for proc in holders:
            assert proc.stdin is not None
            await proc.stdin.send_all(b"go\n")
        opened = await expect("open")
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
        db.con.exec_trace = None
        gc.callbacks.remove(on_gc)
        if spy is not None:
            spy.send_signal(2)
            await trio.to_thread.run_sync(spy.wait)
        ok = sum(int(line.split()[1]) for line in opened)
        out.update({"opened": ok, "failed": n - ok, "wall_s": round(wall, 2),
                    "cpu_ms_per_open": round(cpu * 1000 / max(1, ok), 3),
                    "gc_ms_per_open": round(gc_ms[0] / max(1, ok), 3), "collections": gc_ms[1],
                    "gc_by_generation": dict(by_gen),
                    "statements_per_open": round(sum(texts.values()) / max(1, ok), 2),
                    "commits_per_open": round(statements["COMMIT"] / max(1, ok), 2),
                    "by_verb_per_open": {k: round(v / max(1, ok), 2) for k, v in statements.items()
                                         if v and k.isalpha() and k.isupper()},
                    "top_statements": [[round(v / max(1, ok), 2), sql[:140]] for sql, v in texts.most_common(12)]})
        handle.shutdown()
        os.unlink(path)
    for proc in holders:
        if proc.returncode is None:
            proc.kill()
    return out


def main() -> None:
    """Command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--streams", type=int, default=2000)
    p.add_argument("--kind", default="events", choices=["events", "mcp"])
    p.add_argument("--holders", type=int, default=2)
    p.add_argument("--parallel", type=int, default=500, help="streams connecting at once, per holder")
    p.add_argument("--repo", default=str(HERE.parent), help="checkout whose commhub_lib serves")
    p.add_argument("--pyspy", help="write py-spy raw stacks of the opens here")
    p.add_argument("--pyspy-rate", type=int, default=250)
    p.add_argument("--json-out")
    a = p.parse_args()
    sys.path.insert(0, str(HERE))
    sys.path.insert(0, a.repo)
    out = trio.run(measure, a)
    import commhub_lib

    out["repo"] = str(Path(commhub_lib.__file__).parent.parent)  # the checkout that served
    out["date_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    out["loadavg1"] = os.getloadavg()[0]
    print(json.dumps(out, indent=1))
    if a.json_out:
        with open(a.json_out, "a") as f:
            f.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
