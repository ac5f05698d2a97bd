"""Claude Code behind `commhub run claude`: one headless `claude -p` process per turn, one session per alias.

Each turn runs `claude -p --output-format stream-json --verbose` with the prompt on stdin (never on the command
line), `--session-id <uuid>` the first time and `--resume <uuid>` after that, so every turn of the alias — and a
turn resumed after a crash — continues the same conversation. The session id is kept in
`<state dir>/claude-session.json`.

CommHub is given with `--mcp-config <state dir>/claude-mcp.json` (0600) whose Authorization header is
`Bearer ${COMMHUB_AGENT_TOKEN}`: Claude Code expands environment variables in MCP server entries, so the token
itself is in no file and on no command line. CommHub's tools are pre-allowed (`--allowedTools mcp__commhub`);
any other tool that needs permission goes to `--permission-prompt-tool mcp__commhub__permission_prompt`, which
asks a person on the hub and waits. Claude Code 2.1 gives each MCP HTTP request 60 s by default, so the config
entry sets `"timeout"` (ms; it wins over `MCP_TOOL_TIMEOUT`, which is also set unless the user did) far above
the hub's `approval_wait_seconds`.

The binary is `claude` on PATH, or `$COMMHUB_CLAUDE_BIN`.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import uuid
from pathlib import Path
from typing import Any

import trio

from ..common import write_private
from .driver import AgentDied, DriverContext, Relay, TurnResult
from .proc import AgentProcess, private_dir, spawn

SERVER_NAME = "commhub"
PERMISSION_TOOL = f"mcp__{SERVER_NAME}__permission_prompt"
MCP_FILE = "claude-mcp.json"
SESSION_FILE = "claude-session.json"
BIN_ENV = "COMMHUB_CLAUDE_BIN"
TOOL_TIMEOUT_MS = 3_600_000  # 1 h: above any approval_wait_seconds a hub is likely to run with (default 600 s)
STDERR_KEPT = 4000
INTERRUPT_GRACE_SECONDS = 5.0


def make_driver(ctx: DriverContext) -> ClaudeDriver:
    """The registry's entry point."""
    return ClaudeDriver(ctx)


def mcp_config(ctx: DriverContext) -> dict[str, Any]:
    """The `--mcp-config` document: CommHub over Streamable HTTP, the token by environment expansion."""
    return {"mcpServers": {SERVER_NAME: {
        "type": "http", "url": ctx.hub_url.rstrip("/") + "/mcp",
        "headers": {"Authorization": "Bearer ${" + ctx.token_env + "}"},
        # Per HTTP request and per tool call, in ms; it overrides MCP_TOOL_TIMEOUT, whose default is 60 s per
        # request: a permission prompt waits for a person far longer.
        "timeout": TOOL_TIMEOUT_MS}}}


class ClaudeDriver:
    """Runs each turn as one `claude -p` process in the alias's session."""

    name = "claude"

    def __init__(self, ctx: DriverContext):
        self.ctx = ctx
        self.binary = ctx.env.get(BIN_ENV) or shutil.which("claude", path=ctx.env.get("PATH")) or "claude"
        self.session_id = ""
        self.session_created = False
        self.proc: AgentProcess | None = None
        self.interrupted = False

    # -- files ------------------------------------------------------------------------------------------------

    @property
    def mcp_path(self) -> Path:
        """Where the MCP config is written."""
        return self.ctx.state_dir / MCP_FILE

    def _load_session(self) -> None:
        path = self.ctx.state_dir / SESSION_FILE
        if path.exists():
            saved = json.loads(path.read_text(encoding="utf-8"))
            self.session_id = str(saved.get("session_id") or "")
            self.session_created = bool(saved.get("created"))
        if not self.session_id:
            self._new_session()

    def _new_session(self) -> None:
        self.session_id = str(uuid.uuid4())
        self.session_created = False
        self._save_session()

    def _save_session(self) -> None:
        write_private(self.ctx.state_dir / SESSION_FILE,
                      json.dumps({"session_id": self.session_id, "created": self.session_created,
                                  "workdir": str(self.ctx.workdir)}) + "\n")

    # -- the command ------------------------------------------------------------------------------------------

    def command(self) -> list[str]:
        """The command line of the next turn (the prompt goes on stdin)."""
        session = ["--resume", self.session_id] if self.session_created else ["--session-id", self.session_id]
        return [self.binary, "-p", "--output-format", "stream-json", "--verbose", *session,
                "--mcp-config", str(self.mcp_path), "--allowedTools", f"mcp__{SERVER_NAME}",
                "--permission-prompt-tool", PERMISSION_TOOL, *self.ctx.agent_args]

    def environment(self) -> dict[str, str]:
        """The agent's environment: the runner's (token included), a long MCP tool timeout unless set."""
        env = dict(self.ctx.env)
        env.setdefault("MCP_TOOL_TIMEOUT", str(TOOL_TIMEOUT_MS))
        return env

    def dry_run(self) -> list[str]:
        """The files and the command line, no secrets (the header names the variable, not its value)."""
        if not self.session_id:
            path = self.ctx.state_dir / SESSION_FILE
            known = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
            self.session_id = str(known.get("session_id") or "<new uuid on first start>")
            self.session_created = bool(known.get("created"))
        return [f"write {self.mcp_path} (0600):",
                "  " + json.dumps(mcp_config(self.ctx)),
                f"per turn (prompt on stdin, cwd {self.ctx.workdir}, MCP_TOOL_TIMEOUT="
                f"{self.environment().get('MCP_TOOL_TIMEOUT')}):",
                "  " + subprocess.list2cmdline(self.command())]

    # -- the driver contract ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Write the MCP config (0600) and load (or create) the alias's session id."""
        private_dir(self.ctx.state_dir)
        write_private(self.mcp_path, json.dumps(mcp_config(self.ctx), indent=2) + "\n")
        self._load_session()

    async def run_turn(self, prompt: str, relay: Relay) -> TurnResult:
        """One `claude -p` in the session; AgentDied if it ends without a result (killed, crashed)."""
        for _ in range(3):  # a session id Claude already has, or no longer has, is fixed and tried again
            rc, result, last_text, errors = await self._one(prompt)
            if result is not None:
                if result.get("is_error") and "No conversation found" in errors:
                    self._new_session()
                    continue
                return TurnResult(last_message=str(result.get("result") or last_text or ""),
                                  completed=result.get("subtype") == "success" and not result.get("is_error"),
                                  error=None if not result.get("is_error") else str(result.get("subtype")))
            if self.interrupted:
                return TurnResult(last_message=last_text, completed=False, error="interrupted")
            if "is already in use" in errors:
                self.session_created = True
                self._save_session()
                continue
            if "No conversation found" in errors:
                self._new_session()
                continue
            raise AgentDied(f"claude exited {rc} without a result: {errors.strip()[-300:]}")
        raise AgentDied(f"claude could not open session {self.session_id}")

    async def _one(self, prompt: str) -> tuple[int, dict[str, Any] | None, str, str]:
        """Run the process once: (exit code, the `result` message or None, the last assistant text, stderr tail)."""
        self.interrupted = False
        try:
            # Forked from the trio thread (proc.spawn), so the agent dies with the runner and only with it.
            proc = spawn(self.command(), cwd=self.ctx.workdir, env=self.environment())
        except OSError as exc:
            raise AgentDied(f"cannot start {self.binary}: {exc}") from exc
        self.proc = proc
        result: dict[str, Any] | None = None
        last_text = ""
        errors = bytearray()

        async def feed() -> None:
            assert proc.stdin is not None
            try:
                await proc.stdin.send_all(prompt.encode("utf-8"))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            finally:
                await proc.stdin.aclose()

        async def drain() -> None:
            assert proc.stderr is not None
            async for chunk in proc.stderr:
                errors.extend(chunk)
                del errors[:-STDERR_KEPT]

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(feed)
                nursery.start_soon(drain)
                assert proc.stdout is not None
                buffer = b""
                async for chunk in proc.stdout:
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    for line in lines:
                        message = _json_line(line)
                        if message is None:
                            continue
                        kind = message.get("type")
                        if kind == "system" and message.get("subtype") == "init":
                            self._started(str(message.get("session_id") or ""))
                        elif kind == "assistant":
                            text = _assistant_text(message)
                            if text:
                                last_text = text
                        elif kind == "result":
                            result = message
                rc = await proc.wait()
        finally:
            if proc.returncode is None:  # cancelled (the runner stops): the turn's process goes with it
                with trio.CancelScope(shield=True):
                    await _stop(proc)
            self.proc = None
        return rc, result, last_text, errors.decode("utf-8", errors="replace")

    def _started(self, session_id: str) -> None:
        if session_id and session_id != self.session_id:
            self.session_id = session_id
        if not self.session_created:
            self.session_created = True
            self._save_session()

    async def interrupt(self) -> None:
        """End the running turn (SIGINT, then SIGKILL after a grace period)."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        self.interrupted = True
        proc.send_signal(signal.SIGINT)

        async def later() -> None:
            await trio.sleep(INTERRUPT_GRACE_SECONDS)
            if proc.returncode is None:
                proc.kill()

        trio.lowlevel.spawn_system_task(later)

    async def close(self) -> None:
        """Stop a turn still running (the session id stays saved for the next start)."""
        if self.proc is not None and self.proc.returncode is None:
            await _stop(self.proc)


async def _stop(proc: AgentProcess) -> None:
    proc.terminate()
    with trio.move_on_after(INTERRUPT_GRACE_SECONDS):
        await proc.wait()
        return
    proc.kill()
    await proc.wait()


def _json_line(line: bytes) -> dict[str, Any] | None:
    try:
        message = json.loads(line)
    except ValueError:
        return None
    return message if isinstance(message, dict) else None


def _assistant_text(message: dict[str, Any]) -> str:
    content = (message.get("message") or {}).get("content") or []
    return "\n".join(str(b.get("text") or "") for b in content if isinstance(b, dict) and b.get("type") == "text")


__all__ = ["ClaudeDriver", "make_driver", "mcp_config"]
