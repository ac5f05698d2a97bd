"""What the scripted fakes of the vendors' model APIs share: the loopback server, the gates that hold a request,
and the record of what the fake saw. Each fake (anthropic.py, openai_responses.py, gemini_api.py) adds its wire
format and its script."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class ScriptedFake:
    """The server and the record every fake keeps; `requests` holds each fake's own `Seen` records."""

    requests: list[Any] = field(default_factory=list)
    directives: dict[str, str] = field(default_factory=dict)        # task id -> its first prompt's text
    gates: dict[str, threading.Event] = field(default_factory=dict)
    waiting: set[str] = field(default_factory=set)                   # gates a request is held at right now
    passed: set[str] = field(default_factory=set)                    # gates already passed (each holds once)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def origin(self) -> str:
        """http://127.0.0.1:<port> of the started server."""
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def serve(self, handler: type[BaseHTTPRequestHandler]) -> None:
        """Bind 127.0.0.1:0 and serve `handler` from a daemon thread."""
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Stop serving and let every held request go."""
        for gate in list(self.gates.values()):
            gate.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def gate(self, name: str) -> threading.Event:
        """The gate called `name` (created closed)."""
        with self.lock:
            return self.gates.setdefault(name, threading.Event())

    def release(self, name: str) -> None:
        """Open a gate: the request held at it (and any later one) goes on."""
        self.gate(name).set()

    def prompts(self, task_id: str | None = None) -> list[Any]:
        """The prompts seen (for one task, or all)."""
        with self.lock:
            return [s for s in self.requests if s.kind == "prompt" and (task_id is None or s.task_id == task_id)]
