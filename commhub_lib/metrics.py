"""The hub's Prometheus metrics (GET /metrics, docs/metrics.md): one CollectorRegistry per running hub.

The exposition is prometheus_client's own (generate_latest); nothing here formats the text. What is counted on a
hot path is counted cheaply: requests and tool calls through the library's children cached per label set (no
label lookup per request); open streams and the events they write are plain integers the broker keeps anyway
(broker.Broker.open_by_kind, Broker.tally), read only at scrape time, like the task counts (one query of the
trigger-kept `task_counts` table) and the database's file sizes. Per app, never the global registry: a test process
runs several servers.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .store import tasks as task_store
from .vocabulary import DELIVERED, FAILED, TASK_STATUSES

if TYPE_CHECKING:
    from .broker import Broker
    from .db import Database

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
STREAM_KINDS = ("events", "network", "mcp", "listen", "a2a")
# Request latency buckets (seconds): a tool call is ~1 ms, a slow write waits up to write_lock_wait_seconds (5 s).
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Pauses (seconds): a young collection is well under 1 ms; a stall is logged from stall_log_ms (50 ms) up.
PAUSE_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class HubCollector(Collector):
    """What is read at scrape time: open streams by kind, events pushed and replayed, tasks by status, the
    database and WAL file sizes."""

    def __init__(self, broker: Broker, db: Database):
        self.broker = broker
        self.db = db

    def collect(self) -> Iterator[Metric]:
        """The metrics, computed now."""
        streams = GaugeMetricFamily("commhub_streams_open", "Event streams open now, by kind", labels=["kind"])
        for kind in STREAM_KINDS:
            streams.add_metric([kind], self.broker.open_by_kind.get(kind, 0))
        yield streams
        tally = self.broker.tally
        yield CounterMetricFamily("commhub_events_pushed", "Events written live to open streams", tally.pushed)
        yield CounterMetricFamily("commhub_events_replayed",
                                  "Events replayed from the database to streams resuming after Last-Event-ID",
                                  tally.replayed)
        tasks = GaugeMetricFamily("commhub_tasks", "Tasks kept, by status", labels=["status"])
        counts = task_store.task_counts_all(self.db)
        for status in TASK_STATUSES:
            tasks.add_metric([status], counts.get(status, 0))
        yield tasks
        yield GaugeMetricFamily("commhub_database_bytes", "Size of the SQLite database file",
                                _size(self.db.path))
        yield GaugeMetricFamily("commhub_database_wal_bytes", "Size of the database's -wal file",
                                _size(self.db.path + "-wal"))


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:  # no -wal file right after a truncating checkpoint, say
        return 0


class Metrics:
    """One hub's metrics and their registry: the HTTP pipeline, MCP tool calls, the stall job and the collector's
    own callback report here; `exposition()` is the scrape's answer."""

    def __init__(self, broker: Broker, db: Database):
        self.registry = CollectorRegistry()
        self.requests = Counter("commhub_http_requests", "HTTP requests answered, by route (the route table's "
                                "endpoint name) and status", ["route", "status"], registry=self.registry)
        self.latency = Histogram("commhub_http_request_duration_seconds", "Time to answer a request (a stream: to "
                                 "its opening), by route", ["route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.tool_calls = Counter("commhub_mcp_tool_calls", "MCP tool calls, by tool and outcome (ok or error)",
                                  ["tool", "outcome"], registry=self.registry)
        self.stalls = Histogram("commhub_event_loop_stall_seconds", "Event-loop stalls of stall_log_ms or more (how "
                                "late the loop ran a ready task)", buckets=PAUSE_BUCKETS, registry=self.registry)
        self.gc_pauses = Histogram("commhub_gc_pause_seconds", "Garbage-collector pauses, by generation",
                                   ["generation"], buckets=PAUSE_BUCKETS, registry=self.registry)
        self.webhook_attempts = Counter("commhub_webhook_deliveries", "Webhook POSTs made, by outcome (delivered: "
                                        "answered 2xx; failed: no answer, a timeout or another status, retried)",
                                        ["outcome"], registry=self.registry)
        self.registry.register(HubCollector(broker, db))
        # Children per label set, made once: .labels() takes a lock and builds a key on every call.
        self._request_children: dict[tuple[str, int], tuple[Any, Any]] = {}
        self._tool_children: dict[tuple[str, bool], Any] = {}
        self._gc_children = [self.gc_pauses.labels(str(g)) for g in range(3)]
        self._gc_started = 0.0
        gc.callbacks.append(self._on_gc)

    def observe_request(self, route: str, status: int, elapsed_ms: float) -> None:
        """Count one answered request and its latency (called from the one access line, http/access.py)."""
        key = (route, status)
        children = self._request_children.get(key)
        if children is None:
            children = self._request_children[key] = (self.requests.labels(route, str(status)),
                                                       self.latency.labels(route))
        children[0].inc()
        children[1].observe(elapsed_ms / 1000)

    def observe_tool_call(self, tool: str, failed: bool) -> None:
        """Count one MCP tool call (mcp/tools.call_tool)."""
        key = (tool, failed)
        child = self._tool_children.get(key)
        if child is None:
            child = self._tool_children[key] = self.tool_calls.labels(tool, "error" if failed else "ok")
        child.inc()

    def observe_webhook_attempt(self, delivered: bool) -> None:
        """Count one webhook POST (service/webhooks.py, after its outcome is stored)."""
        self.webhook_attempts.labels(DELIVERED if delivered else FAILED).inc()

    def observe_stall(self, late_ms: float) -> None:
        """Count one event-loop stall (runtime/stalls.py)."""
        self.stalls.observe(late_ms / 1000)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        # gc.callbacks is process-wide: every hub of a test process times every collection; that is its meaning.
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif self._gc_started:
            generation = info.get("generation", 2)
            self._gc_children[min(generation, 2)].observe(time.perf_counter() - self._gc_started)
            self._gc_started = 0.0

    def close(self) -> None:
        """Stop timing collections (the hub stopped)."""
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def exposition(self) -> bytes:
        """The Prometheus text exposition of every metric (prometheus_client.generate_latest)."""
        return generate_latest(self.registry)
