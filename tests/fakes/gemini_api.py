"""A scripted fake of the Gemini API on loopback, for driving the real Gemini CLI in tests.

Gemini CLI takes `GOOGLE_GEMINI_BASE_URL` (with `GEMINI_API_KEY` and `security.auth.selectedType:
"gemini-api-key"`); pointed here, its model requests land on `POST /v1beta/models/<model>:<method>`:
`streamGenerateContent?alt=sse` (the turn), `generateContent` (side requests such as the router's), and
`countTokens`. The fake records the function declarations every request carries (`declared`), so a test can see
which tools reached the model. The script, per request:

- a request that asks for JSON (`generationConfig.responseJsonSchema` or `responseSchema`, e.g. the model
  router): a JSON value built from that schema;
- the newest user text names `task_id: <id>` (or `message_id: <id>`) and no function response follows it: a
  function call of CommHub's `send_reply` (its declared name, whatever prefix Gemini gives MCP tools) with status
  `done` — unless the text carries a directive: `#noreply` (a text answer only), `#shell:<path>` (first
  `run_shell_command` `touch <path>`, which Gemini asks the client to allow; then the reply with what the shell
  said), `#gate:<name>` (hold the request open until `release(name)`), `#gate-after-reply:<name>` (hold the
  request after the reply's function response). A task's directives are those of its first prompt (reminders
  keep them);
- a function response follows: after the shell, the reply; after the reply, a final text.

It runs in a thread (http.server), so the test's trio loop and the CLI under test never wait on each other.
`FAKE_GEMINI_DUMP=<file>` appends every request (path and body) as one JSON line.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.fakes.common import ScriptedFake

SHELL_TOOL = "run_shell_command"
_TASK_ID = re.compile(r"task_id:\s*([A-Za-z0-9_\-]+)")
_MESSAGE_ID = re.compile(r"message_id:\s*(msg_[A-Za-z0-9_\-]+)")
_GATE = re.compile(r"#gate:([A-Za-z0-9_\-]+)")
_GATE_AFTER = re.compile(r"#gate-after-reply:([A-Za-z0-9_\-]+)")
_SHELL = re.compile(r"#shell:(\S+)")


@dataclass
class Seen:
    """One model request as the fake saw it."""

    at: float
    kind: str                 # "side", "json", "prompt", "tool_output"
    task_id: str | None
    text: str                 # the newest user text, or the function response
    context: str = ""         # every user text of the request's conversation (shows a resumed session)
    earlier: int = 0          # how many task or message prompts came before this one in the conversation


@dataclass
class FakeGemini(ScriptedFake):
    """The fake API: `start()` binds 127.0.0.1:0; `url` is what GOOGLE_GEMINI_BASE_URL gets."""

    declared: list[list[str]] = field(default_factory=list)   # per request with tools: the function names
    prompt_tools: list[str] = field(default_factory=list)     # the names declared with the newest task prompt

    @property
    def url(self) -> str:
        """The base URL."""
        return self.origin

    def start(self) -> FakeGemini:
        """Serve in a daemon thread."""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
                dump = os.environ.get("FAKE_GEMINI_DUMP")
                if dump:
                    with open(dump, "a", encoding="utf-8") as f:
                        f.write(json.dumps({"path": self.path, "body": body}) + "\n")
                if ":countTokens" in self.path:
                    self._json({"totalTokens": 12})
                    return
                if ":streamGenerateContent" not in self.path and ":generateContent" not in self.path:
                    self._json({"error": {"code": 404, "message": self.path, "status": "NOT_FOUND"}}, 404)
                    return
                answer = _response(fake.answer(body))
                if ":streamGenerateContent" in self.path:
                    self.send_response(200)
                    self.send_header("content-type", "text/event-stream")
                    self.send_header("cache-control", "no-cache")
                    self.send_header("connection", "close")
                    self.end_headers()
                    try:
                        self.wfile.write(f"data: {json.dumps(answer)}\r\n\r\n".encode())
                        self.wfile.flush()
                    except (BrokenPipeError, ConnectionResetError):
                        pass
                    self.close_connection = True
                else:
                    self._json(answer)

            def do_GET(self) -> None:  # noqa: N802
                self._json({"models": []})

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
        """The function responses seen (for one task, or all)."""
        with self.lock:
            return [s for s in self.requests if s.kind == "tool_output" and (task_id is None or s.task_id == task_id)]

    def declared_for_prompts(self) -> list[str]:
        """The function names declared by the newest request that carried a task prompt."""
        with self.lock:
            return list(self.prompt_tools)

    # -- the script ----------------------------------------------------------------------------------------------

    def answer(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """The parts of the model's answer to one request."""
        config = body.get("generationConfig") or {}
        schema = config.get("responseJsonSchema") or config.get("responseSchema")
        if schema:
            self._seen("json", None, "")
            return [{"text": json.dumps(_example(schema))}]
        names = [str(d.get("name")) for t in body.get("tools") or [] for d in t.get("functionDeclarations") or []]
        if names:
            with self.lock:
                self.declared.append(names)
        contents = [c for c in body.get("contents") or [] if isinstance(c, dict)]
        asks = [n for n, c in enumerate(contents) if c.get("role") == "user"
                and (_TASK_ID.search(_text(c)) or _MESSAGE_ID.search(_text(c)))]
        if not asks:
            self._seen("side", None, "")
            return [{"text": "ok"}]
        last = asks[-1]
        text = _text(contents[last])
        task_id = _find(_TASK_ID, text)
        message_id = _find(_MESSAGE_ID, text)
        reply = next((n for n in names if n == "send_reply" or n.endswith("_send_reply")
                      or n.endswith("__send_reply")), "send_reply")
        after = contents[last + 1:]
        responses = [p["functionResponse"] for c in after for p in c.get("parts") or [] if "functionResponse" in p]
        if responses:
            done = responses[-1]
            name = str(done.get("name", ""))
            said = json.dumps(done.get("response"))
            self._seen("tool_output", task_id, f"{name}: {said}")
            if name == SHELL_TOOL and task_id:
                return [_call(reply, {"task_id": task_id, "status": "done", "content": f"shell said: {said[:300]}"})]
            gate = _find(_GATE_AFTER, self._directive(task_id, ""))
            if gate:
                self._hold(gate)
            return [{"text": f"Sent my answer ({name})."}]
        with self.lock:
            self.prompt_tools = names
        self._seen("prompt", task_id, text, "\n".join(_text(contents[n]) for n in asks), len(asks) - 1)
        directive = self._directive(task_id, text)
        gate = _find(_GATE, directive)
        if gate:
            self._hold(gate)
        if "#noreply" in directive:
            return [{"text": f"I looked at {task_id} and have nothing to send yet."}]
        shell = _find(_SHELL, directive)
        if shell and task_id:
            return [_call(SHELL_TOOL, {"command": f"touch {shell} && echo relayed-ok",
                                       "description": "Make the file the task asks for."})]
        if task_id:
            return [{"text": "Replying."},
                    _call(reply, {"task_id": task_id, "status": "done",
                                  "content": f"done by the fake model: {task_id}"})]
        if message_id:
            return [_call(reply, {"message_id": message_id, "content": "noted by the fake model"})]
        return [{"text": "Nothing to do."}]

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


def _find(pattern: re.Pattern[str], text: str) -> str | None:
    found = pattern.findall(text)
    return found[-1] if found else None


def _text(content: dict[str, Any]) -> str:
    return "\n".join(str(p.get("text", "")) for p in content.get("parts") or [] if isinstance(p, dict))


def _call(name: str, args: dict[str, Any]) -> dict[str, Any]:
    return {"functionCall": {"name": name, "args": args}}


def _example(schema: Any) -> Any:
    """A value that fits a (simple) JSON schema: the router's and other side requests' answers."""
    if not isinstance(schema, dict):
        return None
    kind = schema.get("type")
    kind = kind.lower() if isinstance(kind, str) else kind
    if schema.get("enum"):
        return schema["enum"][0]
    if kind == "object" or "properties" in schema:
        return {k: _example(v) for k, v in (schema.get("properties") or {}).items()}
    if kind == "array":
        return [_example(schema.get("items"))] if schema.get("minItems") else []
    if kind in ("number", "integer"):
        return 0
    if kind == "boolean":
        return False
    return "fake"


def _response(parts: list[dict[str, Any]]) -> dict[str, Any]:
    return {"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 15},
            "modelVersion": "gemini-fake"}
