"""Tasks, task events and completions."""

from __future__ import annotations

from typing import Any

from ..db import Database
from ..vocabulary import DELIVERED, OPEN_TASK_STATUSES
from .dialect import POSTGRESQL, real_json
from .paging import columns, json_record, keyed_page_json, page, page_json

Row = dict[str, Any]
# A task's result is stored once, in its completion record (tasks.result only holds older rows).
RESULT = "coalesce(result, (SELECT c.result FROM completions c WHERE c.task_id = tasks.task_id))"
TASK_FIELDS = tuple((c, c) for c in ("task_id", "network_id", "from_name", "from_kind", "to_name", "to_kind", "title",
                                      "content", "context", "priority", "status", "deadline", "idempotency_key",
                                      "message_id")) + (("result", RESULT), ("created_at", "created_at"),
                                                        ("updated_at", "updated_at"), ("flag", "flag"),
                                                        ("flagged_at", "flagged_at"), ("start_by", "start_by"),
                                                        ("schedule_id", "schedule_id"))
TASK_COLUMNS = columns(TASK_FIELDS)
# The REST page's form of the same fields (keyed_page_json: the page's rows as `t`, the completion as `c`). The
# completion is a LEFT JOIN, not RESULT's correlated subquery: the same one lookup by task_id, ~7 % less CPU.
TASK_ROWS = "tasks AS t ON t.rowid = p._seq LEFT JOIN completions AS c ON c.task_id = t.task_id"
TASK_RECORD = json_record(tuple((name, "coalesce(t.result, c.result)" if name == "result" else f"t.{expr}")
                                for name, expr in TASK_FIELDS))
COMPLETION_FIELDS = tuple((c, c) for c in ("task_id", "network_id", "alias", "status", "result", "artifacts",
                                           "duration_seconds", "completed_at"))
TASK_EVENT_FIELDS = tuple((c, c) for c in ("id", "task_id", "network_id", "event", "actor", "detail", "created_at"))
# Urgent first, then high, normal, low; oldest first within a priority.
PRIORITY_ORDER = "CASE priority WHEN 'urgent' THEN 0 WHEN 'high' THEN 1 WHEN 'normal' THEN 2 ELSE 3 END"


def insert_task(db: Database, row: Row) -> None:
    """Create a task (row holds every column; start_by, start_by_ts and schedule_id may be left out: none)."""
    db.execute("INSERT INTO tasks(task_id, network_id, from_name, from_kind, to_name, to_kind, title, content,"
               " context, priority, status, deadline, idempotency_key, message_id, created_at, created_ts,"
               " updated_at, start_by, start_by_ts, schedule_id) VALUES (:task_id, :network_id, :from_name,"
               " :from_kind, :to_name, :to_kind, :title, :content, :context, :priority, :status, :deadline,"
               " :idempotency_key, :message_id, :created_at, :created_ts, :updated_at, :start_by, :start_by_ts,"
               " :schedule_id)",
               {"start_by": None, "start_by_ts": None, "schedule_id": None, **row})


def get_task(db: Database, network_id: str, task_id: str) -> Row | None:
    """One task of a network."""
    return db.query_one(f"SELECT {TASK_COLUMNS}, created_ts, start_by_ts FROM tasks WHERE network_id = ?"
                        " AND task_id = ?",
                        (network_id, task_id))


def find_task(db: Database, network_ids: list[str], task_id: str) -> Row | None:
    """One task by id among some networks (a person looking a task up without naming its network)."""
    marks = ",".join("?" * len(network_ids)) or "NULL"
    return db.query_one(f"SELECT {TASK_COLUMNS}, created_ts, start_by_ts FROM tasks WHERE task_id = ?"
                        f" AND network_id IN ({marks})",
                        (task_id, *network_ids))


def open_tasks_of(db: Database, network_id: str, alias: str, limit: int) -> list[Row]:
    """The tasks assigned to an agent that are not final yet, urgent first, then oldest first."""
    marks = ",".join("?" * len(OPEN_TASK_STATUSES))
    return db.query(f"SELECT {TASK_COLUMNS} FROM tasks WHERE network_id = ? AND to_name = ? AND to_kind = 'agent'"
                    f" AND status IN ({marks}) ORDER BY {PRIORITY_ORDER}, created_ts, task_id LIMIT ?",
                    (network_id, alias, *OPEN_TASK_STATUSES, limit))


def queue_of(db: Database, network_id: str, alias: str, limit: int) -> list[Row]:
    """The ids of an agent's open tasks in the order it is given them (urgent first, then oldest first)."""
    marks = ",".join("?" * len(OPEN_TASK_STATUSES))
    return db.query(f"SELECT task_id, status FROM tasks WHERE network_id = ? AND to_name = ? AND to_kind = 'agent'"
                    f" AND status IN ({marks}) ORDER BY {PRIORITY_ORDER}, created_ts, task_id LIMIT ?",
                    (network_id, alias, *OPEN_TASK_STATUSES, limit))


def due_to_expire(db: Database, now_ts: float, limit: int) -> list[Row]:
    """Tasks not started whose start_by has passed, the oldest start_by first (the tasks_start_by index)."""
    # The status is written into the SQL (not bound) so that the partial index tasks_start_by applies.
    return db.query(f"SELECT {TASK_COLUMNS}, created_ts, start_by_ts FROM tasks WHERE start_by_ts IS NOT NULL"
                    f" AND status = '{DELIVERED}' AND start_by_ts <= ? ORDER BY start_by_ts LIMIT ?", (now_ts, limit))


def find_by_idempotency_key(db: Database, network_id: str, from_name: str, key: str) -> Row | None:
    """The task a sender already created with this idempotency key."""
    return db.query_one(f"SELECT {TASK_COLUMNS} FROM tasks WHERE network_id = ? AND from_name = ?"
                        " AND idempotency_key = ?", (network_id, from_name, key))


def set_status(db: Database, task_id: str, from_statuses: tuple[str, ...], status: str, now: str,
               result: str | None = None, started_by_ts: float | None = None) -> bool:
    """Move a task to `status` only from one of `from_statuses`; False if it was not in one of them. With
    `started_by_ts` (now, as a timestamp) a task not started yet moves only while its start_by is ahead: the
    check and the start are one statement, so nothing can start a task past its start_by."""
    marks = ",".join("?" * len(from_statuses))
    in_time = "" if started_by_ts is None else \
        f" AND (status != '{DELIVERED}' OR start_by_ts IS NULL OR start_by_ts > ?)"
    return db.execute(f"UPDATE tasks SET status = ?, updated_at = ?, result = coalesce(?, result)"
                      f" WHERE task_id = ? AND status IN ({marks}){in_time}",
                      (status, now, result, task_id, *from_statuses,
                       *(() if started_by_ts is None else (started_by_ts,)))) == 1


def set_flag(db: Database, task_id: str, flag: str | None, now: str) -> bool:
    """Set (or, with None, clear) a task's flag; False if it already was so (nothing written)."""
    return db.execute("UPDATE tasks SET flag = ?, flagged_at = CASE WHEN ? IS NULL THEN NULL ELSE ? END,"
                      " updated_at = ? WHERE task_id = ? AND flag IS NOT ?",
                      (flag, flag, now, now, task_id, flag)) == 1


def _task_filters(status: str | None, to_name: str | None, from_name: str | None,
                  flag: str | None = None) -> tuple[list[str], list[Any]]:
    """WHERE terms of a task list (each filter has an index ending in created_ts)."""
    where, params = [], []
    # An alias's tasks are few; flagged tasks are few (tasks_flagged holds only them); a status may hold most of
    # a network's: walk the alias's index, else the flagged ones', then.
    status_column = "+status" if to_name or from_name or flag else "status"
    flag_column = "+flag" if to_name or from_name else "flag"
    for column, value in ((status_column, status), ("to_name", to_name), ("from_name", from_name),
                          (flag_column, flag)):
        if value:
            where.append(f"{column} = ?")
            params.append(value)
    return where, params


def list_tasks(db: Database, network_ids: list[str], status: str | None, to_name: str | None,
               from_name: str | None, limit: int, offset: int, flag: str | None = None) -> list[Row]:
    """Tasks, newest first, with optional filters."""
    where, params = _task_filters(status, to_name, from_name, flag)
    return page(db, f"SELECT {TASK_COLUMNS}, created_ts AS _ts, rowid AS _seq FROM tasks", where, params,
                network_ids, "_ts DESC, _seq DESC", limit, offset)


def list_tasks_json(db: Database, network_ids: list[str], status: str | None, to_name: str | None,
                    from_name: str | None, limit: int, offset: int, flag: str | None = None) -> str:
    """list_tasks as the text of a JSON array (built by SQLite)."""
    where, params = _task_filters(status, to_name, from_name, flag)
    return keyed_page_json(db, "SELECT created_ts AS _ts, rowid AS _seq FROM tasks", where, params, network_ids,
                           "_ts DESC, _seq DESC", limit, offset, TASK_RECORD, TASK_ROWS)


def task_counts(db: Database, network_ids: list[str]) -> dict[str, int]:
    """How many tasks are in each status (from the counts the triggers keep, not a count of the tasks)."""
    marks = ",".join("?" * len(network_ids)) or "NULL"
    rows = db.query(f"SELECT status, sum(n) AS n FROM task_counts WHERE network_id IN ({marks}) GROUP BY status",
                    tuple(network_ids))
    return {r["status"]: r["n"] for r in rows}


def task_counts_all(db: Database) -> dict[str, int]:
    """How many tasks are in each status across the hub (the trigger-kept counts: one small scan, for /metrics)."""
    rows = db.query("SELECT status, sum(n) AS n FROM task_counts GROUP BY status")
    return {r["status"]: r["n"] for r in rows}


def insert_task_event(db: Database, task_id: str, network_id: str, event: str, actor: str, detail: str | None,
                      now: str) -> None:
    """Append a transition to a task's log."""
    db.execute("INSERT INTO task_events(task_id, network_id, event, actor, detail, created_at)"
               " VALUES (?, ?, ?, ?, ?, ?)", (task_id, network_id, event, actor, detail, now))


def list_task_events(db: Database, network_ids: list[str], task_id: str | None, limit: int,
                     offset: int) -> list[Row]:
    """Task events, oldest first, optionally of one task."""
    where, params = ["task_id = ?"] if task_id else [], [task_id] if task_id else []
    # One task's few events (task_events_by_task), not a walk of the network's log in id order.
    return page(db, f"SELECT {columns(TASK_EVENT_FIELDS)} FROM task_events", where, params, network_ids, "id", limit,
                offset, "+network_id" if task_id else "network_id")


def list_task_events_json(db: Database, network_ids: list[str], task_id: str | None, limit: int,
                          offset: int) -> str:
    """list_task_events as the text of a JSON array (built by SQLite)."""
    where, params = ["task_id = ?"] if task_id else [], [task_id] if task_id else []
    return page_json(db, f"SELECT {json_record(TASK_EVENT_FIELDS)} AS record, id AS _id FROM task_events", where,
                     params, network_ids, "_id", limit, offset, "+network_id" if task_id else "network_id")


def insert_completion(db: Database, task_id: str, network_id: str, alias: str, status: str, result: str | None,
                      artifacts: str, duration: float, now: str) -> None:
    """Record how a task ended."""
    db.execute("INSERT INTO completions(task_id, network_id, alias, status, result, artifacts, duration_seconds,"
               " completed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
               (task_id, network_id, alias, status, result, artifacts, duration, now))


def list_completions(db: Database, network_ids: list[str], alias: str | None, limit: int,
                     offset: int) -> list[Row]:
    """Completion records, newest first (artifacts as stored: JSON text)."""
    where, params = ["alias = ?"] if alias else [], [alias] if alias else []
    return page(db, f"SELECT {columns(COMPLETION_FIELDS)}, rowid AS _seq FROM completions", where, params,
                network_ids, "completed_at DESC, _seq DESC", limit, offset)


def list_completions_json(db: Database, network_ids: list[str], alias: str | None, limit: int,
                          offset: int) -> str:
    """list_completions as the text of a JSON array (built by SQLite; artifacts as a JSON array)."""
    where, params = ["alias = ?"] if alias else [], [alias] if alias else []
    fields = tuple((name, "json(artifacts)" if name == "artifacts" else expr) for name, expr in COMPLETION_FIELDS)
    if db.engine == POSTGRESQL:  # a REAL as SQLite writes it in JSON (2.0, not 2)
        fields = tuple((name, real_json(expr) if name == "duration_seconds" else expr) for name, expr in fields)
    return page_json(db, f"SELECT {json_record(fields)} AS record, completed_at AS _at, rowid AS _seq FROM completions",
                     where, params, network_ids, "_at DESC, _seq DESC", limit, offset)


def get_completion(db: Database, task_id: str) -> Row | None:
    """The completion record of one task."""
    return db.query_one("SELECT task_id, network_id, alias, status, result, artifacts, duration_seconds,"
                        " completed_at FROM completions WHERE task_id = ?", (task_id,))
