"""Webhooks and their outbox (the delivery log): one named function per query (schema: migrations/0008)."""

from __future__ import annotations

from typing import Any

from ..db import Database

Row = dict[str, Any]
PUBLIC_COLUMNS = ("webhook_id, network_id, url, events, aliases, description, enabled, disabled_reason, "
                  "failing_since_ts, created_by, created_at")
DELIVERY_COLUMNS = ("delivery_id, webhook_id, event_id, event, alias, status, attempts, next_attempt_ts, "
                    "last_status, last_error, created_at, updated_at")


def insert_webhook(db: Database, webhook_id: str, network_id: str, url: str, secret: str, events: str,
                   aliases: str, description: str, created_by: str, now: str) -> None:
    """Add a webhook (enabled)."""
    db.execute("INSERT INTO webhooks(webhook_id, network_id, url, secret, events, aliases, description, created_by,"
               " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
               (webhook_id, network_id, url, secret, events, aliases, description, created_by, now))


def get_webhook(db: Database, network_id: str, webhook_id: str) -> Row | None:
    """One webhook of a network, without its secret."""
    return db.query_one(f"SELECT {PUBLIC_COLUMNS} FROM webhooks WHERE network_id = ? AND webhook_id = ?",
                        (network_id, webhook_id))


def get_webhook_for_delivery(db: Database, webhook_id: str) -> Row | None:
    """One webhook with its secret (the delivery worker signs with it)."""
    return db.query_one(f"SELECT {PUBLIC_COLUMNS}, secret FROM webhooks WHERE webhook_id = ?", (webhook_id,))


def list_webhooks(db: Database, network_id: str) -> list[Row]:
    """A network's webhooks, oldest first, without their secrets."""
    return db.query(f"SELECT {PUBLIC_COLUMNS} FROM webhooks WHERE network_id = ? ORDER BY created_at, webhook_id",
                    (network_id,))


def count_webhooks(db: Database, network_id: str) -> int:
    """How many webhooks a network has."""
    row = db.query_one("SELECT count(*) AS n FROM webhooks WHERE network_id = ?", (network_id,))
    return int(row["n"]) if row else 0


def enabled_filters(db: Database) -> list[Row]:
    """Every enabled webhook's id, network and filter (the outbox's in-memory index is made from them)."""
    return db.query("SELECT webhook_id, network_id, events, aliases FROM webhooks WHERE enabled = 1", ())


def update_webhook(db: Database, webhook_id: str, url: str, events: str, aliases: str, description: str,
                   enabled: int) -> None:
    """Change a webhook's target, filter, description or enabled state (enabling clears the failure record)."""
    db.execute("UPDATE webhooks SET url = ?, events = ?, aliases = ?, description = ?, enabled = ?,"
               " disabled_reason = CASE WHEN ? = 1 THEN NULL ELSE disabled_reason END,"
               " failing_since_ts = CASE WHEN ? = 1 THEN NULL ELSE failing_since_ts END WHERE webhook_id = ?",
               (url, events, aliases, description, enabled, enabled, enabled, webhook_id))


def delete_webhook(db: Database, webhook_id: str) -> None:
    """Remove a webhook and (cascade) its deliveries."""
    db.execute("DELETE FROM webhooks WHERE webhook_id = ?", (webhook_id,))


def set_failing_since(db: Database, webhook_id: str, since: float | None) -> None:
    """Record when a webhook started failing (None: it succeeds again)."""
    db.execute("UPDATE webhooks SET failing_since_ts = ? WHERE webhook_id = ?", (since, webhook_id))


def disable_webhook(db: Database, webhook_id: str, reason: str) -> None:
    """Disable a webhook, saying why."""
    db.execute("UPDATE webhooks SET enabled = 0, disabled_reason = ? WHERE webhook_id = ?", (reason, webhook_id))


def insert_delivery(db: Database, webhook_id: str, event_id: int, event: str, alias: str, payload: str,
                    now: str) -> None:
    """Queue one event for one webhook (the outbox row; inside the event's own transaction)."""
    db.execute("INSERT INTO webhook_deliveries(webhook_id, event_id, event, alias, payload, created_at, updated_at)"
               " VALUES (?, ?, ?, ?, ?, ?, ?)", (webhook_id, event_id, event, alias, payload, now, now))


def next_pending(db: Database, webhook_id: str) -> Row | None:
    """A webhook's oldest undelivered event (deliveries go in order, one at a time), with its payload."""
    return db.query_one(f"SELECT {DELIVERY_COLUMNS}, payload FROM webhook_deliveries"
                        " WHERE webhook_id = ? AND status = 'pending' ORDER BY delivery_id LIMIT 1", (webhook_id,))


def webhooks_with_pending(db: Database) -> list[str]:
    """Enabled webhooks that have undelivered events (the worker starts a sender for each after a restart)."""
    rows = db.query("SELECT w.webhook_id FROM webhooks w WHERE w.enabled = 1 AND EXISTS (SELECT 1 FROM"
                    " webhook_deliveries d WHERE d.webhook_id = w.webhook_id AND d.status = 'pending')", ())
    return [r["webhook_id"] for r in rows]


def mark_delivered(db: Database, delivery_id: int, status_code: int, now: str) -> None:
    """A delivery the receiver accepted (2xx)."""
    db.execute("UPDATE webhook_deliveries SET status = 'delivered', attempts = attempts + 1, last_status = ?,"
               " last_error = NULL, updated_at = ? WHERE delivery_id = ?", (status_code, now, delivery_id))


def mark_attempt_failed(db: Database, delivery_id: int, status_code: int | None, error: str, next_ts: float,
                        now: str) -> None:
    """A failed attempt: counted, its status code or error kept, the next attempt scheduled."""
    db.execute("UPDATE webhook_deliveries SET attempts = attempts + 1, last_status = ?, last_error = ?,"
               " next_attempt_ts = ?, updated_at = ? WHERE delivery_id = ?",
               (status_code, error, next_ts, now, delivery_id))


def give_up_pending(db: Database, webhook_id: str, now: str) -> int:
    """Mark a disabled webhook's undelivered events failed (they can still be redelivered by hand)."""
    return db.execute("UPDATE webhook_deliveries SET status = 'failed', updated_at = ? WHERE webhook_id = ?"
                      " AND status = 'pending'", (now, webhook_id))


def requeue_delivery(db: Database, webhook_id: str, delivery_id: int, now: str) -> int:
    """Send one delivery again (manual redelivery): pending, due now. Returns rows changed (0: unknown id)."""
    return db.execute("UPDATE webhook_deliveries SET status = 'pending', next_attempt_ts = 0, updated_at = ?"
                      " WHERE webhook_id = ? AND delivery_id = ?", (now, webhook_id, delivery_id))


def list_deliveries(db: Database, webhook_id: str, before: int | None, limit: int) -> list[Row]:
    """A webhook's delivery log, newest first (`before`: a delivery id to page from)."""
    return db.query(f"SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE webhook_id = ? AND delivery_id < ?"
                    " ORDER BY delivery_id DESC LIMIT ?", (webhook_id, before or 2**62, limit))


def delete_settled_before(db: Database, cutoff: str, limit: int) -> int:
    """Drop up to `limit` delivered or failed deliveries last updated before `cutoff` (the log's retention)."""
    return db.execute("DELETE FROM webhook_deliveries WHERE delivery_id IN (SELECT delivery_id FROM"
                      " webhook_deliveries WHERE status != 'pending' AND updated_at < ? ORDER BY delivery_id LIMIT ?)",
                      (cutoff, limit))
