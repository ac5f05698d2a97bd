"""One owner of the background workers across hub processes on one PostgreSQL database (service/leader.py,
db_pg.OwnerLock, docs/postgresql.md "Background workers on several processes").

Real `commhub serve --database <pg_url>` processes: while two run, a webhook receives each event once and a
schedule runs once per due time; a wake-up made through the process that is not the owner reaches the owner's
worker at once (not at its next poll); kill -9 of the owner: the other takes over and the receiver gets everything.
"""

from __future__ import annotations

import signal
import statistics
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import trio
from pg_hubs import log_tail, serve_hub

from commhub_lib.db_pg import OWNER_APP_NAME, STANDBY_APP_NAME
from commhub_lib.service import leader
from commhub_lib.service.webhooks import POLL_SECONDS
from commhub_lib.vocabulary import NEW_MESSAGE
from tests.conftest import Account, create_token, register, tool
from tests.test_webhooks import add_webhook, send, setup
from tests.webhook_receiver import Receiver, start_receiver

pytestmark = [pytest.mark.subprocess, pytest.mark.slow]

WITHIN = 60  # seconds, a bound for one condition on a loaded machine (not a wait)
OWNS = "background workers: running in this process"


@dataclass
class Hub:
    """One `commhub serve` child: its base URL, process and log."""

    url: str
    process: trio.Process
    log: Path

    def owns(self) -> bool:
        """Whether its log says it runs the background workers now (the last word on it)."""
        text = self.log.read_text(errors="replace")
        return text.rfind(OWNS) > text.rfind("background workers: stopped")


@asynccontextmanager
async def serve(url: str, log: Path) -> AsyncIterator[Hub]:
    """A `commhub.py serve --database <url> --port 0` child allowed to POST webhooks to loopback; yields once
    /health answers."""
    env = {"COMMHUB_WEBHOOK_TARGETS": "loopback", "COMMHUB_WEBHOOK_RETRY_BASE_SECONDS": "0.05",
           "COMMHUB_WEBHOOK_RETRY_MAX_SECONDS": "0.2"}
    async with serve_hub(url, log, env, within=WITHIN) as (base, process):
        yield Hub(base, process, log)


async def until(condition: Any, within: float = WITHIN, what: str = "condition") -> None:
    """Poll a condition (bounded), instead of sleeping a fixed time."""
    with trio.move_on_after(within):
        while True:
            if condition():
                return
            await trio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def the_owner(hubs: list[Hub]) -> tuple[Hub, Hub]:
    """(owner, the other) once one of two processes runs the workers; the other must not."""
    await until(lambda: any(h.owns() for h in hubs), what="an owner of the background workers")
    owner = next(h for h in hubs if h.owns())
    other = next(h for h in hubs if h is not owner)
    assert not other.owns(), (log_tail(owner.log), log_tail(other.log))
    return owner, other


def lock_sessions(url: str) -> dict[str, int]:
    """The hubs' owner-lock connections by application_name, and how many hold the advisory lock."""
    with psycopg.connect(url, autocommit=True) as con:
        rows = con.execute("SELECT application_name, count(*) FROM pg_stat_activity WHERE application_name IN "
                           "(%s, %s) GROUP BY 1", (OWNER_APP_NAME, STANDBY_APP_NAME)).fetchall()
        held = con.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted").fetchone()
    out = {str(name): int(n) for name, n in rows}
    out["locks held"] = int(held[0]) if held else 0
    return out


def message_event_ids(url: str, network_id: str) -> list[int]:
    """The ids of the network's new_message events, from the table (the source of truth)."""
    with psycopg.connect(url, autocommit=True) as con:
        rows = con.execute("SELECT id FROM events WHERE network_id = %s AND event = %s ORDER BY id",
                           (network_id, NEW_MESSAGE)).fetchall()
    return [int(r[0]) for r in rows]


async def test_two_processes_deliver_each_webhook_event_once(pg_url: str, tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        receiver = await start_receiver(nursery)
        async with serve(pg_url, tmp_path / "a.log") as a, serve(pg_url, tmp_path / "b.log") as b, \
                httpx.AsyncClient(base_url=a.url, timeout=30) as ca, \
                httpx.AsyncClient(base_url=b.url, timeout=30) as cb:
            await the_owner([a, b])
            assert lock_sessions(pg_url) == {OWNER_APP_NAME: 1, STANDBY_APP_NAME: 1, "locks held": 1}
            owner, _ = await setup(ca)
            await add_webhook(ca, owner, receiver.url, events=[NEW_MESSAGE])
            sends = 30
            for n in range(sends):  # through both processes, alternating
                await send(ca if n % 2 else cb, owner, f"m{n}")
            await receiver.wait_until(lambda: len(receiver.accepted_ids()) == sends, timeout=WITHIN)
            # A marker sent after the rest, through the other process: a second sender of the outbox would have
            # POSTed some of the first ones again by the time it arrives.
            await send(cb, owner, "marker")
            await receiver.wait_until(lambda: len(receiver.accepted_ids()) == sends + 1, timeout=WITHIN)
            ids = message_event_ids(pg_url, owner.network_id)
            assert sorted(receiver.accepted_ids()) == ids
            posted = [r.payload["id"] for r in receiver.received]
            assert len(posted) == len(ids), f"{len(posted) - len(ids)} POST(s) more than events: sent twice"
        nursery.cancel_scope.cancel()


async def test_a_wakeup_made_through_the_other_process_reaches_the_owner_at_once(pg_url: str, tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        receiver = await start_receiver(nursery)
        async with serve(pg_url, tmp_path / "a.log") as a, serve(pg_url, tmp_path / "b.log") as b:
            owner_hub, other = await the_owner([a, b])
            async with httpx.AsyncClient(base_url=other.url, timeout=30) as client:
                owner, _ = await setup(client)
                await add_webhook(client, owner, receiver.url, events=[NEW_MESSAGE])  # made on the non-owner
                latencies = []
                for n in range(15):  # each written by the non-owner; delivered by the owner's worker
                    before = len(receiver.received)
                    await send(client, owner, f"wake {n}")
                    sent_at = trio.current_time()
                    await receiver.wait_until(lambda b=before: len(receiver.received) > b, timeout=WITHIN)
                    latencies.append(trio.current_time() - sent_at)
            median = statistics.median(latencies)
            print(f"\nnon-owner write -> owner's webhook POST: median {median * 1000:.0f} ms, "
                  f"max {max(latencies) * 1000:.0f} ms over {len(latencies)}")
            # Without the wake-up the owner finds a row at its next poll: POLL_SECONDS / 2 on average.
            assert median < POLL_SECONDS / 5, latencies
            assert owner_hub.owns() and not other.owns()
        nursery.cancel_scope.cancel()


async def test_kill_9_of_the_owner_hands_the_workers_to_the_other_and_nothing_is_lost(
        pg_url: str, tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        receiver: Receiver = await start_receiver(nursery)
        async with serve(pg_url, tmp_path / "a.log") as a, serve(pg_url, tmp_path / "b.log") as b:
            victim, survivor = await the_owner([a, b])
            async with httpx.AsyncClient(base_url=survivor.url, timeout=30) as client, \
                    httpx.AsyncClient(base_url=victim.url, timeout=30) as doomed:
                owner, _ = await setup(client)
                await add_webhook(client, owner, receiver.url, events=[NEW_MESSAGE])
                for n in range(10):
                    await send(doomed if n % 2 else client, owner, f"before {n}")
                await receiver.wait_until(lambda: len(receiver.accepted_ids()) >= 3, timeout=WITHIN)
                victim.process.send_signal(signal.SIGKILL)  # mid-stream: some deliveries are still to make
                killed_at = trio.current_time()
                for n in range(10):  # events written while nobody owns the workers, then after the takeover
                    await send(client, owner, f"after {n}")
                await until(survivor.owns, what="the survivor taking over")
                print(f"\ntakeover after kill -9: {trio.current_time() - killed_at:.1f} s "
                      f"(retry {leader.RETRY_SECONDS:.0f} s + grace {leader.GRACE_SECONDS:.0f} s at most)")
                ids = message_event_ids(pg_url, owner.network_id)
                assert len(ids) == 20
                await receiver.wait_until(lambda: set(receiver.accepted_ids()) == set(ids), timeout=WITHIN)
                await victim.process.wait()
                assert lock_sessions(pg_url) == {OWNER_APP_NAME: 1, "locks held": 1}
        nursery.cancel_scope.cancel()


async def test_a_schedule_runs_once_per_due_time_with_two_processes(pg_url: str, tmp_path: Path) -> None:
    async with serve(pg_url, tmp_path / "a.log") as a, serve(pg_url, tmp_path / "b.log") as b, \
            httpx.AsyncClient(base_url=a.url, timeout=30) as ca, httpx.AsyncClient(base_url=b.url, timeout=30) as cb:
        await the_owner([a, b])
        account: Account = await register(ca)
        worker = await create_token(ca, account, name="worker", alias="worker")
        await tool(ca, worker, "report_status", {"alias": "worker", "status": "idle"})
        # Every schedule due at the same moment, created through both processes: two schedulers would both wake
        # for it (each reads the earliest next run of all) and both run it.
        due = (datetime.now(UTC) + timedelta(seconds=4)).isoformat()
        made = []
        for n in range(6):
            client = ca if n % 2 else cb
            r = await client.post("/api/schedules", headers=account.auth,
                                  json={"to": "worker", "content": f"scheduled {n}", "at": due})
            assert r.status_code == 200, r.text
            made.append(r.json()["schedule"]["schedule_id"])

        async def states() -> list[dict[str, Any]]:
            out = []
            for schedule_id in made:
                r = await ca.get(f"/api/schedules/{schedule_id}", headers=account.auth)
                out.append(r.json()["schedule"])
            return out

        with trio.fail_after(WITHIN):
            while True:
                now = await states()
                if all(s["state"] == "finished" for s in now):
                    break
                await trio.sleep(0.1)  # polling the schedules' state, bounded
        assert [s["run_count"] for s in now] == [1] * len(made), now
        r = await ca.get("/api/tasks", headers=account.auth, params={"to_name": "worker", "limit": 500})
        tasks = [t for t in r.json()["tasks"] if t["schedule_id"]]
        assert sorted(t["schedule_id"] for t in tasks) == sorted(made)


async def test_a_schedule_made_through_the_other_process_runs_at_its_time(pg_url: str, tmp_path: Path) -> None:
    async with serve(pg_url, tmp_path / "a.log") as a, serve(pg_url, tmp_path / "b.log") as b:
        _, other = await the_owner([a, b])
        async with httpx.AsyncClient(base_url=other.url, timeout=30) as client:
            account: Account = await register(client)
            worker = await create_token(client, account, name="worker", alias="worker")
            await tool(client, worker, "report_status", {"alias": "worker", "status": "idle"})
            # The owner's scheduler sleeps until the earliest next run it knows (none: MAX_SLEEP_SECONDS); only the
            # wake-up relayed from the non-owner tells it of this one.
            r = await client.post("/api/schedules", headers=account.auth,
                                  json={"to": "worker", "content": "soon", "at": 2})
            assert r.status_code == 200, r.text
            schedule = r.json()["schedule"]
            with trio.fail_after(WITHIN):
                while True:
                    got = (await client.get(f"/api/schedules/{schedule['schedule_id']}",
                                            headers=account.auth)).json()["schedule"]
                    if got["state"] == "finished":
                        break
                    await trio.sleep(0.1)  # polling the schedule's state, bounded
            def instant(text: str) -> datetime:
                moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
                return moment if moment.tzinfo else moment.replace(tzinfo=UTC)

            ran_at, due_at = instant(got["last_run_at"]), instant(schedule["next_run_at"])
            assert got["run_count"] == 1
            assert (ran_at - due_at).total_seconds() < 5, (schedule, got)


# -- the lock itself, in one process: two Leaderships on their own lock connections, with workers that record when
# they run (no hub processes; the same code paths) -----------------------------------------------------------------

class Runs:
    """When each Leadership's worker ran: (name, start, end) in trio time, end None while running."""

    def __init__(self) -> None:
        self.spans: list[list[Any]] = []

    def worker(self, name: str) -> leader.Worker:
        """A background job that records its span."""

        async def job(hub: object, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            span = [name, trio.current_time(), None]
            self.spans.append(span)
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                span[2] = trio.current_time()

        return job

    def running(self) -> list[str]:
        """The names whose worker runs now."""
        return [s[0] for s in self.spans if s[2] is None]

    def overlaps(self) -> list[tuple[Any, Any]]:
        """Pairs of spans of different Leaderships that ran at the same time."""
        now = trio.current_time()
        out = []
        for i, x in enumerate(self.spans):
            for y in self.spans[i + 1:]:
                if x[0] != y[0] and x[1] < (y[2] or now) and y[1] < (x[2] or now):
                    out.append((x, y))
        return out


def fake_hub() -> Any:
    """What a Leadership touches of a hub when no worker uses it: the wake-up events and due sets."""
    from types import SimpleNamespace

    return SimpleNamespace(webhook_wakeup=trio.Event(), bridge_wakeup=trio.Event(), schedule_wakeup=trio.Event(),
                           webhooks_due=set(), bridge_due=set())


async def test_a_cut_lock_connection_stops_the_workers_before_another_process_starts_them(pg_url: str) -> None:
    from commhub_lib.db_pg import OwnerLock

    runs = Runs()
    one = leader.Leadership(fake_hub(), OwnerLock(pg_url), [runs.worker("one")])
    two = leader.Leadership(fake_hub(), OwnerLock(pg_url), [runs.worker("two")])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(one.run)
        nursery.start_soon(two.run)
        await until(lambda: len(runs.running()) == 1, what="one owner")
        first = runs.running()[0]
        for _ in range(2):  # twice: the lock may come back to the same one, or move
            terms = one.terms + two.terms
            with psycopg.connect(pg_url, autocommit=True) as con:
                con.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                            (OWNER_APP_NAME,))
            await until(lambda t=terms: one.terms + two.terms == t + 1 and len(runs.running()) == 1,
                        what="a new owner after the cut")
            assert not runs.overlaps(), runs.spans
            cut = [s for s in runs.spans if s[2] is not None][-1]
            new = runs.spans[-1]
            # The new term started after the grace, counted from when the lock could first be taken again.
            assert new[1] - cut[2] >= leader.GRACE_SECONDS - 0.5, (cut, new)
        assert first in {"one", "two"}
        nursery.cancel_scope.cancel()


class HungLock:
    """An OwnerLock whose connection stops answering once `hang` is set (a network cut, no error)."""

    def __init__(self) -> None:
        import threading

        self.hang = threading.Event()
        self.release = threading.Event()
        self.dropped = 0

    def try_take(self) -> bool:
        return not self.hang.is_set()

    def wait(self, timeout: float) -> list[str]:  # noqa: ASYNC109 (blocking, in a worker thread)
        if self.hang.wait(timeout):
            self.release.wait(30)
        return []

    def notify(self, payloads: list[str]) -> None:
        pass

    def drop(self) -> None:
        self.dropped += 1

    def stop(self) -> None:
        self.release.set()


async def test_a_lock_connection_that_stops_answering_stops_the_workers_within_the_grace() -> None:
    runs = Runs()
    lock = HungLock()
    one = leader.Leadership(fake_hub(), lock, [runs.worker("one")])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(one.run)
        await until(lambda: runs.running() == ["one"], what="the workers running")
        hung_at = trio.current_time()
        lock.hang.set()
        await until(lambda: not runs.running(), what="the workers stopped")
        stopped_after = trio.current_time() - hung_at
        # Another process could start its workers GRACE_SECONDS after the server freed the lock at the earliest.
        assert stopped_after < leader.GRACE_SECONDS, stopped_after
        lock.release.set()
        await until(lambda: lock.dropped == 1, what="the connection dropped")
        nursery.cancel_scope.cancel()


async def test_a_webhook_made_or_deleted_through_one_process_holds_for_events_sent_through_the_other(
        pg_url: str, tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        receiver = await start_receiver(nursery)
        async with serve(pg_url, tmp_path / "a.log") as a, serve(pg_url, tmp_path / "b.log") as b, \
                httpx.AsyncClient(base_url=a.url, timeout=30) as ca, \
                httpx.AsyncClient(base_url=b.url, timeout=30) as cb:
            await the_owner([a, b])
            owner, _ = await setup(ca)
            await send(cb, owner, "before any webhook")  # B reads the network's webhooks now: none
            hook = await add_webhook(ca, owner, receiver.url, events=[NEW_MESSAGE])
            # B is told at once (a notification, then its next send reads them again): bounded polling of the
            # receiver, a send through B each round, until one arrives.
            with trio.fail_after(WITHIN):
                while not receiver.received:
                    await send(cb, owner, "after the webhook")
                    with trio.move_on_after(0.5):
                        await receiver.wait_until(lambda: bool(receiver.received))
            r = await ca.delete(f"/api/networks/{owner.network_id}/webhooks/{hook['webhook_id']}", headers=owner.auth)
            assert r.status_code == 200, r.text
            with trio.fail_after(WITHIN):  # B forgets the deleted webhook: its sends are not refused for its outbox
                for n in range(20):
                    await send(cb, owner, f"after the delete {n}")
        nursery.cancel_scope.cancel()
