"""What opening one stream costs the server, measured inside the server's own process: CPU, SQL statements and
commits per open, for `GET /events/<alias>` and for `GET /mcp`.

The server runs in this process as `serve` runs it (`run_server`: hypercorn on 127.0.0.1:0, the root nursery,
text access log at INFO to /dev/null, gc tuned); the streams are opened by bench/stream_holders.py child
processes, so the CPU this process spends between `go` and the last stream's first bytes is the server's
cost of the opens (the client's is elsewhere). Statements are counted with an APSW exec trace on the loop's
connection (deterministic: the same on a busy box); CPU is process time, moved by other jobs only a little.

    .venv/bin/python bench/stream_open_cost.py --streams 2000 --kind events     # or --kind mcp
    .venv/bin/python bench/stream_open_cost.py --repo /tmp/old                   # another checkout's code
    .venv/bin/python bench/stream_open_cost.py --app asgi      # the floor: a bare ASGI stream on the same hypercorn
    .venv/bin/python bench/stream_open_cost.py --app quart     # a bare quart-trio stream route (no auth, no db)
    --pyspy FILE   record this process with py-spy (raw stacks) during the opens
    .venv/bin/python bench/stream_open_cost.py --split FILE    # those stacks by part of an open (shares)

The floors answer every GET with 200, the same SSE headers and a `retry:` preamble, then hold the stream until
shutdown: what hypercorn + h11 + trio (+ quart-trio) cost per open, with none of CommHub's work.
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
from functools import partial
from pathlib import Path
from typing import Any

import trio

HERE = Path(__file__).resolve().parent


SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"),
               (b"x-accel-buffering", b"no"), (b"connection", b"close")]


def floor_app(kind: str, stop: trio.Event) -> Any:
    """A stream route with nothing behind it: bare ASGI, or one quart-trio route."""
    if kind == "asgi":
        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] == "lifespan":
                while (await receive())["type"] != "lifespan.shutdown":
                    await send({"type": "lifespan.startup.complete"})
                await send({"type": "lifespan.shutdown.complete"})
                return
            await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
            await send({"type": "http.response.body", "body": b"retry: 3000\n\n", "more_body": True})
            await stop.wait()
            await send({"type": "http.response.body", "body": b": stream closed\n\n", "more_body": False})
        return app
    from quart import make_response
    from quart_trio import QuartTrio

    quart = QuartTrio("floor")

    @quart.get("/events/<alias>")
    async def stream(alias: str) -> Any:
        async def body() -> Any:
            yield b"retry: 3000\n\n"
            await stop.wait()
            yield b": stream closed\n\n"
        response = await make_response(body(), 200, {k.decode(): v.decode() for k, v in SSE_HEADERS})
        response.timeout = None
        return response
    return quart


# Parts of a stream open, by the function a sample is in (the deepest of these on its stack wins).
PARTS = [
    ("auth: token + user lookup, last_used write, rate limit", "authenticate ("),
    ("claim: session checks and writes", "claim ("),
    ("claim: session checks and writes", "claim_for_stream ("),
    ("claim: session checks and writes", "push_alias ("),
    ("Last-Event-ID", "last_event_id ("),
    ("network lookup", "_readable_network ("),
    ("network lookup", "single_network ("),
    ("caps check", "check_stream_caps ("),
    ("caps check", "take_stream_slot ("),
    ("caps check", "Broker.take_slot ("),
    ("grant (re-authorisation)", "StreamGuard.hold ("),
    ("broker subscribe", "Broker.subscribe ("),
    ("broker subscribe", "Broker.hold_stream ("),
    ("position query", "Scope.latest ("),
    ("access log line", "log_access ("),
    ("response object (sse_response)", "sse_response ("),
]
FRAMEWORK = {"h11": "hypercorn + h11", "hypercorn": "hypercorn + h11", "quart": "quart + werkzeug",
             "quart_trio": "quart + werkzeug", "werkzeug": "quart + werkzeug", "flask": "quart + werkzeug",
             "blinker": "quart + werkzeug", "socket.py": "socket syscalls"}


def split(path: str) -> dict[str, float]:
    """Shares (%) of py-spy raw stacks by part of an open; samples outside those parts go to the package of the
    innermost frame that is not trio's (trio's own work is charged to the code that called it), or to trio's
    scheduler when nothing else is on the stack. The idle worker thread's samples are left out."""
    parts: dict[str, int] = collections.Counter()
    for line in open(path):  # noqa: SIM115 - read once
        stack, _, n = line.rstrip().rpartition(" ")
        if not stack or "_thread_cache.py:211" in stack:
            continue
        frames = [f.rsplit(" (", 1) for f in stack.split(";")]
        part = None
        for name, _where in frames:
            for label, prefix in PARTS:
                if name + " (" == prefix:
                    part = label
        if part is None and any(name in ("follow", "stream.<locals>.generate", "open_stream.<locals>.generate")
                                for name, _ in frames):
            part = "stream loop (preamble, first wait)"
        if part is None and any(name in ("stream", "get_mcp") for name, _ in frames):
            part = "route, other (sse.py / protocol.py)"
        if part is None:
            i = len(frames) - 1
            while i > 0 and frames[i][1].startswith(("trio/", "outcome/", "contextlib.py", "<attrs")):
                i -= 1
            top = frames[i][1].split("/")[0]
            if top.startswith("commhub_lib"):
                part = "CommHub app hooks (app.py, logs)"
            elif frames[i][1].startswith(("trio/", "outcome/")) or "stream_open_cost" in top or i == 0:
                part = "trio scheduler + epoll"
            else:
                part = FRAMEWORK.get(top, "other (stdlib)")
        parts[part] += int(n)
    total = sum(parts.values()) or 1
    return {k: round(v * 100 / total, 1) for k, v in sorted(parts.items(), key=lambda kv: -kv[1])}


async def measure(a: argparse.Namespace) -> dict[str, Any]:
    """Serve, create the tokens, open the streams from the holders, count what the opens cost."""
    import benchlib as bl

    from commhub_lib.config import load_settings
    from commhub_lib.runtime.gc_tuning import keep_streams_frozen, tune_after_startup
    from commhub_lib.runtime.log_setup import setup_logging
    from commhub_lib.runtime.server import run_server

    tmp = tempfile.mkdtemp(prefix="commhub-opencost-")
    env = {k.removeprefix("COMMHUB_").lower(): v for k, v in bl.NO_LIMITS.items()}
    settings = load_settings({"db": os.path.join(tmp, "cost.db"), "host": "127.0.0.1", "port": 0, **env})
    setup_logging(settings.log_level, settings.log_format)
    devnull = open(os.devnull, "w")  # noqa: SIM115, ASYNC230 - lives as long as the run; opening /dev/null is instant
    for handler in logging.getLogger().handlers:
        handler.stream = devnull  # type: ignore[attr-defined]
    out: dict[str, Any] = {"app": a.app, "kind": a.kind, "streams": a.streams}
    n = a.streams
    async with trio.open_nursery() as nursery:
        if a.app == "commhub":
            handle = await nursery.start(run_server, settings)
            tune_after_startup()
            nursery.start_soon(keep_streams_frozen, handle.hub.broker)  # as `serve` runs it
            base, port, db = handle.url, handle.port, handle.hub.db
            reg = await trio.to_thread.run_sync(bl.register, base)
            tokens = await trio.to_thread.run_sync(bl.create_tokens, base, reg["token"], reg["network_id"], n)
        else:
            from hypercorn.trio import serve

            from commhub_lib.runtime import patches
            from commhub_lib.runtime.server import hypercorn_config

            patches.install()  # the same hypercorn as run_server's
            stop = trio.Event()
            binds = await nursery.start(partial(serve, floor_app(a.app, stop), hypercorn_config(settings),
                                                shutdown_trigger=stop.wait))
            port, db, tokens = int(binds[0].rsplit(":", 1)[1]), None, [f"ntok_floor{i}" for i in range(n)]
            tune_after_startup()
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump([[f"agent-{i}", t] for i, t in enumerate(tokens)], f)
            path = f.name
        holders = []
        for i in range(a.holders):
            lo, hi = n * i // a.holders, n * (i + 1) // a.holders
            holders.append(await trio.lowlevel.open_process(
                [sys.executable, str(HERE / "stream_holders.py"), str(port), path, str(lo), str(hi),
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
        statements: collections.Counter[str] = collections.Counter()

        def tracer(_cursor: Any, sql: str, _bindings: Any) -> bool:
            statements[sql.split(None, 1)[0].upper()] += 1
            texts[sql] += 1
            return True

        texts: collections.Counter[str] = collections.Counter()
        spy = None
        if a.pyspy:
            spy_cmd = [str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(os.getpid()), "-f", "raw",
                       "-r", str(a.pyspy_rate), "-o", a.pyspy]
            # started once, before the measured phase (py-spy pauses this process while it samples)
            spy = subprocess.Popen(spy_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: ASYNC220
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
        if db is not None:
            db.con.exec_trace = tracer
        cpu0, t0 = time.process_time(), time.perf_counter()
        for proc in holders:
            assert proc.stdin is not None
            await proc.stdin.send_all(b"go\n")
        opened = await expect("open")
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
        if db is not None:
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
        await trio.sleep(a.settle)  # the stream gc job's next checks
        out["after_settle"] = {"gc_count": gc.get_count(),
                               "objects_by_generation": [len(gc.get_objects(g)) for g in range(3)]}
        if a.soak and a.app == "commhub":
            out["soak"] = await soak(a.soak, base, path, reg["network_token"], a.soak_pollers, not a.soak_no_churn)
        if a.app == "commhub":
            handle.shutdown()
        else:
            stop.set()
        os.unlink(path)
    for proc in holders:
        if proc.returncode is None:
            proc.kill()
    return out


async def soak(seconds: float, base: str, tokens_path: str, sender_token: str, pollers: int,
               churn: bool) -> dict[str, Any]:
    """Mixed traffic from a child process for `seconds`; then everything is thawed and collected once: the
    unreachable objects found are the cyclic garbage that the frozen generation (and the young ones) still held."""
    gc.unfreeze()
    baseline = gc.collect()  # start clean: nothing unreachable is kept from the opens
    gc.freeze()
    rss0 = int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")  # noqa: SIM115, ASYNC230
    cpu0, t0 = time.process_time(), time.perf_counter()
    done = await trio.run_process([sys.executable, str(HERE / "soak_traffic.py"), base, tokens_path, sender_token,
                                   str(seconds), str(pollers), "churn" if churn else "nochurn"],
                                  capture_stdout=True)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    words = done.stdout.decode().split()
    rounds, polls = int(words[-1]), int(words[-3])
    rss1 = int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")  # noqa: SIM115, ASYNC230
    frozen = gc.get_freeze_count()
    gc.unfreeze()
    found = gc.collect()
    gc.freeze()
    return {"seconds": round(wall, 1), "rounds": rounds, "long_polls": polls, "server_cpu_s": round(cpu, 2),
            "baseline_unreachable": baseline, "frozen_at_end": frozen, "unreachable_at_end": found,
            "unreachable_per_round": round(found / max(1, rounds), 1),
            "unreachable_per_hour_at_this_rate": int(found * 3600 / max(wall, 1e-9)),
            "rss_growth_mib": round((rss1 - rss0) / 2**20, 1)}


def main() -> None:
    """Command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--streams", type=int, default=2000)
    p.add_argument("--kind", default="events", choices=["events", "mcp"])
    p.add_argument("--app", default="commhub", choices=["commhub", "asgi", "quart"],
                   help="what serves: CommHub, or a floor (a bare stream on the same hypercorn; --kind events)")
    p.add_argument("--holders", type=int, default=2)
    p.add_argument("--parallel", type=int, default=500, help="streams connecting at once, per holder")
    p.add_argument("--repo", default=str(HERE.parent), help="checkout whose commhub_lib serves")
    p.add_argument("--settle", type=float, default=3.0, help="seconds after the opens before the gc census")
    p.add_argument("--pyspy", help="write py-spy raw stacks of the opens here")
    p.add_argument("--pyspy-rate", type=int, default=250)
    p.add_argument("--soak", type=float, default=0.0,
                   help="then this many seconds of mixed traffic (bench/soak_traffic.py), and count the cyclic "
                        "garbage the collector had not freed by the end (what freezing kept)")
    p.add_argument("--soak-pollers", type=int, default=0, help="agents long-polling get_inbox during the soak")
    p.add_argument("--soak-no-churn", action="store_true", help="no short-lived streams during the soak")
    p.add_argument("--json-out")
    p.add_argument("--split", help="print the shares of a --pyspy file by part of an open, and stop")
    a = p.parse_args()
    if a.split:
        print(json.dumps(split(a.split), indent=1))
        return
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
