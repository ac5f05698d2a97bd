"""The runner's Relay: an agent's approval request becomes a question to a person, through the hub's REST relay.

`POST /api/approvals` asks (on the task when there is one, else to the alias's owner), then
`GET /api/approvals/<id>?wait_seconds=50` is repeated until the person has answered (docs/runner-server.md).
Drivers whose agent asks over its own protocol (Codex app-server approvals) call `ask`; Claude Code's permission
prompts reach the hub directly through the MCP tool `permission_prompt`.
"""

from __future__ import annotations

from typing import Any

import httpx

from .driver import Answer

LONG_POLL_SECONDS = 50


class RelayError(Exception):
    """The hub refused the question or could not be reached."""


class HubRelay:
    """Relay over the hub's REST approvals, with the agent's token (an httpx.AsyncClient that carries it)."""

    def __init__(self, http: httpx.AsyncClient, network_id: str | None = None):
        self.http = http
        self.network_id = network_id

    async def ask(self, question: str, *, task_id: str | None) -> Answer:
        """Post the question and wait (long-polling, for as long as it takes) for the person's answer."""
        body: dict[str, Any] = {"question": question, "wait_seconds": 0}
        if task_id:
            body["task_id"] = task_id
        if self.network_id:
            body["network_id"] = self.network_id
        row = await self._call("POST", "/api/approvals", json=body)
        while row.get("status") == "pending":
            row = await self._call("GET", f"/api/approvals/{row['approval_id']}",
                                   params={"wait_seconds": LONG_POLL_SECONDS}, limit_seconds=LONG_POLL_SECONDS + 30)
        return Answer(approved=row.get("status") == "approved", text=str(row.get("answer") or ""))

    async def _call(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None,
                    limit_seconds: float = 30) -> dict[str, Any]:
        query = dict(params or {})
        if self.network_id:
            query["network_id"] = self.network_id
        try:
            response = await self.http.request(method, path, json=json, params=query, timeout=limit_seconds)
        except httpx.HTTPError as exc:
            raise RelayError(f"cannot reach the hub: {exc}") from exc
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        if response.status_code >= 400 or not isinstance(answer, dict):
            raise RelayError(f"{method} {path}: HTTP {response.status_code} {str(answer)[:200]}")
        return answer
