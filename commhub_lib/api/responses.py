"""Shapes of the REST answers, for /openapi.json.

The handlers return plain dicts from the service layer; these models describe them. A test validates real
answers against the document built from them, so a field that drifts is caught.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..vocabulary import CancelledStatus, DeliveryStatusValue, SenderKind
from .records import (
    Attachment,
    AuditEntry,
    Completion,
    Member,
    Message,
    Network,
    Node,
    Ok,
    Record,
    Session,
    Task,
    TaskEvent,
    Text,
    Token,
    User,
)

# --- answers --------------------------------------------------------------------------------------------

class Health(Record):
    """GET /health."""

    status: Literal["ok"]
    version: str
    uptime: int


class ProtectedResource(Record):
    """GET /.well-known/oauth-protected-resource: OAuth 2.0 protected resource metadata (RFC 9728)."""

    resource: str = Field(description="the hub's MCP endpoint, as clients reach it")
    bearer_methods_supported: list[Literal["header"]]
    resource_name: str
    resource_documentation: str


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


class QueuePlace(Ok):
    """Where a task stands with its recipient (docs/tasks-deadlines.md)."""

    queue_position: int | None = Field(default=None, description="1 = next among the recipient's open tasks (by "
                                       "priority, then age); null once the task is final")
    ahead: list[str] = Field(default_factory=list, description="ids of the open tasks before it (at most 10)")
    ahead_count: int = Field(default=0, description="how many open tasks are before it")
    recipient_online: bool
    recipient_busy: bool = Field(default=False, description="the recipient is working, or on another task")


class TaskSent(QueuePlace):
    """A task created (or found again: by its idempotency key, or as the same task again within the loop guard's
    duplicate window)."""

    task_id: str
    message_id: str
    to: str
    status: str
    duplicate: bool
    start_by: Text = None
    attachments: list[Attachment] | None = Field(default=None, description="the files sent with it, if any")


class MessageSent(Ok):
    """A message stored in the recipient's inbox (duplicate: the same message again within the loop guard's window,
    not delivered twice; message_id is the original's)."""

    message_id: str
    to: str
    recipient_online: bool
    duplicate: bool
    attachments: list[Attachment] | None = Field(default=None, description="the files sent with it, if any")


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


class LoginToken(Record):
    """One of the caller's logins (user tokens)."""

    token_id: str
    name: str
    created_at: str
    last_used_at: Text
    expires_at: Text
    current: bool


class LoginTokenList(Ok):
    """The caller's live logins."""

    tokens: list[LoginToken]


class LoginTokenRevoked(Ok):
    """A login logged out."""

    token_id: str
    revoked: bool
    current: bool


class MemberRemoved(Ok):
    """A member removed; their tokens for the network revoked."""

    network_id: str
    user_id: str
    removed: bool
    tokens_revoked: int | list[str]


class MemberRoleChanged(Ok):
    """A member's new role."""

    network_id: str
    user_id: str
    role: str
    previous_role: str


class Invite(Record):
    """An invite as listed (never its code)."""

    invite_id: str
    network_id: str
    role: str
    max_uses: int
    uses: int
    created_by: str
    created_at: str
    expires_at: Text
    revoked_at: Text
    usable: bool


class InviteList(Ok):
    """A network's invites, newest first."""

    invites: list[Invite]


class InviteRevoked(Ok):
    """A revoked invite."""

    invite_id: str
    revoked: bool


class AliasReleased(Ok):
    """An alias freed from its token."""

    network_id: str
    alias: str
    released: bool
    previous_token_id: Text
    note: str | None = None


class AliasRetired(Ok):
    """An alias retired for good."""

    network_id: str
    alias: str
    retired: bool


class NetworkUsage(Ok):
    """What a network keeps against its storage quota (docs/limits.md)."""

    network_id: str
    bytes: int = Field(description="text_bytes + event_bytes + file_bytes: what counts against max_network_bytes")
    text_bytes: int = Field(description="inbox items, broadcast bodies, tasks, completions and task events (texts "
                                        "plus a fixed estimate per row)")
    event_bytes: int = Field(description="the SSE event log (pruned after event_retention_days)")
    file_bytes: int = Field(default=0, description="attachments: each file's bytes once, plus its rows")
    max_network_bytes: int = Field(description="the limit (0 = none)")
    percent: float | None = Field(description="bytes as a percentage of the limit (null without a limit)")
    send_bytes_per_minute: int = Field(description="bytes one token may send per minute (0 = no limit)")
    aliases: int
    tasks: int


class ReplyAttachment(Attachment):
    """A file sent with a reply about a task."""

    message_id: str = Field(description="the reply it was sent with")


class AttachmentUploaded(Attachment):
    """An upload (docs/attachments.md): send its attachment_id in a task's, message's or reply's `attachments`."""

    ok: bool = True
    network_id: str


class TaskDetail(QueuePlace):
    """One task with its timeline and completion, and its place in its recipient's queue."""

    task: Task
    events: list[TaskEvent]
    completion: Completion | None
    reply_attachments: list[ReplyAttachment] = Field(default_factory=list, description="the files sent with the "
                                                     "replies about the task (progress, question, answer, result)")


class TaskCancelled(Ok):
    """A cancelled task; the recipient got a notice."""

    task_id: str
    status: CancelledStatus
    message_id: str


class Replied(Ok):
    """A reply stored and pushed to its recipient."""

    message_id: str
    in_reply_to: Text
    to: str
    task_id: Text
    status: Text
    attachments: list[Attachment] | None = Field(default=None, description="the files sent with it, if any")


class TaskFlagged(Ok):
    """A task's flag set or cleared (docs/runner-server.md)."""

    task_id: str
    flag: Text
    flagged_at: Text


class Approval(Ok):
    """An agent's question to a person and, once answered, the verdict (docs/runner-server.md)."""

    approval_id: str = Field(description="the question's message id")
    network_id: str
    alias: str = Field(description="the agent that asks")
    task_id: Text
    asked: str = Field(description="who is asked: the task's sender, or the owner of the agent's token")
    asked_kind: SenderKind
    status: Literal["pending", "approved", "denied"]
    question: Text
    answer: Text
    answer_id: Text
    answered_by: Text
    created_at: str
    answered_at: Text


class ApprovalRecord(Record):
    """An approval inside a list."""

    approval_id: str
    alias: str
    task_id: Text
    asked: str
    status: Literal["pending", "approved", "denied"]
    question: Text
    answer: Text


class ApprovalList(Ok):
    """Approvals, newest first."""

    approvals: list[ApprovalRecord]


class JsonRpc(Record):
    """A JSON-RPC 2.0 message or batch element (MCP)."""

    jsonrpc: Literal["2.0"]
    id: int | str | None = None


class WebhookRecord(Record):
    """A webhook (never its secret, except once in WebhookCreated)."""

    webhook_id: str
    network_id: str
    url: str
    events: list[str] = Field(description="event names it receives (empty: every one)")
    aliases: list[str] = Field(description="aliases whose events it receives (empty: every one)")
    description: str
    enabled: bool
    disabled_reason: Text = Field(description="why the hub disabled it (failing for webhook_disable_after_seconds)")
    failing_since_ts: float | None = Field(description="unix time its deliveries started failing (null: healthy)")
    created_by: str
    created_at: str


class Webhook(Ok, WebhookRecord):
    """One webhook."""


class WebhookCreated(Webhook):
    """A new webhook, with its secret: shown this once."""

    secret: str = Field(description="the HMAC key of X-CommHub-Signature (docs/webhooks.md)")
    note: str


class WebhookList(Ok):
    """A network's webhooks."""

    webhooks: list[WebhookRecord]


class WebhookDeleted(Ok):
    """A webhook removed with its delivery log."""

    webhook_id: str
    deleted: bool


class Delivery(Record):
    """One event for one webhook: pending, delivered or failed (given up when the webhook was disabled)."""

    delivery_id: int
    webhook_id: str
    event_id: int
    event: str
    alias: str
    status: DeliveryStatusValue
    attempts: int
    next_attempt_ts: float
    last_status: int | None = Field(description="the receiver's last HTTP status (null: no answer)")
    last_error: Text
    created_at: str
    updated_at: str


class DeliveryList(Ok):
    """A webhook's delivery log, newest first."""

    deliveries: list[Delivery]
    next_before: int | None = Field(description="pass as ?before= for the next page (null: no more)")


class Redelivery(Ok):
    """A delivery queued again."""

    webhook_id: str
    delivery_id: int
    status: DeliveryStatusValue
