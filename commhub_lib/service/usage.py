"""What each network keeps against its storage quota, for the people who run it (REST, CLI, dashboard)."""

from __future__ import annotations

from typing import Any

from ..store import usage as usage_store
from .hub import Hub, Principal
from .networks import require_role


def network_usage(hub: Hub, principal: Principal, network_id: str) -> dict[str, Any]:
    """A network's bytes against max_network_bytes, with its aliases and tasks (its owners and admins, and the
    system admin)."""
    require_role(hub, principal, network_id, "admin")
    counters = usage_store.usage_of(hub.db, network_id)
    text, events = int(counters["text_bytes"]), int(counters["event_bytes"])
    files = int(counters["file_bytes"])  # attachments (docs/attachments.md)
    used = text + events + files
    limit = hub.settings.max_network_bytes
    return {"ok": True, "network_id": network_id, "bytes": used, "text_bytes": text, "event_bytes": events,
            "file_bytes": files, "max_network_bytes": limit, "percent": round(100 * used / limit, 1) if limit else None,
            "send_bytes_per_minute": hub.settings.send_bytes_per_minute, **usage_store.counts_of(hub.db, network_id)}
