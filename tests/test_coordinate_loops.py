"""Issue 19 item 2, no runaway loops (docs/loop-guard.md): through a real server, two agents that answer each other
for ever are cut off by the per-pair rate limit, a person sees it (the `loop_broken` event on the network stream and
a notice on the dashboard's Overview), and the same content again within the window is not delivered twice.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from httpx_sse import aconnect_sse

from commhub_lib.config import Settings
from commhub_lib.runtime.server import ServerHandle
from commhub_lib.service import loopguard
from commhub_lib.store import events as event_store
from commhub_lib.store import messages as message_store
from commhub_lib.vocabulary import AGENT, LOOP_BROKEN
from tests.conftest import Account, create_token, make_settings, own_server, register, tool, tool_error
from tests.test_dashboard import Browser, chrome, chrome_available, log_in, page  # noqa: F401 (fixtures)
from tests.test_sse import wait_for

LIMIT = 10  # the pair limit of this module's server (the default is 30; a small one keeps the loops short)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """This module's server: the loop guard on (the tests' defaults lift the pair limit), at LIMIT a minute."""
    return make_settings(tmp_path, pair_rate_per_minute=LIMIT)


class Pair:
    """A person and two agents, `ping` and `pong`, each on its own network token, both online."""

    def __init__(self, account: Account, ping: str, pong: str) -> None:
        self.account = account
        self.ping = ping
        self.pong = pong


async def pair(client: httpx.AsyncClient) -> Pair:
    """A new user with the agents `ping` and `pong` (each has claimed its alias)."""
    account = await register(client)
    p = Pair(account, await create_token(client, account, "ping", alias="ping"),
             await create_token(client, account, "pong", alias="pong"))
    await tool(client, p.ping, "report_status", {"alias": "ping"})
    await tool(client, p.pong, "report_status", {"alias": "pong"})
    return p


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- two agents answering each other for ever -------------------------------------------------------------------

async def test_two_agents_answering_each_other_for_ever_are_cut_and_a_person_sees_it(
        client: httpx.AsyncClient, server: ServerHandle) -> None:
    """`ping` (over MCP) and `pong` (over REST) answer every message the other sends, a bounded "for ever": the
    loop is cut after LIMIT sends of one pair, the refusal names the pair and the setting, and the person's network
    stream receives one `loop_broken` event naming the pair."""
    p = await pair(client)
    seen: list[dict[str, Any]] = []
    subscribed = trio.Event()

    async def person_watches() -> None:
        params = {"network_id": p.account.network_id}
        async with aconnect_sse(client, "GET", "/events", params=params, headers=p.account.auth) as source:
            subscribed.set()
            async for sse in source.aiter_sse():
                if sse.event == LOOP_BROKEN:
                    seen.append(json.loads(sse.data))

    async def answer_over_mcp(n: int) -> dict[str, Any]:
        inbox = await tool(client, p.ping, "get_inbox", {})
        assert inbox["items"], inbox
        await tool(client, p.ping, "ack_inbox", {"all": True})
        result = await client.post("/mcp", headers=_bearer(p.ping), json={
            "jsonrpc": "2.0", "id": n, "method": "tools/call",
            "params": {"name": "send_message", "arguments": {"to": "pong", "content": f"ping {n}"}}})
        return result.json()["result"]

    async def answer_over_rest(n: int) -> httpx.Response:
        inbox = await tool(client, p.pong, "get_inbox", {})
        assert inbox["items"], inbox
        await tool(client, p.pong, "ack_inbox", {"all": True})
        return await client.post("/api/messages", json={"to": "ping", "content": f"pong {n}"},
                                 headers=_bearer(p.pong))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(person_watches)
        await subscribed.wait()
        first = await client.post("/api/messages", json={"to": "pong", "content": "ping 0"}, headers=_bearer(p.ping))
        assert first.status_code == 200 and first.json()["duplicate"] is False, first.text
        cut: dict[str, Any] | None = None
        rounds = 0
        for n in range(1, 4 * LIMIT):  # bounded: without the guard this would run all of them
            rounds = n
            answer = await answer_over_rest(n)
            if answer.status_code != 200:
                cut = {"surface": "rest", "status": answer.status_code, **answer.json()}
                break
            result = await answer_over_mcp(n)
            if result.get("isError"):
                cut = {"surface": "mcp", **result["structuredContent"]}
                break
        assert cut is not None, "the loop was never cut"
        # ping sent first: its LIMIT+1-th send to pong is the first one refused (each pair has its own budget; a
        # slow machine may have refilled one more in the meantime).
        assert LIMIT <= rounds <= LIMIT + 1, (rounds, cut)
        assert cut["error"] == "rate_limited"
        assert "'ping'" in cut["message"] and "'pong'" in cut["message"]
        assert "COMMHUB_PAIR_RATE_PER_MINUTE" in cut["message"] and str(LIMIT) in cut["message"]
        await wait_for(lambda: bool(seen), what="the loop_broken event on the person's network stream")
        nursery.cancel_scope.cancel()
    event = seen[0]
    assert event["alias"] == "pong" and event["from"] == "ping" and event["from_kind"] == AGENT
    assert event["to"] == "pong" and event["limit"] == LIMIT and event["retry_after"] >= 1
    # It names the last message ping delivered to pong before the cut.
    last = await client.get("/api/messages", params={"alias": "pong", "limit": 1}, headers=p.account.auth)
    assert event["message_id"] == last.json()["messages"][0]["message_id"]
    # One event per run of refusals, however many sends are refused after it.
    again = await tool_error(client, p.ping, "send_message", {"to": "pong", "content": "still there?"})
    assert again["error"] == "rate_limited"
    rows = event_store.network_events_after(server.hub.db, p.account.network_id, 0, 1000)
    assert [r["event"] for r in rows].count(LOOP_BROKEN) == 1
    # The pair is cut, not the agents: pong may still write to ping, and ping to someone else.
    other = await create_token(client, p.account, "third", alias="third")
    await tool(client, other, "report_status", {"alias": "third"})
    assert (await tool(client, p.ping, "send_task", {"to": "third", "content": "a fresh task"}))["duplicate"] is False


async def test_the_pair_limit_is_429_over_rest_and_rate_limited_over_mcp(client: httpx.AsyncClient) -> None:
    """Past LIMIT sends (tasks and messages together) from one agent to another: REST answers 429 with
    Retry-After and the error naming the pair and the setting; MCP the tool error `rate_limited` with the same
    text; nothing is stored. A person is never held back by it."""
    p = await pair(client)
    for n in range(LIMIT):
        path, body = ("/api/tasks", {"to": "pong", "content": f"task {n}"}) if n % 2 else \
            ("/api/messages", {"to": "pong", "content": f"message {n}"})
        r = await client.post(path, json=body, headers=_bearer(p.ping))
        assert r.status_code == 200, (n, r.text)
    r = await client.post("/api/tasks", json={"to": "pong", "content": "one too many"}, headers=_bearer(p.ping))
    assert r.status_code == 429, r.text
    assert int(r.headers["Retry-After"]) >= 1
    body = r.json()
    assert body["error"] == "rate_limited"
    assert body["message"].startswith(f"loop guard: 'ping' sent 'pong' more than {LIMIT} tasks and messages")
    assert "COMMHUB_PAIR_RATE_PER_MINUTE" in body["message"] and "nothing was sent" in body["message"]
    err = await tool_error(client, p.ping, "send_message", {"to": "pong", "content": "and another"})
    assert err["error"] == "rate_limited" and "COMMHUB_PAIR_RATE_PER_MINUTE" in err["message"]
    inbox = await client.get("/api/messages", params={"alias": "pong", "limit": 100}, headers=p.account.auth)
    assert len(inbox.json()["messages"]) == LIMIT
    # A person (user token) writes to pong as often as they like.
    for n in range(3):
        r = await client.post("/api/messages", json={"to": "pong", "content": f"from a person {n}"},
                              headers=p.account.auth)
        assert r.status_code == 200, r.text


# --- duplicates ------------------------------------------------------------------------------------------------

async def test_the_same_message_within_the_window_is_delivered_once(client: httpx.AsyncClient,
                                                                    server: ServerHandle) -> None:
    """The same text from the same agent to the same agent again: the answer names the original with duplicate:
    true (REST and MCP), the inbox holds it once; other text, another recipient or a person's send are new."""
    p = await pair(client)
    first = await client.post("/api/messages", json={"to": "pong", "content": "thanks!"}, headers=_bearer(p.ping))
    assert first.status_code == 200 and first.json()["duplicate"] is False
    original = first.json()["message_id"]
    again = await client.post("/api/messages", json={"to": "pong", "content": "thanks!"}, headers=_bearer(p.ping))
    assert again.status_code == 200, again.text
    assert again.json()["duplicate"] is True and again.json()["message_id"] == original
    over_mcp = await tool(client, p.ping, "send_message", {"to": "pong", "content": "thanks!"})
    assert over_mcp["duplicate"] is True and over_mcp["message_id"] == original
    other = await tool(client, p.ping, "send_message", {"to": "pong", "content": "thanks!!"})
    assert other["duplicate"] is False and other["message_id"] != original
    back = await tool(client, p.pong, "send_message", {"to": "ping", "content": "thanks!"})  # the other direction
    assert back["duplicate"] is False
    notes = [await tool(client, p.ping, "send_message", {"to": "ping", "content": "note"}) for _ in range(2)]
    assert [n["duplicate"] for n in notes] == [False, False]  # an agent's notes to itself are no loop
    person = [await client.post("/api/messages", json={"to": "pong", "content": "thanks!"}, headers=p.account.auth)
              for _ in range(2)]
    assert [r.json()["duplicate"] for r in person] == [False, False]
    inbox = await tool(client, p.pong, "get_inbox", {})
    texts = [i["content"] for i in inbox["items"]]
    assert texts.count("thanks!") == 3 and texts.count("thanks!!") == 1, texts  # ping's once, the person's twice
    # The database is asked about a likely duplicate through the recipient's items of the window, never a scan.
    plan = server.hub.db.query("EXPLAIN QUERY PLAN " + message_store.FIND_DUPLICATE, ("n", "b", 0.0, 1, "a"))
    assert [row["detail"] for row in plan] == [
        "SEARCH messages USING INDEX messages_by_recipient (network_id=? AND to_name=? AND created_ts>?)"], plan


async def test_the_same_task_within_the_window_is_the_original(client: httpx.AsyncClient) -> None:
    """send_task with the same title, content and context again: the original task (duplicate: true), over REST
    and MCP; a different context is a new task. The idempotency key stays the exact mechanism: the same key finds
    its own task whatever the content, another key makes another task even with the same content."""
    p = await pair(client)
    body = {"to": "pong", "title": "check", "content": "run the tests", "context": "branch x"}
    first = await client.post("/api/tasks", json=body, headers=_bearer(p.ping))
    assert first.status_code == 200 and first.json()["duplicate"] is False
    task_id = first.json()["task_id"]
    again = await client.post("/api/tasks", json=body, headers=_bearer(p.ping))
    assert again.json()["duplicate"] is True and again.json()["task_id"] == task_id
    over_mcp = await tool(client, p.ping, "send_task", {k: v for k, v in body.items()})
    assert over_mcp["duplicate"] is True and over_mcp["task_id"] == task_id
    other = await tool(client, p.ping, "send_task", {**body, "context": "branch y"})
    assert other["duplicate"] is False and other["task_id"] != task_id
    keyed = await tool(client, p.ping, "send_task", {**body, "idempotency_key": "k1"})
    assert keyed["duplicate"] is False and keyed["task_id"] != task_id
    assert (await tool(client, p.ping, "send_task", {**body, "content": "other text", "idempotency_key": "k1"})) \
        == {**keyed, "duplicate": True}
    rekeyed = await tool(client, p.ping, "send_task", {**body, "idempotency_key": "k2"})
    assert rekeyed["duplicate"] is False and rekeyed["task_id"] not in (task_id, keyed["task_id"])
    tasks = await client.get("/api/tasks", params={"to": "pong"}, headers=p.account.auth)
    assert len(tasks.json()["tasks"]) == 4


async def test_after_the_window_the_same_content_is_delivered_again(client: httpx.AsyncClient,
                                                                    server: ServerHandle) -> None:
    """Once the original is older than duplicate_window_seconds, the same text is a new message (the original's
    time is moved back past the window in the database, rather than waiting 300 s)."""
    p = await pair(client)
    first = await tool(client, p.ping, "send_message", {"to": "pong", "content": "status?"})
    window = server.hub.settings.duplicate_window_seconds
    assert window == 300.0  # the default
    with server.hub.db.write():
        server.hub.db.execute("UPDATE messages SET created_ts = created_ts - ? WHERE message_id = ?",
                              (window + 1, first["message_id"]))
    later = await tool(client, p.ping, "send_message", {"to": "pong", "content": "status?"})
    assert later["duplicate"] is False and later["message_id"] != first["message_id"]
    # ... and that one is the original of the next repeat.
    assert (await tool(client, p.ping, "send_message", {"to": "pong", "content": "status?"}))["message_id"] == \
        later["message_id"]


async def test_a_window_of_zero_turns_duplicates_off(tmp_path: Path) -> None:
    """COMMHUB_DUPLICATE_WINDOW_SECONDS=0: every send is delivered (and no hash is stored)."""
    async with own_server(tmp_path, "nodup", duplicate_window_seconds=0) as server, \
            httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        p = await pair(client)
        sent = [await tool(client, p.ping, "send_message", {"to": "pong", "content": "same"}) for _ in range(2)]
        assert [s["duplicate"] for s in sent] == [False, False] and sent[0]["message_id"] != sent[1]["message_id"]
        rows = server.hub.db.query("SELECT content_hash FROM messages WHERE to_name = 'pong'")
        assert [r["content_hash"] for r in rows] == [None, None]


def test_the_defaults_are_300_seconds_and_30_a_minute() -> None:
    """The issue's defaults."""
    assert Settings().duplicate_window_seconds == 300.0 and Settings().pair_rate_per_minute == 30


# --- the person's dashboard ------------------------------------------------------------------------------------

@pytest.mark.browser
@pytest.mark.skipif(not chrome_available(), reason="chromium and chromium-driver are not installed")
async def test_the_dashboard_overview_shows_the_broken_loop(page: Browser,  # noqa: F811
                                                            client: httpx.AsyncClient) -> None:
    """In a real browser: with the Overview open, a loop cut by the guard shows a notice naming the pair (the card
    is hidden before), and the live feed has its line; it is still there after a reload; dismiss hides it, also
    after a reload."""
    p = await pair(client)
    await log_in(page, p.account)
    assert not await page.run(lambda d: d.find_element("id", "loops-card").is_displayed())
    for n in range(LIMIT + 1):
        r = await client.post("/api/messages", json={"to": "pong", "content": f"ping {n}"}, headers=_bearer(p.ping))
        assert r.status_code == (200 if n < LIMIT else 429), r.text
    await page.wait_for(lambda d: d.find_element("id", "loops-card").is_displayed(), "the loop notice")
    text = await page.run(lambda d: d.find_element("id", "loops").text)
    assert "ping → pong" in text and f"more than {LIMIT}" in text, text
    feed = await page.run(lambda d: d.find_element("id", "feed").text)
    assert "loop broken: ping → pong" in feed, feed
    await page.screenshot("loop-notice")
    # The notice is read from the hub (GET /api/needs), not kept by the page: a reload still shows it.
    await page.open("/")
    await page.wait_for(lambda d: d.find_element("id", "loops-card").is_displayed(), "the notice after a reload")
    await page.run(lambda d: d.find_element("css selector", "#loops .loop-notice button").click())
    await page.wait_for(lambda d: not d.find_element("id", "loops-card").is_displayed(), "the notice dismissed")
    # Dismissed stays dismissed (this browser remembers it) until the pair is cut again.
    await page.open("/")
    await page.wait_for(lambda d: d.find_element("id", "live-state").text == "live", "the page again")
    await page.wait_for(lambda d: "Nothing waits" in d.find_element("id", "needs-card").text, "needs read again")
    assert not await page.run(lambda d: d.find_element("id", "loops-card").is_displayed())


async def test_a_restarted_hub_still_finds_the_duplicate(client: httpx.AsyncClient, server: ServerHandle) -> None:
    """The hashes are in the database: a loop guard made afresh (as after a restart, its memory empty) reads the
    last window's hashes back and still answers the repeat with the original."""
    p = await pair(client)
    first = await tool(client, p.ping, "send_message", {"to": "pong", "content": "are you there?"})
    server.hub.loop_guard = None
    again = await tool(client, p.ping, "send_message", {"to": "pong", "content": "are you there?"})
    assert again["duplicate"] is True and again["message_id"] == first["message_id"]


def test_the_memory_in_front_of_the_index_never_hides_a_hash_of_the_window() -> None:
    """RecentHashes says "certainly not stored" only while it holds every hash of the window: right after it was
    made (complete_from = now) every hash may be there; past the cap it forgets the oldest and says "maybe" for
    every hash until what it forgot has left the window."""
    recent = loopguard.RecentHashes(window=300.0, cap=2, complete_from=1000.0)
    assert recent.may_have(7, 1000.0)  # made now: the database may hold hashes of the last 300 s
    assert not recent.may_have(7, 1301.0)  # a whole window later, with nothing stored: certainly not
    recent.note(1, 1400.0)
    recent.note(2, 1401.0)
    assert recent.may_have(1, 1402.0) and not recent.may_have(3, 1402.0)
    recent.note(3, 1402.0)  # past the cap: hash 1 is forgotten while still in the window
    assert recent.may_have(1, 1403.0) and recent.may_have(99, 1403.0)
    assert not recent.may_have(99, 1400.0 + 301.0)  # once 1400 has left the window
    recent.note(4, 1800.0)  # everything older than the window is forgotten
    assert list(recent.seen) == [4]
