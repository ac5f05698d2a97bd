"""What `commhub run` needs from the server (docs/runner-server.md): task flags, the approvals relay over REST
and as the MCP tool `permission_prompt` (through the official Python SDK), and `answers_approval` on new_reply."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import httpx2
import trio
from httpx_sse import aconnect_sse
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

from commhub_lib.runtime.server import ServerHandle
from commhub_lib.service.verdicts import verdict
from tests.conftest import Account, create_token, own_server, register, tool

WAIT = 10.0  # upper bound for anything that should happen "at once"


@dataclass
class Team:
    """The network's owner (system admin), a plain member, and two agents: boss (sends) and worker (runs)."""

    owner: Account
    member: Account
    boss: str
    worker: str

    def agent(self, token: str) -> dict[str, str]:
        """Headers with an agent's network token."""
        return {"Authorization": f"Bearer {token}"}


async def team(client: httpx.AsyncClient) -> Team:
    """Register the people, make the agents' tokens and claim their aliases."""
    owner = await register(client)
    r = await client.post(f"/api/networks/{owner.network_id}/invite", json={"role": "member"}, headers=owner.auth)
    member = await register(client)
    r = await client.post("/api/networks/join", json={"invite_code": r.json()["invite_code"]}, headers=member.auth)
    assert r.status_code == 200, r.text
    boss = await create_token(client, owner, "boss", alias="boss")
    worker = await create_token(client, owner, "worker", alias="worker")
    for token, alias in ((boss, "boss"), (worker, "worker")):
        await tool(client, token, "report_status", {"alias": alias, "status": "idle"})
    return Team(owner, member, boss, worker)


async def agent_task(client: httpx.AsyncClient, t: Team, content: str = "build it") -> str:
    """A task from boss to worker, taken by worker (running)."""
    sent = await tool(client, t.boss, "send_task", {"to": "worker", "content": content})
    await tool(client, t.worker, "get_inbox", {})
    return sent["task_id"]


async def person_task(client: httpx.AsyncClient, t: Team, content: str = "deploy it") -> str:
    """A task from the owner (a person) to worker, taken by worker (running)."""
    r = await client.post("/api/tasks", json={"to": "worker", "content": content}, headers=t.owner.auth)
    assert r.status_code == 200, r.text
    await tool(client, t.worker, "get_inbox", {})
    return r.json()["task_id"]


async def flag(client: httpx.AsyncClient, headers: dict[str, str], task_id: str, value: str | None,
               note: str | None = None) -> httpx.Response:
    body: dict[str, Any] = {"flag": value}
    if note is not None:
        body["note"] = note
    return await client.post(f"/api/tasks/{task_id}/flag", json=body, headers=headers)


def waiters(server: ServerHandle) -> int:
    """Broker subscribers that are not streams: the long-poll waiters (approvals, get_inbox)."""
    broker = server.hub.broker
    return broker.subscriber_count() - (broker.streams_opened - broker.streams_closed)


async def wait_until(condition: Callable[[], bool]) -> None:
    """Poll a condition (bounded) instead of sleeping a fixed time."""
    deadline = trio.current_time() + WAIT
    while not condition():
        assert trio.current_time() < deadline, "condition not reached in time"
        await trio.sleep(0.01)


# --- flags ------------------------------------------------------------------------------------------------

async def test_the_recipient_flags_its_task_and_every_view_of_the_task_shows_it(client: httpx.AsyncClient) -> None:
    t = await team(client)
    task_id = await agent_task(client, t)
    r = await flag(client, t.agent(t.worker), task_id, "unanswered", "the turn ended without a reply")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["ok"] is True and body["task_id"] == task_id and body["flag"] == "unanswered"
    flagged_at = body["flagged_at"]
    assert flagged_at

    detail = (await client.get(f"/api/tasks/{task_id}", headers=t.owner.auth)).json()
    assert detail["task"]["flag"] == "unanswered" and detail["task"]["flagged_at"] == flagged_at
    assert detail["task"]["status"] == "running"  # a flag is no answer: the task stays open
    flagged = [e for e in detail["events"] if e["event"] == "flagged"]
    assert len(flagged) == 1 and flagged[0]["actor"] == "worker"
    assert flagged[0]["detail"] == "unanswered: the turn ended without a reply"
    listed = (await client.get("/api/tasks", headers=t.owner.auth)).json()["tasks"]
    assert [(x["flag"], x["flagged_at"]) for x in listed if x["task_id"] == task_id] == [("unanswered", flagged_at)]
    events = (await client.get("/api/task_events", params={"task_id": task_id}, headers=t.owner.auth)).json()
    assert "flagged" in [e["event"] for e in events["events"]]
    # Over MCP too.
    assert (await tool(client, t.boss, "get_task", {"task_id": task_id}))["task"]["flag"] == "unanswered"
    mcp_list = (await tool(client, t.boss, "list_tasks", {"to_name": "worker"}))["tasks"]
    assert [x["flag"] for x in mcp_list if x["task_id"] == task_id] == ["unanswered"]
    # Only the flagged ones, when asked (another task, not flagged, is left out).
    other = await agent_task(client, t, "another")
    only = (await client.get("/api/tasks", params={"flag": "unanswered"}, headers=t.owner.auth)).json()["tasks"]
    assert [x["task_id"] for x in only] == [task_id]
    mcp_only = (await tool(client, t.boss, "list_tasks", {"flag": "unanswered"}))["tasks"]
    assert [x["task_id"] for x in mcp_only] == [task_id]
    assert other in [x["task_id"] for x in (await tool(client, t.boss, "list_tasks", {}))["tasks"]]
    r = await client.get("/api/tasks", params={"flag": "on-fire"}, headers=t.owner.auth)
    assert r.status_code == 400, r.text

    # The same flag again (a runner retrying) changes nothing.
    again = await flag(client, t.agent(t.worker), task_id, "unanswered", "again")
    assert again.status_code == 200 and again.json()["flagged_at"] == flagged_at
    detail = (await client.get(f"/api/tasks/{task_id}", headers=t.owner.auth)).json()
    assert [e["event"] for e in detail["events"]].count("flagged") == 1


async def test_an_owner_flags_and_the_sender_clears(client: httpx.AsyncClient) -> None:
    t = await team(client)
    task_id = await agent_task(client, t)
    r = await flag(client, t.owner.auth, task_id, "UNANSWERED")  # flags match without case, as priorities do
    assert r.status_code == 200 and r.json()["flag"] == "unanswered", r.text
    r = await flag(client, t.agent(t.boss), task_id, None)
    assert r.status_code == 200, r.text
    assert r.json() == {"ok": True, "task_id": task_id, "flag": None, "flagged_at": None}
    detail = (await client.get(f"/api/tasks/{task_id}", headers=t.owner.auth)).json()
    assert detail["task"]["flag"] is None and detail["task"]["flagged_at"] is None
    assert [e["event"] for e in detail["events"]][-2:] == ["flagged", "unflagged"]
    assert [e["actor"] for e in detail["events"]][-2:] == [t.owner.username, "boss"]


async def test_flags_are_refused_to_others_and_checked(client: httpx.AsyncClient) -> None:
    t = await team(client)
    task_id = await agent_task(client, t)
    # A plain member (a person) and the sender may not flag; the recipient may not clear.
    for headers in (t.member.auth, t.agent(t.boss)):
        r = await flag(client, headers, task_id, "unanswered")
        assert r.status_code == 403 and r.json()["error"] == "not_allowed", r.text
    await flag(client, t.owner.auth, task_id, "unanswered")
    r = await flag(client, t.agent(t.worker), task_id, None)
    assert r.status_code == 403 and r.json()["error"] == "not_allowed", r.text
    r = await flag(client, t.member.auth, task_id, None)
    assert r.status_code == 403, r.text

    r = await flag(client, t.agent(t.worker), task_id, "on-fire")
    assert r.status_code == 400 and "unanswered" in r.json()["message"], r.text
    r = await client.post(f"/api/tasks/{task_id}/flag", json={"note": "x"}, headers=t.owner.auth)
    assert r.status_code == 400 and "flag" in r.json()["message"], r.text  # the key is required (null clears)
    r = await flag(client, t.agent(t.worker), "0b8f7d8e-0000-4000-8000-000000000000", "unanswered")
    assert r.status_code == 404 and r.json()["error"] == "task_not_found", r.text

    # A final task has its answer: nothing to flag (clearing still works).
    await tool(client, t.worker, "send_reply", {"task_id": task_id, "status": "done", "content": "built"})
    r = await flag(client, t.owner.auth, task_id, None)
    assert r.status_code == 200, r.text
    r = await flag(client, t.agent(t.worker), task_id, "unanswered")
    assert r.status_code == 409 and r.json()["error"] == "task_final", r.text


# --- approvals over REST ------------------------------------------------------------------------------------

def test_approval_words() -> None:
    for text in ("yes", "Yes, go ahead.", "  y", "OK", "ok!", "approve", "Approved", "allow it", "ALLOWED"):
        assert verdict(text) == "approved", text
    for text in ("no", "yesterday was fine", "okay", "don't", "", "   ", "1 yes", "nope, not on prod"):
        assert verdict(text) == "denied", text


async def ask(client: httpx.AsyncClient, token: str, question: str, task_id: str | None = None,
              wait_seconds: float = 0) -> dict[str, Any]:
    body: dict[str, Any] = {"question": question, "wait_seconds": wait_seconds}
    if task_id:
        body["task_id"] = task_id
    r = await client.post("/api/approvals", json=body, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    return r.json()


async def test_an_approval_on_a_task_is_answered_by_its_sender_and_the_long_poll_ends_at_once(
        client: httpx.AsyncClient, server: ServerHandle) -> None:
    t = await team(client)
    task_id = await person_task(client, t)
    asked = await ask(client, t.worker, "May I run `make deploy`?", task_id)
    assert asked["ok"] is True and asked["status"] == "pending" and asked["answer"] is None
    assert asked["approval_id"].startswith("msg_") and asked["task_id"] == task_id
    assert (asked["asked"], asked["asked_kind"], asked["alias"]) == (t.owner.username, "person", "worker")
    # It is the task's question: the task waits, and the owner sees it as a question reply.
    detail = (await client.get(f"/api/tasks/{task_id}", headers=t.owner.auth)).json()
    assert detail["task"]["status"] == "input_required"
    pending = (await client.get("/api/approvals", params={"status": "pending"}, headers=t.owner.auth)).json()
    assert [a["approval_id"] for a in pending["approvals"]] == [asked["approval_id"]]
    assert pending["approvals"][0]["question"] == "May I run `make deploy`?"

    before = waiters(server)
    answer: dict[str, Any] = {}

    async def long_poll() -> None:
        r = await client.get(f"/api/approvals/{asked['approval_id']}", params={"wait_seconds": 40},
                             headers=t.agent(t.worker))
        answer.update(r.json(), elapsed=trio.current_time() - started)

    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(long_poll)
        await wait_until(lambda: waiters(server) > before)  # it waits on the server
        r = await client.post("/api/replies", json={"task_id": task_id, "content": "Yes, go ahead"},
                              headers=t.owner.auth)
        assert r.status_code == 200, r.text
    assert answer["status"] == "approved" and answer["answer"] == "Yes, go ahead", answer
    assert answer["answered_by"] == t.owner.username and answer["answer_id"] == r.json()["message_id"]
    assert answer["elapsed"] < WAIT  # ended by the answer, not by its 40 s
    assert waiters(server) == before


async def test_an_approval_without_a_task_goes_to_the_owner_who_denies_it(client: httpx.AsyncClient) -> None:
    t = await team(client)
    asked = await ask(client, t.worker, "May I delete the cache?")
    assert (asked["asked"], asked["asked_kind"], asked["task_id"]) == (t.owner.username, "person", None)
    # The owner finds it among the items addressed to them, and answers it as any reply.
    inbox = (await client.get("/api/messages", params={"alias": t.owner.username}, headers=t.owner.auth)).json()
    assert asked["approval_id"] in [m["message_id"] for m in inbox["messages"]]
    r = await client.post("/api/replies", json={"message_id": asked["approval_id"], "content": "no, not today"},
                          headers=t.owner.auth)
    assert r.status_code == 200, r.text
    got = (await client.get(f"/api/approvals/{asked['approval_id']}", headers=t.agent(t.worker))).json()
    assert got["status"] == "denied" and got["answer"] == "no, not today"


async def test_who_may_answer_an_approval(client: httpx.AsyncClient) -> None:
    t = await team(client)
    task_id = await agent_task(client, t)  # sent by boss (an agent)
    asked = await ask(client, t.worker, "May I push?", task_id)
    assert (asked["asked"], asked["asked_kind"]) == ("boss", "agent")
    # A plain member is neither the sender nor an owner/admin.
    r = await client.post("/api/replies", json={"message_id": asked["approval_id"], "content": "yes"},
                          headers=t.member.auth)
    assert r.status_code == 403, r.text
    # The network's owner may answer it for the sender.
    r = await client.post("/api/replies", json={"message_id": asked["approval_id"], "content": "ok"},
                          headers=t.owner.auth)
    assert r.status_code == 200, r.text
    got = (await client.get(f"/api/approvals/{asked['approval_id']}", headers=t.owner.auth)).json()
    assert got["status"] == "approved" and got["answered_by"] == t.owner.username
    # The asker's owner-question without a task: a plain member cannot answer it either.
    other = await ask(client, t.worker, "May I reboot?")
    r = await client.post("/api/replies", json={"message_id": other["approval_id"], "content": "yes"},
                          headers=t.member.auth)
    assert r.status_code == 403, r.text


async def test_approval_errors(client: httpx.AsyncClient) -> None:
    t = await team(client)
    task_id = await agent_task(client, t)
    r = await client.post("/api/approvals", json={"question": "q"}, headers=t.owner.auth)
    assert r.status_code == 403, r.text  # a person answers approvals; agents ask them
    r = await client.post("/api/approvals", json={"question": "q", "task_id": task_id}, headers=t.agent(t.boss))
    assert r.status_code == 403 and r.json()["error"] == "not_recipient", r.text
    r = await client.post("/api/approvals", json={"question": "q", "wait_seconds": 51}, headers=t.agent(t.worker))
    assert r.status_code == 400, r.text
    r = await client.get("/api/approvals/msg_nope", headers=t.agent(t.worker))
    assert r.status_code == 404 and r.json()["error"] == "approval_not_found", r.text


async def test_an_unanswered_approval_times_out_as_pending(client: httpx.AsyncClient) -> None:
    t = await team(client)
    started = trio.current_time()
    asked = await ask(client, t.worker, "May I?", wait_seconds=1)
    assert asked["status"] == "pending" and 0.9 <= trio.current_time() - started < WAIT
    started = trio.current_time()
    r = await client.get(f"/api/approvals/{asked['approval_id']}", params={"wait_seconds": 0.5},
                         headers=t.agent(t.worker))
    assert r.status_code == 200 and r.json()["status"] == "pending"
    assert 0.4 <= trio.current_time() - started < WAIT
    for bad in ("51", "-1", "soon", "nan"):
        r = await client.get(f"/api/approvals/{asked['approval_id']}", params={"wait_seconds": bad},
                             headers=t.agent(t.worker))
        assert r.status_code == 400 and "wait_seconds" in r.json()["message"], (bad, r.text)


async def test_a_long_poll_whose_client_goes_away_leaves_no_waiter(client: httpx.AsyncClient,
                                                                   server: ServerHandle) -> None:
    t = await team(client)
    asked = await ask(client, t.worker, "May I?")
    before = waiters(server)
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as gone:
        with trio.CancelScope() as scope:
            async def poll() -> None:
                await gone.get(f"/api/approvals/{asked['approval_id']}", params={"wait_seconds": 50},
                               headers=t.agent(t.worker))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(poll)
                await wait_until(lambda: waiters(server) > before)
                scope.cancel()
    await wait_until(lambda: waiters(server) == before)


# --- answers_approval on the stream ---------------------------------------------------------------------------

async def test_new_reply_says_when_it_answers_an_approval(client: httpx.AsyncClient) -> None:
    t = await team(client)
    task_id = await person_task(client, t)
    async with aconnect_sse(client, "GET", "/events/worker", headers=t.agent(t.worker)) as source:
        events = source.aiter_sse()
        with trio.fail_after(WAIT):
            await events.__anext__()  # the preamble
        # An ordinary question and its answer: no answers_approval.
        await tool(client, t.worker, "send_reply", {"task_id": task_id, "status": "question", "content": "which env?"})
        r = await client.post("/api/replies", json={"task_id": task_id, "content": "staging"}, headers=t.owner.auth)
        plain_id = r.json()["message_id"]
        # An approval and its answer.
        asked = await ask(client, t.worker, "May I deploy to staging?", task_id)
        r = await client.post("/api/replies", json={"message_id": asked["approval_id"], "content": "yes"},
                              headers=t.owner.auth)
        approval_answer_id = r.json()["message_id"]
        replies: dict[str, dict[str, Any]] = {}
        with trio.fail_after(WAIT):
            async for sse in events:
                if sse.event == "new_reply":
                    replies[sse.json()["message_id"]] = sse.json()
                    if len(replies) == 2:
                        break
        await events.aclose()
    assert "answers_approval" not in replies[plain_id]
    assert replies[approval_answer_id]["answers_approval"] is True
    # The seed's fields are all still there, unchanged.
    assert replies[approval_answer_id]["in_reply_to"] == asked["approval_id"]
    assert {k: replies[approval_answer_id][k] for k in ("type", "from", "from_kind", "status", "task_id")} == {
        "type": "new_reply", "from": t.owner.username, "from_kind": "person", "status": "answer", "task_id": task_id}


# --- permission_prompt through the official MCP SDK -------------------------------------------------------------

async def _prompt_answered(server: ServerHandle, client: httpx.AsyncClient, t: Team, tool_input: dict[str, Any],
                           answer: str | None) -> tuple[str, dict[str, Any]]:
    """Call permission_prompt as Claude Code does; a person answers the question it asks (None: nobody does).
    Returns the tool's one text content and the approval the person saw."""
    seen: dict[str, Any] = {}
    out: dict[str, str] = {}
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {t.worker}"}, timeout=60) as http:
        async with streamable_http_client(server.url + "/mcp", http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()

                async def call() -> None:
                    result = await session.call_tool("permission_prompt", {
                        "tool_name": "Bash", "input": tool_input, "tool_use_id": "toolu_01"})
                    assert not result.is_error, result
                    texts = [c.text for c in result.content if getattr(c, "type", None) == "text"]
                    assert len(texts) == 1 and result.structured_content is None, result  # Claude Code: text only
                    out["text"] = texts[0]

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(call)
                    with trio.fail_after(WAIT):
                        while not seen:
                            r = await client.get("/api/approvals", params={"status": "pending", "alias": "worker"},
                                                 headers=t.owner.auth)
                            if r.json()["approvals"]:
                                seen.update(r.json()["approvals"][0])
                            else:
                                await trio.sleep(0.02)
                    if answer is not None:
                        r = await client.post("/api/replies", json={"message_id": seen["approval_id"],
                                                                    "content": answer}, headers=t.owner.auth)
                        assert r.status_code == 200, r.text
    return out["text"], seen


async def test_permission_prompt_allows_with_the_exact_json_claude_code_expects(
        client: httpx.AsyncClient, server: ServerHandle) -> None:
    t = await team(client)
    task_id = await person_task(client, t)
    tool_input = {"command": "ls -la /tmp", "description": "list"}
    text, seen = await _prompt_answered(server, client, t, tool_input, "yes")
    assert text == json.dumps({"behavior": "allow", "updatedInput": tool_input}, separators=(",", ":"))
    # The question was asked on the task the worker runs, and says what and how to answer.
    assert seen["task_id"] == task_id and seen["asked"] == t.owner.username
    assert "Bash" in seen["question"] and '"command":"ls -la /tmp"' in seen["question"]
    assert "reply yes to allow, anything else to deny" in seen["question"].lower()


async def test_permission_prompt_denies_with_the_persons_words(client: httpx.AsyncClient,
                                                               server: ServerHandle) -> None:
    t = await team(client)
    text, seen = await _prompt_answered(server, client, t, {"command": "rm -rf /"}, "absolutely not")
    assert json.loads(text) == {"behavior": "deny", "message": "absolutely not"}
    assert seen["task_id"] is None and seen["asked"] == t.owner.username  # no task at work: the owner is asked


async def test_a_cancelled_permission_prompt_leaves_no_waiter(client: httpx.AsyncClient, server: ServerHandle) -> None:
    t = await team(client)
    before = waiters(server)
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {t.worker}"}, timeout=60) as http:
        async with streamable_http_client(server.url + "/mcp", http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                with trio.CancelScope() as scope:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(session.call_tool, "permission_prompt",
                                           {"tool_name": "Bash", "input": {"command": "true"}})
                        await wait_until(lambda: waiters(server) > before)
                        scope.cancel()  # the SDK sends notifications/cancelled for the call
                await wait_until(lambda: waiters(server) == before)


async def test_permission_prompt_denies_when_nobody_answers_in_time(tmp_path: Path) -> None:
    async with own_server(tmp_path, "short", approval_wait_seconds=0.5) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            t = await team(client)
            text, _ = await _prompt_answered(server, client, t, {"command": "true"}, None)
    assert json.loads(text) == {"behavior": "deny", "message": "no answer within 0.5 s"}


async def test_a_long_poll_outlives_the_servers_idle_timeout(tmp_path: Path) -> None:
    # The connection's idle timeout (header_timeout_seconds) must not cut a request that is waiting for its answer.
    async with own_server(tmp_path, "idle", header_timeout_seconds=1) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            t = await team(client)
            started = trio.current_time()
            asked = await ask(client, t.worker, "May I?", wait_seconds=2.5)
            assert asked["status"] == "pending" and trio.current_time() - started >= 2.4
            r = await client.get(f"/api/approvals/{asked['approval_id']}", params={"wait_seconds": 2.5},
                                 headers=t.agent(t.worker))
            assert r.status_code == 200 and r.json()["status"] == "pending"
