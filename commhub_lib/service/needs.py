"""What needs a person, across the networks they belong to (the dashboard's Overview; docs/dashboard.md#needs-you).

- questions: tasks a person sent that wait on the agent's question (input_required), and approvals agents wait on
  (docs/runner-server.md); each says whether it is the caller's to answer (`for_you`) and whether the caller may
  (`can_answer`: their own, or as an owner/admin of the network);
- stuck: open tasks flagged by a runner (`unanswered`), tasks delivered to an agent that is offline for longer than
  `stuck_delivered_seconds`, tasks running with nothing new (no progress, question, answer or flag) for longer than
  `stuck_running_seconds` (0 turns either check off); one entry per task, the first reason in that order;
- loops: the loop guard's cuts (loop_broken events) of the last LOOPS_LOOKBACK_SECONDS, one entry per pair.

Everything is read from the database (nothing only the open page saw), so a reload shows the same; the network
stream's events tell the page when to read it again.
"""

from __future__ import annotations

import json
from typing import Any

from .. import auth
from ..ids import now_ts, ts_text
from ..store import approvals as approval_store
from ..store import needs as needs_store
from ..store import networks as network_store
from ..vocabulary import AGENT, OFFLINE, PERSON, UNANSWERED
from .hub import Hub, Principal, require_user_token
from .networks import require_role
from .sessions import is_online

LIMIT = 50  # at most this many of each kind (the oldest stuck, the questions waiting longest, the newest loops)
LOOPS_LOOKBACK_SECONDS = 7 * 86400  # a cut older than this no longer waits for anyone
SILENT = "silent"  # a running task with nothing new (the other reasons are the flag's and the session status's words)
STUCK_REASONS = (UNANSWERED, OFFLINE, SILENT)  # the order a task's reason is chosen in


def needs(hub: Hub, principal: Principal, network_id: str | None) -> dict[str, Any]:
    """GET /api/needs: questions, stuck tasks and broken loops of the caller's networks (or of one)."""
    require_user_token(principal)
    nets = network_store.list_networks_of_user(hub.db, principal.user_id)
    if network_id:
        require_role(hub, principal, network_id, "member")  # 404 for a network that is not theirs
        nets = [n for n in nets if n["network_id"] == network_id] or [
            {"network_id": network_id, "network_name": network_id, "member_role": "admin"}]  # the system admin's look
    names = {n["network_id"]: n["network_name"] for n in nets}
    overseen = {n["network_id"] for n in nets
                if principal.is_system_admin or auth.role_at_least(n["member_role"], "admin")}
    ids = list(names)
    username = principal.user["username"]
    questions = _questions(hub, ids, username, overseen)
    stuck = _stuck(hub, ids)
    loops = _loops(hub, ids)
    for item in (*questions, *stuck, *loops):
        item["network_name"] = names.get(item["network_id"], item["network_id"])
    settings = hub.settings
    return {"ok": True, "username": username, "network_ids": ids, "count": len(questions) + len(stuck) + len(loops),
            "questions": questions, "stuck": stuck, "loops": loops,
            "stuck_delivered_seconds": settings.stuck_delivered_seconds,
            "stuck_running_seconds": settings.stuck_running_seconds}


def _questions(hub: Hub, ids: list[str], username: str, overseen: set[str]) -> list[dict[str, Any]]:
    """Task questions to people and pending approvals, the caller's first, then the longest waiting; an approval
    on a task stands in for the task's question (it is the same inbox item, answered with Allow/Deny)."""
    out: dict[str, dict[str, Any]] = {}
    for t in needs_store.questions_for_people(hub.db, ids, LIMIT):
        for_you = t["from_kind"] == PERSON and t["from_name"] == username
        out[t["task_id"]] = {
            "kind": "task", "network_id": t["network_id"], "task_id": t["task_id"], "title": t["title"],
            "content": t["content"], "priority": t["priority"], "agent": t["to_name"], "asked": t["from_name"],
            "asked_kind": t["from_kind"], "for_you": for_you, "can_answer": for_you or t["network_id"] in overseen,
            "question": t["question"], "question_id": t["question_id"], "approval_id": None,
            "asked_at": t["asked_at"] or t["updated_at"]}
    approvals = approval_store.list_approvals(hub.db, ids, "pending", None, LIMIT, 0)
    for a in approvals:
        for_you = a["asked_kind"] == PERSON and a["asked"] == username
        entry = out.get(a["task_id"] or "")
        if entry is not None:
            entry.update(kind="approval", approval_id=a["approval_id"], question=a["question"],
                         question_id=a["approval_id"], asked_at=a["created_at"])
            continue
        key = a["task_id"] or a["approval_id"]
        out[key] = {
            "kind": "approval", "network_id": a["network_id"], "task_id": a["task_id"], "title": None,
            "content": None, "priority": None, "agent": a["alias"], "asked": a["asked"], "asked_kind": a["asked_kind"],
            "for_you": for_you, "can_answer": for_you or a["network_id"] in overseen, "question": a["question"],
            "question_id": a["approval_id"], "approval_id": a["approval_id"], "asked_at": a["created_at"]}
    return sorted(out.values(), key=lambda q: (not q["for_you"], q["asked_at"] or ""))[:LIMIT]


def _stuck(hub: Hub, ids: list[str]) -> list[dict[str, Any]]:
    """Open tasks that wait on nobody in particular: flagged, delivered to an offline agent, or running silently."""
    now = now_ts()
    settings = hub.settings
    found: dict[str, dict[str, Any]] = {}

    def add(t: dict[str, Any], reason: str, since: str, detail: str) -> None:
        if t["task_id"] not in found:
            found[t["task_id"]] = {
                "reason": reason, "network_id": t["network_id"], "task_id": t["task_id"], "title": t["title"],
                "content": t["content"], "priority": t["priority"], "status": t["status"], "from_name": t["from_name"],
                "from_kind": t["from_kind"], "to_name": t["to_name"], "since": since, "detail": detail}

    for t in needs_store.flagged_open_tasks(hub.db, ids, UNANSWERED, LIMIT):
        add(t, UNANSWERED, t["flagged_at"], f"{t['to_name']}'s turn ended without answering it; it is not done")
    if settings.stuck_delivered_seconds > 0:
        cutoff = now - settings.presence_timeout_seconds
        offline = {(s["network_id"], s["alias"]): s for s in needs_store.lapsed_sessions(hub.db, ids, cutoff)
                   if not is_online(hub, s)}
        if offline:
            keys = json.dumps(sorted(offline))
            for t in needs_store.delivered_before(hub.db, keys, now - settings.stuck_delivered_seconds, LIMIT):
                seen = offline[(t["network_id"], t["to_name"])]["last_seen_at"]
                add(t, OFFLINE, t["created_at"], f"delivered to {t['to_name']}, which is offline (last seen {seen} "
                                                   "UTC) and has not picked it up")
    if settings.stuck_running_seconds > 0:
        quiet_since = ts_text(now - settings.stuck_running_seconds)
        for t in needs_store.running_quiet_since(hub.db, ids, quiet_since, LIMIT):
            add(t, SILENT, t["active_at"], f"running on {t['to_name']} with no progress reported since "
                                             f"{t['active_at']} UTC")
    return list(found.values())


def _loops(hub: Hub, ids: list[str]) -> list[dict[str, Any]]:
    """The loop guard's cuts, one entry per pair (its newest cut and how many), newest first."""
    since = ts_text(now_ts() - LOOPS_LOOKBACK_SECONDS)
    pairs: dict[tuple[str, str, str], dict[str, Any]] = {}
    for network_id in ids:
        for row in needs_store.loops_broken_since(hub.db, network_id, since, LIMIT):
            data = json.loads(row["data"])
            sender, to = data.get("from", ""), data.get("to") or row["alias"]
            entry = pairs.get((network_id, sender, to))
            if entry is None:  # newest first: the first row of a pair is its latest cut
                pairs[(network_id, sender, to)] = {
                    "network_id": network_id, "from": sender, "from_kind": data.get("from_kind", AGENT), "to": to,
                    "limit": data.get("limit"), "retry_after": data.get("retry_after"), "cuts": 1,
                    "event_id": row["id"], "at": row["created_at"], "first_at": row["created_at"]}
            else:
                entry["cuts"] += 1
                entry["first_at"] = row["created_at"]
    return sorted(pairs.values(), key=lambda p: p["event_id"], reverse=True)[:LIMIT]
