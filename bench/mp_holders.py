"""One child process of bench/multiproc.py: holds a share of the SSE streams, spread over several hub processes,
on raw trio sockets, and reconnects a stream whose process died to another one with Last-Event-ID.

bench/stream_holders.py holds streams on one port and never reconnects; this one takes every hub's port and an
agent's home port, and (as a real client would) reopens a stream that ended without the server's closing comment
on another port, right away, resuming from the last `id:` it read. Its collector stays off once the streams are
open (a pause here would count as the server's latency). One line per message over stdin/stdout:

  parent -> child   `go`        open the streams now (import and set-up time do not count)
                    `quit`      close every stream and exit
  child -> parent   `loaded`
                    `open <n_ok> <n_failed> <seconds> <first error or ->`
                    `a <title-number> <perf_counter> <alias>`   an event with `pace-<n>` in its text arrived (first)
                    `x <alias> <perf_counter>`                  a stream ended without the closing comment (cut)
                    `r <alias> <perf_counter> <port>`          it is open again on <port>, after Last-Event-ID
                    `rp <n>`                                   (at `quit`) events that came as a replay (`: at `)
                    `rf <alias> <error>`                        giving up on it (every port refused it, 20 tries)

time.perf_counter is CLOCK_MONOTONIC on Linux: arrival times compare with the parent's send times.

    python bench/mp_holders.py TOKENS_JSON START END PORTS PARALLEL
      TOKENS_JSON: [[alias, token, home port index], ...]; PORTS: comma-separated hub ports
"""

from __future__ import annotations

import gc
import json
import os
import re
import sys
import time

import trio

TITLE = re.compile(rb"pace-(\d+)")
REPLAYED = b"\n: at "  # a replayed frame starts with this comment (events.frame); the previous frame ends "\n\n"
EVENT_ID = re.compile(rb"(?:^|\n)id: (\d+)\n")
CLOSING = b": stream closed:"


class Holder:
    """The streams of one share of the agents."""

    def __init__(self, agents: list[tuple[str, str, int]], ports: list[int], parallel: int):
        self.agents, self.ports, self.parallel = agents, ports, parallel
        self.opened = self.failed = self.ended = 0
        self.first_error = "-"
        self.seen: set[int] = set()
        self.replayed = 0
        self.all_open = trio.Event()

    def say(self, line: str) -> None:
        """One line to the parent (unbuffered: arrival lines must not wait)."""
        os.write(1, (line + "\n").encode())

    async def connect(self, alias: str, token: str, port: int, last: int | None) -> tuple[trio.SocketStream, bytes]:
        """Open the stream on `port` (with Last-Event-ID when resuming); the stream and what followed its
        preamble."""
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        resume = f"Last-Event-ID: {last}\r\n" if last is not None else ""
        await stream.send_all((f"GET /events/{alias}?token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\n{resume}"
                               "Accept: text/event-stream\r\n\r\n").encode())
        buf = b""
        while b"retry:" not in buf:
            data = await stream.receive_some(65536)
            if not data:
                await stream.aclose()
                raise ConnectionError("closed before the preamble: " + buf[:80].decode(errors="replace"))
            buf += data
        if not buf.startswith(b"HTTP/1.1 200"):
            await stream.aclose()
            raise ConnectionError(buf[:80].decode(errors="replace"))
        return stream, buf

    def read(self, alias: str, chunk: bytes, last: int | None) -> tuple[int | None, bool]:
        """Report paced events in `chunk`; the last event id in it (or `last`) and whether it closed cleanly."""
        t = time.perf_counter()
        for m in TITLE.finditer(chunk):
            k = int(m.group(1))
            if k not in self.seen:
                self.seen.add(k)
                self.say(f"a {k} {t:.6f} {alias}")
        self.replayed += chunk.count(REPLAYED)
        ids = EVENT_ID.findall(chunk)
        return (int(ids[-1]) if ids else last), CLOSING in chunk

    async def hold(self, index: int, alias: str, token: str, home: int, limiter: trio.CapacityLimiter) -> None:
        """Open one stream, read it; when its process goes away, reopen it on another one."""
        port_i, last, resumed = home, None, False
        try:
            async with limiter:
                stream, buf = await self.connect(alias, token, self.ports[port_i], None)
        except (OSError, trio.BrokenResourceError, ConnectionError) as exc:
            self.failed += 1
            if self.first_error == "-":
                self.first_error = f"{type(exc).__name__}:{exc}".replace(" ", "_")[:120]
            self._count_open()
            return
        self.opened += 1
        self._count_open()
        while True:
            tail = b""
            closed_cleanly = False
            try:
                last, closed_cleanly = self.read(alias, buf, last)
                if resumed:
                    self.say(f"r {alias} {time.perf_counter():.6f} {self.ports[port_i]}")
                    resumed = False
                while True:
                    data = await stream.receive_some(65536)
                    if not data:
                        break
                    # A frame can straddle two reads: look at the end of the previous one as well.
                    last, clean = self.read(alias, tail + data, last)
                    closed_cleanly = closed_cleanly or clean
                    tail = data[-96:]
            except (OSError, trio.BrokenResourceError):
                pass
            with trio.CancelScope(shield=True):
                await stream.aclose()
            if closed_cleanly:
                return  # the server said goodbye (SIGTERM at the end of a run): nothing to resume
            self.say(f"x {alias} {time.perf_counter():.6f}")
            # Away from the process that cut us: first the other ports in a spread order, then any.
            others = [(port_i + 1 + (index + j) % (len(self.ports) - 1)) % len(self.ports)
                      for j in range(len(self.ports) - 1)] or [port_i]
            error = ""
            for attempt in range(20):
                port_i = others[attempt % len(others)]
                try:
                    stream, buf = await self.connect(alias, token, self.ports[port_i], last)
                    resumed = True
                    break
                except (OSError, trio.BrokenResourceError, ConnectionError) as exc:
                    error = f"{type(exc).__name__}:{exc}".replace(" ", "_")[:120]
                    if attempt >= len(others) - 1:
                        await trio.sleep(0.2)  # every port refused: a short back-off, as a real client's
            else:
                self.say(f"rf {alias} {error}")
                return

    def _count_open(self) -> None:
        if self.opened + self.failed == len(self.agents):
            self.all_open.set()

    async def run(self) -> None:
        """Wait for `go`, open every stream, report, hold them until `quit` (or stdin closes)."""
        self.say("loaded")
        line = await trio.to_thread.run_sync(sys.stdin.readline)
        if line.strip() != "go":
            return
        limiter = trio.CapacityLimiter(self.parallel)
        gc.collect()
        gc.freeze()
        gc.disable()
        async with trio.open_nursery() as nursery:
            t0 = time.perf_counter()
            for i, (alias, token, home) in enumerate(self.agents):
                nursery.start_soon(self.hold, i, alias, token, home, limiter)
            await self.all_open.wait()
            self.say(f"open {self.opened} {self.failed} {time.perf_counter() - t0:.3f} {self.first_error}")
            await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)  # `quit` or EOF
            nursery.cancel_scope.cancel()
        self.say(f"rp {self.replayed}")


def main() -> None:
    """Command line (see the module docstring)."""
    path, start, end, ports, parallel = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
    with open(path) as f:
        agents = [(a, t, int(p)) for a, t, p in json.load(f)[start:end]]
    trio.run(Holder(agents, [int(p) for p in ports.split(",")], parallel).run)


if __name__ == "__main__":
    main()
