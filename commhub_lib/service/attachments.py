"""Attachments: files sent with tasks, messages and replies (docs/attachments.md).

A file is uploaded (POST /api/attachments) or carried inline in a send (base64, small files), and stored once per
network by its SHA-256: the same bytes uploaded twice are one blob, counted once in the network's storage quota, under
two attachment ids (each upload keeps its own filename and content type). A send names attachments by id; they are
linked to the task, message or reply it stores, in the same write transaction. Who may read one: anyone who may read
an item it was sent with (a member of its network, as for the tasks and messages themselves); before it is sent, only
the person (or their agents' tokens) who uploaded it. What no item uses any more goes with the last item (the
triggers of schema.sql), so retention frees it and the quota usage goes down; an upload never sent is pruned after
attachment_unsent_hours.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import mimetypes
import re
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any

from ..errors import NotFound, PayloadTooLarge, ValidationFailed
from ..ids import new_id, now_text, now_ts
from ..models import InlineFile
from ..store import attachments as attachment_store
from ..store import tokens as token_store
from . import quotas
from .hub import CALLER_TOKEN, Hub, Principal

DEFAULT_TYPE = "application/octet-stream"
ROW_OVERHEAD = 200  # what schema.sql's usage triggers count for one row besides its bytes
MAX_FILENAME = 255
_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,63}$")
Ref = str | InlineFile


def url_of(hub: Hub, attachment_id: str) -> str:
    """Where the file is downloaded: under public_url when it is set, else a path on this hub."""
    return f"{hub.settings.public_url.rstrip('/')}/api/attachments/{attachment_id}"


def record(hub: Hub, row: dict[str, Any]) -> dict[str, Any]:
    """An attachment as the answers list it."""
    return {"attachment_id": row["attachment_id"], "filename": row["filename"], "size": row["size"],
            "content_type": row["content_type"], "sha256": row["sha256"], "url": url_of(hub, row["attachment_id"])}


def safe_filename(name: str | None) -> str:
    """A filename without directories, control or format characters, at most 255 characters ("file" if nothing
    is left): the name is shown to people and offered to their browsers as the download's name."""
    text = unicodedata.normalize("NFC", name or "").replace("\\", "/").rsplit("/", 1)[-1]
    text = "".join(c for c in text if unicodedata.category(c)[0] != "C").strip().strip(".")
    return text[:MAX_FILENAME] or "file"


def clean_type(content_type: str | None, filename: str = "") -> str:
    """The media type as given (parameters dropped, lower case); without one (or a generic one), the type the
    filename's extension says; else application/octet-stream."""
    value = (content_type or "").split(";", 1)[0].strip().lower()
    if not _TYPE.match(value) or value == DEFAULT_TYPE:
        value = (mimetypes.guess_type(filename)[0] or DEFAULT_TYPE).lower() if filename else DEFAULT_TYPE
    return value if _TYPE.match(value) else DEFAULT_TYPE


def _caller_user(hub: Hub) -> str | None:
    """The user behind the current request's token (the uploader check), or None without one."""
    token_id = CALLER_TOKEN.get()
    row = token_store.get_token(hub.db, token_id) if token_id else None
    return row["user_id"] if row else None


def _store(hub: Hub, network_id: str, user_id: str, filename: str, content_type: str, data: bytes) -> dict[str, Any]:
    """Store a file for a network (inside db.write()): its blob once per SHA-256, and a new attachment naming it."""
    digest = hashlib.sha256(data).hexdigest()
    blob_id = attachment_store.blob_id_of(hub.db, network_id, digest)
    adds = ROW_OVERHEAD + len(filename.encode()) + len(content_type) + (
        ROW_OVERHEAD + len(data) if blob_id is None else 0)
    quotas.check_store(hub, network_id, file_bytes=len(data), adds=adds)
    if blob_id is None:
        blob_id = attachment_store.insert_blob(hub.db, network_id, digest, data)
    row = {"attachment_id": new_id("att"), "network_id": network_id, "blob_id": blob_id, "filename": filename,
           "content_type": content_type, "uploaded_by": user_id, "created_at": now_text(), "created_ts": now_ts()}
    attachment_store.insert_attachment(hub.db, row)
    return {**row, "size": len(data), "sha256": digest}


def _check_size(hub: Hub, size: int, inline: bool) -> None:
    limit = hub.settings.max_inline_attachment_bytes if inline else hub.settings.max_attachment_bytes
    if size > limit:
        setting = "MAX_INLINE_ATTACHMENT_BYTES" if inline else "MAX_ATTACHMENT_BYTES"
        how = "; upload it with POST /api/attachments and send its id" if inline else ""
        raise PayloadTooLarge(f"the file is {quotas.size_text(size)}, larger than {quotas.size_text(limit)} "
                              f"(COMMHUB_{setting}){how}", code="attachment_too_large")
    if size == 0:
        raise ValidationFailed("the file is empty: send its bytes", code="invalid_upload")


def upload(hub: Hub, principal: Principal, network_id: str, filename: str | None, content_type: str | None,
           data: bytes) -> dict[str, Any]:
    """POST /api/attachments: store an upload; until a send names it, only its uploader may read or send it."""
    _check_size(hub, len(data), inline=False)
    name = safe_filename(filename)
    with hub.db.write():
        row = _store(hub, network_id, principal.user_id, name, clean_type(content_type, name), data)
    return {"ok": True, **record(hub, row), "network_id": network_id}


def _resolve(hub: Hub, network_id: str, ref: Ref, user_id: str | None) -> dict[str, Any]:
    """The attachment a send names (inside db.write()): an id of this network (another member's upload only once it
    was sent), or an inline file, stored now."""
    if isinstance(ref, InlineFile):
        try:
            data = base64.b64decode(ref.data_base64, validate=True)
        except (binascii.Error, ValueError):
            raise ValidationFailed(f"attachments: the data_base64 of '{ref.filename}' is not base64",
                                   code="invalid_upload") from None
        _check_size(hub, len(data), inline=True)
        name = safe_filename(ref.filename)
        return _store(hub, network_id, user_id or "", name, clean_type(ref.content_type, name), data)
    row = attachment_store.get_attachment(hub.db, network_id, ref)
    if row is None or (not row["sent"] and row["uploaded_by"] != user_id):
        raise NotFound(f"attachment '{ref}' not found in this network; upload the file with POST /api/attachments "
                       "(its answer's attachment_id) or carry a small one inline as {filename, content_type, "
                       "data_base64}", code="attachment_not_found")
    return row


def attach(hub: Hub, network_id: str, item_id: str, task_id: str | None, refs: Sequence[Ref]) -> list[dict[str, Any]]:
    """Link the attachments a send names to the item it stores (inside its db.write()); their records."""
    if not refs:
        return []
    user_id = _caller_user(hub)
    out: list[dict[str, Any]] = []
    for position, ref in enumerate(refs):
        row = _resolve(hub, network_id, ref, user_id)
        attachment_store.insert_link(hub.db, item_id, row["attachment_id"], network_id, task_id, position)
        out.append(record(hub, row))
    return out


def digest_texts(refs: Sequence[Ref]) -> list[str]:
    """What the loop guard hashes of a send's attachments besides its text (the same text with other files is not
    a duplicate)."""
    return [ref if isinstance(ref, str) else f"{ref.filename}\0{ref.data_base64}" for ref in refs]


def of_items(hub: Hub, item_ids: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
    """The attachments of items (task ids, message ids) by item id; items without any are left out."""
    found: dict[str, list[dict[str, Any]]] = {}
    for row in attachment_store.of_items(hub.db, list(dict.fromkeys(item_ids))):
        found.setdefault(row["item_id"], []).append(record(hub, row))
    return found


def of_task(hub: Hub, task_id: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A task's own attachments, and those of its replies (each with the reply's message_id)."""
    own = of_items(hub, [task_id]).get(task_id, [])
    replies = [{**record(hub, r), "message_id": r["item_id"]}
               for r in attachment_store.of_task_replies(hub.db, task_id)]
    return own, replies


def annotate_inbox(hub: Hub, items: list[dict[str, Any]], tasks: list[dict[str, Any]]) -> None:
    """Add `attachments` to the inbox items (a task notice: its task's) and open tasks that have any."""
    if not items and not tasks:
        return
    keys = [(i["task_id"] if i.get("kind") == "task" and i.get("task_id") else i["message_id"]) for i in items]
    found = of_items(hub, [*keys, *(t["task_id"] for t in tasks)])
    if not found:
        return
    for item, key in zip(items, keys, strict=True):
        if key in found:
            item["attachments"] = found[key]
    for task in tasks:
        if task["task_id"] in found:
            task["attachments"] = found[task["task_id"]]


def download(hub: Hub, network_ids: list[str], principal: Principal, attachment_id: str) -> dict[str, Any]:
    """GET /api/attachments/<id>: the attachment's record and bytes (`data`), for a caller who may read an item it
    was sent with (its uploader before that); another network's id is not found, as an unknown one."""
    row = attachment_store.find_attachment(hub.db, network_ids, attachment_id)
    if row is None or (not row["sent"] and row["uploaded_by"] != principal.user_id):
        raise NotFound(f"attachment '{attachment_id}' not found in your networks", code="attachment_not_found")
    return {**record(hub, row), "network_id": row["network_id"], "data": row["data"]}


def prune_unsent(hub: Hub, cutoff_ts: float, limit: int) -> int:
    """Delete up to `limit` uploads made before the cutoff and never sent (inside the caller's db.write())."""
    ids = attachment_store.unsent_before(hub.db, cutoff_ts, limit)
    return attachment_store.delete_attachments(hub.db, ids) if ids else 0
