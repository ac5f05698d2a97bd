"""Routes: GET /api/needs (what needs the person: docs/dashboard.md#needs-you) and GET
/api/networks/<network_id>/events (a network's newest events: the dashboard's feed when it opens)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from ..http.request import authenticate, hub, query_arg
from ..service import feed, needs
from .common import query_int
from .queries import NetworkScope
from .records import Ok, Record, Text

# --- query parameters and answers (for /openapi.json) ------------------------------------------------------------


class NeedsQuery(NetworkScope):
    """GET /api/needs."""


class EventsQuery(BaseModel):
    """GET /api/networks/<network_id>/events."""

    limit: int | None = Field(default=None, ge=1, description=f"at most this many (default {feed.DEFAULT_LIMIT}, "
                                                              f"capped at {feed.MAX_LIMIT})")
    after: int | None = Field(default=None, ge=0, description="only events after this id, oldest first")


class Question(Record):
    """A question that waits for a person: on a task a person sent (kind task), or an agent's approval request."""

    kind: str = Field(description="task (answer it as a reply on the task) or approval (answer yes to allow)")
    network_id: str
    network_name: str
    task_id: Text
    title: Text
    content: Text = Field(description="the start of the task's text")
    agent: str = Field(description="the agent that asks")
    asked: str = Field(description="who is asked: the task's sender, or the agent's owner")
    asked_kind: str
    for_you: bool = Field(description="you are the one asked")
    can_answer: bool = Field(description="you may answer it (yours, or as owner/admin of the network)")
    question: Text
    question_id: Text = Field(description="the question's message id")
    approval_id: Text
    asked_at: Text


class StuckTask(Record):
    """An open task that is stuck (why: `reason`, since when: `since`)."""

    reason: str = Field(description="unanswered (flagged by a runner), offline (delivered to an offline agent "
                                    "longer than stuck_delivered_seconds) or silent (running with nothing new longer "
                                    "than stuck_running_seconds)")
    network_id: str
    network_name: str
    task_id: str
    title: Text
    content: str
    priority: str
    status: str
    from_name: str
    to_name: str
    since: Text
    detail: str


class LoopBroken(Record):
    """The loop guard's cuts of one pair (its newest cut and how many) in the last days."""

    network_id: str
    network_name: str
    from_: str = Field(alias="from", description="the agent whose sends were refused")
    to: str
    limit: int | None
    retry_after: int | None
    cuts: int
    event_id: int = Field(description="the newest cut's event id")
    at: str
    first_at: str


class Needs(Ok):
    """What needs the person across their networks (or one)."""

    username: str
    network_ids: list[str]
    count: int
    questions: list[Question]
    stuck: list[StuckTask]
    loops: list[LoopBroken]
    stuck_delivered_seconds: float
    stuck_running_seconds: float


class FeedEvent(Record):
    """One stored event of the network stream."""

    id: int
    alias: str
    event: str
    data: dict[str, Any]
    created_at: str
    content: Text = Field(description="a new_reply's text (null for other events)")


class NetworkEvents(Ok):
    """A network's events, oldest first, and where its stream resumes (Last-Event-ID: last_event_id)."""

    network_id: str
    last_event_id: int
    events: list[FeedEvent]


# --- handlers ----------------------------------------------------------------------------------------------------


async def get_needs() -> dict[str, Any]:
    """Questions waiting for the person, stuck tasks and broken loops of their networks."""
    return needs.needs(hub(), authenticate(), query_arg("network_id") or None)


async def network_events(network_id: str) -> dict[str, Any]:
    """A network's newest events, oldest first, each reply with its text."""
    return feed.network_events(hub(), authenticate(), network_id, query_int("limit", None, 1),
                               query_int("after", None, 0))


__all__ = ["EventsQuery", "Needs", "NeedsQuery", "NetworkEvents", "get_needs", "network_events"]
