"""Gemini CLI behind `commhub run gemini`: `gemini --acp` (the Agent Client Protocol, JSON-RPC over stdio).

Why ACP and not `gemini -p`: headless `-p` gives MCP tools to the model only with `--yolo` (or `trust: true` on
the server), so every other tool would run unasked, and it has no way to ask the runner anything; ACP is
Gemini's structured mode: explicit session ids (`session/new`, `session/load`), one `session/prompt` per turn
whose answer says how the turn stopped, `session/cancel`, and every permission question sent to the client
(`session/request_permission`), which the runner relays to a person.

What it runs: `gemini --acp --skip-trust` in the alias's workdir (`--skip-trust` trusts that folder for this
process only: the runner's operator chose it; nothing is written to `~/.gemini/trustedFolders.json`), then
arguments after `--`. CommHub goes to Gemini in `session/new`/`session/load` as the HTTP MCP server `commhub`
with an `Authorization` header: the token travels over the agent's stdin only, never on argv nor in a file, and
the user's own `~/.gemini` (login, settings) stays as it is. CommHub's own tools are allowed without a person
(the runner answers their permission question with "allow all server tools for this session"); any other
tool's question (a shell command, a file edit) goes to a person through the Relay.
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
SESSION_FILE = "gemini-session.json"
LOG_FILE = "gemini.log"
ACP_PROTOCOL_VERSION = 1
START_TIMEOUT_SECONDS = 90.0
HISTORY_SECONDS = 5.0
_TASK_LINE = re.compile(r"^task_id:\s*(\S+)\s*$", re.MULTILINE)
_OWN_TOOL_PREFIX = f"mcp_{SERVER_NAME}_"            # Gemini names MCP tools mcp_<server>_<tool>
_OWN_TOOL_TITLE = f"({SERVER_NAME} MCP Server)"
_RESET_UPDATES = ("tool_call", "tool_call_update", "user_message_chunk")


def gemini_binary(env: dict[str, str]) -> str:
    """The gemini executable: $COMMHUB_GEMINI_BIN, else `gemini` on the agent environment's PATH."""
    return env.get("COMMHUB_GEMINI_BIN") or shutil.which("gemini", path=env.get("PATH")) or "gemini"


class GeminiDriver:
    """`gemini --acp` for one alias (see the module's docstring)."""

    name = "gemini"

    def __init__(self, ctx: DriverContext):
        self.ctx = ctx
        self.rpc: RpcProcess | None = None
        self.session_id: str | None = None
        self.prompting = False

    @property
    def session_file(self) -> Path:
        """Where the alias's session id is kept between starts."""
        return self.ctx.state_dir / SESSION_FILE

    def argv(self) -> list[str]:
        """The command line (no secret on it)."""
        return [gemini_binary(self._env()), "--acp", "--skip-trust", *self.ctx.agent_args]

    def dry_run(self) -> list[str]:
        """The command line, what goes over stdin, and the file it keeps."""
        return [f"cd {shlex.quote(str(self.ctx.workdir))} && {shlex.join(self.argv())}",
                f"ACP session/new|session/load with mcpServers [{{type: http, name: {SERVER_NAME}, "
                f"url: {self._mcp_url()}, headers: Authorization: Bearer ${self.ctx.token_env}}}] over stdin",
                f"session id kept in {self.session_file} (0600); agent log {self.ctx.state_dir / LOG_FILE}"]

    def _mcp_url(self) -> str:
        return self.ctx.hub_url.rstrip("/") + "/mcp"

    def _env(self) -> dict[str, str]:
        # gemini.js relaunches itself as a child (for a larger heap) that would outlive a runner killed -9: only
        # the runner's direct child dies with it. Without the relaunch, the agent is that child.
        return {"GEMINI_CLI_NO_RELAUNCH": "1", **os.environ, **self.ctx.env}

    def _mcp_servers(self, env: dict[str, str]) -> list[dict[str, Any]]:
        token = env.get(self.ctx.token_env)
        if not token:
            raise AgentDied(f"${self.ctx.token_env} is not set: the agent has no CommHub token")
        return [{"type": "http", "name": SERVER_NAME, "url": self._mcp_url(),
                 "headers": [{"name": "Authorization", "value": f"Bearer {token}"}]}]

    def saved_session(self) -> str | None:
        """The session id saved by an earlier start, if any."""
        return read_saved(self.session_file, "session_id")

    async def start(self) -> None:
        """Launch `gemini --acp`, initialize, load the alias's session or create one."""
        private_dir(self.ctx.state_dir)
        env = self._env()
        servers = self._mcp_servers(env)
        self.rpc = RpcProcess("gemini --acp", self.argv(), cwd=self.ctx.workdir, env=env,
                              log_path=self.ctx.state_dir / LOG_FILE)
        await self.rpc.launch()
        rpc = self.rpc
        try:
            with trio.fail_after(START_TIMEOUT_SECONDS):
                await rpc.guarded(lambda: self._open_session(rpc, servers))
        except trio.TooSlowError:
            await self.close()
            raise AgentDied(f"gemini --acp did not open its session within {START_TIMEOUT_SECONDS:.0f} s") from None
        except BaseException:
            await self.close()  # no half-started agent left behind
            raise

    async def _open_session(self, rpc: RpcProcess, servers: list[dict[str, Any]]) -> None:
        await rpc.call("initialize", {"protocolVersion": ACP_PROTOCOL_VERSION,
                                      "clientCapabilities": {"fs": {"readTextFile": False, "writeTextFile": False},
                                                             "terminal": False}})
        cwd = str(self.ctx.workdir)
        saved = self.saved_session()
        if saved:
            try:
                await rpc.call("session/load", {"sessionId": saved, "cwd": cwd, "mcpServers": servers})
                self.session_id = saved
                await self._skip_history(rpc)
                return
            except RpcError:
                # The session is gone (another HOME, deleted), or Gemini 0.61 lost it: a session restarted in the
                # wall-clock minute it was created in gets its chat file reset before it is read (both names
                # are session-<minute>-<id>). A new session it is; each prompt carries what the turn needs.
                pass
        result = await rpc.call("session/new", {"cwd": cwd, "mcpServers": servers})
        session_id = result.get("sessionId")
        if not isinstance(session_id, str) or not session_id:
            raise AgentDied("gemini answered session/new without a session id")
        self.session_id = session_id
        write_private(self.session_file, json.dumps({"session_id": session_id, "alias": self.ctx.alias}))

    async def _skip_history(self, rpc: RpcProcess) -> None:
        """Read past the loaded session's history, which Gemini replays as updates after answering session/load.

        Its end is marked by the command list it sends next; a little wait bounds this if a version does not.
        """
        with trio.move_on_after(HISTORY_SECONDS):
            while True:
                message = await rpc.receive()
                if "id" in message and message.get("method"):
                    rpc.pending.append(message)
                    return
                update = (message.get("params") or {}).get("update") or {}
                if update.get("sessionUpdate") == "available_commands_update":
                    return

    async def run_turn(self, prompt: str, relay: Relay) -> TurnResult:
        """Send the prompt to the alias's session and follow it until Gemini says how the turn stopped."""
        rpc = self.rpc
        if rpc is None or rpc.process is None or self.session_id is None:
            raise AgentDied("gemini is not running")
        found = _TASK_LINE.search(prompt)
        task_id = found.group(1) if found else None
        # What came before this turn (a loaded session's history, command lists) is not this turn's.
        rpc.pending = [m for m in rpc.pending if "id" in m and m.get("method")]
        return await rpc.guarded(lambda: self._turn(rpc, prompt, relay, task_id))

    async def _turn(self, rpc: RpcProcess, prompt: str, relay: Relay, task_id: str | None) -> TurnResult:
        self.prompting = True  # before the request: a cancel right after it must not be dropped
        request_id = await rpc.request_nowait("session/prompt", {"sessionId": self.session_id,
                                                                 "prompt": [{"type": "text", "text": prompt}]})
        last = ""
        fresh = True  # the next text chunk starts a new message: the turn's last message is the newest one
        try:
            async with trio.open_nursery() as nursery:
                while True:
                    message = await rpc.receive()
                    method = message.get("method")
                    if "id" in message and method:
                        nursery.start_soon(self._agent_request, rpc, message, relay, task_id)
                        continue
                    if method == "session/update":
                        update = (message.get("params") or {}).get("update") or {}
                        kind = update.get("sessionUpdate")
                        if kind == "agent_message_chunk":
                            text = str((update.get("content") or {}).get("text") or "")
                            last = text if fresh else last + text
                            fresh = False
                        elif kind in _RESET_UPDATES:
                            fresh = True
                        continue
                    if message.get("id") == request_id and not method:
                        nursery.cancel_scope.cancel()  # permission questions still waiting are moot
                        if "error" in message:
                            error = (message.get("error") or {}).get("message") or "session/prompt failed"
                            return TurnResult(last_message=last, completed=False, error=str(error))
                        stop = str((message.get("result") or {}).get("stopReason") or "")
                        return TurnResult(last_message=last, completed=stop == "end_turn",
                                          error=None if stop == "end_turn" else stop or "no stop reason")
        finally:
            self.prompting = False
        raise AgentDied("gemini turn ended without an answer")  # not reached: the loop returns or raises

    async def _agent_request(self, rpc: RpcProcess, message: dict[str, Any], relay: Relay,
                             task_id: str | None) -> None:
        method = str(message.get("method"))
        params = message.get("params") or {}
        if method != "session/request_permission":  # fs/terminal requests: we declared neither capability
            await rpc.answer(message["id"], error={"code": -32601,
                                                   "message": f"commhub run does not handle {method}"})
            return
        options = [o for o in params.get("options") or [] if isinstance(o, dict)]
        call = params.get("toolCall") or {}
        if _is_own_tool(call):
            choice = _option(options, ("proceed_always_server",), ("allow_always", "allow_once"))
        else:
            try:
                answer = await relay.ask(_question(call), task_id=task_id)
            except Exception as exc:  # noqa: BLE001 - no person reachable: fail closed, the turn goes on
                answer = Answer(False, f"the runner could not ask a person: {exc}")
            choice = _choose(options, answer)
        if choice is None:
            await rpc.answer(message["id"], {"outcome": {"outcome": "cancelled"}})
        else:
            await rpc.answer(message["id"], {"outcome": {"outcome": "selected", "optionId": choice}})

    async def interrupt(self) -> None:
        """Cancel the running prompt (its answer then says `cancelled`)."""
        rpc = self.rpc
        if rpc is None or rpc.process is None or not self.session_id or not self.prompting:
            return
        await rpc.notify("session/cancel", {"sessionId": self.session_id})

    async def close(self) -> None:
        """Stop Gemini; the session id stays saved."""
        rpc, self.rpc = self.rpc, None
        if rpc is not None:
            await rpc.close()


def _is_own_tool(call: dict[str, Any]) -> bool:
    return str(call.get("toolCallId") or "").startswith(_OWN_TOOL_PREFIX) \
        and str(call.get("title") or "").endswith(_OWN_TOOL_TITLE)


def _question(call: dict[str, Any]) -> str:
    lines = [f"Gemini CLI asks to use a tool ({call.get('kind') or 'other'}): {call.get('title') or '?'}"]
    for block in call.get("content") or []:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "diff":
            lines.append(f"It would change {block.get('path')}.")
        elif block.get("type") == "content":
            text = (block.get("content") or {}).get("text")
            if text:
                lines.append(str(text))
    return "\n".join(lines) + "\nReply yes to allow, anything else to deny."


def _option(options: list[dict[str, Any]], ids: tuple[str, ...], kinds: tuple[str, ...]) -> str | None:
    for wanted in ids:
        if any(o.get("optionId") == wanted for o in options):
            return wanted
    for kind in kinds:
        for o in options:
            if o.get("kind") == kind:
                return str(o.get("optionId"))
    return None


def _choose(options: list[dict[str, Any]], answer: Answer) -> str | None:
    if answer.approved:  # once: the next such request asks the person again
        return _option(options, ("proceed_once",), ("allow_once",))
    return _option(options, ("cancel",), ("reject_once", "reject_always"))


def make_driver(ctx: DriverContext) -> AgentDriver:
    """The registry's entry point."""
    return GeminiDriver(ctx)
