"""A CommHub task as an A2A task: its state, status message, artifacts, history and the stream of updates, in the
wire shapes of A2A v1.0 (ProtoJSON: `TASK_STATE_WORKING`, `ROLE_AGENT`, `{"statusUpdate": …}`) and v0.3 (`kind`
fields: `"working"`, `"agent"`, `{"kind": "status-update", "final": …}`).

One source for both the snapshot and the stream: the task's timeline (get_task's `events`) read in order, each
entry one A2A update (docs/a2a.md has the table):
running -> working; progress -> working (the progress text as status message); question -> input-required (the
question as status message); answer (the A2A client's own answer) -> working; replied -> the reply as an artifact,
then completed; failed -> failed (its text); cancelled -> canceled (the reason); expired -> failed (the expiry
notice: the agent never started it). A task with no such entry yet is submitted. The snapshot's status is the last
update's, so a stream and a GetTask never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..service.a2a import TaskView
from ..vocabulary import ANSWER, CANCELLED, EXPIRED, FAILED, PROGRESS, QUESTION, REPLIED, RUNNING

SUBMITTED, WORKING, INPUT_REQUIRED = "submitted", "working", "input-required"
COMPLETED, CANCELED, FAILED_STATE, REJECTED = "completed", "canceled", "failed", "rejected"
FINAL_STATES = frozenset({COMPLETED, CANCELED, FAILED_STATE, REJECTED})
V1, V03 = "1.0", "0.3"


def v1_state(state: str) -> str:
    """A state's v1.0 (ProtoJSON enum) name: input-required -> TASK_STATE_INPUT_REQUIRED."""
    return "TASK_STATE_" + state.upper().replace("-", "_")


def iso(text: str) -> str:
    """CommHub's 'YYYY-MM-DD HH:MM:SS' (UTC) as A2A's ISO 8601 timestamp."""
    return text.replace(" ", "T") + ".000Z" if len(text) == 19 else text


@dataclass
class Status:
    """A task status: its state, the message that goes with it (agent's text), when."""

    state: str
    at: str
    text: str | None = None
    message_id: str | None = None

    @property
    def final(self) -> bool:
        """The task is over (the stream ends)."""
        return self.state in FINAL_STATES


@dataclass
class Artifact:
    """A task's output: the reply text, the files sent with the reply (file parts: their download URLs, names and
    types) and the artifacts its completion named (URLs as url parts)."""

    artifact_id: str
    name: str
    texts: list[str] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    files: list[dict[str, Any]] = field(default_factory=list)  # attachment records, urls absolute


Update = Status | Artifact


def updates(view: TaskView) -> list[Update]:
    """Every A2A update of the task so far, in order (see the module's docstring)."""
    replies = iter(view.replies)
    out: list[Update] = []
    for entry in view.timeline:
        name, at = entry["event"], entry["created_at"]
        if name == RUNNING or name == ANSWER:
            out.append(Status(WORKING, at))
        elif name in (PROGRESS, QUESTION):
            reply = next(replies, None)
            out.append(Status(WORKING if name == PROGRESS else INPUT_REQUIRED, at,
                              reply["content"] if reply else entry["detail"], reply["message_id"] if reply else None))
        elif name == REPLIED:
            reply = next(replies, None)
            out.append(_reply_artifact(view, reply))
            out.append(Status(COMPLETED, at, None))
        elif name in (FAILED, EXPIRED):
            reply = next(replies, None)
            text = reply["content"] if reply else (view.completion or {}).get("result") or entry["detail"]
            out.append(Status(FAILED_STATE, at, text, reply["message_id"] if reply else None))
        elif name == CANCELLED:
            out.append(Status(CANCELED, at, entry["detail"]))
    return out


def _reply_artifact(view: TaskView, reply: dict[str, Any] | None) -> Artifact:
    completion = view.completion or {}
    text = completion.get("result") or (reply["content"] if reply else "")
    named = [str(a) for a in completion.get("artifacts") or []]
    files = [{**f, "url": f["url"] if "://" in f["url"] else view.base + f["url"]}
             for f in (view.files.get(reply["message_id"], []) if reply else [])]
    return Artifact(f"{view.task['task_id']}-reply", "reply", [text] if text else [],
                    [a for a in named if a.startswith(("http://", "https://"))], files)


def current_status(view: TaskView, done: list[Update] | None = None) -> Status:
    """The task's status now: the last status update, or submitted."""
    for update in reversed(done if done is not None else updates(view)):
        if isinstance(update, Status):
            return update
    return Status(SUBMITTED, view.task["created_at"])


# ------------------------------------------------------------------------------------------- wire shapes
def _text_part(text: str, version: str) -> dict[str, Any]:
    return {"text": text} if version == V1 else {"kind": "text", "text": text}


def _url_part(url: str, version: str) -> dict[str, Any]:
    return {"url": url} if version == V1 else {"kind": "file", "file": {"uri": url}}


def _file_part(file: dict[str, Any], version: str) -> dict[str, Any]:
    """A file sent with the reply: where to GET it (with the caller's bearer token), its name and type."""
    if version == V1:
        return {"url": file["url"], "filename": file["filename"], "mediaType": file["content_type"]}
    return {"kind": "file", "file": {"uri": file["url"], "name": file["filename"], "mimeType": file["content_type"]}}


def message(view: TaskView, text: str, message_id: str, role: str, version: str) -> dict[str, Any]:
    """An A2A message of this task (role: "user" or "agent")."""
    out: dict[str, Any] = {"messageId": message_id, "contextId": view.context_id, "taskId": view.task["task_id"],
                           "role": f"ROLE_{role.upper()}" if version == V1 else role,
                           "parts": [_text_part(text, version)]}
    if version == V03:
        out["kind"] = "message"
    return out


def status(view: TaskView, st: Status, version: str) -> dict[str, Any]:
    """A TaskStatus: state, the agent's message (if any), timestamp."""
    out: dict[str, Any] = {"state": v1_state(st.state) if version == V1 else st.state, "timestamp": iso(st.at)}
    if st.text:
        out["message"] = message(view, st.text, st.message_id or f"{view.task['task_id']}-{st.state}", "agent",
                                 version)
    return out


def artifact(art: Artifact, version: str) -> dict[str, Any]:
    """An Artifact with its text, file and url parts."""
    parts = ([_text_part(t, version) for t in art.texts] + [_file_part(f, version) for f in art.files]
             + [_url_part(u, version) for u in art.urls])
    return {"artifactId": art.artifact_id, "name": art.name, "parts": parts or [_text_part("", version)]}


def history(view: TaskView, version: str, length: int | None) -> list[dict[str, Any]]:
    """The task's messages: the content it was sent with, then the agent's replies (the last `length`)."""
    items = [message(view, view.task["content"], view.task["message_id"], "user", version)]
    items += [message(view, r["content"], r["message_id"], "agent", version) for r in view.replies]
    if length is not None:
        items = items[-length:] if length > 0 else []
    return items


def task(view: TaskView, version: str, history_length: int | None = None) -> dict[str, Any]:
    """The A2A Task: id (the CommHub task id), contextId, status, artifacts, history."""
    done = updates(view)
    out: dict[str, Any] = {"id": view.task["task_id"], "contextId": view.context_id,
                           "status": status(view, current_status(view, done), version)}
    arts = [artifact(u, version) for u in done if isinstance(u, Artifact)]
    if arts:
        out["artifacts"] = arts
    items = history(view, version, history_length)
    if items:
        out["history"] = items
    if version == V03:
        out["kind"] = "task"
    return out


def stream_item(view: TaskView, update: Update, version: str) -> dict[str, Any]:
    """One update as a stream's result: a status-update or an artifact-update event."""
    ids = {"taskId": view.task["task_id"], "contextId": view.context_id}
    if isinstance(update, Artifact):
        body = {**ids, "artifact": artifact(update, version), "lastChunk": True}
        return {"artifactUpdate": body} if version == V1 else {"kind": "artifact-update", **body}
    body = {**ids, "status": status(view, update, version)}
    if version == V1:
        return {"statusUpdate": body}
    return {"kind": "status-update", **body, "final": update.final}


def task_item(view: TaskView, version: str) -> dict[str, Any]:
    """The Task as a stream's first result (v1.0 wraps it: {"task": …})."""
    snapshot = task(view, version)
    return {"task": snapshot} if version == V1 else snapshot
