"""`commhub run <codex|claude|gemini> --alias A`: keep one agent CLI at work for an alias (docs/runner.md).

This module is the command line and the driver registry: each agent is a module of this package
(`codex.py`, `claude.py`, `gemini.py`) imported only when it is run, with a `make_driver(ctx: DriverContext) ->
AgentDriver`. The loop (`loop.py`) owns the stream and the turns; the driver owns the agent's process.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

import trio

from ...client import DEFAULT_URL
from .driver import AgentDriver, DriverContext

AGENTS = ("codex", "claude", "gemini")
AGENT_TOKEN_ENV = "COMMHUB_AGENT_TOKEN"


def make_driver(name: str, ctx: DriverContext) -> AgentDriver:
    """The driver of agent `name`: `commhub_lib.cli.run.<name>.make_driver(ctx)`, imported lazily."""
    if name not in AGENTS:
        raise ValueError(f"unknown agent {name!r}; choose from {', '.join(AGENTS)}")
    module = importlib.import_module(f"{__name__}.{name}")
    return module.make_driver(ctx)


def options_parser() -> argparse.ArgumentParser:
    """The parser of everything before `--` (what follows `--` goes to the agent CLI untouched)."""
    p = argparse.ArgumentParser(
        prog="commhub run", usage="commhub run {codex,claude,gemini} --alias A [options] [-- agent args]",
        description="Hold the alias's stream with the agent's token and turn each arriving task, message, answer "
        "or reply into one turn of the agent, one at a time, in order. A task left open by its turn is reminded "
        "once, then its last message is posted as a progress reply and the task is flagged 'unanswered'. The "
        f"token is read from {AGENT_TOKEN_ENV} only (never a command-line flag). See docs/runner.md.")
    p.add_argument("agent", choices=AGENTS, help="the agent CLI to drive")
    p.add_argument("--alias", required=True, help="the alias the agent works as (its token must be bound to it or "
                   "have claimed it)")
    p.add_argument("--workdir", help="the agent's working directory (default: the current directory)")
    p.add_argument("--hub", "--url", dest="hub", help="the hub's URL (env COMMHUB_URL, default http://127.0.0.1:9200)")
    p.add_argument("--network-id", help="the network, when the token could reach several")
    p.add_argument("--interrupt-on", choices=("urgent",), help="interrupt the running turn when a task of this "
                   "priority arrives (it goes on after the urgent one)")
    p.add_argument("--state-dir", help="private state directory (default $XDG_STATE_HOME/commhub/run/<alias>, "
                   "i.e. ~/.local/state/commhub/run/<alias>)")
    p.add_argument("--from-now", action="store_true", help="on the first start for the alias, skip the tasks "
                   "already waiting for it (default: each task still open gets a turn)")
    p.add_argument("--dry-run", action="store_true", help="print what it would run and write, and exit")
    return p


def register(sub: argparse._SubParsersAction) -> None:
    """Add `run`. Its words are parsed by options_parser() in cmd_run: argparse cannot mix options, a positional
    and a `-- agent args` tail in one subparser."""
    inner = options_parser()
    p = sub.add_parser("run", help="keep an agent CLI (codex, claude, gemini) at work for an alias",
                       usage=inner.format_usage().removeprefix("usage: "),
                       description=inner.format_help().split("\n\n", 1)[-1],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("words", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_run)


def parse_words(words: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """(the runner's options, the agent's extra arguments after `--`); SystemExit on a usage error or --help."""
    if "--" in words:
        cut = words.index("--")
        words, extra = words[:cut], words[cut + 1:]
    else:
        extra = []
    return options_parser().parse_args(words), extra


def _say(text: str) -> None:
    print(f"commhub run: {text}", file=sys.stderr, flush=True)


def cmd_run(args: argparse.Namespace) -> int:
    """Run the loop until SIGTERM/SIGINT (exit 0) or a refusal the user must fix (exit 1)."""
    from .loop import Fatal, HubApi, Runner, RunOptions
    from .state import AlreadyRunning, RunnerState, default_state_dir

    try:
        args, extra = parse_words(list(args.words))
    except SystemExit as exc:
        return int(exc.code or 0)
    hub = (args.hub or os.environ.get("COMMHUB_URL") or DEFAULT_URL).rstrip("/")
    token = os.environ.get(AGENT_TOKEN_ENV, "")
    state_dir = Path(args.state_dir) if args.state_dir else default_state_dir(args.alias)
    workdir = Path(args.workdir or ".").resolve()
    ctx = DriverContext(alias=args.alias, hub_url=hub, token_env=AGENT_TOKEN_ENV, workdir=workdir,
                        state_dir=state_dir, agent_args=tuple(extra), env=dict(os.environ))
    try:
        driver = make_driver(args.agent, ctx)
    except (ImportError, AttributeError) as exc:
        _say(f"the {args.agent} driver is not available: {exc}")
        return 2
    if args.dry_run:
        print(f"# commhub run {args.agent} --alias {args.alias}")
        print(f"stream: GET {hub}/events/{args.alias}?holder=runner (Authorization: Bearer ${AGENT_TOKEN_ENV})")
        print(f"state:  {state_dir} (0700; runner.json 0600: cursor and events in flight)")
        print(f"workdir: {workdir}")
        for line in driver.dry_run():
            print(line)
        if not token:
            print(f"# note: {AGENT_TOKEN_ENV} is not set; the runner needs the agent's token there")
        return 0
    if not token:
        _say(f"set {AGENT_TOKEN_ENV} to the agent's network token (bound to {args.alias}); it is never read from "
             "the command line")
        return 2
    if not workdir.is_dir():
        _say(f"--workdir {workdir} is not a directory")
        return 2
    opts = RunOptions(agent=args.agent, alias=args.alias, hub_url=hub, token=token, state_dir=state_dir,
                      network_id=args.network_id, interrupt_on_urgent=args.interrupt_on == "urgent",
                      from_now=args.from_now)
    try:
        state = RunnerState.open(state_dir, args.alias, hub)
    except AlreadyRunning as exc:
        _say(str(exc))
        return 1
    _say(f"{args.agent} for {args.alias} at {hub}; state in {state_dir}; "
         f"{'resuming ' + str(len(state.in_flight)) + ' event(s) in flight; ' if state.in_flight else ''}"
         f"following from {'event ' + str(state.cursor) if state.cursor is not None else 'now'}")

    async def main() -> None:
        await Runner(opts, driver, state, HubApi(opts)).run()

    try:
        trio.run(main)
    except Fatal as exc:
        _say(str(exc))
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        state.close()
    return 0
