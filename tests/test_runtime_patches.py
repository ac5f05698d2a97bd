"""hypercorn's fixes (commhub_lib/runtime/patches.py) are installed by an explicit call when the server starts,
never as a side effect of importing a module."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypercorn.trio.tcp_server import TCPServer

from commhub_lib.runtime import patches
from commhub_lib.runtime.server import ServerHandle

ROOT = Path(__file__).resolve().parents[1]

# In a fresh interpreter (the test process has run servers already): import everything `serve` imports, then install.
PROBE = """
import commhub_lib.app, commhub_lib.cli, commhub_lib.runtime.server
from commhub_lib.runtime import patches
from hypercorn.trio.tcp_server import TCPServer
print(patches.installed())
patches.install()
first = TCPServer._close
patches.install()
print(patches.installed(), TCPServer._close is first)
"""


@pytest.mark.subprocess
def test_importing_the_server_patches_nothing_and_install_patches_once() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         check=True).stdout.split()
    assert out == ["False", "True", "True"]


async def test_a_running_server_has_the_patches_installed(server: ServerHandle) -> None:
    assert patches.installed()
    assert getattr(TCPServer._close, "_commhub_shielded", False)
