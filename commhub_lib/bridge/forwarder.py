"""The bridge job (root nursery): forwards tasks sent to aliases bound to external A2A agents, and follows them.

What to tell a remote agent is in the durable outbox (a2a_outbox), written with the event that caused it
(Hub.record_event): a new task, the sender's answer to a question, a cancel. The remote task a CommHub task became
is in a2a_forwarded with the last state acted on. One follower task per CommHub task works through both: its outbox
rows in order (each retried with backoff, given up after a2a_client_give_up_seconds), then GetTask polls with a
pause that doubles while nothing changes. Nothing of it is in memory only: after a restart the job finds every
task with work left and carries on. A send never waits for any of it.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
import trio

from ..ids import now_text, now_ts
from ..models import InlineFile
from ..service import bridge as service
from ..service.hub import Hub
from ..service.outbox import KeyedWorkers
from ..store import bridge as bridge_store
from ..vocabulary import CANCELLED, DONE, FAILED, FORWARD_ANSWER, FORWARD_CANCEL, FORWARD_TASK, PROGRESS, QUESTION
from . import client as a2a
from .client import A2AClient, A2AError, Endpoint, RemoteTask, message

log = logging.getLogger("commhub.a2a_client")

SCAN_SECONDS = 5.0  # the job also looks for work this often (a wake-up lost to a rollback)
TASK_NOT_FOUND = -32001  # A2A's TaskNotFoundError (both versions)
PRUNE_SECONDS = 3600.0  # settled forwards are kept as long as the events (event_retention_days)
CARD_TTL_SECONDS = 300.0  # an Agent Card is read again after this long (or after a failed call)
MAX_ERROR_CHARS = 300


def task_text(task: dict[str, Any]) -> str:
    """The text a CommHub task is forwarded as: its title, content and context."""
    pieces = [task["title"] or "", task["content"], f"Context:\n{task['context']}" if task["context"] else ""]
    return "\n\n".join(p for p in pieces if p)


class Forwarder(KeyedWorkers):
    """One follower per task with bridge work; each ends when its task has none left."""

    what = "a2a task follower"

    def __init__(self, hub: Hub, client: A2AClient, nursery: trio.Nursery):
        super().__init__(nursery)
        self.hub = hub
        self.client = client
        self.cards: dict[str, tuple[Endpoint, float]] = {}  # bound URL -> (endpoint, read at)
        # task id -> the remote state (`seen`) when its last stream ended or failed: it is subscribed to again only
        # once the state has changed (a stream the agent ends at once is not opened in a loop); GetTask polls meanwhile.
        self.stream_ended: dict[str, str | None] = {}

    async def work(self, task_id: str) -> None:
        """Work through one task's outbox and remote state until nothing is left (then the task ends)."""
        db = self.hub.db
        while True:
            row = bridge_store.next_outbox(db, task_id)
            fwd = bridge_store.get_forwarded(db, task_id)
            now = now_ts()
            if row is not None:
                due = row["next_attempt_ts"]
                if due <= now:
                    await self._send(row, fwd)
                    continue
            elif fwd is not None and fwd["following"]:
                due = fwd["next_poll_ts"]
                if due <= now:
                    await self._poll(fwd)
                    continue
                if task_id not in self.stream_ended or self.stream_ended[task_id] != fwd["seen"]:
                    if await self._watch(fwd):
                        continue
            else:
                del self.wakeups[task_id]  # no await since the reads: a poke now starts a new follower
                self.stream_ended.pop(task_id, None)
                return
            wake = self.wakeups[task_id] = trio.Event()
            with trio.move_on_after(due - now):
                await wake.wait()

    async def _endpoint(self, remote: dict[str, Any]) -> Endpoint:
        cached = self.cards.get(remote["url"])
        if cached is not None and trio.current_time() - cached[1] < CARD_TTL_SECONDS:
            return cached[0]
        endpoint = await self.client.endpoint(remote["url"], remote["token"])
        self.cards[remote["url"]] = (endpoint, trio.current_time())
        return endpoint

    # -- the outbox -------------------------------------------------------------------------------------------

    async def _send(self, row: dict[str, Any], fwd: dict[str, Any] | None) -> None:
        hub = self.hub
        remote = bridge_store.get_remote_secret(hub.db, row["network_id"], row["alias"])
        task = service.open_task(hub, row["network_id"], row["task_id"])
        if remote is None or not remote["enabled"]:
            await self._give_up(row, f"'{row['alias']}' is no longer bound to an A2A agent", task)
            return
        if row["kind"] == FORWARD_TASK and task is None:
            self._settle(row, "the task ended before it was forwarded")
            return
        if row["kind"] in (FORWARD_ANSWER, FORWARD_CANCEL) and fwd is None:
            self._settle(row, "the task was never forwarded")
            return
        try:
            endpoint = await self._endpoint(remote)
            answer = await self._deliver(row, fwd, remote, endpoint, task)
        except A2AError as exc:
            self.cards.pop(remote["url"], None)
            await self._failed(row, exc, task)
            return
        now = now_text()

        def stored() -> None:
            bridge_store.mark_outbox_sent(hub.db, row["outbox_id"], now)
            if row["kind"] == FORWARD_TASK and answer is not None and answer.task_id:
                bridge_store.insert_forwarded(hub.db, row["task_id"], row["network_id"], row["alias"],
                                              answer.task_id, answer.context_id, now)
            elif row["kind"] == FORWARD_CANCEL:
                bridge_store.stop_following(hub.db, row["task_id"], now)

        await hub.db.write_together(stored)
        if answer is not None:
            self._apply(row["network_id"], row["task_id"], answer, bridge_store.get_forwarded(hub.db, row["task_id"]))

    async def _deliver(self, row: dict[str, Any], fwd: dict[str, Any] | None, remote: dict[str, Any],
                       endpoint: Endpoint, task: dict[str, Any] | None) -> RemoteTask | None:
        """Tell the remote agent what the row says; the remote task's state that came back (None for a cancel)."""
        token, version = remote["token"], endpoint.version
        if row["kind"] == FORWARD_TASK:
            assert task is not None
            meta = {"commhub_task_id": task["task_id"], "commhub_from": task["from_name"],
                    "commhub_priority": task["priority"]}
            # The task's inbox id as the messageId: a retry after a lost answer carries the same id, so an agent
            # that dedups by messageId sees it once.
            return await self.client.send(endpoint, token, message(version, task["message_id"], task_text(task),
                                                                   metadata=meta))
        assert fwd is not None
        if row["kind"] == FORWARD_ANSWER:
            text = service.answer_text(self.hub, row["network_id"], row["message_id"])
            return await self.client.send(endpoint, token, message(version, row["message_id"] or f"a{row['outbox_id']}",
                                                                   text, fwd["remote_task_id"],
                                                                   fwd["remote_context_id"]))
        try:
            await self.client.cancel(endpoint, token, fwd["remote_task_id"])
        except A2AError as exc:
            if not exc.permanent:
                raise
            # The agent refused (the task is already over there, or cannot be cancelled): nothing to retry.
            log.info("a2a: task %s: CancelTask refused: %s", row["task_id"], exc)
        return None

    def _settle(self, row: dict[str, Any], note: str) -> None:
        """Nothing to send for this row after all."""
        with self.hub.db.write():
            bridge_store.mark_outbox_failed(self.hub.db, row["outbox_id"], note, now_text())

    async def _failed(self, row: dict[str, Any], exc: A2AError, task: dict[str, Any] | None) -> None:
        settings, now = self.hub.settings, now_ts()
        first = row["first_try_ts"] if row["first_try_ts"] is not None else now
        error = str(exc)[:MAX_ERROR_CHARS]
        if exc.permanent or now - first >= settings.a2a_client_give_up_seconds:
            await self._give_up(row, error, task)
            return
        pause = min(settings.a2a_client_retry_base_seconds * 2 ** row["attempts"],
                    settings.a2a_client_retry_max_seconds)
        log.info("a2a: task %s: %s failed (%s); again in %.1f s", row["task_id"], row["kind"], error, pause)
        await self.hub.db.write_together(lambda: bridge_store.mark_outbox_retry(
            self.hub.db, row["outbox_id"], error, first, now + pause, now_text()))

    async def _give_up(self, row: dict[str, Any], error: str, task: dict[str, Any] | None) -> None:
        """The row cannot be delivered: it is failed, and a task (or answer) that cannot reach the agent fails."""
        log.warning("a2a: task %s: %s given up: %s", row["task_id"], row["kind"], error)
        await self.hub.db.write_together(lambda: bridge_store.mark_outbox_failed(
            self.hub.db, row["outbox_id"], error, now_text()))
        if task is not None and row["kind"] in (FORWARD_TASK, FORWARD_ANSWER):
            what = "forwarded to" if row["kind"] == FORWARD_TASK else "answered at"
            service.report_final(self.hub, task, FAILED, f"The task could not be {what} the A2A agent behind "
                                                         f"'{row['alias']}': {error}")
            with self.hub.db.write():
                bridge_store.stop_following(self.hub.db, row["task_id"], now_text())

    # -- following the remote task ----------------------------------------------------------------------------

    async def _poll(self, fwd: dict[str, Any]) -> None:
        hub = self.hub
        remote = bridge_store.get_remote_secret(hub.db, fwd["network_id"], fwd["alias"])
        task = service.open_task(hub, fwd["network_id"], fwd["task_id"])
        if task is not None and (remote is None or not remote["enabled"]):  # unbound or paused: nobody follows it
            service.report_final(hub, task, FAILED, f"'{fwd['alias']}' was unbound from its A2A agent (or paused) "
                                                    "while the task was there; the agent's answer cannot come back")
        if task is None or remote is None or not remote["enabled"]:
            with hub.db.write():  # (the CommHub task is over: a cancel row, if any, tells the agent)
                bridge_store.stop_following(hub.db, fwd["task_id"], now_text())
            return
        try:
            endpoint = await self._endpoint(remote)
            answer = await self.client.get(endpoint, remote["token"], fwd["remote_task_id"])
        except A2AError as exc:
            self.cards.pop(remote["url"], None)
            log.info("a2a: task %s: GetTask failed: %s", fwd["task_id"], exc)
            if exc.code == TASK_NOT_FOUND:  # the agent lost it (restarted without its tasks): it will not answer
                service.report_final(hub, task, FAILED, f"The A2A agent behind '{fwd['alias']}' no longer knows the "
                                                        f"task ({exc}); its answer cannot come back")
                with hub.db.write():
                    bridge_store.stop_following(hub.db, fwd["task_id"], now_text())
                return
            self._later(fwd, changed=False)  # unreachable or failing for now: looked at again later
            return
        self._apply(fwd["network_id"], fwd["task_id"], answer, fwd)

    async def _watch(self, fwd: dict[str, Any]) -> bool:
        """Follow the remote task over a stream when its agent's card says it streams (SubscribeToTask): each event
        is acted on at once (GetTask gives the whole task, artifacts included), instead of waiting for a poll. Ends
        on a poke (an outbox row to send first) or when the stream ends or fails (then polls carry on). False when
        the agent does not stream."""
        hub, task_id = self.hub, fwd["task_id"]
        remote = bridge_store.get_remote_secret(hub.db, fwd["network_id"], fwd["alias"])
        if remote is None:
            return False
        try:
            endpoint = await self._endpoint(remote)
        except A2AError:
            return False
        if not endpoint.streaming:
            self.stream_ended[task_id] = None  # never: polls only
            return False
        wake = self.wakeups[task_id] = trio.Event()

        async def on_event(_: Any) -> None:
            current = bridge_store.get_forwarded(hub.db, task_id)
            if current is not None and current["following"]:
                await self._poll(current)

        ended = True
        async with trio.open_nursery() as nursery:
            async def until_poked() -> None:
                nonlocal ended
                await wake.wait()
                ended = False
                nursery.cancel_scope.cancel()

            async def stream() -> None:
                try:
                    await self.client.subscribe(endpoint, remote["token"], fwd["remote_task_id"], on_event)
                except A2AError as exc:
                    log.info("a2a: task %s: stream ended: %s", task_id, exc)
                nursery.cancel_scope.cancel()

            nursery.start_soon(until_poked)
            nursery.start_soon(stream)
        if ended:  # the agent ended the stream (or it failed): poll now, and stream again only after a change
            current = bridge_store.get_forwarded(hub.db, task_id)
            self.stream_ended[task_id] = current["seen"] if current is not None else None
            with hub.db.write():
                bridge_store.set_next_poll(hub.db, task_id, 0.0, now_ts())
        return True

    def _later(self, fwd: dict[str, Any], *, changed: bool) -> None:
        settings = self.hub.settings
        pause = settings.a2a_client_poll_seconds if changed or not fwd["poll_seconds"] else min(
            fwd["poll_seconds"] * 2, settings.a2a_client_poll_max_seconds)
        with self.hub.db.write():
            bridge_store.set_next_poll(self.hub.db, fwd["task_id"], pause, now_ts() + pause)

    def _apply(self, network_id: str, task_id: str, answer: RemoteTask, fwd: dict[str, Any] | None) -> None:
        """Turn the remote state into the CommHub task's (only when it changed since last time)."""
        hub, settings = self.hub, self.hub.settings
        task = service.open_task(hub, network_id, task_id)
        if task is None:
            if fwd is not None:
                with hub.db.write():
                    bridge_store.stop_following(hub.db, task_id, now_text())
            return
        if fwd is not None and fwd["seen"] == answer.seen:
            self._later(fwd, changed=False)
            return
        state, text = answer.state, answer.text
        if state == a2a.WORKING:
            if text:
                service.report(hub, task, PROGRESS, text)
            else:
                service.mark_running(hub, task)
        elif state == a2a.INPUT_REQUIRED:
            service.report(hub, task, QUESTION, text or "The remote agent needs more input to go on.")
        elif state == a2a.AUTH_REQUIRED:
            service.report_final(hub, task, FAILED, "The remote agent asks for authentication, which CommHub cannot "
                                                    "give it" + (f": {text}" if text else ""))
        elif state == a2a.COMPLETED:
            files = [InlineFile(filename=f.filename[:255], content_type=(f.media_type or None) and f.media_type[:200],
                                data_base64=f.data_base64) for f in answer.files]
            service.report_final(hub, task, DONE, "\n\n".join(t for t in (text, *answer.artifacts) if t)
                                 or "(the remote agent completed the task with no text)", files)
        elif state in (a2a.FAILED, a2a.REJECTED):
            word = "rejected" if state == a2a.REJECTED else "as failed"
            service.report_final(hub, task, FAILED, text or f"The remote agent {word} the task.")
        elif state == a2a.CANCELED:
            service.report_final(hub, task, CANCELLED, text or "The remote agent cancelled the task.")
        if fwd is None:
            return
        final = state in a2a.FINAL_STATES or state == a2a.AUTH_REQUIRED
        pause = settings.a2a_client_poll_seconds
        with hub.db.write():
            bridge_store.set_seen(hub.db, task_id, state, answer.seen, 0 if final else 1, pause, now_ts() + pause,
                                  now_text())


async def run_bridge(hub: Hub, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Background job (root nursery): start a follower for every task with bridge work (those a restart left too),
    then for each task publish() reports; keep bound aliases online; look again every SCAN_SECONDS."""
    settings = hub.settings
    async with httpx.AsyncClient(follow_redirects=False, trust_env=False) as http, trio.open_nursery() as nursery:
        forwarder = Forwarder(hub, A2AClient(http, settings.a2a_client_targets, settings.a2a_client_timeout_seconds),
                              nursery)
        task_status.started()
        presence_every = max(0.5, settings.presence_timeout_seconds / 3)
        next_presence = trio.current_time()
        next_prune = trio.current_time() + SCAN_SECONDS
        scan = True
        while True:
            if trio.current_time() >= next_prune:
                next_prune = trio.current_time() + PRUNE_SECONDS
                try:
                    if pruned := await service.prune(hub):
                        log.info("a2a: pruned %d settled forwards", pruned)
                except Exception:  # busy or failing: the next hour tries again
                    log.exception("a2a: could not prune the outbox")
            if trio.current_time() >= next_presence:
                next_presence = trio.current_time() + presence_every
                service.touch_bound(hub)
            due: set[str] = set()
            if scan:
                try:
                    due = set(bridge_store.tasks_with_work(hub.db))
                except Exception:  # the database is busy or failing: the next scan tries again
                    log.exception("a2a: could not read the outbox")
            due |= hub.bridge_due
            hub.bridge_due.clear()
            forwarder.poke(due)
            with trio.move_on_after(min(SCAN_SECONDS, presence_every)) as idle:
                await hub.bridge_wakeup.wait()
            hub.bridge_wakeup = trio.Event()
            scan = idle.cancelled_caught
