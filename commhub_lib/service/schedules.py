"""Schedules (docs/schedules.md): a task sent to an alias once, every N seconds, or by a cron expression in an IANA
time zone, by a person or (by setting) an owner/admin's agent. Each run is an ordinary task (tasks.send_task, so the
loop guard, quotas and webhooks apply) carrying the schedule's id.

A run is skipped (counted, with its reason) while the schedule's previous run is still open; a run missed while the
hub was down is run once at start or skipped, per schedule (`missed`). The scheduler (run_scheduler, a job of the
root nursery) sleeps until the earliest next run, woken when a schedule is created or changed.
"""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import trio
from cronsim import CronSim, CronSimError

from .. import auth
from ..errors import CommhubError, Conflict, Forbidden, NotFound, ValidationFailed
from ..ids import new_id, now_text, now_ts
from ..models import ScheduleTask, SendTask
from ..store import networks as network_store
from ..store import schedules as schedule_store
from ..store import sessions as session_store
from ..store import tokens as token_store
from ..store import users as user_store
from ..vocabulary import (
    AGENT,
    MISSED_POLICIES,
    OPEN_TASK_STATUSES,
    PERSON,
    SCHEDULE_ACTIVE,
    SCHEDULE_FINISHED,
    SCHEDULE_KINDS,
    SCHEDULE_PAUSED,
)
from . import quotas, tasks
from .hub import Hub, Principal, clamp_limit, hint
from .sessions import require_known_alias

log = logging.getLogger("commhub.schedules")

ACTIVE, PAUSED, FINISHED = SCHEDULE_ACTIVE, SCHEDULE_PAUSED, SCHEDULE_FINISHED
ONCE, EVERY, CRON = SCHEDULE_KINDS
RUN_ONCE, SKIP = MISSED_POLICIES

DUE_BATCH = 50  # schedules run per pass before the scheduler yields
MAX_SLEEP_SECONDS = 300.0  # the scheduler looks again at least this often (a wall-clock step, a lost wake-up)
LOCK_WAIT_SECONDS = 5.0
MISSED_REASON = "missed while the hub was down (missed: skip)"


# -- times ------------------------------------------------------------------------------------------------------

def zone(name: str) -> ZoneInfo:
    """The IANA time zone of that name, or a 400 naming it."""
    try:
        if not name or name.startswith(("/", ".")) or ".." in name:
            raise ValueError(name)
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationFailed(f"tz: unknown time zone '{name}'; give an IANA name such as 'UTC', 'Europe/Berlin' "
                               "or 'America/New_York'") from None


def check_cron(expr: str) -> str:
    """A valid 5-field cron expression (normalised spacing), or a 400 that says what is wrong."""
    fields = expr.split()
    if len(fields) != 5:
        raise ValidationFailed(f"cron: '{expr}' has {len(fields)} fields; give 5: minute hour day-of-month month "
                               "day-of-week, e.g. '0 9 * * 1-5'")
    text = " ".join(fields)
    try:
        CronSim(text, datetime.now(UTC))
    except CronSimError as exc:
        # cronsim says which field ("Bad hour"); the ranges say what it may be.
        raise ValidationFailed(f"cron: '{expr}' is not a valid expression ({exc}): minute 0-59, hour 0-23, "
                               "day-of-month 1-31, month 1-12 or JAN-DEC, day-of-week 0-7 or MON-SUN, e.g. "
                               "'0 9 * * 1-5'") from None
    return text


def next_cron(expr: str, tz: str, after_ts: float) -> float:
    """The first time strictly after `after_ts` that the cron expression names in zone `tz` (DST as cron does: a
    time skipped by a spring-forward runs right after the change, a time repeated by a fall-back runs once)."""
    start = datetime.fromtimestamp(after_ts, zone(tz))
    return next(CronSim(expr, start)).timestamp()


def next_every(first_ts: float, every: int, after_ts: float) -> float:
    """The next run of an `every` schedule after `after_ts`, keeping the phase of its first run (runs missed in
    between are not made up: one run, then the grid goes on)."""
    if after_ts < first_ts:
        return first_ts
    return first_ts + (math.floor((after_ts - first_ts) / every) + 1) * every


def parse_at(value: float | str, tz: str, now: float) -> float:
    """`at` as a timestamp: seconds from now, or ISO 8601 (a time without an offset is read in `tz`)."""
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        try:
            seconds = float(value)
        except ValueError:
            try:
                moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
            except ValueError:
                raise ValidationFailed(f"at: '{value}' is not understood; give ISO 8601 such as "
                                       "'2026-12-24T09:00' or a number of seconds from now") from None
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=zone(tz))
            return _utc_instant(moment, value)
    if not 0 < seconds <= 10 * 366 * 86400:
        raise ValidationFailed(f"at: {value} seconds from now is out of range (more than 0, at most ten years)")
    return now + seconds


def _utc_instant(moment: datetime, value: str) -> float:
    """A time as a timestamp, or a 400 when its UTC instant is outside years 1-9999 (year 9999 west of UTC is year
    10000 there): such a time crashed the answer, which shows it in UTC."""
    try:
        ts = moment.timestamp()
        datetime.fromtimestamp(ts, UTC)
    except (OverflowError, ValueError, OSError):
        raise ValidationFailed(f"at: '{value}' is out of range; give a time in years 1-9999 UTC") from None
    return ts


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _next_after(s: dict[str, Any], after_ts: float) -> float | None:
    """The schedule's next run strictly after `after_ts` (None for a `once` schedule: it has run or been passed)."""
    if s["kind"] == EVERY:
        return next_every(_first_ts(s), s["every_seconds"], after_ts)
    if s["kind"] == CRON:
        return next_cron(s["cron"], s["tz"], after_ts)
    return None


def _first_ts(s: dict[str, Any]) -> float:
    """An `every` schedule's first run: its run_at (set at creation: created + every_seconds)."""
    return datetime.fromisoformat(s["run_at"].replace("Z", "+00:00")).timestamp()


# -- who may ----------------------------------------------------------------------------------------------------

def _creator(hub: Hub, principal: Principal, network_id: str, alias: str | None) -> tuple[str, str]:
    """Who a new schedule sends as (name, kind), or an error: any member person; an agent as the schedule_agents
    setting says ('admin': the token's creator is owner/admin of the network; 'member'; 'off': none)."""
    if principal.kind == "user":
        return principal.user["username"], PERSON
    mode = hub.settings.schedule_agents
    role = network_store.get_member_role(hub.db, network_id, principal.user_id)
    if mode == "off" or (mode == "admin" and not auth.role_at_least(role, "admin")):
        raise Forbidden("agents may not create schedules here: " + (
            "the schedule_agents setting is off" if mode == "off" else
            "the schedule_agents setting allows it only to agents whose token an owner/admin of the network "
            "created") + "; ask a person to create it (POST /api/schedules with a user token, or the dashboard)",
            code="schedule_not_allowed")
    if alias is None:
        raise Conflict("this token has not claimed an alias yet: call report_status first", code="no_identity")
    return alias, AGENT


def _may_manage(hub: Hub, principal: Principal, alias: str | None, s: dict[str, Any]) -> bool:
    """Its creator (the person; for an agent's schedule, the agent's alias and the person whose token it used), or
    a person who is owner/admin of the network."""
    if principal.kind == "user":
        return principal.user_id == s["created_by"] or tasks.is_overseer(hub, principal, s["network_id"])
    # The alias alone is not enough: an alias released by an owner/admin may be claimed by another person's token.
    return (s["from_kind"] == AGENT and alias == s["from_name"] and principal.network_id == s["network_id"]
            and principal.user_id == s["created_by"])


def _still_allowed(hub: Hub, s: dict[str, Any]) -> str | None:
    """Why a schedule may no longer send (None: it may): its person left the network, its agent's token was
    revoked, or the agent setting no longer allows it."""
    role = network_store.get_member_role(hub.db, s["network_id"], s["created_by"])
    if role is None:
        user = user_store.get_user(hub.db, s["created_by"])
        if s["from_kind"] == AGENT or user is None or user["role"] != "admin":  # the system admin need not be one
            return f"its creator is no longer a member of network {s['network_id']}"
    if s["from_kind"] == AGENT:
        if not s["token_id"] or not token_store.is_live(hub.db, s["token_id"], now_text()):
            return "the token of the agent that created it was revoked or has expired"
        # Its runs send as the alias: once an owner/admin released it (another token may hold it now), they would
        # speak for whoever holds it, and the replies would go to them.
        held = session_store.get_session(hub.db, s["network_id"], s["from_name"])
        if held is None or held["token_id"] != s["token_id"]:
            return f"its alias '{s['from_name']}' was released and is no longer held by the token that created it"
        mode = hub.settings.schedule_agents
        if mode == "off" or (mode == "admin" and not auth.role_at_least(role, "admin")):
            return "the schedule_agents setting no longer allows this agent's schedules"
    return None


# -- answers ----------------------------------------------------------------------------------------------------

def record(s: dict[str, Any]) -> dict[str, Any]:
    """A schedule as the API shows it (times as ISO 8601 UTC; the last run's task status as last_status)."""
    out = {k: v for k, v in s.items() if k not in ("next_run_ts", "token_id", "created_by")}
    out["next_run_at"] = _iso(s["next_run_ts"])
    out["every_seconds"] = s["every_seconds"] if s["kind"] == EVERY else None
    out["run_at"] = s["run_at"] if s["kind"] == ONCE else None
    out.setdefault("last_status", None)
    return out


def _get(hub: Hub, network_ids: list[str], schedule_id: str) -> dict[str, Any]:
    s = schedule_store.get_schedule(hub.db, schedule_id)
    if s is None or s["network_id"] not in network_ids:
        raise NotFound(f"schedule '{schedule_id}' not found in your networks; list them with "
                       + hint("list_schedules", "GET /api/schedules"), code="schedule_not_found")
    return s


# -- the API ----------------------------------------------------------------------------------------------------

def create_schedule(hub: Hub, principal: Principal, network_id: str, alias: str | None,
                    body: ScheduleTask) -> dict[str, Any]:
    """Create a schedule (see the module's docstring for who may); answers it with its first next_run_at."""
    sender, sender_kind = _creator(hub, principal, network_id, alias)
    given = [name for name in ("at", "every_seconds", "cron") if getattr(body, name) is not None]
    if len(given) != 1:
        raise ValidationFailed("give exactly one of at (once), every_seconds or cron" +
                               (f" (you gave {', '.join(given)})" if given else ""))
    zone(body.tz)
    now = now_ts()
    run_at: str | None = None
    cron: str | None = None
    kind, first = ONCE, now
    if body.every_seconds is not None:
        kind, minimum = EVERY, hub.settings.schedule_min_interval_seconds
        if body.every_seconds < minimum:
            raise ValidationFailed(f"every_seconds: must be at least {minimum:g} (the schedule_min_interval_seconds "
                                   f"setting); you gave {body.every_seconds}")
        first = now + body.every_seconds
        run_at = _iso(first)
    elif body.cron is not None:
        kind, cron = CRON, check_cron(body.cron)
        first = next_cron(cron, body.tz, now)
    elif body.at is not None:
        first = parse_at(body.at, body.tz, now)
        if first <= now:
            raise ValidationFailed(f"at: {_iso(first)} has already passed; give a later time")
        run_at = _iso(first)
    require_known_alias(hub, network_id, body.to)
    cap = hub.settings.max_schedules_per_network
    row = {"schedule_id": new_id("sch"), "network_id": network_id, "created_by": principal.user_id,
           "token_id": principal.token_id if sender_kind == AGENT else None, "from_name": sender,
           "from_kind": sender_kind, "to_name": body.to, "title": body.title, "content": body.content,
           "context": body.context, "priority": body.priority, "kind": kind, "run_at": run_at,
           "every_seconds": body.every_seconds, "cron": cron, "tz": body.tz, "missed": body.missed,
           "state": ACTIVE, "next_run_ts": first, "created_at": now_text(), "updated_at": now_text()}
    with hub.db.write():
        if cap:  # PostgreSQL: two writers racing for the last place count one after the other
            quotas.lock_network(hub, network_id)
        if cap and schedule_store.count_schedules(hub.db, network_id) >= cap:
            raise Conflict(f"network {network_id} has {cap} schedules, as many as the max_schedules_per_network "
                           "setting allows; delete one first", code="schedule_limit_reached")
        # A full network would refuse every run's task: refuse the schedule now (the storage quota, and the calling
        # token's send rate by bytes, as a send of the same text).
        quotas.check_store(hub, network_id, body.content, body.title, body.context)
        schedule_store.insert_schedule(hub.db, row)
    hub.schedules_changed()
    return {"ok": True, "schedule": record(_get(hub, [network_id], row["schedule_id"]))}


def list_schedules(hub: Hub, network_ids: list[str], limit: int | None, offset: int = 0) -> dict[str, Any]:
    """Schedules of the caller's networks, newest first, with next_run_at, last_run_at, last_task_id, last_status."""
    rows = schedule_store.list_schedules(hub.db, network_ids, clamp_limit(limit), offset)
    return {"ok": True, "schedules": [record(r) for r in rows]}


def get_schedule(hub: Hub, network_ids: list[str], schedule_id: str) -> dict[str, Any]:
    """One schedule."""
    return {"ok": True, "schedule": record(_get(hub, network_ids, schedule_id))}


def _managed(hub: Hub, principal: Principal, network_ids: list[str], alias: str | None,
             schedule_id: str, action: str) -> dict[str, Any]:
    s = _get(hub, network_ids, schedule_id)
    if not _may_manage(hub, principal, alias, s):
        raise Forbidden(f"only the creator of schedule {schedule_id} ('{s['from_name']}') or a network owner/admin "
                        f"can {action} it", code="schedule_not_allowed")
    return s


def pause_schedule(hub: Hub, principal: Principal, network_ids: list[str], alias: str | None,
                   schedule_id: str) -> dict[str, Any]:
    """Stop a schedule's runs until it is resumed (a done schedule cannot be paused)."""
    s = _managed(hub, principal, network_ids, alias, schedule_id, "pause")
    if s["state"] == FINISHED:
        raise Conflict(f"schedule {schedule_id} is finished (a once schedule that has run); nothing to pause",
                       code="schedule_finished")
    with hub.db.write():
        schedule_store.set_next_run(hub.db, schedule_id, PAUSED, None, now_text())
    hub.schedules_changed()
    return get_schedule(hub, network_ids, schedule_id)


def resume_schedule(hub: Hub, principal: Principal, network_ids: list[str], alias: str | None,
                    schedule_id: str) -> dict[str, Any]:
    """Start a paused schedule again from now: its next time after now (a `once` whose time passed while paused
    runs now, or is skipped, as its `missed` says)."""
    s = _managed(hub, principal, network_ids, alias, schedule_id, "resume")
    if s["state"] == FINISHED:
        raise Conflict(f"schedule {schedule_id} is finished (a once schedule that has run); create a new one",
                       code="schedule_finished")
    now = now_ts()
    if s["kind"] == ONCE:
        at = _first_once(s)
        if at > now or s["missed"] == RUN_ONCE:
            with hub.db.write():
                schedule_store.set_next_run(hub.db, schedule_id, ACTIVE, max(at, now), now_text())
        else:
            with hub.db.write():
                schedule_store.record_skip(hub.db, schedule_id, "its time passed while it was paused (missed: skip)",
                                           FINISHED, None, now_text())
    else:
        with hub.db.write():
            schedule_store.set_next_run(hub.db, schedule_id, ACTIVE, _next_after(s, now), now_text())
    hub.schedules_changed()
    return get_schedule(hub, network_ids, schedule_id)


def _first_once(s: dict[str, Any]) -> float:
    return datetime.fromisoformat(s["run_at"].replace("Z", "+00:00")).timestamp()


def delete_schedule(hub: Hub, principal: Principal, network_ids: list[str], alias: str | None,
                    schedule_id: str) -> dict[str, Any]:
    """Remove a schedule; the tasks it sent stay (with its schedule_id)."""
    _managed(hub, principal, network_ids, alias, schedule_id, "delete")
    with hub.db.write():
        deleted = schedule_store.delete_schedule(hub.db, schedule_id)
    hub.schedules_changed()
    return {"ok": True, "schedule_id": schedule_id, "deleted": deleted}


def run_now(hub: Hub, principal: Principal, network_ids: list[str], alias: str | None,
            schedule_id: str) -> dict[str, Any]:
    """Run a schedule at once, as the scheduler would (skipped while its last run is open); its timetable does not
    move. Answers `ran` with the task, or `skipped` with the reason."""
    s = _managed(hub, principal, network_ids, alias, schedule_id, "run")
    outcome = run_schedule(hub, s, now_ts(), manual=True)
    return {"ok": True, **outcome, "schedule": record(_get(hub, network_ids, schedule_id))}


# -- runs -------------------------------------------------------------------------------------------------------

def run_schedule(hub: Hub, s: dict[str, Any], now: float, *, manual: bool = False) -> dict[str, Any]:
    """One run: send its task (or skip it, saying why) and move the schedule to its next time (a manual run keeps
    the timetable). Returns {"ran": bool, "task_id" | "skipped_reason"}."""
    if manual or s["state"] != ACTIVE:
        state, next_ts = s["state"], s["next_run_ts"]
    else:
        next_ts = _next_after(s, now)
        state = FINISHED if next_ts is None else ACTIVE
    reason = None
    if s["last_task_id"] and s.get("last_status") in OPEN_TASK_STATUSES:
        reason = f"the previous run's task {s['last_task_id']} is still open ({s['last_status']})"
    elif (why := _still_allowed(hub, s)) is not None:
        reason, state, next_ts = f"{why}; the schedule is paused", PAUSED, None
    if reason is None:
        # The run's number makes its idempotency key: a crash between sending and recording sends it once, and the
        # loop guard's same-content window does not hold back a schedule's deliberate repeats.
        body = SendTask(to=s["to_name"], content=s["content"], priority=s["priority"], title=s["title"],
                        context=s["context"], idempotency_key=f"schedule:{s['schedule_id']}:{s['run_count'] + 1}")
        try:
            sent = tasks.send_task(hub, s["network_id"], s["from_name"], body, s["from_kind"],
                                   schedule_id=s["schedule_id"])
        except CommhubError as exc:  # an alias retired, the quota full, the pair limit: this run is skipped
            reason = f"the task was refused: {exc.message} ({exc.code})"
        else:
            with hub.db.write():
                schedule_store.record_run(hub.db, s["schedule_id"], sent["task_id"], state, next_ts, now_text())
            return {"ran": True, "task_id": sent["task_id"]}
    with hub.db.write():
        schedule_store.record_skip(hub.db, s["schedule_id"], reason, state, next_ts, now_text())
    log.info("schedule %s: run skipped: %s", s["schedule_id"], reason)
    return {"ran": False, "skipped_reason": reason}


def catch_up_missed(hub: Hub, started_ts: float) -> int:
    """At start: every active schedule whose next run passed while the hub was down either runs once (missed:
    run_once: it is simply due, and runs once) or moves to its next future time, the skip counted (missed: skip).
    Returns how many were moved."""
    moved = 0
    while True:
        due = schedule_store.missed_with_policy(hub.db, started_ts, SKIP, DUE_BATCH * 20)
        if not due:
            return moved
        with hub.db.write():
            for s in due:
                next_ts = _next_after(s, started_ts)
                schedule_store.record_skip(hub.db, s["schedule_id"], MISSED_REASON, FINISHED if next_ts is None else
                                           ACTIVE, next_ts, now_text())
                moved += 1


async def run_due(hub: Hub) -> int:
    """Run every schedule whose time has come (in batches that yield); returns how many runs were made or skipped."""
    done = 0
    while True:
        due = schedule_store.due_schedules(hub.db, now_ts(), DUE_BATCH)
        for row in due:
            await hub.db.wait_for_write_lock(LOCK_WAIT_SECONDS)
            # Read again after the wait: a pause, resume, delete or run served meanwhile must hold (running the
            # batch's stale row sent a paused or deleted schedule's task and made a paused schedule active again).
            s = schedule_store.get_schedule(hub.db, row["schedule_id"])
            if s is None or s["next_run_ts"] is None or s["next_run_ts"] > now_ts():
                continue
            try:
                run_schedule(hub, s, now_ts())
            except CommhubError as exc:
                if exc.status >= 500:  # the database is busy or failing: the pass is retried after a pause
                    raise
                _set_aside(hub, s, f"{exc.message} ({exc.code})")
            except Exception as exc:  # a bug, or a zone gone from the system: this schedule must not block the rest
                log.exception("schedule %s: run failed", s["schedule_id"])
                _set_aside(hub, s, f"internal error: {type(exc).__name__}: {exc}")
            done += 1
        if len(due) < DUE_BATCH:
            return done
        await trio.lowlevel.checkpoint()


def _set_aside(hub: Hub, s: dict[str, Any], why: str) -> None:
    """Pause a schedule whose run failed in a way a retry would not mend, saying why, so that it never holds up
    the schedules due after it (resume it once the cause is fixed)."""
    reason = f"the run failed: {why}; the schedule is paused"[:500]
    with hub.db.write():
        schedule_store.record_skip(hub.db, s["schedule_id"], reason, PAUSED, None, now_text())
    log.warning("schedule %s: %s", s["schedule_id"], reason)


async def run_scheduler(hub: Hub, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Background job (root nursery): catch up on runs missed while the hub was down, then sleep until the earliest
    next run (or a change: Hub.schedules_changed) and run what is due. A failed pass is logged and retried after a
    pause that doubles up to a minute."""
    try:
        if moved := catch_up_missed(hub, now_ts()):
            log.info("schedules: %d run(s) missed while the hub was down were skipped (missed: skip)", moved)
    except Exception:  # the database is busy or failing: those runs are then simply due (run once)
        log.exception("schedules: could not catch up on missed runs")
    task_status.started()
    failures = 0
    while True:
        hub.schedule_wakeup = trio.Event()  # before reading: a change made during the pass wakes the next sleep
        try:
            await run_due(hub)
            failures = 0
            earliest = schedule_store.earliest_next_run(hub.db)
            wait = MAX_SLEEP_SECONDS if earliest is None else min(max(0.0, earliest - now_ts()), MAX_SLEEP_SECONDS)
        except Exception as exc:
            failures += 1
            wait = min(2.0 ** failures, 60.0)
            if not isinstance(exc, CommhubError):
                log.exception("schedules: unexpected error; retrying in %.0f s", wait)
        with trio.move_on_after(wait):
            await hub.schedule_wakeup.wait()


def describe(s: dict[str, Any]) -> str:
    """A schedule's timing in words: 'once at …', 'every 60 s', 'cron 0 9 * * 1-5 (Europe/Berlin)'."""
    if s["kind"] == EVERY:
        return f"every {s['every_seconds']} s"
    if s["kind"] == CRON:
        return f"cron {s['cron']} ({s['tz']})"
    return f"once at {s['run_at']}"


__all__ = ["catch_up_missed", "check_cron", "create_schedule", "delete_schedule", "describe",
           "get_schedule", "list_schedules", "next_cron", "next_every", "parse_at", "pause_schedule", "record",
           "resume_schedule", "run_now", "run_schedule", "run_scheduler", "zone"]
