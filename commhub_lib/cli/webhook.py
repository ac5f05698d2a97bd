"""`commhub webhook …`: a network's webhooks and their delivery log, through a running server (docs/webhooks.md)."""

from __future__ import annotations

import argparse
from typing import Any

from .common import (
    EXIT_OK,
    add_group,
    connect,
    json_flag,
    network_flag,
    print_fields,
    print_json,
    reports_errors,
    server_flags,
    show_list,
)
from .network import resolve_network

WEBHOOK_COLUMNS = [("webhook_id", "id", None), ("url", "url", 50), ("enabled", "enabled", None),
                   ("events", "events", 30), ("aliases", "aliases", 20), ("disabled_reason", "disabled", 40)]
DELIVERY_COLUMNS = [("delivery_id", "id", None), ("event_id", "event id", None), ("event", "event", None),
                    ("alias", "alias", 16), ("status", "status", None), ("attempts", "tries", None),
                    ("last_status", "http", None), ("last_error", "error", 40), ("updated_at", "updated", None)]


def _split(value: str | None) -> list[str] | None:
    """A comma-separated option as a list (None: not given; "" : every one)."""
    if value is None:
        return None
    return [part.strip() for part in value.split(",") if part.strip()]


def _path(client: Any, args: argparse.Namespace, tail: str = "") -> str:
    network_id = args.network or resolve_network(client)
    return f"/api/networks/{network_id}/webhooks{tail}"


def _show(args: argparse.Namespace, result: dict[str, Any], text: str | None = None) -> int:
    if args.json:
        print_json(result)
    elif text is not None:
        print(text)
    else:
        print_fields({k: v for k, v in result.items() if k != "ok"})
    return EXIT_OK


@reports_errors
def cmd_webhook_list(args: argparse.Namespace) -> int:
    """A network's webhooks."""
    with connect(args) as client:
        result = client.request("GET", _path(client, args))
    return show_list(args, result, "webhooks", WEBHOOK_COLUMNS)


@reports_errors
def cmd_webhook_create(args: argparse.Namespace) -> int:
    """Register a webhook; its secret is printed this once."""
    body: dict[str, Any] = {"url": args.target, "events": _split(args.events) or [],
                            "aliases": _split(args.aliases) or [], "description": args.description}
    with connect(args) as client:
        result = client.request("POST", _path(client, args), json=body)
    return _show(args, result)


@reports_errors
def cmd_webhook_update(args: argparse.Namespace) -> int:
    """Change a webhook's URL, filter or description; --enable / --disable."""
    body: dict[str, Any] = {"url": args.target_url, "events": _split(args.events), "aliases": _split(args.aliases),
                            "description": args.description, "enabled": args.enabled}
    with connect(args) as client:
        result = client.request("PATCH", _path(client, args, f"/{args.webhook_id}"),
                                json={k: v for k, v in body.items() if v is not None})
    return _show(args, result)


@reports_errors
def cmd_webhook_delete(args: argparse.Namespace) -> int:
    """Remove a webhook and its delivery log."""
    with connect(args) as client:
        result = client.request("DELETE", _path(client, args, f"/{args.webhook_id}"))
    return _show(args, result, f"deleted webhook {args.webhook_id}")


@reports_errors
def cmd_webhook_deliveries(args: argparse.Namespace) -> int:
    """A webhook's delivery log, newest first."""
    params = {"limit": args.limit, "before": args.before}
    with connect(args) as client:
        result = client.request("GET", _path(client, args, f"/{args.webhook_id}/deliveries"),
                                params={k: v for k, v in params.items() if v is not None})
    return show_list(args, result, "deliveries", DELIVERY_COLUMNS)


@reports_errors
def cmd_webhook_redeliver(args: argparse.Namespace) -> int:
    """Send one logged delivery again."""
    with connect(args) as client:
        result = client.request("POST", _path(client, args, f"/{args.webhook_id}/deliveries/{args.delivery_id}"
                                                             "/redeliver"))
    return _show(args, result, f"delivery {args.delivery_id} of {args.webhook_id} queued again")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `webhook` group."""
    net = [server_flags(), json_flag(), network_flag()]
    actions = add_group(sub, "webhook", "POST a network's events to a URL (owner/admin)")
    p = actions.add_parser("list", parents=net, help="a network's webhooks")
    p.set_defaults(func=cmd_webhook_list)
    p = actions.add_parser("create", parents=net, help="register a webhook (its secret is printed once)")
    p.add_argument("target", metavar="URL", help="https://… (http:// to loopback or private addresses only by "
                                                 "the server's webhook_targets setting)")
    p.add_argument("--events", help="comma-separated event names (default: every event)")
    p.add_argument("--aliases", help="comma-separated aliases (default: every alias)")
    p.add_argument("--description", default="")
    p.set_defaults(func=cmd_webhook_create)
    p = actions.add_parser("update", parents=net, help="change a webhook, or --enable / --disable it")
    p.add_argument("webhook_id")
    p.add_argument("--target", dest="target_url", metavar="URL", help="a new URL to POST to")
    p.add_argument("--events", help="comma-separated event names ('' = every event)")
    p.add_argument("--aliases", help="comma-separated aliases ('' = every alias)")
    p.add_argument("--description")
    state = p.add_mutually_exclusive_group()
    state.add_argument("--enable", dest="enabled", action="store_const", const=True, default=None)
    state.add_argument("--disable", dest="enabled", action="store_const", const=False)
    p.set_defaults(func=cmd_webhook_update)
    p = actions.add_parser("delete", parents=net, help="remove a webhook and its delivery log")
    p.add_argument("webhook_id")
    p.set_defaults(func=cmd_webhook_delete)
    p = actions.add_parser("deliveries", parents=net, help="a webhook's delivery log (status codes, errors)")
    p.add_argument("webhook_id")
    p.add_argument("--limit", type=int)
    p.add_argument("--before", type=int, metavar="DELIVERY_ID", help="older than this delivery (paging)")
    p.set_defaults(func=cmd_webhook_deliveries)
    p = actions.add_parser("redeliver", parents=net, help="send one delivery again")
    p.add_argument("webhook_id")
    p.add_argument("delivery_id", type=int)
    p.set_defaults(func=cmd_webhook_redeliver)
