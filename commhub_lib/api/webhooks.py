"""Routes: /api/networks/<network_id>/webhooks and their delivery log (docs/webhooks.md)."""

from __future__ import annotations

from ..errors import NotFound
from ..http.request import authenticate, client_ip, hub, parse
from ..models import WebhookCreateRequest, WebhookUpdateRequest
from ..service import webhooks
from .accounts import NO_STORE
from .common import query_int


async def create_webhook(network_id: str) -> tuple[dict, int, dict[str, str]]:
    """Register a webhook (owner/admin); the answer holds its secret, shown this once (not cached)."""
    principal = authenticate()
    return webhooks.create_webhook(hub(), principal, network_id, await parse(WebhookCreateRequest),
                                   client_ip()), 200, NO_STORE


async def list_webhooks(network_id: str) -> dict:
    """A network's webhooks (owner/admin), without their secrets."""
    return webhooks.list_webhooks(hub(), authenticate(), network_id)


async def get_webhook(network_id: str, webhook_id: str) -> dict:
    """One webhook (owner/admin)."""
    return webhooks.get_webhook(hub(), authenticate(), network_id, webhook_id)


async def update_webhook(network_id: str, webhook_id: str) -> dict:
    """Change a webhook's URL, filter or description, or disable / re-enable it (owner/admin)."""
    principal = authenticate()
    return webhooks.update_webhook(hub(), principal, network_id, webhook_id, await parse(WebhookUpdateRequest),
                                   client_ip())


async def delete_webhook(network_id: str, webhook_id: str) -> dict:
    """Remove a webhook and its delivery log (owner/admin)."""
    return webhooks.delete_webhook(hub(), authenticate(), network_id, webhook_id, client_ip())


async def list_deliveries(network_id: str, webhook_id: str) -> dict:
    """A webhook's delivery log, newest first (?before=<delivery_id>&limit=)."""
    return webhooks.list_deliveries(hub(), authenticate(), network_id, webhook_id, query_int("before", None, 1),
                                    query_int("limit", None, 1))


async def redeliver(network_id: str, webhook_id: str, delivery_id: str) -> dict:
    """Send one logged delivery again (owner/admin)."""
    if not delivery_id.isdigit():
        raise NotFound(f"delivery {delivery_id!r} not found", code="delivery_not_found")
    return webhooks.redeliver(hub(), authenticate(), network_id, webhook_id, int(delivery_id), client_ip())
