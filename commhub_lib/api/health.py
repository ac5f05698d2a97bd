"""GET /health: liveness, no authentication."""

from __future__ import annotations

import time

from .. import __version__
from ..http.request import hub
from ..store import maintenance
from ..store.dialect import POSTGRESQL


async def health() -> dict:
    """Liveness: no authentication. On PostgreSQL also one round trip to the database server: an unreachable one
    answers 503 database_unavailable (with Retry-After), as every call that needs it does meanwhile, so a load
    balancer takes the process out of rotation until it is back (the process reconnects by itself)."""
    if hub().db.engine == POSTGRESQL:
        maintenance.ping(hub().db)
    return {"status": "ok", "version": __version__, "uptime": int(time.monotonic() - hub().started)}
