"""Typed query parameters of the REST endpoints, for /openapi.json (the enums are the handlers' own)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from ..models import MAX_LIMIT
from ..vocabulary import EventsHolder, MessageKind, SessionStatusValue, TaskFlag, TaskStatus

# --- query parameters -----------------------------------------------------------------------------------

class Paging(BaseModel):
    """limit and offset of a list."""

    limit: int | None = Field(default=None, ge=1, description=f"at most this many (default 50, capped at {MAX_LIMIT})")
    offset: int | None = Field(default=None, ge=0, description="skip this many")


class NetworkScope(BaseModel):
    """Which network a data query reads."""

    network_id: str | None = Field(default=None, description="one network (a user token: default all of yours)")


class UploadQuery(BaseModel):
    """POST /api/attachments (docs/attachments.md)."""

    network_id: str | None = Field(default=None, description="the network to upload to (a user token: default "
                                   "their default network)")
    filename: str | None = Field(default=None, description="the file's name for a raw body (or X-Filename)")


class NodesQuery(NetworkScope, Paging):
    """GET /api/nodes."""


class StatusQuery(NetworkScope, Paging):
    """GET /api/status."""

    status: SessionStatusValue | None = None


class TasksQuery(NetworkScope, Paging):
    """GET /api/tasks."""

    status: TaskStatus | None = None
    to_name: str | None = Field(default=None, description="recipient alias")
    from_name: str | None = Field(default=None, description="sender alias or username")
    flag: TaskFlag | None = Field(default=None, description="only tasks with this flag")


class MessagesQuery(NetworkScope, Paging):
    """GET /api/messages."""

    alias: str | None = Field(default=None, description="that alias's inbox")
    kind: MessageKind | None = None
    unread: Literal["1", "true"] | None = Field(default=None, description="only unread items")


class CompletionsQuery(NetworkScope, Paging):
    """GET /api/completions."""

    alias: str | None = None


class TaskEventsQuery(NetworkScope, Paging):
    """GET /api/task_events."""

    task_id: str | None = None


class AuditQuery(Paging):
    """GET /api/audit-log."""

    network_id: str | None = None
    action: str | None = Field(default=None, description="e.g. login, token_create")


class StreamQuery(BaseModel):
    """GET /events/<alias>."""

    token: str | None = Field(default=None, description="the bearer token, for clients that cannot set headers")
    last_event_id: int | None = Field(default=None, ge=0, description="replay after this id (or Last-Event-ID)")
    network_id: str | None = None
    holder: EventsHolder | None = Field(
        default=None, description="`runner` from a process that turns each event into a turn of its agent (`commhub "
        "run`): the alias is shown held by `runner`, not `stream` (docs/presence.md)")


class NetworkStreamQuery(BaseModel):
    """GET /events?network_id=."""

    network_id: str | None = Field(default=None, description="the network to watch (default: your default network)")
    token: str | None = Field(default=None, description="the user token, for clients that cannot set headers")
    last_event_id: int | None = Field(default=None, ge=0, description="replay after this id (0: all retained)")


class ApprovalWait(NetworkScope):
    """GET /api/approvals/<id>."""

    wait_seconds: float | None = Field(default=None, ge=0, le=50, description="wait up to this long for the answer")


class ApprovalsQuery(NetworkScope, Paging):
    """GET /api/approvals."""

    status: Literal["pending", "approved", "denied"] | None = None
    alias: str | None = Field(default=None, description="the asking agent's alias")


class DeliveriesQuery(BaseModel):
    """GET /api/networks/:id/webhooks/:webhook_id/deliveries."""

    before: int | None = Field(default=None, ge=1, description="only deliveries with a smaller id (paging)")
    limit: int | None = Field(default=None, ge=1, description=f"at most this many (default 50, capped at {MAX_LIMIT})")
