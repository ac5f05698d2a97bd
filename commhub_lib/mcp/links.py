"""Resource links: a tool result that lists attachments (a send's answer, get_task, get_inbox) also carries one MCP
`resource_link` content item per file (MCP 2025-06-18 on), so a client can fetch it: uri = its download URL (GET
/api/attachments/<id>, with the same bearer token), name = its filename, mimeType, size (docs/attachments.md)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any


def _listed(result: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every attachment record where the tools put them: the answer itself, the task and its replies, inbox items
    and open tasks."""
    yield from result.get("attachments") or ()
    task = result.get("task")
    if isinstance(task, dict):
        yield from task.get("attachments") or ()
    yield from result.get("reply_attachments") or ()
    for key in ("items", "open_tasks"):
        for entry in result.get(key) or ():
            if isinstance(entry, dict):
                yield from entry.get("attachments") or ()


def resource_links(result: dict[str, Any], base_url: Callable[[], str]) -> list[dict[str, Any]]:
    """One resource_link per attachment the result lists (each once), its uri made absolute with `base_url()` (the
    hub's URL as the client reaches it, asked only when there is a link to make) when the record's url is a path."""
    links: list[dict[str, Any]] = []
    seen: set[str] = set()
    base: str | None = None
    for record in _listed(result):
        if record["attachment_id"] in seen:
            continue
        seen.add(record["attachment_id"])
        url = record["url"]
        if "://" not in url:
            base = base if base is not None else base_url()
            url = base + url
        links.append({"type": "resource_link", "uri": url,
                      "name": record["filename"], "mimeType": record["content_type"], "size": record["size"],
                      "description": f"attachment {record['attachment_id']} (sha256 {record['sha256']}); download it "
                                     "with GET and your bearer token"})
    return links
