"""Routes: the data queries (/api/status, tasks, nodes, messages, completions, task_events, stats)
and sending as a person or script (POST /api/tasks, /api/messages, /api/broadcast)."""

from __future__ import annotations

from ..http.answers import Answer, json_text
from ..http.request import authenticate, authenticated, hub, off_loop, parse, query_arg
from ..models import RestBroadcast, RestCancel, RestFlag, RestReply, RestSendMessage, RestSendTask
from ..service import messaging, networks, sessions, tasks
from ..service.hub import Principal
from ..vocabulary import AGENT, MESSAGE_KINDS, PERSON, SESSION_STATUSES, TASK_FLAGS, TASK_STATUSES
from .common import query_choice, query_int


def _scope() -> list[str]:
    return networks.scope(hub(), authenticate(), query_arg("network_id") or None)


def _offset() -> int:
    return query_int("offset", 0) or 0


def _json(text: str) -> Answer:
    """An answer whose JSON text SQLite built (the lists: no dicts, no json.dumps on the event loop)."""
    return json_text(text)


async def status() -> Answer:
    """Every session of the visible networks (the JSON is built by SQLite: up to 500 sessions a page)."""
    return _json(await off_loop(_status))


def _status() -> str:
    return sessions.list_status_json(hub(), _scope(), query_choice("status", SESSION_STATUSES),
                                     query_int("limit", None, 1), _offset())


async def list_tasks() -> Answer:
    """Tasks, newest first, filtered by status, to_name, from_name, flag."""
    return _json(await off_loop(_list_tasks))


def _list_tasks() -> str:
    scope = _scope()
    return tasks.list_tasks_json(hub(), scope, query_choice("status", TASK_STATUSES),
                                 query_arg("to_name") or None, query_arg("from_name") or None,
                                 query_int("limit", None, 1), _offset(), query_choice("flag", TASK_FLAGS))


async def list_nodes() -> dict:
    """Machines that sessions run on."""
    return sessions.list_nodes(hub(), _scope(), query_int("limit", None, 1), _offset())


async def list_messages() -> Answer:
    """Messages; with `alias`, that agent's inbox."""
    return _json(await off_loop(_list_messages))


def _list_messages() -> str:
    scope = _scope()
    return messaging.list_messages_json(hub(), scope, query_arg("alias") or None, query_choice("kind", MESSAGE_KINDS),
                                        query_arg("unread") in ("1", "true"), query_int("limit", None, 1), _offset())


async def list_completions() -> Answer:
    """Completion records."""
    scope = _scope()
    return _json(tasks.list_completions_json(hub(), scope, query_arg("alias") or None,
                                             query_int("limit", None, 1), _offset()))


async def list_task_events() -> Answer:
    """The task event log (one task with `task_id`)."""
    scope = _scope()
    return _json(tasks.list_task_events_json(hub(), scope, query_arg("task_id") or None,
                                             query_int("limit", None, 1), _offset()))


async def stats() -> dict:
    """Session and task counts."""
    return sessions.stats(hub(), _scope())


def _sender(principal: Principal, network_id: str) -> tuple[str, str]:
    """Who sends, and as what: a person as their username; an agent's token as its bound or last claimed alias."""
    if principal.kind == "user":
        return principal.user["username"], PERSON
    return sessions.resolve_caller(hub(), principal, network_id, None), AGENT


async def send_task() -> dict:
    """Send a task to an alias."""
    principal = await authenticated()
    body = await parse(RestSendTask)
    return await off_loop(_send_task, principal, body)


def _send_task(principal: Principal, body: RestSendTask) -> dict:
    network_id = networks.single_network(hub(), principal, body.network_id)
    name, kind = _sender(principal, network_id)
    return tasks.send_task(hub(), network_id, name, body, kind)


async def send_message() -> dict:
    """Send a message to an alias."""
    principal = await authenticated()
    body = await parse(RestSendMessage)
    return await off_loop(_send_message, principal, body)


def _send_message(principal: Principal, body: RestSendMessage) -> dict:
    network_id = networks.single_network(hub(), principal, body.network_id)
    name, kind = _sender(principal, network_id)
    return messaging.send_message(hub(), network_id, name, body, kind)


async def broadcast() -> dict:
    """Send to every session of a network."""
    principal = authenticate()
    body = await parse(RestBroadcast)
    network_id = networks.single_network(hub(), principal, body.network_id)
    name, kind = _sender(principal, network_id)
    return messaging.broadcast(hub(), network_id, name, body, kind)


async def get_task(task_id: str) -> dict:
    """One task with its event timeline and completion."""
    return await off_loop(lambda: tasks.get_task_in(hub(), _scope(), task_id))


async def cancel_task(task_id: str) -> dict:
    """Cancel an open task (its sender, or a network owner/admin)."""
    principal = authenticate()
    body = await parse(RestCancel)
    task = tasks.find_task(hub(), networks.scope(hub(), principal, query_arg("network_id") or None), task_id)
    actor = None if principal.kind == "user" else _sender(principal, task["network_id"])[0]
    return tasks.cancel_task(hub(), principal, task["network_id"], actor, task_id, body.reason)


async def flag_task(task_id: str) -> dict:
    """Flag a task for a person's attention (its recipient, an owner/admin), or clear it (docs/runner-server.md)."""
    principal = authenticate()
    body = await parse(RestFlag)
    task = tasks.find_task(hub(), networks.scope(hub(), principal, query_arg("network_id") or None), task_id)
    actor = None if principal.kind == "user" else _sender(principal, task["network_id"])[0]
    return tasks.flag_task(hub(), principal, task["network_id"], actor, task_id, body.flag, body.note)


async def reply() -> dict:
    """Reply to a message or task as a person (answer an agent's question) or as a token's agent."""
    principal = authenticate()
    body = await parse(RestReply)
    network_id = body.network_id
    if network_id is None and principal.kind == "user":
        # A person need not name the network: the task or message says which one it is.
        mine = networks.scope(hub(), principal, None)
        if body.task_id:
            network_id = tasks.find_task(hub(), mine, body.task_id)["network_id"]
        elif body.message_id:
            network_id = messaging.find_message(hub(), mine, body.message_id)["network_id"]
    network_id = networks.single_network(hub(), principal, network_id)
    name, kind = _sender(principal, network_id)
    overseer = tasks.is_overseer(hub(), principal, network_id)  # an owner/admin may answer any agent's question
    return messaging.send_reply(hub(), network_id, name, body, kind, overseer=overseer)
