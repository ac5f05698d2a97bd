"""The REST and MCP contract tests, and the service modules' tests through a real server, run once more against a
PostgreSQL-backed server (docs/postgresql.md).

The contract modules take their servers from make_settings, which `pytest --engine postgresql` points at a fresh
PostgreSQL database each (tests/conftest.py); this test runs them that way in a child pytest, so the one test
command (`python -m pytest`) covers both engines. Skipped where PostgreSQL is not installed (failed under CI=true).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pg_cluster as pg_cluster_mod
import pytest

ROOT = Path(__file__).resolve().parent.parent
# The modules that test the user contract through a real server (rest-api-reference.txt, the MCP tools); the
# modules that reach into the SQLite file (plans, the CLI on --db, WAL) stay SQLite-only.
CONTRACT = ["tests/test_rest_auth.py", "tests/test_rest_networks.py", "tests/test_rest_tokens_audit.py",
            "tests/test_tasks_rest.py", "tests/test_mcp_protocol.py", "tests/test_mcp_sdk.py"]
# Not a contract test but a race (argon2 off the event loop: five /health answered before one ~150 ms hash), checked
# in the SQLite run; on PostgreSQL the driver still runs on the loop (docs/postgresql.md), so under CI's parallel load
# /health's round trips to the database can lose that race without anything being wrong.
ENGINE_INDEPENDENT = ["tests/test_rest_auth.py::test_login_in_flight_does_not_delay_health"]


# The service layer's rules as the tests of each domain check them through a real server (quotas, streams and replay,
# MCP sessions and batches, webhooks, presence, unread counts, status; schedules, needs, lifecycle, search, loops and
# deadlines, attachments), in two groups so the parallel run spreads them. Their tests that drive the CLI or
# Chromium stay SQLite-only (they test the CLI and the page, and CI's 10 minutes are finite); so do the modules
# whose rules live above the store (identity, isolation, wake, A2A: the same SQL text, checked in the SQLite run).
SERVICE = [
    ["tests/test_quotas.py", "tests/test_sse.py", "tests/test_mcp_batches.py", "tests/test_mcp_sessions.py",
     "tests/test_webhooks.py", "tests/test_presence.py", "tests/test_unread_counts.py", "tests/test_status_listing.py"],
    ["tests/test_schedules.py", "tests/test_needs.py", "tests/test_lifecycle.py", "tests/test_search.py",
     "tests/test_coordinate_loops.py", "tests/test_coordinate_deadlines.py", "tests/test_attachments.py"],
]


def _run_on_postgresql(modules: list[str], deselect: list[str], marks: str = "not browser") -> None:
    """The modules in a child pytest pointed at PostgreSQL (`--engine postgresql`): every test passes, none skips."""
    try:
        pg_cluster_mod.find_bindir()
    except pg_cluster_mod.PostgresUnavailable as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but PostgreSQL is unavailable: {exc}", pytrace=False)
        pytest.skip(f"PostgreSQL is unavailable: {exc}")
    # addopts cleared: the child runs in one process (no xdist), quietly, with its own throwaway cluster.
    child = subprocess.run([sys.executable, "-m", "pytest", "-o", "addopts=-q", "-p", "no:cacheprovider",
                            "--engine", "postgresql", "-m", marks, *modules,
                            *(f"--deselect={test}" for test in deselect)],
                           cwd=ROOT, capture_output=True, text=True, timeout=1800, check=False)
    assert child.returncode == 0, child.stdout[-6000:] + child.stderr[-2000:]
    assert " passed" in child.stdout.splitlines()[-1] and "skipped" not in child.stdout.splitlines()[-1]


@pytest.mark.slow
@pytest.mark.subprocess
def test_the_rest_and_mcp_contract_holds_on_a_postgresql_backed_server() -> None:
    _run_on_postgresql(CONTRACT, ENGINE_INDEPENDENT)


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.parametrize("group", range(len(SERVICE)))
def test_the_service_tests_pass_on_a_postgresql_backed_server(group: int) -> None:
    _run_on_postgresql(SERVICE[group], [], "not browser and not subprocess")
