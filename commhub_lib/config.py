"""Settings: command-line flags > COMMHUB_* environment variables > defaults, loaded once."""

from __future__ import annotations

import argparse
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
METRICS_MODES = ("off", "loopback", "token")
WEBHOOK_TARGETS = ("public", "loopback", "private")
SCHEDULE_AGENTS = ("admin", "member", "off")


@dataclass(frozen=True)
class Settings:
    """Every server setting. Each field is a flag `--field-name` and a variable `COMMHUB_FIELD_NAME`."""

    host: str = "127.0.0.1"
    port: int = 9200
    db: str = "./commhub.db"
    auth_token: str = ""
    log_level: str = "info"
    heartbeat_seconds: float = 15.0
    presence_timeout_seconds: float = 90.0
    max_body_bytes: int = 1024 * 1024
    register_rate_per_minute: int = 30
    login_rate_per_minute: int = 10
    token_rate_per_minute: int = 12000
    sse_buffer: int = 256
    allowed_origins: str = ""
    sweep_seconds: float = 5.0
    event_retention_days: float = 30.0
    # Resilience, limits and logs (failures of the disk and the lock, expensive work, slow clients, log format)
    write_lock_wait_seconds: float = 5.0
    password_rate_per_minute: int = 5
    argon2_concurrency: int = 2
    header_timeout_seconds: float = 10.0
    body_timeout_seconds: float = 30.0
    log_format: str = "text"
    stall_log_ms: float = 50.0
    # Storage (retention of inbox items, tasks and audit entries; 0 = keep for ever)
    message_retention_days: float = 0.0
    task_retention_days: float = 0.0
    audit_retention_days: float = 0.0
    # --- identity and tokens (agents)
    login_token_days: float = 30.0
    # Streams (wake): caps on open SSE streams (/events and GET /mcp) so one token or host cannot hold them all.
    max_streams_per_token: int = 32
    max_streams_per_ip: int = 512
    # Bounds on input and quotas (docs/limits.md); for the max_* quotas 0 = no limit.
    mcp_max_batch: int = 50
    mcp_max_response_bytes: int = 4 * 1024 * 1024
    mcp_sessions_per_token: int = 100
    mcp_max_sessions: int = 20_000
    max_aliases_per_network: int = 1000
    max_nodes_per_network: int = 1000
    max_tokens_per_user: int = 200
    max_networks_per_user: int = 50
    max_invites_per_network: int = 100
    max_logins_per_user: int = 50
    # storage quotas (h17-storage): bytes one network may keep, bytes one token may send per minute (0 = off)
    max_network_bytes: int = 1024 * 1024 * 1024
    send_bytes_per_minute: int = 16 * 1024 * 1024
    # runner support (run-server): how long the permission_prompt tool waits for a person's answer
    approval_wait_seconds: float = 600.0
    # Protocol: how clients are told where the hub is (the 401 challenge, the OAuth resource metadata).
    public_url: str = ""
    # HTTP guards (h17-http): DNS rebinding (the Host names answered) and connections still sending their headers.
    allowed_hosts: str = ""
    max_incomplete_headers_per_ip: int = 64
    # Metrics (m20): GET /metrics in the Prometheus text format, and who may scrape it (docs/metrics.md).
    metrics: str = "off"
    metrics_token: str = ""
    # Webhooks (w20, docs/webhooks.md): which targets are allowed, retries, disabling, limits.
    webhook_targets: str = "public"
    webhook_retry_base_seconds: float = 10.0
    webhook_retry_max_seconds: float = 3600.0
    webhook_disable_after_seconds: float = 86400.0
    webhook_timeout_seconds: float = 10.0
    webhook_concurrency: int = 16
    webhook_max_per_network: int = 20
    webhook_ca_file: str = ""
    # Loop guard (c19b, docs/loop-guard.md): the same content again from an agent to an agent is not delivered
    # twice within this window, and one agent sends another at most this many tasks and messages a minute.
    duplicate_window_seconds: float = 300.0
    pair_rate_per_minute: int = 30
    # A2A server (20.3, docs/a2a.md): how long a blocking SendMessage / message/send waits for the task to end or
    # ask a question before it answers with the task as it stands.
    a2a_blocking_seconds: float = 60.0
    # Schedules (c19c, docs/schedules.md): the shortest `every`, which agents may schedule, how many per network.
    schedule_min_interval_seconds: float = 10.0
    schedule_agents: str = "admin"
    max_schedules_per_network: int = 200
    # "Needs you" (needs, docs/dashboard.md#needs-you): when an open task counts as stuck on the dashboard's Overview.
    stuck_delivered_seconds: float = 300.0
    stuck_running_seconds: float = 1800.0
    # Attachments (a19, docs/attachments.md): the largest file, the largest one carried inline (base64) in an MCP
    # call, and how long an upload never sent with anything is kept.
    max_attachment_bytes: int = 10 * 1024 * 1024
    max_inline_attachment_bytes: int = 256 * 1024
    attachment_unsent_hours: float = 24.0
    # A2A client (20.4, docs/a2a-client.md): aliases bound to external A2A agents; where they may be, retries,
    # how often a forwarded task is looked at.
    a2a_client_targets: str = "public"
    a2a_client_timeout_seconds: float = 30.0
    a2a_client_retry_base_seconds: float = 5.0
    a2a_client_retry_max_seconds: float = 600.0
    a2a_client_give_up_seconds: float = 86400.0
    a2a_client_poll_seconds: float = 1.0
    a2a_client_poll_max_seconds: float = 30.0
    # PostgreSQL (pg-store, docs/postgresql.md): a postgresql:// URL runs the hub on PostgreSQL instead of `db`.
    database_url: str = ""
    # PostgreSQL (pg-offloop, docs/postgresql.md): connections in the pool, as many service operations at once.
    database_pool_size: int = 8
    # Several processes on one PostgreSQL (pg-shared, docs/postgresql.md): how long a process's streams keep their
    # aliases online for the other processes after it last said so (it says so every third of this).
    stream_presence_ttl_seconds: float = 15.0


# What each setting means, used for --help and docs/settings.md (python -m commhub_lib.docs_gen; tested current).
HELP: dict[str, str] = {
    "host": "address to bind",
    "port": "TCP port to listen on (0 picks a free one)",
    "db": "path of the SQLite database file",
    "auth_token": "when set, register and login require `Authorization: Bearer <this>` (env only)",
    "log_level": "debug, info, warning or error",
    "heartbeat_seconds": "seconds between SSE heartbeat events",
    "presence_timeout_seconds": "a session with no open stream and no tool call for this long is offline "
                                "(initialize, tools/list and ping do not count: docs/presence.md)",
    "max_body_bytes": "largest request body accepted (413 above)",
    "register_rate_per_minute": "registrations per minute per client IP (0 = no limit)",
    "login_rate_per_minute": "logins per minute per client IP (0 = no limit)",
    "token_rate_per_minute": "authenticated requests per minute per token (0 = no limit)",
    "sse_buffer": "events buffered per SSE stream before a slow reader is disconnected",
    "allowed_origins": "comma-separated extra browser Origins allowed on every route (the hub's own origin and "
                       "loopback ones always are; others get 403 origin_not_allowed)",
    "sweep_seconds": "how often the presence sweeper runs",
    "event_retention_days": "SSE events older than this are pruned (replay reaches back this far; inboxes keep all)",
    "write_lock_wait_seconds": "how long a write waits (without stalling other requests) for a database lock held by "
                               "another process before answering 503 database_busy",
    "password_rate_per_minute": "password changes per minute per client IP and per user (0 = no limit)",
    "argon2_concurrency": "password hashes/verifications run at once (each uses 64 MiB); more wait their turn",
    "header_timeout_seconds": "a connection that has not sent complete request headers (or sits idle between "
                              "requests) for this long is closed",
    "body_timeout_seconds": "a request body not fully received within this many seconds is refused (408)",
    "log_format": "text (one line per record) or json (one JSON object per line, for log shippers)",
    "stall_log_ms": "log a warning when the event loop is held this many ms or more, saying whether by busy code or "
                    "by the process being held off the CPU (0 = off)",
    "message_retention_days": "read inbox items older than this are deleted hourly (0 = keep; unread ones stay)",
    "task_retention_days": "tasks that ended more than this many days ago are deleted hourly with their event log "
                           "and completion (0 = keep; open tasks stay)",
    "audit_retention_days": "audit entries older than this are deleted hourly (0 = keep)",
    "login_token_days": "login (user) tokens expire this many days after login (0 = never)",
    "max_streams_per_token": "open event streams (/events, GET /mcp) one token may hold; 429 above (0 = no limit)",
    "max_streams_per_ip": "open event streams one client address may hold; 429 above (0 = no limit)",
    "mcp_max_batch": "most messages in one JSON-RPC batch (batches exist only before MCP 2025-06-18; 1 = no batches)",
    "mcp_max_response_bytes": "a batch's answers stop at this size; the calls after it are answered with an error",
    "mcp_sessions_per_token": "MCP sessions per token; at the cap a new one replaces the least recently used idle one, "
                              "or is refused while all are live",
    "mcp_max_sessions": "MCP sessions kept in all; past it the token holding the most loses its oldest",
    "max_aliases_per_network": "aliases (agent sessions) a network may have (0 = no limit)",
    "max_nodes_per_network": "nodes (machines) a network may record (0 = no limit)",
    "max_tokens_per_user": "live network (API) tokens per user (0 = no limit)",
    "max_networks_per_user": "networks a user may own (0 = no limit)",
    "max_invites_per_network": "open (unused, unexpired) invites per network (0 = no limit)",
    "max_logins_per_user": "live login tokens per user; a new login revokes the oldest (0 = no limit)",
    "max_network_bytes": "bytes of texts and events one network may keep (counted as stored, freed by retention); "
                         "a send past it answers 409 quota_exceeded (0 = no limit)",
    "send_bytes_per_minute": "bytes of text one token may send per minute (messages, tasks, replies, broadcasts "
                             "counted once); 429 with Retry-After above (0 = no limit)",
    "approval_wait_seconds": "how long the MCP tool permission_prompt waits for a person's answer before it denies",
    "public_url": "the hub's URL as clients reach it (e.g. https://hub.example.com behind a proxy), named in "
                  "401 challenges and the OAuth resource metadata; empty = the request's own scheme and Host",
    "allowed_hosts": "comma-separated extra Host names every route answers (DNS rebinding guard; loopback names, the "
                     "bind address and public_url's host are always allowed; .example.com = a domain and its "
                     "subdomains; * = any); others get 421 host_not_allowed",
    "max_incomplete_headers_per_ip": "connections one client address may hold open while still sending request "
                                     "headers; the next is answered 429 and closed (0 = no limit)",
    "metrics": "GET /metrics (Prometheus text format, docs/metrics.md): off (404, nothing counted), loopback (only "
               "clients on this machine) or token (`Authorization: Bearer <metrics_token>`)",
    "metrics_token": "the bearer token a scraper sends when metrics = token (env only)",
    "webhook_targets": "where webhooks may POST: public (https to public addresses only), loopback (also http:// "
                       "to 127.0.0.1/::1, for a receiver on this machine) or private (also private, link-local "
                       "and metadata addresses, over http or https)",
    "webhook_retry_base_seconds": "a failed webhook delivery is retried after this many seconds, doubled per "
                                  "further failure up to webhook_retry_max_seconds",
    "webhook_retry_max_seconds": "the longest pause between two attempts of one webhook delivery",
    "webhook_disable_after_seconds": "a webhook whose deliveries have failed for this long is disabled and its "
                                     "owner notified (event webhook_disabled)",
    "webhook_timeout_seconds": "how long one webhook POST may take (connect, send, answer) before it counts as "
                               "failed",
    "webhook_concurrency": "webhook POSTs in flight at once across all webhooks (each webhook has one at a time)",
    "webhook_max_per_network": "webhooks one network may have",
    "webhook_ca_file": "a PEM file of extra CA certificates that https webhook receivers may be signed by (a private "
                       "CA), trusted beside the public ones; empty = the public ones only",
    "duplicate_window_seconds": "a task or message from an agent with the same content as one it sent the same "
                                "recipient within this many seconds is not delivered again: the answer names the "
                                "original with duplicate: true (0 = off)",
    "pair_rate_per_minute": "tasks and messages one agent may send one other agent per minute; above it 429 "
                            "rate_limited and a loop_broken event for people (0 = no limit)",
    "a2a_blocking_seconds": "how long a blocking A2A SendMessage (message/send) waits for its task to finish or "
                            "ask a question before it answers with the task as it stands (then GetTask or "
                            "SubscribeToTask)",
    "schedule_min_interval_seconds": "the shortest `every` a schedule may have, in seconds (docs/schedules.md)",
    "schedule_agents": "which agents (network tokens) may create schedules: admin (agents whose token an owner/admin "
                       "of the network created), member (any agent of the network) or off (people only)",
    "max_schedules_per_network": "schedules one network may have; above it 409 schedule_limit_reached (0 = no limit)",
    "stuck_delivered_seconds": "a task still waiting to be picked up this many seconds after it was sent, by an agent "
                               "that is offline, is shown as stuck on the dashboard's Overview (GET /api/needs; 0 = "
                               "off)",
    "stuck_running_seconds": "a running task with nothing new (no progress, question, answer or flag) for this many "
                             "seconds is shown as stuck on the dashboard's Overview (GET /api/needs; 0 = off)",
    "max_attachment_bytes": "largest file one attachment may hold (POST /api/attachments answers 413 above); it "
                            "also caps that route's request body (plus room for a multipart envelope)",
    "max_inline_attachment_bytes": "largest file a send may carry inline as base64 (MCP `attachments: [{filename, "
                                   "content_type, data_base64}]`); larger ones go through POST /api/attachments",
    "attachment_unsent_hours": "an upload never sent with a task, message or reply is deleted after this many "
                               "hours (by the hourly retention job)",
    "a2a_client_targets": "where an alias bound to an external A2A agent may point: public, loopback or private "
                          "(as webhook_targets)",
    "a2a_client_timeout_seconds": "how long one call to an external A2A agent may take before it counts as failed",
    "a2a_client_retry_base_seconds": "a failed forward to an A2A agent is retried after this many seconds, doubled "
                                     "per further failure up to a2a_client_retry_max_seconds",
    "a2a_client_retry_max_seconds": "the longest pause between two attempts of one forward to an A2A agent",
    "a2a_client_give_up_seconds": "a forward that has failed for this long is given up: its task fails",
    "a2a_client_poll_seconds": "a forwarded task's remote state is first looked at after this many seconds, the "
                               "pause doubling while nothing changes",
    "a2a_client_poll_max_seconds": "the longest pause between two looks at a forwarded task's remote state",
    "database_url": "a postgresql:// URL: run on that PostgreSQL database instead of the SQLite file `db` (needs the "
                    "postgres extra; also --database; docs/postgresql.md)",
    "database_pool_size": "PostgreSQL only: connections in the pool, as many requests' database work at once in "
                          "worker threads off the event loop (docs/postgresql.md)",
    "stream_presence_ttl_seconds": "PostgreSQL with several hub processes: the streams a process holds keep their "
                                   "aliases online for the other processes until this many seconds after it last "
                                   "refreshed them (every third of this); a killed process's agents are shown "
                                   "offline at most this long after (docs/postgresql.md)",
}

# Secrets are not taken from the command line, where `ps` would show them.
ENV_ONLY = {"auth_token", "metrics_token"}
# Other spellings of a setting's flag.
FLAG_ALIASES = {"database_url": ("--database",)}


def env_name(field: str) -> str:
    """The environment variable that backs a setting."""
    return "COMMHUB_" + field.upper()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one `--flag` per setting to an argparse parser (defaults left as None = not given)."""
    for f in fields(Settings):
        if f.name in ENV_ONLY:
            continue
        flag = "--" + f.name.replace("_", "-")
        parser.add_argument(flag, *FLAG_ALIASES.get(f.name, ()), dest=f.name, default=None,
                            help=f"{HELP[f.name]} (env {env_name(f.name)}, default {f.default!r})")


def _convert(name: str, raw: Any) -> Any:
    kind = type(getattr(Settings, name))
    try:
        value = kind(raw)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"setting {name}: {raw!r} is not a valid {kind.__name__}") from exc
    if kind in (int, float) and value < 0:
        raise ValueError(f"setting {name}: must not be negative")
    return value


def load_settings(args: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from parsed flags (None = not given), then COMMHUB_* variables, then defaults."""
    args = args or {}
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for f in fields(Settings):
        if args.get(f.name) is not None:
            values[f.name] = _convert(f.name, args[f.name])
        elif env.get(env_name(f.name)) not in (None, ""):
            values[f.name] = _convert(f.name, env[env_name(f.name)])
    settings = Settings(**values)
    if settings.log_level.lower() not in LOG_LEVELS:
        raise ValueError(f"setting log_level: must be one of {', '.join(LOG_LEVELS)}")
    if settings.log_format not in LOG_FORMATS:
        raise ValueError(f"setting log_format: must be one of {', '.join(LOG_FORMATS)}")
    if settings.argon2_concurrency < 1:
        raise ValueError("setting argon2_concurrency: must be at least 1")
    if settings.header_timeout_seconds <= 0 or settings.body_timeout_seconds <= 0:
        raise ValueError("header_timeout_seconds and body_timeout_seconds must be positive")
    if settings.heartbeat_seconds <= 0 or settings.presence_timeout_seconds <= 0:
        raise ValueError("heartbeat_seconds and presence_timeout_seconds must be positive")
    if settings.metrics not in METRICS_MODES:
        raise ValueError(f"setting metrics: must be one of {', '.join(METRICS_MODES)}")
    if settings.metrics == "token" and not settings.metrics_token:
        raise ValueError("setting metrics = token needs COMMHUB_METRICS_TOKEN (the scraper's bearer token)")
    for name in ("mcp_max_batch", "mcp_max_response_bytes", "mcp_sessions_per_token", "mcp_max_sessions"):
        if getattr(settings, name) < 1:
            raise ValueError(f"setting {name}: must be at least 1")
    if settings.webhook_targets not in WEBHOOK_TARGETS:
        raise ValueError(f"setting webhook_targets: must be one of {', '.join(WEBHOOK_TARGETS)}")
    if settings.a2a_client_targets not in WEBHOOK_TARGETS:
        raise ValueError(f"setting a2a_client_targets: must be one of {', '.join(WEBHOOK_TARGETS)}")
    if settings.webhook_concurrency < 1:
        raise ValueError("setting webhook_concurrency: must be at least 1")
    if settings.database_url and not settings.database_url.startswith(("postgresql://", "postgres://")):
        raise ValueError("setting database_url: must be a postgresql:// URL (a SQLite file is `db`)")
    if settings.database_pool_size < 1:
        raise ValueError("setting database_pool_size: must be at least 1")
    if settings.schedule_agents not in SCHEDULE_AGENTS:
        raise ValueError(f"setting schedule_agents: must be one of {', '.join(SCHEDULE_AGENTS)}")
    if settings.schedule_min_interval_seconds <= 0:
        raise ValueError("setting schedule_min_interval_seconds: must be positive")
    if settings.webhook_ca_file:
        _check_ca_file(settings.webhook_ca_file)
    return settings


def _check_ca_file(path: str) -> None:
    """webhook_ca_file must be a readable PEM file holding a certificate: found out at start, named as the setting
    (loaded only when the webhook job starts, a bad one stopped the server as "cannot listen on ...")."""
    if not os.access(path, os.R_OK) or os.path.isdir(path):
        raise ValueError(f"setting webhook_ca_file: cannot read {path}")
    try:
        ssl.create_default_context().load_verify_locations(cafile=path)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise ValueError(f"setting webhook_ca_file: {path} holds no PEM certificate ({exc})") from None
