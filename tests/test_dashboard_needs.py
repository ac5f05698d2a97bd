"""Issue 19 item 6 on the dashboard, in headless Chromium: the Overview leads with "Needs you" (a question with its
text, answered right there; the agent's card says "waiting for you"), the live feed opens with the network's recent
events (a reply with its text, nothing twice once live ones follow), the opt-in browser notification (asked only on
a click, remembered), the task dialog's question before its answer box, and board cards that wrap between words.
Screenshots go to each test's tmp dir (looked at when the page changes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from commhub_lib.config import Settings
from commhub_lib.runtime.server import ServerHandle
from tests.conftest import create_token, make_settings, register, tool, tool_error
from tests.test_dashboard import (  # noqa: F401 (fixtures)
    Browser,
    chrome,
    chrome_available,
    log_in,
    page,
    session_status,
    task_column,
)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """This module's server: a running task is stuck after a second of silence; the loop guard cuts at 3 a minute."""
    return make_settings(tmp_path, stuck_running_seconds=1.0, pair_rate_per_minute=3)


pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not chrome_available(), reason="chromium and chromium-driver are not installed")]

# Counts the page's permission requests and the notifications it shows (installed before any script of the page).
NOTIFICATION_SPY = """
(() => {
  window.__asked = 0;
  window.__shown = [];
  const Real = window.Notification;
  if (!Real) return;
  class Spy extends Real {
    constructor(title, options) { window.__shown.push([title, options && options.body]); super(title, options); }
  }
  Spy.requestPermission = (...args) => { window.__asked += 1; return Real.requestPermission(...args); };
  window.Notification = Spy;
})();
"""


async def asked_task(client: httpx.AsyncClient, account: Any, question: str, title: str = "Ship the release"
                     ) -> tuple[str, str]:
    """A task from the person that the agent `coder-1` took and asked about; the agent's token and the task id."""
    agent = await create_token(client, account, "coder", alias="coder-1")
    await tool(client, agent, "report_status", {"alias": "coder-1", "status": "working", "task": title})
    sent = await client.post("/api/tasks", headers=account.auth, json={"to": "coder-1", "content": "Tag and push it",
                                                                      "title": title})
    task_id = sent.json()["task_id"]
    await tool(client, agent, "get_inbox", {})
    await tool(client, agent, "send_reply", {"task_id": task_id, "status": "question", "content": question})
    return agent, task_id


async def test_the_overview_leads_with_a_question_answered_right_there(page: Browser,  # noqa: F811
                                                                      client: httpx.AsyncClient) -> None:
    account = await register(client)
    agent, task_id = await asked_task(client, account, "Tag it v2.0 or v2.0.0?")
    await log_in(page, account)
    item = f'#questions [data-testid="question"][data-task-id="{task_id}"]'
    await page.wait_for(lambda d: d.find_elements("css selector", item), "the question under Needs you")
    text = await page.run(lambda d: d.find_element("css selector", item).text)
    assert "Tag it v2.0 or v2.0.0?" in text and "coder-1 asks you" in text and "Ship the release" in text
    assert "Tag and push it" in text  # the start of the task itself
    # The Overview leads with it: the card is the first thing of the view.
    first = await page.run(lambda d: d.execute_script(
        "return document.querySelector('#view-overview > .card:not([hidden])').id"))
    assert first == "needs-card"
    # The agent's card does not say "working" while its task waits on the person.
    await page.wait_for(lambda d: session_status("coder-1")(d) == "waiting for you", "the session waiting for you")
    await page.screenshot("needs-question")

    await page.type_into(f"needs-answer-{task_id}", "v2.0.0")
    await page.click_css(f'{item} button[type="submit"]')
    await page.wait_for(lambda d: not d.find_element("id", "needs-questions").is_displayed(), "the question gone")
    inbox = await tool(client, agent, "get_inbox", {})
    assert any(i.get("task_id") == task_id and i["content"] == "v2.0.0" for i in inbox["items"]), inbox
    await page.wait_for(lambda d: d.find_element("id", "needs-empty").is_displayed(), "nothing needs the person")
    await tool(client, agent, "send_reply", {"task_id": task_id, "status": "progress", "content": "tagging"})
    await page.wait_for(lambda d: session_status("coder-1")(d) == "working", "working again")


async def test_the_feed_opens_with_recent_events_and_shows_a_replys_text(page: Browser,  # noqa: F811
                                                                         client: httpx.AsyncClient) -> None:
    account = await register(client)
    agent = await create_token(client, account, "coder", alias="coder-1")
    await tool(client, agent, "report_status", {"alias": "coder-1"})
    first = (await client.post("/api/tasks", headers=account.auth, json={
        "to": "coder-1", "content": "Run the tests", "title": "Run the tests"})).json()["task_id"]
    await tool(client, agent, "send_reply", {"task_id": first, "status": "done", "content": "All 41 tests pass"})
    await log_in(page, account)
    # Before anything happens while the page is open, the feed already shows what happened before.
    feed = await page.run(lambda d: d.find_element("id", "feed").text)
    assert "Run the tests" in feed and "reply (done): All 41 tests pass" in feed, feed
    assert not await page.run(lambda d: d.find_element("id", "feed-empty").is_displayed())
    # Live ones follow without repeating the opening ones; a live reply gets its text too.
    second = (await client.post("/api/tasks", headers=account.auth, json={
        "to": "coder-1", "content": "Lint it", "title": "Lint it"})).json()["task_id"]
    await tool(client, agent, "send_reply", {"task_id": second, "status": "failed", "content": "3 lint errors"})
    await page.wait_for(lambda d: "reply (failed): 3 lint errors" in d.find_element("id", "feed").text,
                        "the live reply with its text")
    feed = await page.run(lambda d: d.find_element("id", "feed").text)
    assert feed.count("All 41 tests pass") == 1 and feed.count("Run the tests") == 1, feed
    ids = await page.run(lambda d: d.execute_script(
        "return [...document.querySelectorAll('#feed .feed-item')].map((li) => li.dataset.eventId)"))
    assert len(ids) == len(set(ids)) == 4, ids
    await page.screenshot("feed-prefilled")


async def test_notifications_are_asked_for_only_on_a_click_and_remembered(
        page: Browser, client: httpx.AsyncClient, server: ServerHandle) -> None:  # noqa: F811
    account = await register(client)
    spy = await page.run(lambda d: d.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument",
                                                     {"source": NOTIFICATION_SPY}))
    try:
        await log_in(page, account)
        assert await page.run(lambda d: d.execute_script("return window.__asked")) == 0  # never on page load
        assert await page.run(lambda d: d.execute_script("return Notification.permission")) == "default"
        toggle = await page.run(lambda d: d.find_element("id", "notify-toggle").get_attribute("aria-pressed"))
        assert toggle == "false"
        await page.run(lambda d: d.execute_cdp_cmd("Browser.grantPermissions", {
            "permissions": ["notifications"], "origin": server.url}))
        await page.click("notify-toggle")
        await page.wait_for(lambda d: d.find_element("id", "notify-toggle").get_attribute("aria-pressed") == "true",
                            "notifications on")
        assert await page.run(lambda d: d.execute_script("return window.__asked")) == 1
        assert await page.run(lambda d: d.execute_script("return localStorage.getItem('commhub.notify-questions')")) \
            == "on"

        # A question for the person arrives: one notification, with the question.
        _, task_id = await asked_task(client, account, "May I drop the old table?")
        await page.wait_for(lambda d: d.execute_script("return window.__shown.length") >= 1, "the notification")
        shown = await page.run(lambda d: d.execute_script("return window.__shown"))
        assert shown == [["coder-1 asks you", "May I drop the old table?"]], shown

        # Remembered across a reload, still without asking on load; the question already there is no news.
        await page.open("/")
        await page.wait_for(lambda d: d.find_element("id", "app-view").is_displayed(), "the app again")
        await page.wait_for(lambda d: d.find_elements("css selector", f'#questions [data-task-id="{task_id}"]'),
                            "the question after the reload")
        assert await page.run(lambda d: d.execute_script("return window.__asked")) == 0
        assert await page.run(lambda d: d.find_element("id", "notify-toggle").get_attribute("aria-pressed")) == "true"
        assert await page.run(lambda d: d.execute_script("return window.__shown.length")) == 0
        # Off again with a click.
        await page.click("notify-toggle")
        await page.wait_for(lambda d: d.find_element("id", "notify-toggle").get_attribute("aria-pressed") == "false",
                            "notifications off")
        await page.screenshot("needs-notify")
    finally:
        await page.run(lambda d: d.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument",
                                                   {"identifier": spy["identifier"]}))
        await page.run(lambda d: d.execute_cdp_cmd("Browser.resetPermissions", {}))
        await page.run(lambda d: d.execute_script("localStorage.clear()"))


async def test_the_task_dialog_shows_the_question_before_the_answer_box(page: Browser,  # noqa: F811
                                                                        client: httpx.AsyncClient) -> None:
    account = await register(client)
    _, task_id = await asked_task(client, account, "Which changelog entry should I use for this?")
    await log_in(page, account)
    await page.open_view("tasks")
    await page.wait_for(lambda d: task_column(task_id)(d) == "input_required", "the task under Question")
    await page.click_css(f'.task-card[data-task-id="{task_id}"]')
    await page.wait_for(lambda d: d.find_elements("id", "answer-content"), "the answer box")
    question = await page.run(lambda d: d.find_element("css selector", '#task-body [data-testid="task-question"]').text)
    assert question == "Which changelog entry should I use for this?"
    before = await page.run(lambda d: d.execute_script(
        "const q = document.querySelector('#task-body [data-testid=\"task-question\"]');"
        "const box = document.getElementById('answer-content');"
        "return Boolean(q.compareDocumentPosition(box) & Node.DOCUMENT_POSITION_FOLLOWING);"))
    assert before, "the question must come before the answer box"
    await page.screenshot("dialog-question-first")


@pytest.mark.slow  # four screenshots at two sizes
async def test_all_three_parts_read_well_on_a_laptop_and_a_phone(page: Browser,  # noqa: F811
                                                                 client: httpx.AsyncClient) -> None:
    """A question, stuck tasks (flagged; silent) and a broken loop together, light and dark, laptop and phone: nothing
    wider than the window (screenshots looked at)."""
    account = await register(client)
    _, asked = await asked_task(client, account, "Should the migration run before or after the deploy?")
    quiet = await create_token(client, account, "quiet", alias="quiet-worker-with-a-long-alias")
    await tool(client, quiet, "report_status", {"alias": "quiet-worker-with-a-long-alias", "status": "working"})
    for title in ("Rebuild the search index", "Rotate the staging certificates"):
        await client.post("/api/tasks", headers=account.auth, json={
            "to": "quiet-worker-with-a-long-alias", "content": title, "title": title})
    taken = (await tool(client, quiet, "get_inbox", {}))["open_tasks"]
    flagged = next(t["task_id"] for t in taken if t["title"] == "Rotate the staging certificates")
    await client.post(f"/api/tasks/{flagged}/flag", headers={"Authorization": f"Bearer {quiet}"},
                      json={"flag": "unanswered"})
    ping = await create_token(client, account, "ping", alias="ping")
    await tool(client, ping, "report_status", {"alias": "ping"})
    for n in range(3):
        await tool(client, ping, "send_message", {"to": "coder-1", "content": f"again {n}"})
    assert (await tool_error(client, ping, "send_message", {"to": "coder-1", "content": "and again"}))["error"] \
        == "rate_limited"
    await log_in(page, account)
    await page.wait_for(lambda d: d.find_elements("css selector", f'#questions [data-task-id="{asked}"]'), "question")
    await page.wait_for(lambda d: len(d.find_elements("css selector", "#stuck li")) == 2, "two stuck tasks")
    await page.wait_for(lambda d: d.find_element("id", "loops-card").is_displayed(), "the loop")
    reasons = await page.run(lambda d: d.execute_script(
        "return [...document.querySelectorAll('#stuck li')].map((li) => li.dataset.reason).sort()"))
    assert reasons == ["silent", "unanswered"], reasons
    for scheme in ("light", "dark"):
        await page.run(lambda d, s=scheme: d.execute_cdp_cmd("Emulation.setEmulatedMedia", {
            "features": [{"name": "prefers-color-scheme", "value": s}]}))
        for width, height, name in ((1280, 900, "laptop"), (390, 844, "phone")):
            await page.run(lambda d, w=width, h=height: d.set_window_size(w, h))
            overflow = await page.run(lambda d: d.execute_script(
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth"))
            assert overflow <= 0, (scheme, name, overflow)
            await page.screenshot(f"needs-{name}-{scheme}")
    await page.run(lambda d: d.set_window_size(1280, 900))
    await page.run(lambda d: d.execute_cdp_cmd("Emulation.setEmulatedMedia", {
        "features": [{"name": "prefers-color-scheme", "value": "light"}]}))


LONG_URL = "https://ci.example.com/builds/2026-12-07/pipelines/very-long-pipeline-name-without-any-break/logs.txt"
WORDY = "Investigate intermittently failing authentication integration tests on staging"


async def test_board_cards_wrap_between_words_and_long_urls_stay_inside(page: Browser,  # noqa: F811
                                                                        client: httpx.AsyncClient) -> None:
    account = await register(client)
    agent = await create_token(client, account, "coder", alias="coder-1")
    await tool(client, agent, "report_status", {"alias": "coder-1"})
    for title in (WORDY, LONG_URL):
        await client.post("/api/tasks", headers=account.auth, json={"to": "coder-1", "content": title, "title": title})
    await log_in(page, account)
    await page.open_view("tasks")
    await page.wait_for(lambda d: len(d.find_elements("css selector", ".task-card")) == 2, "the two cards")
    for width, height, name in ((1280, 900, "laptop"), (390, 844, "phone")):
        await page.run(lambda d, w=width, h=height: d.set_window_size(w, h))
        wrap = await page.run(lambda d: d.execute_script(
            "return getComputedStyle(document.querySelector('.task-card .task-title')).overflowWrap"))
        assert wrap == "break-word", wrap  # not `anywhere`, which lets a squeezed card break words letter by letter
        checked = await page.run(lambda d: d.execute_script(WRAP_CHECK, WORDY))
        assert checked["brokenWords"] == [], (name, checked)
        assert checked["overflowing"] == [], (name, checked)
        overflow = await page.run(lambda d: d.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"))
        assert overflow <= 0, (name, overflow)
        await page.screenshot(f"board-wrap-{name}")
    await page.run(lambda d: d.set_window_size(1280, 900))


# For each card title: the words of WORDY that a line break cuts (a Range per word, more than one line box means it was
# split), and the cards whose content is wider than the card.
WRAP_CHECK = """
const wordy = arguments[0];
const broken = [];
for (const el of document.querySelectorAll('.task-card .task-title')) {
  if (el.textContent !== wordy) continue;
  const node = el.firstChild;
  let at = 0;
  for (const word of wordy.split(' ')) {
    const start = node.textContent.indexOf(word, at);
    const range = document.createRange();
    range.setStart(node, start);
    range.setEnd(node, start + word.length);
    const tops = new Set([...range.getClientRects()].map((r) => Math.round(r.top)));
    if (tops.size > 1) broken.push(word);
    at = start + word.length;
  }
}
const overflowing = [...document.querySelectorAll('.task-card')]
  .filter((card) => card.scrollWidth > card.clientWidth + 1)
  .map((card) => card.textContent.slice(0, 40));
return {brokenWords: broken, overflowing};
"""
