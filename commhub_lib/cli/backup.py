"""`commhub backup FILE`: an online, consistent copy of the database file while the server runs.

SQLite's backup API copies one snapshot, a few hundred pages per step with a short pause between steps.
In WAL mode the read snapshot never blocks the server's writers. The copy is written next to FILE and
renamed into place only once it is complete and passes an integrity check, so FILE is never half a copy.
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


def cmd_backup(args: argparse.Namespace) -> int:
    """Copy the database to FILE through SQLite's backup API."""
    source = args.db or default_db()
    dest = Path(args.file)
    if not Path(source).exists():
        return fail(f"no database at {source}; give the server's database file with --db (or COMMHUB_DB)")
    if dest.exists() and not args.force:
        return fail(f"{dest} exists; choose a new file name or pass --force to replace it")
    if dest.resolve() == Path(source).resolve():
        return fail("the backup file must not be the database itself", 2)
    partial = dest.with_name(dest.name + ".partial")
    for leftover in (partial, Path(f"{partial}-wal"), Path(f"{partial}-shm"), Path(f"{partial}-journal")):
        leftover.unlink(missing_ok=True)
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
