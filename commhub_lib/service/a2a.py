"""CommHub as an A2A server (docs/a2a.md), its domain rules: which aliases are served (an owner/admin opts one in),
who an A2A caller is, and what its messages do to CommHub tasks. The wire shapes are commhub_lib/a2a/'s.

Who the caller is: a network token of the agent's network. A token bound to an alias speaks as that alias (it is
that agent's own credential); any other token speaks as `a2a:<token id>`, a name no alias can take (an alias never
holds ':'), so an A2A caller never passes for an agent it is not. That name is the sender of the tasks it sends;
the recipient's replies go to its inbox, and only its own tasks are visible to it.

What a message does: one without taskId sends a new task to the alias (its text parts are the content; its
messageId is the task's idempotency key, so a retried message is the same task); one with taskId answers the
task (a sender's answer: the new_reply the agent reads after asking a question).
"""

from __future__ import annotations

import hashlib
import json
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from ..broker import TaskWatcher
from ..errors import CommhubError, Forbidden, NotFound, ValidationFailed
from ..ids import new_uuid, now_text
from ..models import MAX_SHORT, SendTask
from ..store import a2a as a2a_store
from ..store import messages as message_store
from ..store import sessions as session_store
from ..store import tasks as task_store
from ..vocabulary import AGENT, REPLY
from . import attachments, tasks
from .hub import Hub, Principal, require_user_token
from .networks import require_role

A2A_CALLER_PREFIX = "a2a:"
HISTORY_LIMIT = 200  # replies read for one task's history and events


@dataclass
class Served:
    """An alias served as an A2A agent: its setting and its session (what it last reported)."""

    network_id: str
    alias: str
    description: str
    session: dict[str, Any]


@dataclass
class TaskView:
    """Everything the A2A shapes of one task are made from: the task, its timeline, its completion, the replies
    its recipient sent the caller, and its conversation (contextId)."""

    task: dict[str, Any]
    timeline: list[dict[str, Any]]
    completion: dict[str, Any] | None
    replies: list[dict[str, Any]]
    context_id: str
    files: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # a reply's attachments, by its message id
    base: str = ""  # the hub's URL as the caller reaches it: file urls that are paths are made absolute with it


def _known_session(hub: Hub, network_id: str, alias: str) -> dict[str, Any]:
    row = session_store.get_session(hub.db, network_id, alias)
    if row is None:
        # What to do next: an alias comes into being at its agent's first tool call, not by being named here.
        raise NotFound(f"no agent '{alias}' has ever connected to network '{network_id}': an alias exists once its "
                       f"agent has called a tool (report_status) with a token bound to it (commhub connect --alias "
                       f"{alias}); check the name with GET /api/status", code="alias_not_found")
    return row


def _setting(network_id: str, alias: str, row: dict[str, Any] | None) -> dict[str, Any]:
    return {"ok": True, "network_id": network_id, "alias": alias, "enabled": bool(row and row["enabled"]),
            "description": row["description"] if row else "", "updated_by": row["updated_by"] if row else None,
            "updated_at": row["updated_at"] if row else None,
            "agent_card_path": f"/a2a/{network_id}/{alias}/.well-known/agent-card.json",
            "endpoint_path": f"/a2a/{network_id}/{alias}"}


def set_agent(hub: Hub, principal: Principal, network_id: str, alias: str, enabled: bool, description: str | None,
              ip: str | None) -> dict[str, Any]:
    """Opt an alias in (or out) as an A2A agent (a person who is owner/admin of the network)."""
    require_user_token(principal)
    require_role(hub, principal, network_id, "admin")
    _known_session(hub, network_id, alias)
    with hub.db.write():
        old = a2a_store.get_agent(hub.db, network_id, alias)
        text = description if description is not None else (old["description"] if old else "")
        a2a_store.upsert_agent(hub.db, network_id, alias, enabled, text, principal.user["username"], now_text())
        hub.audit("a2a_agent", actor=principal.label, user_id=principal.user_id, network_id=network_id,
                  detail={"alias": alias, "enabled": enabled}, ip=ip)
    return _setting(network_id, alias, a2a_store.get_agent(hub.db, network_id, alias))


def get_agent(hub: Hub, principal: Principal, network_id: str, alias: str) -> dict[str, Any]:
    """An alias's A2A setting (any member of the network may read it: the card it gives is public anyway)."""
    require_role(hub, principal, network_id, "member")
    _known_session(hub, network_id, alias)
    return _setting(network_id, alias, a2a_store.get_agent(hub.db, network_id, alias))


def served(hub: Hub, network_id: str, alias: str) -> Served:
    """The alias as an A2A agent, or 404 unless its owner opted it in (and it is not retired)."""
    row = a2a_store.get_agent(hub.db, network_id, alias)
    session = session_store.get_session(hub.db, network_id, alias) if row and row["enabled"] else None
    if row is None or session is None or session["retired_at"]:
        raise NotFound(f"no A2A agent '{alias}' in network '{network_id}': a network owner/admin opts an alias in "
                       f"with PUT /api/networks/{network_id}/aliases/{alias}/a2a", code="agent_not_served")
    return Served(network_id, alias, row["description"], session)


def may_see_live(hub: Hub, principal: Principal, network_id: str) -> bool:
    """Whether a card's caller may see what the agent is working on: a network token of the network, or a member."""
    if principal.kind == "network":
        return principal.network_id == network_id
    try:
        require_role(hub, principal, network_id, "member")
    except CommhubError:
        return False
    return True


def caller_of(principal: Principal, network_id: str) -> str:
    """The name an A2A caller acts under (see the module's docstring); 403 for a user token or another network's."""
    if principal.kind != "network":
        raise Forbidden("an A2A agent is called with a network token of its network (ntok_), not a user token",
                        code="network_token_required")
    if principal.network_id != network_id:
        raise Forbidden("this token belongs to another network than the A2A agent's", code="wrong_network")
    return principal.bound_alias or A2A_CALLER_PREFIX + principal.token_id


def _idempotency_key(alias: str, message_id: str) -> str:
    """The task's idempotency key for an A2A messageId sent to an alias (keys are the sender's: the alias is part of
    it, so one messageId sent to two agents makes two tasks); hashed when longer than a key may be."""
    key = f"a2a:{alias}:{message_id}"
    return key if len(key) <= MAX_SHORT else "a2a#" + hashlib.sha256(key.encode()).hexdigest()


def send_message(hub: Hub, agent: Served, caller: str, text: str, message_id: str, context_id: str | None,
                 task_id: str | None) -> str:
    """What an A2A message does (see the module's docstring); returns the id of its task. An error of the family
    for a task that is not the caller's (404), final (409 task_final) or an empty text (400)."""
    if not text.strip():
        raise ValidationFailed("message.parts: at least one non-empty text part is needed (CommHub tasks are text)")
    if caller == agent.alias:
        raise Forbidden(f"this token speaks as '{caller}' itself: an agent does not send itself tasks over A2A",
                        code="not_allowed")
    if task_id:
        view = task_view(hub, agent, caller, task_id)
        if context_id and context_id != view.context_id:
            raise ValidationFailed(f"message.contextId: task {task_id} belongs to context {view.context_id}")
        tasks.reply_on_task(hub, agent.network_id, caller, AGENT, view.task, text, None)
        return task_id
    body = SendTask(to=agent.alias, content=text, idempotency_key=_idempotency_key(agent.alias, message_id))
    result = tasks.send_task(hub, agent.network_id, caller, body, AGENT)
    with hub.db.write():
        a2a_store.insert_task(hub.db, result["task_id"], agent.network_id, agent.alias, caller,
                              context_id or new_uuid(), now_text())
    return result["task_id"]


def task_view(hub: Hub, agent: Served, caller: str, task_id: str) -> TaskView:
    """One task as the caller may see it: one it sent this agent over A2A; any other id is 404 (whether the task
    exists elsewhere is not told)."""
    a2a_row = a2a_store.get_task(hub.db, task_id)
    task = task_store.get_task(hub.db, agent.network_id, task_id) if a2a_row else None
    if (a2a_row is None or task is None or a2a_row["network_id"] != agent.network_id
            or a2a_row["alias"] != agent.alias or a2a_row["caller"] != caller):
        raise NotFound(f"task '{task_id}' not found for this caller at A2A agent '{agent.alias}'",
                       code="task_not_found")
    timeline = task_store.list_task_events(hub.db, [agent.network_id], task_id, 1000, 0)
    completion = task_store.get_completion(hub.db, task_id)
    if completion:
        completion = {**completion, "artifacts": json.loads(completion["artifacts"])}
    replies = a2a_store.replies_to_caller(hub.db, agent.network_id, caller, task_id, REPLY, HISTORY_LIMIT)
    files = attachments.of_items(hub, [r["message_id"] for r in replies]) if replies else {}
    return TaskView(task, timeline, completion, replies, a2a_row["context_id"], files)


def mark_given(hub: Hub, agent: Served, caller: str, view: TaskView) -> None:
    """The replies an A2A caller was just given (its task's history) are read: an `a2a:` caller has no inbox to ack,
    and message retention keeps unread items, so without this they (and their files) were kept for ever. A caller
    that is an agent's own alias acks its inbox itself. Best effort: a busy lock leaves them for the next read."""
    if not caller.startswith(A2A_CALLER_PREFIX):
        return
    unread = [r["message_id"] for r in view.replies if r["read_at"] is None]
    if unread:
        hub.db.try_write(lambda: message_store.mark_read(hub.db, agent.network_id, caller, unread, now_text()))


def cancel(hub: Hub, principal: Principal, agent: Served, caller: str, task_id: str) -> TaskView:
    """Cancel the caller's task (as its sender); 409 task_final when it is already over."""
    task_view(hub, agent, caller, task_id)  # 404 unless it is the caller's
    tasks.cancel_task(hub, principal, agent.network_id, caller, task_id, "cancelled by the A2A client")
    return task_view(hub, agent, caller, task_id)


def watch(hub: Hub, task_id: str) -> AbstractContextManager[TaskWatcher]:
    """A watcher woken at each change of the task (its A2A stream or a blocking send waits on it)."""
    return hub.broker.tasks.watch(task_id)
