"""Hub events as MCP `notifications/claude/channel` messages: the `GET /mcp` wire format.

Claude Code (channels, v2.1.80+) shows each such notification to the model as a `<channel>` event in the
running session, with `meta` as attributes: so `content` is one readable paragraph (who sent what, the ids,
which tool to call next) and the meta keys are plain identifiers with string values. Other MCP clients
ignore a notification method they do not know.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from .. import events
from ..vocabulary import (
    BROADCAST,
    CANCELLED,
    DEFAULT_PRIORITY,
    DONE,
    EXPIRED,
    FAILED,
    FINAL_REPLY_STATUSES,
    LOOP_BROKEN,
    NEW_MESSAGE,
    NEW_REPLY,
    NEW_TASK,
    PROGRESS,
    QUESTION,
)
from .versions import PRIMING_EVENT, has

METHOD = "notifications/claude/channel"
SUBSCRIPTION_ID_KEY = "io.modelcontextprotocol/subscriptionId"
PREVIEW_CHARS = 500
META_KEYS = ("from", "from_kind", "task_id", "message_id", "priority", "status")


def _quote(text: Any) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= PREVIEW_CHARS else text[:PREVIEW_CHARS] + "…"


def _describe_task(sender: str, data: dict[str, Any]) -> str:
    task_id, message_id = data.get("task_id"), data.get("message_id")
    title = f' "{_quote(data["title"])}"' if data.get("title") else ""
    return (f"New task{title} from {sender}, priority {data.get('priority') or DEFAULT_PRIORITY} (task_id {task_id}, "
            f"message_id {message_id}). Call get_inbox to read it (fetching it marks it running), do the work, "
            f"then answer with send_reply {{task_id: \"{task_id}\", status: \"{DONE}\" | \"{FAILED}\" | "
            f"\"{PROGRESS}\" | \"{QUESTION}\", content}}, or report_completion when it is done.")


def _describe_message(sender: str, data: dict[str, Any]) -> str:
    task_id, message_id = data.get("task_id"), data.get("message_id")
    about = f" about task {task_id}" if task_id else ""
    return (f"Message from {sender}{about} (message_id {message_id}): \"{_quote(data.get('message'))}\". "
            f"If it needs an answer, call send_reply {{message_id: \"{message_id}\", content}}; then "
            "ack_inbox it.")


def _describe_broadcast(sender: str, data: dict[str, Any]) -> str:
    return (f"Broadcast from {sender} to the network (message_id {data.get('message_id')}): "
            f"\"{_quote(data.get('content'))}\". Act on it if it concerns you; ack_inbox it when read.")


def _describe_reply(sender: str, data: dict[str, Any]) -> str:
    status, task_id, message_id = data.get("status"), data.get("task_id"), data.get("message_id")
    ids = f"(task_id {task_id}, message_id {message_id})"
    if not task_id:
        return (f"Reply from {sender} to your message {data.get('in_reply_to')} (message_id {message_id}). Read it "
                "with get_inbox, then ack_inbox it.")
    if status == QUESTION:
        return (f"{sender} asks you a question about task {task_id} {ids}. Read it with get_inbox and answer with "
                f"send_reply {{task_id: \"{task_id}\", content}}.")
    if status in FINAL_REPLY_STATUSES:
        return (f"{sender} finished task {task_id}: {status} {ids}. Read the result with get_inbox, then "
                "ack_inbox it.")
    if status == EXPIRED:
        return (f"Task {task_id} you sent to {sender} expired {ids}: it was not started by its start_by and will "
                "never be started. Send it again if it is still wanted; ack_inbox this notice.")
    if status == CANCELLED:  # the A2A agent behind the alias cancelled it (docs/a2a-client.md)
        return (f"{sender} cancelled task {task_id} {ids}: it will not be done. Read why with get_inbox, then "
                "ack_inbox it.")
    if status == PROGRESS:
        return f"Progress from {sender} on task {task_id} {ids}. Read it with get_inbox if you need the details."
    return (f"{sender} answered on task {task_id} {ids}. Read the answer with get_inbox and carry on with the "
            f"task; report with send_reply {{task_id: \"{task_id}\", status: \"{PROGRESS}\" | \"{DONE}\" | ...}}.")


def _describe_loop_broken(sender: str, data: dict[str, Any]) -> str:
    # Told to the recipient: the one message that breaks a loop is the one it does not send.
    return (f"The hub's loop guard stopped {sender}'s tasks and messages to you: more than {data.get('limit')} a "
            f"minute, most likely the two of you answering each other (last delivered message_id "
            f"{data.get('message_id')}). Do not answer {sender}'s last message just to acknowledge it; a person "
            f"has been told. {sender} may send again in {data.get('retry_after')} s.")


# The channel text of each event agents are woken for (vocabulary.DELIVERED_EVENTS; tests/test_vocabulary.py
# fails while one has none).
DESCRIBE: dict[str, Callable[[str, dict[str, Any]], str]] = {
    NEW_TASK: _describe_task, NEW_MESSAGE: _describe_message, NEW_REPLY: _describe_reply,
    BROADCAST: _describe_broadcast, LOOP_BROKEN: _describe_loop_broken}


def describe(name: str, data: dict[str, Any]) -> str:
    """One paragraph for the model: who sent what, the ids, and the tool to call next."""
    describer = DESCRIBE.get(name)
    if describer is not None:
        return describer(data.get("from") or "someone", data)
    return f"CommHub event {name} for you: {_quote(json.dumps(data, ensure_ascii=False))}. Check get_inbox."


def notification(event_id: int, name: str, data_json: str) -> dict[str, Any]:
    """The JSON-RPC notification for one hub event."""
    try:
        data = json.loads(data_json)
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    meta = {"event": name, "event_id": str(event_id)}
    for key in META_KEYS:
        value = data.get(key)
        if value not in (None, ""):
            meta[key] = str(value)
    return {"jsonrpc": "2.0", "method": METHOD, "params": {"content": describe(name, data), "meta": meta}}


class McpWire:
    """The `GET /mcp` stream: JSON-RPC notifications as SSE `message` events, SSE comments as heartbeats."""

    def __init__(self, version: str):
        self.priming = has(version, PRIMING_EVENT)

    def opening(self, position: int) -> bytes:
        """retry hint and position. From MCP 2025-11-25 on, the "priming" event: the position as an id with an
        empty data field, which the SDKs take as their resume point without dispatching a message. A client on
        an older version parses every event's data as JSON (Gemini CLI's then drops the server), so it gets the
        position as a bare `id:` field: no data, so by the SSE rules no event is dispatched."""
        if self.priming:
            return f"retry: {events.RETRY_MS}\nid: {position}\ndata:\n\n".encode()
        return f"retry: {events.RETRY_MS}\nid: {position}\n\n".encode()

    def waiting(self) -> bytes:
        """The first bytes while the session speaks for no alias yet: the retry hint and a comment."""
        return f"retry: {events.RETRY_MS}\n: waiting for report_status to name this session's alias\n\n".encode()

    def event(self, event_id: int, alias: str, name: str, data: str, at: str | None = None) -> bytes:
        """One notification, with the durable event id (`at`, a replay's time, is not part of it)."""
        return _message_frame(event_id, notification(event_id, name, data))

    def heartbeat(self) -> bytes:
        """An SSE comment: keeps proxies and the connection alive, and no MCP client sees it as a message."""
        return b": ping\n\n"

    def closing(self, reason: str, last: int) -> bytes:
        """A comment naming the id to resume from."""
        return events.comment(f"stream closed: {reason}; reconnect with Last-Event-ID: {last}")


def _message_frame(event_id: int | None, message: dict[str, Any]) -> bytes:
    """One JSON-RPC message as an SSE `message` event (with its id when it has one)."""
    text = events.safe_data(json.dumps(message, ensure_ascii=False, separators=(",", ":")))
    return (f"id: {event_id}\n" if event_id is not None else "").encode() + \
        f"event: message\ndata: {text}\n\n".encode()


class ListenWire:
    """A `subscriptions/listen` stream (MCP 2026-07-28): the response to one POST, as SSE.

    The first message is `notifications/subscriptions/acknowledged` with the honoured filter (sent at once,
    even while the token has claimed no alias yet, as the client waits for it); every message carries the
    listen request's id as `_meta["io.modelcontextprotocol/subscriptionId"]`. The events and their ids,
    replay after Last-Event-ID and heartbeats are those of the `GET /mcp` stream. A stream that ends is simply
    closed, without the listen's result (the spec's graceful close), so that a client listens again."""

    def __init__(self, subscription_id: str | int, honored: dict[str, Any]):
        self.meta = {SUBSCRIPTION_ID_KEY: subscription_id}
        self.honored = honored
        self.acknowledged = False

    def acknowledgement(self, position: int | None = None) -> bytes:
        """The acknowledgement (with the stream's position as its id, when known)."""
        self.acknowledged = True
        return _message_frame(position, {"jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged",
                                         "params": {"notifications": self.honored, "_meta": self.meta}})

    def waiting(self) -> bytes:
        """While the token has claimed no alias: the acknowledgement, the position comes later."""
        return self.acknowledgement()

    def opening(self, position: int) -> bytes:
        """The acknowledgement with the position; once acknowledged, the position alone (an id, no event)."""
        if not self.acknowledged:
            return self.acknowledgement(position)
        return f"id: {position}\n\n".encode()

    def event(self, event_id: int, alias: str, name: str, data: str, at: str | None = None) -> bytes:
        """One channel notification, stamped with the subscription id (`at`, a replay's time, is not part of it)."""
        message = notification(event_id, name, data)
        message["params"]["_meta"] = self.meta
        return _message_frame(event_id, message)

    def heartbeat(self) -> bytes:
        """An SSE comment."""
        return b": ping\n\n"

    def closing(self, reason: str, last: int) -> bytes:
        """A comment naming the id to listen again from (Last-Event-ID)."""
        return events.comment(f"stream closed: {reason}; listen again with Last-Event-ID: {last}")

    def result(self, request_id: str | int) -> bytes:
        """The listen's result: the subscription ended on purpose (sent when there is nothing to carry)."""
        return _message_frame(None, {"jsonrpc": "2.0", "id": request_id,
                                     "result": {"_meta": self.meta, "resultType": "complete"}})
