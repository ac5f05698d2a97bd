"""`commhub backup FILE`: an online, consistent copy of the database file while the server runs.

SQLite's backup API copies one snapshot, a few hundred pages per step with a short pause between steps.
In WAL mode the read snapshot never blocks the server's writers. The copy is written next to FILE and
renamed into place only once it is complete and passes an integrity check, so FILE is never half a copy; it is
readable by its owner only (0600). A FILE that is (through symlinks too) the database, its -wal, -shm or -journal
file or the server's lock file is refused before anything is written or deleted.
Restore: stop the service, copy the backup over the database file, delete its -wal and -shm files, start.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import apsw

from ..db import backup_to
from .common import EXIT_OK, default_db, fail, json_flag, print_json


def seal_copy(path: str) -> str:
    """Make a finished copy one self-contained file (rollback journal, no -wal/-shm beside it; the server turns
    WAL back on when it opens it) and return SQLite's quick_check of it ("ok" when sound)."""
    con = apsw.Connection(path)
    try:
        con.pragma("journal_mode", "delete")
        return str(con.pragma("quick_check"))
    finally:
        con.close()


def live_files(db_path: str) -> dict[str, str]:
    """The files the server writes for a database (real paths, symlinks resolved) -> what each one is."""
    found: dict[str, str] = {}
    for base in {os.path.abspath(db_path), os.path.realpath(db_path)}:
        for suffix, what in (("", "the database itself"), ("-wal", "the database's -wal file"),
                             ("-shm", "the database's -shm file"), ("-journal", "the database's -journal file"),
                             (".lock", "the server's lock file")):
            found[os.path.realpath(base + suffix)] = what
    return found


def live_file_hit(db_path: str, targets: tuple[Path, ...]) -> str | None:
    """Why writing (or deleting) one of `targets` would touch a file of the live database, or None."""
    live = live_files(db_path)
    for target in targets:
        what = live.get(os.path.realpath(target))
        if what is not None:
            return f"{target} is {what}" if target == targets[0] else f"{target} (written on the way) is {what}"
    return None


def create_private(path: str) -> None:
    """Create an empty file that only its owner may read and write (0600 whatever the umask)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def cmd_backup(args: argparse.Namespace) -> int:
    """Copy the database to FILE through SQLite's backup API."""
    source = args.db or default_db()
    dest = Path(args.file)
    if not Path(source).exists():
        return fail(f"no database at {source}; give the server's database file with --db (or COMMHUB_DB)")
    partial = dest.with_name(dest.name + ".partial")
    written = (dest, partial, Path(f"{partial}-wal"), Path(f"{partial}-shm"), Path(f"{partial}-journal"))
    if clash := live_file_hit(source, written):
        return fail(f"refusing to write the backup to {dest}: {clash}; a backup must never touch the live database "
                    "(the server would lose or corrupt data): choose a file elsewhere", 2)
    if dest.is_dir():
        return fail(f"{dest} is a directory; give the file name of the copy (e.g. {dest}/commhub-backup.db)", 2)
    if dest.exists() and not args.force:
        return fail(f"{dest} exists; choose a new file name or pass --force to replace it")
    for leftover in written[1:]:
        leftover.unlink(missing_ok=True)
    try:
        create_private(str(partial))  # 0600 whatever the umask: the copy holds every message and token hash
    except OSError as exc:
        return fail(f"cannot create {partial}: {exc.strerror or exc}")
    started = time.monotonic()
    try:
        pages = backup_to(source, str(partial), pages_per_step=args.pages_per_step, pause_seconds=args.pause)
        verdict = seal_copy(str(partial))
    except apsw.Error as exc:
        partial.unlink(missing_ok=True)
        return fail(f"backup of {source} failed: {exc}")
    if verdict != "ok":
        return fail(f"the copy failed its integrity check ({verdict}); it is left at {partial}")
    os.replace(partial, dest)
    result = {"ok": True, "source": source, "file": str(dest), "pages": pages, "bytes": dest.stat().st_size,
              "seconds": round(time.monotonic() - started, 3), "integrity": verdict}
    if args.json:
        print_json(result)
    else:
        print(f"backed up {source} to {dest}: {result['bytes']} bytes, {pages} pages in {result['seconds']} s "
              f"(integrity {verdict})")
    print(f"restore: stop the service, copy {dest} over the database file, delete its -wal and -shm files, "
          "start the service", file=sys.stderr)
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    """Add `backup`."""
    p = sub.add_parser("backup", parents=[json_flag()], help="online, consistent copy of the database file",
                       description="Copy the database through SQLite's backup API while the server runs (run it on "
                                   "the server's machine, as a user that can read the database file). The copy is "
                                   "checked (quick_check) and only then moved to FILE.")
    p.add_argument("file", help="where to write the copy")
    p.add_argument("--db", help="the database file (env COMMHUB_DB, default ./commhub.db)")
    p.add_argument("--force", action="store_true", help="replace FILE if it exists")
    p.add_argument("--pages-per-step", type=int, default=256, help="pages copied per step (default 256)")
    p.add_argument("--pause", type=float, default=0.005, metavar="SECONDS",
                   help="pause between steps, leaving the disk to the server (default 0.005)")
    p.set_defaults(func=cmd_backup)
