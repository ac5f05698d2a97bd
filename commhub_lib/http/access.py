"""The one access line of a request, whichever way it was served."""

from __future__ import annotations

from ..logs import log_access


def access_line(remote: str | None, method: str, path: str, status: int, elapsed_ms: float,
                calls: list[tuple[str, str]] | None = None, alias: str | None = None) -> None:
    """Write the request's access line (logs.log_access: escaped fields, MCP calls and alias when given)."""
    log_access(remote, method, path, status, elapsed_ms, calls, alias)
