"""What POST /mcp leaves out per call without changing a byte of the answer: the body taken off hypercorn's queue
without waiting when it is already there, and a tool's result encoded once (mcp/http.py, mcp/protocol.py)."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import trio

from commhub_lib.api.common import json_bytes
from commhub_lib.errors import PayloadTooLarge
from commhub_lib.mcp.http import ClientGone, McpPost
from commhub_lib.mcp.protocol import PostRequest, _tool_answer, answer_bytes
from commhub_lib.runtime.server import ServerHandle
from tests.conftest import create_token, register, tool


def reader(max_body: int = 1000) -> McpPost:
    """An McpPost whose only settings are the body bounds (what _read_body uses)."""
    settings = SimpleNamespace(max_body_bytes=max_body, body_timeout_seconds=5.0)
    return McpPost(SimpleNamespace(hub=SimpleNamespace(settings=settings)))  # type: ignore[arg-type]


def queued(*messages: dict[str, Any]) -> tuple[trio.MemorySendChannel, trio.MemoryReceiveChannel]:
    """A channel like the one hypercorn's trio worker gives the app as `receive`, with messages already in it."""
    send, receive = trio.open_memory_channel[dict[str, Any]](10)
    for message in messages:
        send.send_nowait(message)
    return send, receive


async def test_a_queued_body_is_taken_without_waiting() -> None:
    """Hypercorn queues a small request's body before the app runs: reading it needs no checkpoint (a cancelled
    scope would otherwise raise at the first `await receive()`, as it did before)."""
    _send, receive = queued({"type": "http.request", "body": b'{"a":', "more_body": True},
                            {"type": "http.request", "body": b"1}", "more_body": True},
                            {"type": "http.request", "body": b"", "more_body": False})
    with trio.CancelScope() as scope:
        scope.cancel()
        body = await reader()._read_body(PostRequest({}, b"", b""), receive.receive)
    assert body == b'{"a":1}'


async def test_a_body_complete_by_its_content_length_needs_no_last_message() -> None:
    """Hypercorn may start the app before the empty last message is queued: Content-Length bytes are the whole
    body (h11 allows no more), so it is not waited for."""
    _send, receive = queued({"type": "http.request", "body": b'{"a":1}', "more_body": True})
    with trio.CancelScope() as scope:
        scope.cancel()
        body = await reader()._read_body(PostRequest({"content-length": "7"}, b"", b""), receive.receive)
    assert body == b'{"a":1}'


async def test_the_rest_of_a_body_is_awaited() -> None:
    """What has not arrived yet is waited for, after what was queued."""
    send, receive = queued({"type": "http.request", "body": b'{"a":', "more_body": True})
    async with trio.open_nursery() as nursery:
        async def rest() -> None:
            await trio.sleep(0.05)  # a chunk that arrives later (not synchronisation: the read must wait for it)
            await send.send({"type": "http.request", "body": b"2}", "more_body": False})
        nursery.start_soon(rest)
        body = await reader()._read_body(PostRequest({}, b"", b""), receive.receive)
    assert body == b'{"a":2}'


async def test_a_queued_body_over_the_cap_or_a_disconnect_is_refused() -> None:
    _send, receive = queued({"type": "http.request", "body": b"x" * 600, "more_body": True},
                            {"type": "http.request", "body": b"x" * 600, "more_body": False})
    with pytest.raises(PayloadTooLarge):
        await reader(1000)._read_body(PostRequest({}, b"", b""), receive.receive)
    _send, receive = queued({"type": "http.request", "body": b"{", "more_body": True}, {"type": "http.disconnect"})
    with pytest.raises(ClientGone):
        await reader()._read_body(PostRequest({}, b"", b""), receive.receive)


RESULTS: list[Any] = [
    {"ok": True, "message_id": "msg_0123456789abcdef", "to": "agent-1", "recipient_online": False},
    {"text": 'quotes " and \\ backslashes, \n newlines, \t tabs, \x00 \x1f controls', "n": -1.5e300, "none": None},
    {"unicode": "Grüße, 東京, emoji 🚀, separators \u2028 \u2029, \u0085", "nested": {"a": [1, 2, {"b": []}]}},
    {"lone": "surrogate \ud800 here"},  # json_bytes falls back to \\u escapes for the whole answer
    {},
]


@pytest.mark.parametrize("result", RESULTS)
@pytest.mark.parametrize("msg_id", [7, "req-é-1", 0])
def test_an_encoded_answer_is_byte_for_byte_the_dict_encoded(result: dict[str, Any], msg_id: Any) -> None:
    """The result's text spliced into the answer gives exactly the bytes of encoding the answer as a whole."""
    text = json.dumps(result, ensure_ascii=False, separators=(",", ":"))
    expected = json_bytes({"jsonrpc": "2.0", "id": msg_id, "result": {
        "content": [{"type": "text", "text": text}], "structuredContent": result, "isError": False}})
    answer = _tool_answer(msg_id, result)
    assert answer_bytes(answer) == expected
    assert json_bytes(answer) == expected  # the dict still says the same, for whoever reads it


async def test_a_send_message_answer_on_the_wire(server: ServerHandle, client: httpx.AsyncClient) -> None:
    """Over a real server: the answer's text is the JSON of its structuredContent, the body is the answer
    encoded compactly, and tricky content survives the round trip."""
    account = await register(client)
    tokens = [await create_token(client, account, f"t{i}") for i in range(2)]
    for i, token in enumerate(tokens):
        await tool(client, token, "report_status", {"alias": f"wire-{i}"})
    content = 'he said "hi" \\ 🚀 \u2028 end'
    r = await client.post("/mcp", headers={"Authorization": f"Bearer {tokens[0]}"}, json={
        "jsonrpc": "2.0", "id": "s-1", "method": "tools/call",
        "params": {"name": "send_message", "arguments": {"to": "wire-1", "content": content}}})
    answer = json.loads(r.content)
    assert r.content == json_bytes(answer)
    result = answer["result"]
    assert result["isError"] is False and answer["id"] == "s-1"
    assert result["content"][0]["text"] == json.dumps(result["structuredContent"], ensure_ascii=False,
                                                      separators=(",", ":"))
    r = await client.post("/mcp", headers={"Authorization": f"Bearer {tokens[1]}"}, json={
        "jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "get_inbox", "arguments": {}}})
    items = r.json()["result"]["structuredContent"]["items"]
    assert [i["content"] for i in items] == [content]
