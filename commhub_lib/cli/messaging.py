"""`commhub send|status|tasks|task|cancel`: hand work to agents and follow it, through a running server."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from ..client import ClientError, HubClient
from ..vocabulary import (
    CANCELLED,
    EXPIRED,
    FAILED,
    FINAL_REPLY_STATUSES,
    NEW_REPLY,
    OFFLINE,
    QUESTION,
    REPLY,
    REPLY_STATUSES,
    SESSION_STATUSES,
    TASK_STATUSES,
)
from .attachment import upload_files
from .common import (
    EXIT_OK,
    EXIT_REFUSED,
    cell,
    connect,
    fail,
    json_flag,
    network_flag,
    print_fields,
    print_json,
    print_table,
    read_content,
    reports_errors,
    safe_text,
    server_flags,
)

# The replies `send --wait` stops at: the recipient's done or failed, the hub's word that the task expired, or an A2A
# agent's that it cancelled the task (docs/a2a-client.md).
ENDS_THE_WAIT = (*FINAL_REPLY_STATUSES, EXPIRED, CANCELLED)
SESSION_COLUMNS = [("alias", "alias", 24), ("status", "status", None), ("held_by", "held by", None),
                   ("agent", "agent", 16),
                   ("model", "model", 20), ("task", "task", 30), ("progress", "progress", 24),
                   ("last_seen_at", "last seen", None)]
TASK_COLUMNS = [("task_id", "task", None), ("status", "status", None), ("priority", "priority", None),
                ("from_name", "from", 16), ("to_name", "to", 16), ("summary", "title / content", 40),
                ("created_at", "created", None)]
EVENT_COLUMNS = [("created_at", "time", None), ("event", "event", None), ("actor", "by", 20),
                 ("detail", "detail", 60)]


def sender_alias(client: HubClient) -> str:
    """Who the server will say sent what this token sends: a person's username, or the agent's alias."""
    if (client.token or "").startswith("utok_"):
        return client.request("GET", "/api/auth/me")["user"]["username"]
    alias = client.mcp_tool("whoami").get("alias")
    if not alias:
        raise ClientError(409, "no_identity", "this network token has no alias yet: bind it to one (`commhub token "
                                              "create --alias NAME`) or let its agent call report_status first")
    return alias


def find_reply(client: HubClient, alias: str, message_id: str, network_id: str | None) -> dict[str, Any] | None:
    """A reply message from the alias's inbox by id (newest first, so it is on the first page)."""
    for offset in (0, 500):
        rows = client.request("GET", "/api/messages", params={"alias": alias, "kind": REPLY, "limit": 500,
                                                              "offset": offset, "network_id": network_id})["messages"]
        for row in rows:
            if row["message_id"] == message_id:
                return row
        if len(rows) < 500:
            break
    return None


class ReplyWaiter:
    """Follows the sender's SSE stream, opened before the send so that no reply can slip in between."""

    def __init__(self, client: HubClient, alias: str, network_id: str | None, timeout: float):
        self.client, self.alias, self.network_id = client, alias, network_id
        self.deadline = time.monotonic() + timeout
        self.last_id: str | None = None
        self.frames = self._open()

    def _open(self) -> Any:
        remaining = max(0.1, self.deadline - time.monotonic())
        frames = self.client.stream(f"/events/{self.alias}", params={"network_id": self.network_id},
                                    last_event_id=self.last_id, read_timeout=remaining)
        first = next(frames, None)  # written after the server subscribed us: from here nothing is missed
        if first is None:
            raise ClientError(0, "unreachable", f"the event stream of {self.alias} ended as it opened")
        if first.id:  # a server that opens streams with their position
            self.last_id = first.id
        return frames

    def _stored_reply(self, match: dict[str, str]) -> dict[str, Any] | None:
        """A final reply already stored (it may have come while the stream was down and the cursor unknown)."""
        rows = self.client.request("GET", "/api/messages", params={
            "alias": self.alias, "kind": REPLY, "limit": 100, "network_id": self.network_id})["messages"]
        for row in rows:
            if all(row.get(k) == v for k, v in match.items()) and (row.get("status") in ENDS_THE_WAIT
                                                                    or not row.get("task_id")):
                return {"type": NEW_REPLY, "from": row["from"], "message_id": row["message_id"],
                        "in_reply_to": row["in_reply_to"], "status": row["status"], "task_id": row["task_id"]}
        return None

    def wait(self, match: dict[str, str]) -> dict[str, Any]:
        """The data of the final `new_reply` whose fields equal `match`; progress and questions go to stderr."""
        frames: Any = self.frames
        while True:
            try:
                if frames is None:  # the stream ended (server restart, slow reader): resume
                    frames = self._open()
                    if stored := self._stored_reply(match):
                        return stored
                for frame in frames:
                    if frame.id:
                        self.last_id = frame.id
                    if time.monotonic() > self.deadline:
                        raise ClientError(0, "timeout", "")
                    if frame.event != NEW_REPLY:
                        continue
                    data = json.loads(frame.data)
                    if any(data.get(k) != v for k, v in match.items()):
                        continue
                    if data.get("status") in ENDS_THE_WAIT or not data.get("task_id"):
                        return data
                    self._note(data)
            except ClientError as exc:
                if time.monotonic() >= self.deadline:
                    raise ClientError(0, "timeout", "no reply in time") from exc
                if exc.code not in ("unreachable", "timeout"):
                    raise
            frames = None
            time.sleep(1)

    def _note(self, data: dict[str, Any]) -> None:
        reply = find_reply(self.client, self.alias, data["message_id"], self.network_id) or {}
        said = safe_text(f"{data.get('from')}: {reply.get('content', '')}")
        if data.get("status") == QUESTION:
            print(f"[question] {said}\n  answer with: commhub reply --task {safe_text(data.get('task_id'))} "
                  "'your answer'  (still waiting)", file=sys.stderr)
        else:
            print(f"[progress] {said}", file=sys.stderr)


@reports_errors
def cmd_send(args: argparse.Namespace) -> int:
    """Send a task (default) or a message; with --wait, block until its reply arrives."""
    content = read_content(args.content)
    kind = "message" if args.message else "task"
    body: dict[str, Any] = {"to": args.to, "content": content, "network_id": args.network}
    if kind == "task":
        body.update(priority=args.priority, title=args.title, context=args.context, start_by=args.start_by)
    elif args.priority != "normal" or args.title or args.context or args.start_by:
        return fail("--priority, --title, --context and --start-by apply to tasks, not to --message", 2)
    body = {k: v for k, v in body.items() if v is not None}
    with connect(args) as client:
        if args.attach:  # uploaded first; the send names them (docs/attachments.md)
            body["attachments"] = upload_files(client, args.attach, args.network)
        waiter = None
        if args.wait:
            alias = sender_alias(client)
            waiter = ReplyWaiter(client, alias, args.network, args.timeout)
        sent = client.request("POST", "/api/tasks" if kind == "task" else "/api/messages", json=body)
        if waiter is None:
            return _print_sent(args, kind, sent)
        print(safe_text(f"{kind} {sent.get('task_id') or sent['message_id']} sent to {args.to}; waiting for the "
                        f"reply (up to {args.timeout:g} s)…"), file=sys.stderr)
        match = {"task_id": sent["task_id"]} if kind == "task" else {"in_reply_to": sent["message_id"]}
        try:
            data = waiter.wait(match)
        except ClientError as exc:
            if exc.code != "timeout":
                raise
            what = f"task {sent['task_id']}" if kind == "task" else f"message {sent['message_id']}"
            hint = f"; follow it with `commhub task {sent['task_id']}`" if kind == "task" else ""
            return fail(f"no reply to {what} within {args.timeout:g} s{hint} (timeout)")
        reply = find_reply(client, waiter.alias, data["message_id"], args.network) or {}
    if args.json:
        print_json({"ok": data.get("status") not in (FAILED, EXPIRED, CANCELLED), "sent": sent,
                    "reply": reply or data})
    else:
        print(safe_text(reply.get("content", ""), multiline=True))
        print(safe_text(f"(reply from {data.get('from')}, status {data.get('status')})"), file=sys.stderr)
    return EXIT_REFUSED if data.get("status") in (FAILED, EXPIRED, CANCELLED) else EXIT_OK


def _print_sent(args: argparse.Namespace, kind: str, sent: dict[str, Any]) -> int:
    if args.json:
        print_json(sent)
        return EXIT_OK
    where = "online" if sent.get("recipient_online") else "offline: it gets it when it connects"
    ident = f"task {sent['task_id']}" if kind == "task" else f"message {sent['message_id']}"
    print(safe_text(f"{ident} sent to {sent['to']} ({where})"))
    return EXIT_OK


@reports_errors
def cmd_status(args: argparse.Namespace) -> int:
    """Every agent session with its status, task and progress."""
    with connect(args) as client:
        result = client.request("GET", "/api/status", params={"network_id": args.network, "status": args.status})
    if args.json:
        print_json(result)
        return EXIT_OK
    sessions = result["sessions"]
    columns = list(SESSION_COLUMNS)
    if len({s["network_id"] for s in sessions}) > 1:
        columns.insert(1, ("network_id", "network", None))
    print_table(sessions, columns, "(no agent has connected yet)")
    return EXIT_OK


@reports_errors
def cmd_tasks(args: argparse.Namespace) -> int:
    """Tasks, newest first, with filters."""
    params = {"network_id": args.network, "status": args.status, "to_name": args.to, "from_name": args.sender,
              "limit": args.limit, "offset": args.offset}
    with connect(args) as client:
        result = client.request("GET", "/api/tasks", params=params)
    if args.json:
        print_json(result)
        return EXIT_OK
    for task in result["tasks"]:
        task["summary"] = task.get("title") or task.get("content")
    print_table(result["tasks"], TASK_COLUMNS, "(no tasks)")
    return EXIT_OK


def fetch_task(client: HubClient, task_id: str, network_id: str | None) -> dict[str, Any]:
    """GET /api/tasks/<id>; on a server without it, the task from the list and its events."""
    try:
        return client.request("GET", f"/api/tasks/{task_id}", params={"network_id": network_id})
    except ClientError as exc:
        if exc.code not in ("not_found", "method_not_allowed"):  # an older server: no such endpoint
            raise
    events = client.request("GET", "/api/task_events", params={"task_id": task_id, "network_id": network_id,
                                                               "limit": 1000})["events"]
    tasks = client.request("GET", "/api/tasks", params={"network_id": network_id, "limit": 500})["tasks"]
    task = next((t for t in tasks if t["task_id"] == task_id), None)
    if task is None and not events:
        raise ClientError(404, "task_not_found", f"task '{task_id}' not found; list tasks with `commhub tasks`")
    return {"ok": True, "task": task or {"task_id": task_id}, "events": events, "completion": None}


@reports_errors
def cmd_task(args: argparse.Namespace) -> int:
    """One task and its timeline."""
    with connect(args) as client:
        result = fetch_task(client, args.task_id, args.network)
    if args.json:
        print_json(result)
        return EXIT_OK
    task = result["task"]
    print_fields(task, [k for k in ("task_id", "status", "priority", "from_name", "to_name", "title", "content",
                                    "context", "deadline", "start_by", "created_at", "updated_at", "result")
                        if k in task])
    if task.get("schedule_id"):  # a run of a schedule (docs/schedules.md)
        print(safe_text(f"sent by schedule {task['schedule_id']} (commhub schedule show {task['schedule_id']})"))
    if result.get("queue_position"):
        print(safe_text(f"queue: {result['queue_position']} of {task.get('to_name')}'s open tasks (1 = next); "
                        f"recipient {'online' if result.get('recipient_online') else OFFLINE}"
                        f"{', busy' if result.get('recipient_busy') else ''}"))
    for file in [*(task.get("attachments") or []), *(result.get("reply_attachments") or [])]:
        print(safe_text(f"file: {file['filename']} ({file['size']} bytes, {file['content_type']}): "
                        f"commhub attachment get {file['attachment_id']}"))
    print()
    print_table(result["events"], EVENT_COLUMNS, "(no events)")
    completion = result.get("completion")
    if completion:
        print()
        # The duration and the result on lines of their own: "in 12.5 s All tests pass" read as one sentence.
        print(safe_text(f"completed {completion.get('completed_at')} by {completion.get('alias')}: "
                        f"{completion.get('status')} in {completion.get('duration_seconds')} s"))
        if completion.get("result") and not task.get("result"):  # the task's fields above show it already
            print(safe_text(f"result: {cell(completion.get('result'), 200)}"))
    return EXIT_OK


@reports_errors
def cmd_cancel(args: argparse.Namespace) -> int:
    """Cancel an open task (its sender, or a network owner/admin); the recipient is told."""
    body = {"reason": args.reason} if args.reason else {}
    with connect(args) as client:
        result = client.request("POST", f"/api/tasks/{args.task_id}/cancel", json=body,
                                params={"network_id": args.network})
    if args.json:
        print_json(result)
    else:
        print(safe_text(f"task {args.task_id} cancelled"))
    return EXIT_OK


@reports_errors
def cmd_reply(args: argparse.Namespace) -> int:
    """Answer an agent: a question on a task you sent, or a message it sent you."""
    body: dict[str, Any] = {"content": read_content(args.content), "network_id": args.network}
    if args.task:
        body["task_id"] = args.task
    else:
        body["message_id"] = args.message_id
    if args.status:
        body["status"] = args.status
    with connect(args) as client:
        if args.attach:
            body["attachments"] = upload_files(client, args.attach, args.network)
        result = client.request("POST", "/api/replies", json={k: v for k, v in body.items() if v is not None})
    if args.json:
        print_json(result)
    else:
        print(safe_text(f"replied to {result.get('to')} ({result.get('message_id')})"))
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    """Add send, reply, status, tasks, task and cancel."""
    parents = [server_flags(), json_flag(), network_flag()]
    p = sub.add_parser("send", parents=parents, help="send a task (or --message) to an agent; --wait for the reply",
                       description="Send a task to an agent's alias (or a plain message with --message). With "
                                   "--wait, block until the reply arrives and print it (exit 1 if the task failed "
                                   "or no reply came in time).")
    p.add_argument("to", help="the recipient's alias")
    p.add_argument("content", help="what to do (or the message); - reads it from stdin")
    p.add_argument("--message", action="store_true", help="send a plain message instead of a task")
    p.add_argument("--priority", choices=("low", "normal", "high", "urgent"), default="normal")
    p.add_argument("--title", help="a short title for the task")
    p.add_argument("--context", help="background for the task")
    p.add_argument("--start-by", metavar="WHEN", help="if the recipient has not started the task by then it "
                   "expires and is never started: a time (2026-12-01T17:00:00Z), seconds from now, or 30m/2h/1d")
    p.add_argument("--attach", action="append", metavar="FILE", help="send a file with it (repeatable; uploaded "
                   "first, up to the hub's max_attachment_bytes each)")
    p.add_argument("--wait", action="store_true", help="block until the reply arrives, then print it")
    p.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS",
                   help="how long --wait waits (default 600)")
    p.set_defaults(func=cmd_send)

    p = sub.add_parser("reply", parents=parents, help="answer an agent's question or message",
                       description="Reply as yourself: answer the question an agent asked on a task you sent "
                                   "(--task), or reply to a message it sent you (--message-id).")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--task", metavar="TASK_ID", help="the task whose question you answer")
    target.add_argument("--message-id", metavar="ID", help="the message you reply to")
    p.add_argument("content", help="the answer; - reads it from stdin")
    p.add_argument("--status", choices=REPLY_STATUSES,
                   help="only for a task you received (as its agent)")
    p.add_argument("--attach", action="append", metavar="FILE", help="send a file with the reply (repeatable)")
    p.set_defaults(func=cmd_reply)

    p = sub.add_parser("status", parents=parents, help="agent sessions as a table",
                       description="Every agent session: status, agent, model, task, progress, last seen.")
    p.add_argument("--status", choices=SESSION_STATUSES, help="only sessions with this status")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("tasks", parents=parents, help="list tasks, newest first",
                       description="Tasks, newest first, filtered by status, recipient and sender.")
    p.add_argument("--status", choices=TASK_STATUSES)
    p.add_argument("--to", metavar="ALIAS", help="tasks sent to this alias")
    p.add_argument("--from", dest="sender", metavar="ALIAS", help="tasks sent by this alias or username")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--offset", type=int, default=0)
    p.set_defaults(func=cmd_tasks)

    p = sub.add_parser("task", parents=parents, help="one task and its timeline",
                       description="One task with its event timeline and completion record.")
    p.add_argument("task_id")
    p.set_defaults(func=cmd_task)

    p = sub.add_parser("cancel", parents=parents, help="cancel a task",
                       description="Cancel an open task (its sender, or a network owner/admin). The recipient "
                                   "gets a notice.")
    p.add_argument("task_id")
    p.add_argument("--reason")
    p.set_defaults(func=cmd_cancel)
