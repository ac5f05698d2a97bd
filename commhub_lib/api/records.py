"""Records inside the REST answers (users, networks, tasks, …), for /openapi.json.

They allow extra fields: an answer may grow a field before its model does, without breaking a client.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..vocabulary import HeldBy, PriorityValue, SessionStatusValue

Text = str | None


class Record(BaseModel):
    """A JSON object of an answer (more fields may appear)."""

    model_config = ConfigDict(extra="allow")


class Ok(Record):
    """Every answer of /api carries ok: true."""

    ok: bool = True


# --- records --------------------------------------------------------------------------------------------

class User(Record):
    """A user as shown to clients."""

    user_id: str
    username: str
    display_name: str
    role: Literal["admin", "user"]
    email: Text = None
    created_at: Text = None


class Network(Record):
    """A network; member_role is the caller's role, member_count only on a single network."""

    network_id: str
    network_name: str
    description: str
    owner_id: str
    visibility: str
    max_members: int
    created_at: str
    updated_at: str
    member_role: str | None = None
    member_count: int | None = None


class Member(Record):
    """A member of a network."""

    user_id: str
    username: str
    display_name: str
    role: Literal["owner", "admin", "member"]
    joined_at: str


class Token(Record):
    """A network token as listed (never the secret)."""

    token_id: str
    name: str
    network_id: Text
    alias: Text
    created_at: str
    last_used_at: Text
    revoked_at: Text
    revoked: bool


class Session(Record):
    """An agent session as /api/status shows it."""

    alias: str
    network_id: str
    status: SessionStatusValue
    online: bool
    streams: int
    held_by: HeldBy | None = Field(None, description="what keeps it online: `runner` (`commhub run` holds its stream), "
                                   "`channel` (a GET /mcp or subscriptions/listen stream), `stream` (GET "
                                   "/events/<alias>), `a2a` (bound to an external A2A agent: the hub's bridge answers "
                                   "for it), `polling` (only tool calls within the presence timeout); "
                                   "null when offline")
    agent: Text = None
    model: Text = None
    task: Text = None
    progress: Text = None
    resume_id: Text = None
    node_id: Text = None
    last_seen_at: Text = None
    created_at: Text = None


class Task(Record):
    """A task."""

    task_id: str
    network_id: str
    from_name: str
    to_name: str
    title: Text
    content: str
    context: Text
    priority: PriorityValue
    status: str
    deadline: Text
    idempotency_key: Text
    message_id: str
    result: Text
    created_at: str
    updated_at: str
    flag: Text = Field(default=None, description="null, or 'unanswered' (docs/runner-server.md)")
    flagged_at: Text = None
    start_by: Text = Field(default=None, description="null, or when it must be started by; not started by then, it "
                           "expires (docs/tasks-deadlines.md)")
    schedule_id: Text = Field(default=None, description="null, or the schedule whose run this task is "
                              "(docs/schedules.md)")
    attachments: list[Attachment] | None = Field(default=None, description="the files sent with the task (GET "
                                                 "/api/tasks/<id>; lists leave it out)")


class Attachment(Record):
    """A file sent with a task, message or reply (docs/attachments.md)."""

    attachment_id: str
    filename: str
    size: int
    content_type: str
    sha256: str
    url: str = Field(description="GET it (with your bearer token) to download the file")


class TaskEvent(Record):
    """One step of a task's timeline."""

    id: int
    task_id: str
    network_id: str
    event: str
    actor: str
    detail: Text
    created_at: str


class Message(Record):
    """An inbox item: a message, task notice, reply, broadcast or notice."""

    message_id: str
    network_id: str
    from_: str = Field(alias="from")
    to: str
    kind: str
    content: str
    priority: str
    in_reply_to: Text
    task_id: Text
    status: Text
    created_at: str
    read_at: Text


class Completion(Record):
    """How a task ended."""

    task_id: str
    network_id: str
    alias: str
    status: str
    result: Text
    artifacts: list[str]
    duration_seconds: float | None
    completed_at: str


class Node(Record):
    """A machine agents run on."""

    node_id: str
    network_id: str
    hostname: str
    platform: Text
    agents: list[Any]
    sessions: int
    online_sessions: int
    created_at: str
    last_seen_at: str


class AuditEntry(Record):
    """One audit log entry."""

    id: int
    network_id: Text
    user_id: Text
    actor: str
    action: str
    detail: str
    ip: Text
    created_at: str
