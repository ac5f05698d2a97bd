"""Identifiers and timestamps, in one place so their formats stay consistent."""

from __future__ import annotations

import functools
import secrets
import time
import uuid
from datetime import UTC, datetime


def new_id(prefix: str, nbytes: int = 8) -> str:
    """A random id such as `u_3f9a…` (hex, `nbytes` bytes of randomness)."""
    return f"{prefix}_{secrets.token_hex(nbytes)}"


def new_uuid() -> str:
    """A random UUID4 string (task ids)."""
    return str(uuid.uuid4())


def now_ts() -> float:
    """Unix time in seconds."""
    return time.time()


def ts_text(ts: float) -> str:
    """UTC 'YYYY-MM-DD HH:MM:SS', the reference's timestamp format."""
    return _second_text(int(ts // 1))


@functools.lru_cache(maxsize=16)
def _second_text(second: int) -> str:
    # A request formats "now" 3-5 times and every request of the same second shares the text: strftime
    # was ~1.5 % of the server's CPU per MCP call.
    return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%d %H:%M:%S")


def now_text() -> str:
    """The current UTC time as 'YYYY-MM-DD HH:MM:SS'."""
    return ts_text(now_ts())


def iso_now() -> str:
    """The current UTC time as ISO 8601 with a Z (heartbeat `time`)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
