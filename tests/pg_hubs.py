"""Real `commhub.py serve --database <url> --port 0` child processes on one PostgreSQL database, for the
multi-process tests (tests/test_pg_fanout.py, test_pg_shared.py, test_pg_owner.py)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import trio
from cli_support import listening_url

REPO = Path(__file__).resolve().parent.parent
# Rate limits off (the tests register, log in and pair from one address), logs at info for the failure messages.
BASE_ENV = {"COMMHUB_REGISTER_RATE_PER_MINUTE": "0", "COMMHUB_LOGIN_RATE_PER_MINUTE": "0",
            "COMMHUB_TOKEN_RATE_PER_MINUTE": "0", "COMMHUB_PAIR_RATE_PER_MINUTE": "100000",
            "COMMHUB_LOG_LEVEL": "info", "PYTHONUNBUFFERED": "1"}


def log_tail(log: Path) -> str:
    """The end of a child's log (for a failure message)."""
    return log.read_text(errors="replace")[-3000:] if log.exists() else ""


@asynccontextmanager
async def serve_hub(url: str, log: Path, env: dict[str, str] | None = None,
                    within: float = 60) -> AsyncIterator[tuple[str, trio.Process]]:
    """A hub child on the database `url` with BASE_ENV and `env` (its settings), its output in `log`; yields its base
    URL and process once /health answers (within `within` seconds), and stops it (terminate, then kill) after."""
    child_env = {**os.environ, **BASE_ENV, **(env or {})}
    child_env.pop("COMMHUB_AUTH_TOKEN", None)
    with log.open("ab") as log_file:
        process = await trio.lowlevel.open_process(
            [sys.executable, str(REPO / "commhub.py"), "serve", "--host", "127.0.0.1", "--port", "0",
             "--database", url], cwd=str(REPO), env=child_env, stdin=subprocess.DEVNULL, stdout=log_file,
            stderr=log_file)
    try:
        base = await listening_url(process, log, limit_seconds=within)
        async with httpx.AsyncClient(base_url=base, timeout=5) as probe:
            with trio.fail_after(within):
                while True:
                    assert process.returncode is None, log_tail(log)
                    with contextlib.suppress(httpx.TransportError):
                        if (await probe.get("/health")).status_code == 200:
                            break
                    await trio.sleep(0.05)  # polling the child's /health, bounded by fail_after
        yield base, process
    finally:
        if process.returncode is None:
            process.terminate()
        with trio.move_on_after(15):
            await process.wait()
        if process.returncode is None:
            process.kill()
