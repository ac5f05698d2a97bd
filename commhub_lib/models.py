"""Pydantic models of request bodies and tool arguments; they also give the MCP input schemas.

Unknown fields are rejected everywhere (`extra="forbid"`), so a typo is an error that names the field
instead of a silently ignored value.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from .types import StrictFloat, StrictInt
from .vocabulary import (
    DEFAULT_PRIORITY,
    MessageKind,
    MissedPolicy,
    PriorityValue,
    ReplyStatusValue,
    ReportableSessionStatus,
    SessionStatusValue,
    TaskStatus,
)

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


PROGRESS_RULE = "a number from 0 to 100 (percent done) or a short text such as '3/5 suites pass' (max 200 characters)"
DEADLINE_RULE = ("an ISO 8601 date/time such as '2026-12-01T17:00:00Z', a number of seconds from now such as 3600, "
                 "or a duration such as '30m', '2h' or '1d'")
NODE_RULE = "a hostname string, or an object {\"hostname\": ..., \"platform\": ...} with only those keys"
DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|secs|seconds?|m|min|mins|minutes?|h|hr|hrs|hours?|d|days?)\s*$",
                         re.IGNORECASE)
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _progress(value: Any) -> Any:
    """A number is a percentage (stored as '50%'); a text is kept as written. Anything else is refused."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(PROGRESS_RULE)
    if isinstance(value, int | float):
        if not 0 <= value <= 100:
            raise ValueError(f"{value} is out of range: {PROGRESS_RULE}")
        return f"{value:g}%"
    if isinstance(value, str):
        if len(value) > MAX_SHORT:
            raise ValueError(f"too long ({len(value)} characters): {PROGRESS_RULE}")
        return value
    raise ValueError(PROGRESS_RULE)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _deadline(value: Any) -> Any:
    """Normalise what a model writes for a deadline to ISO 8601 UTC ('2026-12-01T17:00:00Z')."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(DEADLINE_RULE)
    now = datetime.now(UTC)
    if isinstance(value, int | float):
        if not 0 < value <= 10 * 365 * 86400:
            raise ValueError(f"{value} seconds is out of range: {DEADLINE_RULE}")
        return _iso(now + timedelta(seconds=value))
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_SHORT:
        raise ValueError(DEADLINE_RULE)
    text = value.strip()
    try:
        return _deadline(float(text))
    except ValueError:
        pass
    if match := DURATION_RE.match(text):
        seconds = float(match.group(1)) * UNIT_SECONDS[match.group(2)[0].lower()]
        return _deadline(seconds)
    try:
        moment = datetime.fromisoformat(text.replace(" ", "T", 1) if len(text) > 10 else text)
    except ValueError:
        raise ValueError(f"'{text}' is not understood: {DEADLINE_RULE}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # a time without a zone is taken as UTC, as every time here is
    return _iso(moment)


def _lower(value: Any) -> Any:
    """Models write 'High' or 'DONE' as often as 'high': choices are matched without case."""
    return value.strip().lower() if isinstance(value, str) else value


def _listify(value: Any) -> Any:
    """One string where a list of strings is expected is a list of one."""
    return [value] if isinstance(value, str) else value


Username = Annotated[str, AfterValidator(_username)]
Alias = Annotated[str, AfterValidator(_alias)]
Short = Annotated[str, Field(max_length=MAX_SHORT)]
Content = Annotated[str, Field(min_length=1, max_length=MAX_CONTENT)]
Priority = Annotated[PriorityValue, BeforeValidator(_lower)]
SessionStatus = Annotated[SessionStatusValue, BeforeValidator(_lower)]
Progress = Annotated[float | Short | None, BeforeValidator(_progress)]
Deadline = Annotated[float | Short | None, BeforeValidator(_deadline)]
ReplyStatus = Annotated[ReplyStatusValue | None, BeforeValidator(_lower)]
REPLY_STATUS_RULE = ("'done' (finished: ends the task as replied, content is the result), 'failed' (could not do "
                     "it: ends the task as failed, content says why), 'progress' (still working: the task stays "
                     "running, content is an update) or 'question' (you need input from the sender: the task waits "
                     "as input_required and the sender is asked; their answer arrives as a reply with this task_id)")


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
    """POST /api/tokens. `alias` binds the token to one agent alias; `expires_in_seconds` makes it expire."""

    name: str = Field(min_length=1, max_length=100)
    network_id: str = Field(min_length=1, max_length=100)
    alias: Alias | None = None
    expires_in_seconds: StrictInt | None = Field(default=None, ge=60, le=10 * 365 * 24 * 3600)


class MemberRoleRequest(Body):
    """PUT /api/networks/:id/members/:user_id."""

    role: Annotated[Literal["member", "admin"], BeforeValidator(_lower)]


# --- agents: sending ----------------------------------------------------------------------------

class InlineFile(Body):
    """A small file carried in the send itself, as base64 (docs/attachments.md); stored as an upload is."""

    filename: Annotated[str, Field(min_length=1, max_length=255)] = Field(description="the file's name")
    content_type: Short | None = Field(default=None, description="its media type (default application/octet-stream)")
    data_base64: str = Field(description="the file's bytes, base64 (up to max_inline_attachment_bytes decoded)")


Attachments = Annotated[list[Short | InlineFile], BeforeValidator(_listify)]
ATTACHMENTS_RULE = ("files sent with it: attachment ids (att_...) from POST /api/attachments, or small files inline "
                    "as {filename, content_type, data_base64}")
ATTACHMENTS_HINT = ("`attachments` sends files: ids from POST /api/attachments or small ones inline as {filename, "
                    "content_type, data_base64}; the answer lists them with their download urls.")


class SendTask(Body):
    """Send a task to an alias."""

    to: Alias = Field(description="alias of the recipient")
    content: Content = Field(description="what to do")
    priority: Priority = DEFAULT_PRIORITY
    title: Short | None = None
    context: str | None = Field(default=None, max_length=MAX_CONTENT, description="background for the task")
    deadline: Deadline = Field(default=None, description=f"when it is due: {DEADLINE_RULE}; stored as ISO 8601 UTC")
    idempotency_key: Short | None = Field(
        default=None, description="a unique string you choose (e.g. a uuid), set on the FIRST call: if the call "
        "times out and you retry with the same key, the hub returns the task it already made instead of a second one")
    start_by: Deadline = Field(default=None, description=(
        f"the recipient must START it by then, or it expires (status 'expired', you get a reply saying so, and it "
        f"is never started later): {DEADLINE_RULE}; stored as ISO 8601 UTC (docs/tasks-deadlines.md)"))
    start_within_seconds: StrictFloat | None = Field(default=None, gt=0, le=10 * 365 * 86400, description=(
        "the same as start_by, given as seconds from now (give one of the two)"))
    attachments: Attachments = Field(default_factory=list, max_length=20, description=ATTACHMENTS_RULE)

    @model_validator(mode="after")
    def _one_start_by(self) -> SendTask:
        """start_within_seconds is start_by given as seconds from now: it is turned into start_by here."""
        if self.start_within_seconds is not None:
            if self.start_by is not None:
                raise ValueError("give start_by or start_within_seconds, not both")
            self.start_by = _deadline(self.start_within_seconds)
            self.start_within_seconds = None
        return self


class SendMessage(Body):
    """Send a plain message to an alias."""

    to: Alias = Field(description="alias of the recipient")
    content: Content
    attachments: Attachments = Field(default_factory=list, max_length=20, description=ATTACHMENTS_RULE)


class SendReply(Body):
    """Reply to a message or a task; on a task its recipient must say the status."""

    message_id: Short | None = Field(default=None, description="the message replied to (a msg_... id)")
    task_id: Short | None = Field(default=None, description="the task replied to (a uuid task id)")
    content: Content | None = Field(default=None, description=(
        "your reply (the result, the reason, the update, the question or the answer); may be left out only on a "
        "progress reply that gives `progress`"))
    progress: Progress = Field(default=None, description=(
        "only with status 'progress': " + PROGRESS_RULE + "; also shown as your progress in get_all_status"))
    status: ReplyStatus = Field(default=None, description=(
        "required when you reply to a task you received: " + REPLY_STATUS_RULE + ". Leave it out when you answer "
        "a question about a task you sent, or reply to a plain message"))
    attachments: Attachments = Field(default_factory=list, max_length=20, description=ATTACHMENTS_RULE)


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


class RestReply(SendReply):
    """POST /api/replies: a person (or a script with a network token) replies, with the same rules as send_reply."""

    network_id: Short | None = None


class RestCancel(Body):
    """POST /api/tasks/:id/cancel."""

    reason: Short | None = None


# --- agents: tool arguments ---------------------------------------------------------------------

class NodeInfo(Body):
    """The machine an agent runs on."""

    hostname: Short = Field(min_length=1)
    platform: Short | None = None


def _node(value: Any) -> Any:
    """A hostname, or {hostname, platform}; one clear error either way (never the union's branch names)."""
    if value is None or isinstance(value, NodeInfo):
        return value
    if isinstance(value, str):
        if not value.strip() or len(value) > MAX_SHORT:
            raise ValueError(NODE_RULE)
        return value
    if isinstance(value, dict):
        unknown = sorted(set(value) - {"hostname", "platform"})
        if unknown:
            raise ValueError(f"unknown key {', '.join(repr(k) for k in unknown)}: node is {NODE_RULE}")
        try:
            return NodeInfo.model_validate(value)
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in err["loc"])
            raise ValueError(f"{where} is missing or invalid: node is {NODE_RULE}") from None
    raise ValueError(NODE_RULE)


class ReportStatus(Body):
    """Claim an alias (first call) and report what the agent is doing."""

    alias: Alias | None = Field(default=None, description="the name to be addressed by; needed on the first call")
    status: Annotated[ReportableSessionStatus | None, BeforeValidator(_lower)] = Field(
        default=None, description="'working' while you work on something, 'idle' when you wait for work")
    agent: Short | None = Field(default=None, description="agent program, e.g. claude-code")
    model: Short | None = None
    task: Short | None = Field(default=None, description="what the agent works on now")
    progress: Progress = Field(default=None, description=PROGRESS_RULE + "; a number is shown as a percentage")
    resume_id: Short | None = Field(default=None, description="the agent's own session/resume id")
    node: Annotated[NodeInfo | Short | None, BeforeValidator(_node)] = Field(default=None, description=NODE_RULE)


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


IdList = Annotated[list[Short] | None, BeforeValidator(_listify)]


class AckInbox(Body):
    """Mark inbox items read; acking a task notice starts the task (running). Open tasks stay listed."""

    ids: IdList = Field(default=None, max_length=MAX_LIMIT, description=(
        "ids to mark read: message ids (msg_...) from get_inbox items, or task ids (acks that task's unread items)"))
    message_ids: IdList = Field(default=None, max_length=MAX_LIMIT, description="the same as ids (older name)")
    all: bool = Field(default=False, description="mark every unread item read")


class ReportCompletion(Body):
    """Finish a task you received (it becomes replied)."""

    task_id: Short
    result: Content
    artifacts: Annotated[list[Annotated[str, Field(max_length=2000)]], BeforeValidator(_listify)] = Field(
        default_factory=list, max_length=100, description="paths, URLs or ids of what you produced")
    attachments: Attachments = Field(default_factory=list, max_length=20, description=ATTACHMENTS_RULE)


class GetTask(Body):
    """One task with its event log."""

    task_id: Short


class ListTasks(Body):
    """Tasks of the network, newest first."""

    status: Annotated[TaskStatus | None, BeforeValidator(_lower)] = None
    to_name: Alias | None = None
    from_name: Alias | None = None
    limit: StrictInt = Field(default=50, ge=1)
    flag: Annotated[Short | None, BeforeValidator(_lower)] = Field(
        default=None, description="only tasks with this flag ('unanswered': a runner's turn ended without an answer)")


class Search(Body):
    """Full-text search over the tasks, messages and replies of the network (docs/search.md)."""

    query: Annotated[str, Field(min_length=1, max_length=500)] = Field(
        description="plain words, all required; a word ending in * matches as a prefix")
    kind: Annotated[MessageKind | None, BeforeValidator(_lower)] = Field(
        default=None, description="only this kind: task (the tasks themselves), message, reply, notice, broadcast")
    limit: StrictInt = Field(default=20, ge=1, le=100)


class CancelTask(Body):
    """Cancel a task (its sender, or a network owner/admin)."""

    task_id: Short
    reason: Short | None = None


class GetCompletions(Body):
    """Completion records, newest first."""

    alias: Alias | None = None
    limit: StrictInt = Field(default=50, ge=1)


def body_models() -> dict[str, type[Body]]:
    """Every request/argument model by class name (validation errors name the model, not the class)."""
    found: dict[str, type[Body]] = {}
    pending: list[type[Body]] = [Body]
    while pending:
        cls = pending.pop()
        for sub in cls.__subclasses__():
            found[sub.__name__] = sub
            pending.append(sub)
    return found


# --- runner support (docs/runner-server.md) ---------------------------------------------------------

class RestFlag(Body):
    """POST /api/tasks/:id/flag: set a flag (vocabulary.TASK_FLAGS), or null to clear it."""

    flag: Annotated[Short | None, BeforeValidator(_lower)] = Field(
        description="'unanswered' (a runner's turn ended with the task still open), or null to clear the flag")
    note: str | None = Field(default=None, max_length=1000, description="a short text for the task's timeline")


class RestApproval(Body):
    """POST /api/approvals: an agent asks a person for permission and may wait for the answer."""

    task_id: Short | None = Field(default=None, description="your open task the question is about; without it "
                                  "the question goes to the person who owns your token")
    question: Content = Field(description="what you ask permission for; the person answers yes (or ok, allow...) "
                              "to approve, anything else to deny")
    wait_seconds: StrictFloat = Field(default=0, ge=0, le=50, description="wait up to this long for the answer")
    network_id: Short | None = None


class PermissionPrompt(Body):
    """Claude Code's --permission-prompt-tool call: which tool wants to run with which input."""

    # Claude Code decides what it sends: a field added by a later version must not fail every prompt.
    model_config = ConfigDict(extra="ignore")

    tool_name: Annotated[str, Field(min_length=1, max_length=MAX_SHORT)] = Field(
        description="the tool that asks for permission")
    input: dict[str, Any] = Field(default_factory=dict, description="the tool's input")
    tool_use_id: Short | None = Field(default=None, description="the tool use request's id")
    task_id: Short | None = Field(default=None, description="the task to ask on (default: the one you work on)")


# --- webhooks (docs/webhooks.md) ---------------------------------------------------------------

class WebhookCreateRequest(Body):
    """POST /api/networks/:id/webhooks: where to POST, and which events (empty lists = every one)."""

    url: Annotated[str, Field(min_length=8, max_length=2000)]
    events: list[Short] = Field(default_factory=list, max_length=50)
    aliases: list[Short] = Field(default_factory=list, max_length=200)
    description: str = Field(default="", max_length=1000)


class WebhookUpdateRequest(Body):
    """PATCH /api/networks/:id/webhooks/:webhook_id: the fields given change; `enabled: true` re-enables."""

    url: Annotated[str, Field(min_length=8, max_length=2000)] | None = None
    events: list[Short] | None = Field(default=None, max_length=50)
    aliases: list[Short] | None = Field(default=None, max_length=200)
    description: str | None = Field(default=None, max_length=1000)
    enabled: bool | None = None


# --- A2A server (docs/a2a.md) -------------------------------------------------------------------

class A2AAgentRequest(Body):
    """PUT /api/networks/:id/aliases/:alias/a2a: serve the alias as an A2A agent (or stop), and its card's
    description (left out: kept as it was)."""

    enabled: bool = Field(strict=True, description="true: the alias is served as an A2A agent; false: it is not")
    description: str | None = Field(default=None, max_length=1000,
                                    description="what the agent does, shown in its Agent Card")
# --- schedules (docs/schedules.md) -------------------------------------------------------------

MISSED_RULE = ("what to do with a run missed while the hub was down: 'run_once' (run it once at start, never "
               "several times) or 'skip' (go on to the next time)")


class ScheduleTask(Body):
    """Schedule a task to an alias: give exactly one of `at` (once), `every_seconds` or `cron`."""

    to: Alias = Field(description="alias of the recipient")
    content: Content = Field(description="what to do (each run sends this as a task)")
    priority: Priority = DEFAULT_PRIORITY
    title: Short | None = None
    context: str | None = Field(default=None, max_length=MAX_CONTENT, description="background for the task")
    at: float | Short | None = Field(default=None, description=(
        "run once at this time: ISO 8601 such as '2026-12-24T09:00' (without an offset it is a time in `tz`) or a "
        "number of seconds from now"))
    every_seconds: StrictInt | None = Field(default=None, ge=1, le=366 * 86400, description=(
        "run every this many seconds (at least 10 by default: the schedule_min_interval_seconds setting)"))
    cron: Short | None = Field(default=None, description=(
        "a 5-field cron expression 'minute hour day-of-month month day-of-week', e.g. '0 9 * * 1-5' (09:00 on "
        "weekdays), evaluated in `tz`"))
    tz: Short = Field(default="UTC", description="an IANA time zone such as 'Europe/Berlin' (for `cron` and a "
                      "local `at`)")
    missed: Annotated[MissedPolicy, BeforeValidator(_lower)] = Field(
        default="run_once", description=MISSED_RULE)


class RestScheduleTask(ScheduleTask):
    """POST /api/schedules: as the tool, plus the network for user tokens."""

    network_id: Short | None = None


class ListSchedules(Body):
    """The network's schedules, newest first."""

    limit: StrictInt = Field(default=50, ge=1)


class CancelSchedule(Body):
    """Delete a schedule (its creator, or a network owner/admin); the tasks it sent stay."""

    schedule_id: Short
