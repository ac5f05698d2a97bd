"""Routes: /api/schedules, tasks sent to an alias once, every N seconds or by cron (docs/schedules.md)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import Field

from ..http.request import authenticate, hub, parse, query_arg
from ..models import RestScheduleTask
from ..service import networks, sessions
from ..service import schedules as schedule_service
from ..service.hub import Hub, Principal
from ..vocabulary import MissedPolicy, ScheduleKind, ScheduleState, SenderKind
from .common import query_int
from .queries import NetworkScope, Paging
from .records import Ok, Record, Text


class SchedulesQuery(NetworkScope, Paging):
    """GET /api/schedules."""


class Schedule(Record):
    """A schedule: what it sends to whom, when, and how its runs went."""

    schedule_id: str
    network_id: str
    from_name: str = Field(description="who its tasks come from: the person or agent that created it")
    from_kind: SenderKind
    to_name: str
    title: Text
    content: str
    context: Text
    priority: str
    kind: ScheduleKind
    run_at: Text = Field(description="kind once: when (ISO 8601 UTC)")
    every_seconds: int | None
    cron: Text
    tz: str
    missed: MissedPolicy
    state: ScheduleState
    next_run_at: Text = Field(description="the next run (ISO 8601 UTC); null while paused or once done")
    last_run_at: Text
    last_task_id: Text
    last_status: Text = Field(description="the status of the last run's task (a run is skipped while it is open)")
    run_count: int
    skip_count: int
    last_skipped_at: Text
    last_skip_reason: Text
    created_at: str
    updated_at: str


class ScheduleAnswer(Ok):
    """One schedule."""

    schedule: Schedule


class ScheduleList(Ok):
    """Schedules, newest first."""

    schedules: list[Schedule]


class ScheduleRun(ScheduleAnswer):
    """A run made now: its task, or why it was skipped."""

    ran: bool
    task_id: Text = None
    skipped_reason: Text = None


class ScheduleDeleted(Ok):
    """A schedule removed (the tasks it sent stay)."""

    schedule_id: str
    deleted: bool


def _caller(principal: Principal, network_id: str) -> str | None:
    """The agent's alias for a network token (its schedules are its alias's), None for a person."""
    if principal.kind == "user":
        return None
    return sessions.resolve_caller(hub(), principal, network_id, None)


def _scope(principal: Principal) -> list[str]:
    return networks.scope(hub(), principal, query_arg("network_id") or None)


async def create_schedule() -> dict:
    """Schedule a task to an alias: once (`at`), every N seconds, or by cron in an IANA zone."""
    principal = authenticate()
    body = await parse(RestScheduleTask)
    network_id = networks.single_network(hub(), principal, body.network_id)
    alias = _caller(principal, network_id)
    return schedule_service.create_schedule(hub(), principal, network_id, alias, body)


async def list_schedules() -> dict:
    """The schedules of the caller's networks, newest first."""
    principal = authenticate()
    return schedule_service.list_schedules(hub(), _scope(principal), query_int("limit", None, 1),
                                           query_int("offset", 0) or 0)


async def get_schedule(schedule_id: str) -> dict:
    """One schedule."""
    return schedule_service.get_schedule(hub(), _scope(authenticate()), schedule_id)


Action = Callable[[Hub, Principal, list[str], "str | None", str], dict[str, Any]]


def _act(schedule_id: str, action: Action) -> dict:
    """A change to one schedule by its creator or an owner/admin (an agent acts as its alias)."""
    principal = authenticate()
    scope = _scope(principal)
    alias = _caller(principal, scope[0]) if principal.kind == "network" else None
    return action(hub(), principal, scope, alias, schedule_id)


async def delete_schedule(schedule_id: str) -> dict:
    """Remove a schedule (its creator, or a network owner/admin)."""
    return _act(schedule_id, schedule_service.delete_schedule)


async def pause_schedule(schedule_id: str) -> dict:
    """Stop a schedule's runs until resumed."""
    return _act(schedule_id, schedule_service.pause_schedule)


async def resume_schedule(schedule_id: str) -> dict:
    """Start a paused schedule again from now."""
    return _act(schedule_id, schedule_service.resume_schedule)


async def run_schedule(schedule_id: str) -> dict:
    """Run a schedule now (skipped while its last run is open); its timetable stays."""
    return _act(schedule_id, schedule_service.run_now)
