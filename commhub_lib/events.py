"""SSE event names and their wire encoding."""

from __future__ import annotations

import json

from .broker import Event
from .ids import iso_now

NEW_TASK = "new_task"
NEW_MESSAGE = "new_message"
NEW_REPLY = "new_reply"
BROADCAST = "broadcast"
HEARTBEAT = "heartbeat"
RETRY_MS = 3000


def encode(event: Event) -> bytes:
    """One SSE frame; every event but heartbeat carries its durable id."""
    head = f"id: {event.id}\n" if event.id else ""
    return f"{head}event: {event.name}\ndata: {event.data}\n\n".encode()


def encode_row(row: dict) -> bytes:
    """A replayed event (a row of the events table) as an SSE frame."""
    return f"id: {row['id']}\nevent: {row['event']}\ndata: {row['data']}\n\n".encode()


def heartbeat() -> Event:
    """A heartbeat event (no id: it is not stored and never replayed)."""
    return Event(0, "", "", HEARTBEAT, json.dumps({"time": iso_now()}))


def preamble() -> bytes:
    """Sent on connect: the reconnect delay hint and a comment that flushes proxies."""
    return f"retry: {RETRY_MS}\n: connected\n\n".encode()


def comment(text: str) -> bytes:
    """An SSE comment line (ignored by clients; used to say why a stream ends)."""
    return f": {text}\n\n".encode()
