"""A small external A2A agent for tests, built with the official `a2a-sdk`'s server side (Starlette JSON-RPC routes +
Agent Card), served by uvicorn on 127.0.0.1:0 in a thread of its own (the SDK is asyncio; the tests run on trio).

What it does depends on the text it is sent:
- "echo …": completes at once with an artifact "echo: …";
- "ask …": asks "which colour?" (input-required); the follow-up's text completes it as "colour: <text>";
- "fail …": fails with the status message "cannot do that";
- "big …": completes with a 50,000-character artifact;
- "give up …": cancels the task itself ("I gave up on it");
- "file …": completes with text, an inline file hello.txt and a file by URL;
- "slow …": works (a status message "started"), then waits until `release()`; completes as "slow done";
  cancelled meanwhile, it ends as canceled.
It refuses (401) any request without `Authorization: Bearer <token>`, and records what it received.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from a2a.helpers import proto_helpers
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import a2a_pb2 as pb
from starlette.applications import Starlette
from starlette.responses import JSONResponse


@dataclass
class Received:
    """What the agent was sent: each message's text, task id (follow-ups) and metadata, and the cancels."""

    texts: list[str] = field(default_factory=list)
    task_ids: list[str] = field(default_factory=list)
    metadata: list[dict[str, Any]] = field(default_factory=list)
    cancels: list[str] = field(default_factory=list)
    waiting: int = 0  # slow tasks waiting for release()
    seen: threading.Condition = field(default_factory=threading.Condition)


class ScriptedExecutor(AgentExecutor):
    """The agent's behaviour (see the module's docstring)."""

    def __init__(self, received: Received):
        self.received = received
        self.gate: asyncio.Event | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def _note(self, context: RequestContext) -> None:
        with self.received.seen:
            self.received.texts.append(context.get_user_input())
            self.received.task_ids.append(context.task_id or "")
            meta = context.message.metadata if context.message is not None else None
            self.received.metadata.append(dict(meta) if meta else {})
            self.received.seen.notify_all()

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        """Answer, ask, fail or work slowly, by the text."""
        self._note(context)
        text = context.get_user_input()
        first = context.current_task is None
        if first:
            assert context.message is not None
            await event_queue.enqueue_event(proto_helpers.new_task_from_user_message(context.message))
        updater = TaskUpdater(event_queue, context.task_id or "", context.context_id or "")
        if not first:  # a follow-up: the answer to our question
            await updater.add_artifact([pb.Part(text=f"colour: {text}")], name="result")
            await updater.complete()
            return
        if "file" in text:
            await updater.add_artifact([pb.Part(text="here it is"),
                                        pb.Part(raw=b"hello from the agent\n", filename="hello.txt",
                                                media_type="text/plain"),
                                        pb.Part(url="https://files.example/big.bin", filename="big.bin")],
                                       name="result")
            await updater.complete()
        elif "give up" in text:
            await updater.cancel(updater.new_agent_message([pb.Part(text="I gave up on it")]))
        elif "big" in text:
            await updater.add_artifact([pb.Part(text="x" * 50_000)], name="result")
            await updater.complete()
        elif "fail" in text:
            await updater.failed(updater.new_agent_message([pb.Part(text="cannot do that")]))
        elif "ask" in text:
            await updater.requires_input(updater.new_agent_message([pb.Part(text="which colour?")]))
        elif "slow" in text:
            await updater.start_work(updater.new_agent_message([pb.Part(text="started")]))
            self.loop = asyncio.get_running_loop()
            self.gate = asyncio.Event()
            with self.received.seen:
                self.received.waiting += 1
                self.received.seen.notify_all()
            await self.gate.wait()
            await updater.add_artifact([pb.Part(text="slow done")], name="result")
            await updater.complete()
        else:
            await updater.add_artifact([pb.Part(text=f"echo: {text}")], name="result")
            await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        """Cancel the task (recorded)."""
        with self.received.seen:
            self.received.cancels.append(context.task_id or "")
            self.received.seen.notify_all()
        await TaskUpdater(event_queue, context.task_id or "", context.context_id or "").cancel()


class RemoteAgent:
    """The agent's server: `card_url`, `rpc_url`, `received`, `release()`, `stop()`."""

    def __init__(self, token: str, version: str = "1.0", streaming: bool = False, port: int = 0):
        self.token = token
        self.received = Received()
        self.executor = ScriptedExecutor(self.received)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))  # a port given: the same agent again, after a restart (tasks forgotten)
        self.port = port = self.sock.getsockname()[1]
        self.base = f"http://127.0.0.1:{port}"
        self.rpc_url = self.base + "/rpc"
        self.card_url = self.base + "/.well-known/agent-card.json"
        card = pb.AgentCard(
            name="test-agent", description="a test agent", version="1",
            supported_interfaces=[pb.AgentInterface(url=self.rpc_url, protocol_binding="JSONRPC",
                                                    protocol_version=version)],
            capabilities=pb.AgentCapabilities(streaming=streaming), default_input_modes=["text"],
            default_output_modes=["text"],
            skills=[pb.AgentSkill(id="echo", name="echo", description="answers", tags=["test"])])
        handler = DefaultRequestHandler(agent_executor=self.executor, task_store=InMemoryTaskStore(), agent_card=card)
        app = Starlette(routes=[*create_agent_card_routes(card),
                                *create_jsonrpc_routes(handler, "/rpc", enable_v0_3_compat=True)])
        self.server = uvicorn.Server(uvicorn.Config(self._guard(app), log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def _guard(self, app: Any) -> Any:
        """The bearer check in front of the SDK's app."""
        async def guarded(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                headers = dict(scope["headers"])
                if headers.get(b"authorization") != f"Bearer {self.token}".encode():
                    await JSONResponse({"error": "unauthorized"}, status_code=401)(scope, receive, send)
                    return
            await app(scope, receive, send)
        return guarded

    def start(self) -> RemoteAgent:
        """Serve (returns once the server accepts connections)."""
        self.thread.start()
        pause = threading.Event()  # never set: a bounded pause between looks
        for _ in range(1000):  # up to ~10 s
            if self.server.started or not self.thread.is_alive():
                break
            pause.wait(0.01)
        assert self.server.started, "the A2A test agent did not start"
        return self

    def wait_for(self, condition: Any, timeout: float = 20.0) -> None:
        """Block (call from a thread) until condition(received) holds."""
        with self.received.seen:
            assert self.received.seen.wait_for(lambda: condition(self.received), timeout), self.received

    def release(self) -> None:
        """Let the slow task finish (once it waits: received.waiting)."""
        assert self.executor.loop is not None and self.executor.gate is not None
        self.executor.loop.call_soon_threadsafe(self.executor.gate.set)

    def stop(self) -> None:
        """Stop serving (and free the port, started or not)."""
        self.server.should_exit = True
        if self.thread.is_alive():
            self.thread.join(10)
        self.sock.close()
