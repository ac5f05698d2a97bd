"""Attachments (docs/attachments.md): upload over REST (raw and multipart), send with tasks, messages and replies
(ids, or inline base64 over MCP), listed on the task and in the inbox, linked from MCP results as resource links,
downloaded only as a download by those who may read them, stored once per network, counted in the storage quota and
pruned with their task."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from cli_support import Run, cli_env, run_cli
from conftest import Account, create_token, mcp_call, own_server, register, tool, tool_error
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

from commhub_lib.cli.run.prompt import task_prompt
from commhub_lib.runtime.server import ServerHandle
from commhub_lib.service.retention import apply_retention
from tests.test_dashboard import Browser, chrome_available, launch_chrome, log_in, task_column

DAY = 86400


async def upload(client: httpx.AsyncClient, auth: dict[str, str], data: bytes, filename: str = "notes.txt",
                 content_type: str = "text/plain", **params: str) -> dict[str, Any]:
    """A raw-body upload that must succeed; its answer."""
    r = await client.post("/api/attachments", headers={**auth, "Content-Type": content_type}, content=data,
                          params={"filename": filename, **params})
    assert r.status_code == 200, r.text
    return r.json()


async def member_of(client: httpx.AsyncClient, owner: Account) -> Account:
    """Another person who joins the owner's network."""
    r = await client.post(f"/api/networks/{owner.network_id}/invite", json={"max_uses": 1}, headers=owner.auth)
    member = await register(client)
    r = await client.post("/api/networks/join", json={"invite_code": r.json()["invite_code"]}, headers=member.auth)
    assert r.status_code == 200, r.text
    return member


def usage(server: ServerHandle, network_id: str) -> dict[str, Any]:
    """The network's usage counters and how many blobs and attachments it keeps."""
    db = server.hub.db
    row = db.query_one("SELECT text_bytes, event_bytes, file_bytes FROM network_usage WHERE network_id = ?",
                       (network_id,))
    assert row is not None
    blobs = db.query_one("SELECT count(*) AS n FROM attachment_blobs WHERE network_id = ?", (network_id,))
    files = db.query_one("SELECT count(*) AS n FROM attachments WHERE network_id = ?", (network_id,))
    return {**row, "blobs": blobs["n"] if blobs else 0, "attachments": files["n"] if files else 0}


async def test_raw_upload_then_download_is_a_download_with_safe_headers(client: httpx.AsyncClient) -> None:
    owner = await register(client)
    data = b"<html><script>alert(1)</script></html>"
    up = await upload(client, owner.auth, data, filename='../../etc/"évil"\n.html', content_type="text/html")
    assert up["attachment_id"].startswith("att_")
    assert up["sha256"] == hashlib.sha256(data).hexdigest() and up["size"] == len(data)
    assert up["filename"] == '"évil".html'  # no directory, no control character
    assert up["content_type"] == "text/html" and up["url"] == f"/api/attachments/{up['attachment_id']}"
    assert up["network_id"] == owner.network_id

    r = await client.get(up["url"], headers=owner.auth)
    assert r.status_code == 200, r.text
    assert r.content == data
    # Never rendered inline: a download, typed as bytes (text/html is not a safe type), nosniff, a sandboxing CSP.
    assert r.headers["content-type"] == "application/octet-stream"
    disposition = r.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="_')
    assert "filename*=UTF-8''%22%C3%A9vil%22.html" in disposition
    assert '"évil"' not in disposition and "\n" not in disposition
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert "sandbox" in r.headers["content-security-policy"]

    # A safe type keeps its type (still a download).
    text = await upload(client, owner.auth, b"line 1\n", filename="log.txt", content_type="text/plain; charset=utf-8")
    r = await client.get(text["url"], headers=owner.auth)
    assert r.headers["content-type"].startswith("text/plain")
    assert r.headers["content-disposition"].startswith("attachment;")

    # The name may come in a header instead of the query.
    r = await client.post("/api/attachments", headers={**owner.auth, "X-Filename": "x.bin"}, content=b"\x00\x01")
    assert r.status_code == 200 and r.json()["filename"] == "x.bin"
    assert r.json()["content_type"] == "application/octet-stream"
    # Without a Content-Type, the filename's extension gives the type.
    r = await client.post("/api/attachments", headers=owner.auth, content=b"\x89PNG", params={"filename": "p.png"})
    assert r.status_code == 200 and r.json()["content_type"] == "image/png"
    # An empty body is no file.
    r = await client.post("/api/attachments", headers=owner.auth, content=b"")
    assert r.status_code == 400 and r.json()["error"] == "invalid_upload"
    # Without a valid token the body is never taken in: 401 at once, and the connection closes behind it.
    r = await client.post("/api/attachments", content=b"x" * 100_000)
    assert r.status_code == 401 and r.headers["connection"] == "close"


async def test_multipart_upload_and_the_same_bytes_are_stored_once(server: ServerHandle,
                                                                   client: httpx.AsyncClient) -> None:
    owner = await register(client)
    data = os.urandom(5000)
    r = await client.post("/api/attachments", headers=owner.auth, data={"note": "ignored field"},
                          files={"file": ("shot.png", data, "image/png")})
    assert r.status_code == 200, r.text
    first = r.json()
    assert (first["filename"], first["content_type"], first["size"]) == ("shot.png", "image/png", 5000)
    before = usage(server, owner.network_id)
    assert before["blobs"] == 1 and before["file_bytes"] >= 5000

    # The same bytes again, under another name: a second attachment, the same blob (counted once).
    second = await upload(client, owner.auth, data, filename="copy.png", content_type="image/png")
    assert second["attachment_id"] != first["attachment_id"] and second["sha256"] == first["sha256"]
    after = usage(server, owner.network_id)
    assert after["blobs"] == 1 and after["attachments"] == 2
    assert 0 < after["file_bytes"] - before["file_bytes"] < 1000  # one more row, not the bytes again
    for up in (first, second):
        r = await client.get(up["url"], headers=owner.auth)
        assert r.content == data and r.headers["content-type"] == "image/png"

    # A form without a file field is refused.
    r = await client.post("/api/attachments", headers=owner.auth, data={"note": "no file"},
                          files={"x": (None, b"plain field")})
    assert r.status_code == 400 and r.json()["error"] == "invalid_upload"
    # The usage answer shows the files.
    r = await client.get(f"/api/networks/{owner.network_id}/usage", headers=owner.auth)
    assert r.json()["file_bytes"] == after["file_bytes"]
    assert r.json()["bytes"] == after["text_bytes"] + after["event_bytes"] + after["file_bytes"]


async def test_visibility_uploader_before_sending_members_after_never_another_network(
        client: httpx.AsyncClient) -> None:
    owner = await register(client)
    member = await member_of(client, owner)
    stranger = await register(client)
    await tool(client, owner.network_token, "report_status", {"alias": "worker"})
    up = await upload(client, owner.auth, b"patch body", filename="fix.patch", content_type="text/x-patch")

    # Before it is sent: its uploader only (also through their own network token).
    assert (await client.get(up["url"], headers=owner.net_auth)).status_code == 200
    r = await client.get(up["url"], headers=member.auth)
    assert r.status_code == 404 and r.json()["error"] == "attachment_not_found"
    # ... and nobody else can send it either.
    r = await client.post("/api/messages", headers=member.auth, json={
        "to": "worker", "content": "look", "network_id": owner.network_id, "attachments": [up["attachment_id"]]})
    assert r.status_code == 404 and r.json()["error"] == "attachment_not_found"

    r = await client.post("/api/tasks", headers=owner.auth, json={
        "to": "worker", "content": "apply it", "attachments": [up["attachment_id"]]})
    assert r.status_code == 200, r.text
    assert [a["attachment_id"] for a in r.json()["attachments"]] == [up["attachment_id"]]
    # Sent: every member of the network may read it, as they may read the task.
    r = await client.get(up["url"], headers=member.auth)
    assert r.status_code == 200 and r.content == b"patch body"
    # Another network's token: not found, as an unknown id (nothing says it exists).
    for auth in (stranger.auth, stranger.net_auth):
        r = await client.get(up["url"], headers=auth)
        assert r.status_code == 404 and r.json()["error"] == "attachment_not_found"
    r = await client.get("/api/attachments/att_0000000000000000", headers=owner.auth)
    assert r.status_code == 404
    # Nor can another network's send name it.
    await tool(client, stranger.network_token, "report_status", {"alias": "other"})
    r = await client.post("/api/messages", headers=stranger.auth, json={
        "to": "other", "content": "steal", "attachments": [up["attachment_id"]]})
    assert r.status_code == 404 and r.json()["error"] == "attachment_not_found"
    assert "POST /api/attachments" in r.json()["message"]


async def test_sends_list_their_files_on_the_task_and_in_the_inbox(client: httpx.AsyncClient) -> None:
    owner = await register(client)
    worker = await create_token(client, owner, name="w", alias="worker")
    await tool(client, worker, "report_status", {"alias": "worker"})
    spec = await upload(client, owner.auth, b"the spec", filename="spec.md", content_type="text/markdown")
    sent = (await client.post("/api/tasks", headers=owner.auth, json={
        "to": "worker", "content": "build it", "attachments": [spec["attachment_id"]]})).json()
    note = await upload(client, owner.auth, b"fyi", filename="fyi.txt")
    r = await client.post("/api/messages", headers=owner.auth, json={"to": "worker", "content": "see this",
                                                                     "attachments": note["attachment_id"]})
    assert r.status_code == 200 and r.json()["attachments"][0]["filename"] == "fyi.txt"

    inbox = await tool(client, worker, "get_inbox", {})
    by_kind = {i["kind"]: i for i in inbox["items"]}
    assert [a["filename"] for a in by_kind["task"]["attachments"]] == ["spec.md"]
    assert [a["filename"] for a in by_kind["message"]["attachments"]] == ["fyi.txt"]
    assert inbox["open_tasks"][0]["attachments"][0]["sha256"] == spec["sha256"]

    # The agent answers with a file inline (base64), a progress note with one, and reads the task back.
    log = base64.b64encode(b"all 12 tests pass\n").decode()
    progress = await tool(client, worker, "send_reply", {
        "task_id": sent["task_id"], "status": "progress", "content": "half way",
        "attachments": [{"filename": "half.log", "data_base64": base64.b64encode(b"6/12").decode()}]})
    assert progress["attachments"][0]["filename"] == "half.log"
    # A question, answered by the person over REST with a file (the sender's answer carries files too).
    await tool(client, worker, "send_reply", {"task_id": sent["task_id"], "status": "question", "content": "which?"})
    answer = await upload(client, owner.auth, b"this one", filename="choice.txt")
    r = await client.post("/api/replies", headers=owner.auth, json={
        "task_id": sent["task_id"], "content": "see file", "attachments": [answer["attachment_id"]]})
    assert r.status_code == 200 and r.json()["attachments"][0]["filename"] == "choice.txt", r.text
    # A reply to a plain message carries files as well.
    message_id = by_kind["message"]["message_id"]
    replied = await tool(client, worker, "send_reply", {"message_id": message_id, "content": "noted", "attachments": [
        {"filename": "ack.txt", "data_base64": base64.b64encode(b"ack").decode()}]})
    assert replied["attachments"][0]["filename"] == "ack.txt"
    done = await tool(client, worker, "report_completion", {
        "task_id": sent["task_id"], "result": "built",
        "attachments": [{"filename": "test.log", "content_type": "text/plain", "data_base64": log}]})
    assert done["attachments"][0]["content_type"] == "text/plain"

    detail = (await client.get(f"/api/tasks/{sent['task_id']}", headers=owner.auth)).json()
    assert [a["filename"] for a in detail["task"]["attachments"]] == ["spec.md"]
    assert [(a["filename"], a["message_id"]) for a in detail["reply_attachments"]] == [
        ("half.log", progress["message_id"]), ("choice.txt", r.json()["message_id"]),
        ("test.log", done["message_id"])]
    r = await client.get(detail["reply_attachments"][2]["url"], headers=owner.auth)
    assert r.content == b"all 12 tests pass\n"
    # The person's inbox shows the reply's file too (get_task over MCP the same lists).
    same = await tool(client, worker, "get_task", {"task_id": sent["task_id"]})
    assert same["reply_attachments"] == detail["reply_attachments"]

    # A task with no files lists none; an unknown id is a clear error and nothing is sent.
    plain = (await client.post("/api/tasks", headers=owner.auth, json={"to": "worker", "content": "plain"})).json()
    assert "attachments" not in plain
    assert (await client.get(f"/api/tasks/{plain['task_id']}", headers=owner.auth)).json()["task"]["attachments"] == []
    err = await tool_error(client, worker, "send_message", {"to": "worker", "content": "x",
                                                            "attachments": ["att_nope"]})
    assert err["error"] == "attachment_not_found"
    err = await tool_error(client, worker, "send_message", {"to": "worker", "content": "x", "attachments": [
        {"filename": "a", "data_base64": "not base64!"}]})
    assert err["error"] == "invalid_upload"


async def _raw_session(client: httpx.AsyncClient, token: str, version: str) -> dict[str, str]:
    """Headers of a bare MCP session that negotiated `version`."""
    r = await client.post("/mcp", headers={"Authorization": f"Bearer {token}"}, json={
        "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
    assert r.status_code == 200 and r.json()["result"]["protocolVersion"] == version
    return {"Authorization": f"Bearer {token}", "Mcp-Session-Id": r.headers["mcp-session-id"],
            "Mcp-Protocol-Version": version}


async def test_mcp_sdk_sends_a_file_inline_and_gets_resource_links(server: ServerHandle,
                                                                   client: httpx.AsyncClient) -> None:
    owner = await register(client)
    sender = await create_token(client, owner, name="a", alias="alice")
    worker = await create_token(client, owner, name="b", alias="bob")
    await tool(client, worker, "report_status", {"alias": "bob"})
    data = b"diff --git a/x b/x\n+fixed\n"
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {sender}"}, timeout=30) as http:
        async with streamable_http_client(server.url + "/mcp", http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                await session.call_tool("report_status", {"alias": "alice"})
                result = await session.call_tool("send_task", {
                    "to": "bob", "content": "apply this patch", "attachments": [
                        {"filename": "fix.patch", "content_type": "text/x-patch",
                         "data_base64": base64.b64encode(data).decode()}]})
                assert not result.is_error, result
                assert result.structured_content is not None
                task_id = result.structured_content["task_id"]
                links = [c for c in result.content if c.type == "resource_link"]
                assert len(links) == 1
                link = links[0]
                assert (link.name, link.mime_type, link.size) == ("fix.patch", "text/x-patch", len(data))
                assert link.uri == server.url + result.structured_content["attachments"][0]["url"]
                # get_task links the task's files too (and the text content stays the JSON result).
                got = await session.call_tool("get_task", {"task_id": task_id})
                assert [c.type for c in got.content] == ["text", "resource_link"]
                assert json.loads(got.content[0].text) == got.structured_content  # type: ignore[union-attr]
    # The link is what a client fetches, with its own bearer token.
    r = await client.get(link.uri, headers={"Authorization": f"Bearer {worker}"})
    assert r.status_code == 200 and r.content == data

    # A client on a version before resource links (2025-03-26) gets the text content only.
    headers = await _raw_session(client, worker, "2025-03-26")
    r = await client.post("/mcp", headers=headers, json={"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                                                         "params": {"name": "get_task", "arguments": {
                                                             "task_id": task_id}}})
    content = r.json()["result"]["content"]
    assert [c["type"] for c in content] == ["text"]
    assert json.loads(content[0]["text"])["task"]["attachments"][0]["filename"] == "fix.patch"
    # From 2025-06-18 on the links come with it; a tool whose result lists no file carries none.
    headers = await _raw_session(client, worker, "2025-06-18")
    r = await client.post("/mcp", headers=headers, json={"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                                                         "params": {"name": "get_inbox", "arguments": {}}})
    assert [c["type"] for c in r.json()["result"]["content"]] == ["text", "resource_link"]
    plain = await mcp_call(client, sender, "send_message", {"to": "bob", "content": "no file"})
    assert [c["type"] for c in plain["content"]] == ["text"]


async def test_size_caps_name_their_settings(tmp_path: Path) -> None:
    async with own_server(tmp_path, "caps", max_attachment_bytes=1000, max_inline_attachment_bytes=100) as srv:
        async with httpx.AsyncClient(base_url=srv.url, timeout=30) as client:
            owner = await register(client)
            await tool(client, owner.network_token, "report_status", {"alias": "worker"})
            # Far past the route's own body limit: the body reader refuses it (not max_body_bytes: that is 1 MiB).
            r = await client.post("/api/attachments", headers=owner.auth, content=b"x" * 40_000)
            assert r.status_code == 413 and "COMMHUB_MAX_ATTACHMENT_BYTES" in r.json()["message"], r.text
            # Within the envelope's room but over the file limit: the file is refused, naming the setting.
            r = await client.post("/api/attachments", headers=owner.auth, content=b"x" * 1001)
            assert r.status_code == 413 and r.json()["error"] == "attachment_too_large"
            assert "COMMHUB_MAX_ATTACHMENT_BYTES" in r.json()["message"]
            assert (await upload(client, owner.auth, b"x" * 1000))["size"] == 1000
            # Inline files have their own, smaller cap.
            err = await tool_error(client, owner.network_token, "send_message", {
                "to": "worker", "content": "big", "attachments": [
                    {"filename": "a.bin", "data_base64": base64.b64encode(b"y" * 101).decode()}]})
            assert err["error"] == "attachment_too_large" and "MAX_INLINE_ATTACHMENT_BYTES" in err["message"]
            sent = await tool(client, owner.network_token, "send_message", {
                "to": "worker", "content": "small", "attachments": [
                    {"filename": "a.bin", "data_base64": base64.b64encode(b"y" * 100).decode()}]})
            assert sent["attachments"][0]["size"] == 100  # at the cap: kept (a grouped write, as every send_message)
            # The other routes keep max_body_bytes.
            r = await client.post("/api/messages", headers=owner.auth, json={"to": "worker", "content": "z" * 50})
            assert r.status_code == 200


async def test_quota_counts_files_and_refuses_past_it(tmp_path: Path) -> None:
    async with own_server(tmp_path, "quota", max_network_bytes=60_000) as srv:
        async with httpx.AsyncClient(base_url=srv.url, timeout=30) as client:
            owner = await register(client)
            await upload(client, owner.auth, os.urandom(30_000), filename="a.bin")
            r = await client.post("/api/attachments", headers=owner.auth, content=os.urandom(40_000),
                                  params={"filename": "b.bin"})
            assert r.status_code == 409 and r.json()["error"] == "quota_exceeded", r.text
            assert "COMMHUB_MAX_NETWORK_BYTES" in r.json()["message"]
            assert usage(srv, owner.network_id)["attachments"] == 1  # nothing of the refused one was kept


async def test_files_go_with_their_task_and_unsent_uploads_are_pruned(tmp_path: Path) -> None:
    async with own_server(tmp_path, "prune", task_retention_days=1, message_retention_days=1) as srv:
        async with httpx.AsyncClient(base_url=srv.url, timeout=30) as client:
            owner = await register(client)
            worker = await create_token(client, owner, name="w", alias="worker")
            await tool(client, worker, "report_status", {"alias": "worker"})
            empty = usage(srv, owner.network_id)["file_bytes"]
            spec = await upload(client, owner.auth, os.urandom(4000), filename="spec.bin")
            sent = (await client.post("/api/tasks", headers=owner.auth, json={
                "to": "worker", "content": "do it", "attachments": [spec["attachment_id"]]})).json()
            await tool(client, worker, "get_inbox", {})
            out = {"filename": "out.bin", "data_base64": base64.b64encode(os.urandom(3000)).decode()}
            await tool(client, worker, "report_completion", {"task_id": sent["task_id"], "result": "done",
                                                             "attachments": [out]})
            unsent = await upload(client, owner.auth, os.urandom(2000), filename="forgotten.bin")
            full = usage(srv, owner.network_id)
            assert full["blobs"] == 3 and full["file_bytes"] > empty + 9000

            db = srv.hub.db
            with db.write():  # the task ended (and its items were read) two days ago
                db.execute("UPDATE messages SET created_ts = created_ts - ?, read_at = coalesce(read_at, 'x')",
                           (2 * DAY,))
                db.execute("UPDATE tasks SET created_ts = created_ts - ?, updated_at = '2000-01-01 00:00:00'",
                           (2 * DAY,))
            done = await apply_retention(srv.hub)
            assert done["tasks"] == 1 and "unsent_attachments" not in done  # the upload is only minutes old
            left = usage(srv, owner.network_id)
            assert (left["blobs"], left["attachments"]) == (1, 1)  # the task's and the reply's files went
            r = await client.get(spec["url"], headers=owner.auth)
            assert r.status_code == 404

            with db.write():  # the upload nobody sent is a day old
                db.execute("UPDATE attachments SET created_ts = created_ts - ?", (DAY + 60,))
            assert (await apply_retention(srv.hub))["unsent_attachments"] == 1
            assert (await client.get(unsent["url"], headers=owner.auth)).status_code == 404
            gone = usage(srv, owner.network_id)
            assert (gone["blobs"], gone["attachments"], gone["file_bytes"]) == (0, 0, empty)


@pytest.mark.subprocess
async def test_cli_send_attach_and_attachment_get(server: ServerHandle, client: httpx.AsyncClient,
                                                  tmp_path: Path) -> None:
    owner = await register(client)
    await tool(client, owner.network_token, "report_status", {"alias": "worker"})
    patch = tmp_path / "fix.patch"
    patch.write_bytes(b"--- a\n+++ b\n")
    notes = tmp_path / "notes.txt"
    notes.write_text("read me\n")
    env = cli_env(server.url, owner.token)

    async def cli(*args: str, cwd: Path = tmp_path) -> Run:
        return await run_cli(*args, env=env, cwd=cwd)

    sent = await cli("send", "worker", "apply it", "--attach", str(patch), "--attach", str(notes), "--json")
    assert sent.code == 0, sent.err
    files = sent.json()["attachments"]
    assert [(f["filename"], f["content_type"]) for f in files] == [("fix.patch", "text/x-diff"),
                                                                   ("notes.txt", "text/plain")]
    shown = await cli("task", json.loads(sent.out)["task_id"])
    assert f"file: fix.patch (12 bytes, text/x-diff): commhub attachment get {files[0]['attachment_id']}" in shown.out
    out = tmp_path / "copy"
    got = await cli("attachment", "get", files[0]["attachment_id"], "-o", str(out))
    assert got.code == 0, got.err
    assert out.read_bytes() == patch.read_bytes()
    # Without -o: saved under its own name in the current directory, never over an existing file.
    where = tmp_path / "dl"
    where.mkdir()
    assert (await cli("attachment", "get", files[1]["attachment_id"], cwd=where)).code == 0
    assert (where / "notes.txt").read_text() == "read me\n"
    again = await cli("attachment", "get", files[1]["attachment_id"], cwd=where)
    assert again.code == 1 and "exists" in again.err
    missing = await cli("send", "worker", "x", "--attach", str(tmp_path / "nope"))
    assert missing.code == 1 and "cannot read" in missing.err
    unknown = await cli("attachment", "get", "att_unknown")
    assert unknown.code == 1 and "attachment_not_found" in unknown.err


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.skipif(not chrome_available(), reason="chromium and chromium-driver are not installed")
async def test_the_task_dialog_lists_the_files_as_download_links(server: ServerHandle, client: httpx.AsyncClient,
                                                               tmp_path: Path) -> None:
    owner = await register(client)
    worker = await create_token(client, owner, name="w", alias="worker")
    await tool(client, worker, "report_status", {"alias": "worker"})
    spec = await upload(client, owner.auth, b"<b>spec</b>", filename="spec.html", content_type="text/html")
    task_id = (await client.post("/api/tasks", headers=owner.auth, json={
        "to": "worker", "content": "read the spec", "attachments": [spec["attachment_id"]]})).json()["task_id"]
    await tool(client, worker, "send_reply", {"task_id": task_id, "status": "progress", "content": "log so far",
                                              "attachments": [{"filename": "run.log",
                                                               "data_base64": base64.b64encode(b"ok").decode()}]})
    driver = launch_chrome(tmp_path / "profile")
    try:
        page = Browser(driver, server.url, tmp_path)
        await log_in(page, owner)
        await page.open_view("tasks")
        await page.wait_for(lambda d: task_column(task_id)(d) == "running", "the task under Running")
        await page.click_css(f'.task-card[data-task-id="{task_id}"]')
        await page.wait_for(lambda d: d.find_elements("css selector", '[data-testid="attachment-link"]'), "the files")
        names = await page.run(lambda d: [a.text for a in d.find_elements(
            "css selector", '[data-testid="attachment-link"]')])
        assert names == ["spec.html", "run.log"]
        # Not a link to the file: the page fetches it with the login's token and saves it (no token in a URL).
        href = await page.run(lambda d: d.find_element("css selector", '[data-testid="attachment-link"]')
                              .get_attribute("href"))
        assert href.endswith("#")
        await page.click_css('[data-testid="attachment-link"]')
        fetched = await page.run(lambda d: d.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "fetch(arguments[0], {headers: {Authorization: 'Bearer ' + JSON.parse(sessionStorage.getItem("
            "'commhub.login')).token}}).then(r => done([r.status, r.headers.get('content-disposition')]))",
            spec["url"]))
        assert fetched[0] == 200 and fetched[1].startswith("attachment;")
        title = await page.run(lambda d: d.find_element("css selector", '[data-testid="attachment-link"]')
                               .get_attribute("title"))
        assert not title  # the download did not fail
        await page.screenshot("task-attachments")
    finally:
        driver.quit()


async def test_deleting_a_network_takes_its_files(server: ServerHandle, client: httpx.AsyncClient) -> None:
    owner = await register(client)
    r = await client.post("/api/networks", headers=owner.auth, json={"name": "scratch"})
    network_id = r.json()["network_id"]
    await upload(client, owner.auth, b"kept nowhere else", network_id=network_id)
    assert usage(server, network_id)["blobs"] == 1
    r = await client.delete(f"/api/networks/{network_id}", headers=owner.auth)
    assert r.status_code == 200, r.text
    assert server.hub.db.query("SELECT count(*) AS n FROM attachment_blobs WHERE network_id = ?",
                               (network_id,)) == [{"n": 0}]


def test_a_runner_turn_names_the_tasks_files_with_their_urls() -> None:
    task = {"task_id": "t1", "message_id": "msg_1", "from_name": "alice", "content": "apply it", "attachments": [
        {"attachment_id": "att_1", "filename": "fix.patch", "size": 12, "content_type": "text/x-diff",
         "sha256": "ab", "url": "/api/attachments/att_1"}]}
    prompt = task_prompt("bob", task, hub_url="http://127.0.0.1:9200/")
    assert "- fix.patch (12 bytes, text/x-diff): http://127.0.0.1:9200/api/attachments/att_1" in prompt
    assert "Files sent with it" not in task_prompt("bob", {**task, "attachments": []})
