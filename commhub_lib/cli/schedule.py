"""`commhub schedule …`: tasks sent to an alias once, every N seconds or by cron, through a running server
(docs/schedules.md)."""

from __future__ import annotations

import argparse
from typing import Any

from ..vocabulary import MISSED_POLICIES, PRIORITIES
from .common import (
    EXIT_OK,
    add_group,
    connect,
    json_flag,
    network_flag,
    print_fields,
    print_json,
    read_content,
    reports_errors,
    server_flags,
    show_list,
)

SCHEDULE_COLUMNS = [("schedule_id", "id", None), ("to_name", "to", 16), ("timing", "when", 34),
                    ("state", "state", None), ("next_run_at", "next run (UTC)", None),
                    ("last_run_at", "last run (UTC)", None), ("last_status", "last status", None),
                    ("skip_count", "skips", None), ("content", "content", 30)]
SHOWN_FIELDS = ["schedule_id", "network_id", "from_name", "to_name", "title", "content", "priority", "timing",
                "missed", "state", "next_run_at", "last_run_at", "last_task_id", "last_status", "run_count",
                "skip_count", "last_skipped_at", "last_skip_reason", "created_at"]


def timing(s: dict[str, Any]) -> str:
    """A schedule's timing in words: 'once at …', 'every 60 s', 'cron 0 9 * * 1-5 (Europe/Berlin)'."""
    if s["kind"] == "every":
        return f"every {s['every_seconds']} s"
    if s["kind"] == "cron":
        return f"cron {s['cron']} ({s['tz']})"
    return f"once at {s['run_at']}"


def _params(args: argparse.Namespace) -> dict[str, str]:
    return {"network_id": args.network} if args.network else {}


def _show(args: argparse.Namespace, result: dict[str, Any], line: str | None = None) -> int:
    """The whole answer with --json; else a line, or the schedule's fields."""
    if args.json:
        print_json(result)
    elif line is not None:
        print(line)
    else:
        schedule = result["schedule"]
        print_fields({**schedule, "timing": timing(schedule)}, SHOWN_FIELDS)
    return EXIT_OK


@reports_errors
def cmd_schedule_add(args: argparse.Namespace) -> int:
    """Create a schedule: --at, --every or --cron (exactly one)."""
    body: dict[str, Any] = {"to": args.to, "content": read_content(args.content), "priority": args.priority,
                            "title": args.title, "at": args.at, "every_seconds": args.every, "cron": args.cron,
                            "tz": args.tz, "missed": args.missed, "network_id": args.network}
    with connect(args) as client:
        result = client.request("POST", "/api/schedules", json={k: v for k, v in body.items() if v is not None})
    return _show(args, result)


@reports_errors
def cmd_schedule_list(args: argparse.Namespace) -> int:
    """The schedules of your networks (or of --network), newest first."""
    params: dict[str, Any] = {**_params(args), **({"limit": args.limit} if args.limit else {})}
    with connect(args) as client:
        result = client.request("GET", "/api/schedules", params=params)
    for s in result["schedules"]:
        s["timing"] = timing(s)
    if args.json:
        for s in result["schedules"]:
            del s["timing"]
    return show_list(args, result, "schedules", SCHEDULE_COLUMNS)


@reports_errors
def cmd_schedule_show(args: argparse.Namespace) -> int:
    """One schedule."""
    with connect(args) as client:
        result = client.request("GET", f"/api/schedules/{args.schedule_id}", params=_params(args))
    return _show(args, result)


def _action(name: str) -> Any:
    @reports_errors
    def command(args: argparse.Namespace) -> int:
        with connect(args) as client:
            result = client.request("POST", f"/api/schedules/{args.schedule_id}/{name}", params=_params(args))
        if name != "run" or args.json:
            return _show(args, result)
        line = (f"ran: task {result['task_id']}" if result["ran"] else f"skipped: {result['skipped_reason']}")
        return _show(args, result, line)
    command.__doc__ = f"{name.capitalize()} a schedule."
    return command


@reports_errors
def cmd_schedule_rm(args: argparse.Namespace) -> int:
    """Delete a schedule (the tasks it sent stay)."""
    with connect(args) as client:
        result = client.request("DELETE", f"/api/schedules/{args.schedule_id}", params=_params(args))
    return _show(args, result, f"deleted schedule {args.schedule_id}")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `schedule` group."""
    net = [server_flags(), json_flag(), network_flag()]
    actions = add_group(sub, "schedule", "tasks sent to an alias once, every N seconds or by cron")
    p = actions.add_parser("add", parents=net, help="schedule a task: --at, --every or --cron")
    p.add_argument("content", help="the task's text ('-' reads it from stdin)")
    p.add_argument("--to", required=True, metavar="ALIAS", help="the agent that gets each run's task")
    when = p.add_mutually_exclusive_group(required=True)
    when.add_argument("--at", metavar="TIME", help="once: ISO 8601 ('2026-12-24T09:00', local to --tz without an "
                                                   "offset) or seconds from now")
    when.add_argument("--every", type=int, metavar="SECONDS", help="every this many seconds (at least 10)")
    when.add_argument("--cron", metavar="EXPR", help="a 5-field cron expression, e.g. '0 9 * * 1-5'")
    p.add_argument("--tz", help="IANA time zone for --cron and a local --at (default UTC)")
    p.add_argument("--missed", choices=MISSED_POLICIES,
                   help="a run missed while the hub was down: run it once at start (default) or skip it")
    p.add_argument("--title")
    p.add_argument("--priority", choices=PRIORITIES)
    p.set_defaults(func=cmd_schedule_add)
    p = actions.add_parser("list", parents=net, help="schedules with their next and last runs")
    p.add_argument("--limit", type=int)
    p.set_defaults(func=cmd_schedule_list)
    p = actions.add_parser("show", parents=net, help="one schedule")
    p.add_argument("schedule_id")
    p.set_defaults(func=cmd_schedule_show)
    for name, help_text in (("pause", "stop a schedule's runs until resumed"),
                            ("resume", "start a paused schedule again from now"),
                            ("run", "run a schedule now (skipped while its last run's task is open)")):
        p = actions.add_parser(name, parents=net, help=help_text)
        p.add_argument("schedule_id")
        p.set_defaults(func=_action(name))
    p = actions.add_parser("rm", parents=net, help="delete a schedule (the tasks it sent stay)")
    p.add_argument("schedule_id")
    p.set_defaults(func=cmd_schedule_rm)
