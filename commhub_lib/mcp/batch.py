"""JSON-RPC batches on POST /mcp, bounded.

MCP 2025-03-26 and earlier allow a POST body to be an array of messages; 2025-06-18 removed batching
("Remove support for JSON-RPC batching", PR #416 of the specification), so a session that negotiated
2025-06-18 or later gets one -32600 error for a batch, as the newer transport rules require. Where
batches are allowed they are bounded so one request costs no more than its calls sent one by one:
- at most `mcp_max_batch` messages (else the whole batch is refused, -32600, nothing runs);
- every message counts against the token's rate limit (the first was counted when the request was
  authenticated); a call over the limit is answered with an error and not run;
- the event loop gets a checkpoint between calls, so a long batch never freezes other clients;
- once the answers pass `mcp_max_response_bytes`, the remaining calls are not run and each gets an error;
- `initialize` is refused inside a batch (the 2025-03-26 rule), so a batch cannot mint sessions;
- at most one long-poll (`get_inbox` with `wait_seconds` > 0) runs per batch: any further one is answered
  with a -32600 error and not run (running it with wait 0 would change what the caller asked for silently).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio

from ..errors import RateLimited
from ..http.answers import json_bytes
from .versions import BATCHES_REMOVED as BATCHING_REMOVED_IN

INVALID_REQUEST = -32600
NOT_RUN = -32000  # implementation-defined server error: the call was not run; sending it again alone works

Dispatch = Callable[[Any], Awaitable[dict[str, Any] | None]]


def batch_refusal(version: str, count: int, max_batch: int) -> str | None:
    """Why a batch may not run at all, or None when it may."""
    if version >= BATCHING_REMOVED_IN:
        return (f"invalid request: JSON-RPC batches were removed in MCP {BATCHING_REMOVED_IN} and this session "
                f"uses {version}; send one JSON-RPC message per POST")
    if count > max_batch:
        return (f"invalid request: a batch of {count} messages is over the limit of {max_batch} "
                "(COMMHUB_MCP_MAX_BATCH); send smaller batches or one message per POST")
    return None


def _request_id(msg: Any) -> str | int | None:
    """The id to answer a batch member with (None when it has no usable id)."""
    msg_id = msg.get("id") if isinstance(msg, dict) else None
    return msg_id if isinstance(msg_id, str | int) and not isinstance(msg_id, bool) else None


def _is_request(msg: Any) -> bool:
    """True for a message that expects an answer (has a method and an id)."""
    return isinstance(msg, dict) and "method" in msg and "id" in msg


def _is_long_poll(msg: Any) -> bool:
    """A tools/call of get_inbox that asks to wait."""
    if not isinstance(msg, dict) or msg.get("method") != "tools/call" or not isinstance(msg.get("params"), dict):
        return False
    params = msg["params"]
    args = params.get("arguments")
    wait = args.get("wait_seconds") if isinstance(args, dict) else None
    return params.get("name") == "get_inbox" and isinstance(wait, int | float) and not isinstance(wait, bool) \
        and wait > 0


def _error(msg: Any, code: int, message: str, data: Any = None) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    return {"jsonrpc": "2.0", "id": _request_id(msg), "error": err}


async def run_batch(messages: list[Any], dispatch: Dispatch, count_call: Callable[[], None],
                    max_response_bytes: int) -> list[bytes]:
    """Run a batch's messages in order; returns each answer encoded as JSON (notifications have none)."""
    pieces: list[bytes] = []
    size = 0
    long_poll_taken = False
    for index, msg in enumerate(messages):
        await trio.lowlevel.checkpoint()
        answer: dict[str, Any] | None
        if size > max_response_bytes:
            answer = _error(msg, NOT_RUN, f"not run: this batch's answers passed {max_response_bytes} bytes "
                            "(COMMHUB_MCP_MAX_RESPONSE_BYTES); send this call again on its own") \
                if _is_request(msg) else None
        else:
            try:
                if index:  # the request's authentication counted the first message
                    count_call()
            except RateLimited as exc:
                answer = _error(msg, NOT_RUN, f"not run: {exc.message}", {"retry_after": exc.retry_after}) \
                    if _is_request(msg) else None
            else:
                if _is_request(msg) and msg.get("method") == "initialize":
                    answer = _error(msg, INVALID_REQUEST, "invalid request: initialize must not be part of a "
                                    "JSON-RPC batch; send it alone")
                elif _is_long_poll(msg) and long_poll_taken:
                    answer = _error(msg, INVALID_REQUEST, "invalid request: only one get_inbox with wait_seconds "
                                    "> 0 may run per batch; send the others with wait_seconds 0 or on their own")
                else:
                    long_poll_taken = long_poll_taken or _is_long_poll(msg)
                    answer = await dispatch(msg)
        if answer is not None:
            piece = json_bytes(answer)
            pieces.append(piece)
            size += len(piece)
    return pieces
