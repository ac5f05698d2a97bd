"""CommHub as an A2A server (docs/a2a.md), driven by the official A2A Python SDK's client (a2a-sdk) against a real
server: an outside A2A client hands work to a CommHub agent, which answers through MCP as it always does."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import trio
from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
from a2a.client.errors import A2AClientError
from a2a.compat.v0_3 import types as v03_types
from a2a.types import a2a_pb2 as pb
from a2a.utils.errors import TaskNotCancelableError, TaskNotFoundError

from commhub_lib.runtime.server import ServerHandle
from tests.conftest import Account, create_token, own_server, register, tool

DEADLINE = 20  # seconds any one step may take on a loaded machine


@dataclass
class Setup:
    """A network with a CommHub agent `worker` served as an A2A agent, and an outside caller's network token."""

    server: ServerHandle
    owner: Account
    worker: str  # the agent's network token (it answers through MCP)
    caller: str  # the A2A client's network token
    base: str  # the agent's A2A URL (the card lives under it)

    def http(self, token: str | None = None, timeout: float = 30) -> httpx.AsyncClient:
        """An httpx client that sends the token (the caller's by default)."""
        return httpx.AsyncClient(headers={"Authorization": f"Bearer {token or self.caller}"}, timeout=timeout)


@pytest.fixture
async def setup(server: ServerHandle, client: httpx.AsyncClient) -> Setup:
    """The Setup on the default test server."""
    return await make_setup(server, client)


async def make_setup(server: ServerHandle, client: httpx.AsyncClient) -> Setup:
    """Register an owner, connect `worker` through MCP (it reports what it does), opt it in, make a caller token."""
    owner = await register(client)
    worker = await create_token(client, owner, "worker", alias="worker")
    await tool(client, worker, "report_status", {"alias": "worker", "agent": "claude-code", "model": "opus",
                                                 "task": "reviewing pull requests"})
    r = await client.put(f"/api/networks/{owner.network_id}/aliases/worker/a2a", headers=owner.auth,
                         json={"enabled": True, "description": "Reviews code and answers questions about it."})
    assert r.status_code == 200, r.text
    caller = await create_token(client, owner, "outside")
    return Setup(server, owner, worker, caller, f"{server.url}/a2a/{owner.network_id}/worker")


async def sdk_client(s: Setup, http: httpx.AsyncClient, *, streaming: bool, version: str = "1.0") -> Any:
    """The SDK's client for the agent, made from the card its resolver fetched; `version` picks the interface
    (0.3: the SDK's compat transport, which speaks the 0.3 method names)."""
    card = await A2ACardResolver(http, s.base).get_agent_card()
    keep = [i for i in card.supported_interfaces if i.protocol_version == version]
    del card.supported_interfaces[:]
    card.supported_interfaces.extend(keep)
    return ClientFactory(ClientConfig(httpx_client=http, streaming=streaming)).create(card)


def user_message(text: str, task_id: str | None = None, context_id: str | None = None) -> pb.SendMessageRequest:
    """A SendMessageRequest with one text part."""
    msg = pb.Message(role=pb.ROLE_USER, message_id=str(uuid.uuid4()), parts=[pb.Part(text=text)])
    if task_id:
        msg.task_id = task_id
    if context_id:
        msg.context_id = context_id
    return pb.SendMessageRequest(message=msg)


async def next_task(client: httpx.AsyncClient, token: str) -> dict[str, Any]:
    """The agent's side: wait (long-poll) for the next task in its inbox and return the item."""
    with trio.fail_after(DEADLINE):
        while True:
            inbox = await tool(client, token, "get_inbox", {"wait_seconds": 10})
            items = [i for i in inbox["items"] if i.get("task_id")]
            if items:
                await tool(client, token, "ack_inbox", {"ids": [i["message_id"] for i in items]})
                return items[0]


async def next_reply(client: httpx.AsyncClient, token: str, task_id: str) -> dict[str, Any]:
    """The agent's side: wait for the next reply (an answer) about a task it asked about."""
    with trio.fail_after(DEADLINE):
        while True:
            inbox = await tool(client, token, "get_inbox", {"wait_seconds": 10})
            items = [i for i in inbox["items"] if i.get("task_id") == task_id]
            if items:
                await tool(client, token, "ack_inbox", {"ids": [i["message_id"] for i in items]})
                return items[0]


async def collect(stream: AsyncIterator[Any]) -> list[Any]:
    """Every StreamResponse of an SDK call, within the deadline."""
    out = []
    with trio.fail_after(DEADLINE):
        async for item in stream:
            out.append(item)
    return out


# --- opt-in and card ------------------------------------------------------------------------------------------


async def test_opt_in_is_an_owner_admin_setting(setup: Setup, client: httpx.AsyncClient) -> None:
    s, nid = setup, setup.owner.network_id
    r = await client.get(f"/api/networks/{nid}/aliases/worker/a2a", headers=s.owner.auth)
    assert r.status_code == 200 and r.json()["enabled"] is True, r.text
    assert r.json()["description"] == "Reviews code and answers questions about it."
    # A member who is not owner/admin may not change it; an agent's network token neither.
    member = await register(client)
    invite = await client.post(f"/api/networks/{nid}/invite", headers=s.owner.auth, json={})
    assert invite.status_code == 200, invite.text
    joined = await client.post("/api/networks/join", headers=member.auth,
                               json={"invite_code": invite.json()["invite_code"]})
    assert joined.status_code == 200, joined.text
    for headers in (member.auth, {"Authorization": f"Bearer {s.worker}"}):
        r = await client.put(f"/api/networks/{nid}/aliases/worker/a2a", headers=headers, json={"enabled": False})
        assert r.status_code == 403, r.text
    r = await client.put(f"/api/networks/{nid}/aliases/nobody/a2a", headers=s.owner.auth, json={"enabled": True})
    assert r.status_code == 404 and r.json()["error"] == "alias_not_found", r.text
    assert "report_status" in r.json()["message"]  # says how an alias comes to exist


async def test_the_sdk_resolves_and_parses_the_agent_card(setup: Setup) -> None:
    async with setup.http() as http:
        card = await A2ACardResolver(http, setup.base).get_agent_card()
    assert card.name == "worker"
    assert card.description == "Reviews code and answers questions about it."
    assert card.capabilities.streaming is True
    assert {(i.protocol_binding, i.protocol_version, i.url) for i in card.supported_interfaces} == {
        ("JSONRPC", "1.0", setup.base), ("JSONRPC", "0.3", setup.base)}
    assert card.security_schemes["bearer"].http_auth_security_scheme.scheme.lower() == "bearer"
    assert [s.id for s in card.skills] == ["worker"]
    assert set(card.skills[0].tags) == {"claude-code", "opus"}
    assert "reviewing pull requests" in card.skills[0].description


async def test_the_public_card_leaves_out_what_the_agent_is_working_on(setup: Setup,
                                                                        client: httpx.AsyncClient) -> None:
    """The card needs no token, so it says only what the owner published; what the agent is working on now (its
    report_status task) is for a caller with a token of the network, and that card is not for shared caches."""
    url = f"{setup.base}/.well-known/agent-card.json"
    async with httpx.AsyncClient(timeout=30) as anonymous:
        public = await anonymous.get(url)
    assert public.status_code == 200 and "reviewing pull requests" not in public.text, public.text
    assert public.json()["skills"][0]["description"] == "Reviews code and answers questions about it."
    assert public.headers["cache-control"].startswith("public") and "Authorization" in public.headers["vary"]
    async with setup.http() as member:
        live = await member.get(url)
    assert "Currently: reviewing pull requests" in live.json()["skills"][0]["description"]
    assert live.headers["cache-control"].startswith("private")
    stranger = await register(client)
    async with setup.http(stranger.network_token) as other:
        elsewhere = await other.get(url)
    assert elsewhere.status_code == 200 and "reviewing pull requests" not in elsewhere.text
    async with setup.http("ntok_not_a_token") as wrong:
        assert (await wrong.get(url)).status_code == 401


async def test_the_v1_card_is_protojson_and_urls_follow_public_url(tmp_path: Any) -> None:
    async with own_server(tmp_path, "public", public_url="https://hub.example.com/") as handle, \
            httpx.AsyncClient(base_url=handle.url, timeout=30) as c:
        s = await make_setup(handle, c)
        path = f"/a2a/{s.owner.network_id}/worker/.well-known/agent-card.json"
        r = await c.get(path, headers={"A2A-Version": "1.0"})
        legacy = (await c.get(path)).json()
    body = r.json()
    assert r.status_code == 200 and "url" not in body and "security" not in body, body
    assert r.headers["cache-control"] == "public, max-age=60", r.headers
    assert r.headers["vary"] == "A2A-Version, Authorization", r.headers
    assert body["securitySchemes"]["bearer"]["httpAuthSecurityScheme"]["scheme"] == "Bearer"
    assert body["securityRequirements"] == [{"schemes": {"bearer": {"list": []}}}]
    endpoint = f"https://hub.example.com/a2a/{s.owner.network_id}/worker"
    assert {i["url"] for i in body["supportedInterfaces"]} == {endpoint}
    # Without A2A-Version (a 0.3 client): the 0.3 fields as well, its security scheme in the 0.3 form.
    assert legacy["url"] == endpoint and legacy["protocolVersion"] == "0.3.0", legacy
    assert legacy["securitySchemes"]["bearer"]["type"] == "http" and legacy["security"] == [{"bearer": []}]
    old_card = v03_types.AgentCard.model_validate(legacy)  # what a 0.3 client reads it as
    assert old_card.url == endpoint and old_card.capabilities.streaming is True


async def test_a_card_only_for_an_alias_opted_in(setup: Setup, client: httpx.AsyncClient) -> None:
    nid = setup.owner.network_id
    assert (await client.get(f"/a2a/{nid}/nobody/.well-known/agent-card.json")).status_code == 404
    r = await client.put(f"/api/networks/{nid}/aliases/worker/a2a", headers=setup.owner.auth, json={"enabled": False})
    assert r.status_code == 200 and r.json()["enabled"] is False, r.text
    r = await client.get(f"/a2a/{nid}/worker/.well-known/agent-card.json")
    assert r.status_code == 404 and r.json()["error"] == "agent_not_served", r.text
    async with setup.http() as http:
        r = await http.post(setup.base, json={"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {"id": "x"}})
    assert r.status_code == 404, r.text


# --- the methods, through the SDK -----------------------------------------------------------------------------


async def test_send_returns_the_completed_task_with_the_reply_as_artifact(setup: Setup,
                                                                          client: httpx.AsyncClient) -> None:
    async def agent() -> None:
        item = await next_task(client, setup.worker)
        await tool(client, setup.worker, "send_reply", {"task_id": item["task_id"], "status": "done",
                                                        "content": "LGTM: two nits, see inline."})

    async with setup.http() as http, trio.open_nursery() as nursery:
        nursery.start_soon(agent)
        a2a = await sdk_client(setup, http, streaming=False)
        [response] = await collect(a2a.send_message(user_message("Review PR 42 please")))
    task = response.task
    assert task.status.state == pb.TASK_STATE_COMPLETED, task
    assert [p.text for a in task.artifacts for p in a.parts] == ["LGTM: two nits, see inline."]
    assert task.context_id and task.id
    assert task.history[0].parts[0].text == "Review PR 42 please"
    # The CommHub side: a task from the caller's A2A name to the agent, replied.
    r = await client.get(f"/api/tasks/{task.id}", headers=setup.owner.auth)
    assert r.json()["task"]["status"] == "replied" and r.json()["task"]["from_name"].startswith("a2a:"), r.text


async def test_files_sent_with_the_reply_are_file_parts_of_the_artifact(setup: Setup,
                                                                          client: httpx.AsyncClient) -> None:
    """A reply's attachments reach the A2A client as file parts (absolute download URL, name, type) beside the
    text, in 1.0 and 0.3 shapes; the caller's own token downloads them."""
    patch = b"--- a/x.py\n+++ b/x.py\n@@ -1 +1 @@\n-bug\n+fix\n"

    async def agent() -> None:
        item = await next_task(client, setup.worker)
        inline = {"filename": "fix.patch", "content_type": "text/x-diff",
                  "data_base64": base64.b64encode(patch).decode()}
        await tool(client, setup.worker, "send_reply", {"task_id": item["task_id"], "status": "done",
                                                        "content": "patch attached", "attachments": [inline]})

    async with setup.http() as http, trio.open_nursery() as nursery:
        nursery.start_soon(agent)
        a2a = await sdk_client(setup, http, streaming=False)
        [response] = await collect(a2a.send_message(user_message("Fix the bug")))
        task = response.task
        assert task.status.state == pb.TASK_STATE_COMPLETED, task
        [art] = task.artifacts
        assert art.parts[0].text == "patch attached"
        file = art.parts[1]
        assert (file.filename, file.media_type) == ("fix.patch", "text/x-diff"), file
        assert file.url.startswith(setup.server.url + "/api/attachments/att_"), file.url
        download = await http.get(file.url)  # the A2A caller's network token
        assert download.status_code == 200 and download.content == patch
        r = await http.post(setup.base, json={"jsonrpc": "2.0", "id": 1, "method": "tasks/get",
                                              "params": {"id": task.id}})
        parts = r.json()["result"]["artifacts"][0]["parts"]
        assert parts[1] == {"kind": "file", "file": {"uri": file.url, "name": "fix.patch",
                                                     "mimeType": "text/x-diff"}}, parts


async def test_stream_sends_working_then_the_artifact_then_completed(setup: Setup,
                                                                     client: httpx.AsyncClient) -> None:
    async def agent() -> None:
        item = await next_task(client, setup.worker)  # fetching it starts it: working
        await tool(client, setup.worker, "send_reply", {"task_id": item["task_id"], "status": "progress",
                                                        "content": "halfway", "progress": 50})
        await tool(client, setup.worker, "send_reply", {"task_id": item["task_id"], "status": "done",
                                                        "content": "all done"})

    async with setup.http() as http, trio.open_nursery() as nursery:
        a2a = await sdk_client(setup, http, streaming=True)
        events = []
        with trio.fail_after(DEADLINE):
            async for event in a2a.send_message(user_message("Do the thing")):
                events.append(event)
                if len(events) == 1:
                    nursery.start_soon(agent)  # the agent acts only once the stream is open
    kinds = [e.WhichOneof("payload") for e in events]
    assert kinds[0] == "task" and events[0].task.status.state == pb.TASK_STATE_SUBMITTED, events[0]
    states = [e.status_update.status.state for e in events if e.HasField("status_update")]
    assert states == [pb.TASK_STATE_WORKING, pb.TASK_STATE_WORKING, pb.TASK_STATE_COMPLETED], events
    progress = [e.status_update.status.message.parts[0].text for e in events
                if e.HasField("status_update") and e.status_update.status.HasField("message")]
    assert progress == ["halfway"]
    [artifact] = [e.artifact_update.artifact for e in events if e.HasField("artifact_update")]
    assert artifact.parts[0].text == "all done"
    assert kinds.index("artifact_update") < len(kinds) - 1  # the artifact comes before the final status


async def test_get_and_cancel(setup: Setup, client: httpx.AsyncClient) -> None:
    async with setup.http() as http:
        a2a = await sdk_client(setup, http, streaming=False)
        request = user_message("Long job")
        request.configuration.return_immediately = True
        [response] = await collect(a2a.send_message(request))
        task_id = response.task.id
        assert response.task.status.state == pb.TASK_STATE_SUBMITTED
        got = await a2a.get_task(pb.GetTaskRequest(id=task_id))
        assert got.id == task_id and got.status.state == pb.TASK_STATE_SUBMITTED
        cancelled = await a2a.cancel_task(pb.CancelTaskRequest(id=task_id))
        assert cancelled.status.state == pb.TASK_STATE_CANCELED
        with pytest.raises(TaskNotCancelableError):
            await a2a.cancel_task(pb.CancelTaskRequest(id=task_id))
        with pytest.raises(TaskNotFoundError):
            await a2a.get_task(pb.GetTaskRequest(id=str(uuid.uuid4())))
    # The agent was told, as for any cancellation.
    inbox = await tool(client, setup.worker, "get_inbox", {})
    assert any("cancelled" in (i.get("content") or "") for i in inbox["items"]), inbox


async def test_another_callers_task_is_not_found(setup: Setup, client: httpx.AsyncClient) -> None:
    other = await create_token(client, setup.owner, "other-outside")
    async with setup.http() as http, setup.http(other) as other_http:
        a2a = await sdk_client(setup, http, streaming=False)
        request = user_message("Mine")
        request.configuration.return_immediately = True
        [response] = await collect(a2a.send_message(request))
        theirs = await sdk_client(setup, other_http, streaming=False)
        with pytest.raises(TaskNotFoundError):
            await theirs.get_task(pb.GetTaskRequest(id=response.task.id))


async def test_input_required_round_trip(setup: Setup, client: httpx.AsyncClient) -> None:
    answers: list[dict[str, Any]] = []

    async def agent() -> None:
        item = await next_task(client, setup.worker)
        await tool(client, setup.worker, "send_reply", {"task_id": item["task_id"], "status": "question",
                                                        "content": "Which branch?"})
        answers.append(await next_reply(client, setup.worker, item["task_id"]))
        await tool(client, setup.worker, "send_reply", {"task_id": item["task_id"], "status": "done",
                                                        "content": "Merged into release."})

    async with setup.http() as http, trio.open_nursery() as nursery:
        nursery.start_soon(agent)
        a2a = await sdk_client(setup, http, streaming=False)
        [first] = await collect(a2a.send_message(user_message("Merge the fix")))
        task = first.task
        assert task.status.state == pb.TASK_STATE_INPUT_REQUIRED, task
        assert task.status.message.parts[0].text == "Which branch?"
        [second] = await collect(a2a.send_message(user_message("release-2.1", task.id, task.context_id)))
    assert second.task.id == task.id and second.task.status.state == pb.TASK_STATE_COMPLETED, second
    assert second.task.artifacts[0].parts[0].text == "Merged into release."
    # The agent got the answer as a new_reply on the task.
    assert answers[0]["content"] == "release-2.1" and answers[0]["kind"] == "reply", answers


async def test_v03_method_names_through_the_sdk_compat_transport(setup: Setup, client: httpx.AsyncClient) -> None:
    async def agent() -> None:
        item = await next_task(client, setup.worker)
        await tool(client, setup.worker, "send_reply", {"task_id": item["task_id"], "status": "done",
                                                        "content": "old clients welcome"})

    async with setup.http() as http, trio.open_nursery() as nursery:
        a2a = await sdk_client(setup, http, streaming=True, version="0.3")
        assert type(a2a._transport).__name__ == "CompatJsonRpcTransport"  # it speaks message/stream, tasks/get
        events = []
        with trio.fail_after(DEADLINE):
            async for event in a2a.send_message(user_message("Hello from 0.3")):
                events.append(event)
                if len(events) == 1:
                    nursery.start_soon(agent)
        task_id = events[0].task.id
        assert events[-1].status_update.status.state == pb.TASK_STATE_COMPLETED, events
        got = await a2a.get_task(pb.GetTaskRequest(id=task_id))
        assert got.status.state == pb.TASK_STATE_COMPLETED
        assert got.artifacts[0].parts[0].text == "old clients welcome"


async def test_v03_names_raw(setup: Setup) -> None:
    """The 0.3 wire shapes as such (kind fields, lower-case states), and 1.0's for the same task."""
    async with setup.http() as http:
        r = await http.post(setup.base, json={"jsonrpc": "2.0", "id": "a", "method": "message/send", "params": {
            "message": {"kind": "message", "messageId": "m-1", "role": "user",
                        "parts": [{"kind": "text", "text": "raw"}]},
            "configuration": {"blocking": False}}})
        result = r.json()["result"]
        assert result["kind"] == "task" and result["status"]["state"] == "submitted", result
        r = await http.post(setup.base, json={"jsonrpc": "2.0", "id": 2, "method": "tasks/cancel",
                                              "params": {"id": result["id"]}})
        assert r.json()["result"]["status"]["state"] == "canceled", r.text
        r = await http.post(setup.base, json={"jsonrpc": "2.0", "id": 3, "method": "GetTask",
                                              "params": {"id": result["id"]}})
        assert r.json()["result"]["status"]["state"] == "TASK_STATE_CANCELED", r.text
        r = await http.post(setup.base, json={"jsonrpc": "2.0", "id": 4, "method": "tasks/resubscribe",
                                              "params": {"id": result["id"]}})
        assert r.json()["error"]["code"] == -32004, r.text
        r = await http.post(setup.base, json={"jsonrpc": "2.0", "id": 5, "method": "ListTaskPushNotificationConfigs",
                                              "params": {"id": result["id"]}})
        assert r.json()["error"]["code"] == -32003, r.text
        r = await http.post(setup.base, json={"jsonrpc": "2.0", "id": 6, "method": "Nope"})
        assert r.json()["error"]["code"] == -32601, r.text


# --- who may call ---------------------------------------------------------------------------------------------


async def test_tokens_other_than_the_networks_are_refused(setup: Setup, client: httpx.AsyncClient) -> None:
    stranger = await register(client)
    rpc = {"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {"id": "x"}}
    async with httpx.AsyncClient(timeout=30) as http:
        assert (await http.post(setup.base, json=rpc)).status_code == 401
        bad = await http.post(setup.base, json=rpc, headers={"Authorization": "Bearer ntok_nope"})
        assert bad.status_code == 401
        other = await http.post(setup.base, json=rpc, headers=stranger.net_auth)
        assert other.status_code == 403 and other.json()["error"] == "wrong_network", other.text
        user = await http.post(setup.base, json=rpc, headers=setup.owner.auth)
        assert user.status_code == 403 and user.json()["error"] == "network_token_required", user.text
    # Through the SDK: an error, never a result.
    async with setup.http(stranger.network_token) as http:
        a2a = await sdk_client(setup, http, streaming=False)
        with pytest.raises(A2AClientError):
            await a2a.get_task(pb.GetTaskRequest(id="x"))


# --- streams follow the task live, and end ----------------------------------------------------------------------


async def test_subscribe_sees_the_agent_pick_the_task_up_live(setup: Setup, client: httpx.AsyncClient) -> None:
    """Fetching a task (delivered -> running) publishes no stream event: the task watch wakes the A2A stream, which
    says `working` before the agent does anything else (no polling: nothing else would wake it)."""
    async with setup.http() as http:
        a2a = await sdk_client(setup, http, streaming=True)
        request = user_message("Watch me")
        request.configuration.return_immediately = True
        plain = await sdk_client(setup, http, streaming=False)
        [sent] = await collect(plain.send_message(request))
        stream = a2a.subscribe(pb.SubscribeToTaskRequest(id=sent.task.id))
        with trio.fail_after(DEADLINE):
            first = await stream.__anext__()
            assert first.task.status.state == pb.TASK_STATE_SUBMITTED, first
            item = await next_task(client, setup.worker)
            working = await stream.__anext__()
            assert working.status_update.status.state == pb.TASK_STATE_WORKING, working
            await tool(client, setup.worker, "send_reply", {"task_id": item["task_id"], "status": "failed",
                                                            "content": "cannot reach the repo"})
            rest = [e async for e in stream]
    [final] = rest
    assert final.status_update.status.state == pb.TASK_STATE_FAILED
    assert final.status_update.status.message.parts[0].text == "cannot reach the repo"


async def test_an_open_stream_ends_when_the_server_stops(tmp_path: Any) -> None:
    async with own_server(tmp_path, "stops") as handle, httpx.AsyncClient(base_url=handle.url, timeout=30) as c:
        s = await make_setup(handle, c)
        async with s.http() as http:
            a2a = await sdk_client(s, http, streaming=True)
            stream = a2a.send_message(user_message("Long"))
            with trio.fail_after(DEADLINE):
                first = await stream.__anext__()
                assert first.task.status.state == pb.TASK_STATE_SUBMITTED
                handle.shutdown()
                rest = [e async for e in stream]  # ends (the server closed it), no hang until a grace period
    assert rest == []


# --- message semantics ----------------------------------------------------------------------------------------


async def test_a_blocking_send_answers_after_a2a_blocking_seconds(tmp_path: Any) -> None:
    async with own_server(tmp_path, "blocking", a2a_blocking_seconds=0.5) as handle, \
            httpx.AsyncClient(base_url=handle.url, timeout=30) as c:
        s = await make_setup(handle, c)
        async with s.http() as http:
            a2a = await sdk_client(s, http, streaming=False)
            with trio.fail_after(DEADLINE):
                [response] = await collect(a2a.send_message(user_message("Nobody answers")))
    assert response.task.status.state == pb.TASK_STATE_SUBMITTED  # the task as it stands, still open


async def test_message_semantics(setup: Setup, client: httpx.AsyncClient) -> None:
    """A retried message (same messageId) is the same task; a client's contextId is kept; a follow-up naming another
    context is refused; a message to a task that is over is refused (UnsupportedOperation)."""
    rpc = {"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {
        "message": {"messageId": "retry-me", "contextId": "ctx-7", "role": "ROLE_USER", "parts": [{"text": "once"}]},
        "configuration": {"returnImmediately": True}}}
    async with setup.http() as http:
        first = (await http.post(setup.base, json=rpc)).json()["result"]["task"]
        again = (await http.post(setup.base, json=rpc)).json()["result"]["task"]
        assert first["id"] == again["id"] and first["contextId"] == "ctx-7", (first, again)
        follow = {"jsonrpc": "2.0", "id": 2, "method": "SendMessage", "params": {"message": {
            "messageId": "m2", "taskId": first["id"], "contextId": "ctx-other", "role": "ROLE_USER",
            "parts": [{"text": "more"}]}, "configuration": {"returnImmediately": True}}}
        r = await http.post(setup.base, json=follow)
        assert r.json()["error"]["code"] == -32602, r.text
        await http.post(setup.base, json={"jsonrpc": "2.0", "id": 3, "method": "CancelTask",
                                          "params": {"id": first["id"]}})
        follow["params"]["message"]["contextId"] = "ctx-7"
        r = await http.post(setup.base, json=follow)
        assert r.json()["error"]["code"] == -32004, r.text
        file_part = {**rpc, "params": {"message": {"messageId": "m3", "role": "ROLE_USER",
                                                   "parts": [{"url": "https://example.com/a.pdf"}]}}}
        r = await http.post(setup.base, json=file_part)
        assert r.json()["error"]["code"] == -32005, r.text
        r = await http.post(setup.base, json=rpc, headers={"A2A-Version": "2.0"})
        assert r.json()["error"]["code"] == -32009, r.text


async def test_a_token_bound_to_an_alias_speaks_as_that_agent(setup: Setup, client: httpx.AsyncClient) -> None:
    """A token bound to an alias is that agent's credential: its A2A tasks come from that alias (it does not pass
    for anyone else); any other token's tasks come from a2a:<token id>, which no alias can be."""
    bound = await create_token(client, setup.owner, "reviewer-token", alias="reviewer")
    rpc = {"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {
        "message": {"messageId": str(uuid.uuid4()), "role": "ROLE_USER", "parts": [{"text": "from reviewer"}]},
        "configuration": {"returnImmediately": True}}}
    async with setup.http(bound) as http:
        task = (await http.post(setup.base, json=rpc)).json()["result"]["task"]
    r = await client.get(f"/api/tasks/{task['id']}", headers=setup.owner.auth)
    assert r.json()["task"]["from_name"] == "reviewer", r.text
    # The served agent's own token cannot send itself work over A2A.
    async with setup.http(setup.worker) as http:
        r = await http.post(setup.base, json=rpc)
    assert r.status_code == 200 and r.json()["error"]["code"] == -32004, r.text


def test_retention_drops_a_tasks_a2a_row_with_it(tmp_path: Any) -> None:
    """A task pruned by retention takes its A2A row (its contextId) along: no row outlives its task."""
    from commhub_lib.db import Database
    from commhub_lib.store import a2a as a2a_store
    from commhub_lib.store import retention as retention_store
    from tests.conftest import seed_owner_and_networks

    db = Database(str(tmp_path / "hub.db"))
    with db.write():
        seed_owner_and_networks(db, ["net_a"])
        a2a_store.insert_task(db, "t-1", "net_a", "worker", "a2a:tok", "ctx", "t")
        retention_store.delete_task(db, "t-1")
    assert a2a_store.get_task(db, "t-1") is None
    db.close()


async def test_a_stream_ends_when_its_token_is_revoked(setup: Setup, client: httpx.AsyncClient) -> None:
    """Revoking the caller's token ends its open A2A stream at once (not at the next heartbeat, 15 s here)."""
    async with setup.http() as http:
        a2a = await sdk_client(setup, http, streaming=True)
        stream = a2a.send_message(user_message("Until revoked"))
        with trio.fail_after(DEADLINE):
            first = await stream.__anext__()
        assert first.task.status.state == pb.TASK_STATE_SUBMITTED
        tokens = (await client.get("/api/tokens", headers=setup.owner.auth)).json()["tokens"]
        token_id = next(t["token_id"] for t in tokens if t["name"] == "outside")
        r = await client.delete(f"/api/tokens/{token_id}", headers=setup.owner.auth)
        assert r.status_code == 200, r.text
        with trio.fail_after(setup.server.hub.settings.heartbeat_seconds / 3):
            rest = [e async for e in stream]
    assert rest == []


async def test_open_a2a_streams_are_counted_in_the_metrics(tmp_path: Any) -> None:
    async with own_server(tmp_path, "metrics", metrics="loopback") as handle, \
            httpx.AsyncClient(base_url=handle.url, timeout=30) as c:
        s = await make_setup(handle, c)
        async with s.http() as http:
            a2a = await sdk_client(s, http, streaming=True)
            stream = a2a.send_message(user_message("Count me"))
            with trio.fail_after(DEADLINE):
                await stream.__anext__()
                scrape = (await c.get("/metrics")).text
                await stream.aclose()
    assert 'commhub_streams_open{kind="a2a"} 1.0' in scrape, scrape


async def test_one_message_id_sent_to_two_agents_makes_two_tasks(setup: Setup, client: httpx.AsyncClient) -> None:
    helper = await create_token(client, setup.owner, "helper", alias="helper")
    await tool(client, helper, "report_status", {"alias": "helper"})
    r = await client.put(f"/api/networks/{setup.owner.network_id}/aliases/helper/a2a", headers=setup.owner.auth,
                         json={"enabled": True})
    assert r.status_code == 200, r.text
    rpc = {"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {
        "message": {"messageId": "same-id", "role": "ROLE_USER", "parts": [{"text": "hello"}]},
        "configuration": {"returnImmediately": True}}}
    async with setup.http() as http:
        to_worker = (await http.post(setup.base, json=rpc)).json()["result"]["task"]
        to_helper = (await http.post(setup.base.replace("/worker", "/helper"), json=rpc)).json()["result"]["task"]
    assert to_worker["id"] != to_helper["id"]
