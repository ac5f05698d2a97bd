"""JSON-RPC 2.0 over a child's stdio, one JSON object per line: what `codex app-server` and Gemini's ACP speak.

`RpcProcess` launches the agent (dying with the runner, stderr to a private log file), writes requests,
notifications and answers to its stdin under one lock (a turn's approval answer and an interrupt may be written
from two tasks), and reads its stdout one message at a time. Reading is left to the caller: a driver reads only
while a call or a turn is under way, so the order of messages stays the agent's. End of output means the agent
died: `AgentDied`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import trio

from .driver import AgentDied
from .proc import AgentProcess, spawn

T = TypeVar("T")
LINE_MAX_BYTES = 64 * 1024 * 1024  # a turn's final message can carry every item of the turn


class RpcError(Exception):
    """The agent answered a request with a JSON-RPC error."""

    def __init__(self, method: str, error: dict[str, Any]):
        super().__init__(f"{method}: {error.get('message')} ({error.get('code')})")
        self.error = error


class RpcProcess:
    """One agent process speaking newline-delimited JSON-RPC on stdin/stdout."""

    def __init__(self, name: str, argv: Sequence[str], *, cwd: Path, env: dict[str, str], log_path: Path):
        self.name = name
        self.argv = list(argv)
        self.cwd = cwd
        self.env = env
        self.log_path = log_path
        self.process: AgentProcess | None = None
        self._buffer = bytearray()
        self._next_id = 0
        self._send_lock = trio.Lock()
        self.pending: list[dict[str, Any]] = []   # messages read while waiting for an answer, for the next reader

    async def launch(self) -> None:
        """Start the process (stderr appended to the private log file)."""
        fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            # Forked from the trio thread, not trio's worker thread: PR_SET_PDEATHSIG follows the forking thread.
            self.process = spawn(self.argv, cwd=self.cwd, env=self.env, new_session=True, stderr=fd)
        except OSError as exc:
            raise AgentDied(f"{self.name} could not start: {exc}") from exc
        finally:
            os.close(fd)

    @property
    def pid(self) -> int | None:
        """The agent's process id (None before launch)."""
        return self.process.pid if self.process else None

    async def send(self, message: dict[str, Any]) -> None:
        """Write one message (a line); a closed pipe means the agent died."""
        assert self.process is not None and self.process.stdin is not None
        data = (json.dumps({"jsonrpc": "2.0", **message}, separators=(",", ":")) + "\n").encode()
        async with self._send_lock:
            try:
                await self.process.stdin.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                # Most often the process has just exited (it could not start, or crashed): say so, with its code.
                with trio.move_on_after(1.0):
                    code = await self.process.wait()
                    raise AgentDied(f"{self.name} exited (code {code}); see {self.log_path}") from exc
                raise AgentDied(f"{self.name} closed its input") from exc

    async def request_nowait(self, method: str, params: dict[str, Any]) -> int:
        """Send a request and return its id (its answer comes through `receive`)."""
        self._next_id += 1
        await self.send({"id": self._next_id, "method": method, "params": params})
        return self._next_id

    async def notify(self, method: str, params: dict[str, Any]) -> None:
        """Send a notification."""
        await self.send({"method": method, "params": params})

    async def answer(self, request_id: Any, result: dict[str, Any] | None = None,
                     error: dict[str, Any] | None = None) -> None:
        """Answer one of the agent's requests."""
        if error is not None:
            await self.send({"id": request_id, "error": error})
        else:
            await self.send({"id": request_id, "result": result if result is not None else {}})

    async def call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """Send a request and read until its answer; other messages are kept in `pending` for the next reader."""
        request_id = await self.request_nowait(method, params)
        while True:
            message = await self._read()
            if message.get("id") == request_id and "method" not in message:
                if "error" in message:
                    raise RpcError(method, message["error"] or {})
                result = message.get("result")
                return result if isinstance(result, dict) else {}
            self.pending.append(message)

    async def receive(self) -> dict[str, Any]:
        """The next message from the agent (kept ones first)."""
        if self.pending:
            return self.pending.pop(0)
        return await self._read()

    async def _read(self) -> dict[str, Any]:
        assert self.process is not None and self.process.stdout is not None
        while True:
            newline = self._buffer.find(b"\n")
            if newline >= 0:
                line = bytes(self._buffer[:newline])
                del self._buffer[:newline + 1]
                if not line.strip():
                    continue
                try:
                    message = json.loads(line)
                except ValueError:
                    continue  # a stray log line on stdout is not the protocol's
                if isinstance(message, dict):
                    return message
                continue
            if len(self._buffer) > LINE_MAX_BYTES:
                raise AgentDied(f"{self.name} wrote a line over {LINE_MAX_BYTES} bytes")
            try:
                chunk = await self.process.stdout.receive_some(1 << 16)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise AgentDied(f"{self.name} output broke") from exc
            if not chunk:
                code = await self._exit_code()
                raise AgentDied(f"{self.name} exited (code {code}); see {self.log_path}")
            self._buffer += chunk

    async def watch_exit(self) -> None:
        """Return never while the agent lives; raise AgentDied when its process ends.

        The CLIs are node wrappers whose real program is a child holding the same pipes: killed alone, the wrapper
        leaves its output open, so its exit, not the end of output, is what tells that the agent died.
        """
        process = self.process
        assert process is not None
        code = await process.wait()
        try:
            os.killpg(process.pid, 9)  # whatever it left behind in its session
        except (ProcessLookupError, PermissionError):
            pass
        raise AgentDied(f"{self.name} exited (code {code}); see {self.log_path}")

    async def guarded(self, work: Callable[[], Awaitable[T]]) -> T:
        """Run `work()` while watching the agent's process: its death ends the work with AgentDied."""
        box: list[T] = []

        async def body(cancel: trio.CancelScope) -> None:
            box.append(await work())
            cancel.cancel()

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.watch_exit)
                nursery.start_soon(body, nursery.cancel_scope)
        except BaseExceptionGroup as group:
            died = group.subgroup(AgentDied)
            if died is not None:
                raise _first(died) from None
            raise
        if not box:
            raise AgentDied(f"{self.name} stopped")
        return box[0]

    async def _exit_code(self) -> int | None:
        assert self.process is not None
        with trio.move_on_after(2):
            return await self.process.wait()
        return self.process.returncode

    async def close(self, grace_seconds: float = 5.0) -> None:
        """End the process: close its input, wait a little, then kill its process group."""
        process = self.process
        if process is None:
            return
        self.process = None
        with trio.CancelScope(shield=True):
            if process.stdin is not None:
                try:
                    await process.stdin.aclose()
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
            with trio.move_on_after(grace_seconds):
                await process.wait()
            if process.returncode is None:
                try:
                    os.killpg(process.pid, 9)  # its own session: tool subprocesses go with it
                except (ProcessLookupError, PermissionError):
                    process.kill()
                await process.wait()
            if process.stdout is not None:
                await process.stdout.aclose()


def _first(group: BaseExceptionGroup[AgentDied]) -> AgentDied:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first(exc)
        return exc
    return AgentDied("the agent died")
