"""Webhooks (docs/webhooks.md) against a real local HTTP receiver (tests/webhook_receiver.py): the documented
signature recipe, retries in order until a failing receiver recovers, a hanging receiver that delays nothing
else, disabling after failing too long (with the owner's event), manual redelivery, the targets allowed, and a
kill -9 of a `serve` subprocess with undelivered events."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import ipaddress
import json
import signal
import ssl
import time
from pathlib import Path
from typing import Any

import apsw
import httpx
import pytest
import trio
import trustme

from commhub_lib import db as dbmod
from commhub_lib.runtime.server import ServerHandle
from commhub_lib.service import webhooks as webhooks_service
from commhub_lib.store import events as event_store
from commhub_lib.vocabulary import EVENTS, NEW_MESSAGE, NEW_TASK, WEBHOOK_DISABLED
from tests.cli_support import cli_env, run_cli
from tests.conftest import Account, create_token, own_server, register, tool
from tests.test_crash import serve
from tests.test_metrics import scrape, value
from tests.test_vocabulary import fits
from tests.webhook_receiver import Receiver, start_receiver

LOOPBACK = dict(webhook_targets="loopback", webhook_retry_base_seconds=0.05, webhook_retry_max_seconds=0.2)


def verify(secret: str, headers: dict[str, str], body: bytes, tolerance: float = 300) -> bool:
    """The recipe of docs/webhooks.md, as a receiver would write it."""
    timestamp = headers["x-commhub-timestamp"]
    expected = "sha256=" + hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    fresh = abs(time.time() - int(timestamp)) <= tolerance  # an old timestamp is a replay
    return fresh and hmac.compare_digest(expected, headers["x-commhub-signature"])


async def setup(client: httpx.AsyncClient) -> tuple[Account, str]:
    """An owner and an agent `worker` with a session (sends to it succeed)."""
    owner = await register(client)
    worker = await create_token(client, owner, name="w", alias="worker")
    await tool(client, worker, "report_status", {"alias": "worker"})
    return owner, worker


async def add_webhook(client: httpx.AsyncClient, owner: Account, url: str, **extra: Any) -> dict[str, Any]:
    r = await client.post(f"/api/networks/{owner.network_id}/webhooks", json={"url": url, **extra},
                          headers=owner.auth)
    assert r.status_code == 200, r.text
    return r.json()


async def send(client: httpx.AsyncClient, owner: Account, text: str) -> None:
    r = await client.post("/api/messages", json={"to": "worker", "content": text}, headers=owner.auth)
    assert r.status_code == 200, r.text


async def deliveries(client: httpx.AsyncClient, owner: Account, webhook_id: str) -> list[dict[str, Any]]:
    r = await client.get(f"/api/networks/{owner.network_id}/webhooks/{webhook_id}/deliveries",
                         headers=owner.auth, params={"limit": 500})
    assert r.status_code == 200, r.text
    return r.json()["deliveries"]


async def test_each_matching_event_arrives_signed_by_the_documented_recipe(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        receiver = await start_receiver(nursery)
        async with own_server(tmp_path, "sig", **LOOPBACK) as hub, \
                httpx.AsyncClient(base_url=hub.url, timeout=10) as client:
            owner, _ = await setup(client)
            hook = await add_webhook(client, owner, receiver.url, events=[NEW_MESSAGE])
            assert hook["secret"].startswith("whsec_") and hook["enabled"] is True
            listed = (await client.get(f"/api/networks/{owner.network_id}/webhooks", headers=owner.auth)).json()
            assert [w["webhook_id"] for w in listed["webhooks"]] == [hook["webhook_id"]]
            assert "secret" not in listed["webhooks"][0]  # shown once, at creation
            await send(client, owner, "hello")
            task = await client.post("/api/tasks", json={"to": "worker", "content": "t"}, headers=owner.auth)
            assert task.status_code == 200  # a new_task: not in the filter, never POSTed
            await receiver.wait_until(lambda: len(receiver.accepted_ids()) == 1)
            item = receiver.received[0]
            assert verify(hook["secret"], item.headers, item.body)
            assert not verify("whsec_other", item.headers, item.body)
            assert not verify(hook["secret"], item.headers, item.body.replace(b"hello", b"HELLO"))
            payload = item.payload
            rows = event_store.network_events_after(hub.hub.db, owner.network_id, 0, 100)
            stored = next(r for r in rows if r["event"] == NEW_MESSAGE)
            assert payload["id"] == stored["id"] and item.headers["x-commhub-event-id"] == str(stored["id"])
            assert payload["event"] == NEW_MESSAGE and payload["alias"] == "worker"
            assert payload["data"] == json.loads(stored["data"]) and payload["data"]["message"] == "hello"
            assert {r["event"] for r in rows} >= {NEW_TASK}
            log = await deliveries(client, owner, hook["webhook_id"])
            assert [(d["event"], d["status"], d["last_status"]) for d in log] == [(NEW_MESSAGE, "delivered", 204)]
            # The log keeps settled deliveries as long as the events (a cutoff in the future here: all of them go).
            hub.hub.settings = dataclasses.replace(hub.hub.settings, event_retention_days=-1)
            assert await webhooks_service.prune_log(hub.hub) == 1
            assert await deliveries(client, owner, hook["webhook_id"]) == []
        nursery.cancel_scope.cancel()


async def test_https_receivers_are_verified_against_the_public_cas_plus_webhook_ca_file(tmp_path: Path) -> None:
    """A receiver with a private CA's certificate: refused (certificate error in the log) until webhook_ca_file
    names that CA, then delivered over TLS with the same signature."""
    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_tls)
    ca_file = tmp_path / "private-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    async with trio.open_nursery() as nursery:
        receiver = await start_receiver(nursery, tls=server_tls)
        assert receiver.url.startswith("https://127.0.0.1:")
        async with own_server(tmp_path, "untrusted", **LOOPBACK) as hub, \
                httpx.AsyncClient(base_url=hub.url, timeout=10) as client:
            owner, _ = await setup(client)
            hook = await add_webhook(client, owner, receiver.url, events=[NEW_MESSAGE])
            await send(client, owner, "not over an unverified connection")
            with trio.fail_after(15):
                while not (log := await deliveries(client, owner, hook["webhook_id"])) or not log[0]["last_error"]:  # noqa: ASYNC110 (REST state)
                    await trio.sleep(0.02)  # polling the REST state, bounded by fail_after
            assert "CERTIFICATE_VERIFY_FAILED" in log[0]["last_error"] and receiver.received == []
        async with own_server(tmp_path, "trusted", webhook_ca_file=str(ca_file), **LOOPBACK) as hub, \
                httpx.AsyncClient(base_url=hub.url, timeout=10) as client:
            owner, _ = await setup(client)
            hook = await add_webhook(client, owner, receiver.url, events=[NEW_MESSAGE])
            await send(client, owner, "over TLS")
            await receiver.wait_until(lambda: len(receiver.accepted_ids()) == 1)
            item = receiver.received[0]
            assert item.payload["data"]["message"] == "over TLS" and verify(hook["secret"], item.headers, item.body)
            assert item.headers["host"] == f"127.0.0.1:{receiver.port}"
        nursery.cancel_scope.cancel()


async def test_a_failing_receiver_gets_every_event_in_order_once_it_recovers(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        receiver = await start_receiver(nursery, mode="fail")
        async with own_server(tmp_path, "retry", metrics="loopback", **LOOPBACK) as hub, \
                httpx.AsyncClient(base_url=hub.url, timeout=10) as client:
            owner, _ = await setup(client)
            hook = await add_webhook(client, owner, receiver.url, aliases=["worker"])
            for n in range(8):
                await send(client, owner, f"m{n}")
            await receiver.wait_until(lambda: len(receiver.received) >= 4)  # the first event, retried
            assert {item.payload["id"] for item in receiver.received} == {receiver.received[0].payload["id"]}
            receiver.mode = "ok"
            await receiver.wait_until(lambda: len(receiver.accepted_ids()) == 8)
            ids = receiver.accepted_ids()
            assert ids == sorted(ids)  # in order per webhook
            texts = [next(i for i in receiver.received if i.payload["id"] == n).payload["data"]["message"]
                     for n in ids]
            assert texts == [f"m{n}" for n in range(8)]
            log = await deliveries(client, owner, hook["webhook_id"])
            assert all(d["status"] == "delivered" and d["last_status"] == 204 for d in log)
            assert log[-1]["attempts"] >= 4  # the first one (the log is newest first) was retried
            got = (await client.get(f"/api/networks/{owner.network_id}/webhooks/{hook['webhook_id']}",
                                    headers=owner.auth)).json()
            assert got["enabled"] is True and got["failing_since_ts"] is None  # recovered
            # GET /metrics counts the POSTs by outcome (parsed with prometheus_client.parser).
            found = await scrape(client)
            assert value(found, "commhub_webhook_deliveries_total", outcome="delivered") == 8
            assert value(found, "commhub_webhook_deliveries_total", outcome="failed") >= 3
        nursery.cancel_scope.cancel()


async def test_a_hanging_receiver_delays_neither_the_hub_nor_other_webhooks(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        hanging = await start_receiver(nursery, mode="hang")
        healthy = await start_receiver(nursery)
        async with own_server(tmp_path, "hang", **{**LOOPBACK, "webhook_timeout_seconds": 60.0}) as hub, \
                httpx.AsyncClient(base_url=hub.url, timeout=10) as client:
            owner, _ = await setup(client)
            await add_webhook(client, owner, healthy.url)

            async def latencies(label: str) -> tuple[list[float], list[float]]:
                """20 rounds of a /health then a send: the seconds each took."""
                health, sends = [], []
                for n in range(20):
                    started = time.perf_counter()
                    assert (await client.get("/health")).status_code == 200
                    health.append(time.perf_counter() - started)
                    started = time.perf_counter()
                    await send(client, owner, f"{label}{n}")
                    sends.append(time.perf_counter() - started)
                return health, sends

            # The yardstick: the same rounds before the hang, in this run (on a loaded box, CI's tests running in
            # parallel, both are slower alike), delivering to the healthy webhook as the rounds after do.
            before, _ = await latencies("b")
            await healthy.wait_until(lambda: len(healthy.accepted_ids()) == 20)
            await add_webhook(client, owner, hanging.url)
            await send(client, owner, "first")
            await hanging.wait_until(lambda: len(hanging.received) == 1)  # now held for up to 60 s
            health, sends = await latencies("m")
            await healthy.wait_until(lambda: len(healthy.accepted_ids()) == 41)
            assert len(hanging.received) == 1  # one at a time per webhook: the rest wait behind it
            # Normal latency (generous bounds for a loaded 2-core box; the hanging POST holds for 60 s).
            assert max(health) < 2 and sorted(sends)[len(sends) // 2] < 0.5, (health, sends)
            assert sorted(health)[len(health) // 2] < max(0.05, 5 * sorted(before)[len(before) // 2]), (before,
                                                                                                        health)
        nursery.cancel_scope.cancel()


async def test_a_webhook_failing_too_long_is_disabled_its_owner_told_and_one_event_redelivered(
        tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        receiver = await start_receiver(nursery, mode="fail")
        settings = {**LOOPBACK, "webhook_disable_after_seconds": 0.3}
        async with own_server(tmp_path, "disable", **settings) as hub, \
                httpx.AsyncClient(base_url=hub.url, timeout=10) as client:
            owner, _ = await setup(client)
            hook = await add_webhook(client, owner, receiver.url, events=[NEW_MESSAGE])
            path = f"/api/networks/{owner.network_id}/webhooks/{hook['webhook_id']}"
            await send(client, owner, "a")
            await send(client, owner, "b")
            with trio.fail_after(15):
                while (await client.get(path, headers=owner.auth)).json()["enabled"]:  # noqa: ASYNC110 (REST state)
                    await trio.sleep(0.02)  # polling the REST state, bounded by fail_after
            got = (await client.get(path, headers=owner.auth)).json()
            assert got["disabled_reason"] and "HTTP 500" in got["disabled_reason"]
            log = await deliveries(client, owner, hook["webhook_id"])
            assert [d["status"] for d in log] == ["failed", "failed"] and log[-1]["last_status"] == 500
            rows = event_store.network_events_after(hub.hub.db, owner.network_id, 0, 100)
            told = [r for r in rows if r["event"] == WEBHOOK_DISABLED]
            assert len(told) == 1 and told[0]["alias"] == ""
            data = json.loads(told[0]["data"])
            assert not fits(EVENTS[WEBHOOK_DISABLED], data), data
            assert data["webhook_id"] == hook["webhook_id"] and data["owner"] == owner.user_id
            # Re-enabled, and the first event sent again by hand: it arrives.
            receiver.mode = "ok"
            r = await client.patch(path, json={"enabled": True}, headers=owner.auth)
            assert r.status_code == 200 and r.json()["enabled"] is True and r.json()["disabled_reason"] is None
            first = log[-1]["delivery_id"]
            r = await client.post(f"{path}/deliveries/{first}/redeliver", headers=owner.auth)
            assert r.status_code == 200, r.text
            await receiver.wait_until(lambda: len(receiver.accepted_ids()) == 1)
            assert receiver.received[-1].payload["data"]["message"] == "a"
            r = await client.post(f"{path}/deliveries/999999/redeliver", headers=owner.auth)
            assert r.status_code == 404 and r.json()["error"] == "delivery_not_found"
            r = await client.delete(path, headers=owner.auth)
            assert r.status_code == 200
            assert (await client.get(path, headers=owner.auth)).status_code == 404
        nursery.cancel_scope.cancel()


async def test_targets_private_loopback_and_metadata_addresses_are_refused_by_default(
        client: httpx.AsyncClient, server: ServerHandle) -> None:
    owner = await register(client)
    for url in ("http://127.0.0.1:9/hook", "https://127.0.0.1/hook", "https://169.254.169.254/latest/meta-data",
                "https://10.0.0.1/x", "https://[::1]/x", "https://[fd00::1]/x", "ftp://example.com/x",
                "http://example.com/x"):
        r = await client.post(f"/api/networks/{owner.network_id}/webhooks", json={"url": url}, headers=owner.auth)
        assert r.status_code == 400 and r.json()["error"] == "webhook_url_not_allowed", (url, r.text)
    # A name is checked where it resolves, each time a delivery is made (no DNS needed: localhost).
    with pytest.raises(ValueError, match="not allowed"):
        await webhooks_service.resolve_target("https://localhost/x", "public")
    target, host = await webhooks_service.resolve_target("http://localhost:8080/x", "loopback")
    assert ipaddress.ip_address(target.host).is_loopback and host == "localhost" and target.port == 8080
    # loopback allows loopback only, never the metadata service or private ranges; private allows them.
    allowed = webhooks_service._address_allowed
    metadata = ipaddress.ip_address("169.254.169.254")
    assert not allowed(metadata, "https", "loopback") and allowed(metadata, "http", "private")
    assert not allowed(ipaddress.ip_address("::ffff:10.1.2.3"), "https", "loopback")
    assert allowed(ipaddress.ip_address("93.184.216.34"), "https", "public")
    # Only an owner or admin of the network manages its webhooks.
    other = await register(client)
    r = await client.get(f"/api/networks/{owner.network_id}/webhooks", headers=other.auth)
    assert r.status_code == 404
    r = await client.get(f"/api/networks/{owner.network_id}/webhooks", headers=owner.net_auth)
    assert r.status_code == 403


@pytest.mark.subprocess
@pytest.mark.slow
async def test_undelivered_events_are_delivered_after_a_kill_9(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMMHUB_WEBHOOK_TARGETS", "loopback")
    db, log = tmp_path / "hub.db", tmp_path / "server.log"
    async with trio.open_nursery() as nursery:
        receiver: Receiver = await start_receiver(nursery, mode="hang")  # holds the first POST: none delivered
        async with serve(db, log) as server:
            async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
                owner, _ = await setup(client)
                await add_webhook(client, owner, receiver.url, events=[NEW_MESSAGE])
                for n in range(5):
                    await send(client, owner, f"m{n}")
                await receiver.wait_until(lambda: len(receiver.received) == 1)
                server.process.send_signal(signal.SIGKILL)
                with trio.fail_after(10):
                    await server.process.wait()
        receiver.mode = "ok"
        async with serve(db, log):
            await receiver.wait_until(lambda: len(receiver.accepted_ids()) == 5, timeout=30)
            texts = [next(i for i in receiver.received if i.payload["id"] == n and i.status).payload["data"]["message"]
                     for n in receiver.accepted_ids()]
            assert texts == [f"m{n}" for n in range(5)]
        nursery.cancel_scope.cancel()


@pytest.mark.subprocess
async def test_the_cli_manages_webhooks_and_shows_the_delivery_log(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        receiver = await start_receiver(nursery)
        async with own_server(tmp_path, "cli", **LOOPBACK) as hub, \
                httpx.AsyncClient(base_url=hub.url, timeout=10) as client:
            owner, _ = await setup(client)
            env = cli_env(hub.url, owner.token)
            made = await run_cli("webhook", "create", receiver.url, "--events", NEW_MESSAGE, "--json", env=env)
            assert made.code == 0, made.err
            hook = made.json()
            assert hook["secret"].startswith("whsec_") and hook["events"] == [NEW_MESSAGE]
            listed = await run_cli("webhook", "list", env=env)
            assert listed.code == 0 and hook["webhook_id"] in listed.out and "secret" not in listed.out
            await send(client, owner, "via cli")
            await receiver.wait_until(lambda: len(receiver.accepted_ids()) == 1)
            log = await run_cli("webhook", "deliveries", hook["webhook_id"], env=env)
            assert log.code == 0 and NEW_MESSAGE in log.out and "204" in log.out and "delivered" in log.out, log.out
            rows = (await run_cli("webhook", "deliveries", hook["webhook_id"], "--json", env=env)).json()
            again = await run_cli("webhook", "redeliver", hook["webhook_id"], str(rows["deliveries"][0]["delivery_id"]),
                                  env=env)
            assert again.code == 0, again.err
            await receiver.wait_until(lambda: len(receiver.received) == 2)  # at-least-once: the same id again
            assert receiver.received[1].payload["id"] == receiver.received[0].payload["id"]
            off = await run_cli("webhook", "update", hook["webhook_id"], "--disable", "--json", env=env)
            assert off.code == 0 and off.json()["enabled"] is False
            gone = await run_cli("webhook", "delete", hook["webhook_id"], env=env)
            assert gone.code == 0, gone.err
            missing = await run_cli("webhook", "delete", hook["webhook_id"], env=env)
            assert missing.code == 1 and "webhook_not_found" in missing.err + missing.out
        nursery.cancel_scope.cancel()


def test_migration_0008_adds_the_webhook_tables_to_a_v7_database(tmp_path: Path) -> None:
    path = str(tmp_path / "v7.db")
    old = apsw.Connection(path)
    with old:
        for step in sorted(n for n in dbmod.migration_steps() if n <= 7):
            old.execute(dbmod.migration_steps()[step])
        old.pragma("user_version", 7)
    old.close()
    database = dbmod.Database(path)
    try:
        assert database.con.pragma("user_version") == dbmod.SCHEMA_VERSION
        tables = {r["name"] for r in database.query("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"webhooks", "webhook_deliveries"} <= tables
        indexes = {r["name"] for r in database.query("SELECT name FROM sqlite_master WHERE type = 'index'"
                                                     " AND tbl_name = 'webhook_deliveries'")}
        assert "webhook_deliveries_by_status" in indexes
    finally:
        database.close()
