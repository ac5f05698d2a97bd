"""The channel notification for every event type: one readable paragraph naming the next tool, and meta with
plain identifier keys and string values (what Claude Code turns into <channel> attributes)."""

from __future__ import annotations

import json
import re

import pytest

from commhub_lib.mcp.channel import METHOD, McpWire, notification

EVENTS = {
    "new_task": ({"type": "new_task", "from": "boss", "from_kind": "agent", "task_id": "t-1", "message_id": "msg_1",
                  "priority": "urgent", "title": "fix CI", "inbox_count": 1}, ("get_inbox", "send_reply", "t-1")),
    "new_message": ({"type": "new_message", "from": "ann", "from_kind": "person", "message_id": "msg_2",
                     "message": "hello\u2028there"}, ("send_reply", "msg_2", "hello")),
    "new_reply": ({"type": "new_reply", "from": "w", "message_id": "msg_3", "in_reply_to": "msg_1",
                   "status": "question", "task_id": "t-1"}, ("question", "send_reply", "t-1")),
    "broadcast": ({"type": "broadcast", "from": "boss", "message_id": "msg_4", "content": "deploy at 5"},
                  ("deploy at 5", "ack_inbox")),
}


@pytest.mark.parametrize("name", sorted(EVENTS))
def test_each_event_becomes_a_readable_notification(name: str) -> None:
    data, must_mention = EVENTS[name]
    message = notification(42, name, json.dumps(data))
    assert message["jsonrpc"] == "2.0" and message["method"] == METHOD and "id" not in message
    params = message["params"]
    assert set(params) == {"content", "meta"}
    for text in must_mention:
        assert text in params["content"], (text, params["content"])
    assert params["meta"]["event"] == name and params["meta"]["event_id"] == "42"
    for key, value in params["meta"].items():
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) and isinstance(value, str) and value, (key, value)
    assert "title" not in params["meta"] and "inbox_count" not in params["meta"]  # only the listed keys


def test_wire_frame_carries_the_event_id_and_escapes_line_breaks() -> None:
    data = json.dumps(EVENTS["new_message"][0], ensure_ascii=False)
    frame = McpWire("2025-11-25").event(7, "worker", "new_message", data)
    text = frame.decode()
    assert text.startswith("id: 7\nevent: message\ndata: {") and text.endswith("\n\n")
    assert "\u2028" not in text and text.splitlines()[3:] == [""]
    assert McpWire("2025-11-25").opening(5) == b"retry: 3000\nid: 5\ndata:\n\n"  # the priming event
    assert McpWire("2025-06-18").opening(5) == b"retry: 3000\nid: 5\n\n"  # before it: the position, no event
    assert McpWire("2025-11-25").heartbeat().startswith(b":")
