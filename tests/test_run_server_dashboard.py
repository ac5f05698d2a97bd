"""The dashboard shows what `commhub run` asks of people (docs/runner-server.md): a task's flag on its board card and
in its dialog, and agents' approval requests under Overview -> "Needs you" (its Questions and Stuck tasks parts),
answered from there."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import create_token, register, tool
from tests.test_dashboard import Browser, chrome, chrome_available, log_in, page, task_column  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not chrome_available(), reason="chromium and chromium-driver are not installed")]


async def test_a_flagged_task_shows_its_badge_on_the_board_and_in_its_dialog(page: Browser,  # noqa: F811
                                                                             client: httpx.AsyncClient) -> None:
    account = await register(client)
    worker = await create_token(client, account, "worker", alias="worker")
    await tool(client, worker, "report_status", {"alias": "worker", "status": "idle"})
    sent = await client.post("/api/tasks", headers=account.auth, json={"to": "worker", "content": "Port the parser",
                                                                      "title": "Port the parser"})
    task_id = sent.json()["task_id"]
    await tool(client, worker, "get_inbox", {})
    await log_in(page, account)
    await page.open_view("tasks")
    await page.wait_for(lambda d: task_column(task_id)(d) == "running", "the task under Running")
    card = f'.task-card[data-task-id="{task_id}"]'
    assert not await page.run(lambda d: d.find_elements("css selector", f'{card} [data-testid="task-flag"]'))

    # The runner flags it while the page is open: the badge appears without a reload.
    r = await client.post(f"/api/tasks/{task_id}/flag", headers={"Authorization": f"Bearer {worker}"},
                          json={"flag": "unanswered", "note": "the turn ended without a reply"})
    assert r.status_code == 200, r.text
    await page.wait_for(lambda d: d.find_elements("css selector", f'{card} [data-testid="task-flag"]'),
                        "the flag badge on the card")
    badge = await page.run(lambda d: d.find_element("css selector", f'{card} [data-testid="task-flag"]').text)
    assert "unanswered" in badge
    await page.screenshot("board-flagged")

    await page.click_css(card)
    await page.wait_for(lambda d: d.find_elements("css selector", '#task-body [data-testid="task-flag"]'),
                        "the flag badge in the dialog")
    text = await page.run(lambda d: d.find_element("id", "task-body").text)
    assert "unanswered" in text and "the turn ended without a reply" in text  # the badge and the timeline
    await page.screenshot("task-flagged")


async def test_an_approval_waits_on_the_overview_and_allow_answers_it(page: Browser,  # noqa: F811
                                                                      client: httpx.AsyncClient) -> None:
    account = await register(client)
    worker = await create_token(client, account, "worker", alias="worker")
    await tool(client, worker, "report_status", {"alias": "worker", "status": "working"})
    await log_in(page, account)
    assert not await page.run(lambda d: d.find_element("id", "needs-questions").is_displayed())
    r = await client.post("/api/approvals", headers={"Authorization": f"Bearer {worker}"},
                          json={"question": "May I run `npm publish`?"})
    approval_id = r.json()["approval_id"]
    await page.wait_for(lambda d: d.find_element("id", "needs-questions").is_displayed(), "the approval's question")
    item = f'[data-approval-id="{approval_id}"]'
    assert "npm publish" in await page.run(lambda d: d.find_element("css selector", item).text)
    await page.screenshot("approval-waiting")
    await page.click_css(f'{item} button[data-key="allow-{approval_id}"]')
    await page.wait_for(lambda d: not d.find_element("id", "needs-questions").is_displayed(), "the question gone")
    got = (await client.get(f"/api/approvals/{approval_id}", headers=account.auth)).json()
    assert got["status"] == "approved" and got["answer"] == "yes" and got["answered_by"] == account.username


async def test_a_flagged_open_task_waits_on_the_overview_until_it_is_answered(page: Browser,  # noqa: F811
                                                                             client: httpx.AsyncClient) -> None:
    account = await register(client)
    worker = await create_token(client, account, "worker", alias="worker")
    await tool(client, worker, "report_status", {"alias": "worker", "status": "idle"})
    sent = await client.post("/api/tasks", headers=account.auth, json={"to": "worker", "content": "Fix the flaky test",
                                                                      "title": "Fix the flaky test"})
    task_id = sent.json()["task_id"]
    await tool(client, worker, "get_inbox", {})
    await log_in(page, account)
    r = await client.post(f"/api/tasks/{task_id}/flag", headers={"Authorization": f"Bearer {worker}"},
                          json={"flag": "unanswered"})
    assert r.status_code == 200, r.text
    item = f'[data-testid="flagged-task"][data-task-id="{task_id}"]'
    await page.wait_for(lambda d: d.find_elements("css selector", item), "the flagged task on the Overview")
    text = await page.run(lambda d: d.find_element("css selector", item).text)
    assert "worker did not answer" in text and "Fix the flaky test" in text
    assert await page.run(lambda d: d.find_element("id", "needs-stuck").is_displayed())
    await page.screenshot("overview-flagged")
    await page.click_css(f'{item} button')
    await page.wait_for(lambda d: d.find_elements("css selector", '#task-body [data-testid="task-flag"]'),
                        "the task's dialog with its flag")
    await page.run(lambda d: d.find_element("css selector", "#task-dialog [data-close]").click())
    # Answered at last: nothing waits any more.
    await tool(client, worker, "send_reply", {"task_id": task_id, "status": "done", "content": "fixed"})
    await page.wait_for(lambda d: not d.find_element("id", "needs-stuck").is_displayed(), "the stuck task gone")
