"""Schedules (docs/schedules.md): cron and `every` timing (DST included), REST, MCP through the official SDK, the
skip-while-open rule, pause/resume/run now, and the missed-run policy across a restart on the same database file."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import apsw
import httpx
import pytest
import trio
from cli_support import cli_env, run_cli
from conftest import Account, create_token, make_settings, own_server, register, tool, tool_error
from test_mcp_sdk import fails, ok, sdk_session

from commhub_lib.config import Settings
from commhub_lib.db import Database
from commhub_lib.errors import ValidationFailed
from commhub_lib.runtime.server import ServerHandle
from commhub_lib.service import schedules
from commhub_lib.service.hub import Hub
from commhub_lib.store import schedules as schedule_store

BERLIN = ZoneInfo("Europe/Berlin")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Test settings with a 1 s shortest `every`, so a test sees several runs in seconds."""
    return make_settings(tmp_path, schedule_min_interval_seconds=1)


def utc(*args: int) -> float:
    """A UTC time as a timestamp."""
    return datetime(*args, tzinfo=UTC).timestamp()


# -- timing, without a server -----------------------------------------------------------------------------------

def test_cron_follows_the_zone_across_both_dst_changes() -> None:
    # 02:30 does not exist in Berlin on 2026-03-29 (02:00 -> 03:00): cron runs it right after the change.
    after = datetime(2026, 3, 28, 12, 0, tzinfo=BERLIN).timestamp()
    first = schedules.next_cron("30 2 * * *", "Europe/Berlin", after)
    assert first == utc(2026, 3, 29, 1, 0)  # 03:00 CEST
    assert schedules.next_cron("30 2 * * *", "Europe/Berlin", first) == utc(2026, 3, 30, 0, 30)  # 02:30 CEST
    # 02:30 happens twice on 2026-10-25 (03:00 CEST -> 02:00 CET): it runs once, then a day later in CET.
    after = datetime(2026, 10, 24, 12, 0, tzinfo=BERLIN).timestamp()
    once = schedules.next_cron("30 2 * * *", "Europe/Berlin", after)
    assert once == utc(2026, 10, 25, 0, 30)
    assert schedules.next_cron("30 2 * * *", "Europe/Berlin", once) == utc(2026, 10, 26, 1, 30)
    # 09:00 on weekdays stays 09:00 local: 08:00 UTC in winter, 07:00 UTC in summer.
    friday = datetime(2026, 3, 27, 10, 0, tzinfo=BERLIN).timestamp()
    monday = schedules.next_cron("0 9 * * 1-5", "Europe/Berlin", friday)
    assert monday == utc(2026, 3, 30, 7, 0)
    assert schedules.next_cron("0 9 * * 1-5", "UTC", friday) == utc(2026, 3, 30, 9, 0)


def test_every_keeps_its_phase_and_never_makes_up_missed_runs() -> None:
    assert schedules.next_every(1000.0, 60, 900.0) == 1000.0
    assert schedules.next_every(1000.0, 60, 1000.0) == 1060.0
    # Down for an hour: the next run is the next point of the grid after now, once.
    assert schedules.next_every(1000.0, 60, 1000.0 + 3600 + 5) == 1000.0 + 3660


def test_at_reads_a_local_time_in_the_zone_and_seconds_from_now() -> None:
    assert schedules.parse_at("2026-12-24T09:00", "Europe/Berlin", 0) == utc(2026, 12, 24, 8, 0)
    assert schedules.parse_at("2026-12-24T09:00Z", "Europe/Berlin", 0) == utc(2026, 12, 24, 9, 0)
    assert schedules.parse_at(90, "UTC", 1000.0) == 1090.0
    assert schedules.parse_at("90", "UTC", 1000.0) == 1090.0
    with pytest.raises(ValidationFailed, match="not understood"):
        schedules.parse_at("tomorrowish", "UTC", 0)


def test_bad_cron_and_unknown_zones_are_refused_by_name() -> None:
    with pytest.raises(ValidationFailed, match="has 4 fields; give 5"):
        schedules.check_cron("0 9 * *")
    with pytest.raises(ValidationFailed, match="has 6 fields"):
        schedules.check_cron("0 0 9 * * *")
    with pytest.raises(ValidationFailed, match="not a valid expression"):
        schedules.check_cron("61 9 * * *")
    assert schedules.check_cron(" 0  9 * * 1-5 ") == "0 9 * * 1-5"
    for name in ("Mars/Olympus", "../etc/passwd", ""):
        with pytest.raises(ValidationFailed, match="unknown time zone"):
            schedules.zone(name)


async def test_the_scheduler_sleeps_until_woken_and_never_polls_tightly(
        tmp_path: Path, autojump_clock: trio.abc.Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    hub = Hub(make_settings(tmp_path), Database(str(tmp_path / "idle.db")))
    passes: list[float] = []
    real = schedule_store.due_schedules

    def counted(db: Database, now_ts: float, limit: int) -> list[dict[str, Any]]:
        passes.append(trio.current_time())
        return real(db, now_ts, limit)
    monkeypatch.setattr(schedule_store, "due_schedules", counted)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(schedules.run_scheduler, hub)
            await trio.sleep(3600)  # virtual time: an idle hour
            # With nothing scheduled it looks once per MAX_SLEEP_SECONDS (a wall-clock step), never more.
            assert 1 <= len(passes) <= 3600 / schedules.MAX_SLEEP_SECONDS + 1
            before = len(passes)
            hub.schedules_changed()  # a schedule was created or changed: it looks at once
            await trio.sleep(0.001)
            assert len(passes) == before + 1 and passes[-1] - trio.current_time() < 0.01
            nursery.cancel_scope.cancel()
    finally:
        hub.db.close()


# -- helpers ----------------------------------------------------------------------------------------------------

async def with_worker(client: httpx.AsyncClient, owner: Account, alias: str = "worker") -> str:
    """An agent token bound to `alias` that has connected (so the alias can be scheduled to)."""
    token = await create_token(client, owner, name=alias, alias=alias)
    await tool(client, token, "report_status", {"alias": alias, "status": "idle"})
    return token


async def poll(read: Callable[[], Awaitable[Any]], condition: Callable[[Any], bool], seconds: float = 15) -> Any:
    """Read until the condition holds (bounded), instead of sleeping a fixed time."""
    deadline = trio.current_time() + seconds
    while True:
        value = await read()
        if condition(value):
            return value
        assert trio.current_time() < deadline, f"condition not reached in time; last value: {value}"
        await trio.sleep(0.05)


async def get_schedule(client: httpx.AsyncClient, account: Account, schedule_id: str) -> dict[str, Any]:
    r = await client.get(f"/api/schedules/{schedule_id}", headers=account.auth)
    assert r.status_code == 200, r.text
    return r.json()["schedule"]


async def create(client: httpx.AsyncClient, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    r = await client.post("/api/schedules", headers=headers, json=body)
    assert r.status_code == 200, r.text
    return r.json()["schedule"]


async def scheduled_tasks(client: httpx.AsyncClient, account: Account, schedule_id: str) -> list[dict[str, Any]]:
    r = await client.get("/api/tasks", headers=account.auth, params={"to_name": "worker", "limit": 500})
    assert r.status_code == 200, r.text
    return [t for t in r.json()["tasks"] if t["schedule_id"] == schedule_id]


# -- REST -------------------------------------------------------------------------------------------------------

async def test_rest_refuses_bad_schedules_with_clear_400s(client: httpx.AsyncClient) -> None:
    owner = await register(client)
    await with_worker(client, owner)
    cases = [({"every_seconds": 0}, "every_seconds"),
             ({"cron": "0 9 * * 1-5", "tz": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
             ({"cron": "0 9 * *"}, "give 5"),
             ({"cron": "0 25 * * *"}, "(Bad hour): minute 0-59, hour 0-23"),  # which field, and what it may be
             ({"every_seconds": 60, "cron": "* * * * *"}, "exactly one of at"),
             ({}, "exactly one of at"),
             ({"at": "2001-01-01T00:00:00Z"}, "already passed"),
             ({"every_seconds": 60, "missed": "maybe"}, "missed")]
    for extra, words in cases:
        r = await client.post("/api/schedules", headers=owner.auth, json={"to": "worker", "content": "x", **extra})
        assert r.status_code == 400, (extra, r.text)
        assert words in r.json()["message"], (extra, r.json())
    r = await client.post("/api/schedules", headers=owner.auth, json={"to": "wroker", "content": "x",
                                                                      "every_seconds": 60})
    assert r.status_code == 404 and "did you mean 'worker'" in r.json()["message"]


async def test_a_full_network_refuses_a_new_schedule(tmp_path: Path) -> None:
    async with own_server(tmp_path, "full", max_network_bytes=20_000) as server, \
            httpx.AsyncClient(base_url=server.url) as client:
        owner = await register(client)
        await with_worker(client, owner)
        r = await client.post("/api/schedules", headers=owner.auth, json={"to": "worker", "content": "x" * 30_000,
                                                                          "every_seconds": 60})
        assert r.status_code == 409 and r.json()["error"] == "quota_exceeded"
        assert (await client.get("/api/schedules", headers=owner.auth)).json()["schedules"] == []


async def test_an_agents_runs_go_through_the_loop_guard(tmp_path: Path) -> None:
    async with own_server(tmp_path, "guarded", pair_rate_per_minute=1) as server, \
            httpx.AsyncClient(base_url=server.url) as client:
        owner = await register(client)
        await with_worker(client, owner)
        planner = await create_token(client, owner, name="planner", alias="planner")
        await tool(client, planner, "report_status", {"alias": "planner", "status": "idle"})
        await tool(client, planner, "send_task", {"to": "worker", "content": "by hand"})  # the minute's one send
        made = (await tool(client, planner, "schedule_task", {"to": "worker", "content": "scheduled",
                                                              "every_seconds": 60}))["schedule"]
        ran = (await client.post(f"/api/schedules/{made['schedule_id']}/run", headers=owner.auth)).json()
        assert ran["ran"] is False and "(rate_limited)" in ran["skipped_reason"], ran
        assert ran["schedule"]["state"] == "active" and ran["schedule"]["skip_count"] == 1


async def test_the_shortest_interval_is_ten_seconds_by_default(tmp_path: Path) -> None:
    async with own_server(tmp_path, "default") as server, httpx.AsyncClient(base_url=server.url) as client:
        owner = await register(client)
        await with_worker(client, owner)
        r = await client.post("/api/schedules", headers=owner.auth, json={"to": "worker", "content": "x",
                                                                          "every_seconds": 9})
        assert r.status_code == 400
        assert "at least 10 (the schedule_min_interval_seconds setting)" in r.json()["message"]
        assert (await create(client, owner.auth, to="worker", content="x", every_seconds=10))["every_seconds"] == 10


async def test_runs_are_tasks_and_skip_while_the_last_one_is_open(server: ServerHandle,
                                                                  client: httpx.AsyncClient) -> None:
    owner = await register(client)
    worker = await with_worker(client, owner)
    made = await create(client, owner.auth, to="worker", content="check the backups", title="backups",
                        every_seconds=1)
    sid = made["schedule_id"]
    assert made["kind"] == "every" and made["state"] == "active" and made["from_name"] == owner.username
    assert made["from_kind"] == "person" and made["next_run_at"] and made["run_count"] == 0
    # The first run: an ordinary task from the person, carrying the schedule's id.
    first = await poll(lambda: get_schedule(client, owner, sid), lambda s: s["run_count"] == 1)
    task = (await client.get(f"/api/tasks/{first['last_task_id']}", headers=owner.auth)).json()["task"]
    assert task["schedule_id"] == sid and task["from_name"] == owner.username and task["title"] == "backups"
    assert task["content"] == "check the backups" and task["status"] == "delivered"
    # While it is open, the next runs are skipped and say why.
    skipped = await poll(lambda: get_schedule(client, owner, sid), lambda s: s["skip_count"] >= 1)
    assert skipped["run_count"] == 1 and skipped["last_status"] == "delivered"
    assert f"task {task['task_id']} is still open (delivered)" in skipped["last_skip_reason"]
    assert skipped["last_skipped_at"]
    assert len(await scheduled_tasks(client, owner, sid)) == 1
    # Once the worker ends it, the next run sends a new task (the same content: not held back as a duplicate).
    await tool(client, worker, "report_completion", {"task_id": task["task_id"], "result": "all fine"})
    second = await poll(lambda: get_schedule(client, owner, sid), lambda s: s["run_count"] == 2)
    assert second["last_task_id"] != task["task_id"]
    assert len(await scheduled_tasks(client, owner, sid)) == 2
    # The MCP task shape carries schedule_id too.
    got = await tool(client, worker, "get_task", {"task_id": second["last_task_id"]})
    assert got["task"]["schedule_id"] == sid
    r = await client.delete(f"/api/schedules/{sid}", headers=owner.auth)
    assert r.json() == {"ok": True, "schedule_id": sid, "deleted": True}


async def test_pause_resume_run_now_and_delete(server: ServerHandle, client: httpx.AsyncClient) -> None:
    owner = await register(client)
    worker = await with_worker(client, owner)
    made = await create(client, owner.auth, to="worker", content="new year", cron="0 0 1 1 *", tz="Europe/Berlin")
    sid, one = made["schedule_id"], f"/api/schedules/{made['schedule_id']}"
    next_year = datetime(datetime.now(BERLIN).year + 1, 1, 1, tzinfo=BERLIN).astimezone(UTC)
    assert made["next_run_at"] == next_year.strftime("%Y-%m-%dT%H:%M:%SZ")
    # Run now: a task at once; the timetable stays.
    ran = (await client.post(f"{one}/run", headers=owner.auth)).json()
    assert ran["ran"] is True and ran["schedule"]["last_task_id"] == ran["task_id"]
    assert ran["schedule"]["next_run_at"] == made["next_run_at"] and ran["schedule"]["run_count"] == 1
    # Again while that task is open: skipped, with the reason.
    again = (await client.post(f"{one}/run", headers=owner.auth)).json()
    assert again["ran"] is False and "still open" in again["skipped_reason"]
    assert again["schedule"]["skip_count"] == 1
    await tool(client, worker, "report_completion", {"task_id": ran["task_id"], "result": "ok"})
    # Pause: no next run; run now still works on a paused schedule.
    paused = (await client.post(f"{one}/pause", headers=owner.auth)).json()["schedule"]
    assert paused["state"] == "paused" and paused["next_run_at"] is None
    assert (await client.post(f"{one}/run", headers=owner.auth)).json()["ran"] is True
    resumed = (await client.post(f"{one}/resume", headers=owner.auth)).json()["schedule"]
    assert resumed["state"] == "active" and resumed["next_run_at"] == made["next_run_at"]
    listed = (await client.get("/api/schedules", headers=owner.auth)).json()["schedules"]
    assert [s["schedule_id"] for s in listed] == [sid] and listed[0]["last_status"] == "delivered"
    assert (await client.delete(one, headers=owner.auth)).json()["deleted"] is True
    r = await client.get(one, headers=owner.auth)
    assert r.status_code == 404 and r.json()["error"] == "schedule_not_found"
    assert len(await scheduled_tasks(client, owner, sid)) == 2  # the tasks it sent stay


async def test_a_once_schedule_runs_once_and_finishes(server: ServerHandle, client: httpx.AsyncClient) -> None:
    owner = await register(client)
    await with_worker(client, owner)
    made = await create(client, owner.auth, to="worker", content="deploy", at=1)
    assert made["kind"] == "once" and made["run_at"]
    done = await poll(lambda: get_schedule(client, owner, made["schedule_id"]), lambda s: s["state"] == "finished")
    assert done["run_count"] == 1 and done["next_run_at"] is None and done["last_task_id"]
    r = await client.post(f"/api/schedules/{made['schedule_id']}/pause", headers=owner.auth)
    assert r.status_code == 409 and r.json()["error"] == "schedule_finished"


async def test_a_schedule_that_cannot_run_is_set_aside_and_the_others_still_run(
        server: ServerHandle, client: httpx.AsyncClient) -> None:
    owner = await register(client)
    await with_worker(client, owner)
    broken = await create(client, owner.auth, to="worker", content="b", cron="0 9 * * *", tz="Europe/Berlin")
    # Its zone vanishes (a tzdata upgrade dropped it) and it is due first: it must not hold up the others.
    db = server.hub.db
    with db.write():
        db.execute("UPDATE schedules SET tz = 'Gone/Zone', next_run_ts = 1 WHERE schedule_id = ?",
                   (broken["schedule_id"],))
    fine = await create(client, owner.auth, to="worker", content="f", at=1)
    assert (await poll(lambda: get_schedule(client, owner, fine["schedule_id"]),
                       lambda s: s["run_count"] == 1))["state"] == "finished"
    aside = await poll(lambda: get_schedule(client, owner, broken["schedule_id"]), lambda s: s["state"] == "paused")
    assert "unknown time zone 'Gone/Zone'" in aside["last_skip_reason"] and aside["next_run_at"] is None


async def test_who_may_create_see_and_change_schedules(server: ServerHandle, client: httpx.AsyncClient) -> None:
    owner = await register(client)
    await with_worker(client, owner)
    r = await client.post(f"/api/networks/{owner.network_id}/invite", json={"role": "member", "max_uses": 1},
                          headers=owner.auth)
    member = await register(client)
    await client.post("/api/networks/join", json={"invite_code": r.json()["invite_code"]}, headers=member.auth)
    stranger = await register(client)
    # A member person may schedule; the owner may change the member's schedule, another member may not.
    mine = await create(client, member.auth, to="worker", content="m", every_seconds=3600,
                        network_id=owner.network_id)
    theirs = await create(client, owner.auth, to="worker", content="o", every_seconds=3600)
    r = await client.post(f"/api/schedules/{theirs['schedule_id']}/pause", headers=member.auth)
    assert r.status_code == 403 and r.json()["error"] == "schedule_not_allowed"
    assert (await client.post(f"/api/schedules/{mine['schedule_id']}/pause", headers=owner.auth)).status_code == 200
    seen = (await client.get("/api/schedules", headers=member.auth,
                             params={"network_id": owner.network_id})).json()["schedules"]
    assert {s["schedule_id"] for s in seen} == {mine["schedule_id"], theirs["schedule_id"]}
    # Someone outside the network sees nothing of it.
    assert (await client.get(f"/api/schedules/{mine['schedule_id']}", headers=stranger.auth)).status_code == 404
    assert (await client.get("/api/schedules", headers=stranger.auth)).json()["schedules"] == []
    # An agent of a plain member may not schedule (schedule_agents = admin); the owner's agent may.
    member_agent = await create_token(client, member, name="m-agent", alias="helper", network_id=owner.network_id)
    await tool(client, member_agent, "report_status", {"alias": "helper", "status": "idle"})
    refused = await tool_error(client, member_agent, "schedule_task", {"to": "worker", "content": "x",
                                                                       "every_seconds": 60})
    assert refused["error"] == "schedule_not_allowed" and "schedule_agents" in refused["message"]
    # The owner's agent may; the owner (whose token it used) may change its schedule, a member may not.
    owner_agent = await create_token(client, owner, name="o-agent", alias="planner")
    await tool(client, owner_agent, "report_status", {"alias": "planner", "status": "idle"})
    agents = (await tool(client, owner_agent, "schedule_task", {"to": "worker", "content": "a",
                                                                 "every_seconds": 60}))["schedule"]
    assert agents["from_name"] == "planner" and agents["from_kind"] == "agent"
    r = await client.post(f"/api/schedules/{agents['schedule_id']}/pause", headers=member.auth)
    assert r.status_code == 403
    r = await client.post(f"/api/schedules/{agents['schedule_id']}/pause", headers=owner.auth)
    assert r.status_code == 200 and r.json()["schedule"]["state"] == "paused"
    # Another agent may not change it; the agent itself may (over REST with its token too).
    r = await client.post(f"/api/schedules/{agents['schedule_id']}/resume",
                          headers={"Authorization": f"Bearer {member_agent}"})
    assert r.status_code == 403 and r.json()["error"] == "schedule_not_allowed"
    r = await client.post(f"/api/schedules/{agents['schedule_id']}/resume",
                          headers={"Authorization": f"Bearer {owner_agent}"})
    assert r.status_code == 200 and r.json()["schedule"]["state"] == "active"


async def test_a_schedule_whose_creator_lost_the_right_is_paused_at_its_next_run(
        server: ServerHandle, client: httpx.AsyncClient) -> None:
    owner = await register(client)
    await with_worker(client, owner)
    # An agent's schedule stops when its token is revoked.
    planner = await create_token(client, owner, name="planner", alias="planner")
    await tool(client, planner, "report_status", {"alias": "planner", "status": "idle"})
    made = (await tool(client, planner, "schedule_task", {"to": "worker", "content": "x",
                                                          "every_seconds": 3600}))["schedule"]
    tokens = (await client.get("/api/tokens", headers=owner.auth)).json()["tokens"]
    token_id = next(t["token_id"] for t in tokens if t["name"] == "planner")
    assert (await client.delete(f"/api/tokens/{token_id}", headers=owner.auth)).status_code == 200
    ran = (await client.post(f"/api/schedules/{made['schedule_id']}/run", headers=owner.auth)).json()
    assert ran["ran"] is False and "revoked" in ran["skipped_reason"]
    assert ran["schedule"]["state"] == "paused" and ran["schedule"]["next_run_at"] is None
    # A person's schedule stops when they leave the network.
    r = await client.post(f"/api/networks/{owner.network_id}/invite", json={"role": "member", "max_uses": 1},
                          headers=owner.auth)
    member = await register(client)
    await client.post("/api/networks/join", json={"invite_code": r.json()["invite_code"]}, headers=member.auth)
    theirs = await create(client, member.auth, to="worker", content="y", every_seconds=3600,
                          network_id=owner.network_id)
    r = await client.delete(f"/api/networks/{owner.network_id}/members/{member.user_id}", headers=owner.auth)
    assert r.status_code == 200, r.text
    ran = (await client.post(f"/api/schedules/{theirs['schedule_id']}/run", headers=owner.auth)).json()
    assert ran["ran"] is False and "no longer a member" in ran["skipped_reason"]
    assert ran["schedule"]["state"] == "paused"


async def test_mcp_tools_through_the_official_sdk(server: ServerHandle, client: httpx.AsyncClient) -> None:
    owner = await register(client)
    await with_worker(client, owner)
    planner = await create_token(client, owner, name="planner", alias="planner")
    async with sdk_session(server, planner) as session:
        await ok(session, "report_status", {"alias": "planner", "status": "idle"})
        tools = {t.name: t for t in (await session.list_tools()).tools}
        assert {"schedule_task", "list_schedules", "cancel_schedule"} <= set(tools)
        schema = tools["schedule_task"].input_schema
        assert "$defs" not in str(schema) and "$ref" not in str(schema)
        assert set(schema["required"]) == {"to", "content"}
        made = (await ok(session, "schedule_task", {"to": "worker", "content": "standup notes",
                                                    "cron": "0 9 * * 1-5", "tz": "Europe/Berlin"}))["schedule"]
        assert made["from_name"] == "planner" and made["from_kind"] == "agent" and made["cron"] == "0 9 * * 1-5"
        assert "every_seconds" in await fails(session, "schedule_task", {
            "to": "worker", "content": "x", "every_seconds": 0})
        listed = (await ok(session, "list_schedules"))["schedules"]
        assert [s["schedule_id"] for s in listed] == [made["schedule_id"]]
        assert "unknown time zone 'Nowhere/Town'" in await fails(session, "schedule_task", {
            "to": "worker", "content": "x", "cron": "0 9 * * *", "tz": "Nowhere/Town"})
        gone = await ok(session, "cancel_schedule", {"schedule_id": made["schedule_id"]})
        assert gone == {"ok": True, "schedule_id": made["schedule_id"], "deleted": True}
        assert "schedule_not_found" in await fails(session, "cancel_schedule", {"schedule_id": made["schedule_id"]})


async def test_agents_may_not_schedule_when_the_setting_is_off(tmp_path: Path) -> None:
    async with own_server(tmp_path, "off", schedule_agents="off") as server, \
            httpx.AsyncClient(base_url=server.url) as client:
        owner = await register(client)
        await with_worker(client, owner)
        planner = await create_token(client, owner, name="planner", alias="planner")
        await tool(client, planner, "report_status", {"alias": "planner", "status": "idle"})
        refused = await tool_error(client, planner, "schedule_task", {"to": "worker", "content": "x",
                                                                      "every_seconds": 60})
        assert refused["error"] == "schedule_not_allowed" and "setting is off" in refused["message"]
        assert (await create(client, owner.auth, to="worker", content="x", every_seconds=60))["state"] == "active"


# -- missed runs across a restart -------------------------------------------------------------------------------

def _pretend_down_for_an_hour(db_path: str, database_url: str | None, schedule_ids: list[str]) -> None:
    """Move the schedules' next runs an hour into the past, as if the hub had been down through them (in the SQLite
    file, or the PostgreSQL database of a `--engine postgresql` run)."""
    past = datetime.now(UTC).timestamp() - 3600
    if database_url:
        import psycopg  # noqa: PLC0415 (only with --engine postgresql)

        with psycopg.connect(database_url, autocommit=True) as pg:
            for sid in schedule_ids:
                pg.execute("UPDATE schedules SET next_run_ts = %s WHERE schedule_id = %s", (past, sid))
        return
    con = apsw.Connection(db_path)
    with con:
        for sid in schedule_ids:
            con.execute("UPDATE schedules SET next_run_ts = ? WHERE schedule_id = ?", (past, sid))
    con.close()


async def test_missed_runs_run_once_or_are_skipped_after_a_restart(tmp_path: Path) -> None:
    async with own_server(tmp_path, "hub") as server, httpx.AsyncClient(base_url=server.url) as client:
        owner = await register(client)
        await with_worker(client, owner)
        made = {name: await create(client, owner.auth, to="worker", content=name, **timing)
                for name, timing in {"every-run": {"every_seconds": 600},
                                     "every-skip": {"every_seconds": 600, "missed": "skip"},
                                     "once-run": {"at": 3000},
                                     "once-skip": {"at": 3000, "missed": "skip"}}.items()}
        db_path, database_url = server.hub.settings.db, server.hub.settings.database_url
    ids = {name: s["schedule_id"] for name, s in made.items()}
    _pretend_down_for_an_hour(db_path, database_url, list(ids.values()))
    async with own_server(tmp_path, "hub") as server, httpx.AsyncClient(base_url=server.url) as client:
        login = (await client.post("/api/auth/login", json={"username": owner.username,
                                                            "password": owner.password})).json()
        owner.token = login["token"]
        ran = await poll(lambda: get_schedule(client, owner, ids["every-run"]), lambda s: s["run_count"] >= 1)
        once_ran = await poll(lambda: get_schedule(client, owner, ids["once-run"]), lambda s: s["run_count"] >= 1)
        every_skip = await get_schedule(client, owner, ids["every-skip"])
        once_skip = await get_schedule(client, owner, ids["once-skip"])
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        # run_once: one run for the whole downtime (an `every` of 600 s missed six), then the next time ahead.
        assert ran["run_count"] == 1 and ran["skip_count"] == 0 and ran["next_run_at"] > now
        assert len(await scheduled_tasks(client, owner, ids["every-run"])) == 1
        assert once_ran["state"] == "finished" and once_ran["run_count"] == 1
        # skip: no task; the skip counted with its reason, and the next time ahead (a once: finished).
        assert every_skip["run_count"] == 0 and every_skip["skip_count"] == 1
        assert "missed while the hub was down" in every_skip["last_skip_reason"] and every_skip["next_run_at"] > now
        assert once_skip["run_count"] == 0 and once_skip["state"] == "finished" and once_skip["skip_count"] == 1
        assert await scheduled_tasks(client, owner, ids["every-skip"]) == []
        assert await scheduled_tasks(client, owner, ids["once-skip"]) == []


# -- CLI --------------------------------------------------------------------------------------------------------

@pytest.mark.subprocess
@pytest.mark.slow
async def test_cli_schedule_commands(server: ServerHandle, client: httpx.AsyncClient) -> None:
    owner = await register(client)
    await with_worker(client, owner)
    env = cli_env(server.url, owner.token)
    made = await run_cli("schedule", "add", "--to", "worker", "--cron", "0 9 * * 1-5", "--tz", "Europe/Berlin",
                         "--title", "standup", "tell us what you did", "--json", env=env)
    assert made.code == 0, made.err
    sid = made.json()["schedule"]["schedule_id"]
    bad = await run_cli("schedule", "add", "--to", "worker", "--cron", "0 9 * * *", "--tz", "Mars/Base", "x",
                        env=env)
    assert bad.code == 1 and "unknown time zone 'Mars/Base'" in bad.err
    usage = await run_cli("schedule", "add", "--to", "worker", "x", env=env)  # no --at/--every/--cron
    assert usage.code == 2
    listed = await run_cli("schedule", "list", env=env)
    assert listed.code == 0 and sid in listed.out and "cron 0 9 * * 1-5 (Europe/Berlin)" in listed.out
    assert [s["schedule_id"] for s in (await run_cli("schedule", "list", "--json", env=env)).json()["schedules"]] \
        == [sid]
    shown = await run_cli("schedule", "show", sid, env=env)
    assert shown.code == 0 and "standup" in shown.out and "active" in shown.out
    ran = await run_cli("schedule", "run", sid, env=env)
    assert ran.code == 0 and ran.out.startswith("ran: task "), ran.out
    task = await run_cli("task", ran.out.split()[2], env=env)
    assert task.code == 0 and f"sent by schedule {sid}" in task.out, task.out + task.err
    again = await run_cli("schedule", "run", sid, env=env)
    assert again.code == 0 and again.out.startswith("skipped: ") and "still open" in again.out
    paused = await run_cli("schedule", "pause", sid, "--json", env=env)
    assert paused.json()["schedule"]["state"] == "paused"
    assert "active" in (await run_cli("schedule", "resume", sid, env=env)).out
    assert (await run_cli("schedule", "rm", sid, env=env)).out.strip() == f"deleted schedule {sid}"
    missing = await run_cli("schedule", "show", sid, env=env)
    assert missing.code == 1 and "schedule_not_found" in missing.err + missing.out
