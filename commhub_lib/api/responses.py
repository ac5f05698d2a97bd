"""Shapes of the REST answers and typed query parameters, for /openapi.json.

The handlers return plain dicts from the service layer; these models describe them. A test validates real
answers against the document built from them, so a field that drifts is caught. Records allow extra
fields: an answer may grow a field before its model does, without breaking a client.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..models import MAX_LIMIT
from .data import MESSAGE_KINDS, TASK_STATUSES

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
    status: Literal["idle", "working", "offline"]
    online: bool
    streams: int
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
    priority: Literal["low", "normal", "high", "urgent"]
    status: str
    deadline: Text
    idempotency_key: Text
    message_id: str
    result: Text
    created_at: str
    updated_at: str


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


# --- answers --------------------------------------------------------------------------------------------

class Health(Record):
    """GET /health."""

    status: Literal["ok"]
    version: str
    uptime: int


class Registered(Ok):
    """A new user with a login token, its default network and a network token (secrets shown once)."""

    user: User
    token: str = Field(description="utok_ login token")
    network_token: str = Field(description="ntok_ token of the default network")
    network_id: str


class LoggedIn(Ok):
    """A login token."""

    user: User
    token: str = Field(description="utok_ login token")
    network_id: Text


class UserAnswer(Ok):
    """One user."""

    user: User


class UserList(Ok):
    """Users."""

    users: list[User]


class TokenCreated(Ok):
    """A new network token; the secret is shown only here."""

    token_id: str
    token: str = Field(description="ntok_ secret, shown once")
    name: str
    network_id: str
    alias: Text


class TokenList(Ok):
    """The caller's network tokens."""

    tokens: list[Token]


class TokenRevoked(Ok):
    """A revoked token."""

    token_id: str
    revoked: bool


class AuditList(Ok):
    """Audit entries, newest first."""

    entries: list[AuditEntry]


class NetworkList(Ok):
    """Networks with the caller's role."""

    networks: list[Network]


class NetworkCreated(Ok):
    """A new network."""

    network_id: str
    network_name: str


class NetworkAnswer(Ok):
    """One network."""

    network: Network


class NetworkDeleted(Ok):
    """A deleted network."""

    network_id: str
    deleted: bool


class MemberList(Ok):
    """Members of a network."""

    members: list[Member]


class InviteCreated(Ok):
    """A new invite code."""

    invite_code: str
    network_id: str
    role: Literal["member", "admin"]
    max_uses: int
    expires_at: Text


class Joined(Ok):
    """The network joined with an invite code."""

    network_id: str
    network_name: str
    role: str


class SessionList(Ok):
    """Agent sessions."""

    sessions: list[Session]


class TaskList(Ok):
    """Tasks, newest first."""

    tasks: list[Task]


class TaskSent(Ok):
    """A task created (or found again by its idempotency key)."""

    task_id: str
    message_id: str
    to: str
    status: str
    duplicate: bool
    recipient_online: bool


class MessageSent(Ok):
    """A message stored in the recipient's inbox."""

    message_id: str
    to: str
    recipient_online: bool


class Broadcasted(Ok):
    """A broadcast: one inbox item per recipient."""

    message_id: str
    message_ids: dict[str, str]
    recipients: int


class NodeList(Ok):
    """Machines."""

    nodes: list[Node]


class MessageList(Ok):
    """Messages, newest first."""

    messages: list[Message]


class CompletionList(Ok):
    """Completion records, newest first."""

    completions: list[Completion]


class TaskEventList(Ok):
    """Task events, oldest first."""

    events: list[TaskEvent]


class Counts(Record):
    """Counts by state."""

    total: int


class Stats(Ok):
    """Session and task counts."""

    sessions: Counts
    tasks: Counts


class JsonRpc(Record):
    """A JSON-RPC 2.0 message or batch element (MCP)."""

    jsonrpc: Literal["2.0"]
    id: int | str | None = None


# --- query parameters -----------------------------------------------------------------------------------

class Paging(BaseModel):
    """limit and offset of a list."""

    limit: int | None = Field(default=None, ge=1, description=f"at most this many (default 50, capped at {MAX_LIMIT})")
    offset: int | None = Field(default=None, ge=0, description="skip this many")


class NetworkScope(BaseModel):
    """Which network a data query reads."""

    network_id: str | None = Field(default=None, description="one network (a user token: default all of yours)")


class StatusQuery(NetworkScope):
    """GET /api/status."""

    status: Literal["idle", "working", "offline"] | None = None


class TasksQuery(NetworkScope, Paging):
    """GET /api/tasks."""

    status: Literal[TASK_STATUSES] | None = None  # type: ignore[valid-type]
    to_name: str | None = Field(default=None, description="recipient alias")
    from_name: str | None = Field(default=None, description="sender alias or username")


class MessagesQuery(NetworkScope, Paging):
    """GET /api/messages."""

    alias: str | None = Field(default=None, description="that alias's inbox")
    kind: Literal[MESSAGE_KINDS] | None = None  # type: ignore[valid-type]
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
