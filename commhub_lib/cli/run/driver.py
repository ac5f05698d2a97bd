"""What `commhub run` asks of an agent CLI: the contract between the runner's loop and each agent's driver.

The loop (`loop.py`) owns the alias's stream, the cursor, the order of turns, reminders and flags. A driver owns
one agent process family (`codex app-server`, `claude -p`, `gemini -p`) and knows only how to start it, resume
its thread or session, run one turn from a prompt, and relay the agent's approval requests through `Relay`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


class AgentDied(Exception):
    """The agent's process ended or broke its protocol mid-turn; the loop restarts it with backoff and resumes."""


@dataclass(frozen=True)
class DriverContext:
    """Everything a driver needs to launch its agent for one alias."""

    alias: str
    hub_url: str                 # e.g. http://127.0.0.1:9200 (the MCP endpoint is hub_url + "/mcp")
    token_env: str               # name of the environment variable holding the agent's token (COMMHUB_AGENT_TOKEN)
    workdir: Path                # the agent's working directory
    state_dir: Path              # private (0700) directory for this alias: MCP config files, thread/session ids
    agent_args: tuple[str, ...] = ()   # extra arguments after `--` on the command line
    env: dict[str, str] = field(default_factory=dict)  # environment for the agent process (token included)


@dataclass(frozen=True)
class Answer:
    """A person's answer to an approval request relayed by the runner."""

    approved: bool
    text: str


class Relay(Protocol):
    """The runner's way to ask a person (a `question` on the task, or to the alias's owner) and wait."""

    async def ask(self, question: str, *, task_id: str | None) -> Answer:
        """Post the question, wait for the person's answer and return it."""
        ...


@dataclass(frozen=True)
class TurnResult:
    """How a turn ended: the agent's last message (posted as progress if the task is left open)."""

    last_message: str
    completed: bool              # the agent said the turn completed (not interrupted, not failed)
    error: str | None = None


class AgentDriver(Protocol):
    """One agent CLI behind `commhub run`."""

    name: str

    def dry_run(self) -> list[str]:
        """The command lines and files it would run and write, for `--dry-run` (no secrets)."""
        ...

    async def start(self) -> None:
        """Write the agent's MCP config (0600) and launch or prepare the agent, resuming its thread/session."""
        ...

    async def run_turn(self, prompt: str, relay: Relay) -> TurnResult:
        """Run one turn in the alias's thread/session and return when it ends; raise AgentDied if the agent died."""
        ...

    async def interrupt(self) -> None:
        """Cut the current turn short (for `--interrupt-on urgent`)."""
        ...

    async def close(self) -> None:
        """Stop the agent process (the thread/session id stays saved for the next start)."""
        ...
