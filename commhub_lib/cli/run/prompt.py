"""The prompt of each turn: who sent what, the ids, and exactly how to answer through CommHub's tools.

Every prompt names its ids on lines of their own (`task_id: …`, `message_id: …`) so the agent (and a scripted
fake model in the tests) finds them without parsing prose. The sender's words are quoted as they came, after a
line that says they are the sender's, so an instruction inside them reads as the sender's, not the runner's.
"""

from __future__ import annotations

from typing import Any

from ...vocabulary import ANSWER, QUESTION, REPLY_STATUSES

STATUSES = REPLY_STATUSES
CONTENT_MAX_CHARS = 20_000  # a prompt carries the text; a longer one is cut (get_task has all of it)


def _quote(text: Any) -> str:
    value = "" if text is None else str(text)
    if len(value) > CONTENT_MAX_CHARS:
        value = value[:CONTENT_MAX_CHARS] + f"\n[... cut at {CONTENT_MAX_CHARS} characters; get_task has it all]"
    return "\n".join("> " + line for line in value.splitlines() or [""])


def task_prompt(alias: str, task: dict[str, Any], priority: str | None = None, hub_url: str = "") -> str:
    """A new task: what it asks, the files sent with it (their download URLs under `hub_url`), and how to end it."""
    lines = [f"You are the agent `{alias}` on CommHub. A new task has arrived for you.",
             f"from: {task.get('from_name')} ({task.get('from_kind') or 'agent'})",
             f"task_id: {task.get('task_id')}",
             f"message_id: {task.get('message_id')}",
             f"priority: {priority or task.get('priority') or 'normal'}"]
    if task.get("title"):
        lines.append(f"title: {task['title']}")
    if task.get("deadline"):
        lines.append(f"deadline: {task['deadline']}")
    lines += ["", "The sender wrote:", _quote(task.get("content"))]
    if task.get("context"):
        lines += ["", "Context given with it:", _quote(task["context"])]
    if task.get("attachments"):  # docs/attachments.md
        lines += ["", "Files sent with it (download one with an HTTP GET of its URL carrying your CommHub bearer "
                      "token; get_task also gives them as resource links):"]
        for file in task["attachments"]:
            url = str(file.get("url") or "")
            lines.append(f"- {file.get('filename')} ({file.get('size')} bytes, {file.get('content_type')}): "
                         f"{url if '://' in url else hub_url.rstrip('/') + url}")
    lines += ["", how_to_answer_task(str(task.get("task_id")))]
    return "\n".join(lines)


def how_to_answer_task(task_id: str) -> str:
    """The instruction every task prompt ends with."""
    return ("Do the work, then answer with the CommHub tool send_reply: "
            f'{{"task_id": "{task_id}", "status": "done", "content": "<your result>"}} '
            "(status \"failed\" if you cannot do it, \"progress\" for an update while you keep working, "
            "\"question\" to ask the sender something; their answer arrives as your next turn). "
            "A task without a done or failed reply stays open: always end it with send_reply.")


def message_prompt(alias: str, data: dict[str, Any], content: str | None) -> str:
    """A plain message addressed to the alias."""
    lines = [f"You are the agent `{alias}` on CommHub. A message has arrived for you.",
             f"from: {data.get('from')} ({data.get('from_kind') or 'agent'})",
             f"message_id: {data.get('message_id')}"]
    if data.get("task_id"):
        lines.append(f"about task_id: {data['task_id']}")
    lines += ["", "They wrote:", _quote(content if content is not None else data.get("message")), "",
              "If it needs an answer, call send_reply "
              f'{{"message_id": "{data.get("message_id")}", "content": "<your answer>"}}; if not, do nothing.']
    return "\n".join(lines)


def reply_prompt(alias: str, data: dict[str, Any], content: str | None) -> str:
    """A reply to the alias: an answer to its question on a task it works on, or a reply about a task it sent."""
    status = data.get("status")
    task_id = data.get("task_id")
    lines = [f"You are the agent `{alias}` on CommHub. A reply has arrived for you.",
             f"from: {data.get('from')} ({data.get('from_kind') or 'agent'})",
             f"message_id: {data.get('message_id')}"]
    if task_id:
        lines.append(f"task_id: {task_id}")
    if status:
        lines.append(f"status: {status}")
    if data.get("in_reply_to"):
        lines.append(f"in_reply_to: {data['in_reply_to']}")
    lines += ["", "They wrote:", _quote(content), ""]
    if task_id and status == ANSWER:
        lines.append("This answers the question you asked on that task. Go on with the task, then "
                     + how_to_answer_task(str(task_id)))
    elif task_id and status == QUESTION:
        lines.append("The agent working on a task you sent asks this. Answer it with send_reply "
                     f'{{"task_id": "{task_id}", "content": "<your answer>"}} (no status).')
    elif task_id:
        lines.append(f"This is news about task {task_id} you sent (status {status}). Act on it if it needs you; "
                     "otherwise do nothing.")
    else:
        lines.append("If it needs an answer, call send_reply "
                     f'{{"message_id": "{data.get("message_id")}", "content": "<your answer>"}}; if not, do nothing.')
    return "\n".join(lines)


def reminder_prompt(task_id: str) -> str:
    """The one reminder after a turn that left its task open."""
    return ("Your turn ended but the task is still open on CommHub.\n"
            f"task_id: {task_id}\n"
            "Answer it now with send_reply: status \"done\" with your result, \"failed\" with the reason, or "
            "\"question\" if you need the sender. " + how_to_answer_task(task_id))


def resume_prompt(original: str, why: str) -> str:
    """The prompt again after the runner or the agent restarted in the middle of its turn (same session)."""
    return (f"[{why}: the turn below was cut short. If you already answered it (send_reply), do not answer again; "
            "otherwise continue where you stopped and answer it.]\n\n" + original)
