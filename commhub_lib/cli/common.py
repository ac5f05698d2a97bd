"""What the CLI commands share: the server and output flags, error reporting and exit codes, tables."""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..client import ClientError, HubClient
from ..errors import CommhubError

EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2

Handler = Callable[[argparse.Namespace], int]


def server_flags() -> argparse.ArgumentParser:
    """A parent parser with --url/--token, for commands that talk to a running server."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("server")
    group.add_argument("--url", help="the hub's base URL (env COMMHUB_URL, default http://127.0.0.1:9200)")
    group.add_argument("--token", help="a utok_ (person) or ntok_ (agent) token (env COMMHUB_TOKEN)")
    return parent


def json_flag() -> argparse.ArgumentParser:
    """A parent parser with --json, for every command that prints data."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--json", action="store_true", help="print the server's JSON answer instead of text")
    return parent


def network_flag() -> argparse.ArgumentParser:
    """A parent parser with --network (a user token's default network when omitted)."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--network", metavar="ID", help="network id (default: the token's network, or your "
                                                        "default network)")
    return parent


def add_group(sub: argparse._SubParsersAction, name: str, help_text: str) -> argparse._SubParsersAction:
    """A command group (`commhub NAME ACTION`) whose actions are required subcommands."""
    parser = sub.add_parser(name, help=help_text, description=help_text)
    actions = parser.add_subparsers(dest=f"{name}_action", required=True, metavar="ACTION")
    return actions


def fail(message: str, code: int = EXIT_REFUSED) -> int:
    """Print `commhub: message` on stderr (terminal-safe: it may quote names) and return the exit code."""
    print(f"commhub: {safe_text(message)}", file=sys.stderr)
    return code


# The command that shows what a "not found" refers to: the hub's message names the REST route (the CLI speaks REST),
# a person at a terminal gets the command too.
CLI_NEXT_STEP = {
    "unknown_recipient": "commhub status",
    "task_not_found": "commhub tasks",
    "schedule_not_found": "commhub schedule list",
    "attachment_not_found": "commhub task TASK_ID (it lists a task's files)",
}


def reports_errors(func: Handler) -> Handler:
    """Turn the server's or the database's refusal into its message on stderr and exit code 1 (with the command
    that lists what a "not found" refers to)."""

    @functools.wraps(func)
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except ClientError as exc:
            if exc.code in CLI_NEXT_STEP:
                fail(f"{exc.message} ({exc.code})")
                return fail(f"see {CLI_NEXT_STEP[exc.code]}")
            return fail(f"{exc.message} ({exc.code})" if exc.code not in ("unreachable",) else exc.message)
        except CommhubError as exc:
            return fail(f"{exc.message} ({exc.code})")
        except KeyboardInterrupt:
            return fail("interrupted", 130)

    return wrapper


@contextmanager
def connect(args: argparse.Namespace) -> Iterator[HubClient]:
    """A HubClient from --url/--token (or the environment), closed at the end."""
    client = HubClient.from_args(args)
    try:
        yield client
    finally:
        client.close()


# What a terminal may act on instead of showing: C0 controls (ESC starts CSI/OSC sequences: retitle, clear, OSC 52
# writes the clipboard; CR and BS overwrite what is shown; LF forges a line), DEL, C1 controls (U+009B is a CSI and
# U+009D an OSC on their own), the Unicode line and paragraph separators, the bidi overrides and isolates (they
# reorder what is shown), and lone surrogates (JSON can carry them; printing one raises UnicodeEncodeError).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]")
_UNSAFE_MULTILINE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e"
                               "\u2066-\u2069\ud800-\udfff]")
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _json_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def safe_text(value: Any, *, multiline: bool = False) -> str:
    """Member-controlled text made safe to print on a terminal: every control character (ESC, C1, CR, BS, BEL…),
    line or paragraph separator, bidi override and lone surrogate shown as a visible `\\xHH`/`\\uHHHH` escape, so
    nothing can retitle or clear the terminal, write the clipboard, or forge a line. `multiline` keeps LF and TAB
    (a reply's body printed as a block); one record (a table cell, a line of `tail`) keeps neither."""
    text = value if isinstance(value, str) else str(value)
    pattern = _UNSAFE_MULTILINE if multiline else _UNSAFE
    return pattern.sub(_escape, text) if pattern.search(text) else text


def json_text(data: Any, indent: int | None = None) -> str:
    """JSON as printed by the CLI: exact JSON (it parses back to the same values), with every character a terminal
    could act on written as a `\\uXXXX` escape (json.dumps already escapes C0 controls; this adds DEL, C1, the
    separators, bidi controls and lone surrogates)."""
    text = json.dumps(data, indent=indent, ensure_ascii=False)
    return _JSON_UNSAFE.sub(_json_escape, text) if _JSON_UNSAFE.search(text) else text


def print_json(data: Any) -> None:
    """Pretty JSON on stdout (terminal-safe: see json_text)."""
    print(json_text(data, indent=2))


def cell(value: Any, width: int | None = None) -> str:
    """A table cell: one line (whitespace runs folded, controls escaped), shortened to `width` characters; a
    flag as yes/no (Python's True/False is no word a reader of `a2a show` or `webhook list` should meet)."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    text = "-" if value is None or value == "" else str(value)
    text = safe_text(" ".join(text.split()))
    if width and len(text) > width:
        text = text[: width - 1] + "…"
    return text


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str, int | None]],
                empty: str = "(none)") -> None:
    """Rows as an aligned table; columns are (key, heading, max width)."""
    if not rows:
        print(empty)
        return
    cells = [[cell(row.get(key), width) for key, _, width in columns] for row in rows]
    headings = [heading for _, heading, _ in columns]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headings)]
    print("  ".join(h.upper().ljust(w) for h, w in zip(headings, widths, strict=True)).rstrip())
    for line in cells:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())


def show_list(args: argparse.Namespace, result: dict[str, Any], key: str,
              columns: Sequence[tuple[str, str, int | None]], empty: str = "(none)") -> int:
    """Print a list answer: the whole JSON with --json, else `result[key]` as a table; exit code 0."""
    if args.json:
        print_json(result)
    else:
        print_table(result[key], columns, empty)
    return EXIT_OK


def print_fields(data: dict[str, Any], keys: Sequence[str] | None = None) -> None:
    """`key: value` lines."""
    keys = list(keys or data.keys())
    width = max((len(k) for k in keys), default=0)
    for key in keys:
        value = data.get(key)
        if isinstance(value, (dict, list)):
            value = json_text(value)
        print(f"{key.ljust(width)}  {cell(value)}")


def read_content(value: str) -> str:
    """A text argument; `-` reads it from stdin."""
    return sys.stdin.read() if value == "-" else value


def default_db() -> str:
    """The database file the file-level commands use: COMMHUB_DB, else ./commhub.db."""
    return os.environ.get("COMMHUB_DB") or "./commhub.db"


def write_private(path: Path, text: str) -> None:
    """Replace `path` with `text`, mode 0600 whatever the umask, durably: a temporary file written and fsynced,
    renamed over the old one, then the directory fsynced, so a process killed -9 at any instant leaves the old
    file or the new one (listen's cursor, the runner's state, the agents' config and session files)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def read_saved(path: Path, key: str) -> str | None:
    """A non-empty string saved under `key` in a JSON file written by write_private, if any."""
    try:
        value = json.loads(path.read_text()).get(key)
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) and value else None
