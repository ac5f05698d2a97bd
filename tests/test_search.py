"""Full-text search (docs/search.md) against a real server: what is found, over REST, MCP (the official SDK) and the
CLI, with the lists' visibility; the index kept by triggers and built by migration 0009 for existing rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import apsw
import httpx
import pytest
from cli_support import cli_env, run_cli
from conftest import create_token, register, seed_owner_and_networks, tool
from test_dashboard import Browser, chrome, chrome_available, log_in, page  # noqa: F401 (fixtures)
from test_mcp_sdk import fails, ok, sdk_session

from commhub_lib import db as dbmod
from commhub_lib.db import Database
from commhub_lib.runtime.server import ServerHandle
from commhub_lib.service.search import fts_query


async def search(client: httpx.AsyncClient, headers: dict[str, str], q: str, **params: Any) -> list[dict[str, Any]]:
    r = await client.get("/api/search", headers=headers, params={"q": q, **params})
    assert r.status_code == 200, r.text
    return r.json()["results"]


async def traffic(client: httpx.AsyncClient, word: str) -> dict[str, Any]:
    """A person with two agents; a task (word in its title), its reply, a message and a broadcast all carry `word`."""
    acct = await register(client)
    boss, worker = await create_token(client, acct, "boss"), await create_token(client, acct, "worker")
    await tool(client, boss, "report_status", {"alias": "boss"})
    await tool(client, worker, "report_status", {"alias": "worker"})
    sent = await tool(client, boss, "send_task", {"to": "worker", "title": f"{word} audit", "content": "check it"})
    replied = await tool(client, worker, "send_reply", {"task_id": sent["task_id"], "status": "done",
                                                         "content": f"the {word} audit passed"})
    note = await tool(client, boss, "send_message", {"to": "worker", "content": f"a {word} note"})
    r = await client.post("/api/broadcast", headers=acct.auth, json={"content": f"{word} standup now"})
    assert r.status_code == 200, r.text
    return {"acct": acct, "boss": boss, "worker": worker, "task_id": sent["task_id"],
            "reply_id": replied["message_id"], "message_id": note["message_id"]}


async def test_search_finds_each_kind_once_newest_first(client: httpx.AsyncClient) -> None:
    t = await traffic(client, "zebrafish")
    hits = await search(client, t["acct"].auth, "zebrafish")
    assert [h["kind"] for h in hits] == ["broadcast", "message", "reply", "task"], hits  # one hit per broadcast
    assert hits[3]["id"] == t["task_id"] and hits[3]["title"] == "zebrafish audit"
    assert hits[2]["id"] == t["reply_id"] and hits[2]["task_id"] == t["task_id"]
    assert hits[1]["id"] == t["message_id"] and "zebrafish note" in hits[1]["snippet"]
    assert hits[0]["to_name"] == "*"
    # every word must occur; kind keeps one kind; a trailing * matches a prefix, a bare prefix does not
    assert [h["kind"] for h in await search(client, t["acct"].auth, "zebrafish passed")] == ["reply"]
    assert [h["id"] for h in await search(client, t["acct"].auth, "zebrafish", kind="task")] == [t["task_id"]]
    assert len(await search(client, t["acct"].auth, "zebraf*")) == 4
    assert await search(client, t["acct"].auth, "zebraf") == []
    assert len(await search(client, t["acct"].auth, "ZEBRAFISH", limit=2)) == 2


async def test_user_input_is_never_fts_syntax(client: httpx.AsyncClient) -> None:
    t = await traffic(client, "quokka")
    for q in ['quokka OR', 'quokka"', '"quokka', 'NEAR(quokka', 'content:quokka', 'quokka -x', '(quokka)', 'quokka^',
              'quokka AND NOT', '*quokka', "quokka's"]:
        r = await client.get("/api/search", headers=t["acct"].auth, params={"q": q})
        assert r.status_code == 200, (q, r.text)
    # operators are words: "quokka OR" needs a text with both words
    assert await search(client, t["acct"].auth, "quokka OR") == []
    assert len(await search(client, t["acct"].auth, "(quokka)")) == 4
    for bad in ({"q": ""}, {"q": "* **"}, {"q": "x " * 17}, {"q": "quokka", "kind": "nope"}, {}):
        r = await client.get("/api/search", headers=t["acct"].auth, params=bad)
        assert r.status_code == 400, (bad, r.text)
        assert r.json()["error"] == "validation_error", r.text
    assert fts_query('a"b c*') == '"a""b" "c"*'


async def test_visibility_is_the_lists(client: httpx.AsyncClient) -> None:
    await register(client)  # the server's first user is its admin (who may name any network): not the callers
    mine = await traffic(client, "narwhal")
    theirs = await traffic(client, "narwhal")
    # another person's network: never found, by the person or their agents; naming it is refused
    for headers in (mine["acct"].auth, {"Authorization": f"Bearer {mine['boss']}"}, mine["acct"].net_auth):
        hits = await search(client, headers, "narwhal")
        assert len(hits) == 4 and {h["network_id"] for h in hits} == {mine["acct"].network_id}, hits
    r = await client.get("/api/search", headers=mine["acct"].auth,
                         params={"q": "narwhal", "network_id": theirs["acct"].network_id})
    assert r.status_code in (403, 404), r.text
    assert await search(client, mine["acct"].auth, mine["acct"].network_id) == []  # ids are not searched as text
    # a person sees every network of theirs (or the one named); an agent only its own network
    r = await client.post("/api/networks", json={"name": "second"}, headers=mine["acct"].auth)
    second = r.json()["network_id"]
    r = await client.post("/api/messages", headers=mine["acct"].auth,
                          json={"to": "someone", "content": "narwhal elsewhere", "network_id": second})
    assert r.status_code in (200, 404), r.text
    other_agent = await create_token(client, mine["acct"], "far", network_id=second)
    await tool(client, other_agent, "report_status", {"alias": "far"})
    far_task = await tool(client, other_agent, "send_task", {"to": "far", "content": "narwhal far away"})
    person = await search(client, mine["acct"].auth, "narwhal")
    assert {h["network_id"] for h in person} == {mine["acct"].network_id, second}
    assert far_task["task_id"] in {h["id"] for h in person}
    only_second = await search(client, mine["acct"].auth, "narwhal", network_id=second)
    assert {h["network_id"] for h in only_second} == {second}
    agent_hits = await search(client, {"Authorization": f"Bearer {mine['boss']}"}, "narwhal")
    assert far_task["task_id"] not in {h["id"] for h in agent_hits}
    # the agent's list shows the same network's rows the search finds
    listed = (await client.get("/api/tasks", headers={"Authorization": f"Bearer {mine['boss']}"})).json()["tasks"]
    assert {h["id"] for h in agent_hits if h["kind"] == "task"} <= {t["task_id"] for t in listed}


async def test_mcp_search_through_the_official_sdk(server: ServerHandle, client: httpx.AsyncClient) -> None:
    t = await traffic(client, "axolotl")
    await traffic(client, "axolotl")  # another network's
    async with sdk_session(server, t["boss"]) as session:
        tools = await session.list_tools()
        assert "search" in {x.name for x in tools.tools}
        found = await ok(session, "search", {"query": "axolotl"})
        assert [h["kind"] for h in found["results"]] == ["broadcast", "message", "reply", "task"]
        assert {h["network_id"] for h in found["results"]} == {t["acct"].network_id}
        replies = await ok(session, "search", {"query": "axolotl", "kind": "reply", "limit": 5})
        assert [h["id"] for h in replies["results"]] == [t["reply_id"]]
        assert "at least one word" in await fails(session, "search", {"query": "***"})


@pytest.mark.subprocess
async def test_cli_search(server: ServerHandle, client: httpx.AsyncClient) -> None:
    t = await traffic(client, "pangolin")
    env = cli_env(server.url, t["acct"].token)
    run = await run_cli("search", "pangolin", "audit", env=env)
    assert run.code == 0, run
    assert t["task_id"] in run.out and t["reply_id"] in run.out and t["message_id"] not in run.out
    run = await run_cli("search", "pangol*", "--kind", "message", "--json", env=env)
    assert run.code == 0 and t["message_id"] in run.out and t["task_id"] not in run.out, run
    run = await run_cli("search", "nothing-like-this", env=env)
    assert run.code == 0 and "(nothing found)" in run.out, run


@pytest.mark.browser
@pytest.mark.skipif(not chrome_available(), reason="chromium and chromium-driver are not installed")
async def test_dashboard_search_box_opens_the_task(page: Browser, client: httpx.AsyncClient) -> None:  # noqa: F811
    await register(client)  # the server's admin: not the person below
    t = await traffic(client, "wombat")
    other = await traffic(client, "wombat")  # another person's: never listed
    await log_in(page, t["acct"])
    await page.type_into("search-input", "wombat\n")  # Enter submits
    hits = '#search-results [data-testid="search-hit"]'
    await page.wait_for(lambda d: len(d.find_elements("css selector", hits)) == 4, "four hits")
    text = await page.run(lambda d: d.find_element("id", "search-results").text)
    assert "wombat standup now" in text and "the wombat audit passed" in text and "everyone" in text
    assert other["task_id"] not in await page.run(lambda d: d.page_source)
    shot = await page.screenshot("search-results")
    assert shot.stat().st_size > 10_000
    task_id = t["task_id"]
    await page.click_css(f'#search-results button[data-task-id="{task_id}"]')
    await page.wait_for(lambda d: d.find_element("id", "task-dialog").is_displayed(), "the task page")
    await page.wait_for(lambda d: "wombat audit" in d.find_element("id", "task-dialog").text, "the task's title")
    await page.screenshot("search-opened-task")
    # a query that finds nothing says so; Close hides the results
    await page.run(lambda d: d.find_element("css selector", "#task-dialog [data-close]").click())
    await page.type_into("search-input", "nothing-like-this\n", clear=True)
    await page.wait_for(lambda d: "Nothing found" in d.find_element("id", "search-status").text, "nothing found")
    await page.click("search-close")
    await page.wait_for(lambda d: not d.find_element("id", "search-card").is_displayed(), "the results closed")


def _usage_recounted(db: Database) -> dict[str, int]:
    """text_bytes per network counted from the rows (migration 0006's own first count)."""
    rows = db.query(
        "SELECT network_id, sum(t) AS n FROM ("
        " SELECT network_id, 200 + octet_length(content) AS t FROM messages"
        " UNION ALL SELECT network_id, octet_length(content) FROM bodies WHERE network_id IS NOT NULL"
        " UNION ALL SELECT network_id, 300 + octet_length(content) + coalesce(octet_length(title), 0)"
        "  + coalesce(octet_length(context), 0) FROM tasks"
        " UNION ALL SELECT network_id, 100 + coalesce(octet_length(result), 0) + octet_length(artifacts)"
        "  FROM completions"
        " UNION ALL SELECT network_id, 100 + coalesce(octet_length(detail), 0) FROM task_events)"
        " GROUP BY network_id")
    return {r["network_id"]: r["n"] for r in rows}


INDEXED = {  # each index and the rows it must hold: those with their own text (migrations/0009_search.sql)
    "search_tasks": "SELECT rowid AS id FROM tasks WHERE title LIKE '%okapi%' OR content LIKE '%okapi%'",
    "search_messages": "SELECT rowid AS id FROM messages WHERE kind <> 'task' AND content LIKE '%okapi%'",
    "search_bodies": "SELECT rowid AS id FROM bodies WHERE content LIKE '%okapi%'",
}


def _check_index(db: Database) -> None:
    """FTS5's own check of each index, the rows holding 'okapi' are the ones indexed under it, and the usage
    counts still equal a recount. (integrity-check with rank 1 would compare with every row of the table, but
    rows without their own text are left out of the index on purpose.)"""
    for table, rows in INDEXED.items():
        db.execute(f"INSERT INTO {table}({table}, rank) VALUES ('integrity-check', 0)")
        db.execute(f"CREATE VIRTUAL TABLE IF NOT EXISTS temp.{table}_v USING fts5vocab(main, {table}, instance)")
        indexed = {r["doc"] for r in db.query(f"SELECT DISTINCT doc FROM temp.{table}_v WHERE term = 'okapi'")}
        assert indexed == {r["id"] for r in db.query(rows)}, table
    kept = {r["network_id"]: r["text_bytes"] for r in db.query("SELECT network_id, text_bytes FROM network_usage")}
    for net, n in _usage_recounted(db).items():
        assert kept[net] == n, (net, kept[net], n)


def _rows(db: Database | _RawDb, net: str, n: int) -> None:
    for i in range(n):
        db.execute("INSERT INTO tasks(task_id, network_id, from_name, to_name, title, content, priority, status,"
                   " message_id, created_at, created_ts, updated_at) VALUES (?, ?, 'a', 'b', ?, ?, 'normal',"
                   " 'delivered', ?, 't', ?, 't')", (f"t{net}{i}", net, f"okapi {i}", "content", f"m{net}{i}", i))
        db.execute("INSERT INTO messages(message_id, network_id, from_name, to_name, kind, content, created_at,"
                   " created_ts) VALUES (?, ?, 'b', 'a', 'task', '', 't', ?)", (f"m{net}{i}", net, i))
        db.execute("INSERT INTO messages(message_id, network_id, from_name, to_name, kind, content, task_id,"
                   " created_at, created_ts) VALUES (?, ?, 'b', 'a', 'reply', ?, ?, 't', ?)",
                   (f"r{net}{i}", net, f"okapi reply {i}", f"t{net}{i}", i + 0.5))
    db.execute("INSERT INTO bodies(content, network_id) VALUES ('okapi broadcast', ?)", (net,))
    body = db.query_one("SELECT max(body_id) AS b FROM bodies")
    assert body is not None
    for alias in ("a", "b"):
        db.execute("INSERT INTO messages(message_id, network_id, from_name, to_name, kind, content, body_id,"
                   " created_at, created_ts) VALUES (?, ?, 'c', ?, 'broadcast', '', ?, 't', 99)",
                   (f"b{net}{alias}", net, alias, body["b"]))


def test_migration_0009_indexes_existing_rows_and_triggers_keep_it(tmp_path: Path) -> None:
    """A v7 file with rows, migrated by every later step (0010 rebuilds tasks: its appendix re-makes the index's
    triggers and re-reads it), is indexed, and the triggers keep the index and the usage right afterwards."""
    path = tmp_path / "v7.db"
    con = apsw.Connection(str(path))
    steps = dbmod.migration_steps()
    with con:
        for step in sorted(n for n in steps if n <= 7):
            con.execute(steps[step])
        con.pragma("user_version", 7)
    con.close()
    raw = apsw.Connection(str(path))  # a v7 file: filled through plain SQL, then opened by the app
    raw.pragma("foreign_keys", "on")
    wrapped = _RawDb(raw)
    seed_owner_and_networks(wrapped, ["n_1", "n_2"])
    _rows(wrapped, "n_1", 5)
    _rows(wrapped, "n_2", 3)
    raw.close()
    db = Database(str(path))  # migrates 7 -> current: 0009 indexes the rows already there
    try:
        assert len(db.query("SELECT rowid FROM search_tasks WHERE search_tasks MATCH 'okapi'")) == 8
        assert len(db.query("SELECT rowid FROM search_messages WHERE search_messages MATCH 'okapi'")) == 8
        assert len(db.query("SELECT rowid FROM search_bodies WHERE search_bodies MATCH 'okapi'")) == 2
        _check_index(db)
        with db.write():
            db.execute("DELETE FROM messages WHERE kind = 'reply' AND network_id = 'n_1'")
            db.execute("DELETE FROM messages WHERE body_id IS NOT NULL AND network_id = 'n_2'")  # body released
            db.execute("DELETE FROM tasks WHERE task_id = 'tn_10'")
            db.execute("INSERT INTO tasks(task_id, network_id, from_name, to_name, content, priority, status,"
                       " message_id, created_at, created_ts, updated_at) VALUES ('late', 'n_2', 'a', 'b',"
                       " 'okapi after the migration', 'normal', 'delivered', 'm_late', 't', 100, 't')")
        _check_index(db)
        assert len(db.query("SELECT rowid FROM search_messages WHERE search_messages MATCH 'okapi'")) == 3
        assert len(db.query("SELECT rowid FROM search_bodies WHERE search_bodies MATCH 'okapi'")) == 1
        assert len(db.query("SELECT rowid FROM search_tasks WHERE search_tasks MATCH 'okapi'")) == 8
        with db.write():
            db.execute("DELETE FROM networks WHERE network_id = 'n_1'")  # the cascade fires the triggers too
        _check_index(db)
        assert len(db.query("SELECT rowid FROM search_tasks WHERE search_tasks MATCH 'okapi'")) == 4
    finally:
        db.close()


class _RawDb:
    """The two Database methods the row helpers use, over a bare connection (a v7 file the app must not open)."""

    def __init__(self, con: apsw.Connection):
        self.con = con

    def execute(self, sql: str, args: Any = ()) -> None:
        self.con.execute(sql, args)

    def query_one(self, sql: str, args: Any = ()) -> dict[str, Any] | None:
        cur = self.con.execute(sql, args)
        row = cur.fetchone()
        if row is None:
            return None
        return dict(zip([d[0] for d in cur.getdescription()], row, strict=True))
