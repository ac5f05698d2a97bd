"""Schedules (docs/schedules.md): tasks sent to an alias once, every N seconds or by cron."""

from __future__ import annotations

from typing import Any

from ..db import Database
from .paging import page

Row = dict[str, Any]
SCHEDULE_COLUMNS = ("schedule_id, network_id, created_by, token_id, from_name, from_kind, to_name, title, content,"
                    " context, priority, kind, run_at, every_seconds, cron, tz, missed, state, next_run_ts,"
                    " last_run_at, last_task_id, run_count, skip_count, last_skipped_at, last_skip_reason,"
                    " created_at, updated_at")
# The status of the last run's task, read with the schedule (a run is skipped while it is open; lists show it).
LAST_STATUS = "(SELECT t.status FROM tasks t WHERE t.task_id = schedules.last_task_id) AS last_status"


def insert_schedule(db: Database, row: Row) -> None:
    """Create a schedule (row holds every column but the counters, which start at 0)."""
    db.execute("INSERT INTO schedules(schedule_id, network_id, created_by, token_id, from_name, from_kind, to_name,"
               " title, content, context, priority, kind, run_at, every_seconds, cron, tz, missed, state,"
               " next_run_ts, created_at, updated_at) VALUES (:schedule_id, :network_id, :created_by, :token_id,"
               " :from_name, :from_kind, :to_name, :title, :content, :context, :priority, :kind, :run_at,"
               " :every_seconds, :cron, :tz, :missed, :state, :next_run_ts, :created_at, :updated_at)", row)


def get_schedule(db: Database, schedule_id: str) -> Row | None:
    """One schedule with its last run's task status."""
    return db.query_one(f"SELECT {SCHEDULE_COLUMNS}, {LAST_STATUS} FROM schedules WHERE schedule_id = ?",
                        (schedule_id,))


def list_schedules(db: Database, network_ids: list[str], limit: int, offset: int) -> list[Row]:
    """Schedules of some networks, newest first."""
    return page(db, f"SELECT {SCHEDULE_COLUMNS}, {LAST_STATUS}, rowid AS _seq FROM schedules", [], [], network_ids,
                "created_at DESC, _seq DESC", limit, offset)


def due_schedules(db: Database, now_ts: float, limit: int) -> list[Row]:
    """Active schedules whose next run time has come, the earliest first (the schedules_due index)."""
    return db.query(f"SELECT {SCHEDULE_COLUMNS}, {LAST_STATUS} FROM schedules WHERE next_run_ts IS NOT NULL"
                    " AND next_run_ts <= ? ORDER BY next_run_ts LIMIT ?", (now_ts, limit))


def missed_with_policy(db: Database, before_ts: float, missed: str, limit: int) -> list[Row]:
    """Active schedules with this `missed` policy whose next run is before a time (the hub's start)."""
    return db.query(f"SELECT {SCHEDULE_COLUMNS}, {LAST_STATUS} FROM schedules WHERE next_run_ts IS NOT NULL"
                    " AND next_run_ts <= ? AND missed = ? ORDER BY next_run_ts LIMIT ?", (before_ts, missed, limit))


def earliest_next_run(db: Database) -> float | None:
    """The earliest next run time of any active schedule (what the scheduler sleeps until)."""
    row = db.query_one("SELECT min(next_run_ts) AS ts FROM schedules WHERE next_run_ts IS NOT NULL")
    return None if row is None else row["ts"]


def set_next_run(db: Database, schedule_id: str, state: str, next_run_ts: float | None, now: str) -> bool:
    """Set a schedule's state and next run time (pause, resume, catch-up after downtime)."""
    return db.execute("UPDATE schedules SET state = ?, next_run_ts = ?, updated_at = ? WHERE schedule_id = ?",
                      (state, next_run_ts, now, schedule_id)) == 1


def record_run(db: Database, schedule_id: str, task_id: str, state: str, next_run_ts: float | None,
               now: str) -> None:
    """A run sent its task: count it, remember the task, move on to the next run time."""
    db.execute("UPDATE schedules SET last_run_at = ?, last_task_id = ?, run_count = run_count + 1, state = ?,"
               " next_run_ts = ?, updated_at = ? WHERE schedule_id = ?",
               (now, task_id, state, next_run_ts, now, schedule_id))


def record_skip(db: Database, schedule_id: str, reason: str, state: str, next_run_ts: float | None,
                now: str) -> None:
    """A run was skipped (the last run still open, a missed run, a refused send): count it and say why."""
    db.execute("UPDATE schedules SET last_skipped_at = ?, last_skip_reason = ?, skip_count = skip_count + 1,"
               " state = ?, next_run_ts = ?, updated_at = ? WHERE schedule_id = ?",
               (now, reason, state, next_run_ts, now, schedule_id))


def delete_schedule(db: Database, schedule_id: str) -> bool:
    """Remove a schedule (its tasks stay, with their schedule_id)."""
    return db.execute("DELETE FROM schedules WHERE schedule_id = ?", (schedule_id,)) == 1


def count_schedules(db: Database, network_id: str) -> int:
    """How many schedules a network has (the per-network cap)."""
    row = db.query_one("SELECT count(*) AS n FROM schedules WHERE network_id = ?", (network_id,))
    return 0 if row is None else row["n"]
