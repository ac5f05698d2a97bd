"""`commhub user …` and `commhub token …`: accounts and tokens, on the database file or through a server.

On the file (`--db`, default COMMHUB_DB or ./commhub.db) they bootstrap a box before anyone has
registered, and work beside a running server (SQLite WAL). They run the same service code as the REST
API; whoever can write the file is trusted as the system admin. With `--url`, the token commands and
`user list` go through the server instead (then a revoke also closes the token's open streams at once).
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .common import (
    EXIT_OK,
    connect,
    default_db,
    fail,
    json_flag,
    print_fields,
    print_json,
    reports_errors,
    server_flags,
    show_list,
)

if TYPE_CHECKING:
    from ..service.hub import Hub

# The service layer (argon2, the pydantic models) costs ~0.6 s to import: only the commands that use it
# pay for it, so `commhub send` and `commhub --help` start fast.

USER_COLUMNS = [("username", "user", 24), ("user_id", "id", None), ("role", "role", None),
                ("display_name", "name", 30), ("email", "email", 30), ("created_at", "created", None)]
TOKEN_COLUMNS = [("token_id", "id", None), ("name", "name", 24), ("network_id", "network", None),
                 ("alias", "alias", 24), ("created_at", "created", None), ("last_used_at", "last used", None),
                 ("expires_at", "expires", None), ("revoked_at", "revoked", None)]


class DatabaseUnavailable(Exception):
    """The database file is missing or cannot be opened."""


def db_flag() -> argparse.ArgumentParser:
    """A parent parser with --db."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--db", help="the database file (env COMMHUB_DB, default ./commhub.db)")
    return parent


@contextmanager
def open_hub(args: argparse.Namespace, *, create: bool = False) -> Iterator[Hub]:
    """A Hub on the database file: the same service layer as the server, without serving."""
    import apsw

    from ..config import Settings
    from ..db import Database
    from ..service.hub import Hub

    path = args.db or default_db()
    if not create and not Path(path).exists():
        raise DatabaseUnavailable(f"no database at {path}; create the first user with `commhub user create NAME "
                                  "--db PATH`, or give the right --db (or COMMHUB_DB)")
    try:
        db = Database(path)
    except (apsw.Error, RuntimeError) as exc:
        raise DatabaseUnavailable(f"cannot open the database {path}: {exc}") from exc
    try:
        yield Hub(settings=Settings(db=path), db=db)
    finally:
        # No final checkpoint here (Database.close() does one): a server may be writing to this file.
        db.con.close()


def file_errors(func: Any) -> Any:
    """reports_errors, plus a missing or unopenable database file (exit code 1)."""

    @reports_errors
    def wrapper(args: argparse.Namespace) -> int:
        from pydantic import ValidationError

        try:
            return func(args)
        except DatabaseUnavailable as exc:
            return fail(str(exc))
        except ValidationError as exc:
            return fail("; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors()))

    wrapper.__doc__ = func.__doc__
    return wrapper


def read_password(args: argparse.Namespace) -> str:
    """The new password: the first line of stdin when piped (or --password-stdin), else asked twice."""
    if args.password_stdin or not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise DatabaseUnavailable("the two passwords differ; nothing was changed")
    return first


# --- user -----------------------------------------------------------------------------------------------

@file_errors
def cmd_user_create(args: argparse.Namespace) -> int:
    """Create a user on the database file; the first one is the system admin (like register)."""
    import trio

    from ..models import RegisterRequest
    from ..service import accounts, operator

    body = RegisterRequest(username=args.username, password=read_password(args), email=args.email,
                           display_name=args.display_name)
    with open_hub(args, create=True) as hub:
        result = trio.run(accounts.register, hub, body, operator.OPERATOR_IP)
    if args.json:
        print_json(result)
        return EXIT_OK
    user = result["user"]
    print(f"created user {user['username']} ({user['user_id']}), role {user['role']}")
    print_fields({"login token": result["token"], "network token": result["network_token"],
                  "default network": result["network_id"]})
    print("(the tokens are shown once; keep them somewhere safe)", file=sys.stderr)
    return EXIT_OK


@file_errors
def cmd_user_list(args: argparse.Namespace) -> int:
    """List users (on the file; with --url, through the server, which needs the admin's token)."""
    from ..service import operator

    if args.url:
        with connect(args) as client:
            result = client.request("GET", "/api/users", params={"limit": args.limit, "offset": args.offset})
    else:
        with open_hub(args) as hub:
            result = operator.list_all_users(hub, args.limit, args.offset)
    return show_list(args, result, "users", USER_COLUMNS, "(no users yet: create one with `commhub user create NAME`)")


@file_errors
def cmd_user_set_password(args: argparse.Namespace) -> int:
    """Set a user's password on the database file; that user's login tokens are revoked."""
    import trio

    from ..service import operator

    password = read_password(args)
    if len(password) < 6:
        return fail("password: must be at least 6 characters")
    with open_hub(args) as hub:
        result = trio.run(operator.set_password, hub, args.username, password)
    if args.json:
        print_json(result)
    else:
        print(f"password of {args.username} changed; their login tokens are revoked (network tokens stay)")
    return EXIT_OK


# --- token ----------------------------------------------------------------------------------------------

@file_errors
def cmd_token_create(args: argparse.Namespace) -> int:
    """Create a network token (optionally bound to one alias); the secret is printed once."""
    from ..models import TokenCreateRequest
    from ..service import accounts, networks, operator

    if args.url:
        from .network import resolve_network

        with connect(args) as client:
            network_id = args.network or resolve_network(client)
            body = TokenCreateRequest(name=args.name, network_id=network_id, alias=args.alias,
                                      expires_in_seconds=args.expires_in)
            result = client.request("POST", "/api/tokens", json=body.model_dump(exclude_none=True))
    else:
        with open_hub(args) as hub:
            principal = operator.act_as(hub, args.user)
            network_id = networks.single_network(hub, principal, args.network)
            body = TokenCreateRequest(name=args.name, network_id=network_id, alias=args.alias,
                                      expires_in_seconds=args.expires_in)
            result = accounts.create_token(hub, principal, body, operator.OPERATOR_IP)
    if args.json:
        print_json(result)
    else:
        print_fields(result, [k for k in ("token", "token_id", "name", "network_id", "alias", "expires_at")
                              if k in result])
        print("(the token is shown once; keep it somewhere safe)", file=sys.stderr)
    return EXIT_OK


@file_errors
def cmd_token_list(args: argparse.Namespace) -> int:
    """List a user's network tokens (never the secrets)."""
    from ..service import accounts, operator

    if args.url:
        with connect(args) as client:
            result = client.request("GET", "/api/tokens")
    else:
        with open_hub(args) as hub:
            result = accounts.list_tokens(hub, operator.act_as(hub, args.user))
    return show_list(args, result, "tokens", TOKEN_COLUMNS)


@file_errors
def cmd_token_revoke(args: argparse.Namespace) -> int:
    """Revoke a network token."""
    from ..service import accounts, operator

    if args.url:
        with connect(args) as client:
            result = client.request("DELETE", f"/api/tokens/{args.token_id}")
    else:
        with open_hub(args) as hub:
            result = accounts.revoke_token(hub, operator.act_as(hub, None), args.token_id, operator.OPERATOR_IP)
    if args.json:
        print_json(result)
    else:
        print(f"revoked {args.token_id}")
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `user` and `token` groups."""
    db, out, srv = db_flag(), json_flag(), server_flags()
    password = argparse.ArgumentParser(add_help=False)
    password.add_argument("--password-stdin", action="store_true",
                          help="read the password from the first line of stdin (the default when stdin is not a "
                               "terminal; otherwise it is asked twice)")

    users = sub.add_parser("user", help="create and list users, reset passwords (on the database file)",
                           description="Users, on the database file (--db). The first user created is the "
                                       "system admin, with a default network and a network token.")
    actions = users.add_subparsers(dest="user_action", required=True, metavar="ACTION")
    p = actions.add_parser("create", parents=[db, out, password], help="create a user (the first is the admin)",
                           description="Create a user on the database file, exactly as registering does.")
    p.add_argument("username")
    p.add_argument("--email")
    p.add_argument("--display-name")
    p.set_defaults(func=cmd_user_create)
    p = actions.add_parser("list", parents=[db, out, srv], help="list users",
                           description="List users from the database file, or with --url from the server.")
    p.add_argument("--limit", type=int, default=500)
    p.add_argument("--offset", type=int, default=0)
    p.set_defaults(func=cmd_user_list)
    p = actions.add_parser("set-password", parents=[db, out, password], help="set a user's password",
                           description="Set a user's password on the database file (no old password needed); "
                                       "the user's login tokens are revoked.")
    p.add_argument("username")
    p.set_defaults(func=cmd_user_set_password)

    tokens = sub.add_parser("token", help="create, list and revoke network tokens for agents",
                            description="Network tokens (ntok_) for agents: on the database file (--db, acting as "
                                        "--user or the system admin), or with --url through the server.")
    actions = tokens.add_subparsers(dest="token_action", required=True, metavar="ACTION")
    who = argparse.ArgumentParser(add_help=False)
    who.add_argument("--user", help="on the database file: act as this user (default: the system admin)")
    p = actions.add_parser("create", parents=[db, out, srv, who], help="create a network token",
                           description="Create a network token; the secret is printed once.")
    p.add_argument("--name", default="agent", help="a label for the token (default: agent)")
    p.add_argument("--network", metavar="ID", help="network id (default: the user's default network)")
    p.add_argument("--alias", help="bind the token to this one agent alias")
    p.add_argument("--expires-in", type=int, metavar="SECONDS", help="the token stops working after this long")
    p.set_defaults(func=cmd_token_create)
    p = actions.add_parser("list", parents=[db, out, srv, who], help="list network tokens (no secrets)",
                           description="List the network tokens of a user (never their secrets).")
    p.set_defaults(func=cmd_token_list)
    p = actions.add_parser("revoke", parents=[db, out, srv], help="revoke a network token",
                           description="Revoke a network token. On the file the server refuses it from its next "
                                       "request on (tokens are looked up per request); streams it already has "
                                       "open stay open until they end: use --url to close them at once.")
    p.add_argument("token_id")
    p.set_defaults(func=cmd_token_revoke)
