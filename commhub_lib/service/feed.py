"""The dashboard's live feed when it opens: a network's newest events, read once, before the stream goes live.

The answer's `last_event_id` is where the network stream (GET /events?network_id=) resumes with Last-Event-ID: the
stream replays exactly what came after this read, so the feed has no gap and shows no event twice. A reply's text
is not in its `new_reply` event (the event names the reply; the text is stored once, in the inbox): each one found
here carries it as `content`, so the feed line can show a reply's result.
"""

from __future__ import annotations

import json
from typing import Any

from ..store import events as event_store
from ..store import messages as message_store
from ..vocabulary import NEW_REPLY
from .hub import Hub, Principal, clamp_limit, require_user_token
from .networks import single_network

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
# The opening read looks back through at most this many of the hub's newest events (~10 ms here; store/events.py).
SCAN_EVENTS = 100_000


def network_events(hub: Hub, principal: Principal, network_id: str | None, limit: int | None,
                   after: int | None) -> dict[str, Any]:
    """A network's newest events, oldest first (with `after`: the ones after that id), each reply with its text."""
    require_user_token(principal)  # as the network stream: people watch networks, agents their own alias
    network_id = single_network(hub, principal, network_id)
    count = clamp_limit(limit, DEFAULT_LIMIT, MAX_LIMIT)
    if after is None:
        rows = event_store.recent_network_events(hub.db, network_id, count, SCAN_EVENTS)[::-1]
    else:
        rows = event_store.network_events_after(hub.db, network_id, after, count)
    last = rows[-1]["id"] if rows else (after if after is not None else
                                        event_store.latest_network_event_id(hub.db, network_id))
    events = [_record(row) for row in rows]
    _add_reply_texts(hub, network_id, events)
    return {"ok": True, "network_id": network_id, "last_event_id": last, "events": events}


def _record(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "alias": row["alias"], "event": row["event"], "data": json.loads(row["data"]),
            "created_at": row["created_at"], "content": None}


def _add_reply_texts(hub: Hub, network_id: str, events: list[dict[str, Any]]) -> None:
    """Each new_reply's text, from its inbox item (one read for all of them; a pruned item leaves null)."""
    ids = [e["data"].get("message_id") for e in events if e["event"] == NEW_REPLY and e["data"].get("message_id")]
    if not ids:
        return
    texts = {m["message_id"]: m["content"] for m in message_store.get_messages(hub.db, network_id, ids)}
    for e in events:
        if e["event"] == NEW_REPLY:
            e["content"] = texts.get(e["data"].get("message_id"))
