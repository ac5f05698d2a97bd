"""A hostile review of the 0.12 features (schedules, attachments, needs you, the A2A server): each test here proves a
defect found on main and stays as its regression test."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import trio

from tests.conftest import own_server
from tests.test_a2a_server import DEADLINE, make_setup

pytestmark = pytest.mark.subprocess


def _rpc(method: str, params: dict[str, Any], msg_id: int = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params}


# --- A2A ------------------------------------------------------------------------------------------------------


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
