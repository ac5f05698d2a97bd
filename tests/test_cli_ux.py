"""The command line as a newcomer meets it: output piped into `head` ends quietly, a file that cannot be sent is
named, and a missing token says where to get one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from commhub_lib.cli.common import cell
from commhub_lib.runtime.server import ServerHandle
from tests.cli_support import COMMHUB, cli_env, run_cli
from tests.conftest import register

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


async def test_without_a_token_the_cli_says_which_token_and_where_it_comes_from(server: ServerHandle) -> None:
    done = await run_cli("schedule", "list", env=cli_env(server.url))
    assert done.code == 1
    assert "no token given: pass --token or COMMHUB_TOKEN" in done.err
    assert "POST /api/auth/login" in done.err  # where a person's token comes from
    assert "the server said" not in done.err  # the server's own words for a browser/curl caller are not repeated


async def test_a_not_found_names_the_command_that_lists_what_exists(server: ServerHandle) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        owner = await register(client)
    env = cli_env(server.url, owner.token)
    missing = await run_cli("schedule", "show", "sch_nope", env=env)
    assert missing.code == 1 and "(schedule_not_found)" in missing.err
    assert missing.err.splitlines()[-1] == "commhub: see commhub schedule list", missing.err
    nobody = await run_cli("send", "nobody", "hello", env=env)
    assert nobody.code == 1 and nobody.err.splitlines()[-1] == "commhub: see commhub status", nobody.err


def test_a_flag_reads_yes_or_no() -> None:
    """`commhub a2a show` printed `token_set   True`: a flag in a table or a record is yes/no."""
    assert (cell(True), cell(False), cell(None), cell(0)) == ("yes", "no", "-", "0")
