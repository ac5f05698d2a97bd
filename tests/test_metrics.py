"""GET /metrics (commhub_lib/metrics.py, api/metrics.py): scraped and parsed with prometheus_client's own parser; the
numbers move as traffic flows; who may scrape is the `metrics` setting."""

from __future__ import annotations

import argparse
import gc
import socket
import time
from pathlib import Path

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from commhub_lib.config import add_arguments, load_settings
from commhub_lib.runtime.server import ServerHandle
from tests.conftest import make_settings, own_server, start_server, tool, tool_error
from tests.test_sse import sse, team
from tests.test_wake_mcp import _headers, _initialize

WAIT = 10.0


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition, by (sample name, labels), parsed by prometheus_client.parser."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


async def scrape(client: httpx.AsyncClient, **headers: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """GET /metrics, which must answer 200 in the Prometheus text format; its samples."""
    r = await client.get("/metrics", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return samples(r.text)


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    """One sample's value (0 when the series does not exist yet)."""
    return found.get((name, frozenset(labels.items())), 0.0)


async def until(client: httpx.AsyncClient, check, what: str) -> dict:
    """Scrape until `check(samples)` holds (a deadline, no fixed sleep)."""
    with trio.move_on_after(WAIT):
        while True:
            found = await scrape(client)
            if check(found):
                return found
            await trio.sleep(0.02)
    raise AssertionError(f"never: {what}")


async def test_metrics_are_off_by_default_and_count_nothing(client: httpx.AsyncClient, server: ServerHandle) -> None:
    r = await client.get("/metrics")
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    assert server.hub.metrics is None


async def test_requests_by_route_and_status_with_latency(tmp_path: Path) -> None:
    async with own_server(tmp_path, "m", metrics="loopback") as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            before = await scrape(client)
            for _ in range(3):
                assert (await client.get("/health")).status_code == 200
            assert (await client.get("/api/tasks/t_nosuch")).status_code == 401
            assert (await client.get("/no/such/path")).status_code == 404
            after = await scrape(client)
    counted = "commhub_http_requests_total"
    assert value(after, counted, route="health", status="200") - value(before, counted, route="health",
                                                                        status="200") == 3
    # The route table's endpoint name, never the raw path (an id per series would grow without end).
    assert value(after, counted, route="data.get_task", status="401") == 1
    assert value(after, counted, route="unmatched", status="404") == 1
    assert not any("t_nosuch" in str(labels) or "/no/such" in str(labels) for _, labels in after)
    # The first scrape itself was counted once answered.
    assert value(after, counted, route="metrics.scrape", status="200") >= 1
    hist = "commhub_http_request_duration_seconds"
    assert value(after, hist + "_count", route="health") == value(before, hist + "_count", route="health") + 3
    assert value(after, hist + "_bucket", route="health", le="+Inf") == value(after, hist + "_count", route="health")
    assert value(after, hist + "_sum", route="health") > 0


async def test_tool_calls_streams_events_and_tasks_move_with_traffic(tmp_path: Path) -> None:
    async with own_server(tmp_path, "m", metrics="loopback") as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            t = await team(client)
            start = await scrape(client)
            assert value(start, "commhub_mcp_tool_calls_total", tool="report_status", outcome="ok") == 2
            assert value(start, "commhub_streams_open", kind="events") == 0
            assert value(start, "commhub_tasks", status="delivered") == 0
            calls = value(start, "commhub_http_requests_total", route="mcp.post_mcp", status="200")

            await tool_error(client, t.boss, "send_task", {"to": "nobody-here", "content": "x"})
            async with sse(client, "worker", t.worker) as frames:
                opened = await scrape(client)
                assert value(opened, "commhub_streams_open", kind="events") == 1
                task = await tool(client, t.boss, "send_task", {"to": "worker", "content": "build it"})
                assert (await frames.event())["event"] == "new_task"
                live = await scrape(client)
            closed = await until(client, lambda s: value(s, "commhub_streams_open", kind="events") == 0,
                                 "the closed stream is no longer counted")
            # A resume from 0 replays what the stream had been pushed.
            async with sse(client, "worker", t.worker, last_event_id=0) as frames:
                assert (await frames.event())["event"] == "new_task"
            replayed = await scrape(client)
            await tool(client, t.worker, "send_reply", {"task_id": task["task_id"], "content": "done",
                                                          "status": "done"})
            finished = await scrape(client)

    tool_calls = "commhub_mcp_tool_calls_total"
    assert value(live, tool_calls, tool="send_task", outcome="error") == 1
    assert value(live, tool_calls, tool="send_task", outcome="ok") == 1
    assert value(live, "commhub_http_requests_total", route="mcp.post_mcp", status="200") == calls + 2
    assert value(live, "commhub_http_requests_total", route="sse.stream", status="200") == 1
    assert value(live, "commhub_events_pushed_total") >= value(opened, "commhub_events_pushed_total") + 1
    assert value(live, "commhub_tasks", status="delivered") == 1
    assert value(closed, "commhub_streams_open", kind="events") == 0
    assert value(replayed, "commhub_events_replayed_total") >= value(closed, "commhub_events_replayed_total") + 1
    assert value(finished, "commhub_tasks", status="delivered") == 0
    assert value(finished, "commhub_tasks", status="replied") == 1
    assert value(finished, tool_calls, tool="send_reply", outcome="ok") == 1
    assert value(finished, "commhub_database_bytes") > 0
    assert ("commhub_database_wal_bytes", frozenset()) in finished


async def test_network_and_mcp_streams_are_counted_by_kind(tmp_path: Path) -> None:
    async with own_server(tmp_path, "m", metrics="loopback") as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            t = await team(client)
            params = {"token": t.account.token, "network_id": t.account.network_id}
            async with client.stream("GET", "/events", params=params) as response:
                assert response.status_code == 200
                await until(client, lambda s: value(s, "commhub_streams_open", kind="network") == 1,
                            "the network stream is counted")
            await until(client, lambda s: value(s, "commhub_streams_open", kind="network") == 0,
                        "the closed network stream is not")


async def test_mcp_push_streams_are_counted_as_mcp(tmp_path: Path) -> None:
    async with own_server(tmp_path, "m", metrics="loopback") as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            t = await team(client)
            sid = await _initialize(client, t.worker)
            async with client.stream("GET", "/mcp", headers=_headers(t.worker, sid)) as response:
                assert response.status_code == 200
                found = await until(client, lambda s: value(s, "commhub_streams_open", kind="mcp") == 1,
                                    "the GET /mcp stream is counted")
            await until(client, lambda s: value(s, "commhub_streams_open", kind="mcp") == 0,
                        "the closed GET /mcp stream is not")
    assert value(found, "commhub_streams_open", kind="events") == 0
    assert value(found, "commhub_http_requests_total", route="mcp.get_mcp", status="200") == 1


async def test_stalls_and_gc_pauses_are_counted(tmp_path: Path) -> None:
    async with own_server(tmp_path, "m", metrics="loopback", stall_log_ms=50) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            before = await scrape(client)
            time.sleep(0.2)  # noqa: ASYNC251 (hold the event loop: the server runs in this process; a stall, on purpose)
            gc.collect()
            await until(client, lambda s: value(s, "commhub_event_loop_stall_seconds_count")
                        > value(before, "commhub_event_loop_stall_seconds_count"), "the stall is counted")
            after = await scrape(client)
    assert value(after, "commhub_gc_pause_seconds_count", generation="2") > value(
        before, "commhub_gc_pause_seconds_count", generation="2")
    assert value(after, "commhub_event_loop_stall_seconds_sum") >= 0.1


async def test_token_mode_needs_the_metrics_token(tmp_path: Path) -> None:
    async with own_server(tmp_path, "m", metrics="token", metrics_token="s3cret-scraper") as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            missing = await client.get("/metrics")
            wrong = await client.get("/metrics", headers={"Authorization": "Bearer nope"})
            found = await scrape(client, Authorization="Bearer s3cret-scraper")
    assert missing.status_code == 401 and wrong.status_code == 401
    assert wrong.json()["error"] == "invalid_token"
    assert ("commhub_streams_open", frozenset({("kind", "mcp")})) in found


def _outside_address() -> str | None:
    """An address of this machine that is not loopback (None if it has none)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: nothing is sent, the kernel picks the source address
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


async def test_loopback_mode_refuses_other_clients(tmp_path: Path) -> None:
    address = _outside_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address")
    async with own_server(tmp_path, "m", metrics="loopback", host="0.0.0.0") as server:
        async with httpx.AsyncClient(base_url=f"http://{address}:{server.port}", timeout=30) as outside:
            refused = await outside.get("/metrics")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=30) as local:
            await scrape(local)
    assert refused.status_code == 403 and refused.json()["error"] == "forbidden"


async def test_several_servers_keep_their_own_registries(tmp_path: Path, nursery: trio.Nursery) -> None:
    one = await start_server(nursery, make_settings(tmp_path, db=str(tmp_path / "a.db"), metrics="loopback"))
    two = await start_server(nursery, make_settings(tmp_path, db=str(tmp_path / "b.db"), metrics="loopback"))
    async with httpx.AsyncClient(base_url=one.url) as a, httpx.AsyncClient(base_url=two.url) as b:
        for _ in range(2):
            await a.get("/health")
        found_a, found_b = await scrape(a), await scrape(b)
    assert value(found_a, "commhub_http_requests_total", route="health", status="200") == 2
    assert value(found_b, "commhub_http_requests_total", route="health", status="200") == 0
    one.shutdown()
    two.shutdown()


def test_settings_refuse_an_unknown_mode_and_token_mode_without_a_token() -> None:
    with pytest.raises(ValueError, match="metrics"):
        load_settings(env={"COMMHUB_METRICS": "public"})
    with pytest.raises(ValueError, match="COMMHUB_METRICS_TOKEN"):
        load_settings(env={"COMMHUB_METRICS": "token"})
    assert load_settings(env={"COMMHUB_METRICS": "token", "COMMHUB_METRICS_TOKEN": "x"}).metrics == "token"
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    flags = {flag for action in parser._actions for flag in action.option_strings}
    assert "--metrics" in flags and "--metrics-token" not in flags  # a secret: env only, never seen in `ps`
