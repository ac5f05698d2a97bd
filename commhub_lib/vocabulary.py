"""The domain's words, defined once: task statuses (which are open, which final), reply statuses, message kinds,
session statuses, priorities, task flags, sender kinds, and the stream events with the shape of their data.

Everything else imports these names; nothing in commhub_lib spells them again (tests/test_vocabulary.py checks
it, with a short allowlist). The dashboard cannot import Python: `commhub_lib/web/static/vocabulary.js` is
generated from this module (`python -m commhub_lib.vocabulary js`), and so is the list of events in docs/events.md
(`python -m commhub_lib.vocabulary events`); tests keep both equal to what this module makes.

Adding an event: an entry in EVENTS (its fields and a sentence for the docs), emitted by the service; then each
consumer handles it (the channel text in mcp/channel.py, `tail` in cli/tail.py, `listen` in cli/listen.py, the
dashboard feed in web/static/views-feed.js) and the two generated files are made again. The parametrized tests
over EVENTS fail until all of that is done, and until the scenario in tests/test_vocabulary.py emits the event.

Each tuple has a Literal beside it (pydantic's enums and pyright's checks need literal types); a test keeps the
two equal.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

# -- tasks: delivered -> running <-> input_required -> replied | failed | cancelled; delivered -> expired (not
# started by its `start_by`, docs/tasks-deadlines.md)
DELIVERED, RUNNING, INPUT_REQUIRED = "delivered", "running", "input_required"
REPLIED, FAILED, CANCELLED, EXPIRED = "replied", "failed", "cancelled", "expired"
CancelledStatus = Literal["cancelled"]
TaskStatus = Literal["delivered", "running", "input_required", "replied", "failed", "cancelled", "expired"]
TASK_STATUSES: tuple[TaskStatus, ...] = (DELIVERED, RUNNING, INPUT_REQUIRED, REPLIED, FAILED, CANCELLED, EXPIRED)
OPEN_TASK_STATUSES: tuple[TaskStatus, ...] = (DELIVERED, RUNNING, INPUT_REQUIRED)  # the task can still change
FINAL_TASK_STATUSES: tuple[TaskStatus, ...] = (REPLIED, FAILED, CANCELLED, EXPIRED)  # it never changes again
WORKING_TASK_STATUSES: tuple[TaskStatus, ...] = (RUNNING, INPUT_REQUIRED)  # picked up, not finished

# -- how a task's recipient reports on it (send_reply's `status`), and the task status each one leads to
DONE, PROGRESS, QUESTION = "done", "progress", "question"
ReplyStatusValue = Literal["done", "failed", "progress", "question"]
REPLY_STATUSES: tuple[ReplyStatusValue, ...] = (DONE, FAILED, PROGRESS, QUESTION)
FINAL_REPLY_STATUSES: tuple[ReplyStatusValue, ...] = (DONE, FAILED)  # the task is over
REPLY_TO_TASK_STATUS: dict[str, TaskStatus] = {DONE: REPLIED, FAILED: FAILED, PROGRESS: RUNNING,
                                               QUESTION: INPUT_REQUIRED}

# -- a task's timeline (get_task's `events`): the statuses it passed, and what happened on the way
ANSWER, FLAGGED, UNFLAGGED = "answer", "flagged", "unflagged"

# -- marks a task may carry for a person's attention (docs/runner-server.md); None clears the mark
UNANSWERED = "unanswered"
TaskFlag = Literal["unanswered"]
TASK_FLAGS: tuple[TaskFlag, ...] = (UNANSWERED,)

# -- a webhook delivery (docs/webhooks.md): pending -> delivered | failed (given up: its webhook was disabled)
PENDING = "pending"
DeliveryStatusValue = Literal["pending", "delivered", "failed"]
DELIVERY_STATUSES: tuple[DeliveryStatusValue, ...] = (PENDING, DELIVERED, FAILED)

# -- the A2A client's outbox (docs/a2a-client.md): what is forwarded to an alias's remote agent (a new task, the
# sender's answer to its question, a cancel); each row goes pending -> sent | failed (given up): store/bridge.py
FORWARD_TASK, FORWARD_ANSWER, FORWARD_CANCEL = "task", "answer", "cancel"

# -- inbox items
MESSAGE, TASK, REPLY, BROADCAST, NOTICE = "message", "task", "reply", "broadcast", "notice"
MessageKind = Literal["message", "task", "reply", "broadcast", "notice"]
MESSAGE_KINDS: tuple[MessageKind, ...] = (MESSAGE, TASK, REPLY, BROADCAST, NOTICE)

# -- sessions (an agent's presence)
IDLE, WORKING, OFFLINE = "idle", "working", "offline"
SessionStatusValue = Literal["idle", "working", "offline"]
SESSION_STATUSES: tuple[SessionStatusValue, ...] = (IDLE, WORKING, OFFLINE)
ReportableSessionStatus = Literal["idle", "working"]
REPORTABLE_SESSION_STATUSES: tuple[ReportableSessionStatus, ...] = (IDLE, WORKING)  # offline is the hub's to say

# -- what keeps a session online (docs/presence.md), strongest first: a runner holds the alias's stream
# (`commhub run`, `GET /events/<alias>?holder=runner`), a channel (`GET /mcp` or `subscriptions/listen`), a plain
# SSE stream (`GET /events/<alias>`), the hub's A2A bridge for an alias bound to an external A2A agent
# (docs/a2a-client.md), or only tool calls within the presence timeout; None: offline
RUNNER, CHANNEL, STREAM, A2A_BRIDGE, POLLING = "runner", "channel", "stream", "a2a", "polling"
HeldBy = Literal["runner", "channel", "stream", "a2a", "polling"]
HELD_BY: tuple[HeldBy, ...] = (RUNNER, CHANNEL, STREAM, A2A_BRIDGE, POLLING)
StreamHolder = Literal["runner", "channel", "stream"]
STREAM_HOLDERS: tuple[StreamHolder, ...] = (RUNNER, CHANNEL, STREAM)  # the kinds of stream that hold an alias
EventsHolder = Literal["runner", "stream"]
EVENTS_HOLDERS: tuple[EventsHolder, ...] = (RUNNER, STREAM)  # what GET /events/<alias>?holder= may say

# -- priorities of a task
PriorityValue = Literal["low", "normal", "high", "urgent"]
PRIORITIES: tuple[PriorityValue, ...] = ("low", "normal", "high", "urgent")
DEFAULT_PRIORITY: PriorityValue = "normal"

# -- schedules (docs/schedules.md): a schedule's state (finished: a `once` schedule after its one time), how its
# time is given, and what becomes of a run missed while the hub was down
SCHEDULE_ACTIVE, SCHEDULE_PAUSED, SCHEDULE_FINISHED = "active", "paused", "finished"
ScheduleState = Literal["active", "paused", "finished"]
SCHEDULE_STATES: tuple[ScheduleState, ...] = (SCHEDULE_ACTIVE, SCHEDULE_PAUSED, SCHEDULE_FINISHED)
ScheduleKind = Literal["once", "every", "cron"]
SCHEDULE_KINDS: tuple[ScheduleKind, ...] = ("once", "every", "cron")
MissedPolicy = Literal["run_once", "skip"]
MISSED_POLICIES: tuple[MissedPolicy, ...] = ("run_once", "skip")

# -- who acts: an agent (an alias) or a person (a username)
AGENT, PERSON = "agent", "person"
SenderKind = Literal["agent", "person"]
SENDER_KINDS: tuple[SenderKind, ...] = (AGENT, PERSON)

# -- stream events (GET /events/<alias>, GET /events?network_id=, GET /mcp's channel notifications)
NEW_TASK, NEW_MESSAGE, NEW_REPLY = "new_task", "new_message", "new_reply"
# BROADCAST (above) is both an inbox item's kind and the event that delivers it.
HEARTBEAT = "heartbeat"
WEBHOOK_DISABLED = "webhook_disabled"  # the network's (alias ""), for people: a webhook failed too long
# The loop guard cut an agent's sends to another agent (the pair rate limit tripped): docs/loop-guard.md.
LOOP_BROKEN = "loop_broken"


@dataclass(frozen=True)
class Field:
    """One field of an event's data: its JSON type, whether it may be absent, and what it holds."""

    type: Literal["string", "integer", "boolean"]
    doc: str
    nullable: bool = False  # present, but may be null
    optional: bool = False  # only some events of this name carry it


@dataclass(frozen=True)
class EventShape:
    """An event name, what it tells, and its data's fields (the network stream adds `alias` first)."""

    name: str
    doc: str
    fields: dict[str, Field] = field(default_factory=dict)
    stored: bool = True  # stored with a durable id (replayed with Last-Event-ID) and delivered to agents
    # False: an event of the network itself (alias ""), for people (the network stream, `tail --network`, the
    # dashboard), never in an alias's stream: the agent consumers (channel, listen) never see it.
    for_agents: bool = True


def _sender() -> dict[str, Field]:
    return {"from": Field("string", "the sender's alias (or username, for a person)"),
            "from_kind": Field("string", "`agent` or `person`")}


EVENTS: dict[str, EventShape] = {
    NEW_TASK: EventShape(NEW_TASK, "A task arrived in the alias's inbox.", {
        "type": Field("string", "`new_task`"),
        "inbox_count": Field("integer", "unread inbox items, this one included"),
        "priority": Field("string", "low, normal, high or urgent"),
        **_sender(),
        "task_id": Field("string", "the task's id"),
        "message_id": Field("string", "the inbox item's id"),
        "title": Field("string", "the task's title", nullable=True)}),
    NEW_MESSAGE: EventShape(NEW_MESSAGE, "A message arrived: from an agent, a person, a cancel notice (with "
                                         "`task_id`) or an approval question (with `approval_id`).", {
        "type": Field("string", "`new_message`"),
        "message": Field("string", "the message's text"),
        **_sender(),
        "message_id": Field("string", "the inbox item's id"),
        "task_id": Field("string", "the task a notice is about", optional=True),
        "approval_id": Field("string", "the approval a question asks for", optional=True)}),
    NEW_REPLY: EventShape(NEW_REPLY, "A reply about a task or a message the alias sent (or a task it received).", {
        "type": Field("string", "`new_reply`"),
        **_sender(),
        "message_id": Field("string", "the reply's id"),
        "in_reply_to": Field("string", "the message it answers", nullable=True),
        "status": Field("string", "done, failed, progress or question; `expired` when the hub expired the task "
                                  "(not started by its start_by); `cancelled` when the A2A agent behind the alias "
                                  "cancelled it (docs/a2a-client.md); none: an answer to the recipient",
                        nullable=True),
        "task_id": Field("string", "the task it is about", nullable=True),
        "answers_approval": Field("boolean", "it settles an approval question (a runner starts no turn)",
                                  optional=True)}),
    BROADCAST: EventShape(BROADCAST, "A message to every session of the network (one event per recipient).", {
        "type": Field("string", "`broadcast`"),
        "content": Field("string", "the broadcast's text"),
        **_sender(),
        "message_id": Field("string", "this recipient's inbox item")}),
    WEBHOOK_DISABLED: EventShape(WEBHOOK_DISABLED, "A webhook failed for webhook_disable_after_seconds and was "
                                                   "disabled; an event of the network (alias empty) for its owner "
                                                   "and admins, on the network stream and the dashboard.", {
        "type": Field("string", "`webhook_disabled`"),
        "webhook_id": Field("string", "the disabled webhook's id"),
        "url": Field("string", "the URL it POSTed to"),
        "owner": Field("string", "the user id of the person who registered it"),
        "reason": Field("string", "since when it failed and its last error"),
        "last_delivery_id": Field("integer", "the delivery whose failure disabled it")}, for_agents=False),
    LOOP_BROKEN: EventShape(LOOP_BROKEN, "The loop guard refused an agent's sends to another agent: more than "
                                         "`--pair-rate-per-minute` tasks and messages in a minute, most likely "
                                         "two agents answering each other for ever. Sent once per cut to the "
                                         "recipient's alias (shown to people on the network stream and the "
                                         "dashboard's Overview); the sender's sends to it are refused (429 "
                                         "`rate_limited`) until the rate falls.", {
        "type": Field("string", "`loop_broken`"),
        **_sender(),
        "to": Field("string", "the agent whose inbox the sends were refused for"),
        "limit": Field("integer", "the limit per minute (the setting `pair_rate_per_minute`)"),
        "retry_after": Field("integer", "seconds until the pair may send again"),
        "message_id": Field("string", "the last item delivered from the sender to that agent before the cut",
                            nullable=True)}),
    HEARTBEAT: EventShape(HEARTBEAT, "Every `--heartbeat-seconds` on each stream, the first one after a random half "
                                     "to whole period from its connect (so streams that connect together do not "
                                     "beat together); it has no id and is never stored or replayed.", {
        "time": Field("string", "the server's time (ISO 8601)")}, stored=False),
}
DELIVERED_EVENTS = tuple(name for name, shape in EVENTS.items() if shape.stored and shape.for_agents)  # agents' wake
NETWORK_EVENTS = tuple(name for name, shape in EVENTS.items() if shape.stored and not shape.for_agents)  # people's
STORED_EVENTS = DELIVERED_EVENTS + NETWORK_EVENTS  # every event with a durable id (what a webhook may select)


def as_json() -> dict[str, object]:
    """The vocabulary as plain data (the dashboard's copy is made from it)."""
    return {
        "EVENT": {name.upper(): name for name in EVENTS},
        "DELIVERED_EVENTS": list(DELIVERED_EVENTS),
        "NETWORK_EVENTS": list(NETWORK_EVENTS),
        "TASK_STATUS": {s.upper(): s for s in TASK_STATUSES},
        "TASK_STATUSES": list(TASK_STATUSES),
        "OPEN_TASK_STATUSES": list(OPEN_TASK_STATUSES),
        "FINAL_TASK_STATUSES": list(FINAL_TASK_STATUSES),
        "REPLY_STATUS": {s.upper(): s for s in REPLY_STATUSES},
        "SESSION_STATUS": {s.upper(): s for s in SESSION_STATUSES},
        "HELD_BY": {s.upper(): s for s in HELD_BY},
        "TASK_FLAG": {s.upper(): s for s in TASK_FLAGS},
        "MESSAGE_KIND": {s.upper(): s for s in MESSAGE_KINDS},
        "PRIORITIES": list(PRIORITIES),
        "DEFAULT_PRIORITY": DEFAULT_PRIORITY,
    }


def js_module() -> str:
    """commhub_lib/web/static/vocabulary.js: the same words as frozen constants for the dashboard."""
    lines = ["// Generated from commhub_lib/vocabulary.py by `python -m commhub_lib.vocabulary js`; do not edit.",
             "// tests/test_vocabulary.py keeps it equal to the Python vocabulary.", ""]
    for name, value in as_json().items():
        text = json.dumps(value)
        lines.append(f"export const {name} = Object.freeze({text});" if isinstance(value, dict | list)
                     else f"export const {name} = {text};")
    return "\n".join(lines) + "\n"


EVENTS_DOC = "docs/events.md"
BEGIN_EVENTS = ("<!-- generated from commhub_lib/vocabulary.py (EVENTS) by `python -m commhub_lib.vocabulary events`: "
                "edit the vocabulary, not this part -->")
END_EVENTS = "<!-- end of the generated part -->"


def events_markdown() -> str:
    """The part of docs/events.md that lists every event and its data's fields (between BEGIN_EVENTS and
    END_EVENTS; kept equal by tests/test_vocabulary.py)."""
    lines = [BEGIN_EVENTS, "",
             "Each `data:` is a JSON object with these fields (on the network stream `alias` comes first). "
             "`commhub tail` prints each event as a line, `commhub listen` runs a command for it, the dashboard's "
             "feed shows it, and `GET /mcp` sends it as a `notifications/claude/channel` message.", ""]
    for name, shape in EVENTS.items():
        lines += [f"### `{name}`", "", shape.doc, "", "| field | type | notes |", "|---|---|---|"]
        for key, f in shape.fields.items():
            kind = f.type + (" or null" if f.nullable else "")
            notes = f.doc + (" (only on some events)" if f.optional else "")
            lines.append(f"| `{key}` | {kind} | {notes} |")
        lines.append("")
    return "\n".join([*lines, END_EVENTS])


def with_events_markdown(page: str) -> str:
    """docs/events.md's text with its generated part made current (the rest is written by hand)."""
    head, _, rest = page.partition(BEGIN_EVENTS)
    _, found, tail = rest.partition(END_EVENTS)
    if not found:
        raise ValueError(f"{EVENTS_DOC} has no {BEGIN_EVENTS!r} ... {END_EVENTS!r} part")
    return head + events_markdown() + tail


def main(argv: list[str]) -> int:
    """`python -m commhub_lib.vocabulary js` prints the dashboard's vocabulary.js; `... events` makes the generated
    part of docs/events.md current in place (run from the repository's root)."""
    if argv == ["js"]:
        print(js_module(), end="")
        return 0
    if argv == ["events"]:
        page = Path(EVENTS_DOC)
        page.write_text(with_events_markdown(page.read_text(encoding="utf-8")), encoding="utf-8")
        return 0
    print("usage: python -m commhub_lib.vocabulary js|events", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
