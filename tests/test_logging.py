"""Logs say what happened: MCP access lines name the call, the alias and the outcome; client-controlled
fields cannot forge lines; `--log-format json`; start-up lines with the URL, the first step and a warning."""

from __future__ import annotations

import io
import json
import logging
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio

from commhub_lib.logs import TEXT_FORMAT, AccessLog, escape
from commhub_lib.runtime.log_setup import JsonFormatter
from commhub_lib.runtime.server import log_startup
from tests.conftest import make_settings, mcp_call, register

ROOT = Path(__file__).resolve().parents[1]


def access_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "commhub.access"]


async def test_mcp_access_line_names_call_alias_and_outcome(client: httpx.AsyncClient,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="commhub.access")
    account = await register(client)
    await mcp_call(client, account.network_token, "report_status", {"alias": "coder-1"})
    # A tool error travels in a 200: the log still says how it ended.
    result = await mcp_call(client, account.network_token, "send_message", {"to": "nobody", "content": "hi"})
    assert result["isError"]
    r = await client.post("/mcp", headers=account.net_auth, json=[
        {"jsonrpc": "2.0", "id": 1, "method": "ping"},
        {"jsonrpc": "2.0", "id": 2, "method": "no/such/method"}])
    assert r.status_code == 200
    lines = [line for line in access_lines(caplog) if " /mcp " in line]
    assert lines[0].endswith("mcp=report_status alias=coder-1 outcome=ok"), lines
    assert lines[1].endswith("mcp=send_message alias=coder-1 outcome=unknown_recipient"), lines
    assert lines[2].endswith("mcp=ping,no/such/method alias=coder-1 outcome=ok,rpc-32601"), lines
    fields = [getattr(r, "fields", {}) for r in caplog.records if r.name == "commhub.access"]
    mcp_fields = [f for f in fields if f.get("mcp")]
    assert mcp_fields[1]["mcp"] == [{"call": "send_message", "outcome": "unknown_recipient"}]
    assert mcp_fields[1]["alias"] == "coder-1"


async def test_control_characters_in_the_path_cannot_forge_log_lines(client: httpx.AsyncClient,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="commhub.access")
    r = await client.get("/api/x%0d%0a127.0.0.1 GET /forged 200 0.1ms%1b[2J%e2%80%a8")
    assert r.status_code == 404
    line = next(line for line in access_lines(caplog) if "/api/x" in line)
    assert "\r" not in line and "\n" not in line and "\x1b" not in line and "\u2028" not in line
    assert "\\x0d\\x0a127.0.0.1 GET /forged" in line and "\\x1b" in line and "\\u2028" in line


def test_escape_and_json_formatter_keep_one_record_on_one_line() -> None:
    assert escape("a\r\nb\x00c\x7f\u0085d") == "a\\x0d\\x0ab\\x00c\\x7f\\x85d"
    record = logging.LogRecord("commhub.access", logging.INFO, __file__, 1, "GET %s", ("/x\ny",), None)
    record.fields = {"status": 200, "path": "/x\ny"}
    out = JsonFormatter().format(record)
    assert "\n" not in out
    parsed = json.loads(out)
    assert parsed["level"] == "info" and parsed["logger"] == "commhub.access" and parsed["message"] == "GET /x\ny"
    assert parsed["status"] == 200 and parsed["time"].endswith("+00:00")


def test_startup_lines_say_the_url_the_first_step_and_warn_beyond_loopback(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="commhub")
    log_startup(make_settings(tmp_path), ["http://127.0.0.1:9200"])
    messages = [r.getMessage() for r in caplog.records]
    assert any("listening on http://127.0.0.1:9200" in m for m in messages)
    assert any("curl -X POST http://127.0.0.1:9200/api/auth/register" in m for m in messages)
    assert not any(r.levelno >= logging.WARNING for r in caplog.records)

    caplog.clear()  # a hub that has users already needs no first step
    log_startup(make_settings(tmp_path), ["http://127.0.0.1:9200"], users=3)
    assert not any("curl" in r.getMessage() for r in caplog.records)

    caplog.clear()
    log_startup(make_settings(tmp_path, host="0.0.0.0"), ["http://0.0.0.0:9200"])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "COMMHUB_AUTH_TOKEN" in warnings[0]

    caplog.clear()
    log_startup(make_settings(tmp_path, host="0.0.0.0", auth_token="s3cret"), ["http://0.0.0.0:9200"])
    assert not any(r.levelno >= logging.WARNING for r in caplog.records)


def start_serve(db: Path, *flags: str) -> subprocess.Popen:
    """`commhub serve` on port 0 as a child process, its stderr piped."""
    return subprocess.Popen([sys.executable, str(ROOT / "commhub.py"), "serve", "--db", str(db), "--port", "0",
                             *flags], stderr=subprocess.PIPE, text=True)


@pytest.mark.subprocess
async def test_serve_with_json_log_format_writes_one_json_object_per_line(tmp_path: Path) -> None:
    proc = start_serve(tmp_path / "j.db", "--log-format", "json")
    assert proc.stderr is not None
    records: list[dict] = []

    async def next_record() -> dict:
        line = await trio.to_thread.run_sync(proc.stderr.readline)
        assert line, "the server exited"
        records.append(json.loads(line))  # every line is one JSON object
        return records[-1]

    try:
        with trio.fail_after(20):
            while "listening on" not in (rec := await next_record())["message"]:
                pass
            url = rec["message"].split("listening on ")[1].split(" ")[0].rstrip(",")
            assert "curl -X POST" in (await next_record())["message"]
            async with httpx.AsyncClient(base_url=url) as client:
                assert (await client.get("/health")).status_code == 200
            while (rec := await next_record())["logger"] != "commhub.access":
                pass
        assert {"time", "level", "logger", "message"} <= rec.keys()
        assert rec["method"] == "GET" and rec["path"] == "/health" and rec["status"] == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        await trio.to_thread.run_sync(proc.wait, 20)
        proc.stderr.close()
    assert proc.returncode == 0


TEXT_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO commhub\.access: (.*)\n")


def test_text_access_lines_are_written_without_a_record_exactly_as_logging_writes_them(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.INFO, logger="commhub.access")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [handler])  # what setup_logging(fmt="text") leaves
    monkeypatch.setattr(AccessLog, "text_handler", handler)
    access = AccessLog(logging.getLogger("commhub.access"))
    made: list[dict] = []

    def fields() -> dict[str, object]:
        made.append({"status": 200})
        return made[-1]

    access.info("127.0.0.1 GET /x 200 0.1ms", fields)
    direct = stream.getvalue()
    assert made == []  # no LogRecord, no fields
    logging.getLogger("commhub.access").info("%s", "127.0.0.1 GET /x 200 0.1ms")
    via_logging = stream.getvalue()[len(direct):]
    assert TEXT_LINE.fullmatch(direct) and TEXT_LINE.fullmatch(via_logging)
    assert direct[23:] == via_logging[23:]  # the same line but for the milliseconds

    # Anyone else listening (a log shipper's handler, a test's caplog) gets the record, with its fields.
    other = logging.Handler()
    seen: list[logging.LogRecord] = []
    other.emit = seen.append  # type: ignore[method-assign]
    monkeypatch.setattr(root, "handlers", [handler, other])
    access.info("127.0.0.1 GET /y 200 0.1ms", fields)
    assert [r.getMessage() for r in seen] == ["127.0.0.1 GET /y 200 0.1ms"]
    assert seen[0].fields == {"status": 200}  # type: ignore[attr-defined]
    assert TEXT_LINE.fullmatch(stream.getvalue()[len(direct) + len(via_logging):])


@pytest.mark.subprocess
async def test_serve_with_text_log_format_writes_access_lines(tmp_path: Path) -> None:
    proc = start_serve(tmp_path / "t.db")
    assert proc.stderr is not None
    try:
        with trio.fail_after(20):
            while "listening on" not in (line := await trio.to_thread.run_sync(proc.stderr.readline)):
                assert line, "the server exited"
            url = line.split("listening on ")[1].split(" ")[0].rstrip(",")
            async with httpx.AsyncClient(base_url=url) as client:
                assert (await client.get("/health")).status_code == 200
                assert (await client.post("/mcp", json={})).status_code == 401
            access = []
            while len(access) < 2:
                line = await trio.to_thread.run_sync(proc.stderr.readline)
                assert line, "the server exited"
                if " commhub.access: " in line:
                    access.append(line)
        assert re.fullmatch(r"127\.0\.0\.1 GET /health 200 \d+\.\dms", TEXT_LINE.fullmatch(access[0])[1])
        assert re.fullmatch(r"127\.0\.0\.1 POST /mcp 401 \d+\.\dms", TEXT_LINE.fullmatch(access[1])[1])
    finally:
        proc.send_signal(signal.SIGTERM)
        await trio.to_thread.run_sync(proc.wait, 20)
        proc.stderr.close()
    assert proc.returncode == 0
