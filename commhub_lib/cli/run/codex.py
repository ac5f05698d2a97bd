"""Codex behind `commhub run codex`: `codex app-server`, its JSON-RPC over stdio, one thread per alias.

What it runs: `codex app-server` with `-c` overrides that add CommHub as the MCP server `commhub`
(`url` = hub_url + /mcp, `bearer_token_env_var` = the name of the token's variable: the token itself is only in
the agent's environment, never on argv nor in a file; `default_tools_approval_mode = "approve"`, so CommHub's own
tools need no person) and the approval gates (`approval_policy = "on-request"`, `sandbox_mode =
"workspace-write"`; arguments after `--` come later on the command line and win). The user's own CODEX_HOME
(login, model, providers) stays as it is.

Per start: `initialize`, then `thread/resume` of the thread id saved in the alias's state directory, or
`thread/start` (its id saved, 0600) the first time or when the saved thread is gone. Per turn: `turn/start`, then
the notifications up to `turn/completed`; the last `agentMessage` is the turn's last message. Approval requests
(`item/commandExecution/requestApproval`, `item/fileChange/requestApproval`, and the older `execCommandApproval`,
`applyPatchApproval`) go to a person through the Relay and their answer goes back; `interrupt()` sends
`turn/interrupt`. The process ending at any point is AgentDied.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
from pathlib import Path
from typing import Any

import trio

from ..common import read_saved, write_private
from .driver import AgentDied, AgentDriver, Answer, DriverContext, Relay, TurnResult
from .proc import private_dir
from .rpc import RpcError, RpcProcess

SERVER_NAME = "commhub"
THREAD_FILE = "codex-thread.json"
LOG_FILE = "codex.log"
START_TIMEOUT_SECONDS = 60.0
_TASK_LINE = re.compile(r"^task_id:\s*(\S+)\s*$", re.MULTILINE)
# Approval requests of app-server v2 and their older names; the answer words differ between the two.
_V2_APPROVALS = ("item/commandExecution/requestApproval", "item/fileChange/requestApproval")
_V1_APPROVALS = ("execCommandApproval", "applyPatchApproval")


def codex_binary(env: dict[str, str]) -> str:
    """The codex executable: $COMMHUB_CODEX_BIN, else `codex` on the agent environment's PATH."""
    return env.get("COMMHUB_CODEX_BIN") or shutil.which("codex", path=env.get("PATH")) or "codex"


def _toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


class CodexDriver:
    """`codex app-server` for one alias (see the module's docstring)."""

    name = "codex"

    def __init__(self, ctx: DriverContext):
        self.ctx = ctx
        self.rpc: RpcProcess | None = None
        self.thread_id: str | None = None
        self.turn_id: str | None = None
        self.in_turn = False
        self.interrupt_asked = False

    @property
    def thread_file(self) -> Path:
        """Where the alias's thread id is kept between starts."""
        return self.ctx.state_dir / THREAD_FILE

    def _env(self) -> dict[str, str]:
        return {**os.environ, **self.ctx.env}

    def argv(self) -> list[str]:
        """The command line (no secret on it: the token is named, not given)."""
        mcp = f"mcp_servers.{SERVER_NAME}"
        return [codex_binary(self._env()), "app-server",
                "-c", f"{mcp}.url={_toml_string(self.ctx.hub_url.rstrip('/') + '/mcp')}",
                "-c", f"{mcp}.bearer_token_env_var={_toml_string(self.ctx.token_env)}",
                "-c", f'{mcp}.default_tools_approval_mode="approve"',
                "-c", 'approval_policy="on-request"',
                "-c", 'sandbox_mode="workspace-write"',
                *self.ctx.agent_args]

    def dry_run(self) -> list[str]:
        """The command line and the file it keeps."""
        return [f"cd {shlex.quote(str(self.ctx.workdir))} && {shlex.join(self.argv())}",
                f"thread id kept in {self.thread_file} (0600); agent log {self.ctx.state_dir / LOG_FILE}",
                f"token: from ${self.ctx.token_env} in the agent's environment"]

    def saved_thread(self) -> str | None:
        """The thread id saved by an earlier start, if any."""
        return read_saved(self.thread_file, "thread_id")

    async def start(self) -> None:
        """Launch app-server, initialize, resume the alias's thread or start one."""
        private_dir(self.ctx.state_dir)
        env = self._env()
        self.rpc = RpcProcess("codex app-server", self.argv(), cwd=self.ctx.workdir, env=env,
                              log_path=self.ctx.state_dir / LOG_FILE)
        await self.rpc.launch()
        rpc = self.rpc
        try:
            with trio.fail_after(START_TIMEOUT_SECONDS):
                await rpc.guarded(lambda: self._open_thread(rpc))
        except trio.TooSlowError:
            await self.close()
            raise AgentDied(f"codex app-server did not open its thread within {START_TIMEOUT_SECONDS:.0f} s") from None
        except BaseException:
            await self.close()  # no half-started agent left behind
            raise

    async def _open_thread(self, rpc: RpcProcess) -> None:
        await rpc.call("initialize", {"clientInfo": {"name": "commhub-run", "title": "CommHub runner",
                                                      "version": "1"}})
        await rpc.notify("initialized", {})
        saved = self.saved_thread()
        if saved:
            try:
                result = await rpc.call("thread/resume", {"threadId": saved, "cwd": str(self.ctx.workdir),
                                                          "excludeTurns": True})
                self.thread_id = str(result["thread"]["id"])
                return
            except (RpcError, KeyError, TypeError):
                pass  # the thread is gone (another CODEX_HOME, deleted): start a new one
        result = await rpc.call("thread/start", {"cwd": str(self.ctx.workdir)})
        self.thread_id = str(result["thread"]["id"])
        write_private(self.thread_file, json.dumps({"thread_id": self.thread_id, "alias": self.ctx.alias}))

    async def run_turn(self, prompt: str, relay: Relay) -> TurnResult:
        """Start a turn with the prompt and follow it to `turn/completed`, relaying approvals."""
        rpc = self.rpc
        if rpc is None or rpc.process is None or self.thread_id is None:
            raise AgentDied("codex is not running")
        found = _TASK_LINE.search(prompt)
        task_id = found.group(1) if found else None
        return await rpc.guarded(lambda: self._turn(rpc, prompt, relay, task_id))

    async def _turn(self, rpc: RpcProcess, prompt: str, relay: Relay, task_id: str | None) -> TurnResult:
        self.interrupt_asked = False
        self.in_turn = True
        last = ""
        try:
            try:
                result = await rpc.call("turn/start", {"threadId": self.thread_id,
                                                       "input": [{"type": "text", "text": prompt}]})
            except RpcError as exc:  # its thread is not usable: a restart resumes or replaces it
                raise AgentDied(f"codex refused the turn: {exc}") from exc
            self.turn_id = str((result.get("turn") or {}).get("id") or "") or None
            if self.interrupt_asked:  # asked before Codex had named the turn
                await self.interrupt()
            async with trio.open_nursery() as nursery:
                while True:
                    message = await rpc.receive()
                    method = message.get("method")
                    params = message.get("params") or {}
                    if "id" in message and method:
                        nursery.start_soon(self._server_request, rpc, message, relay, task_id)
                        continue
                    if method == "item/completed" and params.get("turnId") in (None, self.turn_id):
                        item = params.get("item") or {}
                        if item.get("type") == "agentMessage" and item.get("text"):
                            last = str(item["text"])
                    elif method == "turn/completed" and params.get("threadId") in (None, self.thread_id):
                        turn = params.get("turn") or {}
                        if self.turn_id and turn.get("id") not in (None, self.turn_id):
                            continue  # an older turn's end, read late
                        nursery.cancel_scope.cancel()  # approvals still waiting are moot
                        status = str(turn.get("status") or "")
                        error = (turn.get("error") or {}).get("message") if status != "completed" else None
                        return TurnResult(last_message=last, completed=status == "completed",
                                          error=str(error or status) if status != "completed" else None)
        finally:
            self.turn_id = None
            self.in_turn = False
        raise AgentDied("codex turn ended without turn/completed")  # not reached: the loop returns or raises

    async def _server_request(self, rpc: RpcProcess, message: dict[str, Any], relay: Relay,
                              task_id: str | None) -> None:
        method = str(message.get("method"))
        params = message.get("params") or {}
        if method in _V2_APPROVALS or method in _V1_APPROVALS:
            try:
                answer = await relay.ask(_question(method, params), task_id=task_id)
            except Exception as exc:  # noqa: BLE001 - no person reachable: fail closed, the turn goes on
                answer = Answer(False, f"the runner could not ask a person: {exc}")
            await rpc.answer(message["id"], {"decision": _decision(method, answer)})
        else:  # user input, elicitations, permission profiles, dynamic tools: nothing a runner can answer
            await rpc.answer(message["id"], error={"code": -32601,
                                                   "message": f"commhub run does not handle {method}"})

    async def interrupt(self) -> None:
        """Ask app-server to cut the running turn short (its `turn/completed` then says interrupted)."""
        rpc = self.rpc
        if rpc is None or rpc.process is None or not self.thread_id or not self.in_turn:
            return
        if not self.turn_id:
            self.interrupt_asked = True  # sent as soon as turn/start names the turn
            return
        await rpc.request_nowait("turn/interrupt", {"threadId": self.thread_id, "turnId": self.turn_id})

    async def close(self) -> None:
        """Stop app-server; the thread id stays saved."""
        rpc, self.rpc = self.rpc, None
        if rpc is not None:
            await rpc.close()


def _question(method: str, params: dict[str, Any]) -> str:
    reason = params.get("reason")
    if method in ("item/commandExecution/requestApproval", "execCommandApproval"):
        command = params.get("command")
        if isinstance(command, list):
            command = shlex.join(str(c) for c in command)
        text = f"Codex asks to run a command:\n{command}\nin {params.get('cwd')}"
    else:
        changes = params.get("fileChanges") or params.get("changes") or {}
        files = ", ".join(sorted(changes)) if isinstance(changes, dict) else ""
        text = "Codex asks to change files" + (f": {files}" if files else "")
        if params.get("grantRoot"):
            text += f" (and to write under {params['grantRoot']})"
    if reason:
        text += f"\nWhy: {reason}"
    return text + "\nReply yes to allow, anything else to deny."


def _decision(method: str, answer: Answer) -> str:
    if method in _V1_APPROVALS:
        return "approved" if answer.approved else "denied"
    return "accept" if answer.approved else "decline"


def make_driver(ctx: DriverContext) -> AgentDriver:
    """The registry's entry point."""
    return CodexDriver(ctx)
