"""What a person's answer to an approval question means, and settling the approval when a reply answers it.

Kept apart from service/approvals.py (asking and waiting): every reply to an agent passes through `settle`
(service/tasks.record_reply_event), and asking builds on the task rules, so the two cannot share a module
without an import cycle.
"""

from __future__ import annotations

import re
from typing import Any

from ..ids import now_text
from ..store import approvals as approval_store
from ..vocabulary import AGENT
from .hub import Hub

# An answer approves when its first word is one of these (any case); anything else denies, its text the reason.
APPROVAL_WORDS = frozenset({"yes", "y", "ok", "approve", "approved", "allow", "allowed"})
APPROVAL_WORDS_TEXT = ", ".join(sorted(APPROVAL_WORDS, key=lambda w: (len(w), w)))
_FIRST_WORD = re.compile(r"\s*([^\W\d_]+)")


def verdict(answer: str) -> str:
    """'approved' when the answer's first word is an approval word, else 'denied'."""
    match = _FIRST_WORD.match(answer)
    return "approved" if match and match.group(1).lower() in APPROVAL_WORDS else "denied"


def settle(hub: Hub, msg: dict[str, Any]) -> bool:
    """If a stored reply to an agent answers one of its pending approvals, record the answer (inside
    db.write()); True when it did. Who may answer was checked by the reply's own rules before."""
    if msg["to_kind"] != AGENT:
        return False
    # On a task only the sender's (or an owner's) answer counts; a reply to the question itself always does.
    task_id = msg["task_id"] if msg["status"] == "answer" else None
    if msg["in_reply_to"] is None and task_id is None:
        return False
    row = approval_store.pending_for_reply(hub.db, msg["network_id"], msg["to_name"], msg["in_reply_to"], task_id)
    if row is None:
        return False
    return approval_store.settle(hub.db, row["approval_id"], verdict(msg["content"]), msg["content"],
                                 msg["message_id"], msg["from_name"], now_text())
