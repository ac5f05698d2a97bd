"""Tasks: sending, the lifecycle (delivered -> running <-> input_required -> replied/failed/cancelled, and
delivered -> expired when not started by its `start_by`), questions and answers, completions, a task's place in
its recipient's queue, and the lookups people and agents make.

Who acts is a name plus a kind ("agent": an alias; "person": a username), so a person and an agent that
happen to share a name are never taken for each other.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from .. import auth
from ..broker import Event
from ..errors import Conflict, Forbidden, NotFound, ValidationFailed
from ..ids import new_id, new_uuid, now_text, now_ts
from ..models import REPLY_STATUS_RULE, SendTask
from ..store import messages as message_store
from ..store import networks as network_store
from ..store import sessions as session_store
from ..store import tasks as task_store
from ..vocabulary import (
    AGENT,
    ANSWER,
    CANCELLED,
    DELIVERED,
    DONE,
    EXPIRED,
    FINAL_TASK_STATUSES,
    FLAGGED,
    NEW_MESSAGE,
    NEW_REPLY,
    NEW_TASK,
    NOTICE,
    OPEN_TASK_STATUSES,
    PERSON,
    PROGRESS,
    QUESTION,
    REPLY,
    REPLY_TO_TASK_STATUS,
    RUNNING,
    TASK,
    TASK_FLAGS,
    UNFLAGGED,
    WORKING,
    WORKING_TASK_STATUSES,
)
from . import attachments, loopguard, quotas, verdicts
from .hub import Hub, Principal, clamp_limit, hint
from .sessions import effective_status, is_online, require_known_alias

EXCERPT_CHARS = 120  # a task event shows the start of a reply; the whole text is the reply and the completion
HUB_ACTOR = "hub"  # who a task event says acted when the hub itself did (an expiry)
QUEUE_SCAN = 500  # a task's queue position is counted among this many of its recipient's open tasks
AHEAD_SHOWN = 10  # the ids of at most this many tasks ahead are listed (`ahead_count` says how many there are)


def excerpt(text: str) -> str:
    """The start of a text for a task event's detail (the full text is stored elsewhere, once)."""
    return text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS - 1] + "…"


def message_row(network_id: str, sender: str, to: str, kind: str, content: str, *, priority: str = "normal",
                in_reply_to: str | None = None, task_id: str | None = None, status: str | None = None,
                from_kind: str = AGENT, to_kind: str = AGENT) -> dict[str, Any]:
    """A new inbox item (not stored yet)."""
    ts = now_ts()
    return {"message_id": new_id("msg"), "network_id": network_id, "from_name": sender, "from_kind": from_kind,
            "to_name": to, "to_kind": to_kind, "kind": kind, "content": content, "priority": priority,
            "in_reply_to": in_reply_to, "task_id": task_id, "status": status, "created_at": now_text(),
            "created_ts": ts}


def record_reply_event(hub: Hub, pending: list[Event], msg: dict[str, Any]) -> None:
    """Write the `new_reply` event for a stored reply (inside db.write()); a reply that answers an approval
    question settles it and says so (`answers_approval`: a runner starts no turn for it)."""
    data = {"type": NEW_REPLY, "from": msg["from_name"], "from_kind": msg["from_kind"],
            "message_id": msg["message_id"], "in_reply_to": msg["in_reply_to"], "status": msg["status"],
            "task_id": msg["task_id"]}
    if verdicts.settle(hub, msg):
        data["answers_approval"] = True
    hub.record_event(pending, msg["network_id"], msg["to_name"], NEW_REPLY, data)


def _task_event(hub: Hub, task: dict[str, Any], event: str, actor: str, detail: str | None = None) -> None:
    task_store.insert_task_event(hub.db, task["task_id"], task["network_id"], event, actor, detail, now_text())
    hub.broker.tasks.changed(task["task_id"])  # wakes the task's A2A readers once this write commits


def send_task(hub: Hub, network_id: str, sender: str, body: SendTask, sender_kind: str = AGENT,
              schedule_id: str | None = None) -> dict[str, Any]:
    """Store a task in the recipient's inbox and push `new_task`; an idempotency key makes retries safe (and the
    loop guard answers an agent's same task again with the original: service/loopguard.py). A schedule's run
    passes its `schedule_id` (service/schedules.py), kept on the task."""
    loopguard.check_pair(hub, network_id, sender, sender_kind, body.to)
    pending: list[Event] = []
    with hub.db.write():
        # The checks run inside the write transaction (as in send_message): no read transactions of their own,
        # and a retry racing its first call cannot both pass the idempotency check.
        if body.idempotency_key:
            existing = task_store.find_by_idempotency_key(hub.db, network_id, sender, body.idempotency_key)
            if existing:
                return _task_result(hub, existing, session_store.get_session(hub.db, network_id, existing["to_name"]),
                                    duplicate=True)
        recipient = require_known_alias(hub, network_id, body.to)
        # A task with an idempotency key is the key's to judge (above): another key means another task on purpose.
        digest = None if body.idempotency_key else loopguard.digest_of(
            hub, network_id, sender, sender_kind, body.to, TASK, body.title, body.content, body.context,
            *attachments.digest_texts(body.attachments))
        original = loopguard.find_duplicate(hub, network_id, sender, body.to, digest)
        if original is not None and (found := task_store.get_task(hub.db, network_id, original["task_id"])):
            return _task_result(hub, found, recipient, duplicate=True)
        start_by_ts = _start_by_ts(body.start_by)
        quotas.check_store(hub, network_id, body.content, body.title, body.context)
        # The notice's text is the task's content (stored once, in the task).
        msg = message_row(network_id, sender, body.to, TASK, "", priority=body.priority,
                          from_kind=sender_kind)
        msg["content_hash"] = digest
        task = {"task_id": new_uuid(), "network_id": network_id, "from_name": sender, "from_kind": sender_kind,
                "to_name": body.to, "to_kind": AGENT, "title": body.title, "content": body.content,
                "context": body.context, "priority": body.priority, "status": DELIVERED, "deadline": body.deadline,
                "idempotency_key": body.idempotency_key, "message_id": msg["message_id"],
                "created_at": msg["created_at"], "created_ts": msg["created_ts"], "updated_at": msg["created_at"],
                "start_by": body.start_by, "start_by_ts": start_by_ts, "schedule_id": schedule_id}
        msg["task_id"] = task["task_id"]
        task_store.insert_task(hub.db, task)
        message_store.insert_message(hub.db, msg)
        files = attachments.attach(hub, network_id, task["task_id"], task["task_id"], body.attachments)
        loopguard.note_stored(hub, digest)
        _task_event(hub, task, DELIVERED, sender, body.title)
        hub.record_event(pending, network_id, body.to, NEW_TASK, {
            "type": NEW_TASK, "inbox_count": message_store.unread_count(hub.db, network_id, body.to),
            "priority": body.priority, "from": sender, "from_kind": sender_kind, "task_id": task["task_id"],
            "message_id": msg["message_id"], "title": body.title})
    hub.publish(pending)
    result = _task_result(hub, task, recipient, duplicate=False)
    if files:
        result["attachments"] = files
    return result


def _start_by_ts(start_by: float | str | None) -> float | None:
    """start_by (ISO 8601 UTC text: models.py turns every form into it) as a timestamp; one already past is
    refused (a task that could never start is a mistake, not a task)."""
    if start_by is None:
        return None
    ts = datetime.fromisoformat(str(start_by).replace("Z", "+00:00")).timestamp()
    if ts <= now_ts():
        raise ValidationFailed(f"start_by: {start_by} has already passed; give a later time or a number of seconds "
                               "from now (start_within_seconds)")
    return ts


def _task_result(hub: Hub, task: dict[str, Any], recipient: dict[str, Any] | None, *,
                 duplicate: bool) -> dict[str, Any]:
    return {"ok": True, "task_id": task["task_id"], "message_id": task["message_id"], "to": task["to_name"],
            "status": task["status"], "duplicate": duplicate, "deadline": task["deadline"],
            "start_by": task["start_by"], **queue_place(hub, task, recipient)}


def queue_place(hub: Hub, task: dict[str, Any], recipient: dict[str, Any] | None = None) -> dict[str, Any]:
    """Where a task stands with its recipient: `queue_position` (1 = next) among the recipient's open tasks by
    priority then age (null once final, or past the first QUEUE_SCAN), `ahead` (the ids before it, at most
    AHEAD_SHOWN), `ahead_count`, and whether the recipient is online and busy (working, or on another task)."""
    if recipient is None and task["to_kind"] == AGENT:
        recipient = session_store.get_session(hub.db, task["network_id"], task["to_name"])
    position, ahead, busy = None, [], False
    if task["to_kind"] == AGENT:
        queue = task_store.queue_of(hub.db, task["network_id"], task["to_name"], QUEUE_SCAN)
        ids = [r["task_id"] for r in queue]
        if task["task_id"] in ids:
            position = ids.index(task["task_id"]) + 1
            ahead = ids[:position - 1]
        busy = any(r["status"] in WORKING_TASK_STATUSES and r["task_id"] != task["task_id"] for r in queue)
    online = bool(recipient and is_online(hub, recipient))
    busy = busy or bool(online and recipient and effective_status(hub, recipient) == WORKING)
    return {"queue_position": position, "ahead": ahead[:AHEAD_SHOWN], "ahead_count": len(ahead),
            "recipient_online": online, "recipient_busy": busy}


def expire_task(hub: Hub, pending: list[Event], task: dict[str, Any]) -> bool:
    """End a task that was not started by its start_by as `expired` (inside db.write()): its timeline and a
    completion say so, its notice leaves the recipient's unread items, and its sender gets a reply with status
    `expired` (a new_reply event). False if the task was no longer waiting to start (it started meanwhile)."""
    task_id, network_id = task["task_id"], task["network_id"]
    now = now_text()
    if not task_store.set_status(hub.db, task_id, (DELIVERED,), EXPIRED, now):
        return False
    text = (f"Task {task_id} expired: {task['to_name']} had not started it by {task['start_by']}; it will not be "
            "started.")
    _task_event(hub, task, EXPIRED, HUB_ACTOR, f"not started by {task['start_by']}")
    task_store.insert_completion(hub.db, task_id, network_id, task["to_name"], EXPIRED, text, "[]",
                                 round(max(0.0, now_ts() - task["created_ts"]), 3), now)
    message_store.mark_task_items_read(hub.db, network_id, task["to_name"], [task_id], now)
    msg = message_row(network_id, task["to_name"], task["from_name"], REPLY, text, in_reply_to=task["message_id"],
                      task_id=task_id, status=EXPIRED, priority=task["priority"], to_kind=task["from_kind"])
    message_store.insert_message(hub.db, msg)
    record_reply_event(hub, pending, msg)
    return True


def is_past_start_by(task: dict[str, Any]) -> bool:
    """A task that has not started and whose start_by has passed: it must expire, never start."""
    return task["status"] == DELIVERED and task.get("start_by_ts") is not None and task["start_by_ts"] <= now_ts()


def any_due_to_expire(hub: Hub) -> bool:
    """Whether some task's start_by has passed while it waits (a read: the round writes only when there is work)."""
    return bool(task_store.due_to_expire(hub.db, now_ts(), 1))


def expire_due(hub: Hub, limit: int) -> int:
    """Expire up to `limit` tasks whose start_by has passed (the background job's round); returns how many."""
    pending: list[Event] = []
    expired = 0
    with hub.db.write():
        for task in task_store.due_to_expire(hub.db, now_ts(), limit):
            expired += expire_task(hub, pending, task)
    hub.publish(pending)
    return expired


def _refuse_if_expired(hub: Hub, task: dict[str, Any]) -> None:
    """The start-time check: a task past its start_by expires now (if the job has not done it yet) and the
    recipient's report on it is refused, so a late job can never let it start."""
    if task["status"] == EXPIRED or is_past_start_by(task):
        if task["status"] != EXPIRED:
            pending: list[Event] = []
            with hub.db.write():
                expire_task(hub, pending, task)
            hub.publish(pending)
        raise Conflict(f"task {task['task_id']} expired: it was not started by its start_by ({task['start_by']}), "
                       "so it must not be started now; its sender was told", code="task_final")


def get_task_row(hub: Hub, network_id: str, task_id: str) -> dict[str, Any]:
    """A task of the network, or an error that says what the id is if it is not a task id."""
    task = task_store.get_task(hub.db, network_id, task_id)
    if task is None:
        if message_store.get_message(hub.db, network_id, task_id) is not None:
            raise NotFound(f"'{task_id}' is a message id, not a task id: pass it as message_id",
                           code="task_not_found")
        raise NotFound(f"task '{task_id}' not found in this network; check the id with "
                       + hint("list_tasks", "GET /api/tasks"), code="task_not_found")
    return task


def reply_on_task(hub: Hub, network_id: str, actor: str, actor_kind: str, task: dict[str, Any], content: str,
                  status: str | None, in_reply_to: str | None = None, artifacts: list[str] | None = None,
                  progress: float | str | None = None, overseer: bool = False,
                  files: Sequence[Any] = ()) -> dict[str, Any]:
    """A reply about a task: its recipient reports (status required), its sender answers (no status); a person
    who is owner/admin of the network (`overseer`) may answer as its sender would (docs/concepts.md: a person's answer).
    `files`: the attachments it carries (ids or inline files: service/attachments.py)."""
    is_recipient = actor == task["to_name"] and actor_kind == task["to_kind"]
    is_sender = actor == task["from_name"] and actor_kind == task["from_kind"]
    if is_recipient and (status is not None or not is_sender):
        return _recipient_reply(hub, network_id, actor, task, content, status, artifacts, progress, files)
    if is_sender or (overseer and actor_kind == PERSON):
        return _sender_answer(hub, network_id, actor, actor_kind, task, content, status, in_reply_to, files)
    raise Forbidden(f"only the task's recipient ('{task['to_name']}') or its sender ('{task['from_name']}') can reply "
                    f"to task {task['task_id']}; to write to '{task['to_name']}' use "
                    + hint("send_message", "POST /api/messages"), code="not_recipient")


def _require_open(task: dict[str, Any]) -> None:
    if task["status"] in FINAL_TASK_STATUSES:
        raise Conflict(f"task {task['task_id']} is already {task['status']}; a final task cannot change",
                       code="task_final")


def _recipient_reply(hub: Hub, network_id: str, actor: str, task: dict[str, Any], content: str, status: str | None,
                     artifacts: list[str] | None, progress: float | str | None = None,
                     files: Sequence[Any] = ()) -> dict[str, Any]:
    task_id = task["task_id"]
    _refuse_if_expired(hub, task)
    _require_open(task)
    if status is None:
        raise ValidationFailed(f"status: required when you reply to task {task_id}, which was sent to you; choose "
                               f"{REPLY_STATUS_RULE}", code="status_required")
    new_status = REPLY_TO_TASK_STATUS[status]
    try:
        return _store_recipient_reply(hub, network_id, actor, task, content, status, new_status, artifacts,
                                      progress, files)
    except _Expired as late:  # its start_by passed after it was read: expire it (a new transaction), refuse
        _refuse_if_expired(hub, late.task)
        raise


class _Expired(Exception):
    """Raised inside a write that would start a task past its start_by (the write rolls back)."""

    def __init__(self, task: dict[str, Any]):
        super().__init__(task["task_id"])
        self.task = task


def _store_recipient_reply(hub: Hub, network_id: str, actor: str, task: dict[str, Any], content: str, status: str,
                           new_status: str, artifacts: list[str] | None,
                           progress: float | str | None, files: Sequence[Any] = ()) -> dict[str, Any]:
    task_id = task["task_id"]
    pending: list[Event] = []
    with hub.db.write():
        quotas.check_store(hub, network_id, content, *(artifacts or []))
        now = now_text()
        # the result: in the completion
        if not task_store.set_status(hub.db, task_id, OPEN_TASK_STATUSES, new_status, now, started_by_ts=now_ts()):
            if (fresh := task_store.get_task(hub.db, network_id, task_id)) and is_past_start_by(fresh):
                raise _Expired(fresh)  # its start_by passed since it was read: it expires, never starts
            raise Conflict(f"task {task_id} changed state meanwhile; fetch it with "
                           + hint("get_task", f"GET /api/tasks/{task_id}"), code="task_final")
        if task["status"] == DELIVERED:
            _task_event(hub, task, RUNNING, actor)
        _task_event(hub, task, status if status in (PROGRESS, QUESTION) else new_status, actor, excerpt(content))
        if new_status in FINAL_TASK_STATUSES:
            duration = max(0.0, now_ts() - task["created_ts"])
            task_store.insert_completion(hub.db, task_id, network_id, actor, new_status, content,
                                         json.dumps(artifacts or []), round(duration, 3), now)
            session_store.clear_work(hub.db, network_id, actor)
        elif progress is not None:
            session_store.update_report(hub.db, network_id, actor, {"progress": progress})
        msg = message_row(network_id, actor, task["from_name"], REPLY, content, in_reply_to=task["message_id"],
                          task_id=task_id, status=status, priority=task["priority"], to_kind=task["from_kind"])
        message_store.insert_message(hub.db, msg)
        stored = attachments.attach(hub, network_id, msg["message_id"], task_id, files)
        record_reply_event(hub, pending, msg)
    hub.publish(pending)
    result = {"ok": True, "message_id": msg["message_id"], "in_reply_to": task["message_id"], "to": task["from_name"],
              "to_kind": task["from_kind"], "task_id": task_id, "status": status, "task_status": new_status}
    if stored:
        result["attachments"] = stored
    if progress is not None:
        result["progress"] = progress
    if status == QUESTION:
        result["next_step"] = (f"task {task_id} now waits for input (input_required); {task['from_name']}'s answer "
                               "arrives as a new_reply with this task_id in " + hint("get_inbox", "your inbox")
                               + "; reply with status 'progress', 'done' or 'failed' to continue")
    return result


def ask_on_task(hub: Hub, network_id: str, alias: str, task: dict[str, Any], question: str) -> dict[str, Any]:
    """The recipient asks about its open task (a `question` reply): the task waits as input_required."""
    return _recipient_reply(hub, network_id, alias, task, question, QUESTION, None)


def _sender_answer(hub: Hub, network_id: str, actor: str, actor_kind: str, task: dict[str, Any], content: str,
                   status: str | None, in_reply_to: str | None, files: Sequence[Any] = ()) -> dict[str, Any]:
    task_id = task["task_id"]
    if status is not None:
        raise ValidationFailed(f"status: leave it out: you sent task {task_id}, so your reply is an answer to its "
                               f"recipient '{task['to_name']}' (status is how the recipient reports); to stop the "
                               "task use " + hint("cancel_task", f"POST /api/tasks/{task_id}/cancel"),
                               code="status_not_allowed")
    _require_open(task)
    pending: list[Event] = []
    with hub.db.write():
        quotas.check_store(hub, network_id, content)
        _task_event(hub, task, ANSWER, actor, excerpt(content))
        msg = message_row(network_id, actor, task["to_name"], REPLY, content,
                          in_reply_to=in_reply_to or task["message_id"], task_id=task_id, status="answer",
                          priority=task["priority"], from_kind=actor_kind, to_kind=task["to_kind"])
        message_store.insert_message(hub.db, msg)
        stored = attachments.attach(hub, network_id, msg["message_id"], task_id, files)
        record_reply_event(hub, pending, msg)
    hub.publish(pending)
    result = {"ok": True, "message_id": msg["message_id"], "in_reply_to": msg["in_reply_to"], "to": task["to_name"],
              "to_kind": task["to_kind"], "task_id": task_id, "status": "answer", "task_status": task["status"]}
    if stored:
        result["attachments"] = stored
    return result


def report_completion(hub: Hub, network_id: str, sender: str, task_id: str, result: str,
                      artifacts: list[str], files: Sequence[Any] = ()) -> dict[str, Any]:
    """Finish a received task as replied, with its result, artifacts and attached files."""
    task = get_task_row(hub, network_id, task_id)
    if sender != task["to_name"] or task["to_kind"] != AGENT:
        raise Forbidden(f"only the task's recipient ('{task['to_name']}') can complete task {task_id}",
                        code="not_recipient")
    return _recipient_reply(hub, network_id, sender, task, result, DONE, artifacts, files=files)


def start_tasks(hub: Hub, network_id: str, alias: str, rows: list[dict[str, Any]],
                pending: list[Event] | None = None) -> list[str]:
    """Tasks the recipient has taken (fetched or acked) move delivered -> running (inside db.write()); one past
    its start_by expires instead (its events go to `pending`), whatever the expiry job has done so far."""
    now = now_text()
    started = []
    for row in rows:
        if row["kind"] == TASK and row["task_id"]:
            if task_store.set_status(hub.db, row["task_id"], (DELIVERED,), RUNNING, now, started_by_ts=now_ts()):
                task_store.insert_task_event(hub.db, row["task_id"], network_id, RUNNING, alias, None, now)
                hub.broker.tasks.changed(row["task_id"])
                started.append(row["task_id"])
            elif (task := task_store.get_task(hub.db, network_id, row["task_id"])) and is_past_start_by(task):
                expire_task(hub, pending if pending is not None else [], task)  # past its start_by: never started
    return started


def open_tasks(hub: Hub, network_id: str, alias: str) -> list[dict[str, Any]]:
    """The caller's tasks that are not final, fetched or not (they stay listed until they end)."""
    return task_store.open_tasks_of(hub.db, network_id, alias, 500)


def _with_timeline(hub: Hub, task: dict[str, Any]) -> dict[str, Any]:
    place = queue_place(hub, task)
    task.pop("created_ts", None)
    task.pop("start_by_ts", None)
    events = task_store.list_task_events(hub.db, [task["network_id"]], task["task_id"], 1000, 0)
    completion = task_store.get_completion(hub.db, task["task_id"])
    if completion:
        completion["artifacts"] = json.loads(completion["artifacts"])
    task["attachments"], reply_files = attachments.of_task(hub, task["task_id"])
    return {"ok": True, "task": task, "events": events, "completion": completion, **place,
            "reply_attachments": reply_files}


def get_task(hub: Hub, network_id: str, task_id: str) -> dict[str, Any]:
    """One task with its event log and completion."""
    return _with_timeline(hub, get_task_row(hub, network_id, task_id))


def find_task(hub: Hub, network_ids: list[str], task_id: str) -> dict[str, Any]:
    """A task in any of the caller's networks (REST: a person need not name the network)."""
    task = task_store.find_task(hub.db, network_ids, task_id)
    if task is None:
        raise NotFound(f"task '{task_id}' not found in your networks; list them with GET /api/tasks",
                       code="task_not_found")
    return task


def get_task_in(hub: Hub, network_ids: list[str], task_id: str) -> dict[str, Any]:
    """GET /api/tasks/<id>: the task, its event timeline and completion."""
    return _with_timeline(hub, find_task(hub, network_ids, task_id))


def list_tasks(hub: Hub, network_ids: list[str], status: str | None, to_name: str | None, from_name: str | None,
               limit: int | None, offset: int = 0, flag: str | None = None) -> dict[str, Any]:
    """Tasks, newest first (with `flag`, only the tasks carrying that flag)."""
    if flag is not None and flag not in TASK_FLAGS:
        raise ValidationFailed(f"flag: must be one of {', '.join(TASK_FLAGS)}")
    rows = task_store.list_tasks(hub.db, network_ids, status, to_name, from_name, clamp_limit(limit), offset, flag)
    return {"ok": True, "tasks": rows}


def list_tasks_json(hub: Hub, network_ids: list[str], status: str | None, to_name: str | None,
                    from_name: str | None, limit: int | None, offset: int = 0, flag: str | None = None) -> str:
    """list_tasks as JSON text (the REST answer, built by SQLite)."""
    rows = task_store.list_tasks_json(hub.db, network_ids, status, to_name, from_name, clamp_limit(limit), offset,
                                      flag)
    return '{"ok":true,"tasks":' + rows + "}"


def cancel_task(hub: Hub, principal: Principal, network_id: str, actor: str | None, task_id: str,
                reason: str | None) -> dict[str, Any]:
    """Cancel an open task: its sender, or an owner/admin of the network. Notifies the recipient."""
    task = get_task_row(hub, network_id, task_id)
    # An alias (MCP, or a network token over REST) acts as an agent; a person without one as their username.
    actor_kind = AGENT if actor is not None else PERSON
    if actor is None and principal.kind == "user":
        actor = principal.user["username"]
    is_sender = actor is not None and actor == task["from_name"] and actor_kind == task["from_kind"]
    # The owner/admin override belongs to people (user tokens): an agent running on a token its owner created
    # may cancel only what it sent.
    role = network_store.get_member_role(hub.db, network_id, principal.user_id) if principal.kind == "user" else None
    if not (is_sender or auth.role_at_least(role, "admin") or principal.is_system_admin):
        raise Forbidden(f"only the sender ('{task['from_name']}') or a network owner/admin can cancel task "
                        f"{task_id}", code="not_allowed")
    _require_open(task)
    who = actor or principal.user["username"]
    pending: list[Event] = []
    with hub.db.write():
        now = now_text()
        if not task_store.set_status(hub.db, task_id, OPEN_TASK_STATUSES, CANCELLED, now):
            raise Conflict(f"task {task_id} changed state meanwhile; fetch it with "
                           + hint("get_task", f"GET /api/tasks/{task_id}"), code="task_final")
        _task_event(hub, task, CANCELLED, who, reason)
        task_store.insert_completion(hub.db, task_id, network_id, task["to_name"], CANCELLED, reason, "[]",
                                     round(max(0.0, now_ts() - task["created_ts"]), 3), now)
        text = f"Task {task_id} was cancelled by {who}" + (f": {reason}" if reason else "")
        msg = message_row(network_id, who, task["to_name"], NOTICE, text, task_id=task_id, priority="high",
                          from_kind=actor_kind)
        message_store.insert_message(hub.db, msg)
        hub.record_event(pending, network_id, task["to_name"], NEW_MESSAGE, {
            "type": NEW_MESSAGE, "message": text, "from": who, "from_kind": actor_kind,
            "message_id": msg["message_id"], "task_id": task_id})
    hub.publish(pending)
    return {"ok": True, "task_id": task_id, "status": CANCELLED, "message_id": msg["message_id"]}


def is_overseer(hub: Hub, principal: Principal, network_id: str) -> bool:
    """A person (user token) who is owner/admin of the network, or the system admin. As for cancel, this override
    belongs to people, never to an agent running on a token its owner created."""
    if principal.kind != "user":
        return False
    return principal.is_system_admin or auth.role_at_least(
        network_store.get_member_role(hub.db, network_id, principal.user_id), "admin")


def flag_task(hub: Hub, principal: Principal, network_id: str, actor: str | None, task_id: str, flag: str | None,
              note: str | None) -> dict[str, Any]:
    """Set a flag on an open task (its recipient, or an owner/admin) or clear it (an owner/admin, or its sender);
    the timeline records it. Setting the flag a task already has changes nothing."""
    if flag is not None and flag not in TASK_FLAGS:
        raise ValidationFailed(f"flag: must be one of {', '.join(TASK_FLAGS)}, or null to clear it")
    task = get_task_row(hub, network_id, task_id)
    actor_kind = AGENT if actor is not None else PERSON
    if actor is None and principal.kind == "user":
        actor = principal.user["username"]
    is_recipient = actor == task["to_name"] and actor_kind == task["to_kind"]
    is_sender = actor == task["from_name"] and actor_kind == task["from_kind"]
    overseer = is_overseer(hub, principal, network_id)
    if not (overseer or (is_recipient if flag is not None else is_sender)):
        who = "its recipient" if flag is not None else "its sender"
        raise Forbidden(f"only {who} ('{task['to_name' if flag is not None else 'from_name']}') or a network "
                        f"owner/admin can {'flag' if flag is not None else 'clear the flag of'} task {task_id}",
                        code="not_allowed")
    if flag is not None:
        _require_open(task)
    who = actor or principal.user["username"]
    with hub.db.write():
        now = now_text()
        if task_store.set_flag(hub.db, task_id, flag, now):
            detail = f"{flag}: {note}" if flag and note else flag or note
            _task_event(hub, task, FLAGGED if flag is not None else UNFLAGGED, who, detail)
            task = {**task, "flag": flag, "flagged_at": now if flag is not None else None}
    return {"ok": True, "task_id": task_id, "flag": task["flag"], "flagged_at": task["flagged_at"]}


def list_completions(hub: Hub, network_ids: list[str], alias: str | None, limit: int | None,
                     offset: int = 0) -> dict[str, Any]:
    """Completion records, newest first."""
    rows = task_store.list_completions(hub.db, network_ids, alias, clamp_limit(limit), offset)
    for r in rows:
        r["artifacts"] = json.loads(r["artifacts"])
    return {"ok": True, "completions": rows}


def list_completions_json(hub: Hub, network_ids: list[str], alias: str | None, limit: int | None,
                          offset: int = 0) -> str:
    """list_completions as JSON text (the REST answer, built by SQLite)."""
    rows = task_store.list_completions_json(hub.db, network_ids, alias, clamp_limit(limit), offset)
    return '{"ok":true,"completions":' + rows + "}"


def list_task_events(hub: Hub, network_ids: list[str], task_id: str | None, limit: int | None,
                     offset: int = 0) -> dict[str, Any]:
    """The task event log, oldest first."""
    return {"ok": True, "events": task_store.list_task_events(hub.db, network_ids, task_id,
                                                              clamp_limit(limit, 100, 1000), offset)}


def list_task_events_json(hub: Hub, network_ids: list[str], task_id: str | None, limit: int | None,
                          offset: int = 0) -> str:
    """list_task_events as JSON text (the REST answer, built by SQLite)."""
    rows = task_store.list_task_events_json(hub.db, network_ids, task_id, clamp_limit(limit, 100, 1000), offset)
    return '{"ok":true,"events":' + rows + "}"
