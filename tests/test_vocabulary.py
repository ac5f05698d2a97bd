"""The vocabulary (commhub_lib/vocabulary.py) is the one place the domain's words are spelled, and every consumer
of an event handles every event it names.

Adding an event name to vocabulary.EVENTS makes the parametrized tests below fail until the channel text
(mcp/channel.py), `commhub tail`, `commhub listen`, the dashboard's feed and docs/events.md handle it, and until
the hub is seen emitting it with the data its shape declares.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import re
from pathlib import Path
from typing import Any, get_args

import httpx
import pytest

from commhub_lib import events, vocabulary
from commhub_lib.cli import listen, tail
from commhub_lib.mcp import channel
from commhub_lib.runtime.server import ServerHandle
from commhub_lib.store import events as event_store
from commhub_lib.vocabulary import DELIVERED_EVENTS, EVENTS, EventShape
from tests.conftest import create_token, mcp_call, register, tool, tool_error
from tests.test_dashboard import Browser, chrome, chrome_available, log_in, page  # noqa: F401 (fixtures)

ROOT = Path(__file__).resolve().parent.parent
LIB = ROOT / "commhub_lib"
STATIC = LIB / "web" / "static"
JSON_TYPES: dict[str, type | tuple[type, ...]] = {"string": str, "integer": int, "boolean": bool}


def sample(name: str) -> dict[str, Any]:
    """Data for an event as its shape declares it (every field present, recognisable values)."""
    values = {"string": lambda key: f"{key}-value", "integer": lambda key: 3, "boolean": lambda key: True}
    return {key: values[f.type](key) for key, f in EVENTS[name].fields.items()}


def fits(shape: EventShape, data: dict[str, Any]) -> list[str]:
    """What is wrong with an event's data against its shape (nothing: an empty list)."""
    wrong = [f"undeclared field {key!r}" for key in data if key not in shape.fields]
    for key, f in shape.fields.items():
        if key not in data:
            if not f.optional:
                wrong.append(f"missing field {key!r}")
        elif data[key] is None:
            if not f.nullable:
                wrong.append(f"{key!r} is null")
        elif not isinstance(data[key], JSON_TYPES[f.type]) or (f.type == "integer" and isinstance(data[key], bool)):
            wrong.append(f"{key!r} is {type(data[key]).__name__}, not {f.type}")
    return wrong


# --- every consumer handles every event ---------------------------------------------------------------------

@pytest.mark.parametrize("name", DELIVERED_EVENTS)
def test_the_channel_text_handles_the_event(name: str) -> None:
    """GET /mcp's `notifications/claude/channel` has its own paragraph for the event (not the catch-all)."""
    assert name in channel.DESCRIBE, f"mcp/channel.py DESCRIBE has no text for {name}"
    data = sample(name)
    text = channel.describe(name, data)
    assert not text.startswith(f"CommHub event {name} for you"), text
    assert "from-value" in text and "message_id-value" in text, text
    note = channel.notification(7, name, json.dumps(data))
    assert note["params"]["content"] == text and note["params"]["meta"]["event"] == name
    assert all(isinstance(v, str) and k.isidentifier() for k, v in note["params"]["meta"].items())


@pytest.mark.parametrize("name", DELIVERED_EVENTS)
def test_tail_prints_the_event_readably(name: str) -> None:
    """`commhub tail` has a readable line for the event (not its raw JSON)."""
    assert name in tail.TEXTS, f"cli/tail.py TEXTS has no line for {name}"
    data = sample(name)
    line = tail.describe("7", name, "bob", data)
    assert f"{name} {{" not in line and "from-value -> bob" in line, line
    assert "\n" not in line


@pytest.mark.parametrize("name", DELIVERED_EVENTS)
def test_listen_can_select_the_event_and_routes_each_field(name: str) -> None:
    """`commhub listen --events NAME` accepts it, and each of its fields is an environment variable of CMD or
    deliberately left to the JSON on stdin."""
    assert name in listen.ALL_EVENTS, f"cli/listen.py ALL_EVENTS lacks {name}"
    assert listen._selected(name) == {name}
    unrouted = set(EVENTS[name].fields) - set(listen.ENV_FIELDS.values()) - listen.STDIN_ONLY_FIELDS
    assert not unrouted, f"cli/listen.py: put {sorted(unrouted)} in ENV_FIELDS or STDIN_ONLY_FIELDS"
    env = listen.event_environment("bob", "http://hub", 7, name, sample(name))
    assert env["COMMHUB_EVENT"] == name and env["COMMHUB_FROM"] == "from-value"


@pytest.mark.parametrize("name", DELIVERED_EVENTS)
def test_the_dashboard_feed_summarises_the_event(name: str) -> None:
    """web/static/views-feed.js has a SUMMARY entry for the event, keyed by the generated vocabulary.js."""
    feed = (STATIC / "views-feed.js").read_text(encoding="utf-8")
    table = feed[feed.index("const SUMMARY = {"):]
    table = table[:table.index("\n};")]
    assert f"[EVENT.{name.upper()}]:" in table, f"views-feed.js SUMMARY has no entry for EVENT.{name.upper()}"
    assert f'"{name.upper()}": "{name}"' in vocabulary.js_module()


@pytest.mark.parametrize("name", list(EVENTS))
def test_the_docs_describe_the_event_and_each_field(name: str) -> None:
    """docs/events.md (generated) has a section for the event, and each field says what it holds."""
    shape = EVENTS[name]
    assert shape.name == name and shape.doc.endswith(".")
    assert all(f.doc for f in shape.fields.values())
    docs = (ROOT / "docs" / "events.md").read_text(encoding="utf-8")
    section = docs[docs.index(f"\n### `{name}`\n"):].split("\n### ")[1].split(vocabulary.END_EVENTS)[0]
    for key in shape.fields:
        assert f"| `{key}` |" in section, key


def test_heartbeats_are_skipped_by_every_consumer() -> None:
    """A heartbeat wakes nobody: listen, tail and the dashboard skip it by the vocabulary's name."""
    assert vocabulary.HEARTBEAT not in DELIVERED_EVENTS and not EVENTS[vocabulary.HEARTBEAT].stored
    assert "EVENT.HEARTBEAT" in (STATIC / "live.js").read_text(encoding="utf-8")
    for module in (listen, tail):
        assert "HEARTBEAT" in Path(module.__file__ or "").read_text(encoding="utf-8")
    data = json.loads(events.heartbeat().data)
    assert not fits(EVENTS[vocabulary.HEARTBEAT], data)


# --- generated copies stay equal ------------------------------------------------------------------------------

def test_the_dashboards_vocabulary_js_is_generated_from_the_python_one() -> None:
    """web/static/vocabulary.js is `python -m commhub_lib.vocabulary js` (regenerate it after a change)."""
    assert (STATIC / "vocabulary.js").read_text(encoding="utf-8") == vocabulary.js_module()


def test_docs_events_md_lists_the_events_as_the_vocabulary_does() -> None:
    """docs/events.md's list of events is generated (`python -m commhub_lib.vocabulary events` makes it current);
    the rest of the page is written by hand."""
    text = (ROOT / "docs" / "events.md").read_text(encoding="utf-8")
    assert text.count(vocabulary.BEGIN_EVENTS) == 1 and text.count(vocabulary.END_EVENTS) == 1
    assert vocabulary.with_events_markdown(text) == text


def test_the_dashboard_imports_its_words_from_vocabulary_js() -> None:
    """No dashboard script spells an event name or a task status of its own, nor does the page list statuses or
    priorities."""
    words = set(EVENTS) | set(vocabulary.TASK_STATUSES)
    for path in STATIC.glob("*.js"):
        if path.name == "vocabulary.js":
            continue
        spelled = {w for w in words if re.search(rf"""["'`]{w}["'`]""", path.read_text(encoding="utf-8"))}
        assert not spelled, f"{path.name} spells {sorted(spelled)}: import them from vocabulary.js"
    html = (STATIC / "index.html").read_text(encoding="utf-8")
    options = set(re.findall(r'<option(?: value="([^"]*)")?[^>]*>([^<]*)</option>', html))
    listed = {w for pair in options for w in pair} & (set(vocabulary.TASK_STATUSES) | set(vocabulary.PRIORITIES))
    assert not listed, f"index.html lists {sorted(listed)}: fill the <select> from vocabulary.js"


@pytest.mark.skipif(not chrome_available(), reason="chromium and chromium-driver are not installed")
async def test_the_pages_choices_come_from_vocabulary_js(page: Browser,  # noqa: F811
                                                         client: httpx.AsyncClient) -> None:
    """In a real browser: the task filter offers every status (input_required read as "question") and the send
    form every priority with the default chosen, all filled from vocabulary.js."""
    await log_in(page, await register(client))

    def options(element_id: str) -> Any:
        return lambda d: d.execute_script(
            "return [...document.getElementById(arguments[0]).options].map(o => [o.value, o.text, o.selected])",
            element_id)
    statuses = await page.run(options("filter-status"))
    assert [value for value, _, _ in statuses] == ["", *vocabulary.TASK_STATUSES]
    assert [text for value, text, _ in statuses if value == vocabulary.INPUT_REQUIRED] == ["question"]
    priorities = await page.run(options("send-priority"))
    assert [(value, selected) for value, _, selected in priorities] == [
        (p, p == vocabulary.DEFAULT_PRIORITY) for p in vocabulary.PRIORITIES]


# --- the vocabulary is consistent ------------------------------------------------------------------------------

def test_the_literal_types_name_the_same_words_as_the_tuples() -> None:
    """Each Literal type (for pydantic and pyright) names exactly its tuple's words, in order."""
    assert get_args(vocabulary.TaskStatus) == vocabulary.TASK_STATUSES
    assert get_args(vocabulary.ReplyStatusValue) == vocabulary.REPLY_STATUSES
    assert get_args(vocabulary.SessionStatusValue) == vocabulary.SESSION_STATUSES
    assert get_args(vocabulary.ReportableSessionStatus) == vocabulary.REPORTABLE_SESSION_STATUSES
    assert get_args(vocabulary.HeldBy) == vocabulary.HELD_BY
    assert get_args(vocabulary.StreamHolder) == vocabulary.STREAM_HOLDERS
    assert get_args(vocabulary.EventsHolder) == vocabulary.EVENTS_HOLDERS
    assert get_args(vocabulary.PriorityValue) == vocabulary.PRIORITIES
    assert get_args(vocabulary.TaskFlag) == vocabulary.TASK_FLAGS
    assert get_args(vocabulary.MessageKind) == vocabulary.MESSAGE_KINDS
    assert get_args(vocabulary.SenderKind) == vocabulary.SENDER_KINDS
    assert get_args(vocabulary.CancelledStatus) == (vocabulary.CANCELLED,)


def test_open_and_final_statuses_split_the_task_statuses() -> None:
    """Every status is open or final, never both; every reply status leads to a task status."""
    open_, final = set(vocabulary.OPEN_TASK_STATUSES), set(vocabulary.FINAL_TASK_STATUSES)
    assert not open_ & final and open_ | final == set(vocabulary.TASK_STATUSES)
    assert set(vocabulary.WORKING_TASK_STATUSES) < open_
    assert set(vocabulary.REPLY_TO_TASK_STATUS) == set(vocabulary.REPLY_STATUSES)
    assert {vocabulary.REPLY_TO_TASK_STATUS[s] for s in vocabulary.FINAL_REPLY_STATUSES} <= final
    assert vocabulary.DEFAULT_PRIORITY in vocabulary.PRIORITIES


# Whole string constants in commhub_lib that are such a word but not one: (file, word) -> why.
ALLOWED: dict[tuple[str, str], str] = {
    ("cli/messaging.py", "progress"): "a column of `commhub status`",
    ("service/sessions.py", "progress"): "a field of report_status",
    ("store/sessions.py", "progress"): "a column of the sessions table",
    ("mcp/tools.py", "broadcast"): "the MCP tool's name",
    ("cli/run/gemini.py", "cancelled"): "an ACP permission outcome, not a task status",
    ("a2a/mapping.py", "working"): "an A2A task state (TASK_STATE_WORKING), not a session status",
    ("a2a/mapping.py", "failed"): "an A2A task state (TASK_STATE_FAILED), written in A2A's words",
}


def _spelled_words(path: Path, words: set[str]) -> list[tuple[int, str]]:
    """The domain words spelled as whole string constants in one module, outside dict keys, subscripts and
    .get() keys (field names), docstrings and __all__/__slots__ (names)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            names.update(id(k) for k in node.keys if k is not None)
        elif isinstance(node, ast.Subscript) and not (isinstance(node.value, ast.Name) and node.value.id == "Literal"):
            names.add(id(node.slice))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args \
                and node.func.attr in ("get", "pop", "setdefault"):
            names.add(id(node.args[0]))
        elif isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body \
                and isinstance(node.body[0], ast.Expr):
            names.add(id(node.body[0].value))
        elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id in ("__all__", "__slots__")
                                                  for t in node.targets):
            names.update(id(n) for n in ast.walk(node.value))
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in words
            and id(node) not in names]


def test_no_status_or_event_name_is_spelled_outside_the_vocabulary() -> None:
    """Task, reply and session statuses, flags and event names are imported from vocabulary.py, not retyped."""
    words = (set(vocabulary.TASK_STATUSES) | set(vocabulary.REPLY_STATUSES) | set(vocabulary.SESSION_STATUSES)
             | set(vocabulary.TASK_FLAGS) | set(EVENTS))
    spelled = []
    for path in sorted(LIB.rglob("*.py")):
        rel = path.relative_to(LIB).as_posix()
        if rel == "vocabulary.py":
            continue
        spelled += [f"{rel}:{line}: {word!r}" for line, word in _spelled_words(path, words)
                    if (rel, word) not in ALLOWED]
    assert not spelled, "import these from commhub_lib.vocabulary: " + ", ".join(spelled)


def test_the_literal_scan_sees_a_spelled_status(tmp_path: Path) -> None:
    """The scan above finds a retyped word (so its silence means something), and passes field names."""
    probe = tmp_path / "probe.py"
    probe.write_text('"""running"""\nx = "running"\ny = {"progress": 1}\nz = d["progress"]\nT = Literal["idle"]\n',
                     encoding="utf-8")
    assert _spelled_words(probe, {"running", "progress", "idle"}) == [(2, "running"), (5, "idle")]


# --- the hub emits what the vocabulary says --------------------------------------------------------------------

async def test_every_event_the_hub_emits_fits_its_shape(client: httpx.AsyncClient, server: ServerHandle) -> None:
    """A real server through a scenario that emits every delivered event (and each optional field): each
    stored event's data has exactly the declared fields with the declared types."""
    owner = await register(client)
    worker = await create_token(client, owner, name="w", alias="worker")
    await tool(client, worker, "report_status", {"alias": "worker"})
    auth, worker_auth = owner.auth, {"Authorization": f"Bearer {worker}"}

    async def post(path: str, body: dict[str, Any], headers: dict[str, str] = auth) -> dict[str, Any]:
        r = await client.post(path, json=body, headers=headers)
        assert r.status_code == 200, r.text
        return r.json()

    task = await post("/api/tasks", {"to": "worker", "content": "x", "title": "first"})
    await post("/api/messages", {"to": "worker", "content": "hi"})
    await post("/api/broadcast", {"content": "all"})
    await tool(client, worker, "send_reply", {"task_id": task["task_id"], "status": "question", "content": "which?"})
    await post("/api/replies", {"task_id": task["task_id"], "content": "the first"})
    await mcp_call(client, worker, "report_completion", {"task_id": task["task_id"], "result": "done"})
    second = await post("/api/tasks", {"to": "worker", "content": "y"})
    asked = await post("/api/approvals", {"question": "may I?"}, worker_auth)
    await post("/api/replies", {"message_id": asked["approval_id"], "content": "yes"})
    await post(f"/api/tasks/{second['task_id']}/cancel", {"reason": "not needed"})
    # The loop guard (lifted in the tests' settings): a pair limit of 1 a minute, and a second send past it.
    server.hub.settings = dataclasses.replace(server.hub.settings, pair_rate_per_minute=1)
    server.hub.loop_guard = None
    peer = await create_token(client, owner, name="p", alias="peer")
    await tool(client, peer, "report_status", {"alias": "peer"})
    await tool(client, worker, "send_message", {"to": "peer", "content": "one"})
    assert (await tool_error(client, worker, "send_message", {"to": "peer", "content": "two"}))["error"] == \
        "rate_limited"

    rows = event_store.network_events_after(server.hub.db, owner.network_id, 0, 1000)
    seen: dict[str, set[str]] = {}
    for row in rows:
        data = json.loads(row["data"])
        assert row["event"] in EVENTS, row
        assert not fits(EVENTS[row["event"]], data), (row["event"], fits(EVENTS[row["event"]], data), data)
        assert data["type"] == row["event"]
        seen.setdefault(row["event"], set()).update(data)
    assert set(seen) == set(DELIVERED_EVENTS), f"not emitted by the scenario: {set(DELIVERED_EVENTS) - set(seen)}"
    for name, keys in seen.items():
        assert keys == set(EVENTS[name].fields), (name, set(EVENTS[name].fields) - keys)


@pytest.mark.parametrize("name", vocabulary.NETWORK_EVENTS)
def test_the_peoples_consumers_handle_the_network_event(name: str) -> None:
    """An event of the network itself (alias "", for people: vocabulary.NETWORK_EVENTS) never reaches an agent's
    stream, so the channel and `listen` never see it; `tail --network` and the dashboard's feed must show it."""
    assert name not in DELIVERED_EVENTS and EVENTS[name].stored and not EVENTS[name].for_agents
    assert name in tail.TEXTS, f"cli/tail.py TEXTS has no line for {name}"
    line = tail.describe("7", name, "", sample(name))
    assert f"{name} {{" not in line and "\n" not in line, line
    feed = (STATIC / "views-feed.js").read_text(encoding="utf-8")
    table = feed[feed.index("const SUMMARY = {"):]
    assert f"[EVENT.{name.upper()}]:" in table[:table.index("\n};")]
    assert f'"{name.upper()}": "{name}"' in vocabulary.js_module()
