"""GET /health: liveness, no authentication."""

from __future__ import annotations

import time

from .. import __version__
from ..http.request import hub
from ..store import maintenance
from ..store.dialect import POSTGRESQL


async def health() -> dict:
    """Liveness: no authentication; on PostgreSQL, 503 database_unavailable while the database cannot be reached.

    There it costs one round trip to the database server, and answers as every call needing it does meanwhile
    (with Retry-After), so a load balancer takes the process out of rotation until it is back: the process
    reconnects by itself (docs/postgresql.md "Failure behaviour")."""
    if hub().db.engine == POSTGRESQL:
        maintenance.ping(hub().db)
    return {"status": "ok", "version": __version__, "uptime": int(time.monotonic() - hub().started)}
