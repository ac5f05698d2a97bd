"""SSE events' wire encoding (the `/events` streams; `GET /mcp` wraps them in mcp/channel.py).

Every `data:` value is JSON written by the hub. JSON may carry U+0085, U+2028, U+2029 and a few control
characters raw inside strings; the SSE spec splits lines only on CR and LF, but readers built on Python's
`str.splitlines` (httpx's `iter_lines`) split on those too and would see a forged line. They are escaped as
`\\uXXXX`, which every JSON parser reads back as the same character.
"""

from __future__ import annotations

import json
import time

from .broker import Event
from .ids import iso_now
from .vocabulary import HEARTBEAT  # the event names and their data's shapes live in vocabulary.py

RETRY_MS = 3000
AT_PREFIX = ": at "  # the comment line that stamps a replayed event with its own time (docs/events.md)

# Every character `str.splitlines` splits on besides CR and LF (those never occur raw in JSON text).
_LINE_BREAKS = "\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
_ESCAPES = {ord(c): f"\\u{ord(c):04x}" for c in _LINE_BREAKS}


def safe_data(text: str) -> str:
    """JSON text made safe for one `data:` line: no character that any common reader takes as a line break."""
    for c in _LINE_BREAKS:
        if c in text:
            return text.translate(_ESCAPES)
    return text


def frame(event_id: int, name: str, data: str, at: str | None = None) -> bytes:
    """One SSE frame with an id, an event name and JSON data; with `at` (a replayed event's stored time,
    'YYYY-MM-DD HH:MM:SS' UTC) it starts with the comment line `: at YYYY-MM-DDTHH:MM:SSZ`, which every SSE
    client ignores and `commhub tail --from-start` prints instead of the time it read the event."""
    stamp = f"{AT_PREFIX}{at.replace(' ', 'T')}Z\n" if at else ""
    return f"{stamp}id: {event_id}\nevent: {name}\ndata: {safe_data(data)}\n\n".encode()


def encode(event: Event) -> bytes:
    """One SSE frame; every event but heartbeat carries its durable id."""
    if not event.id:
        return f"event: {event.name}\ndata: {safe_data(event.data)}\n\n".encode()
    return frame(event.id, event.name, event.data)


def with_alias(data: str, alias: str) -> str:
    """An event's JSON object with `"alias"` first (the network stream names the alias each event was for)."""
    head = '{"alias":' + json.dumps(alias, ensure_ascii=False)
    return head + "}" if data.strip() == "{}" else head + "," + data.lstrip()[1:]


def heartbeat() -> Event:
    """A heartbeat event (no id: it is not stored and never replayed)."""
    return Event(0, "", "", HEARTBEAT, json.dumps({"time": iso_now()}))


_beat: list = [-1, b""]  # [second, frame]: one heartbeat frame per second, shared by every stream


def heartbeat_frame() -> bytes:
    """The encoded heartbeat for the current second (5,000 streams beat ~330 times a second: encoding it once
    per second spares the loop, and the collector, an object and a json.dumps per beat)."""
    second = int(time.time())
    if _beat[0] != second:
        _beat[:] = [second, encode(heartbeat())]
    return _beat[1]


def preamble(position: int) -> bytes:
    """Sent on connect: the reconnect delay hint and the stream's position as an `id:` without data, so the
    client's last event id is set (no event is dispatched) even if nothing arrives before it drops."""
    return f"retry: {RETRY_MS}\nid: {position}\n\n".encode()


def comment(text: str) -> bytes:
    """An SSE comment line (ignored by clients; used to say why a stream ends)."""
    return f": {text}\n\n".encode()
