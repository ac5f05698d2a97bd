"""A throwaway PostgreSQL cluster for the tests: initdb + pg_ctl from the installed PostgreSQL, in a temp dir.

One cluster per test process (the `pg_cluster` session fixture in tests/conftest.py; under pytest-xdist every
worker is its own process, so every worker gets its own cluster and nothing is shared between them). It listens
on a unix socket only (no TCP), in a directory of its own, with trust authentication on that socket, and
fsync/synchronous_commit off: the data is thrown away, so durability only costs time.

`fresh_database()` returns the URL of a new empty database (CREATE DATABASE from template1: a file copy).
The URL has the socket directory as `host=` and the superuser as `user=`, so libpq (psycopg, psql) connects as is.

PostgreSQL refuses to run as root; as root (CI) the cluster runs as the `postgres` user that Debian's package
creates (or `nobody`): every file of it lives in a directory owned by that user, and commands run with
`subprocess.run(user=...)`. A cluster left behind by a killed test run (its owning pid is gone) is stopped and
removed by the next start.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

PREFIX = "commhub-pg-"
SUPERUSER = "postgres"
# Short base directory: a unix socket path is limited to ~107 bytes, and per-test TMPDIRs can be long.
DEFAULT_BASE = "/tmp"

_current: Cluster | None = None


class PostgresUnavailable(Exception):
    """PostgreSQL's server binaries (or a user to run them as) are not on this machine."""


def find_bindir() -> Path:
    """The directory holding initdb/pg_ctl/postgres: $COMMHUB_PG_BINDIR, `pg_config --bindir`, the newest
    /usr/lib/postgresql/*/bin (Debian), or PATH. Raises PostgresUnavailable when none has them."""
    candidates: list[str] = []
    if os.environ.get("COMMHUB_PG_BINDIR"):
        candidates.append(os.environ["COMMHUB_PG_BINDIR"])
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10)
            if out.returncode == 0:
                candidates.append(out.stdout.strip())

    def version(path: str) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", path)) or (0,)

    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(str(Path(initdb).parent))
    for bindir in candidates:
        if all((Path(bindir) / name).is_file() for name in ("initdb", "pg_ctl", "postgres", "psql")):
            return Path(bindir)
    raise PostgresUnavailable("PostgreSQL server binaries (initdb, pg_ctl, postgres, psql) not found: install "
                              "Debian's postgresql package (or set COMMHUB_PG_BINDIR)")


def _run_as() -> str | None:
    """The user to run the server as: None when we are not root, else `postgres` (or `nobody`)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise PostgresUnavailable("running as root and no 'postgres' (or 'nobody') user to run PostgreSQL as")


def pid_alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie (an orphaned postmaster may wait to be reaped by init)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        # /proc/<pid>/stat: "pid (comm) S ..." -- the state letter follows the last ')'.
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def _wait_gone(pid: int, seconds: float) -> bool:
    """Poll until `pid` has exited (True) or `seconds` passed (False)."""
    deadline = time.monotonic() + seconds
    while pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@dataclass
class Cluster:
    """One running PostgreSQL cluster in `root` (data/, sock/, log); `stop()` kills and removes it."""

    bindir: Path
    root: Path
    user: str | None
    _names: itertools.count = field(default_factory=itertools.count)

    @property
    def data(self) -> Path:
        """The data directory (PGDATA)."""
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        """The directory holding the server's unix socket."""
        return self.root / "sock"

    @property
    def log(self) -> Path:
        """The server's log file."""
        return self.root / "postgres.log"

    def url(self, database: str = "postgres") -> str:
        """A libpq URL for `database` over the unix socket, as the superuser."""
        return f"postgresql:///{database}?host={self.socket_dir}&user={SUPERUSER}"

    def _cmd(self, args: list[str], check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run a PostgreSQL program as the cluster's user, from inside the cluster dir (initdb needs a cwd it
        can enter)."""
        program = [str(self.bindir / args[0]), *args[1:]]
        result = subprocess.run(program, cwd=self.root, user=self.user, capture_output=True, text=True,
                                timeout=timeout, env={**os.environ, "LC_ALL": "C", "PGTZ": "UTC"})
        if check and result.returncode != 0:
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(args[:2])} failed ({result.returncode}): {result.stderr.strip()}\n{tail}")
        return result

    def start(self) -> None:
        """initdb and start the server; returns when it accepts connections."""
        self.socket_dir.mkdir()
        if self.user:
            info = pwd.getpwnam(self.user)
            for path in (self.root, self.socket_dir):
                os.chown(path, info.pw_uid, info.pw_gid)
        self._cmd(["initdb", "-D", str(self.data), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8", "--locale=C",
                   "--no-sync", "--no-instructions"])
        # Unix socket only, trust on it; the tests' data is disposable, so no durability.
        (self.data / "pg_hba.conf").write_text("local all all trust\n")
        settings = {
            "listen_addresses": "''", "unix_socket_directories": f"'{self.socket_dir}'",
            "fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
            "max_connections": "300", "shared_buffers": "32MB", "timezone": "'UTC'",
            "log_min_messages": "warning",
        }
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("\n# tests/pg_cluster.py\n")
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
        self._cmd(["pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data), "-l", str(self.log)])

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL through psql as the superuser; its unaligned, tuples-only output."""
        result = self._cmd(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", str(self.socket_dir),
                            "-U", SUPERUSER, "-d", database, "-c", sql])
        return result.stdout.strip()

    def fresh_database(self, template: str = "template1") -> str:
        """Create a new empty database (a copy of `template`) and return its URL."""
        name = f"t{os.getpid()}_{next(self._names)}"
        self.psql(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drop a database made by fresh_database (closing its connections first)."""
        name = url.split("///", 1)[1].split("?", 1)[0]
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def postmaster_pid(self) -> int | None:
        """The server's pid from postmaster.pid, or None when it is not running."""
        try:
            return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def stop_server(self, mode: str = "fast") -> None:
        """Stop the server but keep the cluster (`pg_ctl stop -m fast|immediate|smart`); `start_server()` brings
        it back with its data. Returns once the postmaster is gone: nothing answers on the socket any more."""
        pid = self.postmaster_pid()
        self._cmd(["pg_ctl", "stop", "-m", mode, "-w", "-t", "60", "-D", str(self.data)])
        if pid is not None and not _wait_gone(pid, 30):
            raise RuntimeError(f"PostgreSQL (pid {pid}) still running after pg_ctl stop -m {mode}")

    def start_server(self) -> None:
        """Start a server stopped by `stop_server()`; returns when it accepts connections (after any crash
        recovery an immediate stop makes it do)."""
        self._cmd(["pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data), "-l", str(self.log)])

    def restart_server(self, mode: str = "fast") -> None:
        """Stop and start the server (every connection to it is cut)."""
        self.stop_server(mode)
        self.start_server()

    def stop(self) -> None:
        """Stop the server at once (`pg_ctl stop -m immediate`) and remove every file of the cluster."""
        pid = self.postmaster_pid()
        if pid is not None:
            self._cmd(["pg_ctl", "stop", "-m", "immediate", "-w", "-D", str(self.data)], check=False)
            # pg_ctl returns once postmaster.pid is gone, a moment before the process itself is.
            if not _wait_gone(pid, 10):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                _wait_gone(pid, 10)
        shutil.rmtree(self.root, ignore_errors=True)


def reap_stale(base: str = DEFAULT_BASE) -> int:
    """Stop and remove clusters whose owning test process is gone (a run killed with SIGKILL); their count."""
    reaped = 0
    for root in glob.glob(os.path.join(base, PREFIX + "*")):
        try:
            owner = int((Path(root) / "owner.pid").read_text())
        except (OSError, ValueError):
            continue
        if pid_alive(owner):
            continue
        with contextlib.suppress(PostgresUnavailable, OSError, RuntimeError, subprocess.SubprocessError):
            Cluster(find_bindir(), Path(root), _run_as()).stop()
        shutil.rmtree(root, ignore_errors=True)
        reaped += 1
    return reaped


def start_cluster(base: str | None = None) -> Cluster:
    """Start a new cluster in a fresh temp dir under `base` (default /tmp); it becomes `current()`.
    Raises PostgresUnavailable when PostgreSQL is not installed."""
    global _current
    bindir = find_bindir()
    user = _run_as()
    base = base or os.environ.get("COMMHUB_PG_TMP") or (DEFAULT_BASE if os.path.isdir(DEFAULT_BASE) else None)
    reap_stale(base or tempfile.gettempdir())
    root = Path(tempfile.mkdtemp(prefix=PREFIX, dir=base))
    (root / "owner.pid").write_text(str(os.getpid()))
    cluster = Cluster(bindir, root, user)
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        raise
    _current = cluster
    return cluster


def current() -> Cluster:
    """The cluster started by this process (the `pg_cluster` fixture); RuntimeError when there is none."""
    if _current is None:
        raise RuntimeError("no PostgreSQL test cluster: use the pg_cluster (or pg_url) fixture")
    return _current


def stop_cluster(cluster: Cluster) -> None:
    """Stop and remove `cluster`; forget it if it was `current()`."""
    global _current
    cluster.stop()
    if _current is cluster:
        _current = None


def fresh_database(template: str = "template1") -> str:
    """URL of a new empty database in this process's test cluster."""
    return current().fresh_database(template)
