"""`commhub connect --client claude|codex|gemini --alias NAME`: a token bound to one alias, and the config to paste.

The token is created over REST with the caller's user token; its secret is printed once, inside the
client's configuration, and never stored by the CLI.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .common import EXIT_OK, connect, json_flag, network_flag, print_json, reports_errors, server_flags
from .network import resolve_network

CLIENTS = ("claude", "codex", "gemini")


def agent_rule(alias: str, client: str) -> str:
    """The one-line rule to paste into CLAUDE.md / AGENTS.md / GEMINI.md."""
    agent = {"claude": "claude-code", "codex": "codex", "gemini": "gemini-cli"}[client]
    return (f'You are "{alias}" on CommHub (MCP server "commhub"): first call report_status {{"alias": "{alias}", '
            f'"status": "idle", "agent": "{agent}"}}, then get_inbox; answer every task with send_reply '
            f'{{"task_id": …, "status": "done"|"failed", "content": …}}, and read each tool error: it says what to '
            f"do next.")


def client_config(client: str, mcp_url: str, secret: str) -> dict[str, Any]:
    """Where the config goes, what to paste, and any command to run, for one client."""
    if client == "claude":
        entry = {"mcpServers": {"commhub": {"type": "http", "url": mcp_url,
                                            "headers": {"Authorization": f"Bearer {secret}"}}}}
        return {"file": ".mcp.json (in the project; merge into mcpServers if the file exists)",
                "format": "json", "content": entry,
                "command": f'claude mcp add --transport http commhub {mcp_url} --header "Authorization: Bearer '
                           f'{secret}"'}
    if client == "codex":
        toml = f'[mcp_servers.commhub]\nurl = "{mcp_url}"\nbearer_token_env_var = "COMMHUB_TOKEN"\n'
        return {"file": "~/.codex/config.toml", "format": "toml", "content": toml,
                "env": {"COMMHUB_TOKEN": secret},
                "command": f"export COMMHUB_TOKEN={secret}   # in the shell (or profile) that starts codex"}
    entry = {"mcpServers": {"commhub": {"httpUrl": mcp_url, "headers": {"Authorization": f"Bearer {secret}"}}}}
    return {"file": ".gemini/settings.json (in the project) or ~/.gemini/settings.json", "format": "json",
            "content": entry}


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
    if args.json:
        print_json({"ok": True, "client": args.client, "alias": args.alias, "network_id": network_id,
                    "token_id": token["token_id"], "token": token["token"], "mcp_url": mcp_url,
                    "config": config, "rule": rule})
        return EXIT_OK
    content = config["content"]
    print(f"# {args.client}: paste into {config['file']}")
    print(json.dumps(content, indent=2) if config["format"] == "json" else content.rstrip())
    if "command" in config:
        print(f"\n# or run:\n{config['command']}")
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
