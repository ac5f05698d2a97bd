"""The runner's loop: hold the alias's stream, turn each task, message, answer or reply into one turn of the agent.

Two trio tasks share a queue. The reader holds `GET /events/<alias>` with the agent's token (reconnecting with
`Last-Event-ID`, backoff 1 s doubling to 30 s) and queues every new event in arrival order; with
`--interrupt-on urgent`, an urgent task goes to the front and the running turn is interrupted (it goes on after
the urgent one). The worker takes one event at a time: it writes it into the state file's `in_flight` before the
turn, runs the turn through the driver, reminds once when a task is left open, posts the last message as a
`progress` reply and flags the task `unanswered` when it is still open, and only then marks the event done and
moves the cursor (state.py). An agent that dies mid-turn (AgentDied) is restarted with backoff and the turn is
resumed in the same session. docs/runner.md is the user's manual and defines the exactly-once rules.
"""

from __future__ import annotations

import json
import signal
import sys
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import trio

from ... import __version__
from ...client import SseFrame, parse_sse
from ...vocabulary import (
    ANSWER,
    DELIVERED,
    HEARTBEAT,
    IDLE,
    INPUT_REQUIRED,
    NEW_MESSAGE,
    NEW_REPLY,
    NEW_TASK,
    OPEN_TASK_STATUSES,
    PROGRESS,
    QUESTION,
    RUNNER,
    RUNNING,
    UNANSWERED,
    WORKING,
)
from .driver import AgentDied, AgentDriver, TurnResult
from .prompt import message_prompt, reminder_prompt, reply_prompt, resume_prompt, task_prompt
from .relay import HubRelay
from .state import Pending, RunnerState

TURN_EVENTS = (NEW_TASK, NEW_MESSAGE, NEW_REPLY)
OPEN_STATUSES = OPEN_TASK_STATUSES


def left_open(task: dict[str, Any] | None) -> bool:
    """Whether a turn left the task unanswered: still delivered or running, or input_required with the sender's
    answer as the last word (a question the agent asked is an answer to its turn; the sender's answer is not)."""
    if task is None:
        return False
    if task.get("status") in (DELIVERED, RUNNING):
        return True
    if task.get("status") != INPUT_REQUIRED:
        return False
    talk = [e.get("event") for e in task.get("_events") or [] if e.get("event") in (QUESTION, ANSWER)]
    return bool(talk) and talk[-1] == ANSWER
STREAM_READ_TIMEOUT = 60.0  # heartbeats come every 15 s by default
MESSAGE_LOOKUP_LIMIT = 200


class Fatal(Exception):
    """Something the user must fix (a refused token, a wrong alias): the runner stops with exit code 1."""


@dataclass(frozen=True)
class RunOptions:
    """What `commhub run` was asked to do."""

    agent: str
    alias: str
    hub_url: str
    token: str
    state_dir: Path
    network_id: str | None = None
    interrupt_on_urgent: bool = False
    from_now: bool = False       # first start: skip the backlog (the tasks already waiting) instead of taking it
    restart_max_seconds: float = 30.0


def say(text: str) -> None:
    """One line on stderr (the runner's log)."""
    print(f"commhub run: {text}", file=sys.stderr, flush=True)


class HubApi:
    """The REST calls of the runner, with the agent's token."""

    def __init__(self, opts: RunOptions):
        self.opts = opts
        self.http = httpx.AsyncClient(base_url=opts.hub_url.rstrip("/"), timeout=30,
                                      headers={"Authorization": f"Bearer {opts.token}",
                                               "User-Agent": f"commhub-run/{__version__} ({opts.agent})"})

    def _params(self, **extra: Any) -> dict[str, Any]:
        params = {k: v for k, v in extra.items() if v is not None}
        if self.opts.network_id:
            params["network_id"] = self.opts.network_id
        return params

    async def _json(self, method: str, path: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
        response = await self.http.request(method, path, **kwargs)
        try:
            body = response.json()
        except ValueError:
            body = {}
        return response.status_code, body if isinstance(body, dict) else {}

    async def get_task(self, task_id: str) -> dict[str, Any] | None:
        """The task record, or None if the hub does not know it (deleted, another network). Its timeline is
        under `_events`."""
        status, body = await self._json("GET", f"/api/tasks/{task_id}", params=self._params())
        if status == 404:
            return None
        if status >= 400:
            raise httpx.HTTPError(f"GET /api/tasks/{task_id}: HTTP {status} {body}")
        task = dict(body.get("task") or body)
        task["_events"] = body.get("events") or []
        return task

    async def _tool(self, name: str, arguments: dict[str, Any]) -> None:
        """One MCP tool call as the agent (a bare JSON-RPC request); failures only logged."""
        status, body = await self._json("POST", "/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                                                              "params": {"name": name, "arguments": arguments}},
                                        headers={"Accept": "application/json, text/event-stream"})
        if status >= 400 or "error" in body or (body.get("result") or {}).get("isError"):
            say(f"{name} failed: HTTP {status} {str(body)[:200]}")

    async def start_task(self, task_id: str) -> None:
        """Mark the task read, which starts it (`running`): the hub's permission_prompt asks on the running task."""
        await self._tool("ack_inbox", {"ids": [task_id]})

    async def report(self, status: str, task: str | None = None) -> None:
        """The alias's status on the dashboard: `working` on what, or `idle`."""
        arguments: dict[str, Any] = {"alias": self.opts.alias, "status": status,
                                     "agent": f"{self.opts.agent} (commhub run)"}
        if task is not None:
            arguments["task"] = task[:200]
        await self._tool("report_status", arguments)

    async def progress(self, task_id: str, text: str) -> None:
        """Post the turn's last message as a `progress` reply."""
        body: dict[str, Any] = {"task_id": task_id, "status": PROGRESS, "content": text}
        if self.opts.network_id:
            body["network_id"] = self.opts.network_id
        status, answer = await self._json("POST", "/api/replies", json=body)
        if status >= 400:
            say(f"could not post the progress reply on task {task_id}: HTTP {status} {answer}")

    async def flag(self, task_id: str, note: str) -> None:
        """Flag the task `unanswered` (idempotent on the hub)."""
        status, answer = await self._json("POST", f"/api/tasks/{task_id}/flag", params=self._params(),
                                          json={"flag": UNANSWERED, "note": note})
        if status >= 400:
            say(f"could not flag task {task_id}: HTTP {status} {answer}")

    async def message_content(self, message_id: str | None) -> str | None:
        """The text of a message or reply in the alias's inbox (events carry ids, not always the text)."""
        if not message_id:
            return None
        status, body = await self._json("GET", "/api/messages",
                                        params=self._params(alias=self.opts.alias, limit=MESSAGE_LOOKUP_LIMIT))
        if status >= 400:
            return None
        for item in body.get("messages") or []:
            if item.get("message_id") == message_id:
                return str(item.get("content") or "")
        return None

    async def frames(self, last_event_id: int | None) -> AsyncIterator[SseFrame]:
        """One connection to the alias's stream, frame by frame; Fatal on a refusal the user must fix."""
        headers = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        timeout = httpx.Timeout(10.0, read=STREAM_READ_TIMEOUT)
        # holder=runner: the hub shows the alias held by a runner, not by a plain stream (docs/presence.md).
        async with self.http.stream("GET", f"/events/{self.opts.alias}", params=self._params(holder=RUNNER),
                                    headers=headers, timeout=timeout) as response:
            if response.status_code != 200:
                text = (await response.aread()).decode(errors="replace")[:300]
                if 400 <= response.status_code < 500 and response.status_code != 429:
                    raise Fatal(f"the hub refused the stream of {self.opts.alias}: HTTP {response.status_code} "
                                f"{text}")
                raise httpx.HTTPError(f"HTTP {response.status_code} {text}")
            lines: list[str] = []
            async for line in _sse_lines(response):
                if line:
                    lines.append(line)
                    continue
                for frame in parse_sse(iter([*lines, ""])):
                    yield frame
                lines = []

    async def aclose(self) -> None:
        """Close the connections."""
        await self.http.aclose()


async def _sse_lines(response: httpx.Response) -> AsyncIterator[str]:
    """Lines split only on CR, LF and CRLF (as client.iter_sse_lines, for an async response)."""
    buffer = ""
    async for chunk in response.aiter_text():
        buffer += chunk
        while True:
            cut = min((i for i in (buffer.find("\r"), buffer.find("\n")) if i >= 0), default=-1)
            if cut < 0 or (buffer[cut] == "\r" and cut + 1 == len(buffer)):
                break
            line = buffer[:cut]
            buffer = buffer[cut + (2 if buffer[cut:cut + 2] == "\r\n" else 1):]
            yield line


def _event_data(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text) if text else {}
    except ValueError:
        return {"raw": text}
    return data if isinstance(data, dict) else {"raw": data}


class Runner:
    """One alias, one agent: the reader and the worker around a queue of pending events."""

    def __init__(self, opts: RunOptions, driver: AgentDriver, state: RunnerState, api: HubApi,
                 clock: Callable[[], float] = trio.current_time):
        self.opts = opts
        self.driver = driver
        self.state = state
        self.api = api
        self.relay = HubRelay(api.http, opts.network_id)
        self.queue: deque[Pending] = deque()
        self.arrived = trio.Event()
        self.received: int | None = None      # the newest event id taken off the stream in this run
        self.current: Pending | None = None   # the event whose turn runs now
        self.interrupting: Pending | None = None
        self.why: dict[int, str] = {}         # event id -> why its turn is resumed (restart, death, interrupt)
        self.clock = clock

    # -- the reader ------------------------------------------------------------------------------------------

    async def read_stream(self) -> None:
        """Hold the alias's stream for ever, queueing new events in order (Fatal on a refusal)."""
        delay = 1.0
        while True:
            resume = max((i for i in (self.received, self.state.cursor) if i is not None), default=None)
            try:
                async for frame in self.api.frames(resume):
                    delay = 1.0
                    if await self._frame(frame):
                        break  # the first start learnt where "now" is: replay the backlog at once
                else:
                    await self._pause("the stream ended", delay)
                    delay = min(delay * 2, 30.0)
            except httpx.HTTPError as exc:
                await self._pause(f"the stream broke ({exc})", delay)
                delay = min(delay * 2, 30.0)

    async def _pause(self, reason: str, delay: float) -> None:
        say(f"{reason}; reconnecting in {delay:.0f} s")
        await trio.sleep(delay)

    async def _frame(self, frame: SseFrame) -> bool:
        """Queue one frame's event; True when the stream must be opened again from the start (a first start)."""
        if not frame.is_event:
            if frame.id and frame.id.isdigit() and self.state.cursor is None:
                if self.opts.from_now:
                    self.state.position(int(frame.id))
                    return False
                self.state.first_start(int(frame.id))
                say(f"first start for {self.opts.alias}: every task still open for it gets a turn "
                    f"(events up to {frame.id}); --from-now skips them")
                return True
            return False
        if frame.event == HEARTBEAT or not frame.id or not frame.id.isdigit():
            return False
        event_id = int(frame.id)
        if (self.received is not None and event_id <= self.received) or self.state.known(event_id):
            return False
        self.received = event_id
        pending = Pending(event_id, frame.event or "message", _event_data(frame.data))
        urgent = (pending.event == NEW_TASK and pending.data.get("priority") == "urgent")
        if urgent and self.opts.interrupt_on_urgent and self.current is not None \
                and self.current.data.get("priority") != "urgent":
            say(f"urgent task {pending.data.get('task_id')} (event {event_id}): interrupting the turn of event "
                f"{self.current.event_id}")
            self.queue.appendleft(pending)
            self.interrupting = self.current
            await self.driver.interrupt()
        else:
            self.queue.append(pending)
        self.arrived.set()
        return False

    # -- the worker ------------------------------------------------------------------------------------------

    def waiting(self) -> list[int]:
        """Ids received and not done (queued in memory)."""
        return [p.event_id for p in self.queue]

    async def work(self) -> None:
        """Resume what a previous run left in flight, then take queued events one at a time, for ever."""
        for pending in list(self.state.in_flight):
            self.why.setdefault(pending.event_id, "The runner restarted")
            await self.handle_retrying(pending)
        while True:
            while not self.queue:
                self.arrived = trio.Event()
                await self.arrived.wait()
            await self.handle_retrying(self.queue.popleft())

    async def handle_retrying(self, pending: Pending) -> None:
        """handle(), again with backoff while the hub cannot be reached (the event stays in flight meanwhile)."""
        delay = 1.0
        while True:
            try:
                await self.handle(pending)
                return
            except httpx.HTTPError as exc:
                say(f"the hub failed during event {pending.event_id} ({exc}); trying it again in {delay:.0f} s")
                if pending.phase == "turn":
                    self.why.setdefault(pending.event_id, "The hub could not be reached during your turn")
                await trio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def handle(self, pending: Pending) -> None:
        """Everything for one event; the cursor moves past it only at the end."""
        data = pending.data
        if pending.event not in TURN_EVENTS or data.get("answers_approval"):
            self.state.finish(pending, self.waiting())  # nothing to do (the approval's answer went back already)
            return
        if self.state.in_backlog(pending.event_id) and pending.event != NEW_TASK:
            self.state.finish(pending, self.waiting())  # from before the first start: it waits in get_inbox
            return
        what = data.get("title") or data.get("task_id") or f"{pending.event} from {data.get('from')}"
        await self.api.report(WORKING, str(what))
        if pending.event == NEW_TASK:
            await self._task(pending)
        else:
            await self._message(pending)
        if not self.queue:
            await self.api.report(IDLE, "")

    async def _task(self, pending: Pending) -> None:
        task_id = str(pending.data.get("task_id") or "")
        task = await self.api.get_task(task_id) if task_id else None
        if task is None or task.get("status") not in OPEN_STATUSES:
            say(f"task {task_id or '?'} (event {pending.event_id}) is "
                f"{'unknown' if task is None else task.get('status')}: no turn")
            self.state.finish(pending, self.waiting())
            return
        if pending.phase not in ("reminded", "flagging"):
            resumed = pending.phase == "turn"
            self.state.begin(pending, "turn")
            if task.get("status") == DELIVERED:
                await self.api.start_task(task_id)
            prompt = task_prompt(self.opts.alias, task, pending.data.get("priority"), self.opts.hub_url)
            why = self.why.pop(pending.event_id, None)
            if resumed and why:
                prompt = resume_prompt(prompt, why)
            say(f"turn for task {task_id} (event {pending.event_id}) from {task.get('from_name')}")
            result = await self._turn(pending, prompt, task_id)
            if result is None:
                return  # interrupted (queued again behind the urgent task) or the task ended while restarting
        else:
            result = None  # the runner restarted after the reminder: that turn's message is gone
        await self._after_turn(pending, task_id, result)

    async def _after_turn(self, pending: Pending, task_id: str, result: TurnResult | None) -> None:
        """A turn on the alias's own task ended (result None: restarted after the reminder): done if the task is
        answered, else remind once, then post the last message as progress and flag the task."""
        if result is not None:
            task = await self.api.get_task(task_id)
            if task is None or not left_open(task):
                self._done(pending, task)
                return
            self.state.begin(pending, "reminded")
            say(f"task {task_id} is still {task.get('status')} after the turn: reminding once")
            reminded = await self._turn(pending, reminder_prompt(task_id), task_id)
            if reminded is None:
                return
            last = reminded.last_message or result.last_message
        else:
            last = ""
        task = await self.api.get_task(task_id)
        if task is not None and left_open(task):
            say(f"task {task_id} is still {task.get('status')} after the reminder: progress reply and flag")
            if pending.phase != "flagging":  # a restart after the progress reply was posted does not post it again
                self.state.begin(pending, "flagging")
                await self.api.progress(task_id, last.strip() or "(the agent's turn ended without a message)")
            await self.api.flag(task_id, "the agent's turn ended without a reply; reminded once")
        self._done(pending, task)

    def _done(self, pending: Pending, task: dict[str, Any] | None) -> None:
        status = task.get("status") if task else "unknown"
        say(f"event {pending.event_id} done (task {pending.data.get('task_id')} {status})")
        self.state.finish(pending, self.waiting())

    async def _message(self, pending: Pending) -> None:
        data = pending.data
        own_task = str(data.get("task_id") or "") if data.get("status") == "answer" else ""
        if own_task and pending.phase in ("reminded", "flagging"):
            await self._after_turn(pending, own_task, None)  # the runner restarted after the reminder
            return
        resumed = pending.phase == "turn"
        self.state.begin(pending, "turn")
        content = await self.api.message_content(data.get("message_id"))
        if pending.event == NEW_MESSAGE:
            prompt = message_prompt(self.opts.alias, data, content)
        else:
            prompt = reply_prompt(self.opts.alias, data, content)
        why = self.why.pop(pending.event_id, None)
        if resumed and why:
            prompt = resume_prompt(prompt, why)
        say(f"turn for {pending.event} {data.get('message_id')} (event {pending.event_id}) from {data.get('from')}")
        result = await self._turn(pending, prompt, own_task or None)
        if result is None:
            return
        if own_task:  # an answer to the agent's question: the turn must end the task as a task's turn does
            await self._after_turn(pending, own_task, result)
            return
        say(f"event {pending.event_id} done")
        self.state.finish(pending, self.waiting())

    async def _turn(self, pending: Pending, prompt: str, task_id: str | None) -> TurnResult | None:
        """One turn, restarting a dead agent with backoff and resuming the turn in its session. None: the turn was
        interrupted for an urgent task (queued again) or its task ended meanwhile (done)."""
        attempt = 0
        delay = 0.0
        text = prompt
        while True:
            self.current = pending
            try:
                result = await self.driver.run_turn(text, self.relay)
            except AgentDied as exc:
                result = None
                attempt += 1
                delay = min(2.0 ** (attempt - 1), self.opts.restart_max_seconds)
                say(f"the agent died during the turn of event {pending.event_id} ({exc}); restarting in "
                    f"{delay:.0f} s (attempt {attempt})")
            finally:
                self.current = None
            if result is not None:
                if self.interrupting is pending:
                    self.interrupting = None
                    self.why[pending.event_id] = "You were interrupted by an urgent task, now answered"
                    # Behind the urgent task, ahead of everything else; still in flight on disk.
                    self.queue.insert(1 if self.queue else 0, pending)
                    self.arrived.set()
                    return None
                return result
            await self._restart(delay)
            if task_id:
                task = await self.api.get_task(task_id)
                if task is None or task.get("status") not in OPEN_STATUSES:
                    self._done(pending, task)
                    return None
            text = resume_prompt(prompt, "The agent process died and was restarted")

    async def _restart(self, delay: float) -> None:
        with trio.CancelScope(shield=True):
            await self.driver.close()
        await trio.sleep(delay)
        attempt = 0
        while True:
            try:
                await self.driver.start()
                return
            except Exception as exc:  # noqa: BLE001 - any failure to start is retried with backoff
                attempt += 1
                wait = min(2.0 ** attempt, self.opts.restart_max_seconds)
                say(f"could not restart the agent ({exc}); again in {wait:.0f} s")
                await trio.sleep(wait)

    # -- the whole ------------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Start the agent, then read and work until cancelled (SIGTERM/SIGINT) or Fatal."""
        await self.driver.start()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.read_stream)
                nursery.start_soon(self.work)
                nursery.start_soon(self._signals, nursery.cancel_scope)
        except BaseExceptionGroup as group:
            fatal, _rest = group.split(Fatal)
            if fatal is not None:
                first: BaseException = fatal
                while isinstance(first, BaseExceptionGroup):
                    first = first.exceptions[0]
                raise first from None
            raise
        finally:
            with trio.CancelScope(shield=True):
                await self.driver.close()
                await self.api.aclose()

    async def _signals(self, scope: trio.CancelScope) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                say(f"stopping on {signal.Signals(signum).name}; events in flight resume on the next start")
                scope.cancel()
                return
