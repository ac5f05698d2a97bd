"""`commhub a2a bind|show|unbind`: bind an alias to an external A2A agent, through a running server
(docs/a2a-client.md)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from .common import (
    EXIT_OK,
    add_group,
    connect,
    fail,
    json_flag,
    network_flag,
    print_fields,
    print_json,
    print_table,
    reports_errors,
    server_flags,
)
from .network import resolve_network

OUTBOX_COLUMNS = [("outbox_id", "id", None), ("kind", "kind", None), ("task_id", "task", 36),
                  ("status", "status", None), ("attempts", "tries", None), ("last_error", "error", 40),
                  ("updated_at", "updated", None)]
SHOWN = ("alias", "url", "token_set", "enabled", "created_by", "updated_at")


def _path(client: Any, args: argparse.Namespace) -> str:
    network_id = args.network or resolve_network(client)
    return f"/api/networks/{network_id}/aliases/{args.alias}/a2a-remote"


def _show(args: argparse.Namespace, result: dict[str, Any]) -> int:
    if args.json:
        print_json(result)
        return EXIT_OK
    print_fields(result, SHOWN)
    if result.get("outbox"):
        print()
        print_table(result["outbox"], OUTBOX_COLUMNS)
    return EXIT_OK


def _token(args: argparse.Namespace) -> str | None:
    """The agent's credential: from stdin or an environment variable, never the command line (`ps` shows it)."""
    if args.token_stdin:
        return sys.stdin.readline().strip() or None
    if args.token_env:
        return os.environ.get(args.token_env) or None
    return None


@reports_errors
def cmd_a2a_bind(args: argparse.Namespace) -> int:
    """Bind an alias to an A2A agent (or change the binding)."""
    token = _token(args)
    if args.token_env and token is None:
        return fail(f"--token-env {args.token_env}: that variable is not set")
    body: dict[str, Any] = {"url": args.agent_url, "enabled": not args.disabled}
    if token is not None:
        body["token"] = token
    with connect(args) as client:
        result = client.request("PUT", _path(client, args), json=body)
    return _show(args, result)


@reports_errors
def cmd_a2a_show(args: argparse.Namespace) -> int:
    """An alias's binding and its latest forwards."""
    with connect(args) as client:
        result = client.request("GET", _path(client, args))
    return _show(args, result)


@reports_errors
def cmd_a2a_unbind(args: argparse.Namespace) -> int:
    """Unbind an alias."""
    with connect(args) as client:
        result = client.request("DELETE", _path(client, args))
    if args.json:
        print_json(result)
    else:
        print(f"unbound {args.alias}")
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `a2a` group."""
    net = [server_flags(), json_flag(), network_flag()]
    actions = add_group(sub, "a2a", "bind an alias to an external A2A agent: its tasks go there (owner/admin)")
    p = actions.add_parser("bind", parents=net, help="bind an alias to an A2A agent (its Agent Card URL)")
    p.add_argument("alias")
    p.add_argument("agent_url", metavar="AGENT_URL",
                   help="the agent's Agent Card URL (…/.well-known/agent-card.json) or its JSON-RPC URL")
    secret = p.add_mutually_exclusive_group()
    secret.add_argument("--token-stdin", action="store_true", help="read the agent's bearer credential from stdin")
    secret.add_argument("--token-env", metavar="VAR", help="take the agent's bearer credential from this variable")
    p.add_argument("--disabled", action="store_true", help="bind, but forward nothing yet")
    p.set_defaults(func=cmd_a2a_bind)
    p = actions.add_parser("show", parents=net, help="an alias's binding and its latest forwards")
    p.add_argument("alias")
    p.set_defaults(func=cmd_a2a_show)
    p = actions.add_parser("unbind", parents=net, help="unbind an alias (nothing more is forwarded)")
    p.add_argument("alias")
    p.set_defaults(func=cmd_a2a_unbind)
