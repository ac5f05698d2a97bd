"""A small A2A client: JSON-RPC over httpx (trio-friendly), A2A v1.0 with the v0.3 method names for older agents.

Only what the bridge needs: read an Agent Card, send a message (a new task, or a follow-up in a remote task), get a
task, cancel it. Answers are reduced to one shape (RemoteTask) whatever the version spoke. Every request resolves
the target through the webhooks' guard (service/webhooks.resolve_target), so a name that points at a private or
metadata address is refused at connect time too, and runs under one hard deadline.

(The official `a2a-sdk` is asyncio- and protobuf-based; the hub keeps its dependencies small and runs on trio, so
it speaks the JSON wire format itself. Tests check it against a server built with the SDK.)
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import trio

from ..service.webhooks import resolve_target

V1, V03 = "1.0", "0.3"
USER_AGENT = "CommHub-A2A/1"
_ids = itertools.count(1)

# Remote task states by their v1.0 names (TASK_STATE_WORKING); v0.3 spells them in lower case ("input-required").
# The bridge keeps the remote's own words: they are the A2A agent's, not CommHub's task statuses.
SUBMITTED, WORKING, INPUT_REQUIRED, AUTH_REQUIRED = ("TASK_STATE_SUBMITTED", "TASK_STATE_WORKING",
                                                     "TASK_STATE_INPUT_REQUIRED", "TASK_STATE_AUTH_REQUIRED")
COMPLETED, FAILED, CANCELED, REJECTED, UNKNOWN = ("TASK_STATE_COMPLETED", "TASK_STATE_FAILED", "TASK_STATE_CANCELED",
                                                  "TASK_STATE_REJECTED", "TASK_STATE_UNSPECIFIED")
KNOWN_STATES = frozenset({SUBMITTED, WORKING, INPUT_REQUIRED, AUTH_REQUIRED, COMPLETED, FAILED, CANCELED, REJECTED})
FINAL_STATES = frozenset({COMPLETED, FAILED, CANCELED, REJECTED})
V03_METHODS = {"SendMessage": "message/send", "GetTask": "tasks/get", "CancelTask": "tasks/cancel",
               "SubscribeToTask": "tasks/resubscribe"}


class A2AError(Exception):
    """A call failed. `permanent`: the agent answered with an error (sending it again would not help); otherwise
    the agent could not be reached or answered nonsense, and a retry may succeed."""

    def __init__(self, message: str, *, permanent: bool = False, code: int | None = None):
        super().__init__(message)
        self.permanent = permanent
        self.code = code


@dataclass(frozen=True)
class Endpoint:
    """Where and how to talk to a remote agent: its JSON-RPC URL and the protocol version it speaks."""

    rpc_url: str
    version: str = V1
    streaming: bool = False
    name: str = ""


@dataclass
class RemoteTask:
    """A remote task (or a direct message answer, `task_id` None) reduced to what the bridge maps."""

    task_id: str | None
    context_id: str | None
    state: str  # a v1.0 state name; COMPLETED for a direct message answer
    text: str = ""  # the status message's text
    artifacts: list[str] = field(default_factory=list)  # each artifact's text
    files: list[RemoteFile] = field(default_factory=list)  # the inline files of the artifacts and status message

    @property
    def seen(self) -> str:
        """What identifies this state for "has it changed?": the state and its message."""
        return json.dumps([self.state, self.text, len(self.artifacts)], ensure_ascii=False)


def is_card_url(url: str) -> bool:
    """An Agent Card URL (the bridge reads it for the JSON-RPC URL and version) rather than the endpoint itself."""
    path = httpx.URL(url).path
    return "/.well-known/" in path or path.endswith(".json")


@dataclass(frozen=True)
class RemoteFile:
    """A file an agent sent inline (v1.0 `raw`, v0.3 `file.bytes`): its name, media type and bytes as base64."""

    filename: str
    media_type: str | None
    data_base64: str


def _file_fields(part: dict[str, Any]) -> dict[str, Any]:
    """A file part's fields in one shape: v1.0 keeps them on the part, v0.3 under `file`."""
    nested = part.get("file")
    return nested if isinstance(nested, dict) else part


def part_file(part: dict[str, Any]) -> RemoteFile | None:
    """The inline file a part carries, if any (a file given by URL is left as a link: fetching arbitrary URLs for an
    agent is not the hub's to do)."""
    fields = _file_fields(part)
    data = fields.get("raw") if "raw" in fields else fields.get("bytes")
    if not isinstance(data, str) or not data:
        return None
    name = str(fields.get("filename") or fields.get("name") or "file")
    media = fields.get("mediaType") or fields.get("mimeType")
    return RemoteFile(name, str(media) if media else None, data)


def part_text(part: dict[str, Any]) -> str:
    """One part as text: text as is, data as JSON, a file as a line naming it (v1.0 and v0.3 shapes)."""
    if isinstance(part.get("text"), str):
        return part["text"]
    if "data" in part:
        return json.dumps(part["data"], ensure_ascii=False)
    fields = _file_fields(part)
    name = fields.get("filename") or fields.get("name") or "file"
    if part_file(part) is not None:
        return f"[file {name}: attached]"
    return f"[file {name}: {fields.get('url') or fields.get('uri') or '(no content)'}]"


def parts_text(parts: Any) -> str:
    """The parts of a message or artifact as one text."""
    if not isinstance(parts, list):
        return ""
    return "\n".join(t for t in (part_text(p) for p in parts if isinstance(p, dict)) if t)


def parts_files(parts: Any) -> list[RemoteFile]:
    """The inline files among a message's or artifact's parts."""
    if not isinstance(parts, list):
        return []
    return [f for f in (part_file(p) for p in parts if isinstance(p, dict)) if f is not None]


def _state(raw: Any) -> str:
    """A state in either spelling as its v1.0 name ("input-required" -> TASK_STATE_INPUT_REQUIRED)."""
    name = str(raw or "").upper().replace("-", "_").replace("CANCELLED", "CANCELED")
    name = name if name.startswith("TASK_STATE_") else "TASK_STATE_" + name
    return name if name in KNOWN_STATES else UNKNOWN


def read_task(obj: dict[str, Any]) -> RemoteTask:
    """A Task object (either version) as a RemoteTask."""
    raw_status = obj.get("status")
    status: dict[str, Any] = raw_status if isinstance(raw_status, dict) else {}
    raw_message = status.get("message")
    message: dict[str, Any] = raw_message if isinstance(raw_message, dict) else {}
    found = [a for a in obj.get("artifacts") or [] if isinstance(a, dict)]
    artifacts = [parts_text(a.get("parts")) for a in found]
    files = parts_files(message.get("parts")) + [f for a in found for f in parts_files(a.get("parts"))]
    return RemoteTask(str(obj.get("id") or "") or None, obj.get("contextId"), _state(status.get("state")),
                      parts_text(message.get("parts")), [a for a in artifacts if a], files)


def read_send_result(result: Any, version: str) -> RemoteTask:
    """SendMessage's result: a Task to follow, or a Message (the agent answered at once)."""
    if not isinstance(result, dict):
        raise A2AError(f"the agent's answer is not an object: {str(result)[:200]}")
    if version == V1:
        if isinstance(result.get("task"), dict):
            return read_task(result["task"])
        if isinstance(result.get("message"), dict):
            message = result["message"]
            return RemoteTask(None, message.get("contextId"), COMPLETED, parts_text(message.get("parts")),
                              files=parts_files(message.get("parts")))
        raise A2AError("the agent's answer holds neither a task nor a message")
    if result.get("kind") == "message" or ("parts" in result and "status" not in result):
        return RemoteTask(None, result.get("contextId"), COMPLETED, parts_text(result.get("parts")),
                          files=parts_files(result.get("parts")))
    return read_task(result)


def message(version: str, message_id: str, text: str, task_id: str | None = None, context_id: str | None = None,
            metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """A user message in the version's shape."""
    if version == V1:
        msg: dict[str, Any] = {"messageId": message_id, "role": "ROLE_USER", "parts": [{"text": text}]}
    else:
        msg = {"kind": "message", "messageId": message_id, "role": "user", "parts": [{"kind": "text", "text": text}]}
    if task_id:
        msg["taskId"] = task_id
    if context_id:
        msg["contextId"] = context_id
    if metadata:
        msg["metadata"] = metadata
    return msg


def read_card(card: Any, card_url: str) -> Endpoint:
    """The JSON-RPC endpoint an Agent Card offers: v1.0's supportedInterfaces (a JSONRPC one, 1.x preferred, else
    0.3), or a v0.3 card's url (its preferredTransport JSONRPC or an additionalInterfaces entry)."""
    if not isinstance(card, dict):
        raise A2AError(f"{card_url} is not an Agent Card (not a JSON object)", permanent=True)
    streaming = bool((card.get("capabilities") or {}).get("streaming"))
    name = str(card.get("name") or "")
    interfaces = [i for i in card.get("supportedInterfaces") or [] if isinstance(i, dict)
                  and str(i.get("protocolBinding", "")).upper() == "JSONRPC" and i.get("url")]
    for wanted in (V1.split(".")[0], V03):
        for interface in interfaces:
            if str(interface.get("protocolVersion", V1)).startswith(wanted):
                version = V03 if wanted == V03 else V1
                return Endpoint(str(httpx.URL(card_url).join(interface["url"])), version, streaming, name)
    if card.get("url"):
        version = V03 if str(card.get("protocolVersion", V03)).startswith("0.") else V1
        transport = str(card.get("preferredTransport") or "JSONRPC").upper()
        if transport == "JSONRPC":
            return Endpoint(str(httpx.URL(card_url).join(card["url"])), version, streaming, name)
        for extra in card.get("additionalInterfaces") or []:
            if isinstance(extra, dict) and str(extra.get("transport", "")).upper() == "JSONRPC" and extra.get("url"):
                return Endpoint(str(httpx.URL(card_url).join(extra["url"])), version, streaming, name)
    raise A2AError(f"the Agent Card at {card_url} offers no JSON-RPC interface (CommHub speaks A2A over JSON-RPC)",
                   permanent=True)


class A2AClient:
    """Calls to remote A2A agents through one httpx client (connections kept), each under a hard deadline."""

    def __init__(self, http: httpx.AsyncClient, targets: str, timeout: float):
        self.http = http
        self.targets = targets
        self.timeout = timeout

    async def _target(self, url: str, token: str | None, version: str) -> tuple[httpx.URL, dict[str, str],
                                                                                 dict[str, Any]]:
        """The checked address to connect to, the headers and the TLS name for a request to `url`."""
        try:
            target, host = await resolve_target(url, self.targets, setting="a2a_client_targets")
        except (ValueError, OSError) as exc:
            raise A2AError(f"target refused: {exc}", permanent=isinstance(exc, ValueError)) from exc
        except Exception as exc:  # CommhubError from check_url: the URL itself is not allowed
            raise A2AError(f"target refused: {exc}", permanent=True) from exc
        headers = {"User-Agent": USER_AGENT, "Host": httpx.URL(url).netloc.decode("ascii")}
        if version == V1:
            headers["A2A-Version"] = V1
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return target, headers, {"sni_hostname": host} if target.scheme == "https" else {}

    async def _request(self, method: str, url: str, token: str | None, body: Any = None,
                       version: str = V1) -> httpx.Response:
        with trio.move_on_after(self.timeout):
            target, headers, extensions = await self._target(url, token, version)
            headers["Accept"] = "application/json"
            try:
                return await self.http.request(method, target, json=body, headers=headers, extensions=extensions,
                                               timeout=self.timeout)
            except httpx.HTTPError as exc:
                raise A2AError(f"{type(exc).__name__}: {exc}") from exc
        raise A2AError(f"no answer within {self.timeout:g} s")

    async def endpoint(self, url: str, token: str | None) -> Endpoint:
        """Where to send JSON-RPC for a bound URL: read from its Agent Card, or the URL itself (v1.0)."""
        if not is_card_url(url):
            return Endpoint(url)
        response = await self._request("GET", url, token)
        if response.status_code != 200:
            raise A2AError(f"Agent Card {url}: HTTP {response.status_code}",
                           permanent=response.status_code in (401, 403, 404, 410))
        try:
            card = response.json()
        except ValueError as exc:
            raise A2AError(f"Agent Card {url} is not JSON", permanent=True) from exc
        return read_card(card, url)

    async def call(self, endpoint: Endpoint, token: str | None, method: str, params: dict[str, Any]) -> Any:
        """One JSON-RPC call (v1.0 method name; the v0.3 name for an 0.3 agent); its result."""
        name = method if endpoint.version == V1 else V03_METHODS[method]
        body = {"jsonrpc": "2.0", "id": next(_ids), "method": name, "params": params}
        response = await self._request("POST", endpoint.rpc_url, token, body, endpoint.version)
        if response.status_code in (401, 403):
            raise A2AError(f"{name}: HTTP {response.status_code} (the bound token was refused)", permanent=True)
        if response.status_code >= 500 or response.status_code == 429:
            raise A2AError(f"{name}: HTTP {response.status_code}")
        try:
            answer = response.json()
        except ValueError as exc:
            raise A2AError(f"{name}: HTTP {response.status_code}, not JSON") from exc
        if not isinstance(answer, dict):
            raise A2AError(f"{name}: the answer is not a JSON-RPC object")
        error = answer.get("error")
        if isinstance(error, dict):
            code = error.get("code")
            raise A2AError(f"{name}: error {code}: {error.get('message', '')}"[:500], permanent=True,
                           code=code if isinstance(code, int) else None)
        if "result" not in answer:
            raise A2AError(f"{name}: HTTP {response.status_code}, no result")
        return answer["result"]

    async def send(self, endpoint: Endpoint, token: str | None, msg: dict[str, Any]) -> RemoteTask:
        """SendMessage without waiting for the work (returnImmediately / blocking false): the task as it starts."""
        if endpoint.version == V1:
            params = {"message": msg, "configuration": {"returnImmediately": True}}
        else:
            params = {"message": msg, "configuration": {"blocking": False}}
        return read_send_result(await self.call(endpoint, token, "SendMessage", params), endpoint.version)

    async def get(self, endpoint: Endpoint, token: str | None, task_id: str) -> RemoteTask:
        """GetTask: the remote task's state now."""
        result = await self.call(endpoint, token, "GetTask", {"id": task_id})
        if not isinstance(result, dict):
            raise A2AError("GetTask: the result is not a task")
        return read_task(result)

    async def cancel(self, endpoint: Endpoint, token: str | None, task_id: str) -> None:
        """CancelTask."""
        await self.call(endpoint, token, "CancelTask", {"id": task_id})

    async def subscribe(self, endpoint: Endpoint, token: str | None, task_id: str,
                        on_event: Callable[[Any], Awaitable[None]]) -> None:
        """SubscribeToTask (v0.3: tasks/resubscribe): await on_event(result) for each event of the stream, until the
        agent ends it (the caller cancels it to stop earlier). Connecting is bounded by the timeout; the stream is
        not (a task may work for hours)."""
        name = "SubscribeToTask" if endpoint.version == V1 else V03_METHODS["SubscribeToTask"]
        body = {"jsonrpc": "2.0", "id": next(_ids), "method": name, "params": {"id": task_id}}
        target: httpx.URL | None = None
        headers: dict[str, str] = {}
        extensions: dict[str, Any] = {}
        with trio.move_on_after(self.timeout):
            target, headers, extensions = await self._target(endpoint.rpc_url, token, endpoint.version)
        if target is None:
            raise A2AError(f"{name}: no connection within {self.timeout:g} s")
        headers["Accept"] = "text/event-stream"
        timeout = httpx.Timeout(self.timeout, read=None)
        try:
            async with self.http.stream("POST", target, json=body, headers=headers, extensions=extensions,
                                        timeout=timeout) as response:
                if response.status_code != 200:
                    raise A2AError(f"{name}: HTTP {response.status_code}",
                                   permanent=response.status_code in (401, 403, 404))
                if not response.headers.get("content-type", "").startswith("text/event-stream"):
                    # A plain JSON-RPC answer instead of a stream: an error (e.g. streaming not supported).
                    text = (await response.aread()).decode("utf-8", "replace")
                    raise A2AError(f"{name}: no stream: {text}"[:500], permanent=True)
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    try:
                        event = json.loads(line[5:])
                    except ValueError as exc:
                        raise A2AError(f"{name}: an event that is not JSON") from exc
                    if isinstance(event, dict) and isinstance(event.get("error"), dict):
                        error = event["error"]
                        raise A2AError(f"{name}: error {error.get('code')}: {error.get('message', '')}"[:500],
                                       permanent=True)
                    await on_event(event.get("result") if isinstance(event, dict) else None)
        except httpx.HTTPError as exc:
            raise A2AError(f"{name}: {type(exc).__name__}: {exc}") from exc
