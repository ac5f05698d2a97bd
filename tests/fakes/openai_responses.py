"""A scripted fake of OpenAI's Responses API on loopback, for driving the real Codex CLI in tests.

Codex takes a model provider with a `base_url` (`[model_providers.fake] base_url = "http://127.0.0.1:PORT/v1"`,
`wire_api = "responses"`); pointed here, every model request of a turn lands on `POST /v1/responses`, answered
as the streaming SSE of the Responses API (response.created, output items, response.completed). The script,
per request (the request's `input` is the whole conversation so far):

- the newest user message names `task_id: <id>` (or `message_id: <id>`) and no tool output follows it: a
  function call of CommHub's `send_reply` (namespace `mcp__commhub`) with status `done` — unless the task's text
  carried a directive: `#noreply` (a text answer only), `#shell:<path>` (first an escalated shell call
  `touch <path>`, which Codex's approval policy `on-request` sends to the client for approval; then the reply,
  saying what the shell said),
  `#gate:<name>` (hold the request open until `release(name)`), `#gate-after-reply:<name>` (hold the request
  after the reply's tool output). A task's directives are those of its first prompt (reminders keep them);
- a tool output follows the newest user message: after the shell call the reply, after the reply a final text.

It runs in a thread (http.server), so the test's trio loop and the CLI under test never wait on each other.
`FAKE_OPENAI_DUMP=<file>` appends every request body as one JSON line (for a new Codex version's shapes).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.fakes.common import ScriptedFake

NAMESPACE = "mcp__commhub"
_TASK_ID = re.compile(r"task_id:\s*([A-Za-z0-9_\-]+)")
_MESSAGE_ID = re.compile(r"message_id:\s*(msg_[A-Za-z0-9_\-]+)")
_GATE = re.compile(r"#gate:([A-Za-z0-9_\-]+)")
_GATE_AFTER = re.compile(r"#gate-after-reply:([A-Za-z0-9_\-]+)")
_SHELL = re.compile(r"#shell:(\S+)")


@dataclass
class Seen:
    """One model request as the fake saw it."""

    at: float
    kind: str                 # "side", "prompt", "tool_output"
    task_id: str | None
    text: str                 # the newest user message's text, or the tool output
    context: str = ""         # every user message of the request's conversation (shows a resumed thread)
    earlier: int = 0          # how many task or message prompts came before this one in the conversation


@dataclass
class FakeResponses(ScriptedFake):
    """The fake API: `start()` binds 127.0.0.1:0; `base_url` is the provider's base_url (ends in /v1)."""

    tool_names: list[list[str]] = field(default_factory=list)       # per request: the tools it declared

    @property
    def base_url(self) -> str:
        """The provider base URL Codex is configured with."""
        return self.origin + "/v1"

    def start(self) -> FakeResponses:
        """Serve in a daemon thread."""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                body = json.loads(_decode(raw, self.headers.get("content-encoding")) or b"{}")
                if not self.path.rstrip("/").endswith("/responses"):
                    self._json({"error": {"message": f"no such path {self.path}"}}, 404)
                    return
                items = fake.answer(body)
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("cache-control", "no-cache")
                self.send_header("connection", "close")
                self.end_headers()
                try:
                    for name, data in _events(body, items):
                        self.wfile.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass
                self.close_connection = True

            def do_GET(self) -> None:  # noqa: N802
                if self.path.rstrip("/").endswith("/models"):
                    self._json({"object": "list", "data": [], "models": []})
                else:
                    self._json({"error": {"message": f"no such path {self.path}"}}, 404)

            def _json(self, obj: Any, status: int = 200) -> None:
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.serve(Handler)
        return self

    def outputs(self, task_id: str | None = None) -> list[Seen]:
        """The tool outputs seen (for one task, or all)."""
        with self.lock:
            return [s for s in self.requests if s.kind == "tool_output" and (task_id is None or s.task_id == task_id)]

    # -- the script ----------------------------------------------------------------------------------------------

    def answer(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """The output items for one request."""
        dump = os.environ.get("FAKE_OPENAI_DUMP")
        if dump:
            with open(dump, "a", encoding="utf-8") as f:
                f.write(json.dumps(body) + "\n")
        with self.lock:
            self.tool_names.append([_tool_name(t) for t in body.get("tools") or []])
        items = [i for i in body.get("input") or [] if isinstance(i, dict)]
        users = [n for n, i in enumerate(items) if i.get("type", "message") == "message" and i.get("role") == "user"
                 and (_TASK_ID.search(_text(i)) or _MESSAGE_ID.search(_text(i)))]
        if not users:
            self._seen("side", None, "")
            return [_message("ok")]
        last = users[-1]
        text = _text(items[last])
        task_id = _find(_TASK_ID, text)
        message_id = _find(_MESSAGE_ID, text)
        after = items[last + 1:]
        outputs = [i for i in after if i.get("type") in ("function_call_output", "custom_tool_call_output")]
        if outputs:
            return self._after_tool(after, outputs[-1], task_id)
        self._seen("prompt", task_id, text, "\n".join(_text(items[n]) for n in users), len(users) - 1)
        directive = self._directive(task_id, text)
        gate = _find(_GATE, directive)
        if gate:
            self._hold(gate)
        if "#noreply" in directive:
            return [_message(f"I looked at {task_id} and have nothing to send yet.")]
        shell = _find(_SHELL, directive)
        if shell and task_id:
            # Escalated, so Codex's approval policy (on-request) asks the client before it runs.
            return [_call("exec_command", {"cmd": f"touch {shell} && echo relayed-ok", "yield_time_ms": 5000,
                                           "sandbox_permissions": "require_escalated",
                                           "justification": "The task asks for a file."})]
        if task_id:
            return [_message("Replying."),
                    _call("send_reply", {"task_id": task_id, "status": "done",
                                         "content": f"done by the fake model: {task_id}"}, NAMESPACE)]
        if message_id:
            return [_call("send_reply", {"message_id": message_id, "content": "noted by the fake model"}, NAMESPACE)]
        return [_message("Nothing to do.")]

    def _after_tool(self, after: list[dict[str, Any]], output: dict[str, Any],
                    task_id: str | None) -> list[dict[str, Any]]:
        call = next((i for i in after if i.get("type") in ("function_call", "custom_tool_call")
                     and i.get("call_id") == output.get("call_id")), {})
        name = str(call.get("name", ""))
        said = _output_text(output)
        self._seen("tool_output", task_id, f"{name}: {said}")
        if name == "exec_command" and task_id and not any(i.get("name") == "send_reply" for i in after):
            return [_call("send_reply", {"task_id": task_id, "status": "done",
                                         "content": f"shell said: {said[:300]}"}, NAMESPACE)]
        gate = _find(_GATE_AFTER, self._directive(task_id, ""))
        if gate:
            self._hold(gate)
        return [_message(f"Sent my answer ({name}).")]

    def _hold(self, name: str) -> None:
        with self.lock:
            if name in self.passed:
                return
            self.waiting.add(name)
        self.gate(name).wait(120)
        with self.lock:
            self.waiting.discard(name)
            self.passed.add(name)

    def _seen(self, kind: str, task_id: str | None, text: str, context: str = "", earlier: int = 0) -> None:
        with self.lock:
            self.requests.append(Seen(time.monotonic(), kind, task_id, text, context, earlier))

    def _directive(self, task_id: str | None, text: str) -> str:
        """The text whose directives apply: a task's first prompt (a reminder or a resumed prompt keeps them)."""
        if not task_id:
            return text
        with self.lock:
            return self.directives.setdefault(task_id, text)


def _decode(raw: bytes, encoding: str | None) -> bytes:
    if encoding == "gzip":
        import gzip

        return gzip.decompress(raw)
    return raw


def _tool_name(tool: dict[str, Any]) -> str:
    return str(tool.get("name") or tool.get("type") or "")


def _find(pattern: re.Pattern[str], text: str) -> str | None:
    found = pattern.findall(text)
    return found[-1] if found else None


def _text(item: dict[str, Any]) -> str:
    content = item.get("content")
    if isinstance(content, str):
        return content
    return "\n".join(str(c.get("text", "")) for c in content or [] if isinstance(c, dict))


def _output_text(item: dict[str, Any]) -> str:
    out = item.get("output")
    if isinstance(out, str):
        return out
    if isinstance(out, list):
        return "\n".join(str(c.get("text", "")) for c in out if isinstance(c, dict))
    return json.dumps(out)


_counter = iter(range(1, 1 << 30))


def _message(text: str) -> dict[str, Any]:
    return {"type": "message", "id": f"msg_fake{next(_counter):06d}", "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}


def _call(name: str, arguments: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
    n = next(_counter)
    call: dict[str, Any] = {"type": "function_call", "id": f"fc_fake{n:06d}", "call_id": f"call_fake{n:06d}",
                            "name": name, "arguments": json.dumps(arguments), "status": "completed"}
    if namespace:
        call["namespace"] = namespace
    return call


def _events(body: dict[str, Any], items: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    rid = f"resp_fake{next(_counter):06d}"
    base = {"id": rid, "object": "response", "created_at": int(time.time()), "model": body.get("model", "fake"),
            "status": "in_progress", "output": []}
    yield "response.created", {"type": "response.created", "response": base}
    for index, item in enumerate(items):
        yield "response.output_item.added", {"type": "response.output_item.added", "output_index": index,
                                             "item": item}
        if item["type"] == "message":
            yield "response.output_text.delta", {"type": "response.output_text.delta", "output_index": index,
                                                 "item_id": item["id"], "content_index": 0,
                                                 "delta": item["content"][0]["text"]}
        yield "response.output_item.done", {"type": "response.output_item.done", "output_index": index, "item": item}
    done = {**base, "status": "completed", "output": items,
            "usage": {"input_tokens": 10, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 5,
                      "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 15}}
    yield "response.completed", {"type": "response.completed", "response": done}
