"""The MCP tools: each validates its arguments with a pydantic model and calls the service layer.

The caller's identity never comes from an argument: it is the alias bound to the token, else the alias
claimed with report_status on this MCP session, else the alias this token last claimed.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from .. import models as m
from ..errors import Conflict
from ..service import approvals, messaging, schedules, search, sessions, tasks
from ..service.hub import SURFACE, Hub, Principal
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
    # Whether notifications/cancelled can end a call while it waits (get_inbox's long-poll). None: an async
    # handler can be, a sync one cannot (it runs to its end without a checkpoint).
    cancellable: bool | None = None
    # Answer with the one text content only, no structuredContent: Claude Code 2.1 rejects a permission prompt
    # tool's answer that carries structuredContent ("Expected a single text block param").
    text_only: bool = False
    # Its results may list attachments: linked as resource_link content items (mcp/links.py).
    links: bool = False
    is_async: bool = field(init=False)

    def __post_init__(self) -> None:
        self.is_async = inspect.iscoroutinefunction(self.handler)
        if self.cancellable is None:
            self.cancellable = self.is_async

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
    result = {"ok": True, "alias": alias, "network_id": ctx.network_id, "session_id": ctx.session.session_id,
              "token_id": ctx.principal.token_id, "token_kind": ctx.principal.kind,
              "bound_alias": ctx.principal.bound_alias, "user": ctx.principal.user["username"]}
    if alias is None:
        name = ctx.principal.bound_alias or "<your alias>"
        result["next_step"] = (f'you have not claimed an alias yet: call report_status {{"alias": "{name}", '
                               '"status": "idle"}} first; then others can send to you')
    return result


def _get_all_status(ctx: ToolContext, a: m.GetAllStatus) -> dict[str, Any]:
    ctx.optional_caller()
    return sessions.list_status(ctx.hub, [ctx.network_id], a.filter_status)


def _send_task(ctx: ToolContext, a: m.SendTask) -> dict[str, Any]:
    return tasks.send_task(ctx.hub, ctx.network_id, ctx.caller(), a)


async def _send_message(ctx: ToolContext, a: m.SendMessage) -> dict[str, Any]:
    if ctx.hub.db.off_loop:  # PostgreSQL: the caller's alias and the send in one hop off the loop (no grouping)
        return await ctx.hub.db.run(_send_message_now, ctx, a)
    # Committed with the other sends of the same scheduler pass (the agents' busiest call; db.write_together).
    return await messaging.send_message_together(ctx.hub, ctx.network_id, ctx.caller(), a)


def _send_message_now(ctx: ToolContext, a: m.SendMessage) -> dict[str, Any]:
    return messaging.send_message(ctx.hub, ctx.network_id, ctx.caller(), a)


def _send_reply(ctx: ToolContext, a: m.SendReply) -> dict[str, Any]:
    return messaging.send_reply(ctx.hub, ctx.network_id, ctx.caller(), a)


def _broadcast(ctx: ToolContext, a: m.Broadcast) -> dict[str, Any]:
    return messaging.broadcast(ctx.hub, ctx.network_id, ctx.caller(), a)


async def _get_inbox(ctx: ToolContext, a: m.GetInbox) -> dict[str, Any]:
    # The caller's alias and, when nothing needs waiting for, the whole answer: one step (one hop on PostgreSQL).
    alias, answer = await ctx.hub.db.run(_inbox_now, ctx, a)
    if answer is not None:
        return answer
    return await messaging.get_inbox(ctx.hub, ctx.network_id, alias, a.limit, a.wait_seconds,
                                     token_id=ctx.principal.token_id)


def _inbox_now(ctx: ToolContext, a: m.GetInbox) -> tuple[str, dict[str, Any] | None]:
    alias = ctx.caller()
    return alias, messaging.inbox_now(ctx.hub, ctx.network_id, alias, a.limit, a.wait_seconds)


def _ack_inbox(ctx: ToolContext, a: m.AckInbox) -> dict[str, Any]:
    return messaging.ack_inbox(ctx.hub, ctx.network_id, ctx.caller(), (a.ids or []) + (a.message_ids or []), a.all)


def _report_completion(ctx: ToolContext, a: m.ReportCompletion) -> dict[str, Any]:
    return tasks.report_completion(ctx.hub, ctx.network_id, ctx.caller(), a.task_id, a.result, a.artifacts,
                                   a.attachments)


def _get_task(ctx: ToolContext, a: m.GetTask) -> dict[str, Any]:
    ctx.optional_caller()
    return tasks.get_task(ctx.hub, ctx.network_id, a.task_id)


def _search(ctx: ToolContext, a: m.Search) -> dict[str, Any]:
    ctx.optional_caller()
    return search.search(ctx.hub, [ctx.network_id], a.query, a.limit, a.kind)


def _list_tasks(ctx: ToolContext, a: m.ListTasks) -> dict[str, Any]:
    ctx.optional_caller()
    return tasks.list_tasks(ctx.hub, [ctx.network_id], a.status, a.to_name, a.from_name, a.limit, flag=a.flag)


def _cancel_task(ctx: ToolContext, a: m.CancelTask) -> dict[str, Any]:
    return tasks.cancel_task(ctx.hub, ctx.principal, ctx.network_id, ctx.optional_caller(), a.task_id, a.reason)


def _get_completions(ctx: ToolContext, a: m.GetCompletions) -> dict[str, Any]:
    ctx.optional_caller()
    return tasks.list_completions(ctx.hub, [ctx.network_id], a.alias, a.limit)


def _list_nodes(ctx: ToolContext, a: m.Empty) -> dict[str, Any]:
    ctx.optional_caller()
    return sessions.list_nodes(ctx.hub, [ctx.network_id])


def _schedule_task(ctx: ToolContext, a: m.ScheduleTask) -> dict[str, Any]:
    return schedules.create_schedule(ctx.hub, ctx.principal, ctx.network_id, ctx.caller(), a)


def _list_schedules(ctx: ToolContext, a: m.ListSchedules) -> dict[str, Any]:
    ctx.optional_caller()
    return schedules.list_schedules(ctx.hub, [ctx.network_id], a.limit)


def _cancel_schedule(ctx: ToolContext, a: m.CancelSchedule) -> dict[str, Any]:
    return schedules.delete_schedule(ctx.hub, ctx.principal, [ctx.network_id], ctx.optional_caller(), a.schedule_id)


async def _permission_prompt(ctx: ToolContext, a: m.PermissionPrompt) -> dict[str, Any]:
    # The result's JSON text is the tool's one text content: exactly what Claude Code parses.
    return await approvals.permission_prompt(ctx.hub, ctx.principal, ctx.network_id, ctx.caller(), a.tool_name,
                                             a.input, a.task_id, ctx.hub.settings.approval_wait_seconds)


TOOLS: dict[str, Tool] = {t.name: t for t in [
    Tool("report_status", "Claim your alias and report what you do. Call it FIRST with `alias` (the name others "
         "send to; it stays yours), then whenever your work changes: `status` working/idle, `task` (short title), "
         "`progress` (a number 0-100 or a short text). Returns {alias, status, progress, inbox_count, "
         "open_task_count}. Next: get_inbox.", m.ReportStatus, _report_status),
    Tool("whoami", "Your alias, network, MCP session and token as the hub sees them. alias is null until you call "
         "report_status (next_step then says so).", m.Empty, _whoami, True),
    Tool("get_all_status", "Every agent session in your network: {sessions: [{alias, status idle/working/offline, "
         "task, progress, last_seen_at, online}]}. Use it to find the alias to send_task to.",
         m.GetAllStatus, _get_all_status, True),
    Tool("send_task", "Send a task to another agent's alias (from get_all_status; an unknown alias is an error "
         "naming the closest one). It lands in their inbox and wakes them. Set idempotency_key on the FIRST call "
         "(any unique string) so a retry never makes a second task. start_by (a time) or start_within_seconds: if "
         "they have not started it by then it expires and you get a new_reply with status 'expired'. Returns "
         "{task_id, message_id, status, queue_position (1 = next in their queue), ahead, recipient_online, "
         "recipient_busy, duplicate}. Their replies reach you as new_reply items in get_inbox (status progress, "
         "question, done or failed); answer a question with send_reply {task_id, content} (no status). The hub's "
         "loop guard answers the same task again soon after with the original (duplicate: true) and refuses too "
         "many sends a minute to one agent (rate_limited): never answer an agent only to acknowledge it. "
         + m.ATTACHMENTS_HINT, m.SendTask, _send_task, links=True),
    Tool("send_message", "Send a plain message (no task) to another agent's alias. Returns {message_id, "
         "recipient_online, duplicate}; the same text to the same agent again soon after is not sent twice "
         "(duplicate: true, the original's message_id). " + m.ATTACHMENTS_HINT, m.SendMessage, _send_message,
         cancellable=False, links=True),
    Tool("send_reply", "Reply about a task or a message. On a task you RECEIVED, `status` is required: 'done' "
         "(finished, ends it as replied), 'failed' (ends it as failed), 'progress' (still working, stays running) "
         "or 'question' (ask the sender; the task waits as input_required and their answer comes back as a "
         "new_reply with this task_id in get_inbox). On a task you SENT, leave status out: your reply answers "
         "the recipient's question. On a plain message, reply with message_id and content only. Returns "
         "{message_id, to, task_id, status, task_status}. " + m.ATTACHMENTS_HINT, m.SendReply, _send_reply,
         links=True),
    Tool("broadcast", "Send a message to every other session in your network (optionally only those with "
         "filter_status). Returns {message_ids, recipients}.", m.Broadcast, _broadcast),
    Tool("get_inbox", "Your inbox. `items`: unread items, urgent first, each {message_id, kind (task, message, "
         "reply, broadcast, notice), from, content, priority, task_id, status, in_reply_to, created_at; for tasks "
         "also title, context, deadline, task_status}. Fetching a task notice starts the task (running). "
         "`open_tasks`: every task assigned to you that is not finished yet, read or not (task_id, title, content, "
         "status delivered/running/input_required, priority, deadline) - they stay here until you end them with "
         "send_reply status done/failed. wait_seconds (<= 50) waits for an item when nothing is unread. Next: "
         "work on the items, then ack_inbox their ids. Items and open tasks with files list them in "
         "`attachments` (each with a download url, also given as resource links).", m.GetInbox, _get_inbox,
         links=True),
    Tool("ack_inbox", "Mark inbox items read: `ids` takes message ids (msg_...) or task ids; all=true marks "
         "everything unread. Acking never ends or hides a task: open tasks stay in get_inbox's open_tasks until "
         "final. A call that marks nothing read is an error that says why (already read, unknown id, not yours). "
         "Returns {acked, tasks_started, not_acked, not_acked_reasons, inbox_count}.", m.AckInbox, _ack_inbox),
    Tool("report_completion", "Finish a task you received with its result (and optional artifacts): the same as "
         "send_reply status 'done'. The sender gets a new_reply. Returns {message_id, task_id, task_status}. "
         + m.ATTACHMENTS_HINT, m.ReportCompletion, _report_completion, links=True),
    Tool("get_task", "One task: {task, events (its timeline: delivered, running, progress, question, answer, "
         "replied...), completion, queue_position (1 = next among its recipient's open tasks, by priority then "
         "age; null once final), ahead (ids before it), recipient_online, recipient_busy}; task.attachments and "
         "reply_attachments list its files (download urls, also given as resource links).",
         m.GetTask, _get_task, True, links=True),
    Tool("list_tasks", "Tasks of your network, newest first, filtered by status, to_name, from_name.",
         m.ListTasks, _list_tasks, True),
    Tool("search", "Full-text search over the tasks, messages and replies of your network, newest first: `query` "
         "is plain words (all must occur; `pars*` matches a prefix), `kind` keeps one kind. Returns {results: "
         "[{kind, id, task_id, from_name, to_name, title, status, created_at, snippet}]}; get_task opens a task.",
         m.Search, _search, True),
    Tool("cancel_task", "Cancel a task you sent (people who own/admin the network may cancel any). The recipient "
         "gets a notice. Returns {task_id, status: cancelled}.", m.CancelTask, _cancel_task),
    Tool("get_completions", "Completion records (how tasks ended, with durations), newest first.",
         m.GetCompletions, _get_completions, True),
    Tool("list_nodes", "Machines that agents of your network run on.", m.Empty, _list_nodes, True),
    Tool("schedule_task", "Schedule a task to an alias: once (`at`: ISO 8601 or seconds from now), every N seconds "
         "(`every_seconds`, at least 10) or by `cron` ('0 9 * * 1-5') in the IANA zone `tz` (default UTC). Each run "
         "is an ordinary task from you (with its schedule_id); a run is skipped while the previous run's task is "
         "still open. `missed`: run_once (default) or skip a run missed while the hub was down. Only agents the "
         "schedule_agents setting allows may schedule (by default: a token an owner/admin of the network created). "
         "Returns {schedule: {schedule_id, next_run_at, state, ...}}.", m.ScheduleTask, _schedule_task),
    Tool("list_schedules", "The schedules of your network, newest first: {schedules: [{schedule_id, from_name, "
         "to_name, kind once/every/cron, state active/paused/done, next_run_at, last_run_at, last_task_id, "
         "last_status, skip_count, last_skip_reason}]}.", m.ListSchedules, _list_schedules, True),
    Tool("cancel_schedule", "Delete a schedule you created (the tasks it sent stay). Returns {schedule_id, "
         "deleted}.", m.CancelSchedule, _cancel_schedule),
    Tool("permission_prompt", "For Claude Code's --permission-prompt-tool (set by `commhub run claude`): asks a "
         "person whether `tool_name` may run with `input` (a question on the task you work on, else to your "
         "owner), waits for the answer, and returns {\"behavior\": \"allow\", \"updatedInput\": ...} or "
         "{\"behavior\": \"deny\", \"message\": ...}. Not for calling yourself: to ask the sender of a task, use "
         "send_reply with status 'question'.", m.PermissionPrompt, _permission_prompt, text_only=True),
]}


async def call_tool(tool: Tool, ctx: ToolContext, args: BaseModel) -> dict[str, Any]:
    """Run a tool's handler (sync or async) and return its structured result; its answers speak of tools. A sync
    handler is one service operation: db.run (on PostgreSQL one hop off the loop, with one pooled connection)."""
    surface = SURFACE.set("mcp")
    try:
        if tool.is_async:
            return await tool.handler(ctx, args)  # type: ignore[no-any-return,misc]
        return await ctx.hub.db.run(tool.handler, ctx, args)  # type: ignore[no-any-return]
    finally:
        SURFACE.reset(surface)


__all__ = ["TOOLS", "McpSession", "Tool", "ToolContext", "call_tool"]
