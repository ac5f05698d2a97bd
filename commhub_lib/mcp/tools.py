"""The MCP tools: each validates its arguments with a pydantic model and calls the service layer.

The caller's identity never comes from an argument: it is the alias bound to the token, else the alias
claimed with report_status on this MCP session, else the alias this token last claimed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from .. import models as m
from ..errors import CommhubError, Conflict
from ..service import messaging, sessions
from ..service.hub import Hub, Principal
from .schema import self_contained


@dataclass
class McpSession:
    """State of one MCP session (Mcp-Session-Id): who opened it and the alias claimed on it."""

    session_id: str | None
    token_id: str
    protocol_version: str
    alias: str | None = None
    client: str | None = None


@dataclass
class ToolContext:
    """What a tool call knows: the hub, the caller's token, its network and MCP session."""

    hub: Hub
    principal: Principal
    network_id: str
    session: McpSession

    def caller(self) -> str:
        """The calling alias (refreshes presence); an error telling the agent to report_status if unknown."""
        return sessions.resolve_caller(self.hub, self.principal, self.network_id, self.session.alias)

    def optional_caller(self) -> str | None:
        """The calling alias if one is known (refreshing presence), else None."""
        try:
            return self.caller()
        except Conflict:
            return None


Handler = Callable[[ToolContext, Any], Awaitable[dict[str, Any]] | dict[str, Any]]


@dataclass
class Tool:
    """One MCP tool: its name, what it is for, its argument model and its handler."""

    name: str
    description: str
    model: type[BaseModel]
    handler: Handler
    read_only: bool = False

    def descriptor(self) -> dict[str, Any]:
        """The tools/list entry, its inputSchema generated from the pydantic model and made self-contained."""
        schema = self_contained(self.model.model_json_schema())
        schema.setdefault("properties", {})
        return {"name": self.name, "description": self.description, "inputSchema": schema,
                "annotations": {"readOnlyHint": self.read_only}}


def _report_status(ctx: ToolContext, a: m.ReportStatus) -> dict[str, Any]:
    result = sessions.report_status(ctx.hub, ctx.principal, ctx.network_id, ctx.session.alias, a)
    ctx.session.alias = result["alias"]
    return result


def _whoami(ctx: ToolContext, a: m.Empty) -> dict[str, Any]:
    alias = ctx.optional_caller()
    return {"ok": True, "alias": alias, "network_id": ctx.network_id, "session_id": ctx.session.session_id,
            "token_id": ctx.principal.token_id, "token_kind": ctx.principal.kind,
            "bound_alias": ctx.principal.bound_alias, "user": ctx.principal.user["username"]}


def _get_all_status(ctx: ToolContext, a: m.GetAllStatus) -> dict[str, Any]:
    ctx.optional_caller()
    return sessions.list_status(ctx.hub, [ctx.network_id], a.filter_status)


def _send_task(ctx: ToolContext, a: m.SendTask) -> dict[str, Any]:
    return messaging.send_task(ctx.hub, ctx.network_id, ctx.caller(), a)


def _send_message(ctx: ToolContext, a: m.SendMessage) -> dict[str, Any]:
    return messaging.send_message(ctx.hub, ctx.network_id, ctx.caller(), a)


def _send_reply(ctx: ToolContext, a: m.SendReply) -> dict[str, Any]:
    return messaging.send_reply(ctx.hub, ctx.network_id, ctx.caller(), a)


def _broadcast(ctx: ToolContext, a: m.Broadcast) -> dict[str, Any]:
    return messaging.broadcast(ctx.hub, ctx.network_id, ctx.caller(), a)


async def _get_inbox(ctx: ToolContext, a: m.GetInbox) -> dict[str, Any]:
    return await messaging.get_inbox(ctx.hub, ctx.network_id, ctx.caller(), a.limit, a.wait_seconds)


def _ack_inbox(ctx: ToolContext, a: m.AckInbox) -> dict[str, Any]:
    return messaging.ack_inbox(ctx.hub, ctx.network_id, ctx.caller(), a.message_ids, a.all)


def _report_completion(ctx: ToolContext, a: m.ReportCompletion) -> dict[str, Any]:
    return messaging.report_completion(ctx.hub, ctx.network_id, ctx.caller(), a.task_id, a.result, a.artifacts)


def _get_task(ctx: ToolContext, a: m.GetTask) -> dict[str, Any]:
    ctx.optional_caller()
    return messaging.get_task(ctx.hub, ctx.network_id, a.task_id)


def _list_tasks(ctx: ToolContext, a: m.ListTasks) -> dict[str, Any]:
    ctx.optional_caller()
    return messaging.list_tasks(ctx.hub, [ctx.network_id], a.status, a.to_name, a.from_name, a.limit)


def _cancel_task(ctx: ToolContext, a: m.CancelTask) -> dict[str, Any]:
    return messaging.cancel_task(ctx.hub, ctx.principal, ctx.network_id, ctx.optional_caller(), a.task_id, a.reason)


def _get_completions(ctx: ToolContext, a: m.GetCompletions) -> dict[str, Any]:
    ctx.optional_caller()
    return messaging.list_completions(ctx.hub, [ctx.network_id], a.alias, a.limit)


def _list_nodes(ctx: ToolContext, a: m.Empty) -> dict[str, Any]:
    ctx.optional_caller()
    return sessions.list_nodes(ctx.hub, [ctx.network_id])


TOOLS: dict[str, Tool] = {t.name: t for t in [
    Tool("report_status", "Claim your alias (first call: give `alias`) and report your status, task and "
         "progress. Call it when you start and whenever your work changes. Returns your inbox_count.",
         m.ReportStatus, _report_status),
    Tool("whoami", "Your alias, network and MCP session as the hub sees them.", m.Empty, _whoami, True),
    Tool("get_all_status", "Every agent session in your network with status, task, progress and last_seen_at.",
         m.GetAllStatus, _get_all_status, True),
    Tool("send_task", "Send a task to another agent's alias. It lands in their inbox and wakes them over SSE. "
         "Use idempotency_key when retrying. Returns task_id, message_id and whether the recipient is online.",
         m.SendTask, _send_task),
    Tool("send_message", "Send a plain message to another agent's alias.", m.SendMessage, _send_message),
    Tool("send_reply", "Reply to a message or task you received. On a task, status 'done' or 'failed' ends it; "
         "'progress' reports progress and keeps it running.", m.SendReply, _send_reply),
    Tool("broadcast", "Send a message to every other session in your network (optionally only those with "
         "filter_status).", m.Broadcast, _broadcast),
    Tool("get_inbox", "Your unread items (tasks, messages, replies, broadcasts), urgent first. Fetching a task "
         "starts it (running). wait_seconds (<= 50) waits for something to arrive if the inbox is empty. Items "
         "stay unread until you ack_inbox them.", m.GetInbox, _get_inbox),
    Tool("ack_inbox", "Mark inbox items read by message_ids (or all=true). Acking a task notice starts the task.",
         m.AckInbox, _ack_inbox),
    Tool("report_completion", "Finish a task you received with its result (and optional artifacts); the sender "
         "gets a reply.", m.ReportCompletion, _report_completion),
    Tool("get_task", "One task with its event timeline and completion record.", m.GetTask, _get_task, True),
    Tool("list_tasks", "Tasks of your network, newest first, filtered by status, to_name, from_name.",
         m.ListTasks, _list_tasks, True),
    Tool("cancel_task", "Cancel a task you sent (network owners/admins may cancel any). The recipient is told.",
         m.CancelTask, _cancel_task),
    Tool("get_completions", "Completion records (how tasks ended, with durations), newest first.",
         m.GetCompletions, _get_completions, True),
    Tool("list_nodes", "Machines that agents of your network run on.", m.Empty, _list_nodes, True),
]}


async def call_tool(tool: Tool, ctx: ToolContext, args: BaseModel) -> dict[str, Any]:
    """Run a tool's handler (sync or async) and return its structured result."""
    result = tool.handler(ctx, args)
    if isinstance(result, Awaitable):
        result = await result
    return result


__all__ = ["TOOLS", "CommhubError", "McpSession", "Tool", "ToolContext", "call_tool"]
