"""One child process of bench_streams.py: holds a share of the SSE streams on raw trio sockets and reports.

A single Python process holding 5,000 httpx streams was the limit of the old load generator (it could not keep
200 sends/s at 2,000 streams, and its own gc pauses counted as server latency). Each child here holds N/k
streams with a plain socket each (one small task, one bytearray, no HTTP client objects), keeps its collector
off once the streams are open, and talks to the parent over stdin/stdout, one line per message:

  parent -> child   `go`                       open the streams now (import and set-up time does not count)
  child -> parent   `loaded`                   ready for `go`
                    `open <n_ok> <n_failed> <seconds> <first error or ->`
                    `a <title-number> <perf_counter> <alias>`   a paced task's new_task event arrived (first sighting)
                    `end <clean> <cut> <error> <last end perf_counter>`   every stream has ended
                    `gc <count> <max ms> <total ms>`     this process's own collections while measuring

time.perf_counter is CLOCK_MONOTONIC on Linux: arrival times compare with the parent's send times.
A stream ends *clean* when it carried the server's closing comment and the terminating chunk before EOF;
*cut* when the connection ended without them; *error* on a reset or a failed open.

    python bench/stream_holders.py PORT TOKENS_JSON START END PARALLEL [events|mcp]

KIND `events` (the default) opens `GET /events/<alias>?token=`; `mcp` first opens an MCP session per agent
(initialize, notifications/initialized, report_status claiming its alias: all before `loaded`, so none of it
counts as opening) and on `go` opens the session's `GET /mcp` stream.
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
CLOSING = b": stream closed:"
PROTOCOL = "2025-06-18"
LAST_CHUNK = b"\r\n0\r\n\r\n"


async def post_json(stream: trio.SocketStream, headers: dict[str, str], body: dict) -> tuple[bytes, bytes]:
    """One POST /mcp on a kept-alive socket: (response head, body), the body read by its Content-Length."""
    raw = json.dumps(body).encode()
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    await stream.send_all(f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{head}"
                          f"Content-Length: {len(raw)}\r\n\r\n".encode() + raw)
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = await stream.receive_some(65536)
        if not data:
            raise ConnectionError("closed")
        buf += data
    top, _, rest = buf.partition(b"\r\n\r\n")
    m = re.search(rb"(?i)\r\ncontent-length: *(\d+)", top)
    length = int(m.group(1)) if m else 0
    while len(rest) < length:
        data = await stream.receive_some(65536)
        if not data:
            raise ConnectionError("closed")
        rest += data
    return top, rest


class Holder:
    def __init__(self, port: int, agents: list[tuple[str, str]], parallel: int, kind: str = "events"):
        self.port, self.agents, self.parallel, self.kind = port, agents, parallel, kind
        self.session_ids: dict[str, str] = {}
        self.opened = 0
        self.failed = 0
        self.first_error = "-"
        self.seen: set[int] = set()
        self.clean = self.cut = self.errors = 0
        self.last_end = 0.0
        self.all_open = trio.Event()
        self.all_ended = trio.Event()
        self.ended = 0

    def say(self, line: str) -> None:
        os.write(1, (line + "\n").encode())

    async def mcp_session(self, alias: str, token: str, limiter: trio.CapacityLimiter) -> None:
        """initialize, notifications/initialized and report_status (claims the alias): the session a GET /mcp
        stream belongs to."""
        async with limiter:
            stream = await trio.open_tcp_stream("127.0.0.1", self.port)
            h = {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream"}
            top, _ = await post_json(stream, h, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "stream_holders"}}})
            m = re.search(rb"(?i)\r\nmcp-session-id: *([^\r]+)", top)
            if not top.startswith(b"HTTP/1.1 200") or m is None:
                raise ConnectionError(top[:120].decode(errors="replace"))
            h.update({"Mcp-Session-Id": m.group(1).decode(), "Mcp-Protocol-Version": PROTOCOL})
            await post_json(stream, h, {"jsonrpc": "2.0", "method": "notifications/initialized"})
            top, body = await post_json(stream, h, {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
                "name": "report_status", "arguments": {"alias": alias, "status": "idle"}}})
            if b'"isError":true' in body or not top.startswith(b"HTTP/1.1 200"):
                raise ConnectionError(body[:120].decode(errors="replace"))
            await stream.aclose()
            self.session_ids[alias] = h["Mcp-Session-Id"]

    def request_line(self, alias: str, token: str) -> bytes:
        """The GET that opens this agent's stream."""
        if self.kind == "mcp":
            return (f"GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
                    f"Mcp-Session-Id: {self.session_ids[alias]}\r\nMcp-Protocol-Version: {PROTOCOL}\r\n"
                    "Accept: text/event-stream\r\n\r\n").encode()
        return (f"GET /events/{alias}?token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Accept: text/event-stream\r\n\r\n").encode()

    async def hold(self, alias: str, token: str, limiter: trio.CapacityLimiter) -> None:
        """Open one stream, wait for its preamble, then read until the server ends it."""
        ok = False
        try:
            async with limiter:
                stream = await trio.open_tcp_stream("127.0.0.1", self.port)
                await stream.send_all(self.request_line(alias, token))
                buf = bytearray()
                while b"retry:" not in buf:
                    data = await stream.receive_some(65536)
                    if not data:
                        raise ConnectionError("closed before the preamble: " + bytes(buf[:80]).decode(errors="replace"))
                    buf += data
                if not buf.startswith(b"HTTP/1.1 200"):
                    raise ConnectionError(bytes(buf[:80]).decode(errors="replace"))
            ok = True
            self.opened += 1
            if self.opened + self.failed == len(self.agents):
                self.all_open.set()
            tail = b""
            closing = False
            while True:
                data = await stream.receive_some(65536)
                if not data:
                    break
                t = time.perf_counter()
                chunk = tail + data
                for m in TITLE.finditer(chunk):
                    k = int(m.group(1))
                    if k not in self.seen:
                        self.seen.add(k)
                        self.say(f"a {k} {t:.6f} {alias}")
                if CLOSING in chunk:
                    closing = True
                tail = chunk[-64:]
            if closing and tail.endswith(LAST_CHUNK):
                self.clean += 1
            else:
                self.cut += 1
        except (OSError, trio.BrokenResourceError, ConnectionError) as exc:
            if ok:
                self.errors += 1
            else:
                self.failed += 1
                if self.first_error == "-":
                    self.first_error = f"{type(exc).__name__}:{exc}".replace(" ", "_")[:120]
                if self.opened + self.failed == len(self.agents):
                    self.all_open.set()
        finally:
            self.last_end = time.perf_counter()
            self.ended += 1
            if self.ended == len(self.agents):
                self.all_ended.set()

    async def run(self) -> None:
        if self.kind == "mcp":
            prep = trio.CapacityLimiter(8)
            async with trio.open_nursery() as nursery:
                for alias, token in self.agents:
                    nursery.start_soon(self.mcp_session, alias, token, prep)
        self.say("loaded")
        line = await trio.to_thread.run_sync(sys.stdin.readline)
        if line.strip() != "go":
            return
        limiter = trio.CapacityLimiter(self.parallel)
        pauses: list[float] = []
        started = [0.0]

        def on_gc(phase: str, info: dict) -> None:
            if phase == "start":
                started[0] = time.perf_counter()
            else:
                pauses.append((time.perf_counter() - started[0]) * 1000)

        # This process's collector would pause every reader at once (and count as server latency): it stays
        # off for the whole run (a few MiB of garbage at most); the callback shows any collection that still runs.
        gc.collect()
        gc.freeze()
        gc.disable()
        gc.callbacks.append(on_gc)
        async with trio.open_nursery() as nursery:
            t0 = time.perf_counter()
            for alias, token in self.agents:
                nursery.start_soon(self.hold, alias, token, limiter)
            await self.all_open.wait()
            took = time.perf_counter() - t0
            self.say(f"open {self.opened} {self.failed} {took:.3f} {self.first_error}")
            await self.all_ended.wait()
        self.say(f"end {self.clean} {self.cut} {self.errors} {self.last_end:.6f}")
        self.say(f"gc {len(pauses)} {max(pauses, default=0.0):.1f} {sum(pauses):.1f}")


def main() -> None:
    """Command line (see the module docstring)."""
    port, path, start, end, parallel = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
    kind = sys.argv[6] if len(sys.argv) > 6 else "events"
    with open(path) as f:
        agents = [tuple(x) for x in json.load(f)[start:end]]
    trio.run(Holder(int(port), agents, parallel, kind).run)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
