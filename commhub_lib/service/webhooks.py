"""Webhooks (docs/webhooks.md): their management, the targets they may reach, and the delivery worker.

Every matching event is written to the outbox (`webhook_deliveries`) in the transaction that stores it
(Hub.record_event), so a crash loses nothing: the worker (root nursery) sends what is pending at start. Each
webhook has its own sender task that POSTs its events one at a time in id order (at-least-once: a receiver
dedups by the event's `id`), under a hard deadline and a global cap on POSTs in flight, so a slow or dead
receiver delays only its own webhook. A failure is retried after webhook_retry_base_seconds, doubled per
failure; a webhook failing for webhook_disable_after_seconds is disabled and its owner told (webhook_disabled).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import ssl
from typing import Any

import certifi
import httpx
import trio

from ..broker import Event
from ..errors import CommhubError, Conflict, NotFound, ValidationFailed
from ..ids import new_id, now_text, now_ts
from ..models import WebhookCreateRequest, WebhookUpdateRequest
from ..store import webhooks as webhook_store
from ..vocabulary import PENDING, STORED_EVENTS, WEBHOOK_DISABLED
from .hub import Hub, Principal, clamp_limit, require_user_token
from .networks import require_role
from .outbox import KeyedWorkers, prune_settled

log = logging.getLogger("commhub.webhooks")

POLL_SECONDS = 5.0  # the worker also looks for pending rows this often (a wake-up lost to a rollback, a restart)
PRUNE_SECONDS = 3600.0  # the delivery log keeps settled rows as long as the SSE events (event_retention_days)
MAX_ERROR_CHARS = 300
USER_AGENT = "CommHub-Webhook/1"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The X-CommHub-Signature value: `sha256=` + hex HMAC-SHA256(secret, f"{timestamp}." + body)."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


# -- targets ----------------------------------------------------------------------------------------------------

def _address_allowed(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, scheme: str, targets: str) -> bool:
    """Whether a resolved address may be POSTed to under the webhook_targets setting."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_unspecified or ip.is_multicast:
        return False
    if targets == "private":
        return True
    if targets == "loopback" and ip.is_loopback:
        return True
    # Public only: private, loopback, link-local (169.254.169.254, the cloud metadata service), shared, reserved
    # ranges are all outside is_global. Plain http only ever to loopback, and only by setting.
    return scheme == "https" and ip.is_global


def check_url(url: str, targets: str, *, setting: str = "webhook_targets",
              code: str = "webhook_url_not_allowed") -> httpx.URL:
    """The parsed URL if its scheme (and, for an IP literal, its address) may be a target, else 400. Shared with
    the A2A client (service/bridge.py), which passes its own setting's name and error code."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError) as exc:
        raise ValidationFailed(f"url: not a URL ({exc})", code=code) from exc
    if parsed.scheme not in ("https", "http") or not parsed.host:
        raise ValidationFailed("url: must be an https:// URL", code=code)
    if parsed.scheme == "http" and targets == "public":
        raise ValidationFailed(f"url: must be https (http:// only to loopback or private addresses, by the "
                               f"{setting} setting)", code=code)
    try:
        literal = ipaddress.ip_address(parsed.host)
    except ValueError:
        return parsed
    if not _address_allowed(literal, parsed.scheme, targets):
        raise ValidationFailed(f"url: {parsed.host} is a private, loopback, link-local or metadata address "
                               f"({setting} is {targets})", code=code)
    return parsed


async def resolve_target(url: str, targets: str, *, setting: str = "webhook_targets") -> tuple[httpx.URL, str]:
    """The URL to connect to, with its host replaced by a checked address (so DNS cannot change between the check
    and the connection), and the original host (for Host and TLS SNI). Raises ValueError when not allowed."""
    parsed = check_url(url, targets, setting=setting)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    infos = await trio.socket.getaddrinfo(parsed.host, port, type=trio.socket.SOCK_STREAM)
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
    if not addresses:
        raise ValueError(f"{parsed.host} resolves to no address")
    refused = [str(a) for a in addresses if not _address_allowed(a, parsed.scheme, targets)]
    if refused:  # every address must pass: a name with one public and one private address is refused
        raise ValueError(f"{parsed.host} resolves to {', '.join(refused)}: not allowed by {setting}={targets}")
    return parsed.copy_with(host=str(addresses[0])), parsed.host


# -- management (REST) ------------------------------------------------------------------------------------------

def _checked_events(names: list[str]) -> list[str]:
    unknown = [n for n in names if n not in STORED_EVENTS]
    if unknown:
        raise ValidationFailed(f"events: unknown event(s) {', '.join(unknown)}; known: {', '.join(STORED_EVENTS)}")
    return sorted(set(names))


def _public(row: dict[str, Any]) -> dict[str, Any]:
    """A webhook as the API shows it (never its secret)."""
    return {**row, "events": json.loads(row["events"]), "aliases": json.loads(row["aliases"]),
            "enabled": bool(row["enabled"])}


def _manage(hub: Hub, principal: Principal, network_id: str) -> None:
    require_user_token(principal)
    require_role(hub, principal, network_id, "admin")


def _webhook(hub: Hub, network_id: str, webhook_id: str) -> dict[str, Any]:
    row = webhook_store.get_webhook(hub.db, network_id, webhook_id)
    if row is None:
        raise NotFound(f"webhook '{webhook_id}' not found in network '{network_id}'", code="webhook_not_found")
    return row


def create_webhook(hub: Hub, principal: Principal, network_id: str, req: WebhookCreateRequest,
                   ip: str | None) -> dict[str, Any]:
    """Register a webhook (owner/admin). The answer holds its secret: the only time it is shown."""
    _manage(hub, principal, network_id)
    check_url(req.url, hub.settings.webhook_targets, code="webhook_url_not_allowed")
    events = _checked_events(req.events)
    webhook_id = new_id("wh")
    secret = "whsec_" + secrets.token_hex(24)
    with hub.db.write():
        if webhook_store.count_webhooks(hub.db, network_id) >= hub.settings.webhook_max_per_network:
            raise Conflict(f"network '{network_id}' has {hub.settings.webhook_max_per_network} webhooks, the most "
                           "webhook_max_per_network allows", code="webhook_limit_reached")
        webhook_store.insert_webhook(hub.db, webhook_id, network_id, req.url, secret, json.dumps(events),
                                     json.dumps(sorted(set(req.aliases))), req.description, principal.user_id,
                                     now_text())
        hub.audit("webhook_create", actor=principal.label, user_id=principal.user_id, network_id=network_id,
                  detail={"webhook_id": webhook_id, "url": req.url}, ip=ip)
    hub.webhooks_changed()
    return {"ok": True, **_public(_webhook(hub, network_id, webhook_id)), "secret": secret,
            "note": "keep the secret now: it is not shown again; verify each POST with it (docs/webhooks.md)"}


def list_webhooks(hub: Hub, principal: Principal, network_id: str) -> dict[str, Any]:
    """A network's webhooks (owner/admin)."""
    _manage(hub, principal, network_id)
    return {"ok": True, "webhooks": [_public(r) for r in webhook_store.list_webhooks(hub.db, network_id)]}


def get_webhook(hub: Hub, principal: Principal, network_id: str, webhook_id: str) -> dict[str, Any]:
    """One webhook (owner/admin)."""
    _manage(hub, principal, network_id)
    return {"ok": True, **_public(_webhook(hub, network_id, webhook_id))}


def update_webhook(hub: Hub, principal: Principal, network_id: str, webhook_id: str, req: WebhookUpdateRequest,
                   ip: str | None) -> dict[str, Any]:
    """Change a webhook's URL, filter, description, or enable/disable it (owner/admin)."""
    _manage(hub, principal, network_id)
    row = _webhook(hub, network_id, webhook_id)
    url = row["url"] if req.url is None else str(check_url(req.url, hub.settings.webhook_targets) and req.url)
    events = row["events"] if req.events is None else json.dumps(_checked_events(req.events))
    aliases = row["aliases"] if req.aliases is None else json.dumps(sorted(set(req.aliases)))
    description = row["description"] if req.description is None else req.description
    enabled = row["enabled"] if req.enabled is None else int(req.enabled)
    with hub.db.write():
        webhook_store.update_webhook(hub.db, webhook_id, url, events, aliases, description, enabled)
        hub.audit("webhook_update", actor=principal.label, user_id=principal.user_id, network_id=network_id,
                  detail={"webhook_id": webhook_id, **req.model_dump(exclude_none=True)}, ip=ip)
    hub.webhooks_changed()
    hub.wake_webhooks(webhook_id)
    return {"ok": True, **_public(_webhook(hub, network_id, webhook_id))}


def delete_webhook(hub: Hub, principal: Principal, network_id: str, webhook_id: str, ip: str | None) -> dict[str, Any]:
    """Remove a webhook and its delivery log (owner/admin)."""
    _manage(hub, principal, network_id)
    _webhook(hub, network_id, webhook_id)
    with hub.db.write():
        webhook_store.delete_webhook(hub.db, webhook_id)
        hub.audit("webhook_delete", actor=principal.label, user_id=principal.user_id, network_id=network_id,
                  detail={"webhook_id": webhook_id}, ip=ip)
    hub.webhooks_changed()
    return {"ok": True, "webhook_id": webhook_id, "deleted": True}


def list_deliveries(hub: Hub, principal: Principal, network_id: str, webhook_id: str, before: int | None,
                    limit: int | None) -> dict[str, Any]:
    """A webhook's delivery log, newest first: each event's status, attempts, last HTTP status or error."""
    _manage(hub, principal, network_id)
    _webhook(hub, network_id, webhook_id)
    rows = webhook_store.list_deliveries(hub.db, webhook_id, before, clamp_limit(limit))
    return {"ok": True, "deliveries": rows, "next_before": rows[-1]["delivery_id"] if rows else None}


def redeliver(hub: Hub, principal: Principal, network_id: str, webhook_id: str, delivery_id: int,
              ip: str | None) -> dict[str, Any]:
    """Send one logged delivery again (owner/admin): it goes back to pending, due now, in its place by id."""
    _manage(hub, principal, network_id)
    _webhook(hub, network_id, webhook_id)
    with hub.db.write():
        if not webhook_store.requeue_delivery(hub.db, webhook_id, delivery_id, now_text()):
            raise NotFound(f"delivery {delivery_id} not found for webhook '{webhook_id}'", code="delivery_not_found")
        hub.audit("webhook_redeliver", actor=principal.label, user_id=principal.user_id, network_id=network_id,
                  detail={"webhook_id": webhook_id, "delivery_id": delivery_id}, ip=ip)
    hub.wake_webhooks(webhook_id)
    return {"ok": True, "webhook_id": webhook_id, "delivery_id": delivery_id, "status": PENDING}


# -- delivery ---------------------------------------------------------------------------------------------------

def describe(exc: BaseException) -> str:
    """An exception's text for the delivery log: its own, else its cause's (a TLS failure reaches httpx under trio
    as a ConnectError with no text of its own; the certificate error is in the chain)."""
    seen: BaseException | None = exc
    while seen is not None:
        if str(seen):
            return str(seen) if seen is exc else f"{type(seen).__name__}: {seen}"
        seen = seen.__cause__ or seen.__context__
    return "no detail"


async def post_once(client: httpx.AsyncClient, hub: Hub, webhook: dict[str, Any],
                    delivery: dict[str, Any]) -> tuple[int | None, str | None]:
    """POST one delivery: (HTTP status, None) when answered, (status or None, error) when it failed."""
    body = delivery["payload"].encode()
    timeout = hub.settings.webhook_timeout_seconds
    # One hard deadline over the lookup and the POST: a slow resolver or a receiver dripping bytes cannot hold
    # the sender longer (httpx's own timeouts are per read, not per request).
    with trio.move_on_after(timeout) as deadline:
        try:
            target, host = await resolve_target(webhook["url"], hub.settings.webhook_targets)
        except (ValueError, OSError, CommhubError) as exc:  # refused by webhook_targets, or the lookup failed
            return None, f"target refused: {exc}"[:MAX_ERROR_CHARS]
        timestamp = int(now_ts())
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
                   "Host": httpx.URL(webhook["url"]).netloc.decode("ascii"),
                   "X-CommHub-Event": delivery["event"], "X-CommHub-Event-Id": str(delivery["event_id"]),
                   "X-CommHub-Delivery": str(delivery["delivery_id"]), "X-CommHub-Timestamp": str(timestamp),
                   "X-CommHub-Signature": sign(webhook["secret"], timestamp, body)}
        extensions = {"sni_hostname": host} if target.scheme == "https" else {}
        try:
            response = await client.post(target, content=body, headers=headers, extensions=extensions,
                                         timeout=timeout)
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {describe(exc)}"[:MAX_ERROR_CHARS]
    if deadline.cancelled_caught:
        return None, f"no answer within {timeout:g} s"
    if 200 <= response.status_code < 300:
        return response.status_code, None
    return response.status_code, f"HTTP {response.status_code}"


class Worker(KeyedWorkers):
    """The delivery worker: one sender task per webhook with pending events (woken by a redelivery, a new event)."""

    what = "webhook sender"

    def __init__(self, hub: Hub, client: httpx.AsyncClient, nursery: trio.Nursery):
        super().__init__(nursery)
        self.hub = hub
        self.client = client
        self.limiter = trio.CapacityLimiter(hub.settings.webhook_concurrency)

    async def work(self, webhook_id: str) -> None:
        """Send a webhook's pending deliveries in order until none is left (then the task ends)."""
        db = self.hub.db
        while True:
            webhook = webhook_store.get_webhook_for_delivery(db, webhook_id)
            delivery = webhook_store.next_pending(db, webhook_id) if webhook and webhook["enabled"] else None
            if delivery is None or webhook is None:
                del self.wakeups[webhook_id]  # no await since the read: a poke now starts a new sender
                return
            wait = delivery["next_attempt_ts"] - now_ts()
            if wait > 0:  # backing off; a poke (a redelivery by hand, a re-enable) looks again sooner
                wake = self.wakeups[webhook_id] = trio.Event()
                with trio.move_on_after(wait):
                    await wake.wait()
                continue
            async with self.limiter:
                status, error = await post_once(self.client, self.hub, webhook, delivery)
            await self._record(webhook, delivery, status, error)

    async def _record(self, webhook: dict[str, Any], delivery: dict[str, Any], status: int | None,
                      error: str | None) -> None:
        """Store an attempt's outcome, in write_together: it shares its commit with the sends of the same moment
        instead of taking a transaction (and the write lock) of its own per delivery."""
        hub, settings = self.hub, self.hub.settings
        now = now_ts()
        pending: list[Event] = []

        def work() -> None:
            if error is None:
                webhook_store.mark_delivered(hub.db, delivery["delivery_id"], status or 0, now_text())
                if webhook["failing_since_ts"] is not None:
                    webhook_store.set_failing_since(hub.db, webhook["webhook_id"], None)
                return
            pause = min(settings.webhook_retry_base_seconds * 2 ** delivery["attempts"],
                        settings.webhook_retry_max_seconds)
            webhook_store.mark_attempt_failed(hub.db, delivery["delivery_id"], status, error, now + pause, now_text())
            since = webhook["failing_since_ts"]
            if since is None:
                webhook_store.set_failing_since(hub.db, webhook["webhook_id"], now)
            elif now - since >= settings.webhook_disable_after_seconds:
                self._disable(webhook, delivery, error, since, pending)

        await hub.db.write_together(work)
        if hub.metrics is not None:
            hub.metrics.observe_webhook_attempt(error is None)
        if error is None:
            return
        log.info("webhook %s: delivery %s failed (%s)", webhook["webhook_id"], delivery["delivery_id"], error)
        if pending:
            hub.webhooks_changed()
            hub.publish(pending)

    def _disable(self, webhook: dict[str, Any], delivery: dict[str, Any], error: str, since: float,
                 pending: list[Event]) -> None:
        """Disable a webhook that has failed too long and tell its owner (inside the write)."""
        hub = self.hub
        reason = f"failing since {since:.0f} (unix time); last error: {error}"[:MAX_ERROR_CHARS]
        webhook_store.disable_webhook(hub.db, webhook["webhook_id"], reason)
        webhook_store.give_up_pending(hub.db, webhook["webhook_id"], now_text())
        hub.audit(WEBHOOK_DISABLED, actor="commhub", user_id=webhook["created_by"],
                  network_id=webhook["network_id"], detail={"webhook_id": webhook["webhook_id"], "reason": reason})
        # The event has no agent: it is the network's (alias ""), seen by people on the network stream.
        hub.record_event(pending, webhook["network_id"], "", WEBHOOK_DISABLED, {
            "type": WEBHOOK_DISABLED, "webhook_id": webhook["webhook_id"], "url": webhook["url"],
            "owner": webhook["created_by"], "reason": reason, "last_delivery_id": delivery["delivery_id"]})
        log.warning("webhook %s disabled: %s", webhook["webhook_id"], reason)


async def prune_log(hub: Hub) -> int:
    """Drop delivered and failed deliveries older than event_retention_days, in batches that yield."""
    return await prune_settled(hub, lambda cutoff, limit: webhook_store.delete_settled_before(hub.db, cutoff, limit))


def tls_context(ca_file: str) -> ssl.SSLContext | bool:
    """How receivers' certificates are verified: httpx's default (the public CAs), plus a private CA's file."""
    if not ca_file:
        return True
    context = ssl.create_default_context(cafile=certifi.where())
    context.load_verify_locations(cafile=ca_file)
    return context


async def run_webhooks(hub: Hub, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Background job (root nursery): deliver the outbox. Starts a sender for every webhook with pending events
    (those left by a crash too), then for each webhook publish() reports; looks again every POLL_SECONDS."""
    limits = httpx.Limits(max_connections=hub.settings.webhook_concurrency * 2, max_keepalive_connections=32)
    async with httpx.AsyncClient(limits=limits, follow_redirects=False, trust_env=False,
                                 verify=tls_context(hub.settings.webhook_ca_file)) as client, \
            trio.open_nursery() as nursery:
        worker = Worker(hub, client, nursery)
        task_status.started()
        scan = True  # at start (what a crash left) and every POLL_SECONDS; a wake-up names its webhooks itself
        next_prune = trio.current_time() + POLL_SECONDS
        while True:
            if trio.current_time() >= next_prune:
                next_prune = trio.current_time() + PRUNE_SECONDS
                try:
                    if pruned := await prune_log(hub):
                        log.info("webhooks: pruned %d settled deliveries from the log", pruned)
                except Exception:  # busy or failing: the next hour tries again
                    log.exception("webhooks: could not prune the delivery log")
            due: set[str] = set()
            if scan:
                try:
                    due = set(webhook_store.webhooks_with_pending(hub.db))
                except Exception:  # the database is busy or failing: the next poll tries again
                    log.exception("webhooks: could not read the outbox")
            due |= hub.webhooks_due
            hub.webhooks_due.clear()
            worker.poke(due)
            with trio.move_on_after(POLL_SECONDS) as idle:
                await hub.webhook_wakeup.wait()
            hub.webhook_wakeup = trio.Event()
            scan = idle.cancelled_caught
