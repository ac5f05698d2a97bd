"""What tests/conftest.py gives every test so that tests can run in parallel workers (docs/testing.md)."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import EXTRA_WORKERS, pytest_xdist_auto_num_workers

from commhub_lib.cli.run.state import default_state_dir

HOMES: list[Path] = []


@pytest.mark.parametrize("n", [1, 2])
def test_each_test_has_a_home_and_temp_dir_of_its_own(own_home: Path, n: int) -> None:
    assert Path.home() == own_home and os.environ["HOME"] == str(own_home)
    for var in ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME", "TMPDIR"):
        assert Path(os.environ[var]).is_dir() and Path(os.environ[var]).is_relative_to(own_home), var
    # A CLI's default state file lands in it, not in the developer's ~ nor the home of the test beside it.
    assert default_state_dir("worker").is_relative_to(own_home)
    HOMES.append(own_home)
    assert len(set(HOMES)) == len(HOMES)  # the second parametrized run got another one


def test_no_commhub_setting_of_the_shell_reaches_a_test() -> None:
    # The harness's own (where tests/pg_cluster.py finds PostgreSQL) are kept.
    assert not [v for v in os.environ if v.startswith("COMMHUB_") and not v.startswith("COMMHUB_PG_")]


def _config(source: pytest.Config.ArgsSource, *args: str) -> pytest.Config:
    return SimpleNamespace(args_source=source, args=list(args))  # type: ignore[return-value]


def test_auto_workers_for_the_suite_or_a_directory_none_for_named_files() -> None:
    tests = Path(__file__).parent
    workers = min(8, len(os.sched_getaffinity(0)) + EXTRA_WORKERS)
    assert pytest_xdist_auto_num_workers(_config(pytest.Config.ArgsSource.TESTPATHS, str(tests))) == workers
    assert pytest_xdist_auto_num_workers(_config(pytest.Config.ArgsSource.ARGS, str(tests))) == workers
    assert pytest_xdist_auto_num_workers(_config(pytest.Config.ArgsSource.ARGS, str(tests / "test_db.py"))) == 0
    assert pytest_xdist_auto_num_workers(_config(pytest.Config.ArgsSource.ARGS, f"{tests}/test_db.py::test_x",
                                                 str(tests / "test_sse.py"))) == 0
