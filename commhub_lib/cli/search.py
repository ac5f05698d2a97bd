"""`commhub search QUERY`: full-text search over the tasks, messages and replies you may read (docs/search.md)."""

from __future__ import annotations

import argparse

from ..vocabulary import MESSAGE_KINDS
from .common import EXIT_OK, connect, json_flag, network_flag, print_json, print_table, reports_errors, server_flags

HIT_COLUMNS = [("kind", "kind", None), ("id", "id", None), ("from_name", "from", 16), ("to_name", "to", 16),
               ("snippet", "text", 60), ("created_at", "created", None)]


@reports_errors
def cmd_search(args: argparse.Namespace) -> int:
    """Matches, newest first, as a table (or --json)."""
    params = {"q": " ".join(args.query), "network_id": args.network, "kind": args.kind, "limit": args.limit}
    with connect(args) as client:
        result = client.request("GET", "/api/search", params=params)
    if args.json:
        print_json(result)
        return EXIT_OK
    print_table(result["results"], HIT_COLUMNS, "(nothing found)")
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    """Add search."""
    p = sub.add_parser("search", parents=[server_flags(), json_flag(), network_flag()],
                       help="full-text search over tasks, messages and replies",
                       description="Find tasks, messages, replies, notices and broadcasts by their words, newest "
                                   "first. Every word must occur; a word ending in * matches as a prefix "
                                   "(quote it for the shell: 'pars*').")
    p.add_argument("query", nargs="+", help="the words to find")
    p.add_argument("--kind", choices=MESSAGE_KINDS, help="only this kind (task: the tasks themselves)")
    p.add_argument("--limit", type=int, default=20, help="at most this many (default 20, at most 100)")
    p.set_defaults(func=cmd_search)
