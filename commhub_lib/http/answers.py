"""JSON answer helpers shared by every route: the one JSON encoding of an answer and the one error body."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quart import Response, send_from_directory

# What a REST handler answers (Quart makes the response): a dict, (dict, status[, headers]) or an Answer.
Answer = Response


@dataclass(frozen=True, slots=True)
class JsonAnswer:
    """A whole JSON answer (or an empty one): status, body, extra headers."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def json_bytes(payload: Any) -> bytes:
    """Encode a response as compact UTF-8 JSON; never fails on a string that is not valid Unicode."""
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate got in: \\u escapes keep the answer valid JSON
        return json.dumps(payload, separators=(",", ":")).encode("ascii")


def error_bytes(code: str, message: str) -> bytes:
    """The one body of every error: {"error": code, "message": text}."""
    return json_bytes({"error": code, "message": message})


def json_text(text: str | bytes, status: int = 200) -> Answer:
    """An answer whose JSON text is made already (SQLite built it, or a JSON-RPC body)."""
    return Response(text, status=status, content_type="application/json")


def text_answer(body: bytes, content_type: str, headers: Mapping[str, str] | None = None) -> Answer:
    """A 200 answer that is not JSON (the Prometheus exposition of GET /metrics)."""
    return Response(body, status=200, content_type=content_type, headers=dict(headers or {}))


def empty(status: int) -> Answer:
    """An answer without a body (204)."""
    return Response("", status=status)


async def static_file(directory: Path, name: str, headers: Mapping[str, str]) -> Answer:
    """A file of `directory` (404 for a name outside it or missing), with `headers` set (and no Expires:
    Cache-Control rules)."""
    response = await send_from_directory(directory, name)
    response.headers.pop("Expires", None)
    for key, value in headers.items():
        response.headers[key] = value
    return response
