"""`commhub user|token …` on the database file: bootstrap a fresh box, and work beside a running server."""

from __future__ import annotations

import argparse
import io
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import httpx
import pytest
from cli_support import cli_env, run_cli, run_cli_sync
from conftest import own_server

from commhub_lib.cli import build_parser, main


@pytest.mark.subprocess
async def test_bootstrap_a_fresh_database_then_serve_it(tmp_path: Path) -> None:
    db = str(tmp_path / "boot.db")
    first = await run_cli("user", "create", "root", "--db", db, "--json", "--email", "r@example.com",
                          stdin="rootpass1\n")
    assert first.code == 0, first.err
    admin = first.json()
    assert admin["user"]["role"] == "admin" and admin["token"].startswith("utok_")
    assert admin["network_token"].startswith("ntok_") and admin["network_id"].startswith("net_")
    second = await run_cli("user", "create", "alice", "--db", db, "--json", stdin="alicepass\n")
    assert second.code == 0, second.err and second.json()["user"]["role"] == "user"
    listed = await run_cli("user", "list", "--db", db)
    assert listed.code == 0 and "root" in listed.out and "alice" in listed.out and "admin" in listed.out
    token = await run_cli("token", "create", "--db", db, "--user", "alice", "--alias", "coder-1", "--json",
                          "--expires-in", "86400")
    assert token.code == 0, token.err
    agent = token.json()
    assert agent["alias"] == "coder-1" and agent["network_id"] == second.json()["network_id"]
    assert agent["expires_at"] > first.json()["user"]["created_at"]

    async with own_server(tmp_path, "boot") as server, httpx.AsyncClient(base_url=server.url) as http:
        # Everything made on the file works on the server: the password, both tokens, the default network.
        r = await http.post("/api/auth/login", json={"username": "root", "password": "rootpass1"})
        assert r.status_code == 200, r.text
        r = await http.get("/api/users", headers={"Authorization": f"Bearer {admin['token']}"})
        assert {u["username"] for u in r.json()["users"]} == {"root", "alice"}
        r = await http.post("/mcp", headers={"Authorization": f"Bearer {agent['token']}"}, json={
            "jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "whoami", "arguments": {}}})
        assert r.json()["result"]["structuredContent"]["alias"] == "coder-1"
        r = await http.get(f"/api/networks/{admin['network_id']}", headers={
            "Authorization": f"Bearer {admin['token']}"})
        assert r.json()["network"]["network_name"] == "default"


@pytest.mark.subprocess
@pytest.mark.slow
async def test_file_commands_beside_a_running_server(tmp_path: Path) -> None:
    db = str(tmp_path / "live.db")
    assert (await run_cli("user", "create", "root", "--db", db, stdin="rootpass1\n")).code == 0
    async with own_server(tmp_path, "live") as server, httpx.AsyncClient(base_url=server.url) as http:
        made = await run_cli("token", "create", "--db", db, "--name", "bot", "--json")
        assert made.code == 0, made.err
        secret, token_id = made.json()["token"], made.json()["token_id"]
        auth = {"Authorization": f"Bearer {secret}"}
        assert (await http.get("/api/status", headers=auth)).status_code == 200
        listed = await run_cli("token", "list", "--db", db, "--json")
        assert token_id in {t["token_id"] for t in listed.json()["tokens"]}
        # Tokens are looked up on every request, so a revoke on the file takes effect at the next one.
        revoked = await run_cli("token", "revoke", token_id, "--db", db)
        assert revoked.code == 0, revoked.err
        r = await http.get("/api/status", headers=auth)
        assert r.status_code == 401 and r.json()["error"] == "invalid_token"
        again = await run_cli("token", "revoke", token_id, "--db", db)
        assert again.code == 1 and "already revoked" in again.err

        # A password reset on the file: the new password works at once, the old one and old logins do not.
        login = await http.post("/api/auth/login", json={"username": "root", "password": "rootpass1"})
        old_login = {"Authorization": f"Bearer {login.json()['token']}"}
        reset = await run_cli("user", "set-password", "root", "--db", db, stdin="brandnew9\n")
        assert reset.code == 0, reset.err
        assert (await http.get("/api/auth/me", headers=old_login)).status_code == 401
        r = await http.post("/api/auth/login", json={"username": "root", "password": "rootpass1"})
        assert r.status_code == 401
        r = await http.post("/api/auth/login", json={"username": "root", "password": "brandnew9"})
        assert r.status_code == 200
        utok = r.json()["token"]

        # The same commands through the server with --url.
        env = cli_env()
        over = await run_cli("token", "create", "--url", server.url, "--token", utok, "--alias", "w1", "--json",
                             env=env)
        assert over.code == 0, over.err
        assert over.json()["alias"] == "w1"
        users = await run_cli("user", "list", "--url", server.url, "--token", utok, "--json", env=env)
        assert [u["username"] for u in users.json()["users"]] == ["root"]


def run_main(*args: str, stdin: str = "") -> tuple[int, str, str]:
    """The CLI in this process (for checks that need no server): exit code, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        with redirect_stdout(out), redirect_stderr(err):
            code = main(list(args))
    finally:
        sys.stdin = saved
    return code, out.getvalue(), err.getvalue()


def test_refusals_exit_1_with_the_reason(tmp_path: Path) -> None:
    db = str(tmp_path / "r.db")
    code, _, err = run_main("user", "list", "--db", db)
    assert code == 1 and "no database at" in err
    assert not Path(db).exists()  # a mistyped path is not silently created
    assert run_main("user", "create", "root", "--db", db, stdin="rootpass1\n")[0] == 0
    code, _, err = run_main("user", "create", "root", "--db", db, stdin="otherpass\n")
    assert code == 1 and "already taken" in err
    code, _, err = run_main("user", "create", "bob", "--db", db, stdin="x\n")
    assert code == 1 and "password" in err
    code, _, err = run_main("token", "create", "--db", db, "--user", "ghost")
    assert code == 1 and "no user named 'ghost'" in err
    code, _, err = run_main("token", "revoke", "tok_nope", "--db", db)
    assert code == 1 and "not found" in err


@pytest.mark.subprocess
def test_usage_errors_exit_2() -> None:
    assert run_cli_sync("user").code == 2  # once as a real process; the rest in this one
    assert run_main("token", "create", "--bogus")[0] == 2
    assert run_main("nonsense")[0] == 2
    version = run_cli_sync("--version")
    assert version.code == 0 and version.out.startswith("commhub ")


def _paths(parser: argparse.ArgumentParser, prefix: list[str]) -> list[list[str]]:
    found = [prefix]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found += _paths(child, [*prefix, name])
    return found


@pytest.mark.parametrize("path", _paths(build_parser(), []), ids=lambda p: " ".join(p) or "commhub")
def test_help_on_every_level(path: list[str]) -> None:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main([*path, "--help"])
    assert code == 0
    assert out.getvalue().startswith("usage: commhub")


# Leaf commands that print no data: `serve` runs the server, `listen` runs a command per event, `run` an agent.
NO_DATA = (["serve"], ["listen"], ["run"], [])


def test_every_data_command_has_json() -> None:
    for path in _paths(build_parser(), []):
        parser = build_parser()
        for name in path:
            parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
        if any(isinstance(a, argparse._SubParsersAction) for a in parser._actions) or path in NO_DATA:
            continue
        assert "--json" in parser._option_string_actions, path
