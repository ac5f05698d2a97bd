"""`commhub network|member|invite …`: networks, their members and invite codes, through a running server."""

from __future__ import annotations

import argparse
from typing import Any

from ..client import ClientError, HubClient
from .common import (
    EXIT_OK,
    add_group,
    connect,
    json_flag,
    network_flag,
    print_fields,
    print_json,
    reports_errors,
    server_flags,
    show_list,
)

NETWORK_COLUMNS = [("network_id", "id", None), ("network_name", "name", 30), ("member_role", "role", None),
                   ("visibility", "visibility", None), ("created_at", "created", None)]
MEMBER_COLUMNS = [("username", "user", 24), ("user_id", "id", None), ("role", "role", None),
                  ("joined_at", "joined", None)]
INVITE_COLUMNS = [("invite_id", "id", None), ("role", "role", None), ("usable", "usable", None), ("uses", "uses", None),
                  ("max_uses", "max", None), ("expires_at", "expires", None), ("created_at", "created", None)]


def resolve_network(client: HubClient) -> str:
    """The network a command means when none is given: as the server picks (the oldest owned, else oldest)."""
    rows = client.request("GET", "/api/networks")["networks"]
    if not rows:
        raise ClientError(0, "no_network", "you belong to no network; create one with `commhub network create`")
    owned = [r for r in rows if r.get("member_role") == "owner"]
    return (owned or rows)[0]["network_id"]


def resolve_member(client: HubClient, network_id: str, who: str) -> str:
    """A member's user_id from a username or a user_id."""
    members = client.request("GET", f"/api/networks/{network_id}/members")["members"]
    for row in members:
        if who in (row["user_id"], row["username"]):
            return row["user_id"]
    raise ClientError(404, "member_not_found", f"'{who}' is not a member of network {network_id}; list them with "
                                               f"`commhub member list --network {network_id}`")


def _show(args: argparse.Namespace, result: dict[str, Any], text: str | None = None) -> int:
    if args.json:
        print_json(result)
    elif text is not None:
        print(text)
    else:
        print_fields({k: v for k, v in result.items() if k != "ok"})
    return EXIT_OK


# --- network --------------------------------------------------------------------------------------------

@reports_errors
def cmd_network_list(args: argparse.Namespace) -> int:
    """Networks the caller belongs to."""
    with connect(args) as client:
        result = client.request("GET", "/api/networks")
    return show_list(args, result, "networks", NETWORK_COLUMNS)


@reports_errors
def cmd_network_create(args: argparse.Namespace) -> int:
    """Create a network owned by the caller."""
    with connect(args) as client:
        result = client.request("POST", "/api/networks", json={"name": args.name, "description": args.description})
    return _show(args, result)


@reports_errors
def cmd_network_show(args: argparse.Namespace) -> int:
    """One network with the caller's role and its member count."""
    with connect(args) as client:
        network_id = args.network_id or resolve_network(client)
        result = client.request("GET", f"/api/networks/{network_id}")
    if args.json:
        print_json(result)
    else:
        print_fields(result["network"])
    return EXIT_OK


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


@reports_errors
def cmd_network_usage(args: argparse.Namespace) -> int:
    """What a network keeps against its storage quota (owner/admin, or the system admin)."""
    with connect(args) as client:
        network_id = args.network_id or resolve_network(client)
        result = client.request("GET", f"/api/networks/{network_id}/usage")
    if args.json:
        print_json(result)
        return EXIT_OK
    limit = result["max_network_bytes"]
    print(f"network {network_id}: {_size(result['bytes'])} of "
          + (f"{_size(limit)} ({result['percent']} %)" if limit else "no limit"))
    print(f"  texts  {_size(result['text_bytes'])} (inbox items, tasks, completions, task events)")
    print(f"  events {_size(result['event_bytes'])} (SSE event log)")
    print(f"  aliases {result['aliases']}, tasks {result['tasks']}; send rate per token "
          + (f"{_size(result['send_bytes_per_minute'])}/min" if result["send_bytes_per_minute"] else "unlimited"))
    return EXIT_OK


@reports_errors
def cmd_network_delete(args: argparse.Namespace) -> int:
    """Delete a network and everything in it (owner only)."""
    with connect(args) as client:
        result = client.request("DELETE", f"/api/networks/{args.network_id}")
    return _show(args, result, f"deleted network {args.network_id}")


@reports_errors
def cmd_network_join(args: argparse.Namespace) -> int:
    """Join a network with an invite code."""
    with connect(args) as client:
        result = client.request("POST", "/api/networks/join", json={"invite_code": args.invite_code})
    return _show(args, result, f"joined {result['network_name']} ({result['network_id']}) as {result['role']}")


# --- member ---------------------------------------------------------------------------------------------

@reports_errors
def cmd_member_list(args: argparse.Namespace) -> int:
    """Members of a network."""
    with connect(args) as client:
        network_id = args.network or resolve_network(client)
        result = client.request("GET", f"/api/networks/{network_id}/members")
    return show_list(args, result, "members", MEMBER_COLUMNS)


@reports_errors
def cmd_member_remove(args: argparse.Namespace) -> int:
    """Remove a member from a network (owner/admin)."""
    with connect(args) as client:
        network_id = args.network or resolve_network(client)
        user_id = resolve_member(client, network_id, args.user)
        result = client.request("DELETE", f"/api/networks/{network_id}/members/{user_id}")
    return _show(args, result, f"removed {args.user} from {network_id}")


@reports_errors
def cmd_member_role(args: argparse.Namespace) -> int:
    """Change a member's role (owner)."""
    with connect(args) as client:
        network_id = args.network or resolve_network(client)
        user_id = resolve_member(client, network_id, args.user)
        result = client.request("PUT", f"/api/networks/{network_id}/members/{user_id}", json={"role": args.role})
    return _show(args, result, f"{args.user} is now {args.role} in {network_id}")


# --- invite ---------------------------------------------------------------------------------------------

@reports_errors
def cmd_invite_create(args: argparse.Namespace) -> int:
    """Create an invite code (owner/admin); the code is printed once."""
    body: dict[str, Any] = {"role": args.role, "max_uses": args.max_uses}
    if args.expires_in:
        body["expires_in_seconds"] = args.expires_in
    with connect(args) as client:
        network_id = args.network or resolve_network(client)
        result = client.request("POST", f"/api/networks/{network_id}/invite", json=body)
    return _show(args, result)


@reports_errors
def cmd_invite_list(args: argparse.Namespace) -> int:
    """Invites of a network (without usable codes)."""
    with connect(args) as client:
        network_id = args.network or resolve_network(client)
        result = client.request("GET", f"/api/networks/{network_id}/invites")
    return show_list(args, result, "invites", INVITE_COLUMNS)


@reports_errors
def cmd_invite_revoke(args: argparse.Namespace) -> int:
    """Revoke an invite so its code no longer works."""
    with connect(args) as client:
        network_id = args.network or resolve_network(client)
        result = client.request("DELETE", f"/api/networks/{network_id}/invites/{args.invite_id}")
    return _show(args, result, f"revoked invite {args.invite_id}")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `network`, `member` and `invite` groups."""
    common = [server_flags(), json_flag()]
    net = [*common, network_flag()]

    actions = add_group(sub, "network", "networks you belong to")
    p = actions.add_parser("list", parents=common, help="networks you belong to")
    p.set_defaults(func=cmd_network_list)
    p = actions.add_parser("create", parents=common, help="create a network you own")
    p.add_argument("name")
    p.add_argument("--description", default="")
    p.set_defaults(func=cmd_network_create)
    p = actions.add_parser("show", parents=common, help="one network (default: your default network)")
    p.add_argument("network_id", nargs="?")
    p.set_defaults(func=cmd_network_show)
    p = actions.add_parser("usage", parents=common, help="bytes a network keeps against its storage quota "
                                                         "(owner/admin; default: your default network)")
    p.add_argument("network_id", nargs="?")
    p.set_defaults(func=cmd_network_usage)
    p = actions.add_parser("delete", parents=common, help="delete a network (owner; refused while agents are "
                                                          "online)")
    p.add_argument("network_id")
    p.set_defaults(func=cmd_network_delete)
    p = actions.add_parser("join", parents=common, help="join a network with an invite code")
    p.add_argument("invite_code")
    p.set_defaults(func=cmd_network_join)

    actions = add_group(sub, "member", "members of a network")
    p = actions.add_parser("list", parents=net, help="members of a network")
    p.set_defaults(func=cmd_member_list)
    p = actions.add_parser("remove", parents=net, help="remove a member (owner/admin)")
    p.add_argument("user", help="username or user id")
    p.set_defaults(func=cmd_member_remove)
    p = actions.add_parser("role", parents=net, help="change a member's role (owner)")
    p.add_argument("user", help="username or user id")
    p.add_argument("role", choices=("member", "admin"))
    p.set_defaults(func=cmd_member_role)

    actions = add_group(sub, "invite", "invite codes of a network")
    p = actions.add_parser("create", parents=net, help="create an invite code (owner/admin)")
    p.add_argument("--role", choices=("member", "admin"), default="member")
    p.add_argument("--max-uses", type=int, default=1)
    p.add_argument("--expires-in", type=int, metavar="SECONDS", help="the code expires after this many seconds")
    p.set_defaults(func=cmd_invite_create)
    p = actions.add_parser("list", parents=net, help="invites of a network (no usable codes)")
    p.set_defaults(func=cmd_invite_list)
    p = actions.add_parser("revoke", parents=net, help="revoke an invite")
    p.add_argument("invite_id")
    p.set_defaults(func=cmd_invite_revoke)
