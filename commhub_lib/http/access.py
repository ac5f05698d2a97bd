"""The one access line of a request, whichever way it was served."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..logs import log_access

if TYPE_CHECKING:
    from ..metrics import Metrics


def access_line(remote: str | None, method: str, path: str, status: int, elapsed_ms: float,
                calls: list[tuple[str, str]] | None = None, alias: str | None = None, *,
                route: str = "unmatched", metrics: Metrics | None = None) -> None:
    """Write the request's access line (logs.log_access: escaped fields, MCP calls and alias when given), and
    count the request in the hub's metrics when they are on: by `route`, the route table's endpoint name (never
    the raw path, whose ids would make a series per task)."""
    log_access(remote, method, path, status, elapsed_ms, calls, alias)
    if metrics is not None:
        metrics.observe_request(route, status, elapsed_ms)
