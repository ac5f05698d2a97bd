"""Tasks, messages, replies and broadcasts: the lifecycle rules, and the events they push."""

from __future__ import annotations

import json
from typing import Any

import trio

from .. import auth
from ..broker import Event
from ..errors import Conflict, Forbidden, NotFound, ValidationFailed
from ..ids import new_id, new_uuid, now_text, now_ts
from ..models import MAX_LIMIT, Broadcast, SendMessage, SendReply, SendTask
from ..store import messages as message_store
from ..store import networks as network_store
from ..store import sessions as session_store
from ..store import tasks as task_store
from .hub import Hub, Principal, clamp_limit
from .sessions import effective_status, is_online, require_known_alias

FINAL = ("replied", "failed", "cancelled")
EXCERPT_CHARS = 120  # a task event shows the start of a reply; the whole text is the reply and the completion


def excerpt(text: str) -> str:
    """The start of a text for a task event's detail (the full text is stored elsewhere, once)."""
    return text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS - 1] + "…"
OPEN = ("delivered", "running")


def _message_row(network_id: str, sender: str, to: str, kind: str, content: str, *, priority: str = "normal",
                 in_reply_to: str | None = None, task_id: str | None = None,
                 status: str | None = None) -> dict[str, Any]:
    ts = now_ts()
    return {"message_id": new_id("msg"), "network_id": network_id, "from_name": sender, "to_name": to,
            "kind": kind, "content": content, "priority": priority, "in_reply_to": in_reply_to,
            "task_id": task_id, "status": status, "created_at": now_text(), "created_ts": ts}


def _task_event(hub: Hub, task: dict[str, Any], event: str, actor: str, detail: str | None = None) -> None:
    task_store.insert_task_event(hub.db, task["task_id"], task["network_id"], event, actor, detail, now_text())


def send_task(hub: Hub, network_id: str, sender: str, body: SendTask) -> dict[str, Any]:
    """Store a task in the recipient's inbox and push `new_task`; an idempotency key makes retries safe."""
    if body.idempotency_key:
        existing = task_store.find_by_idempotency_key(hub.db, network_id, sender, body.idempotency_key)
        if existing:
            return _task_result(hub, existing, duplicate=True)
    require_known_alias(hub, network_id, body.to)
    pending: list[Event] = []
    with hub.db.write():
        # The notice's text is the task's content (stored once, in the task).
        msg = _message_row(network_id, sender, body.to, "task", "", priority=body.priority)
        task = {"task_id": new_uuid(), "network_id": network_id, "from_name": sender, "to_name": body.to,
                "title": body.title, "content": body.content, "context": body.context, "priority": body.priority,
                "status": "delivered", "deadline": body.deadline, "idempotency_key": body.idempotency_key,
                "message_id": msg["message_id"], "created_at": msg["created_at"], "created_ts": msg["created_ts"],
                "updated_at": msg["created_at"]}
        msg["task_id"] = task["task_id"]
        task_store.insert_task(hub.db, task)
        message_store.insert_message(hub.db, msg)
        _task_event(hub, task, "delivered", sender, body.title)
        hub.record_event(pending, network_id, body.to, "new_task", {
            "type": "new_task", "inbox_count": message_store.unread_count(hub.db, network_id, body.to),
            "priority": body.priority, "from": sender, "task_id": task["task_id"],
            "message_id": msg["message_id"], "title": body.title})
    hub.publish(pending)
    return _task_result(hub, task, duplicate=False)


def _task_result(hub: Hub, task: dict[str, Any], *, duplicate: bool) -> dict[str, Any]:
    recipient = session_store.get_session(hub.db, task["network_id"], task["to_name"])
    return {"ok": True, "task_id": task["task_id"], "message_id": task["message_id"], "to": task["to_name"],
            "status": task["status"], "duplicate": duplicate,
            "recipient_online": bool(recipient and is_online(hub, recipient))}


def send_message(hub: Hub, network_id: str, sender: str, body: SendMessage) -> dict[str, Any]:
    """Store a plain message in the recipient's inbox and push `new_message`."""
    recipient = require_known_alias(hub, network_id, body.to)
    pending: list[Event] = []
    with hub.db.write():
        msg = _message_row(network_id, sender, body.to, "message", body.content)
        message_store.insert_message(hub.db, msg)
        hub.record_event(pending, network_id, body.to, "new_message", {
            "type": "new_message", "message": body.content, "from": sender, "message_id": msg["message_id"]})
    hub.publish(pending)
    return {"ok": True, "message_id": msg["message_id"], "to": body.to,
            "recipient_online": is_online(hub, recipient)}


def send_reply(hub: Hub, network_id: str, sender: str, body: SendReply) -> dict[str, Any]:
    """Reply to a message or task; on a task, `done`/`failed` end it and `progress` marks it running."""
    if not body.message_id and not body.task_id:
        raise ValidationFailed("message_id or task_id: give the message or task you are replying to")
    original = None
    if body.message_id:
        original = message_store.get_message(hub.db, network_id, body.message_id)
        if original is None:
            raise NotFound(f"message '{body.message_id}' not found in this network", code="message_not_found")
    task_id = body.task_id or (original["task_id"] if original else None)
    if task_id:
        return _reply_to_task(hub, network_id, sender, task_id, body.content, body.status)
    assert original is not None
    if sender != original["to"]:
        raise Forbidden(f"only the recipient of message '{body.message_id}' can reply to it; use send_message "
                        f"to write to '{original['from']}'", code="not_recipient")
    pending: list[Event] = []
    with hub.db.write():
        msg = _message_row(network_id, sender, original["from"], "reply", body.content,
                           in_reply_to=original["message_id"], status=body.status)
        message_store.insert_message(hub.db, msg)
        _record_reply_event(hub, pending, msg)
    hub.publish(pending)
    return {"ok": True, "message_id": msg["message_id"], "in_reply_to": original["message_id"],
            "to": original["from"], "task_id": None, "status": body.status}


def _record_reply_event(hub: Hub, pending: list[Event], msg: dict[str, Any]) -> None:
    hub.record_event(pending, msg["network_id"], msg["to_name"], "new_reply", {
        "type": "new_reply", "from": msg["from_name"], "message_id": msg["message_id"],
        "in_reply_to": msg["in_reply_to"], "status": msg["status"], "task_id": msg["task_id"]})


def _get_task_for(hub: Hub, network_id: str, task_id: str) -> dict[str, Any]:
    task = task_store.get_task(hub.db, network_id, task_id)
    if task is None:
        raise NotFound(f"task '{task_id}' not found in this network; check the id with list_tasks",
                       code="task_not_found")
    return task


def _reply_to_task(hub: Hub, network_id: str, sender: str, task_id: str, content: str, status: str,
                   artifacts: list[str] | None = None) -> dict[str, Any]:
    task = _get_task_for(hub, network_id, task_id)
    if sender != task["to_name"]:
        raise Forbidden(f"only the task's recipient ('{task['to_name']}') can reply to task {task_id}; use "
                        f"send_message to write to it", code="not_recipient")
    if task["status"] in FINAL:
        raise Conflict(f"task {task_id} is already {task['status']}; a final task cannot change",
                       code="task_final")
    new_status = {"done": "replied", "failed": "failed", "progress": "running"}[status]
    pending: list[Event] = []
    with hub.db.write():
        now = now_text()
        if not task_store.set_status(hub.db, task_id, OPEN, new_status, now):  # the result: in the completion
            raise Conflict(f"task {task_id} changed state meanwhile; fetch it with get_task", code="task_final")
        if task["status"] == "delivered":
            _task_event(hub, task, "running", sender)
        _task_event(hub, task, "progress" if status == "progress" else new_status, sender, excerpt(content))
        if new_status in FINAL:
            duration = max(0.0, now_ts() - task["created_ts"])
            task_store.insert_completion(hub.db, task_id, network_id, sender, new_status, content,
                                         json.dumps(artifacts or []), round(duration, 3), now)
            session_store.clear_work(hub.db, network_id, sender)
        msg = _message_row(network_id, sender, task["from_name"], "reply", content, in_reply_to=task["message_id"],
                           task_id=task_id, status=status, priority=task["priority"])
        message_store.insert_message(hub.db, msg)
        _record_reply_event(hub, pending, msg)
    hub.publish(pending)
    return {"ok": True, "message_id": msg["message_id"], "in_reply_to": task["message_id"], "to": task["from_name"],
            "task_id": task_id, "status": status, "task_status": new_status}


def report_completion(hub: Hub, network_id: str, sender: str, task_id: str, result: str,
                      artifacts: list[str]) -> dict[str, Any]:
    """Finish a received task as replied, with its result and artifacts."""
    return _reply_to_task(hub, network_id, sender, task_id, result, "done", artifacts)


def broadcast(hub: Hub, network_id: str, sender: str, body: Broadcast) -> dict[str, Any]:
    """Put the content in the inbox of every other session (optionally of one status) and push `broadcast`."""
    targets = [r for r in session_store.list_sessions(hub.db, [network_id]) if r["alias"] != sender]
    if body.filter_status:
        targets = [r for r in targets if effective_status(hub, r) == body.filter_status]
    if not targets:
        raise NotFound("no other session in this network matches; nobody would receive this broadcast",
                       code="no_recipients")
    pending: list[Event] = []
    ids: dict[str, str] = {}
    with hub.db.write():
        body_id = message_store.insert_body(hub.db, body.content)  # one text for every copy
        for row in targets:
            msg = _message_row(network_id, sender, row["alias"], "broadcast", "")
            msg["body_id"] = body_id
            message_store.insert_message(hub.db, msg)
            ids[row["alias"]] = msg["message_id"]
            hub.record_event(pending, network_id, row["alias"], "broadcast", {
                "type": "broadcast", "content": body.content, "from": sender, "message_id": msg["message_id"]})
    hub.publish(pending)
    return {"ok": True, "message_id": next(iter(ids.values())), "message_ids": ids, "recipients": len(ids)}


def _with_task_details(hub: Hub, network_id: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for item in items:
        if item["kind"] == "task" and item["task_id"]:
            task = task_store.get_task(hub.db, network_id, item["task_id"])
            if task:
                item.update(title=task["title"], context=task["context"], deadline=task["deadline"],
                            task_status=task["status"])
    return items


def _start_tasks(hub: Hub, network_id: str, alias: str, rows: list[dict[str, Any]]) -> None:
    """Tasks the recipient has taken (fetched or acked) move delivered -> running (inside db.write())."""
    now = now_text()
    for row in rows:
        if row["kind"] == "task" and row["task_id"]:
            if task_store.set_status(hub.db, row["task_id"], ("delivered",), "running", now):
                task_store.insert_task_event(hub.db, row["task_id"], network_id, "running", alias, None, now)


async def get_inbox(hub: Hub, network_id: str, alias: str, limit: int, wait_seconds: float) -> dict[str, Any]:
    """Unread items, urgent first; waits up to `wait_seconds` for one to arrive when the inbox is empty."""
    limit = min(limit, MAX_LIMIT)
    items = message_store.unread(hub.db, network_id, alias, limit)
    if not items and wait_seconds > 0:
        # Subscribe before re-checking, so an item that lands in between is not missed.
        with hub.broker.subscribe(network_id, alias, buffer=16) as sub:
            with trio.move_on_after(wait_seconds):
                while not (items := message_store.unread(hub.db, network_id, alias, limit)):
                    try:
                        await sub.receive.receive()
                    except (trio.EndOfChannel, trio.ClosedResourceError):
                        # Shutdown, or a burst overflowed the buffer: answer with what there is now.
                        items = message_store.unread(hub.db, network_id, alias, limit)
                        break
    if items:
        with hub.db.write():
            _start_tasks(hub, network_id, alias, items)
    items = _with_task_details(hub, network_id, items)
    return {"ok": True, "alias": alias, "items": items, "count": len(items),
            "inbox_count": message_store.unread_count(hub.db, network_id, alias)}


def ack_inbox(hub: Hub, network_id: str, alias: str, message_ids: list[str] | None, ack_all: bool) -> dict[str, Any]:
    """Mark items read (acking a task notice starts the task)."""
    if not message_ids and not ack_all:
        raise ValidationFailed("message_ids: give the ids to ack, or all=true")
    with hub.db.write():
        now = now_text()
        if ack_all:
            changed = message_store.mark_all_read(hub.db, network_id, alias, now)
        else:
            changed = message_store.mark_read(hub.db, network_id, alias, list(message_ids or []), now)
        _start_tasks(hub, network_id, alias, changed)
    acked = [r["message_id"] for r in changed]
    unknown = [m for m in (message_ids or []) if m not in acked]
    return {"ok": True, "acked": acked, "not_acked": unknown,
            "inbox_count": message_store.unread_count(hub.db, network_id, alias)}


def get_task(hub: Hub, network_id: str, task_id: str) -> dict[str, Any]:
    """One task with its event log and completion."""
    task = _get_task_for(hub, network_id, task_id)
    task.pop("created_ts", None)
    events = task_store.list_task_events(hub.db, [network_id], task_id, 1000, 0)
    completion = task_store.get_completion(hub.db, task_id)
    if completion:
        completion["artifacts"] = json.loads(completion["artifacts"])
    return {"ok": True, "task": task, "events": events, "completion": completion}


def list_tasks(hub: Hub, network_ids: list[str], status: str | None, to_name: str | None, from_name: str | None,
               limit: int | None, offset: int = 0) -> dict[str, Any]:
    """Tasks, newest first."""
    rows = task_store.list_tasks(hub.db, network_ids, status, to_name, from_name, clamp_limit(limit), offset)
    return {"ok": True, "tasks": rows}


def cancel_task(hub: Hub, principal: Principal, network_id: str, actor: str | None, task_id: str,
                reason: str | None) -> dict[str, Any]:
    """Cancel an open task: its sender, or an owner/admin of the network. Notifies the recipient."""
    task = _get_task_for(hub, network_id, task_id)
    is_sender = actor is not None and actor == task["from_name"]
    # The owner/admin override belongs to people (user tokens): an agent running on a token its owner created
    # may cancel only what it sent.
    role = network_store.get_member_role(hub.db, network_id, principal.user_id) if principal.kind == "user" else None
    if not (is_sender or auth.role_at_least(role, "admin") or principal.is_system_admin):
        raise Forbidden(f"only the sender ('{task['from_name']}') or a network owner/admin can cancel task "
                        f"{task_id}", code="not_allowed")
    if task["status"] in FINAL:
        raise Conflict(f"task {task_id} is already {task['status']}; a final task cannot change", code="task_final")
    who = actor or principal.user["username"]
    pending: list[Event] = []
    with hub.db.write():
        now = now_text()
        if not task_store.set_status(hub.db, task_id, OPEN, "cancelled", now):
            raise Conflict(f"task {task_id} changed state meanwhile; fetch it with get_task", code="task_final")
        _task_event(hub, task, "cancelled", who, reason)
        task_store.insert_completion(hub.db, task_id, network_id, task["to_name"], "cancelled", reason, "[]",
                                     round(max(0.0, now_ts() - task["created_ts"]), 3), now)
        text = f"Task {task_id} was cancelled by {who}" + (f": {reason}" if reason else "")
        msg = _message_row(network_id, who, task["to_name"], "notice", text, task_id=task_id, priority="high")
        message_store.insert_message(hub.db, msg)
        hub.record_event(pending, network_id, task["to_name"], "new_message", {
            "type": "new_message", "message": text, "from": who, "message_id": msg["message_id"],
            "task_id": task_id})
    hub.publish(pending)
    return {"ok": True, "task_id": task_id, "status": "cancelled", "message_id": msg["message_id"]}


def list_messages(hub: Hub, network_ids: list[str], alias: str | None, kind: str | None, unread_only: bool,
                  limit: int | None, offset: int = 0) -> dict[str, Any]:
    """Messages (an alias's inbox when `alias` is given), newest first."""
    rows = message_store.list_messages(hub.db, network_ids, alias, kind, unread_only, clamp_limit(limit), offset)
    return {"ok": True, "messages": rows}


def list_completions(hub: Hub, network_ids: list[str], alias: str | None, limit: int | None,
                     offset: int = 0) -> dict[str, Any]:
    """Completion records, newest first."""
    rows = task_store.list_completions(hub.db, network_ids, alias, clamp_limit(limit), offset)
    for r in rows:
        r["artifacts"] = json.loads(r["artifacts"])
    return {"ok": True, "completions": rows}


def list_task_events(hub: Hub, network_ids: list[str], task_id: str | None, limit: int | None,
                     offset: int = 0) -> dict[str, Any]:
    """The task event log, oldest first."""
    return {"ok": True, "events": task_store.list_task_events(hub.db, network_ids, task_id,
                                                              clamp_limit(limit, 100, 1000), offset)}
