"""The command line as a newcomer meets it: output piped into `head` ends quietly, a file that cannot be sent is
named, and a missing token says where to get one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli_support import COMMHUB, cli_env

pytestmark = pytest.mark.subprocess


def test_output_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    """`commhub … | head -1`: once the reader has gone, the next write fails; no traceback, exit 141 like cat's."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first byte: the first write meets EPIPE
    try:
        # Unbuffered, so the write itself meets the closed pipe (as a long listing does once the buffer fills).
        done = subprocess.run([sys.executable, COMMHUB, "user", "create", "admin", "--db", str(tmp_path / "hub.db"),
                               "--password-stdin"], input=b"a-password\n", stdout=write_end, stderr=subprocess.PIPE,
                              env=cli_env(PYTHONUNBUFFERED="1"), timeout=30, check=False)
    finally:
        os.close(write_end)
    assert b"Traceback" not in done.stderr and b"BrokenPipeError" not in done.stderr, done.stderr.decode()
    assert done.returncode == 141, (done.returncode, done.stderr.decode())
