"""What waits for a person (service/needs.py): questions, stuck tasks and broken loops, each one named query.

Each reads along a small index: tasks_by_status (a network's tasks in one status), tasks_flagged, tasks_by_recipient
(an offline alias's tasks), and the partial indexes of migration 0016 (messages_questions: a task's question;
events_loop_broken: the guard's cuts). tests/test_needs.py checks the plans.
"""

from __future__ import annotations

from typing import Any

from ..db import Database
from ..vocabulary import (
    ANSWER,
    DELIVERED,
    INPUT_REQUIRED,
    LOOP_BROKEN,
    OFFLINE,
    OPEN_TASK_STATUSES,
    PERSON,
    QUESTION,
    RUNNING,
)

Row = dict[str, Any]
# What a person needs to see of a task on the Overview (its whole content is one click away, in its dialog).
TASK_COLUMNS = ("t.task_id, t.network_id, t.from_name, t.from_kind, t.to_name, t.to_kind, t.title,"
                " substr(t.content, 1, 200) AS content, t.priority, t.status, t.created_at, t.created_ts,"
                " t.updated_at, t.flag, t.flagged_at")


def _marks(values: list[str]) -> str:
    return ",".join("?" * len(values)) or "NULL"


def questions_for_people(db: Database, network_ids: list[str], limit: int) -> list[Row]:
    """Tasks a person sent that wait on a question not answered yet (input_required, and no answer since the
    newest question), newest first, each with that question (`question_id`, `question`, `asked_at`; null when
    retention pruned it)."""
    # The statuses and kinds are written into the SQL (vocabulary constants, never input) so the partial indexes
    # messages_questions and messages_answers apply (SQLite matches a partial index's WHERE against literal terms).
    return db.query(f"SELECT {TASK_COLUMNS}, q.message_id AS question_id, q.content AS question,"
                    " q.created_at AS asked_at FROM tasks t LEFT JOIN messages q ON q.rowid = ("
                    f"SELECT m.rowid FROM messages m WHERE m.task_id = t.task_id AND m.status = '{QUESTION}'"
                    " ORDER BY m.created_ts DESC LIMIT 1)"
                    f" WHERE t.network_id IN ({_marks(network_ids)}) AND t.status = '{INPUT_REQUIRED}'"
                    f" AND t.from_kind = '{PERSON}' AND NOT EXISTS (SELECT 1 FROM messages a WHERE a.task_id ="
                    f" t.task_id AND a.status = '{ANSWER}' AND a.created_ts >= coalesce(q.created_ts, 0))"
                    " ORDER BY t.created_ts DESC LIMIT ?", (*network_ids, limit))


def flagged_open_tasks(db: Database, network_ids: list[str], flag: str, limit: int) -> list[Row]:
    """Open tasks carrying a flag (a runner's `unanswered`), newest first (the tasks_flagged index)."""
    return db.query(f"SELECT {TASK_COLUMNS} FROM tasks t WHERE t.network_id IN ({_marks(network_ids)})"
                    f" AND t.flag = ? AND t.status IN ({_marks(list(OPEN_TASK_STATUSES))})"
                    " ORDER BY t.created_ts DESC LIMIT ?", (*network_ids, flag, *OPEN_TASK_STATUSES, limit))


def lapsed_sessions(db: Database, network_ids: list[str], cutoff_ts: float) -> list[Row]:
    """Sessions of some networks (not retired) stored offline or without a tool call since `cutoff_ts`: the ones
    that may be offline (the service rules out those a live stream holds, which only the broker knows;
    docs/presence.md)."""
    return db.query("SELECT network_id, alias, status, last_seen_at, last_seen_ts, last_call_ts FROM sessions"
                    f" WHERE network_id IN ({_marks(network_ids)}) AND retired_at IS NULL"
                    f" AND (status = '{OFFLINE}' OR last_call_ts < ?)", (*network_ids, cutoff_ts))


def delivered_before(db: Database, keys_json: str, before_ts: float, limit: int) -> list[Row]:
    """Tasks still waiting to be picked up (delivered) since before `before_ts`, for some aliases (`keys_json`: a
    JSON array of [network_id, alias]), oldest first; each alias's are found through tasks_by_recipient (its
    delivered ones only, not all its old tasks)."""
    return db.query(f"SELECT {TASK_COLUMNS} FROM json_each(?) j CROSS JOIN tasks t"
                    " ON t.network_id = j.value ->> 0 AND t.to_name = j.value ->> 1"
                    f" WHERE t.status = '{DELIVERED}' AND t.to_kind = 'agent' AND +t.created_ts < ?"
                    " ORDER BY t.created_ts LIMIT ?", (keys_json, before_ts, limit))


def running_quiet_since(db: Database, network_ids: list[str], before: str, limit: int) -> list[Row]:
    """Running tasks with nothing new since `before` (UTC text): no status change, progress reply, answer or flag
    (the newest of updated_at and the task's last timeline entry, as `active_at`); the oldest tasks first."""
    last_event = ("coalesce((SELECT e.created_at FROM task_events e WHERE e.task_id = t.task_id"
                  " ORDER BY e.id DESC LIMIT 1), '')")
    # updated_at first: it rules out most tasks without a look at their timeline.
    return db.query(f"SELECT {TASK_COLUMNS}, max(t.updated_at, {last_event}) AS active_at FROM tasks t"
                    f" WHERE t.network_id IN ({_marks(network_ids)}) AND t.status = '{RUNNING}'"
                    f" AND t.to_kind = 'agent' AND t.updated_at < ? AND {last_event} < ?"
                    " ORDER BY t.created_ts LIMIT ?", (*network_ids, before, before, limit))


def loops_broken_since(db: Database, network_id: str, since: str, limit: int) -> list[Row]:
    """The loop guard's cuts in one network (loop_broken events) since `since` (UTC text), newest first."""
    return db.query(f"SELECT id, alias, data, created_at FROM events WHERE network_id = ? AND event = '{LOOP_BROKEN}'"
                    " AND created_at >= ? ORDER BY id DESC LIMIT ?", (network_id, since, limit))
