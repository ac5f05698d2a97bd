"""POST /a2a/<network_id>/<alias>: A2A's JSON-RPC binding (docs/a2a.md), hand-written as /mcp is (no SDK here).

The A2A 1.0 methods (SendMessage, SendStreamingMessage, GetTask, CancelTask, SubscribeToTask) and their 0.3 names
(message/send, message/stream, tasks/get, tasks/cancel, tasks/resubscribe) share one implementation; the name a
request uses picks the wire shapes of its answer (a2a/mapping.py). A caller that is not let in (no token, a bad
one, a user token, another network's) gets the hub's HTTP 401/403, and an alias that is not served 404, before
any JSON-RPC is read; everything after that is a JSON-RPC answer (HTTP 200), errors with A2A's codes.

The streams follow one task: a watcher of the task (broker.TaskWatch) wakes them at each timeline entry, they read
the task and send the updates it has not sent yet, and end at a final state (or when the server stops, or the
token's right to the network ends); a comment line keeps an idle stream open through proxies.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import trio
from pydantic import BaseModel, ConfigDict, ValidationError

from ..errors import BadRequest, CommhubError, Conflict, Forbidden, NotFound
from ..http.answers import json_bytes
from ..http.asgi import RouteContext
from ..http.auth import authenticate_token
from ..http.request import PostRequest, parse_json, public_url
from ..service import a2a
from ..service.a2a import Served, TaskView
from ..service.hub import Hub, Principal
from ..stream import check_stream_caps, slot_released
from . import mapping
from .mapping import V03, V1

log = logging.getLogger("commhub.a2a")

PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS, INTERNAL_ERROR = -32700, -32600, -32601, -32602, -32603
TASK_NOT_FOUND, TASK_NOT_CANCELABLE, PUSH_NOT_SUPPORTED, UNSUPPORTED_OPERATION = -32001, -32002, -32003, -32004
CONTENT_TYPE_NOT_SUPPORTED, VERSION_NOT_SUPPORTED = -32005, -32009
SUPPORTED_VERSIONS = ("0.3", "1.0")

# method name -> (operation, wire version)
METHODS: dict[str, tuple[str, str]] = {
    "SendMessage": ("send", V1), "SendStreamingMessage": ("stream", V1), "GetTask": ("get", V1),
    "CancelTask": ("cancel", V1), "SubscribeToTask": ("subscribe", V1),
    "message/send": ("send", V03), "message/stream": ("stream", V03), "tasks/get": ("get", V03),
    "tasks/cancel": ("cancel", V03), "tasks/resubscribe": ("subscribe", V03),
}
# Methods of the protocol this agent does not serve, and the error each gets (the card says so: no push, no
# extended card).
NOT_SERVED: dict[str, int] = {
    **{m: PUSH_NOT_SUPPORTED for m in (
        "CreateTaskPushNotificationConfig", "GetTaskPushNotificationConfig", "ListTaskPushNotificationConfigs",
        "DeleteTaskPushNotificationConfig", "tasks/pushNotificationConfig/set", "tasks/pushNotificationConfig/get",
        "tasks/pushNotificationConfig/list", "tasks/pushNotificationConfig/delete")},
    **{m: UNSUPPORTED_OPERATION for m in ("ListTasks", "tasks/list", "GetExtendedAgentCard",
                                          "agent/getAuthenticatedExtendedCard")},
}


class RpcError(Exception):
    """A JSON-RPC error answer: code and message."""

    def __init__(self, code: int, message: str, reason: str = ""):
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason


# ------------------------------------------------------------------------------------------- params
class _Params(BaseModel):
    model_config = ConfigDict(extra="ignore")


class MessageIn(_Params):
    """An A2A Message as sent by a client (1.0 or 0.3: parts with or without `kind`)."""

    messageId: str
    contextId: str | None = None
    taskId: str | None = None
    role: str | None = None
    parts: list[dict[str, Any]]


class SendConfiguration(_Params):
    """SendMessageConfiguration (1.0: returnImmediately) / MessageSendConfiguration (0.3: blocking)."""

    returnImmediately: bool | None = None
    blocking: bool | None = None
    historyLength: int | None = None


class SendParams(_Params):
    """SendMessageRequest (1.0) / MessageSendParams (0.3)."""

    message: MessageIn
    configuration: SendConfiguration | None = None


class TaskParams(_Params):
    """GetTaskRequest, CancelTaskRequest, SubscribeToTaskRequest (1.0) / TaskQueryParams, TaskIdParams (0.3)."""

    id: str
    historyLength: int | None = None


def text_of(message: MessageIn) -> str:
    """A message's content: its text parts (a data part as its JSON text); other parts cannot be carried."""
    texts = []
    for part in message.parts:
        kind = part.get("kind")
        if isinstance(part.get("text"), str) and kind in (None, "text"):
            texts.append(part["text"])
        elif "data" in part and kind in (None, "data"):
            texts.append(json.dumps(part["data"], ensure_ascii=False))
        else:
            raise RpcError(CONTENT_TYPE_NOT_SUPPORTED, "this agent takes text (and data) parts only: a CommHub task "
                           "carries text; send a file as a URL inside a text part", "CONTENT_TYPE_NOT_SUPPORTED")
    return "\n\n".join(texts)


def _params(model: type[_Params], raw: Any) -> Any:
    try:
        return model.model_validate(raw if raw is not None else {})
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "params"
        raise RpcError(INVALID_PARAMS, f"invalid params: {where}: {first['msg']}") from exc


# ------------------------------------------------------------------------------------------- answers
def _error(msg_id: Any, code: int, message: str, reason: str = "") -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message}
    if reason:
        err["data"] = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason,
                        "domain": "a2a-protocol.org"}]
    return {"jsonrpc": "2.0", "id": msg_id, "error": err}


def _result(msg_id: Any, result: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": msg_id, "result": result}


def _sse(payload: dict[str, Any]) -> bytes:
    # ASCII JSON: no raw line break of any kind (U+2028 included) can end up inside the data line.
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode("ascii") + b"\n\n"


def _domain_error(exc: CommhubError, operation: str) -> RpcError | None:
    """The A2A error for a domain error of a method, or None (then it is answered as the hub's HTTP error)."""
    if isinstance(exc, NotFound) and exc.code == "task_not_found":
        return RpcError(TASK_NOT_FOUND, exc.message, "TASK_NOT_FOUND")
    if isinstance(exc, Conflict) and exc.code == "task_final":
        if operation == "cancel":
            return RpcError(TASK_NOT_CANCELABLE, exc.message, "TASK_NOT_CANCELABLE")
        return RpcError(UNSUPPORTED_OPERATION, exc.message, "UNSUPPORTED_OPERATION")
    if isinstance(exc, Forbidden) and exc.code == "not_allowed":
        return RpcError(UNSUPPORTED_OPERATION, exc.message, "UNSUPPORTED_OPERATION")
    if isinstance(exc, BadRequest):
        return RpcError(INVALID_PARAMS, exc.message)
    return None


async def _first(*waits: Callable[[], Awaitable[Any]]) -> None:
    """Return when the first of these waits returns."""
    async with trio.open_nursery() as nursery:
        async def wait(one: Callable[[], Awaitable[Any]]) -> None:
            await one()
            nursery.cancel_scope.cancel()
        for one in waits:
            nursery.start_soon(wait, one)


# ------------------------------------------------------------------------------------------- the endpoint
class Call:
    """One JSON-RPC request to one served alias, by one caller."""

    def __init__(self, ctx: RouteContext, req: PostRequest, principal: Principal, agent: Served, caller: str,
                 msg_id: Any, version: str):
        self.ctx = ctx
        self.hub: Hub = ctx.hub
        self.req = req
        self.principal = principal
        self.agent = agent
        self.caller = caller
        self.msg_id = msg_id
        self.version = version

    def view(self, task_id: str) -> TaskView:
        """The caller's task (404 otherwise), its files' urls made absolute for this caller."""
        return self.absolute(a2a.task_view(self.hub, self.agent, self.caller, task_id))

    def absolute(self, view: TaskView) -> TaskView:
        """The view with the hub's URL as this request reached it (file parts carry absolute URLs)."""
        if not view.files:
            return view
        return dataclasses.replace(view, base=public_url(self.hub.settings, self.req.scheme,
                                                         self.req.headers.get("host")))

    async def write(self, work: Callable[[], Any]) -> Any:
        """Run a synchronous service call that writes, waiting for another process's write lock if it meets it."""
        async def attempt() -> Any:
            return work()
        return await self.ctx.lock_watch.run(attempt)

    async def send(self, params: SendParams) -> str:
        """Store the message (a new task, or an answer on one); the task's id."""
        text = text_of(params.message)
        m = params.message
        return await self.write(lambda: a2a.send_message(self.hub, self.agent, self.caller, text, m.messageId,
                                                         m.contextId, m.taskId))

    async def blocking_send(self, params: SendParams) -> dict[str, Any]:
        """message/send: the task once it is final or asks a question (or a2a_blocking_seconds passed)."""
        config = params.configuration or SendConfiguration()
        immediate = config.returnImmediately if self.version == V1 else config.blocking is False
        task_id = await self.send(params)
        if not immediate:
            # The watcher exists before the task is first read, so no change between the read and the wait is lost.
            with a2a.watch(self.hub, task_id) as watcher, trio.move_on_after(self.hub.settings.a2a_blocking_seconds):
                while not watcher.closed:
                    state = mapping.current_status(self.view(task_id)).state
                    if state in mapping.FINAL_STATES or state == mapping.INPUT_REQUIRED:
                        break
                    await watcher.wait()
        snapshot = mapping.task(self.view(task_id), self.version, config.historyLength)
        return {"task": snapshot} if self.version == V1 else snapshot

    async def follow(self, task_id: str, view: TaskView, sent: int) -> AsyncIterator[bytes]:
        """The stream of one task: its snapshot first, then each update past the first `sent`, until it is final."""
        h = self.hub
        guard = h.guard()
        slot = h.broker.take_slot(self.principal.token_id, self.req.client_ip, "a2a")
        with slot_released(slot), h.hold_grant(self.principal, self.agent.network_id) as grant, \
                a2a.watch(h, task_id) as watcher:
            yield _sse(_result(self.msg_id, mapping.task_item(view, self.version)))
            if mapping.current_status(view).final:
                return
            woke = True  # read once more now that the watcher exists: a change since `view` was read is not lost
            while True:
                if watcher.closed or not guard.allowed(grant):
                    return
                if not woke:
                    yield b": keepalive\n\n"
                else:
                    view = self.view(task_id)
                    done = mapping.updates(view)
                    for update in done[sent:]:
                        yield _sse(_result(self.msg_id, mapping.stream_item(view, update, self.version)))
                    sent = len(done)
                    if mapping.current_status(view, done).final:
                        return
                woke = False
                with trio.move_on_after(h.settings.heartbeat_seconds):
                    await _first(watcher.wait, grant.ended.wait)  # a revoked token ends the stream at once
                    woke = True

    async def stream(self, params: SendParams) -> AsyncIterator[bytes]:
        """message/stream: store the message, then follow its task."""
        check_stream_caps(self.hub.broker, self.hub.settings, self.principal.token_id, self.req.client_ip)
        task_id = await self.send(params)
        view = self.view(task_id)
        return self.follow(task_id, view, len(mapping.updates(view)))

    def subscribe(self, params: TaskParams) -> AsyncIterator[bytes]:
        """tasks/resubscribe: follow a task that is not over yet."""
        check_stream_caps(self.hub.broker, self.hub.settings, self.principal.token_id, self.req.client_ip)
        view = self.view(params.id)
        if mapping.current_status(view).final:
            raise RpcError(UNSUPPORTED_OPERATION, f"task {params.id} is already over: read it with "
                           + ("GetTask" if self.version == V1 else "tasks/get"), "UNSUPPORTED_OPERATION")
        return self.follow(params.id, view, len(mapping.updates(view)))

    async def run(self, operation: str, raw: Any) -> dict[str, Any] | AsyncIterator[bytes]:
        """Serve one method: its JSON-RPC result, or the event stream that answers it."""
        if operation == "send":
            return _result(self.msg_id, await self.blocking_send(_params(SendParams, raw)))
        if operation == "stream":
            return await self.stream(_params(SendParams, raw))
        params = _params(TaskParams, raw)
        if operation == "get":
            return _result(self.msg_id, mapping.task(self.view(params.id), self.version, params.historyLength))
        if operation == "cancel":
            view = self.absolute(await self.write(
                lambda: a2a.cancel(self.hub, self.principal, self.agent, self.caller, params.id)))
            return _result(self.msg_id, mapping.task(view, self.version))
        return self.subscribe(params)


def _version_refusal(req: PostRequest) -> str | None:
    """The A2A-Version the request asks for, when this agent does not speak it (none: 0.3, which it does)."""
    asked = (req.headers.get("a2a-version") or req.arg("A2A-Version") or "").strip()
    if not asked:
        return None
    major_minor = ".".join(asked.split(".")[:2])
    return None if major_minor in SUPPORTED_VERSIONS else asked


async def answer_post(ctx: RouteContext, req: PostRequest, network_id: str,
                      alias: str) -> tuple[int, bytes] | AsyncIterator[bytes]:
    """Answer one POST to an A2A agent (see the module's docstring)."""
    principal = authenticate_token(ctx.hub, ctx.token_limiter, req.bearer())
    caller = a2a.caller_of(principal, network_id)
    agent = a2a.served(ctx.hub, network_id, alias)
    req.alias = caller
    try:
        payload = parse_json(req.body)
    except BadRequest as exc:
        return 200, json_bytes(_error(None, PARSE_ERROR, exc.message))
    if not isinstance(payload, dict) or payload.get("jsonrpc") != "2.0" or not isinstance(payload.get("method"), str):
        msg_id = payload.get("id") if isinstance(payload, dict) else None
        return 200, json_bytes(_error(msg_id if isinstance(msg_id, str | int) else None, INVALID_REQUEST,
                                      "a JSON-RPC 2.0 request object is expected (one per POST)"))
    msg_id, method = payload.get("id"), payload["method"]
    try:
        if (asked := _version_refusal(req)) is not None:
            raise RpcError(VERSION_NOT_SUPPORTED, f"A2A-Version {asked} is not supported: this agent speaks "
                           f"{' and '.join(SUPPORTED_VERSIONS)}", "VERSION_NOT_SUPPORTED")
        if method in NOT_SERVED:
            raise RpcError(NOT_SERVED[method], f"{method} is not served by this agent (see its Agent Card)",
                           "PUSH_NOTIFICATION_NOT_SUPPORTED" if NOT_SERVED[method] == PUSH_NOT_SUPPORTED
                           else "UNSUPPORTED_OPERATION")
        if method not in METHODS:
            raise RpcError(METHOD_NOT_FOUND, f"method not found: {method}")
        operation, version = METHODS[method]
        call = Call(ctx, req, principal, agent, caller, msg_id, version)
        try:
            answer = await call.run(operation, payload.get("params"))
        except CommhubError as exc:
            mapped = _domain_error(exc, operation)
            if mapped is None:
                raise
            raise mapped from exc
        req.calls.append((method, "ok"))
    except RpcError as exc:
        req.calls.append((method, str(exc.code)))
        return 200, json_bytes(_error(msg_id, exc.code, exc.message, exc.reason))
    if isinstance(answer, dict):
        return 200, json_bytes(answer)
    return answer
