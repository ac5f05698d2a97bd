"""Child of stream_open_cost.py --soak: mixed traffic against a hub for a while, from its own process (so its
objects never mix with the server's in a gc census).

Each round: an MCP send_message to one of the streaming agents (it wakes that stream), a REST task list, a
/api/status, a request with a wrong token (a 401), an MCP get_inbox long-poll that times out, and one stream of
a short-lived agent opened and closed (not with `nochurn`). Prints `done <rounds>` at the end.

    python bench/soak_traffic.py BASE_URL TOKENS_JSON SENDER_TOKEN SECONDS [LONGPOLLERS [nochurn]]

The sender is a token of no stream. LONGPOLLERS (default 0) agents of TOKENS_JSON also loop on get_inbox
long-polls of 2 s meanwhile (as MCP clients waiting for work do), so that many requests are in flight whenever
the stream gc job freezes.
"""

from __future__ import annotations

import json
import random
import sys
import time

import benchlib as bl
import httpx
import trio


async def long_poll(base: str, alias: str, token: str, until: float, polls: list[int]) -> None:
    """One agent waiting for work: get_inbox with a 2 s wait, again and again."""
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        session = await bl.mcp_open(http, base, token, "soak-poller", "2025-06-18")
        await bl.mcp_tool(http, base, session, "report_status", {"alias": alias})
        while time.monotonic() < until:
            await bl.mcp_tool(http, base, session, "get_inbox", {"wait_seconds": 2.0})
            polls[0] += 1


async def main(base: str, tokens_path: str, sender_token: str, seconds: float, pollers: int = 0,
               churn: bool = True) -> None:
    """Run rounds of the mix until `seconds` are over."""
    with open(tokens_path) as f:  # noqa: ASYNC230 - a small file, read once before any traffic
        agents = json.load(f)
    polls = [0]
    async with trio.open_nursery() as nursery:
        for alias, token in agents[:pollers]:
            nursery.start_soon(long_poll, base, alias, token, time.monotonic() + seconds, polls)
        # Sends go to the other agents, so the pollers' inboxes stay empty and each poll waits its 2 s.
        rounds = await mix(base, agents[pollers:], sender_token, seconds, churn)
    print(f"polls {polls[0]}", flush=True)
    print(f"done {rounds}", flush=True)


async def mix(base: str, agents: list[list[str]], sender_token: str, seconds: float, churn: bool) -> int:
    """The rounds of mixed traffic; how many ran."""
    rnd = random.Random(7)
    rounds = 0
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        session = await bl.mcp_open(http, base, sender_token, "soak", "2025-06-18")
        await bl.mcp_tool(http, base, session, "report_status", {"alias": "soak-sender"})
        auth = {"Authorization": f"Bearer {sender_token}"}
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            to = agents[rnd.randrange(len(agents))][0]
            await bl.mcp_tool(http, base, session, "send_message", {"to": to, "content": f"soak {rounds}"})
            (await http.get("/api/tasks", params={"limit": 50}, headers=auth)).raise_for_status()
            (await http.get("/api/status", headers=auth)).raise_for_status()
            assert (await http.get("/api/status", headers={"Authorization": "Bearer ntok_wrong"})).status_code == 401
            await bl.mcp_tool(http, base, session, "get_inbox", {"wait_seconds": 0.05})
            if churn:
                async with http.stream("GET", f"/events/soak-short-{rounds % 20}",
                                       params={"token": sender_token}) as r:
                    async for _ in r.aiter_bytes():
                        break  # the preamble came: close it
            rounds += 1
    return rounds


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), int((sys.argv[5:] or ["0"])[0]),
             "nochurn" not in sys.argv[6:])
