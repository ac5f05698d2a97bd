"""`commhub connect --client claude|codex|gemini --alias NAME`: a token bound to one alias, the config to paste,
and the line that starts the agent so that CommHub can wake it.

The token is created over REST with the caller's user token; its secret is printed once, in the line that puts
it into the agent's environment as COMMHUB_AGENT_TOKEN (COMMHUB_TOKEN is the person's own token, for the CLI:
the two never share a name), and never stored by the CLI. The configs name the variable, not the secret.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from typing import Any

from .common import EXIT_OK, connect, json_flag, network_flag, print_json, reports_errors, server_flags
from .network import resolve_network

CLIENTS = ("claude", "codex", "gemini")
AGENT_TOKEN_ENV = "COMMHUB_AGENT_TOKEN"


def agent_rule(alias: str, client: str) -> str:
    """The one-line rule to paste into CLAUDE.md / AGENTS.md / GEMINI.md."""
    agent = {"claude": "claude-code", "codex": "codex", "gemini": "gemini-cli"}[client]
    return (f'You are "{alias}" on CommHub (MCP server "commhub"): first call report_status {{"alias": "{alias}", '
            f'"status": "idle", "agent": "{agent}"}}, then get_inbox; answer every task with send_reply '
            f'{{"task_id": …, "status": "done"|"failed", "content": …}}, and read each tool error: it says what to '
            f"do next.")


def client_config(client: str, mcp_url: str, secret: str) -> dict[str, Any]:
    """Where the config goes, what to paste, the agent's environment, and any command to run, for one client."""
    env = {AGENT_TOKEN_ENV: secret}
    if client == "claude":
        entry = {"mcpServers": {"commhub": {"type": "http", "url": mcp_url,
                                            "headers": {"Authorization": f"Bearer ${{{AGENT_TOKEN_ENV}}}"}}}}
        return {"file": ".mcp.json (in the project; merge into mcpServers if the file exists)",
                "format": "json", "content": entry, "env": env,
                "command": f'claude mcp add --transport http commhub {mcp_url} --header "Authorization: Bearer '
                           f'{secret}"'}
    if client == "codex":
        toml = f'[mcp_servers.commhub]\nurl = "{mcp_url}"\nbearer_token_env_var = "{AGENT_TOKEN_ENV}"\n'
        return {"file": "~/.codex/config.toml", "format": "toml", "content": toml, "env": env}
    entry = {"mcpServers": {"commhub": {"httpUrl": mcp_url,
                                        "headers": {"Authorization": f"Bearer ${AGENT_TOKEN_ENV}"}}}}
    return {"file": ".gemini/settings.json (in the project) or ~/.gemini/settings.json", "format": "json",
            "content": entry, "env": env}


def launch(client: str, alias: str, base: str) -> dict[str, str]:
    """The line that starts the agent so that CommHub wakes it, and what stands in its way."""
    if client == "claude":
        return {"command": "claude --dangerously-load-development-channels server:commhub",
                "note": "CommHub's events then reach the running session as <channel> messages. Claude Code "
                        "v2.1.80+ asks you to approve the project's .mcp.json server once (kept in ~/.claude.json), "
                        "and channels need a claude.ai login, Anthropic's channels feature switched on for your "
                        "account, and on Team/Enterprise plans channelsEnabled by an admin. Without them Claude "
                        "still has every tool but is not woken: use "
                        f"`commhub run claude --alias {alias} --url {base}` instead."}
    return {"command": f"commhub run {client} --alias {alias} --url {base}",
            "note": f"{client} has no way to be woken inside a running session: `commhub run` starts it headless "
                    f"and turns every task for {alias} into a turn (it writes {client}'s MCP config itself, with "
                    f"the token from {AGENT_TOKEN_ENV})." + (
                        " Gemini CLI reads no MCP server in a folder it does not trust (~/.gemini/trustedFolders"
                        ".json) and, run by hand headless, gives the model MCP tools only with --yolo."
                        if client == "gemini" else "")}


@reports_errors
def cmd_connect(args: argparse.Namespace) -> int:
    """Create an alias-bound network token and print the client's config with it."""
    with connect(args) as client:
        network_id = args.network or resolve_network(client)
        name = args.name or f"{args.client}-{args.alias}"
        token = client.request("POST", "/api/tokens", json={"name": name, "network_id": network_id,
                                                            "alias": args.alias})
        base = (args.hub_url or client.url).rstrip("/")
    mcp_url = f"{base}/mcp"
    config = client_config(args.client, mcp_url, token["token"])
    rule = agent_rule(args.alias, args.client)
    start = launch(args.client, args.alias, base)
    if args.json:
        print_json({"ok": True, "client": args.client, "alias": args.alias, "network_id": network_id,
                    "token_id": token["token_id"], "token": token["token"], "mcp_url": mcp_url,
                    "config": config, "launch": start, "rule": rule})
        return EXIT_OK
    content = config["content"]
    print(f"# {args.client}: paste into {config['file']}")
    print(json.dumps(content, indent=2) if config["format"] == "json" else content.rstrip())
    print(f"\n# the agent's token, in the shell (or profile) that starts {args.client}; {AGENT_TOKEN_ENV}, not "
          "COMMHUB_TOKEN (that one is yours, for the commhub CLI):")
    print(f"export {AGENT_TOKEN_ENV}={token['token']}")
    if "command" in config:
        print(f"\n# or, instead of the file and the variable, run:\n{config['command']}")
    print(f"\n# start it so that CommHub wakes it when work arrives:\n{start['command']}")
    print("\n".join(f"#   {line}" for line in textwrap.wrap(start["note"], 100)))
    print(f"\n# the agent rule (CLAUDE.md / AGENTS.md / GEMINI.md):\n{rule}")
    print(f"\n(token {token['token_id']} is bound to alias {args.alias} in {network_id}; its secret is shown "
          f"only this once. Revoke it with `commhub token revoke {token['token_id']} --url {base}`.)",
          file=sys.stderr)
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    """Add `connect`."""
    p = sub.add_parser("connect", parents=[server_flags(), json_flag(), network_flag()],
                       help="create a token for an agent and print its client's config",
                       description="Create a network token bound to one alias and print the configuration to paste "
                                   "into Claude Code, Codex or Gemini CLI, plus the agent rule. Needs a user token.")
    p.add_argument("--client", choices=CLIENTS, required=True, help="the agent's program")
    p.add_argument("--alias", required=True, help="the name the agent will be addressed by")
    p.add_argument("--name", help="a label for the token (default: CLIENT-ALIAS)")
    p.add_argument("--hub-url", help="the URL the agent reaches the hub at, if not --url (e.g. from another machine)")
    p.set_defaults(func=cmd_connect)
