"""GET /metrics: the hub's Prometheus metrics (commhub_lib/metrics.py), for the scrapers the `metrics` setting lets in.

off (the default): 404, as for a route that does not exist, and nothing is counted; loopback: only clients on this
machine (the peer address: no proxy header is trusted); token: `Authorization: Bearer <metrics_token>`, compared in
constant time. The metrics say how busy the hub is, never what it carries: no alias, network or text is a label.
"""

from __future__ import annotations

import hmac
import ipaddress

from ..errors import Forbidden, NotFound, Unauthorized
from ..http.answers import Answer, text_answer
from ..http.request import client_ip, header, hub
from ..metrics import CONTENT_TYPE

NO_STORE = {"Cache-Control": "no-store"}


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


async def scrape() -> Answer:
    """The Prometheus text exposition of every metric (access by the `metrics` setting)."""
    h = hub()
    mode = h.settings.metrics
    if h.metrics is None or mode == "off":
        raise NotFound("no such endpoint: GET /metrics (metrics are off; see docs/metrics.md to turn them on)")
    if mode == "loopback" and not _is_loopback(client_ip()):
        raise Forbidden("metrics are served to clients on the hub's own machine only (metrics = loopback)")
    if mode == "token":
        sent = header("Authorization") or ""
        scheme, _, secret = sent.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(secret.strip().encode(),
                                                                 h.settings.metrics_token.encode()):
            raise Unauthorized("metrics need 'Authorization: Bearer <COMMHUB_METRICS_TOKEN>'", code="invalid_token")
    return text_answer(h.metrics.exposition(), CONTENT_TYPE, NO_STORE)
