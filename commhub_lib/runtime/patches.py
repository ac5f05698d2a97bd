"""Fixes to hypercorn, installed by an explicit call when the server starts (`install()`, from run_server), not
as a side effect of an import.

Each one relies on a hypercorn internal: tests/test_stack_internals.py checks that they still exist, and
pyproject.toml bounds hypercorn's version from above.
"""

from __future__ import annotations

import trio
from hypercorn.trio.tcp_server import TCPServer


def install() -> None:
    """Install every fix (idempotent: a process that runs many servers, like the tests, installs them once)."""
    shield_connection_close()


def shield_connection_close() -> None:
    """Make hypercorn's connection close uncancellable.

    When a response ends before its request body was fully received (a 408 for a slow body, a 413), the last
    send runs inside quart-trio's request nursery, which the disconnect it triggers has just cancelled:
    hypercorn's `_close()` then dies at its first checkpoint (send_eof) and the socket stays open for as long
    as the client likes (measured: never closed), pinning a file descriptor. Both steps are immediate
    syscalls, so shielding them cannot hang."""
    original = TCPServer._close
    if getattr(original, "_commhub_shielded", False):
        return

    async def _close(self: TCPServer) -> None:
        with trio.CancelScope(shield=True):
            await original(self)

    _close._commhub_shielded = True  # type: ignore[attr-defined]
    TCPServer._close = _close  # type: ignore[method-assign]


def installed() -> bool:
    """Whether install() has run in this process."""
    return bool(getattr(TCPServer._close, "_commhub_shielded", False))
