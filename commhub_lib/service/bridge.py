"""The A2A client's domain rules (docs/a2a-client.md): binding an alias to an external A2A agent, and what the
remote agent's answers do to the CommHub task that was forwarded to it.

The forwarding itself (HTTP, retries, following the remote task) is the bridge job's (commhub_lib/bridge/); this
module is what it calls to change tasks, so every change goes through the same rules as an agent's own reply:
the alias bound to the remote agent is the task's recipient and reports as that recipient would.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from ..broker import Event
from ..errors import CommhubError, Conflict, Forbidden, NotFound, ValidationFailed
from ..ids import new_id, now_text, now_ts
from ..models import ALIAS_RE, ALIAS_RULE, InlineFile
from ..store import bridge as bridge_store
from ..store import messages as message_store
from ..store import sessions as session_store
from ..store import tasks as task_store
from ..store import tokens as token_store
from ..store import users as user_store
from ..vocabulary import (
    AGENT,
    CANCELLED,
    DELIVERED,
    DONE,
    FAILED,
    IDLE,
    INPUT_REQUIRED,
    OPEN_TASK_STATUSES,
    PROGRESS,
    REPLY,
    RUNNING,
)
from . import quotas, tasks
from .hub import Hub, Principal, require_user_token
from .networks import require_role
from .outbox import prune_settled
from .webhooks import check_url

log = logging.getLogger("commhub.a2a_client")

MAX_REPORT_CHARS = 60_000  # a remote agent's text is cut to this before it becomes a reply (the rest is noted)
OUTBOX_SHOWN = 20  # GET …/a2a-remote shows this many of the alias's latest outbox rows


# -- binding (REST, CLI) ----------------------------------------------------------------------------------------

def _manage(hub: Hub, principal: Principal, network_id: str) -> None:
    require_user_token(principal)
    require_role(hub, principal, network_id, "admin")


def _public(hub: Hub, row: dict[str, Any]) -> dict[str, Any]:
    """A binding as the API shows it: never the token, only whether one is set; its latest outbox rows."""
    return {"network_id": row["network_id"], "alias": row["alias"], "url": row["url"],
            "token_set": bool(row["token_set"]), "enabled": bool(row["enabled"]), "created_by": row["created_by"],
            "created_at": row["created_at"], "updated_at": row["updated_at"],
            "outbox": bridge_store.list_outbox(hub.db, row["network_id"], row["alias"], OUTBOX_SHOWN)}


def _claim_for_bridge(hub: Hub, network_id: str, alias: str) -> None:
    """Make the alias a session nobody holds by token (inside db.write()): sends to it are valid and the bridge
    answers for it. Refused when an agent's live token holds it, or a person has that name."""
    if user_store.get_user_by_username(hub.db, alias) is not None:
        raise Forbidden(f"'{alias}' is the username of a person on this hub; bind another alias",
                        code="alias_is_username")
    row = session_store.get_session(hub.db, network_id, alias)
    now, ts = now_text(), now_ts()
    if row is None:
        quotas.check_new_alias(hub, network_id)
        if not session_store.insert_session(hub.db, network_id, alias, new_id("sess"), None, IDLE, now, ts,
                                            call_ts=ts):  # an agent claimed it meanwhile (another writer)
            raise Conflict(f"alias '{alias}' was just claimed by an agent; bind another alias", code="alias_taken")
        return
    if row["retired_at"]:
        raise Conflict(f"alias '{alias}' was retired by a network owner/admin; bind another alias",
                       code="alias_retired")
    if row["token_id"] and token_store.is_live(hub.db, row["token_id"], now):
        raise Conflict(f"alias '{alias}' is held by an agent's token; release it first (POST /api/networks/"
                       f"{network_id}/aliases/{alias}/release) or bind another alias", code="alias_taken")
    if row["token_id"]:
        session_store.release_token_sessions(hub.db, row["token_id"])


def bind_remote(hub: Hub, principal: Principal, network_id: str, alias: str, url: str, token: str | None,
                enabled: bool, ip: str | None) -> dict[str, Any]:
    """Bind an alias to an external A2A agent (owner/admin): tasks sent to the alias are forwarded to it. The URL
    passes the same target check as a webhook's, under the a2a_client_targets setting."""
    _manage(hub, principal, network_id)
    if not ALIAS_RE.match(alias):
        raise ValidationFailed(f"alias: {ALIAS_RULE}")
    check_url(url, hub.settings.a2a_client_targets, setting="a2a_client_targets", code="remote_url_not_allowed")
    with hub.db.write():
        _claim_for_bridge(hub, network_id, alias)
        bridge_store.upsert_remote(hub.db, network_id, alias, url, token or None, int(enabled), principal.user_id,
                                   now_text())
        if enabled:  # online from now, not from the bridge's next round
            bridge_store.touch_bound_sessions(hub.db, now_text(), now_ts())
        hub.audit("a2a_remote_bind", actor=principal.label, user_id=principal.user_id, network_id=network_id,
                  detail={"alias": alias, "url": url, "enabled": enabled, "token_set": bool(token)}, ip=ip)
    hub.a2a_bindings_changed()
    return {"ok": True, **get_remote(hub, principal, network_id, alias)}


def _remote(hub: Hub, network_id: str, alias: str) -> dict[str, Any]:
    row = bridge_store.get_remote(hub.db, network_id, alias)
    if row is None:
        raise NotFound(f"alias '{alias}' is not bound to an A2A agent in network '{network_id}'",
                       code="remote_not_bound")
    return row


def get_remote(hub: Hub, principal: Principal, network_id: str, alias: str) -> dict[str, Any]:
    """An alias's binding (owner/admin): URL, whether a token is set, enabled, its latest outbox rows."""
    _manage(hub, principal, network_id)
    return {"ok": True, **_public(hub, _remote(hub, network_id, alias))}


def unbind_remote(hub: Hub, principal: Principal, network_id: str, alias: str, ip: str | None) -> dict[str, Any]:
    """Unbind an alias (owner/admin): nothing more is forwarded; a task already forwarded fails at its next look."""
    _manage(hub, principal, network_id)
    _remote(hub, network_id, alias)
    with hub.db.write():
        bridge_store.delete_remote(hub.db, network_id, alias)
        hub.audit("a2a_remote_unbind", actor=principal.label, user_id=principal.user_id, network_id=network_id,
                  detail={"alias": alias}, ip=ip)
    hub.a2a_bindings_changed()
    return {"ok": True, "network_id": network_id, "alias": alias, "deleted": True}


def touch_bound(hub: Hub) -> int:
    """Keep every bound alias online (a sign of life per round of the bridge job); best effort."""
    counted = [0]

    def work() -> None:
        counted[0] = bridge_store.touch_bound_sessions(hub.db, now_text(), now_ts())

    hub.db.try_write(work)
    return counted[0]


async def prune(hub: Hub) -> int:
    """Drop sent/failed forwards and finished remote tasks older than event_retention_days, in batches that yield."""
    return await prune_settled(hub, lambda cutoff, limit: bridge_store.delete_settled_before(hub.db, cutoff, limit))


# -- what the remote agent's answers do (the bridge job) --------------------------------------------------------

def _cut(text: str) -> str:
    if len(text) <= MAX_REPORT_CHARS:
        return text
    return text[:MAX_REPORT_CHARS] + f"\n[… cut: the remote agent's answer had {len(text)} characters]"


def open_task(hub: Hub, network_id: str, task_id: str) -> dict[str, Any] | None:
    """The CommHub task behind a bridge row, if it is still open (else None: nothing more to report)."""
    row = task_store.get_task(hub.db, network_id, task_id)
    return row if row is not None and row["status"] in OPEN_TASK_STATUSES else None


def task_status(hub: Hub, network_id: str, task_id: str) -> str | None:
    """The CommHub task's status (None: it is gone)."""
    row = task_store.get_task(hub.db, network_id, task_id)
    return row["status"] if row is not None else None


def mark_running(hub: Hub, task: dict[str, Any]) -> None:
    """The remote agent works on the task: delivered (or input_required, once answered) -> running."""
    now = now_text()
    with hub.db.write():
        if task_store.set_status(hub.db, task["task_id"], (DELIVERED, INPUT_REQUIRED), RUNNING, now,
                                 started_by_ts=now_ts()):
            task_store.insert_task_event(hub.db, task["task_id"], task["network_id"], RUNNING, task["to_name"], None,
                                         now)


def report(hub: Hub, task: dict[str, Any], status: str, text: str, files: Sequence[InlineFile] = ()) -> bool:
    """Report on the task as its recipient (the bound alias): progress, question, done or failed, with the files the
    agent sent (attachments of the reply). False when the task can no longer change (final meanwhile). Files that
    cannot be stored (too large, the quota) leave the reply without them, saying why; an answer that cannot be
    stored at all drops a progress note, and ends the task as failed with the reason otherwise (a question nobody
    sees would leave it waiting forever)."""
    try:
        tasks.reply_on_task(hub, task["network_id"], task["to_name"], AGENT, task, _cut(text), status, files=files)
        return True
    except CommhubError as exc:
        if task_status(hub, task["network_id"], task["task_id"]) not in OPEN_TASK_STATUSES:
            return False
        if files:
            log.warning("a2a: task %s: the remote agent's files could not be stored: %s", task["task_id"],
                        exc.message)
            note = f"\n\n[the agent's {len(files)} file(s) could not be attached: {exc.message}]"
            return report(hub, task, status, text + note)
        log.warning("a2a: task %s: the remote agent's %s could not be stored: %s", task["task_id"], status,
                    exc.message)
        if status == PROGRESS:
            return True
        fallback = f"The remote agent answered ({status}), but its answer could not be stored: {exc.message}"
        try:
            tasks.reply_on_task(hub, task["network_id"], task["to_name"], AGENT, task, fallback[:2000], FAILED)
        except CommhubError:
            log.exception("a2a: task %s: could not fail it either", task["task_id"])
        return True


def report_final(hub: Hub, task: dict[str, Any], outcome: str, text: str,
                 files: Sequence[InlineFile] = ()) -> bool:
    """End the task by the remote outcome: done (with the agent's files), failed, or cancelled (the remote agent
    cancelled it)."""
    if outcome != CANCELLED:
        return report(hub, task, DONE if outcome == DONE else FAILED, text, files)
    return cancel_from_remote(hub, task, text)


def cancel_from_remote(hub: Hub, task: dict[str, Any], text: str) -> bool:
    """The remote agent cancelled the task: it ends as cancelled, and its sender gets a reply saying so (status
    `cancelled`, as an expiry's reply says `expired`)."""
    task_id, network_id, alias = task["task_id"], task["network_id"], task["to_name"]
    pending: list[Event] = []
    with hub.db.write():
        now = now_text()
        if not task_store.set_status(hub.db, task_id, OPEN_TASK_STATUSES, CANCELLED, now):
            return False
        task_store.insert_task_event(hub.db, task_id, network_id, CANCELLED, alias, tasks.excerpt(text), now)
        task_store.insert_completion(hub.db, task_id, network_id, alias, CANCELLED, text, "[]",
                                     round(max(0.0, now_ts() - task["created_ts"]), 3), now)
        msg = tasks.message_row(network_id, alias, task["from_name"], REPLY, _cut(text),
                                in_reply_to=task["message_id"], task_id=task_id, status=CANCELLED,
                                priority=task["priority"], to_kind=task["from_kind"])
        message_store.insert_message(hub.db, msg)
        tasks.record_reply_event(hub, pending, msg)
    hub.publish(pending)
    return True


def answer_text(hub: Hub, network_id: str, message_id: str | None) -> str:
    """The text of the sender's answer that an `answer` outbox row forwards."""
    msg = message_store.get_message(hub.db, network_id, message_id) if message_id else None
    return msg["content"] if msg is not None else ""
