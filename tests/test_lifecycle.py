"""Server lifecycle: `python commhub.py serve` stops cleanly on SIGTERM/SIGINT; a restart keeps all data."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import apsw
import httpx
import pytest
import trio
from cli_support import listening_url
from conftest import create_token, make_settings, register, start_server
from test_rest_auth import assert_error, running

ROOT = Path(__file__).resolve().parents[1]


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a child server: ours without any COMMHUB_* setting, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMMHUB_")}
    env.update(extra)
    return env


def open_log(path: Path):  # noqa: ANN201 - a plain binary file for the child's stderr
    return open(path, "wb")  # noqa: SIM115


def read_log(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def assert_checkpointed_with(db: Path, rows: list[tuple]) -> None:
    """The WAL has been folded into the main file, which holds the users written before the stop."""
    wal = Path(str(db) + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0, "database not checkpointed at shutdown"
    con = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        assert con.execute("SELECT username, role FROM users").fetchall() == rows
    finally:
        con.close()


async def start_child(args: list[str], log: Path, env: dict[str, str]) -> trio.Process:
    with open_log(log) as f:
        return await trio.lowlevel.open_process([sys.executable, "commhub.py", *args], cwd=str(ROOT), env=env,
                                                stdin=subprocess.DEVNULL, stdout=f, stderr=f)


async def wait_until_healthy(proc: trio.Process, url: str, log: Path) -> None:
    """Poll /health in a bounded loop until the child answers (or fail if it died)."""
    async with httpx.AsyncClient(base_url=url, timeout=2) as client:
        for _ in range(300):  # 300 x 50 ms = 15 s at most
            if proc.poll() is not None:
                raise AssertionError(f"server exited early ({proc.returncode}): {read_log(log)}")
            try:
                if (await client.get("/health")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await trio.sleep(0.05)
    raise AssertionError(f"server never answered /health: {read_log(log)}")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.subprocess
async def test_serve_stops_cleanly_on_signal(tmp_path: Path, signum: signal.Signals) -> None:
    db, log = tmp_path / "hub.db", tmp_path / "server.log"
    secret = "lifecycle-secret"
    proc = await start_child(["serve", "--port", "0", "--db", str(db)], log, child_env(COMMHUB_AUTH_TOKEN=secret))
    try:
        url = await listening_url(proc, log)
        await wait_until_healthy(proc, url, log)
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            # COMMHUB_AUTH_TOKEN from the environment is in force ...
            r = await client.post("/api/auth/register", json={"username": "survivor", "password": "secret123"})
            assert_error(r, 401, "auth_token_required")
            r = await client.post("/api/auth/register", json={"username": "survivor", "password": "secret123"},
                                  headers={"Authorization": f"Bearer {secret}"})
            assert r.status_code == 200, r.text
        proc.send_signal(signum)
        with trio.fail_after(10):
            rc = await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = read_log(log)
    assert rc == 0, text
    assert f"received {signum.name}" in text, text
    assert "stopped" in text and "Traceback" not in text, text
    assert_checkpointed_with(db, [("survivor", "admin")])


@pytest.mark.subprocess
async def test_serve_on_a_busy_port_exits_1(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = await start_child(["serve", "--port", str(port), "--db", str(tmp_path / "hub.db")], log, child_env())
        try:
            with trio.fail_after(15):
                rc = await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert rc == 1, read_log(log)
    text = read_log(log)
    assert "cannot listen" in text and "address already in use" in text.lower(), text
    assert "Traceback" not in text, text


async def snapshot(client: httpx.AsyncClient, admin: Any, user: Any, network_id: str) -> dict[str, Any]:
    """What a restart must keep: users, networks, members, tokens and audit entries as the API shows them."""
    return {
        "users": (await client.get("/api/users", headers=admin.auth)).json()["users"],
        "networks": (await client.get("/api/networks", headers=user.auth)).json()["networks"],
        "members": (await client.get(f"/api/networks/{network_id}/members", headers=admin.auth)).json()["members"],
        "tokens": (await client.get("/api/tokens", headers=admin.auth)).json()["tokens"],
        "audit": (await client.get("/api/audit-log", params={"limit": 500}, headers=admin.auth)).json()["entries"],
    }


async def test_restart_on_the_same_database_keeps_everything(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    async with running(settings) as (_, client):
        admin = await register(client, email="admin@example.com", display_name="The Admin")
        user = await register(client)
        r = await client.post("/api/networks", json={"name": "prod", "description": "kept"}, headers=admin.auth)
        prod = r.json()["network_id"]
        r = await client.post(f"/api/networks/{prod}/invite", json={"max_uses": 1}, headers=admin.auth)
        code = r.json()["invite_code"]
        assert (await client.post("/api/networks/join", json={"invite_code": code}, headers=user.auth)).is_success
        bound = await create_token(client, admin, "ci-bot", alias="ci-bot", network_id=prod)
        r = await client.post("/api/tokens", json={"name": "doomed", "network_id": prod}, headers=admin.auth)
        doomed_id, doomed = r.json()["token_id"], r.json()["token"]
        assert (await client.delete(f"/api/tokens/{doomed_id}", headers=admin.auth)).is_success
        before = await snapshot(client, admin, user, prod)
    # The first server has fully stopped (its database is closed); a new one opens the same file.
    async with running(settings) as (_, client):
        after = await snapshot(client, admin, user, prod)
        for key in ("users", "networks", "members"):
            assert after[key] == before[key], key
        assert [t["token_id"] for t in after["tokens"]] == [t["token_id"] for t in before["tokens"]]
        assert [(t["name"], t["alias"], t["revoked"]) for t in after["tokens"]] == [
            (t["name"], t["alias"], t["revoked"]) for t in before["tokens"]]
        assert after["audit"][-len(before["audit"]):] == before["audit"]
        # Old tokens of both kinds still work; the revoked one stays revoked.
        assert (await client.get("/api/auth/me", headers=user.auth)).json()["user"]["user_id"] == user.user_id
        assert (await client.get("/api/networks", headers=admin.net_auth)).status_code == 200
        r = await client.get("/api/networks", headers={"Authorization": f"Bearer {bound}"})
        assert [n["network_id"] for n in r.json()["networks"]] == [prod]
        assert_error(await client.get("/api/networks", headers={"Authorization": f"Bearer {doomed}"}), 401)
        # Passwords survive, the invite's use count survives, and the first user stays the only admin.
        r = await client.post("/api/auth/login", json={"username": admin.username, "password": admin.password})
        assert r.status_code == 200 and r.json()["user"]["role"] == "admin", r.text
        assert r.json()["user"]["display_name"] == "The Admin"
        late = await register(client)
        assert late.role == "user"
        r = await client.post("/api/networks/join", json={"invite_code": code}, headers=late.auth)
        assert_error(r, 409, "invite_used_up")
        r = await client.post(f"/api/networks/{prod}/invite", json={}, headers=user.auth)
        assert_error(r, 403)  # roles survive too: `user` is a plain member of prod


async def test_shutdown_lets_an_in_flight_request_finish(tmp_path: Path) -> None:
    """Shut down while a login is inside argon2 (a worker thread is busy): it still gets its answer, the
    server then stops, and new connections are refused."""
    statuses: list[int] = []
    with trio.fail_after(15):
        async with trio.open_nursery() as outer:
            handle = await start_server(outer, make_settings(tmp_path))
            async with httpx.AsyncClient(base_url=handle.url, timeout=10) as client:
                acct = await register(client)
                limiter = trio.to_thread.current_default_thread_limiter()
                baseline = limiter.borrowed_tokens

                async def login() -> None:
                    r = await client.post("/api/auth/login", json={"username": acct.username,
                                                                   "password": acct.password})
                    statuses.append(r.status_code)

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(login)
                    for _ in range(10_000):  # bounded poll until the login is hashing
                        if limiter.borrowed_tokens > baseline or statuses:
                            break
                        await trio.sleep(0.001)
                    assert not statuses and limiter.borrowed_tokens > baseline
                    handle.shutdown()
        # run_server has returned: the in-flight login was answered before the stop.
    assert statuses == [200]
    async with httpx.AsyncClient(base_url=handle.url, timeout=5) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get("/health")
