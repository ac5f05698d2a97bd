"""A hostile review of the 0.12 features (schedules, attachments, needs you, the A2A server): each test here proves a
defect found on main and stays as its regression test."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import trio

from commhub_lib.config import load_settings
from commhub_lib.ids import now_text, now_ts
from commhub_lib.runtime.server import ServerHandle
from commhub_lib.service import retention, schedules
from commhub_lib.store import schedules as schedule_store
from tests.conftest import create_token, own_server, register, tool
from tests.test_a2a_server import DEADLINE, make_setup, next_task


def _rpc(method: str, params: dict[str, Any], msg_id: int = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params}


# --- A2A ------------------------------------------------------------------------------------------------------


@pytest.fixture
async def setup_a2a(server: ServerHandle, client: httpx.AsyncClient) -> Any:
    """tests/test_a2a_server.py's Setup: `worker` served as an A2A agent, an outside caller's token."""
    return await make_setup(server, client)


async def test_a_burst_of_a2a_subscriptions_cannot_pass_the_stream_cap(tmp_path: Any) -> None:
    """max_streams_per_token holds for A2A streams opened all at once: the slot is taken when the cap is checked,
    not when the answer's body starts (a burst used to pass the check before any of them counted)."""
    cap, burst = 2, 8
    async with own_server(tmp_path, "a2acap", max_streams_per_token=cap) as handle, \
            httpx.AsyncClient(base_url=handle.url, timeout=30) as c:
        s = await make_setup(handle, c)
        send = _rpc("SendMessage", {"message": {"messageId": "m-cap", "role": "ROLE_USER", "parts": [{"text": "x"}]},
                                    "configuration": {"returnImmediately": True}})
        async with s.http() as http:
            task_id = (await http.post(s.base, json=send)).json()["result"]["task"]["id"]
        statuses: list[int] = []
        opened = trio.Event()

        async def subscribe(n: int) -> None:
            # Each on its own connection, as separate clients would.
            async with s.http() as http, http.stream(
                    "POST", s.base, json=_rpc("SubscribeToTask", {"id": task_id}, n)) as r:
                statuses.append(r.status_code)
                if len(statuses) == burst:
                    opened.set()
                await opened.wait()  # hold every stream open until all have been answered

        with trio.fail_after(DEADLINE):
            async with trio.open_nursery() as nursery:
                for n in range(burst):
                    nursery.start_soon(subscribe, n)
    assert statuses.count(200) <= cap, statuses
    assert statuses.count(429) == burst - statuses.count(200), statuses


# --- schedules ------------------------------------------------------------------------------------------------


async def _due_schedule(server: ServerHandle, client: httpx.AsyncClient) -> tuple[Any, str]:
    """An owner, a connected `worker`, and an hourly schedule to it made due now (as if its hour had passed)."""
    owner = await register(client)
    worker = await create_token(client, owner, "worker", alias="worker")
    await tool(client, worker, "report_status", {"alias": "worker", "status": "idle"})
    r = await client.post("/api/schedules", headers=owner.auth,
                          json={"to": "worker", "content": "hourly report", "every_seconds": 3600})
    assert r.status_code == 200, r.text
    sid = r.json()["schedule"]["schedule_id"]
    db = server.hub.db
    with db.write():  # due now; the hub's own scheduler sleeps on (nothing woke it)
        schedule_store.set_next_run(db, sid, schedules.ACTIVE, now_ts() - 1, now_text())
    return owner, sid


@pytest.mark.parametrize("change", ["pause", "delete"])
async def test_a_schedule_paused_or_deleted_while_the_scheduler_waits_does_not_run(
        server: ServerHandle, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, change: str) -> None:
    """The scheduler reads a batch of due schedules, then waits for the write lock before each run (another
    process may hold it): a pause or delete served meanwhile must hold. It used to run the stale row: the task was
    sent anyway and the paused schedule was made active again."""
    owner, sid = await _due_schedule(server, client)
    db = server.hub.db
    real_wait = db.wait_for_write_lock

    async def contended(timeout: float) -> None:  # noqa: ASYNC109 (the real signature)
        # While the scheduler waits, the owner's request is served.
        r = await (client.post(f"/api/schedules/{sid}/pause", headers=owner.auth) if change == "pause"
                   else client.delete(f"/api/schedules/{sid}", headers=owner.auth))
        assert r.status_code == 200, r.text
        monkeypatch.setattr(db, "wait_for_write_lock", real_wait)
        await real_wait(timeout)

    monkeypatch.setattr(db, "wait_for_write_lock", contended)
    with trio.fail_after(DEADLINE):
        await schedules.run_due(server.hub)
    r = await client.get("/api/tasks", headers=owner.auth, params={"to_name": "worker"})
    assert [t for t in r.json()["tasks"] if t["schedule_id"] == sid] == []
    row = schedule_store.get_schedule(db, sid)
    if change == "pause":
        assert row is not None and row["state"] == schedules.PAUSED and row["next_run_ts"] is None, row
    else:
        assert row is None


async def test_an_agent_schedule_is_not_its_aliass_next_holders(server: ServerHandle,
                                                                 client: httpx.AsyncClient) -> None:
    """An agent's schedule is managed by that agent (the alias, through a token of the person whose token made it)
    or a person who may: not by whichever token holds the alias next. A plain member's agent that took the alias
    after an owner released it could run, pause and delete the owner's agent's schedule."""
    owner = await register(client)
    worker = await create_token(client, owner, "worker", alias="worker")
    await tool(client, worker, "report_status", {"alias": "worker", "status": "idle"})
    planner = await create_token(client, owner, "planner")  # not bound: the alias is the claim's
    await tool(client, planner, "report_status", {"alias": "planner", "status": "idle"})
    made = (await tool(client, planner, "schedule_task", {"to": "worker", "content": "deploy",
                                                          "every_seconds": 3600}))["schedule"]
    sid = made["schedule_id"]
    r = await client.post(f"/api/networks/{owner.network_id}/aliases/planner/release", headers=owner.auth)
    assert r.status_code == 200, r.text
    invite = await client.post(f"/api/networks/{owner.network_id}/invite", json={"role": "member", "max_uses": 1},
                               headers=owner.auth)
    member = await register(client)
    r = await client.post("/api/networks/join", json={"invite_code": invite.json()["invite_code"]},
                          headers=member.auth)
    assert r.status_code == 200, r.text
    squatter = await create_token(client, member, "squatter", network_id=owner.network_id)
    await tool(client, squatter, "report_status", {"alias": "planner", "status": "idle"})
    as_squatter = {"Authorization": f"Bearer {squatter}"}
    for action in ("run", "pause"):
        r = await client.post(f"/api/schedules/{sid}/{action}", headers=as_squatter)
        assert r.status_code == 403 and r.json()["error"] == "schedule_not_allowed", (action, r.text)
    r = await client.delete(f"/api/schedules/{sid}", headers=as_squatter)
    assert r.status_code == 403, r.text
    # Nor does it send as the alias's new holder (the replies would go to it): its next run is skipped, paused.
    ran = (await client.post(f"/api/schedules/{sid}/run", headers=owner.auth)).json()
    assert ran["ran"] is False and "no longer held by the token that created it" in ran["skipped_reason"], ran
    assert ran["schedule"]["state"] == "paused"
    # Its owner (the person whose token made it) still manages it.
    r = await client.delete(f"/api/schedules/{sid}", headers=owner.auth)
    assert r.status_code == 200 and r.json()["deleted"] is True, r.text


async def test_an_a2a_context_id_is_bounded(tmp_path: Any) -> None:
    """A contextId is stored with the task (outside the network's storage quota) and repeated in every message of
    its history and every stream update: one of ~900 KB made each GetTask of a task with many replies hundreds of
    megabytes. It is an id: at most 200 characters, else invalid params."""
    async with own_server(tmp_path, "ctx") as handle, httpx.AsyncClient(base_url=handle.url, timeout=30) as c:
        s = await make_setup(handle, c)
        huge = "c" * 900_000
        send = _rpc("SendMessage", {"message": {"messageId": "m-ctx", "role": "ROLE_USER", "contextId": huge,
                                                "parts": [{"text": "hello"}]},
                                    "configuration": {"returnImmediately": True}})
        async with s.http() as http:
            answer = (await http.post(s.base, json=send)).json()
            ok = await http.post(s.base, json=_rpc("SendMessage", {"message": {
                "messageId": "m-ctx2", "role": "ROLE_USER", "contextId": "c" * 200, "parts": [{"text": "hi"}]},
                "configuration": {"returnImmediately": True}}))
    assert "error" in answer and answer["error"]["code"] == -32602, str(answer)[:300]
    assert "contextId" in answer["error"]["message"]
    assert ok.json()["result"]["task"]["contextId"] == "c" * 200


async def test_an_a2a_request_id_must_be_a_string_or_an_integer(setup_a2a: Any) -> None:
    """JSON-RPC ids are strings, numbers or null; /mcp refuses others as Invalid Request, and so does A2A now (an
    object or array id was run and echoed back on every event of a stream)."""
    s = setup_a2a
    get = _rpc("GetTask", {"id": "nope"})
    async with s.http() as http:
        for bad in ({"a": "b" * 1000}, ["x"], True, 1.5):
            answer = (await http.post(s.base, json={**get, "id": bad})).json()
            assert answer["id"] is None and answer["error"]["code"] == -32600, (bad, answer)
        for good in ("req-1", 7):
            answer = (await http.post(s.base, json={**get, "id": good})).json()
            assert answer["id"] == good and answer["error"]["code"] == -32001, (good, answer)  # task not found


async def test_replies_an_a2a_caller_was_given_are_read_and_go_with_retention(tmp_path: Any) -> None:
    """An A2A caller (`a2a:<token id>`) has no inbox to ack: the replies it is given (GetTask, a send's answer, a
    stream) are what it reads. They stayed unread for ever, so message retention (which keeps unread items) never
    freed them nor their files, and the network's storage only grew."""
    async with own_server(tmp_path, "a2aread", message_retention_days=1e-6) as handle, \
            httpx.AsyncClient(base_url=handle.url, timeout=30) as c:
        s = await make_setup(handle, c)
        send = _rpc("SendMessage", {"message": {"messageId": "m-read", "role": "ROLE_USER", "parts": [{"text": "x"}]},
                                    "configuration": {"returnImmediately": True}})
        async with s.http() as http:
            task_id = (await http.post(s.base, json=send)).json()["result"]["task"]["id"]
            item = await next_task(c, s.worker)
            await tool(c, s.worker, "send_reply", {"task_id": item["task_id"], "status": "done", "content": "done"})
            got = (await http.post(s.base, json=_rpc("GetTask", {"id": task_id}))).json()["result"]
        assert got["status"]["state"] == "TASK_STATE_COMPLETED", got
        db = handle.hub.db
        [reply] = db.query("SELECT message_id, read_at FROM messages WHERE task_id = ? AND kind = 'reply'", (task_id,))
        assert reply["read_at"] is not None, reply
        with trio.fail_after(DEADLINE):  # past the (tiny) retention age, the job frees it
            while db.query("SELECT 1 FROM messages WHERE message_id = ?", (reply["message_id"],)):
                await retention.apply_retention(handle.hub)
                await trio.sleep(0.05)


# --- settings -------------------------------------------------------------------------------------------------


def test_a_webhook_ca_file_without_a_certificate_is_a_bad_setting(tmp_path: Any) -> None:
    """A readable file that holds no certificate (or a directory) passed the check; the server then stopped at
    start saying "cannot listen on 127.0.0.1:…: [X509: NO_CERTIFICATE_OR_CRL_FOUND]". It is refused as the
    setting, by name, before anything starts."""
    garbage = tmp_path / "ca.pem"
    garbage.write_text("not a certificate\n")
    for path in (garbage, tmp_path):
        with pytest.raises(ValueError, match="setting webhook_ca_file"):
            load_settings({}, {"COMMHUB_WEBHOOK_CA_FILE": str(path)})


async def test_a_schedule_at_the_ends_of_the_calendar_is_a_400(server: ServerHandle,
                                                                client: httpx.AsyncClient) -> None:
    """A time whose UTC instant falls outside years 1-9999 (9999-12-31 west of UTC, 0001-01-01 east of it) crashed
    the answer (500, a traceback in the log): a 400 naming `at` now."""
    owner = await register(client)
    worker = await create_token(client, owner, "worker", alias="worker")
    await tool(client, worker, "report_status", {"alias": "worker", "status": "idle"})
    for at, tz in (("9999-12-31T23:59:59", "Etc/GMT+12"), ("0001-01-01T00:00:00", "Etc/GMT-14")):
        r = await client.post("/api/schedules", headers=owner.auth,
                              json={"to": "worker", "content": "c", "at": at, "tz": tz})
        assert r.status_code == 400 and r.json()["message"].startswith("at: "), (at, tz, r.text)


# --- attachments ----------------------------------------------------------------------------------------------


async def test_a_removed_members_unsent_uploads_go_with_them(tmp_path: Any) -> None:
    """Uploads never sent are readable and sendable by their uploader only, and count in the network's storage: a
    member could fill the network with them (no one else can see or delete them) and every send failed with 409
    until attachment_unsent_hours passed, removing the member changing nothing. Their unsent uploads are dead data
    once they are gone: they go with them, and the network can store again."""
    async with own_server(tmp_path, "unsent", max_network_bytes=100_000, max_attachment_bytes=16_384) as handle, \
            httpx.AsyncClient(base_url=handle.url, timeout=30) as c:
        owner = await register(c)
        invite = await c.post(f"/api/networks/{owner.network_id}/invite", json={"role": "member", "max_uses": 1},
                              headers=owner.auth)
        member = await register(c)
        r = await c.post("/api/networks/join", json={"invite_code": invite.json()["invite_code"]},
                         headers=member.auth)
        assert r.status_code == 200, r.text
        params = {"network_id": owner.network_id, "filename": "junk.bin"}
        for n in range(100):  # until the network is full
            r = await c.post("/api/attachments", params=params, content=bytes([n]) * 16_000,
                             headers={**member.auth, "content-type": "application/octet-stream"})
            if r.status_code != 200:
                break
        assert r.status_code == 409 and r.json()["error"] == "quota_exceeded", r.text
        own = {**owner.auth, "content-type": "text/plain"}
        r = await c.post("/api/attachments", params={"filename": "notes.txt"}, content=b"x" * 10_000, headers=own)
        assert r.status_code == 409, r.text  # the owner cannot store anything either
        r = await c.delete(f"/api/networks/{owner.network_id}/members/{member.user_id}", headers=owner.auth)
        assert r.status_code == 200, r.text
        r = await c.post("/api/attachments", params={"filename": "notes.txt"}, content=b"x" * 10_000, headers=own)
        assert r.status_code == 200, r.text
        usage = (await c.get(f"/api/networks/{owner.network_id}/usage", headers=owner.auth)).json()
        assert usage["file_bytes"] < 20_000, usage


async def test_a_form_of_many_empty_fields_is_refused_before_it_is_parsed(server: ServerHandle,
                                                                          client: httpx.AsyncClient) -> None:
    """Each form part costs the parser tens of µs of the event loop: a 10 MiB body of ~180,000 empty fields before
    its file held the whole hub (every request and stream) for seconds, and any token could send it again and
    again. The file must be among the form's first parts; a form with a few fields still works."""
    owner = await register(client)
    boundary = "XyZ"
    field = f'--{boundary}\r\nContent-Disposition: form-data; name="a"\r\n\r\n\r\n'
    file_part = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.txt"\r\n'
                 f"Content-Type: text/plain\r\n\r\nhello\r\n--{boundary}--\r\n")
    headers = {**owner.auth, "content-type": f"multipart/form-data; boundary={boundary}"}
    r = await client.post("/api/attachments", content=(field * 5000 + file_part).encode(), headers=headers)
    assert r.status_code == 400 and r.json()["error"] == "invalid_upload", r.text
    assert "first 32 fields" in r.json()["message"]
    r = await client.post("/api/attachments", content=(field * 3 + file_part).encode(), headers=headers)
    assert r.status_code == 200 and r.json()["filename"] == "x.txt" and r.json()["size"] == 5, r.text
    # A file larger than one piece the parser is fed comes out whole.
    big = bytes(range(256)) * 1000
    r = await client.post("/api/attachments", files={"file": ("big.bin", big, "application/octet-stream")},
                          headers=owner.auth)
    assert r.status_code == 200 and r.json()["size"] == len(big), r.text
    d = await client.get(f"/api/attachments/{r.json()['attachment_id']}", headers=owner.auth)
    assert d.content == big
