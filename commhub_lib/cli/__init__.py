"""Command line: `python commhub.py <command>` (also installed as `commhub`).

Each command group lives in its own module of this package and exposes `register(subparsers)`, which adds its
parser(s) and sets `func` (called with the parsed namespace, returning the exit code). Exit codes:
0 ok, 1 the server (or the database) said no, 2 usage.
"""

from __future__ import annotations

import argparse
import os
import sys
from types import ModuleType

from .. import __version__
from . import (
    a2a,
    admin,
    attachment,
    backup,
    connect,
    listen,
    messaging,
    migrate,
    network,
    schedule,
    search,
    serve,
    tail,
    webhook,
)
from . import run as run_cmd

# Command modules, in the order `commhub --help` lists them. A new command group: add its module here.
COMMANDS: tuple[ModuleType, ...] = (serve, admin, network, webhook, a2a, messaging, tail, listen, run_cmd, connect,
                                    backup, search, schedule, attachment, migrate)


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree of every subcommand."""
    parser = argparse.ArgumentParser(prog="commhub", description="CommHub: a hub for AI coding agents.")
    parser.add_argument("--version", action="version", version=f"commhub {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 1 server said no, 2 usage)."""
    try:
        return _main(argv)
    except BrokenPipeError:
        # The reader of stdout went away (`commhub tasks | head -3`): stop quietly, as cat and ls do. stdout is
        # pointed at /dev/null so that the interpreter's last flush at exit does not complain about the pipe again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE


# What a shell reports for a process a closed pipe ended (128 + SIGPIPE): `set -o pipefail` sees the same as for cat.
EXIT_BROKEN_PIPE = 141


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_usage(sys.stderr)
        return 2
    return int(func(args))
