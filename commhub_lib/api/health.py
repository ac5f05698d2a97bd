"""GET /health: liveness, no authentication."""

from __future__ import annotations

import time

from .. import __version__
from ..http.request import hub


async def health() -> dict:
    """Liveness: no authentication."""
    return {"status": "ok", "version": __version__, "uptime": int(time.monotonic() - hub().started)}
