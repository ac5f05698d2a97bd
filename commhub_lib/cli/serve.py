"""`commhub serve`: run the server until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import sys

import trio

from ..config import add_arguments, load_settings
from ..runtime.log_setup import setup_logging


def register(sub: argparse._SubParsersAction) -> None:
    """Add `serve` and its flags (one per setting)."""
    serve = sub.add_parser("serve", help="run the server", description="Run the CommHub server.")
    add_arguments(serve)
    serve.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the server until SIGINT/SIGTERM."""
    from ..runtime.server import StartupError, run_server

    try:
        settings = load_settings(vars(args))
    except ValueError as exc:
        print(f"commhub: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level, settings.log_format)
    try:
        trio.run(lambda: run_server(settings, handle_signals=True))
    except StartupError as exc:
        print(f"commhub: {exc}", file=sys.stderr)
        return 1
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
        reason = exc.strerror if isinstance(exc, OSError) else None  # a leaf of the OSError subgroup
        print(f"commhub: cannot listen on {settings.host}:{settings.port}: {reason or exc}", file=sys.stderr)
        return 1
    return 0
