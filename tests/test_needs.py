"""Issue 19 item 6, "needs you" (docs/dashboard.md#needs-you): GET /api/needs through a real server, with what
waits for a person read from the database: a question appears and goes once answered; a task stuck with an offline
agent (stuck_delivered_seconds) or running without news (stuck_running_seconds); a runner's `unanswered` flag; the
loops the guard broke, still there after the hub restarts. And GET /api/networks/<id>/events, the feed's opening
read: the newest events with each reply's text, and the position from which the network stream goes on without
showing an event twice.

Time is real and short: the stuck settings are a second or two, and each wait polls the endpoint with a deadline.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from httpx_sse import aconnect_sse

from commhub_lib.config import Settings
from commhub_lib.runtime.server import ServerHandle
from commhub_lib.vocabulary import NEW_MESSAGE, NEW_REPLY, NEW_TASK
from tests.conftest import Account, create_token, make_settings, own_server, register, tool, tool_error

DEADLINE = 20.0  # seconds a polled condition may take on a loaded machine
STUCK_DELIVERED = 1.0
STUCK_RUNNING = 2.0


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """This module's server: tasks count as stuck after a second or two; presence lapses after a second."""
    return make_settings(tmp_path, stuck_delivered_seconds=STUCK_DELIVERED, stuck_running_seconds=STUCK_RUNNING,
                         presence_timeout_seconds=1.0)


async def needs_of(client: httpx.AsyncClient, account: Account, **params: str) -> dict[str, Any]:
    """GET /api/needs as the person."""
    r = await client.get("/api/needs", headers=account.auth, params=params)
    assert r.status_code == 200, r.text
    return r.json()


async def poll_needs(client: httpx.AsyncClient, account: Account, holds: Callable[[dict[str, Any]], bool],
                     what: str) -> dict[str, Any]:
    """Read /api/needs until `holds` is true of it (a deadline, not a sleep, bounds the wait)."""
    with trio.move_on_after(DEADLINE):
        while True:
            body = await needs_of(client, account)
            if holds(body):
                return body
            await trio.sleep(0.1)
    raise AssertionError(f"waited {DEADLINE} s for {what}; last: {json.dumps(body)[:2000]}")


def stuck_reasons(body: dict[str, Any]) -> dict[str, str]:
    """task_id -> why it is stuck."""
    return {s["task_id"]: s["reason"] for s in body["stuck"]}


async def worker_with_task(client: httpx.AsyncClient, account: Account, alias: str = "worker",
                           content: str = "Port the parser") -> tuple[str, str]:
    """An agent that has taken a task from the person (running); its token and the task id."""
    worker = await create_token(client, account, alias, alias=alias)
    await tool(client, worker, "report_status", {"alias": alias, "status": "working"})
    sent = await client.post("/api/tasks", headers=account.auth, json={"to": alias, "content": content})
    assert sent.status_code == 200, sent.text
    await tool(client, worker, "get_inbox", {})
    return worker, sent.json()["task_id"]


# --- questions ---------------------------------------------------------------------------------------------------

async def test_a_question_waits_for_its_person_until_it_is_answered(client: httpx.AsyncClient) -> None:
    account = await register(client)
    worker, task_id = await worker_with_task(client, account)
    assert (await needs_of(client, account))["questions"] == []

    await tool(client, worker, "send_reply", {"task_id": task_id, "status": "question",
                                              "content": "Which branch: main or release-2?"})
    body = await needs_of(client, account)
    [q] = body["questions"]
    assert q["kind"] == "task" and q["task_id"] == task_id and q["network_id"] == account.network_id
    assert q["question"] == "Which branch: main or release-2?" and q["agent"] == "worker"
    assert q["for_you"] is True and q["can_answer"] is True and q["asked"] == account.username
    assert q["content"] == "Port the parser" and q["network_name"] == "default"
    assert body["count"] == 1

    # Answered: it no longer waits for the person, though the task waits for the agent to go on (input_required).
    r = await client.post("/api/replies", headers=account.auth, json={"task_id": task_id, "content": "main"})
    assert r.status_code == 200, r.text
    assert (await needs_of(client, account))["questions"] == []
    task = (await client.get(f"/api/tasks/{task_id}", headers=account.auth)).json()["task"]
    assert task["status"] == "input_required"

    # A second question is a new one: it waits again, with its own text.
    await tool(client, worker, "send_reply", {"task_id": task_id, "status": "question", "content": "Squash?"})
    [q] = (await needs_of(client, account))["questions"]
    assert q["question"] == "Squash?"


async def test_a_question_of_another_member_shows_to_an_owner_who_may_answer_it(client: httpx.AsyncClient) -> None:
    """In a shared network the owner sees a member's waiting question (not theirs, but theirs to answer as an
    owner); the member sees it as their own; another member sees it waits for someone else; an agent's question to
    an agent is nobody's here."""
    owner = await register(client)
    member = await register(client)
    other = await register(client)
    invite = (await client.post(f"/api/networks/{owner.network_id}/invite", headers=owner.auth,
                                json={"max_uses": 2})).json()["invite_code"]
    for person in (member, other):
        joined = await client.post("/api/networks/join", headers=person.auth, json={"invite_code": invite})
        assert joined.status_code == 200, joined.text
    worker = await create_token(client, owner, "worker", alias="worker")
    await tool(client, worker, "report_status", {"alias": "worker"})
    sent = await client.post("/api/tasks", headers=member.auth, json={"to": "worker", "content": "Tidy the docs",
                                                                     "network_id": owner.network_id})
    task_id = sent.json()["task_id"]
    boss = await create_token(client, owner, "boss", alias="boss")
    await tool(client, boss, "report_status", {"alias": "boss"})
    agents_task = (await tool(client, boss, "send_task", {"to": "worker", "content": "Between agents"}))["task_id"]
    await tool(client, worker, "get_inbox", {})
    await tool(client, worker, "send_reply", {"task_id": task_id, "status": "question", "content": "Which docs?"})
    await tool(client, worker, "send_reply", {"task_id": agents_task, "status": "question", "content": "Agent q?"})

    [mine] = (await needs_of(client, member, network_id=owner.network_id))["questions"]
    assert mine["for_you"] is True and mine["can_answer"] is True and mine["asked"] == member.username
    [seen] = (await needs_of(client, owner))["questions"]
    assert seen["task_id"] == task_id and seen["for_you"] is False and seen["can_answer"] is True
    # Another plain member sees that it waits, but not for them, and may not answer it.
    [theirs] = (await needs_of(client, other, network_id=owner.network_id))["questions"]
    assert theirs["for_you"] is False and theirs["can_answer"] is False
    r = await client.post("/api/replies", headers=other.auth, json={"task_id": task_id, "content": "these",
                                                                     "network_id": owner.network_id})
    assert r.status_code == 403, r.text


async def test_an_approval_is_a_question_answered_from_the_overview(client: httpx.AsyncClient) -> None:
    """A runner's approval request on a task takes the task question's place (one entry, answered yes/no), and one
    to the agent's owner (no task) is a question too."""
    account = await register(client)
    worker, task_id = await worker_with_task(client, account)
    bearer = {"Authorization": f"Bearer {worker}"}
    on_task = (await client.post("/api/approvals", headers=bearer, json={
        "task_id": task_id, "question": "May I run `make deploy`?"})).json()
    to_owner = (await client.post("/api/approvals", headers=bearer, json={"question": "May I push?"})).json()
    questions = (await needs_of(client, account))["questions"]
    assert {q["approval_id"]: (q["kind"], q["task_id"], q["question"]) for q in questions} == {
        on_task["approval_id"]: ("approval", task_id, "May I run `make deploy`?"),
        to_owner["approval_id"]: ("approval", None, "May I push?")}
    assert all(q["for_you"] for q in questions)
    for approval in (on_task, to_owner):
        r = await client.post("/api/replies", headers=account.auth, json={"message_id": approval["approval_id"],
                                                                           "content": "yes"})
        assert r.status_code == 200, r.text
    assert (await needs_of(client, account))["questions"] == []


# --- stuck tasks -------------------------------------------------------------------------------------------------

async def test_a_task_delivered_to_an_offline_agent_is_stuck_after_the_setting(
        client: httpx.AsyncClient, server: ServerHandle) -> None:
    """`sleepy` goes offline (presence lapses after a second) with a task waiting: stuck after
    stuck_delivered_seconds. `awake` holds its stream open: its task, as old, is not stuck (it will be picked up)."""
    account = await register(client)
    sleepy = await create_token(client, account, "sleepy", alias="sleepy")
    awake = await create_token(client, account, "awake", alias="awake")
    await tool(client, sleepy, "report_status", {"alias": "sleepy"})
    await tool(client, awake, "report_status", {"alias": "awake"})
    async with aconnect_sse(client, "GET", "/events/awake", headers={"Authorization": f"Bearer {awake}"}):
        tasks = {}
        for alias in ("sleepy", "awake"):
            sent = await client.post("/api/tasks", headers=account.auth, json={"to": alias, "content": f"For {alias}"})
            tasks[alias] = sent.json()["task_id"]
        assert tasks["sleepy"] not in stuck_reasons(await needs_of(client, account))  # not yet
        body = await poll_needs(client, account, lambda b: tasks["sleepy"] in stuck_reasons(b),
                                "sleepy's task to be stuck")
        assert stuck_reasons(body) == {tasks["sleepy"]: "offline"}
        [entry] = body["stuck"]
        assert entry["to_name"] == "sleepy" and entry["status"] == "delivered" and "offline" in entry["detail"]
        assert body["stuck_delivered_seconds"] == STUCK_DELIVERED

    # Back online, it picks the task up: nothing is stuck any more.
    await tool(client, sleepy, "get_inbox", {})
    assert tasks["sleepy"] not in stuck_reasons(await needs_of(client, account))


@pytest.mark.slow  # two stuck_running_seconds of real time, polled
async def test_a_running_task_without_news_is_stuck_until_the_agent_reports(client: httpx.AsyncClient) -> None:
    account = await register(client)
    worker, task_id = await worker_with_task(client, account)
    assert task_id not in stuck_reasons(await needs_of(client, account))
    body = await poll_needs(client, account, lambda b: stuck_reasons(b).get(task_id) == "silent",
                            "the quiet running task to be stuck")
    [entry] = body["stuck"]
    assert entry["status"] == "running" and "no progress" in entry["detail"]

    # A progress reply is news: the task is not stuck (for another stuck_running_seconds).
    await tool(client, worker, "send_reply", {"task_id": task_id, "status": "progress", "content": "halfway"})
    assert task_id not in stuck_reasons(await needs_of(client, account))
    await poll_needs(client, account, lambda b: stuck_reasons(b).get(task_id) == "silent", "quiet again")
    await tool(client, worker, "send_reply", {"task_id": task_id, "status": "done", "content": "ported"})
    assert task_id not in stuck_reasons(await needs_of(client, account))


async def test_a_task_the_runner_flagged_unanswered_is_stuck_until_it_ends(client: httpx.AsyncClient) -> None:
    account = await register(client)
    worker, task_id = await worker_with_task(client, account)
    r = await client.post(f"/api/tasks/{task_id}/flag", headers={"Authorization": f"Bearer {worker}"},
                          json={"flag": "unanswered", "note": "the turn ended without a reply"})
    assert r.status_code == 200, r.text
    body = await needs_of(client, account)
    assert stuck_reasons(body) == {task_id: "unanswered"}  # flagged first, whatever else holds
    assert "without answering" in body["stuck"][0]["detail"]
    await tool(client, worker, "send_reply", {"task_id": task_id, "status": "failed", "content": "cannot"})
    assert stuck_reasons(await needs_of(client, account)) == {}


@pytest.mark.slow  # waits out both stuck thresholds
async def test_stuck_checks_are_off_at_zero(tmp_path: Path) -> None:
    async with own_server(tmp_path, "off", stuck_delivered_seconds=0, stuck_running_seconds=0,
                          presence_timeout_seconds=1.0) as handle, \
            httpx.AsyncClient(base_url=handle.url, timeout=30) as client:
        account = await register(client)
        _, task_id = await worker_with_task(client, account)
        await client.post("/api/tasks", headers=account.auth, json={"to": "worker", "content": "second"})
        with trio.move_on_after(STUCK_RUNNING + 1.5):  # past both thresholds of the other tests: still nothing
            while True:
                assert (await needs_of(client, account))["stuck"] == []
                await trio.sleep(0.2)


# --- loops -------------------------------------------------------------------------------------------------------

async def test_loops_the_guard_broke_are_kept_across_a_restart(tmp_path: Path) -> None:
    """The loop_broken events are read from the database: a person who opens the dashboard later, even after the hub
    restarted, still sees the pair (one entry per pair, counting its cuts)."""
    async with own_server(tmp_path, "loops", pair_rate_per_minute=3) as handle, \
            httpx.AsyncClient(base_url=handle.url, timeout=30) as client:
        account = await register(client)
        ping = await create_token(client, account, "ping", alias="ping")
        pong = await create_token(client, account, "pong", alias="pong")
        await tool(client, ping, "report_status", {"alias": "ping"})
        await tool(client, pong, "report_status", {"alias": "pong"})
        assert (await needs_of(client, account))["loops"] == []
        for n in range(3):
            await tool(client, ping, "send_message", {"to": "pong", "content": f"again {n}"})
        refused = await tool_error(client, ping, "send_message", {"to": "pong", "content": "and again"})
        assert refused["error"] == "rate_limited"
        [loop] = (await needs_of(client, account))["loops"]
        assert (loop["from"], loop["to"], loop["limit"], loop["cuts"]) == ("ping", "pong", 3, 1)
    async with own_server(tmp_path, "loops") as handle, httpx.AsyncClient(base_url=handle.url, timeout=30) as client:
        body = await needs_of(client, account)
        [after] = body["loops"]
        assert after == loop and body["count"] == 1


# --- access ------------------------------------------------------------------------------------------------------

async def test_needs_are_a_persons_and_only_of_their_networks(client: httpx.AsyncClient) -> None:
    account = await register(client)
    stranger = await register(client)
    r = await client.get("/api/needs", headers=account.net_auth)
    assert r.status_code == 403 and r.json()["error"] == "user_token_required", r.text
    r = await client.get("/api/needs", headers=stranger.auth, params={"network_id": account.network_id})
    assert r.status_code == 404, r.text
    _, task_id = await worker_with_task(client, account)
    await client.post(f"/api/tasks/{task_id}/flag", headers=account.auth, json={"flag": "unanswered"})
    assert (await needs_of(client, stranger))["stuck"] == []
    r = await client.get(f"/api/networks/{account.network_id}/events", headers=stranger.auth)
    assert r.status_code == 404, r.text


# --- the feed's opening read -------------------------------------------------------------------------------------

async def test_the_feed_opens_with_the_newest_events_and_the_stream_goes_on_from_there(
        client: httpx.AsyncClient) -> None:
    account = await register(client)
    worker, task_id = await worker_with_task(client, account)
    await tool(client, worker, "send_reply", {"task_id": task_id, "status": "done", "content": "All 41 tests pass"})
    path = f"/api/networks/{account.network_id}/events"
    r = await client.get(path, headers=account.auth)
    assert r.status_code == 200, r.text
    body = r.json()
    events = body["events"]
    assert [e["event"] for e in events] == [NEW_TASK, NEW_REPLY]  # oldest first
    assert events[0]["data"]["task_id"] == task_id and events[0]["content"] is None
    assert events[1]["alias"] == account.username and events[1]["content"] == "All 41 tests pass"
    assert body["last_event_id"] == events[-1]["id"] and events[0]["id"] < events[1]["id"]
    assert [e["id"] for e in (await client.get(path, headers=account.auth, params={"limit": 1})).json()["events"]] \
        == [events[-1]["id"]]
    after = (await client.get(path, headers=account.auth, params={"after": events[0]["id"]})).json()
    assert [e["id"] for e in after["events"]] == [events[1]["id"]]

    # The network stream resumed from last_event_id replays nothing already read; what follows arrives once.
    seen: list[tuple[str, str]] = []
    headers = {**account.auth, "Last-Event-ID": str(body["last_event_id"])}
    async with aconnect_sse(client, "GET", "/events", params={"network_id": account.network_id},
                            headers=headers) as source:
        await client.post("/api/messages", headers=account.auth, json={"to": "worker", "content": "thanks"})
        with trio.move_on_after(DEADLINE):
            async for sse in source.aiter_sse():
                if sse.data:
                    seen.append((sse.event, sse.id))
                    break
    assert seen and seen[0][0] == NEW_MESSAGE and int(seen[0][1]) > body["last_event_id"]


async def test_an_empty_network_opens_at_its_position(client: httpx.AsyncClient) -> None:
    account = await register(client)
    body = (await client.get(f"/api/networks/{account.network_id}/events", headers=account.auth)).json()
    assert body["events"] == [] and body["last_event_id"] == 0
    r = await client.get(f"/api/networks/{account.network_id}/events", headers=account.net_auth)
    assert r.status_code == 403, r.text


# --- the queries -------------------------------------------------------------------------------------------------

def test_the_needs_queries_read_along_their_indexes(tmp_path: Path) -> None:
    """Each query of store/needs.py reads along its index (schema.sql, migration 0016), never a scan of a table."""
    from commhub_lib.db import Database
    from commhub_lib.store import events as event_store
    from commhub_lib.store import needs as needs_store

    db = Database(str(tmp_path / "plans.db"))
    nets = ["net_a", "net_b"]
    con = sqlite3.connect(str(tmp_path / "plans.db"))

    def plan(sql: str, params: tuple[Any, ...]) -> str:
        return " | ".join(row[3] for row in con.execute("EXPLAIN QUERY PLAN " + sql, params))

    plans: list[str] = []
    real_query = db.query

    def recording(sql: str, params: Any = ()) -> list[dict[str, Any]]:
        plans.append(plan(sql, tuple(params)))
        return real_query(sql, params)

    db.query = recording  # type: ignore[method-assign]
    needs_store.questions_for_people(db, nets, 10)
    needs_store.flagged_open_tasks(db, nets, "unanswered", 10)
    needs_store.delivered_before(db, json.dumps([["net_a", "x"]]), 1e10, 10)
    needs_store.running_quiet_since(db, nets, "2026-01-01 00:00:00", 10)
    needs_store.loops_broken_since(db, "net_a", "2026-01-01 00:00:00", 10)
    event_store.recent_network_events(db, "net_a", 10, 1000)
    expected = ["tasks_by_status", "messages_questions", "messages_answers", "tasks_flagged", "tasks_by_recipient",
                "task_events_by_task", "events_loop_broken", "INTEGER PRIMARY KEY (rowid>?)"]
    text = "\n".join(plans)
    for index in expected:
        assert index in text, (index, text)
    assert "SCAN t" not in text and "SCAN events" not in text and "SCAN m" not in text, text
    db.close()
    con.close()
