"""Command line: `python commhub.py serve` (more subcommands in the README)."""

from __future__ import annotations

import argparse
import logging
import sys

import trio

from .config import add_arguments, load_settings


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree of every subcommand."""
    parser = argparse.ArgumentParser(prog="commhub", description="CommHub: a hub for AI coding agents.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the server")
    add_arguments(serve)
    return parser


def setup_logging(level: str) -> None:
    """One line per record to stderr (journald adds its own timestamps, but plain runs need them)."""
    logging.basicConfig(stream=sys.stderr, level=level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the server until SIGINT/SIGTERM."""
    from .server import run_server

    try:
        settings = load_settings(vars(args))
    except ValueError as exc:
        print(f"commhub: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level)
    try:
        trio.run(lambda: run_server(settings, handle_signals=True))
    except OSError as exc:
        print(f"commhub: cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except BaseExceptionGroup as group:
        # Hypercorn reports a failed bind from inside its nursery.
        bind_errors = group.subgroup(lambda e: isinstance(e, OSError))
        if bind_errors is None:
            raise
        exc = bind_errors.exceptions[0]
        while isinstance(exc, BaseExceptionGroup):  # nested nurseries nest the groups
            exc = exc.exceptions[0]
        print(f"commhub: cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 1 server said no, 2 usage)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    if args.command == "serve":
        return cmd_serve(args)
    parser.print_usage(sys.stderr)
    return 2
