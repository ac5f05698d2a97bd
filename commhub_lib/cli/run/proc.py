"""Process and file helpers shared by the agent drivers: children that die with the runner, private files."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO

import trio

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In a child before exec (preexec_fn): receive SIGKILL when the runner dies, so no agent outlives it.

    On Linux only; elsewhere a no-op (the loop's `close()` still stops the agent on a clean exit).
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def private_dir(path: Path) -> Path:
    """Create `path` (and parents) if needed and make it 0700; return it."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


class AgentProcess:
    """A child process started from the trio thread itself, with trio streams on its pipes.

    Why not `trio.lowlevel.open_process`: it forks from a worker thread, and PR_SET_PDEATHSIG fires when the
    *thread* that forked the child ends — trio retires idle worker threads after a few seconds, which SIGKILLs
    an agent in the middle of a long turn (measured: `claude -p` killed with -9 while a permission prompt waited).
    Forking from the thread that runs trio (the runner's main thread) ties the child to the runner's life."""

    def __init__(self, popen: subprocess.Popen[bytes]):
        self.popen = popen
        self.pid = popen.pid
        self.stdin = _stream(popen.stdin)
        self.stdout = _stream(popen.stdout)
        self.stderr = _stream(popen.stderr)
        popen.stdin = popen.stdout = popen.stderr = None

    @property
    def returncode(self) -> int | None:
        """The exit code (negative: killed by that signal), or None while it runs."""
        return self.popen.poll()

    async def wait(self) -> int:
        """Wait for the exit without blocking trio (a pidfd on Linux, else polling)."""
        if self.popen.poll() is not None:
            return self.popen.returncode
        pidfd_open = getattr(os, "pidfd_open", None)
        if pidfd_open is not None:
            try:
                fd = pidfd_open(self.pid)
            except OSError:
                fd = -1
            if fd >= 0:
                try:
                    await trio.lowlevel.wait_readable(fd)
                finally:
                    trio.lowlevel.notify_closing(fd)
                    os.close(fd)
        while self.popen.poll() is None:  # noqa: ASYNC110 - without a pidfd only polling sees the exit
            await trio.sleep(0.05)
        return self.popen.returncode

    def send_signal(self, signum: int) -> None:
        """Signal it (nothing if it already ended)."""
        if self.popen.poll() is None:
            self.popen.send_signal(signum)

    def terminate(self) -> None:
        """SIGTERM."""
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL."""
        self.send_signal(signal.SIGKILL)


def _stream(pipe: IO[bytes] | None) -> trio.lowlevel.FdStream | None:
    if pipe is None:
        return None
    stream = trio.lowlevel.FdStream(os.dup(pipe.fileno()))
    pipe.close()
    return stream


def spawn(command: list[str], *, cwd: Path, env: dict[str, str], new_session: bool = True,
          stderr: int = subprocess.PIPE) -> AgentProcess:
    """Start an agent with pipes on stdin/stdout/stderr, dying with the runner (see AgentProcess). Call it from
    the trio thread; OSError if it cannot start. `stderr` may be a file descriptor (a log file) instead."""
    popen = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
                             cwd=str(cwd), env=env, preexec_fn=die_with_parent, start_new_session=new_session)
    return AgentProcess(popen)
