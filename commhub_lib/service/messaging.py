"""Messages, replies, broadcasts and the inbox (unread items plus the open tasks that never vanish from it).

Task rules live in service/tasks.py.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any, cast

import trio

from ..broker import Event, Subscriber
from ..errors import Conflict, Forbidden, NotFound, Unauthorized, ValidationFailed
from ..ids import now_text
from ..models import MAX_LIMIT, Broadcast, SendMessage, SendReply
from ..store import approvals as approval_store
from ..store import messages as message_store
from ..store import sessions as session_store
from ..store import tasks as task_store
from ..store import tokens as token_store
from ..vocabulary import AGENT, BROADCAST, EXPIRED, MESSAGE, NEW_MESSAGE, PERSON, PROGRESS, TASK
from . import attachments, loopguard, quotas
from .guard import Grant
from .hub import Hub, SharedText, clamp_limit, hint
from .sessions import effective_status, is_online, require_known_alias
from .tasks import (
    get_task_row,
    message_row,
    open_tasks,
    record_reply_event,
    reply_on_task,
    start_tasks,
)


def send_message(hub: Hub, network_id: str, sender: str, body: SendMessage, sender_kind: str = AGENT) -> dict[str, Any]:
    """Store a plain message in the recipient's inbox and push `new_message` (an agent's duplicate within the window
    is answered with the original's id instead, and too many to one agent are refused: service/loopguard.py)."""
    loopguard.check_pair(hub, network_id, sender, sender_kind, body.to)
    pending: list[Event] = []
    with hub.db.write():
        stored = _store_message(hub, network_id, sender, body, sender_kind, pending)
    hub.publish(pending)
    return _message_sent(hub, body, *stored)


async def send_message_together(hub: Hub, network_id: str, sender: str, body: SendMessage,
                                sender_kind: str = AGENT) -> dict[str, Any]:
    """send_message, committed together with the other sends of the same scheduler pass (db.write_together:
    the busy MCP path); answered only once committed, its event pushed right after the commit."""
    loopguard.check_pair(hub, network_id, sender, sender_kind, body.to)
    pending: list[Event] = []
    stored = await hub.db.write_together(lambda: _store_message(hub, network_id, sender, body, sender_kind, pending),
                                         lambda _: hub.publish(pending))
    return _message_sent(hub, body, *stored)


def _store_message(hub: Hub, network_id: str, sender: str, body: SendMessage, sender_kind: str,
                   pending: list[Event]) -> tuple[dict[str, Any], dict[str, Any], bool]:
    """The writes of a send (inside a write transaction): (the message row, the recipient's session, whether it is
    a duplicate: then the row is the original's and nothing was written)."""
    # Checked inside the write transaction: a read on its own is a read transaction of its own (~2.4 µs of
    # WAL locking), and the recipient cannot be retired between the check and the insert.
    recipient = require_known_alias(hub, network_id, body.to)
    if hub.a2a_bound(network_id, body.to):
        raise Conflict(f"'{body.to}' is an external A2A agent (docs/a2a-client.md): it takes tasks, not messages; "
                       "send it a task instead", code="remote_takes_tasks_only")
    digest = loopguard.digest_of(hub, network_id, sender, sender_kind, body.to, MESSAGE, body.content,
                                 *attachments.digest_texts(body.attachments))
    original = loopguard.find_duplicate(hub, network_id, sender, body.to, digest)
    if original is not None:
        return original, recipient, True
    quotas.check_store(hub, network_id, body.content)
    msg = message_row(network_id, sender, body.to, MESSAGE, body.content, from_kind=sender_kind)
    msg["content_hash"] = digest
    message_store.insert_message(hub.db, msg)
    msg["attachments"] = attachments.attach(hub, network_id, msg["message_id"], None, body.attachments)
    loopguard.note_stored(hub, digest)
    hub.record_event(pending, network_id, body.to, NEW_MESSAGE, {
        "type": NEW_MESSAGE, "message": body.content, "from": sender, "from_kind": sender_kind,
        "message_id": msg["message_id"]})
    return msg, recipient, False


def _message_sent(hub: Hub, body: SendMessage, msg: dict[str, Any], recipient: dict[str, Any],
                  duplicate: bool) -> dict[str, Any]:
    """The answer to a send, once it is committed and pushed (a duplicate: the original's id)."""
    answer = {"ok": True, "message_id": msg["message_id"], "to": body.to,
              "recipient_online": is_online(hub, recipient), "duplicate": duplicate}
    if msg.get("attachments"):
        answer["attachments"] = msg["attachments"]
    return answer


def _original_message(hub: Hub, network_id: str, message_id: str) -> dict[str, Any]:
    original = message_store.get_message(hub.db, network_id, message_id)
    if original is None:
        if task_store.get_task(hub.db, network_id, message_id) is not None:
            raise NotFound(f"'{message_id}' is a task id, not a message id: pass it as task_id",
                           code="message_not_found")
        raise NotFound(f"message '{message_id}' not found in this network; message ids look like msg_… and come "
                       "from " + hint("get_inbox items", "GET /api/messages"), code="message_not_found")
    return original


def find_message(hub: Hub, network_ids: list[str], message_id: str) -> dict[str, Any]:
    """A message in any of the caller's networks (REST: a person need not name the network)."""
    row = message_store.find_message(hub.db, network_ids, message_id)
    if row is None:
        raise NotFound(f"message '{message_id}' not found in your networks; list them with GET /api/messages",
                       code="message_not_found")
    return row


def send_reply(hub: Hub, network_id: str, sender: str, body: SendReply, sender_kind: str = AGENT,
               overseer: bool = False) -> dict[str, Any]:
    """Reply to a message or a task. On a task its recipient must give a status (done/failed/progress/question);
    its sender's reply (no status) is an answer that reaches the recipient with the task_id. A person who is
    owner/admin of the network (`overseer`) may also answer a task's question, or an agent's approval question."""
    if not body.message_id and not body.task_id:
        raise ValidationFailed("message_id or task_id: give the message (msg_…) or the task (its uuid) you reply to")
    if body.progress is not None and body.status != PROGRESS:
        raise ValidationFailed("progress: only with status 'progress' (for your session's progress without a reply, "
                               + hint("use report_status)", "leave it out)"))
    content = body.content or (f"progress: {body.progress}" if body.progress is not None else None)
    if content is None:
        raise ValidationFailed("content: required: your reply (the result, the reason, the update, the question "
                               "or the answer)")
    original = _original_message(hub, network_id, body.message_id) if body.message_id else None
    if body.task_id:
        task = get_task_row(hub, network_id, body.task_id)
        if original is not None and original["task_id"] != task["task_id"]:
            raise ValidationFailed(f"message_id: message {body.message_id} is not about task {body.task_id}; "
                                   "give one of them")
    elif original is not None and original["task_id"]:
        task = get_task_row(hub, network_id, original["task_id"])
    else:
        task = None
    if task is not None:
        progress = cast(str | None, body.progress)  # the model's validator turned a number into text
        return reply_on_task(hub, network_id, sender, sender_kind, task, content, body.status,
                             in_reply_to=original["message_id"] if original else None, progress=progress,
                             overseer=overseer, files=body.attachments)
    assert original is not None
    if (sender != original["to"] or sender_kind != original["to_kind"]) and not (
            overseer and sender_kind == PERSON and approval_store.is_pending_question(hub.db, network_id,
                                                                                      original["message_id"])):
        raise Forbidden(f"only the recipient of message '{body.message_id}' can reply to it; to write to "
                        f"'{original['from']}' use " + hint("send_message", "POST /api/messages"),
                        code="not_recipient")
    pending: list[Event] = []
    with hub.db.write():
        quotas.check_store(hub, network_id, content)
        msg = message_row(network_id, sender, original["from"], "reply", content,
                          in_reply_to=original["message_id"], status=body.status, from_kind=sender_kind,
                          to_kind=original["from_kind"])
        message_store.insert_message(hub.db, msg)
        files = attachments.attach(hub, network_id, msg["message_id"], None, body.attachments)
        record_reply_event(hub, pending, msg)
    hub.publish(pending)
    answer = {"ok": True, "message_id": msg["message_id"], "in_reply_to": original["message_id"],
              "to": original["from"], "to_kind": original["from_kind"], "task_id": None, "status": body.status}
    if files:
        answer["attachments"] = files
    return answer


def broadcast(hub: Hub, network_id: str, sender: str, body: Broadcast, sender_kind: str = AGENT) -> dict[str, Any]:
    """Put the content in the inbox of every other session (optionally of one status) and push `broadcast`."""
    targets = [r for r in session_store.list_sessions(hub.db, [network_id])
               if not r["retired_at"] and not (r["alias"] == sender and sender_kind == AGENT)]
    if body.filter_status:
        targets = [r for r in targets if effective_status(hub, r) == body.filter_status]
    if not targets:
        raise NotFound("no other session in this network matches; nobody would receive this broadcast",
                       code="no_recipients")
    pending: list[Event] = []
    ids: dict[str, str] = {}
    with hub.db.write():
        # The text is stored once, whatever the number of recipients; each adds an inbox item and an event.
        quotas.check_store(hub, network_id, body.content,
                           adds=len(body.content.encode()) + quotas.ITEM_OVERHEAD * len(targets))
        body_id = message_store.insert_body(hub.db, body.content, network_id)  # one text for every copy
        shared = SharedText.of(body_id, body.content)  # and for every event
        for row in targets:
            msg = message_row(network_id, sender, row["alias"], BROADCAST, "", from_kind=sender_kind)
            msg["body_id"] = body_id
            message_store.insert_message(hub.db, msg)
            ids[row["alias"]] = msg["message_id"]
            hub.record_event(pending, network_id, row["alias"], BROADCAST, {
                "type": BROADCAST, "content": body.content, "from": sender, "from_kind": sender_kind,
                "message_id": msg["message_id"]}, shared)
    hub.publish(pending)
    return {"ok": True, "message_id": next(iter(ids.values())), "message_ids": ids, "recipients": len(ids)}


def _with_task_details(hub: Hub, network_id: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for item in items:
        if item["kind"] == TASK and item["task_id"]:
            task = task_store.get_task(hub.db, network_id, item["task_id"])
            if task:
                item.update(title=task["title"], context=task["context"], deadline=task["deadline"],
                            task_status=task["status"])
    return items


def _require_live(hub: Hub, token_id: str | None) -> None:
    if token_id and not token_store.is_live(hub.db, token_id, now_text()):
        raise Unauthorized("this token was revoked (or expired) while waiting; nothing was taken from the inbox",
                           code="invalid_token")


def _grant(hub: Hub, network_id: str, row: dict[str, Any] | None) -> AbstractContextManager[Grant | None]:
    """The long-poll's grant (service/guard.py) for its token's row, so that a revocation, an expiry or the member's
    removal ends it within one heartbeat, whichever process made it; none for a call without a token."""
    if row is None:
        return nullcontext()
    return hub.guard().hold(row["token_id"], row["user_id"], network_id, row["expires_at"])


async def _next_event(hub: Hub, sub: Subscriber, grant: Grant | None, deadline: float) -> bool:
    """Wait for the alias's next event until the deadline, checking the grant on every heartbeat; False when the
    wait is over (the deadline passed, the channel closed, or the grant ended)."""
    guard = hub.guard()
    while (now := trio.current_time()) < deadline:
        with trio.move_on_at(min(deadline, now + hub.settings.heartbeat_seconds)):
            try:
                await sub.receive.receive()
                return True
            except (trio.EndOfChannel, trio.ClosedResourceError):
                return False
        if grant is not None and not guard.allowed(grant):
            return False
    return False


async def get_inbox(hub: Hub, network_id: str, alias: str, limit: int, wait_seconds: float,
                    token_id: str | None = None) -> dict[str, Any]:
    """Unread items, urgent first, and the caller's open tasks; waits up to `wait_seconds` for an item when
    nothing is unread. A long-poll of a token revoked meanwhile ends at once and takes nothing; one whose token
    expires or whose member is removed (by any process) ends within one heartbeat and takes nothing. Its database
    work runs in steps through db.run (off the loop on PostgreSQL), the wait on the loop."""
    limit = min(limit, MAX_LIMIT)
    db = hub.db
    items = await db.run(message_store.unread, db, network_id, alias, limit)
    if not items and wait_seconds > 0:
        # Subscribe before re-checking, so an item that lands in between is not missed. The token id lets a
        # revocation close this waiter (broker.close_token_streams).
        token = await db.run(token_store.get_token, db, token_id) if token_id else None
        with hub.broker.subscribe(network_id, alias, buffer=16, token_id=token_id) as sub, \
                _grant(hub, network_id, token) as grant:
            if grant is not None:
                grant.subscriber = sub
            deadline = trio.current_time() + wait_seconds
            while not (items := await db.run(message_store.unread, db, network_id, alias, limit)):
                if not await _next_event(hub, sub, grant, deadline):
                    break
            if grant is not None and grant.reason:
                raise Unauthorized(f"this long-poll ended ({grant.reason.replace('_', ' ')}) while waiting; nothing "
                                   "was taken from the inbox", code="invalid_token")
            if sub.dropped and not items:
                # Revoked, shutdown, or a burst overflowed the buffer: answer with what there is now.
                await db.run(_require_live, hub, token_id)
                items = await db.run(message_store.unread, db, network_id, alias, limit)
        await db.run(_require_live, hub, token_id)
    return await db.run(inbox_answer, hub, network_id, alias, items)


def inbox_now(hub: Hub, network_id: str, alias: str, limit: int, wait_seconds: float) -> dict[str, Any] | None:
    """get_inbox's answer when it needs no wait (something is unread, or no wait was asked), in one synchronous
    step; None when get_inbox must wait."""
    items = message_store.unread(hub.db, network_id, alias, min(limit, MAX_LIMIT))
    if not items and wait_seconds > 0:
        return None
    return inbox_answer(hub, network_id, alias, items)


def inbox_answer(hub: Hub, network_id: str, alias: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    """The get_inbox answer for the unread items taken: their tasks started, with the caller's open tasks."""
    if items:
        pending: list[Event] = []
        with hub.db.write():
            start_tasks(hub, network_id, alias, items, pending)
        hub.publish(pending)
    # A task that expired as it was fetched (past its start_by) is not handed out: it must never start.
    items = [i for i in _with_task_details(hub, network_id, items) if i.get("task_status") != EXPIRED]
    tasks = open_tasks(hub, network_id, alias)
    attachments.annotate_inbox(hub, items, tasks)
    return {"ok": True, "alias": alias, "items": items, "count": len(items),
            "inbox_count": message_store.unread_count(hub.db, network_id, alias),
            "open_tasks": tasks, "open_task_count": len(tasks)}


def _why_not_acked(hub: Hub, network_id: str, alias: str, ids: list[str]) -> dict[str, str]:
    """For each id an ack did not change: already read, not the caller's, or unknown."""
    found = {m["message_id"]: m for m in message_store.get_messages(hub.db, network_id, ids)}
    reasons = {}
    for item_id in ids:
        msg = found.get(item_id)
        task = None if msg else task_store.get_task(hub.db, network_id, item_id)
        if msg is not None:
            if msg["to"] != alias or msg["to_kind"] != AGENT:
                reasons[item_id] = f"not yours: message {item_id} was sent to '{msg['to']}'"
            else:
                reasons[item_id] = f"already read (at {msg['read_at']})"
        elif task is not None:
            if task["to_name"] != alias or task["to_kind"] != AGENT:
                reasons[item_id] = f"not yours: task {item_id} was sent to '{task['to_name']}'"
            else:
                reasons[item_id] = (f"task {item_id} has no unread items (already read); it stays in open_tasks "
                                    f"until it is final (it is {task['status']})")
        else:
            reasons[item_id] = "unknown id: neither a message nor a task of this network"
    return reasons


def ack_inbox(hub: Hub, network_id: str, alias: str, ids: list[str] | None, ack_all: bool) -> dict[str, Any]:
    """Mark items read by message id or task id (acking a task notice starts the task). Open tasks stay listed
    in get_inbox until they are final. A call that marks nothing read is an error that says why."""
    wanted = list(dict.fromkeys(ids or []))
    if not wanted and not ack_all:
        raise ValidationFailed("ids: give the message ids (msg_…) or task ids to mark read, or all=true")
    pending: list[Event] = []
    with hub.db.write():
        now = now_text()
        if ack_all:
            changed = message_store.mark_all_read(hub.db, network_id, alias, now)
        else:
            changed = message_store.mark_read(hub.db, network_id, alias, wanted, now)
            changed += message_store.mark_task_items_read(hub.db, network_id, alias, wanted, now)
        started = start_tasks(hub, network_id, alias, changed, pending)
    hub.publish(pending)
    acked = list(dict.fromkeys(r["message_id"] for r in changed))
    done_ids = set(acked) | {r["task_id"] for r in changed if r["task_id"]}
    reasons = _why_not_acked(hub, network_id, alias, [i for i in wanted if i not in done_ids])
    if not acked:
        if ack_all:
            raise Conflict("nothing to ack: you have no unread items. Your open tasks stay listed in open_tasks "
                           "until you end them with " + hint("send_reply (status done or failed)",
                                                             "a reply with status done or failed"),
                           code="nothing_acked")
        detail = "; ".join(f"{k}: {v}" for k, v in reasons.items())
        raise Conflict(f"nothing was marked read: {detail}", code="nothing_acked")
    return {"ok": True, "acked": acked, "tasks_started": started, "not_acked": list(reasons),
            "not_acked_reasons": reasons, "inbox_count": message_store.unread_count(hub.db, network_id, alias),
            "open_task_count": len(open_tasks(hub, network_id, alias))}


def list_messages(hub: Hub, network_ids: list[str], alias: str | None, kind: str | None, unread_only: bool,
                  limit: int | None, offset: int = 0) -> dict[str, Any]:
    """Messages (an alias's inbox when `alias` is given), newest first."""
    rows = message_store.list_messages(hub.db, network_ids, alias, kind, unread_only, clamp_limit(limit), offset)
    return {"ok": True, "messages": rows}


def list_messages_json(hub: Hub, network_ids: list[str], alias: str | None, kind: str | None, unread_only: bool,
                       limit: int | None, offset: int = 0) -> str:
    """list_messages as JSON text (the REST answer, built by SQLite)."""
    rows = message_store.list_messages_json(hub.db, network_ids, alias, kind, unread_only, clamp_limit(limit), offset)
    return '{"ok":true,"messages":' + rows + "}"
