"""The one HTTP + SSE client the CLI commands share: where the server is, the token, errors, event streams.

Synchronous (httpx): a CLI command does one thing at a time, and `listen`/`tail` follow one stream.
No command talks HTTP by itself; each builds a `HubClient` with `HubClient.from_args(args)`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:9200"


class ClientError(Exception):
    """The server said no (exit code 1), or could not be reached; carries the server's error code and message."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message


@dataclass
class SseFrame:
    """One SSE frame as read off the wire. A frame with only `id` moves the cursor without an event."""

    id: str | None = None
    event: str | None = None
    data: str = ""
    comment: str | None = None
    retry: int | None = None

    @property
    def is_event(self) -> bool:
        """True if this frame dispatches an event (it has data)."""
        return self.event is not None or bool(self.data)


def parse_sse(lines: Iterator[str]) -> Iterator[SseFrame]:
    """Split an SSE byte stream's lines (CR, LF or CRLF already removed) into frames, per the SSE spec."""
    frame = SseFrame()
    data: list[str] = []
    touched = False
    for line in lines:
        if line == "":
            if touched:
                frame.data = "\n".join(data)
                yield frame
            frame, data, touched = SseFrame(), [], False
            continue
        touched = True
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "":
            frame.comment = value
        elif name == "id":
            frame.id = value
        elif name == "event":
            frame.event = value
        elif name == "data":
            data.append(value)
        elif name == "retry" and value.isdigit():
            frame.retry = int(value)


def iter_sse_lines(response: httpx.Response) -> Iterator[str]:
    """Lines of a streaming response split only on CR, LF and CRLF (never on U+2028 and friends, as the SSE
    spec says; `str.splitlines` would split on those too)."""
    buffer = ""
    for chunk in response.iter_text():
        buffer += chunk
        while True:
            cut = min((i for i in (buffer.find("\r"), buffer.find("\n")) if i >= 0), default=-1)
            if cut < 0:
                break
            if buffer[cut] == "\r" and cut + 1 == len(buffer):
                break  # a CR at the end may be the first half of a CRLF: wait for more
            line = buffer[:cut]
            step = 2 if buffer[cut:cut + 2] == "\r\n" else 1
            buffer = buffer[cut + step:]
            yield line
    if buffer:
        yield buffer


class HubClient:
    """Talks to one CommHub server with one bearer token."""

    def __init__(self, url: str, token: str | None, timeout: float = 30.0,
                 token_source: str = "--token or COMMHUB_TOKEN"):
        self.url = url.rstrip("/")
        self.token = token
        self.token_source = token_source  # named when the server asks for a token and none was given
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    @classmethod
    def from_args(cls, args: Any) -> HubClient:
        """A client from `--url`/`--token` flags, else COMMHUB_URL/COMMHUB_TOKEN, else the local default."""
        url = getattr(args, "url", None) or os.environ.get("COMMHUB_URL") or DEFAULT_URL
        token = getattr(args, "token", None) or os.environ.get("COMMHUB_TOKEN") or None
        return cls(url, token)

    def mcp_tool(self, name: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
        """Call one MCP tool with a bare JSON-RPC request (no session); its structured result, or ClientError."""
        answer = self.request("POST", "/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                                                    "params": {"name": name, "arguments": arguments or {}}})
        if "error" in answer:
            raise ClientError(200, "jsonrpc_error", str(answer["error"].get("message", answer["error"])))
        result = answer.get("result") or {}
        content = result.get("structuredContent") or {}
        if result.get("isError"):
            raise ClientError(200, str(content.get("error", "tool_error")), str(content.get("message", content)))
        return content

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()

    def request(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None,
                timeout: float | None = None) -> dict[str, Any]:
        """One REST call; the JSON answer, or ClientError with the server's code and message."""
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            kwargs: dict[str, Any] = {"json": json, "params": clean}
            if timeout is not None:
                kwargs["timeout"] = timeout
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ClientError(0, "unreachable", f"cannot reach {self.url}: {exc}") from exc
        return self._answer(response)

    def upload(self, filename: str, data: bytes, content_type: str, network_id: str | None = None) -> dict[str, Any]:
        """POST /api/attachments with the file as the raw body (docs/attachments.md); its record, or ClientError."""
        params = {k: v for k, v in {"filename": filename, "network_id": network_id}.items() if v is not None}
        try:
            response = self.http.post("/api/attachments", content=data, params=params,
                                      headers={"Content-Type": content_type})
        except httpx.HTTPError as exc:
            raise ClientError(0, "unreachable", f"cannot reach {self.url}: {exc}") from exc
        return self._answer(response)

    def download(self, path: str, params: dict[str, Any] | None = None) -> tuple[bytes, httpx.Headers]:
        """GET a file (an attachment): its bytes and the answer's headers, or ClientError."""
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self.http.get(path, params=clean)
        except httpx.HTTPError as exc:
            raise ClientError(0, "unreachable", f"cannot reach {self.url}: {exc}") from exc
        if response.status_code >= 400:
            self._answer(response)  # raises the server's error
        return response.content, response.headers

    def _answer(self, response: httpx.Response) -> dict[str, Any]:
        try:
            return _answer(response)
        except ClientError as exc:
            if exc.status == 401 and not self.token:
                raise ClientError(401, exc.code, f"no token given: pass {self.token_source} "
                                                 f"(the server said: {exc.message})") from None
            raise

    def stream(self, path: str, *, params: dict[str, Any] | None = None,
               last_event_id: str | None = None, read_timeout: float | None = None) -> Iterator[SseFrame]:
        """Follow an SSE stream until it ends; raises ClientError if it is refused or cannot be reached.
        `read_timeout`: give up on a stream silent for that long (heartbeats arrive every 15 s by default); that
        raises ClientError with code `timeout`."""
        headers = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            with self.http.stream("GET", path, params=clean, headers=headers,
                                  timeout=httpx.Timeout(10.0, read=read_timeout)) as response:
                if response.status_code != 200:
                    response.read()
                    self._answer(response)
                yield from parse_sse(iter_sse_lines(response))
        except httpx.ReadTimeout as exc:
            raise ClientError(0, "timeout", f"no event from {self.url} for {read_timeout} s") from exc
        except httpx.HTTPError as exc:
            raise ClientError(0, "unreachable", f"stream from {self.url} broke: {exc}") from exc


    def follow(self, path: str, *, resume: Callable[[], str | None], params: dict[str, Any] | None = None,
               on_retry: Callable[[str, float], None] | None = None, max_delay: float = 30.0,
               read_timeout: float = 60.0) -> Iterator[SseFrame]:
        """Follow an SSE stream for ever: when it ends or breaks, reconnect with backoff (1 s doubling to
        `max_delay`, reset once a connection works) and `Last-Event-ID: resume()`, telling `on_retry` why and
        how long it waits. A refusal the caller must fix (4xx other than 429) is raised as ClientError."""
        delay = 1.0
        while True:
            try:
                for frame in self.stream(path, params=params, last_event_id=resume(), read_timeout=read_timeout):
                    delay = 1.0
                    yield frame
                reason = "the stream ended"
            except ClientError as exc:
                if 400 <= exc.status < 500 and exc.status != 429:
                    raise
                reason = exc.message if exc.status == 0 else f"{exc.code}: {exc.message}"
            if on_retry is not None:
                on_retry(reason, delay)
            time.sleep(delay)
            delay = min(delay * 2, max_delay)


def _answer(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code >= 400:
        if isinstance(body, dict) and "error" in body:
            raise ClientError(response.status_code, str(body["error"]), str(body.get("message", "")))
        raise ClientError(response.status_code, "http_error", f"HTTP {response.status_code}: {response.text[:200]}")
    if not isinstance(body, dict):
        raise ClientError(response.status_code, "bad_response", "the server did not answer with a JSON object")
    return body
