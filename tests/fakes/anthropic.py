"""A scripted fake of Anthropic's Messages API on loopback, for driving the real Claude Code CLI in tests.

Claude Code reads `ANTHROPIC_BASE_URL`; pointed here, every model request of a turn lands on this server, which
answers in the streaming SSE shape of `POST /v1/messages` (message_start, content blocks, message_delta,
message_stop). The script, per request:

- a request without CommHub's `send_reply` among its tools (title generation, quota probes): a short text;
- the last user message is a prompt naming `task_id: <id>` (or `message_id: <id>`): a `tool_use` of
  `mcp__commhub__send_reply` with status `done` — unless the task's text carried a directive:
  `#noreply` (answer with text only, every time), `#bash` (first a `Bash` tool_use writing a file named in the
  directive `#bash:<path>`, then the reply), `#gate:<name>` (hold the request open until `release(name)`);
- the last user message is a tool result: after `Bash`, the `send_reply`; after `send_reply`, a final text and
  `end_turn` (`#gate-after-reply:<name>` holds this request open until released).

It runs in a thread (http.server), so a test's trio loop and the CLI under test never wait on each other.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.fakes.common import ScriptedFake

SEND_REPLY = "mcp__commhub__send_reply"
_TASK_ID = re.compile(r"task_id:\s*([A-Za-z0-9_\-]+)")
_MESSAGE_ID = re.compile(r"message_id:\s*(msg_[A-Za-z0-9_\-]+)")
_GATE = re.compile(r"#gate:([A-Za-z0-9_\-]+)")
_GATE_AFTER = re.compile(r"#gate-after-reply:([A-Za-z0-9_\-]+)")
_BASH = re.compile(r"#bash:(\S+)")


@dataclass
class Seen:
    """One model request as the fake saw it."""

    at: float
    kind: str                 # "side", "prompt", "tool_result"
    task_id: str | None
    text: str                 # the last user message's text (prompts) or the tool result's text
    earlier: int = 0          # earlier prompts (user messages naming a task_id) in the conversation: its session


@dataclass
class FakeAnthropic(ScriptedFake):
    """The fake API: `start()` binds 127.0.0.1:0; `url` is what ANTHROPIC_BASE_URL gets."""


    @property
    def url(self) -> str:
        """The base URL (no /v1)."""
        return self.origin

    def start(self) -> FakeAnthropic:
        """Serve in a daemon thread."""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
                if self.path.startswith("/v1/messages/count_tokens"):
                    self._json({"input_tokens": 12})
                elif self.path.startswith("/v1/messages"):
                    blocks, stop = fake.answer(body)
                    if body.get("stream"):
                        self._sse(body, blocks, stop)
                    else:
                        self._json(_message(body, blocks, stop))
                else:
                    self._json({"type": "error", "error": {"type": "not_found_error", "message": self.path}}, 404)

            def do_GET(self) -> None:  # noqa: N802
                self._json({"type": "error", "error": {"type": "not_found_error", "message": self.path}}, 404)

            def do_HEAD(self) -> None:  # noqa: N802
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def _json(self, obj: Any, status: int = 200) -> None:
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _sse(self, body: dict[str, Any], blocks: list[dict[str, Any]], stop: str) -> None:
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("cache-control", "no-cache")
                self.send_header("connection", "close")
                self.end_headers()
                try:
                    for name, data in _events(body, blocks, stop):
                        self.wfile.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass
                self.close_connection = True

        self.serve(Handler)
        return self

    # -- the script ----------------------------------------------------------------------------------------------

    def answer(self, body: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
        """The content blocks and stop reason for one request."""
        dump = os.environ.get("FAKE_ANTHROPIC_DUMP")
        if dump:  # debugging a new CLI version: every request body, one JSON per line
            with open(dump, "a", encoding="utf-8") as f:
                f.write(json.dumps(body) + "\n")
        tools = {t.get("name") for t in body.get("tools") or []}
        messages = body.get("messages") or []
        if SEND_REPLY not in tools or not messages:
            self._seen("side", None, "")
            return [{"type": "text", "text": "ok"}], "end_turn"
        # Claude Code 2.1 appends a system-role message after the user's: the script reads the last user message.
        users = [m for m in messages if m.get("role") == "user"]
        if not users:
            self._seen("side", None, "")
            return [{"type": "text", "text": "ok"}], "end_turn"
        last = users[-1]
        results = [b for b in _blocks(last) if b.get("type") == "tool_result"]
        if results:
            return self._after_tool(messages, results[-1])
        text = _text(last)
        task_id = _find(_TASK_ID, text)
        message_id = _find(_MESSAGE_ID, text)
        with self.lock:
            if task_id and task_id not in self.directives:
                self.directives[task_id] = text
            directive = self.directives.get(task_id or "", text)
        self._seen("prompt", task_id, text,
                   sum(1 for m in users[:-1] if _TASK_ID.search(_text(m))))
        gate = _find(_GATE, directive)
        if gate:
            self._hold(gate)
        if "#noreply" in directive:
            return [{"type": "text", "text": f"I looked at {task_id} and have nothing to send yet."}], "end_turn"
        bash = _find(_BASH, directive)
        if bash and task_id:
            return [_tool_use("Bash", {"command": f"echo relayed-ok > {bash}", "description": "write a file"})], \
                "tool_use"
        if task_id:
            return [{"type": "text", "text": "Replying."},
                    _tool_use(SEND_REPLY, {"task_id": task_id, "status": "done",
                                           "content": f"done by the fake model: {task_id}"})], "tool_use"
        if message_id:
            return [_tool_use(SEND_REPLY, {"message_id": message_id, "content": "noted by the fake model"})], \
                "tool_use"
        return [{"type": "text", "text": "Nothing to do."}], "end_turn"

    def _after_tool(self, messages: list[dict[str, Any]], result: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
        use = _tool_use_for(messages, str(result.get("tool_use_id")))
        name = str(use.get("name")) if use else ""
        inp = use.get("input", {}) if use else {}
        task_id = inp.get("task_id") if isinstance(inp, dict) else None
        if name == "Bash":
            task_id = _task_of(messages)
        self._seen("tool_result", task_id, f"{name}: {_text({'content': [result]})}")
        with self.lock:
            directive = self.directives.get(task_id or "", "")
        if name == "Bash" and task_id:
            outcome = _text({"content": [result]})
            return [_tool_use(SEND_REPLY, {"task_id": task_id, "status": "done",
                                           "content": f"bash said: {outcome[:200]}"})], "tool_use"
        gate = _find(_GATE_AFTER, directive)
        if gate:
            self._hold(gate)
        return [{"type": "text", "text": f"Sent my answer ({name})."}], "end_turn"

    def _hold(self, name: str) -> None:
        with self.lock:
            if name in self.passed:
                return
            self.waiting.add(name)
        gate = self.gate(name)
        gate.wait(120)
        with self.lock:
            self.waiting.discard(name)
            self.passed.add(name)

    def _seen(self, kind: str, task_id: str | None, text: str, earlier: int = 0) -> None:
        with self.lock:
            self.requests.append(Seen(time.monotonic(), kind, task_id, text, earlier))


def _find(pattern: re.Pattern[str], text: str) -> str | None:
    found = pattern.findall(text)
    return found[-1] if found else None


def _blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [b for b in content or [] if isinstance(b, dict)]


def _text(message: dict[str, Any]) -> str:
    parts: list[str] = []
    for block in _blocks(message):
        if block.get("type") == "text":
            parts.append(str(block.get("text", "")))
        elif block.get("type") == "tool_result":
            inner = block.get("content")
            parts.append(inner if isinstance(inner, str) else _text({"content": inner or []}))
    return "\n".join(parts)


def _tool_use_for(messages: list[dict[str, Any]], use_id: str) -> dict[str, Any] | None:
    for message in reversed(messages):
        for block in _blocks(message):
            if block.get("type") == "tool_use" and block.get("id") == use_id:
                return block
    return None


def _task_of(messages: list[dict[str, Any]]) -> str | None:
    for message in reversed(messages):
        if message.get("role") == "user":
            found = _find(_TASK_ID, _text(message))
            if found:
                return found
    return None


_counter = iter(range(1, 1 << 30))


def _tool_use(name: str, inp: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": f"toolu_fake{next(_counter):06d}", "name": name, "input": inp}


def _message(body: dict[str, Any], blocks: list[dict[str, Any]], stop: str) -> dict[str, Any]:
    return {"id": f"msg_fake{next(_counter):06d}", "type": "message", "role": "assistant",
            "model": body.get("model", "claude-fake"), "content": blocks, "stop_reason": stop,
            "stop_sequence": None, "usage": {"input_tokens": 10, "output_tokens": 5}}


def _events(body: dict[str, Any], blocks: list[dict[str, Any]], stop: str) -> Iterator[tuple[str, dict[str, Any]]]:
    start = _message(body, [], stop)
    start["stop_reason"] = None
    start["usage"] = {"input_tokens": 10, "output_tokens": 1}
    yield "message_start", {"type": "message_start", "message": start}
    for index, block in enumerate(blocks):
        if block["type"] == "text":
            yield "content_block_start", {"type": "content_block_start", "index": index,
                                          "content_block": {"type": "text", "text": ""}}
            yield "content_block_delta", {"type": "content_block_delta", "index": index,
                                          "delta": {"type": "text_delta", "text": block["text"]}}
        else:
            yield "content_block_start", {"type": "content_block_start", "index": index,
                                          "content_block": {"type": "tool_use", "id": block["id"],
                                                            "name": block["name"], "input": {}}}
            yield "content_block_delta", {"type": "content_block_delta", "index": index,
                                          "delta": {"type": "input_json_delta",
                                                    "partial_json": json.dumps(block["input"])}}
        yield "content_block_stop", {"type": "content_block_stop", "index": index}
    yield "message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                            "usage": {"output_tokens": 5}}
    yield "message_stop", {"type": "message_stop"}
