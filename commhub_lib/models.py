"""Pydantic models of request bodies and tool arguments; they also give the MCP input schemas.

Unknown fields are rejected everywhere (`extra="forbid"`), so a typo is an error that names the field
instead of a silently ignored value.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from .types import StrictFloat, StrictInt

# CJK ideographs, kana and hangul, allowed in usernames and aliases.
CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
# Usernames: letters, digits, underscore, and CJK, 2-50 characters.
USERNAME_RE = re.compile(rf"^[A-Za-z0-9_{CJK}]{{2,50}}$")
# Aliases: what agents (and, for replies, people by username) are addressed by; safe in URLs and logs.
ALIAS_RE = re.compile(rf"^[A-Za-z0-9_{CJK}][A-Za-z0-9_.\-{CJK}]{{0,63}}$")
ALIAS_RULE = "must be 1-64 characters: letters, digits, CJK, '_', '.', '-', not starting with '.' or '-'"

MAX_CONTENT = 64 * 1024
MAX_SHORT = 200
MAX_LIMIT = 500


def _username(value: str) -> str:
    if not USERNAME_RE.match(value):
        raise ValueError("must be 2-50 characters: letters, digits, underscore or CJK")
    return value


def _alias(value: str) -> str:
    if not ALIAS_RE.match(value):
        raise ValueError(ALIAS_RULE)
    return value


Username = Annotated[str, AfterValidator(_username)]
Alias = Annotated[str, AfterValidator(_alias)]
Short = Annotated[str, Field(max_length=MAX_SHORT)]
Content = Annotated[str, Field(min_length=1, max_length=MAX_CONTENT)]
Priority = Literal["low", "normal", "high", "urgent"]
SessionStatus = Literal["idle", "working", "offline"]


class Body(BaseModel):
    """Base of every request body: unknown fields are errors."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


# --- accounts ---------------------------------------------------------------------------------

class RegisterRequest(Body):
    """POST /api/auth/register."""

    username: Username
    password: str = Field(min_length=6, max_length=1024)
    email: str | None = Field(default=None, max_length=254)
    display_name: str | None = Field(default=None, max_length=100)


class LoginRequest(Body):
    """POST /api/auth/login."""

    username: str = Field(min_length=1, max_length=50)
    password: str = Field(min_length=1, max_length=1024)


class UpdateMeRequest(Body):
    """PUT /api/auth/me."""

    display_name: str | None = Field(default=None, min_length=1, max_length=100)
    email: str | None = Field(default=None, max_length=254)


class PasswordChangeRequest(Body):
    """POST /api/auth/password."""

    old_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=6, max_length=1024)


# --- networks ---------------------------------------------------------------------------------

class NetworkCreateRequest(Body):
    """POST /api/networks."""

    name: str = Field(min_length=1, max_length=100)
    description: str = Field(default="", max_length=1000)


class NetworkUpdateRequest(Body):
    """PUT /api/networks/:id (`network_name` as the reference sends it; `name` is accepted too)."""

    network_name: str | None = Field(default=None, min_length=1, max_length=100)
    name: str | None = Field(default=None, min_length=1, max_length=100)
    description: str | None = Field(default=None, max_length=1000)
    visibility: Literal["private", "public"] | None = None
    max_members: StrictInt | None = Field(default=None, ge=1, le=10000)


class InviteCreateRequest(Body):
    """POST /api/networks/:id/invite."""

    role: Literal["member", "admin"] = "member"
    max_uses: StrictInt = Field(default=1, ge=1, le=10000)
    expires_in_seconds: StrictInt | None = Field(default=None, ge=1, le=365 * 24 * 3600)


class JoinRequest(Body):
    """POST /api/networks/join."""

    invite_code: str = Field(min_length=1, max_length=100)


class TokenCreateRequest(Body):
    """POST /api/tokens. `alias` binds the token to one agent alias."""

    name: str = Field(min_length=1, max_length=100)
    network_id: str = Field(min_length=1, max_length=100)
    alias: Alias | None = None


# --- agents: sending ----------------------------------------------------------------------------

class SendTask(Body):
    """Send a task to an alias."""

    to: Alias = Field(description="alias of the recipient")
    content: Content = Field(description="what to do")
    priority: Priority = "normal"
    title: Short | None = None
    context: str | None = Field(default=None, max_length=MAX_CONTENT, description="background for the task")
    deadline: Short | None = Field(default=None, description="free-form deadline, e.g. ISO 8601")
    idempotency_key: Short | None = Field(default=None, description="retrying with the same key creates one task")


class SendMessage(Body):
    """Send a plain message to an alias."""

    to: Alias = Field(description="alias of the recipient")
    content: Content


class SendReply(Body):
    """Reply to a message or a task; `done`/`failed` end a task."""

    message_id: Short | None = Field(default=None, description="the message replied to")
    task_id: Short | None = Field(default=None, description="the task replied to")
    content: Content
    status: Literal["done", "failed", "progress"] = "done"


class Broadcast(Body):
    """Send to every session of the network."""

    content: Content
    filter_status: SessionStatus | None = Field(default=None, description="only sessions with this status")


class RestSendTask(SendTask):
    """POST /api/tasks: as the tool, plus the network for user tokens (the sender is the caller)."""

    network_id: Short | None = None


class RestSendMessage(SendMessage):
    """POST /api/messages."""

    network_id: Short | None = None


class RestBroadcast(Broadcast):
    """POST /api/broadcast."""

    network_id: Short | None = None


# --- agents: tool arguments ---------------------------------------------------------------------

class NodeInfo(Body):
    """The machine an agent runs on."""

    hostname: Short = Field(min_length=1)
    platform: Short | None = None


class ReportStatus(Body):
    """Claim an alias (first call) and report what the agent is doing."""

    alias: Alias | None = Field(default=None, description="the name to be addressed by; needed on the first call")
    status: Literal["idle", "working"] | None = None
    agent: Short | None = Field(default=None, description="agent program, e.g. claude-code")
    model: Short | None = None
    task: Short | None = Field(default=None, description="what the agent works on now")
    progress: Short | None = Field(default=None, description="free-form progress, e.g. '3/5 tests pass'")
    resume_id: Short | None = Field(default=None, description="the agent's own session/resume id")
    node: NodeInfo | Short | None = Field(default=None, description="hostname, or {hostname, platform}")


class Empty(Body):
    """No arguments."""


class GetAllStatus(Body):
    """List the sessions of the network."""

    filter_status: SessionStatus | None = None


class GetInbox(Body):
    """Read unread items, urgent first."""

    limit: StrictInt = Field(default=50, ge=1, description=f"at most this many (capped at {MAX_LIMIT})")
    wait_seconds: StrictFloat = Field(default=0, ge=0, le=50,
                                      description="wait up to this long for an item (long-poll)")


class AckInbox(Body):
    """Mark inbox items read; acking a task notice starts the task (running)."""

    message_ids: list[Short] | None = Field(default=None, max_length=MAX_LIMIT)
    all: bool = Field(default=False, description="ack every unread item")


class ReportCompletion(Body):
    """Finish a task you received (it becomes replied)."""

    task_id: Short
    result: Content
    artifacts: list[Annotated[str, Field(max_length=2000)]] = Field(default_factory=list, max_length=100)


class GetTask(Body):
    """One task with its event log."""

    task_id: Short


class ListTasks(Body):
    """Tasks of the network, newest first."""

    status: Literal["delivered", "running", "replied", "failed", "cancelled"] | None = None
    to_name: Alias | None = None
    from_name: Alias | None = None
    limit: StrictInt = Field(default=50, ge=1)


class CancelTask(Body):
    """Cancel a task (its sender, or a network owner/admin)."""

    task_id: Short
    reason: Short | None = None


class GetCompletions(Body):
    """Completion records, newest first."""

    alias: Alias | None = None
    limit: StrictInt = Field(default=50, ge=1)
