"""Approvals: an agent asks a person for permission and waits for the answer (docs/runner-server.md).

The question is an ordinary inbox item: a `question` reply on the agent's task (the task waits as
input_required, and its sender is asked), or, without a task, a message to the person who owns the agent's
token. Its message id is the approval's id. The person answers it as any question (a reply: dashboard, CLI,
REST); service/verdicts.py settles the approval from that reply. Waiting follows the asking alias's events
on the broker, so the answer wakes the waiter at once and a waiter that goes away leaves nothing behind.
"""

from __future__ import annotations

import json
from typing import Any

import trio

from ..broker import Event
from ..errors import Forbidden, NotFound, Unauthorized
from ..ids import now_text
from ..store import approvals as approval_store
from ..store import messages as message_store
from ..store import tokens as token_store
from ..vocabulary import AGENT, MESSAGE, NEW_MESSAGE, PERSON, QUESTION, WORKING_TASK_STATUSES
from . import quotas
from .hub import Hub, Principal, clamp_limit
from .tasks import ask_on_task, get_task_row, message_row, open_tasks
from .verdicts import APPROVAL_WORDS_TEXT

MAX_WAIT_SECONDS = 50.0  # REST: one call waits at most this long (call GET again to keep waiting)
# How a question tells the person to answer.
HOW_TO_ANSWER = "Reply yes to allow, anything else to deny."
INPUT_CHARS = 2000  # a permission prompt shows this much of the tool's input


def ask(hub: Hub, principal: Principal, network_id: str, alias: str, question: str,
        task_id: str | None) -> dict[str, Any]:
    """Post the question (on the alias's own open task, or to its owner) and mark it as an approval."""
    if task_id is not None:
        task = get_task_row(hub, network_id, task_id)
        if task["to_name"] != alias or task["to_kind"] != AGENT:
            raise Forbidden(f"task {task_id} was sent to '{task['to_name']}', not to you ('{alias}'): ask about "
                            "one of your own open tasks, or leave task_id out to ask your owner",
                            code="not_recipient")
        # One transaction for the question and its approval row. The reply's own write joins it (db.write nests)
        # and publishes its event before this commit; no other task runs before the commit (no await here).
        with hub.db.write():
            asked = ask_on_task(hub, network_id, alias, task, question)
            approval_store.insert_approval(hub.db, {
                "approval_id": asked["message_id"], "network_id": network_id, "alias": alias, "task_id": task_id,
                "asked_name": task["from_name"], "asked_kind": task["from_kind"], "created_at": now_text()})
        return get(hub, [network_id], asked["message_id"])
    owner = principal.user["username"]
    pending: list[Event] = []
    with hub.db.write():
        quotas.check_store(hub, network_id, question)
        msg = message_row(network_id, alias, owner, MESSAGE, question, status=QUESTION, to_kind=PERSON)
        message_store.insert_message(hub.db, msg)
        approval_store.insert_approval(hub.db, {
            "approval_id": msg["message_id"], "network_id": network_id, "alias": alias, "task_id": None,
            "asked_name": owner, "asked_kind": PERSON, "created_at": msg["created_at"]})
        # A person's items are keyed by username, as replies to a person are: the network stream shows it.
        hub.record_event(pending, network_id, owner, NEW_MESSAGE, {
            "type": NEW_MESSAGE, "message": question, "from": alias, "from_kind": AGENT,
            "message_id": msg["message_id"], "approval_id": msg["message_id"]})
    hub.publish(pending)
    return get(hub, [network_id], msg["message_id"])


def get(hub: Hub, network_ids: list[str], approval_id: str) -> dict[str, Any]:
    """One approval as the API shows it."""
    row = approval_store.get_approval(hub.db, network_ids, approval_id)
    if row is None:
        raise NotFound(f"approval '{approval_id}' not found in your networks; its id is the approval_id that "
                       "POST /api/approvals returned (a msg_… id)", code="approval_not_found")
    return {"ok": True, **row}


async def wait(hub: Hub, network_ids: list[str], approval_id: str, wait_seconds: float,
               token_id: str | None = None) -> dict[str, Any]:
    """The approval, once answered or after `wait_seconds`, whichever is first."""
    row = get(hub, network_ids, approval_id)
    if row["status"] != "pending" or wait_seconds <= 0:
        return row
    with trio.move_on_after(wait_seconds):
        while approval_store.status_of(hub.db, approval_id) == "pending":
            # The answer is a reply to the asking alias: its new_reply wakes us. Subscribe, then re-check, so an
            # answer committed in between is not missed; a revoked token closes this waiter (as get_inbox's).
            with hub.broker.subscribe(row["network_id"], row["alias"], buffer=16, token_id=token_id) as sub:
                while approval_store.status_of(hub.db, approval_id) == "pending":
                    try:
                        await sub.receive.receive()
                    except (trio.EndOfChannel, trio.ClosedResourceError):
                        break
            if sub.closed_reason != "slow_reader":  # revoked or shutting down: answer with what there is
                _require_live(hub, token_id)
                break
    _require_live(hub, token_id)
    return get(hub, network_ids, approval_id)


def _require_live(hub: Hub, token_id: str | None) -> None:
    if token_id and not token_store.is_live(hub.db, token_id, now_text()):
        raise Unauthorized("this token was revoked (or expired) while waiting for the answer", code="invalid_token")


def list_approvals(hub: Hub, network_ids: list[str], status: str | None, alias: str | None, limit: int | None,
                   offset: int = 0) -> dict[str, Any]:
    """Approvals, newest first (the dashboard's "waiting for you")."""
    rows = approval_store.list_approvals(hub.db, network_ids, status, alias, clamp_limit(limit), offset)
    return {"ok": True, "approvals": rows}


def _task_at_work(hub: Hub, network_id: str, alias: str) -> str | None:
    """The alias's open task its turn works on: running or input_required, the one updated last."""
    busy = [t for t in open_tasks(hub, network_id, alias) if t["status"] in WORKING_TASK_STATUSES]
    return max(busy, key=lambda t: t["updated_at"])["task_id"] if busy else None


def prompt_text(tool_name: str, tool_input: dict[str, Any]) -> str:
    """The question of a permission prompt: which tool, with which input (compact), and how to answer."""
    shown = json.dumps(tool_input, ensure_ascii=False, separators=(",", ":"))
    if len(shown) > INPUT_CHARS:
        shown = shown[:INPUT_CHARS - 1] + "…"
    return f"Permission request: allow {tool_name} with {shown}? {HOW_TO_ANSWER} (approve with: {APPROVAL_WORDS_TEXT})"


async def permission_prompt(hub: Hub, principal: Principal, network_id: str, alias: str, tool_name: str,
                            tool_input: dict[str, Any], task_id: str | None, wait_seconds: float) -> dict[str, Any]:
    """Claude Code's permission prompt: ask, wait, and answer in the JSON Claude Code expects."""
    task_id = task_id or _task_at_work(hub, network_id, alias)
    asked = ask(hub, principal, network_id, alias, prompt_text(tool_name, tool_input), task_id)
    row = await wait(hub, [network_id], asked["approval_id"], wait_seconds, principal.token_id)
    if row["status"] == "approved":
        return {"behavior": "allow", "updatedInput": tool_input}
    if row["status"] == "denied":
        return {"behavior": "deny", "message": row["answer"]}
    return {"behavior": "deny", "message": f"no answer within {wait_seconds:g} s"}
