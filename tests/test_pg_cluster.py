"""The throwaway PostgreSQL cluster of tests/pg_cluster.py: it starts, its databases are isolated, it stops clean."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pg_cluster as pgc
import pytest

pytestmark = pytest.mark.subprocess


def test_cluster_listens_on_its_socket_only(pg_cluster: pgc.Cluster) -> None:
    """The session cluster answers over its unix socket, with no TCP listener and durability off."""
    assert pg_cluster.psql("SELECT 1") == "1"
    assert pg_cluster.psql("SHOW listen_addresses") == ""
    assert pg_cluster.psql("SHOW fsync") == "off"
    assert pg_cluster.psql("SHOW synchronous_commit") == "off"
    assert list(pg_cluster.socket_dir.glob(".s.PGSQL.*"))


def test_fresh_databases_are_isolated(pg_cluster: pgc.Cluster) -> None:
    """Two fresh databases: a table made in one is not in the other; each URL connects as is (psycopg)."""
    psycopg = pytest.importorskip("psycopg")
    first, second = pg_cluster.fresh_database(), pg_cluster.fresh_database()
    assert first != second
    with psycopg.connect(first, autocommit=True) as con:
        con.execute("CREATE TABLE t (x int)")
        con.execute("INSERT INTO t VALUES (1)")
    with psycopg.connect(second, autocommit=True) as con:
        row = con.execute("SELECT count(*) FROM pg_tables WHERE tablename = 't'").fetchone()
        assert row is not None and row[0] == 0
    with psycopg.connect(first) as con:
        row = con.execute("SELECT x FROM t").fetchone()
        assert row == (1,)


def test_pg_url_fixture_is_empty(pg_url: str) -> None:
    """The per-test database holds no table of its own."""
    psycopg = pytest.importorskip("psycopg")
    with psycopg.connect(pg_url) as con:
        row = con.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()
        assert row == (0,)


def test_module_fresh_database_uses_current_cluster(pg_cluster: pgc.Cluster) -> None:
    """tests/pg_cluster.fresh_database() is the session cluster's."""
    assert pgc.current() is pg_cluster
    url = pgc.fresh_database()
    assert url.startswith("postgresql:///") and str(pg_cluster.socket_dir) in url


@pytest.fixture
def base() -> Iterator[Path]:
    """A directory the cluster's user can enter (pytest's tmp_path is private to root), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="commhub-pgtest-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_stop_leaves_no_process_and_no_files(pg_cluster: pgc.Cluster, base: Path) -> None:
    """A second cluster: started, then stopped: its postmaster is gone and its directory removed."""
    other = pgc.Cluster(pg_cluster.bindir, Path(tempfile.mkdtemp(prefix=pgc.PREFIX, dir=base)),
                           pg_cluster.user)
    other.start()
    pid = other.postmaster_pid()
    assert pid is not None and pgc.pid_alive(pid)
    assert other.psql("SELECT 2") == "2"
    other.stop()
    assert not pgc.pid_alive(pid)
    assert not other.root.exists()


def test_killed_run_is_reaped_by_the_next_start(pg_cluster: pgc.Cluster, base: Path) -> None:
    """A test process killed with SIGKILL leaves its cluster running; the next start stops and removes it."""
    tests_dir = Path(__file__).parent
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(tests_dir)!r})
        import pg_cluster as _pgc
        c = _pgc.start_cluster({str(base)!r})
        print(c.root, c.postmaster_pid(), flush=True)
        os.kill(os.getpid(), 9)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == -9, out.stderr
    root, pid = out.stdout.split()
    assert pgc.pid_alive(int(pid)) and Path(root).exists()
    assert pgc.reap_stale(str(base)) == 1
    assert not pgc.pid_alive(int(pid))
    assert not Path(root).exists()


def test_missing_postgres_skips_or_fails_under_ci(tmp_path: Path) -> None:
    """Without PostgreSQL the fixture skips with the reason; with CI=true the same run fails loudly."""
    tests_dir = Path(__file__).parent
    (tmp_path / "conftest.py").write_text(textwrap.dedent(f"""
        import sys
        sys.path[:0] = [{str(tests_dir)!r}, {str(tests_dir.parent)!r}]
        import pg_cluster as _pgc
        def _missing():
            raise _pgc.PostgresUnavailable("not installed (test)")
        _pgc.find_bindir = _missing
        from tests.conftest import pg_cluster  # the real fixture, with the binaries "missing"
    """))
    (tmp_path / "test_x.py").write_text("def test_x(pg_cluster):\n    pass\n")
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    args = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs", "--rootdir", str(tmp_path),
            "-o", "addopts=", "-p", "no:xdist", str(tmp_path / "test_x.py")]
    skipped = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert skipped.returncode == 0 and "1 skipped" in skipped.stdout, skipped.stdout + skipped.stderr
    assert "not installed (test)" in skipped.stdout
    failed = subprocess.run(args, cwd=tmp_path, env={**env, "CI": "true"}, capture_output=True, text=True,
                            timeout=120)
    assert failed.returncode == 1 and "1 error" in failed.stdout, failed.stdout + failed.stderr
    assert "CI=true but PostgreSQL is unavailable" in failed.stdout
