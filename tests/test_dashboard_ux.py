"""What a newcomer met on the dashboard at phone and laptop widths (headless Chromium): the Schedules tab's buttons
stay on screen on a phone, the form says which timing field is missing, and a session card keeps its alias whole
next to a long badge ("waiting for you"). Screenshots go to each test's tmp dir."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.conftest import create_token, own_server, register, tool
from tests.test_dashboard import (  # noqa: F401 (fixtures, markers)
    Browser,
    chrome,
    launch_chrome,
    log_in,
    page,
    pytestmark,
    session_status,
)

# Every schedule's buttons, and how far each one reaches past the window's right edge (0 when on screen).
BUTTONS_PAST_EDGE = """
return [...document.querySelectorAll('#schedules .schedule-actions button')]
  .map((b) => Math.max(0, b.getBoundingClientRect().right - document.documentElement.clientWidth));
"""


async def test_on_a_phone_a_schedules_buttons_are_on_screen_and_its_values_named(page: Browser,  # noqa: F811
                                                                                 client: httpx.AsyncClient) -> None:
    owner = await register(client)
    worker = await create_token(client, owner, name="w", alias="worker")
    await tool(client, worker, "report_status", {"alias": "worker"})
    for body in ({"cron": "*/5 * * * *", "tz": "Europe/Berlin"}, {"every_seconds": 3600, "title": "backups"}):
        r = await client.post("/api/schedules", headers=owner.auth,
                              json={"to": "worker", "content": "Check that last night's backup restores", **body})
        assert r.status_code == 200, r.text
    await log_in(page, owner)
    await page.run(lambda d: d.set_window_size(390, 844))
    await page.open_view("schedules")
    await page.wait_for(lambda d: len(d.execute_script(BUTTONS_PAST_EDGE)) == 6, "two schedules' buttons")
    # Before: a wide table that scrolled sideways inside its card, Pause/Run now/Delete beyond the screen's edge.
    assert await page.run(lambda d: d.execute_script(BUTTONS_PAST_EDGE)) == [0] * 6
    # Each value stands on its own line after its column's name (the header row is hidden on a phone).
    labels = await page.run(lambda d: d.execute_script(
        "return [...document.querySelector('#schedules tbody tr').children]"
        ".map((td) => getComputedStyle(td, '::before').content);"))
    assert labels[:8] == ['"To: "', '"Task: "', '"When: "', '"State: "', '"Next run: "', '"Last run: "',
                          '"Skips: "', '"By: "'], labels
    assert not await page.run(lambda d: d.find_element("css selector", "#schedules thead").is_displayed())
    await page.screenshot("schedules-phone")
    # At laptop width it is a table again, with its header row.
    await page.run(lambda d: d.set_window_size(1280, 900))
    await page.wait_for(lambda d: d.find_element("css selector", "#schedules thead").is_displayed(), "the header")
    await page.screenshot("schedules-laptop")


async def test_the_schedule_form_names_a_missing_timing_field(page: Browser,  # noqa: F811
                                                              client: httpx.AsyncClient) -> None:
    owner = await register(client)
    await log_in(page, owner)
    await page.open_view("schedules")
    await page.type_into("schedule-to", "worker")
    await page.type_into("schedule-content", "run the nightly checks")
    await page.run(lambda d: d.find_element("id", "schedule-every").clear())
    await page.click_css("#schedule-form button[type=submit]")
    # Before: the empty field went to the hub as 0 and came back as "must be greater than or equal to 1".
    await page.wait_for(lambda d: d.find_element("id", "schedule-result").text
                        == "Give the number of seconds between runs.", "the missing seconds named")
    await page.run(lambda d: d.execute_script(
        "const s = document.getElementById('schedule-kind'); s.value = 'cron'; s.dispatchEvent(new Event('change'));"))
    await page.click_css("#schedule-form button[type=submit]")
    await page.wait_for(lambda d: d.find_element("id", "schedule-result").text.startswith(
        "Give the cron expression"), "the missing cron expression named")
    assert (await client.get("/api/schedules", headers=owner.auth)).json()["schedules"] == []


def alias_lines(alias: str) -> Any:
    """How many lines the alias's name takes on its session card."""
    def read(d: Any) -> int:
        return d.execute_script(
            "const el = document.querySelector(`.session[data-alias='${arguments[0]}'] .alias`);"
            "const range = document.createRange(); range.selectNodeContents(el);"
            "return new Set([...range.getClientRects()].map((r) => Math.round(r.top))).size;", alias)
    return read


async def test_a_session_card_keeps_its_alias_whole_beside_a_long_badge(page: Browser,  # noqa: F811
                                                                        client: httpx.AsyncClient) -> None:
    owner = await register(client)
    # Three agents fill the row, so each card is narrow (about 180 px at laptop width).
    tokens = {alias: await create_token(client, owner, name=alias, alias=alias)
              for alias in ("deployer", "ops", "reviewer")}
    for alias, token in tokens.items():
        await tool(client, token, "report_status", {"alias": alias, "status": "working"})
    reviewer = tokens["reviewer"]
    sent = await client.post("/api/tasks", headers=owner.auth, json={"to": "reviewer", "content": "Look at PR 7"})
    task_id = sent.json()["task_id"]
    await tool(client, reviewer, "get_inbox", {})
    await tool(client, reviewer, "send_reply", {"task_id": task_id, "status": "question", "content": "Which PR?"})
    await log_in(page, owner)
    await page.wait_for(lambda d: session_status("reviewer")(d) == "waiting for you", "the waiting badge")
    # Before: the badge squeezed the name into "reviewe" / "r".
    for width in (1280, 1024, 390):
        await page.run(lambda d, w=width: d.set_window_size(w, 900))
        assert await page.run(alias_lines("reviewer")) == 1, width
    await page.run(lambda d: d.set_window_size(1280, 900))
    await page.screenshot("sessions-waiting")


# Answers every download of a file with the hub's 404, as when the file went with its task meanwhile.
FILES_GONE = """
const real = window.fetch;
window.fetch = (url, options) => String(url).startsWith('/api/attachments/')
  ? Promise.resolve(new Response(JSON.stringify({error: 'attachment_not_found',
      message: "attachment 'x' not found in your networks"}), {status: 404}))
  : real(url, options);
"""


async def test_a_replys_file_says_where_it_came_from_and_a_failed_download_is_said(page: Browser,  # noqa: F811
                                                                                  client: httpx.AsyncClient) -> None:
    owner = await register(client)
    worker = await create_token(client, owner, name="w", alias="worker")
    await tool(client, worker, "report_status", {"alias": "worker"})
    task_id = (await client.post("/api/tasks", headers=owner.auth, json={
        "to": "worker", "content": "look at the log", "attachments": [
            {"filename": "test.log", "content_type": "text/plain", "data_base64": "RkFJTEVECg=="}]})).json()["task_id"]
    await tool(client, worker, "get_inbox", {})
    await tool(client, worker, "send_reply", {"task_id": task_id, "status": "question", "content": "Fix both?",
                                              "attachments": [{"filename": "analysis.txt", "data_base64": "b2sK"}]})
    await log_in(page, owner)
    await page.open_view("tasks")
    await page.click_css(f'.task-card[data-task-id="{task_id}"]')
    await page.wait_for(lambda d: len(d.find_elements("css selector", '[data-testid="attachment-link"]')) == 2,
                        "both files")
    items = await page.run(lambda d: [li.text for li in d.find_elements(
        "css selector", '[data-testid="task-attachments"] li')])
    # Before: both looked like the task's own files.
    assert "from" not in items[0] and items[1].endswith("from worker's question"), items
    await page.run(lambda d: d.execute_script(FILES_GONE))
    await page.click_css('[data-testid="attachment-link"]')
    # Before: only a tooltip (title) said so; nothing on the page changed.
    await page.wait_for(lambda d: "download failed: attachment 'x' not found in your networks" in d.find_element(
        "css selector", '[data-testid="task-attachments"] li').text, "the failure beside the link")
    await page.screenshot("task-files")


async def test_many_stuck_tasks_show_three_and_a_button_for_the_rest(tmp_path: Path) -> None:
    # Running tasks are stuck after a second of silence: five of them.
    async with own_server(tmp_path, "stuck", stuck_running_seconds=1.0) as srv:
        async with httpx.AsyncClient(base_url=srv.url, timeout=30) as client:
            owner = await register(client)
            worker = await create_token(client, owner, name="w", alias="worker")
            await tool(client, worker, "report_status", {"alias": "worker"})
            for n in range(5):
                r = await client.post("/api/tasks", headers=owner.auth, json={"to": "worker", "content": f"job {n}"})
                assert r.status_code == 200, r.text
            await tool(client, worker, "get_inbox", {})  # all five running, and nothing more said
            driver = launch_chrome(tmp_path / "profile")
            try:
                page = Browser(driver, srv.url, tmp_path)
                await log_in(page, owner)
                # Before: all five, four lines each, pushed Sessions and Send below the first screen.
                await page.wait_for(lambda d: d.find_element("id", "stuck-count").text == "5", "five stuck tasks")
                assert await page.run(stuck_items) == 3
                more = await page.run(lambda d: d.find_element("id", "stuck-more").text)
                assert more == "Show 2 more stuck tasks"
                await page.click("stuck-more")
                await page.wait_for(lambda d: stuck_items(d) == 5, "all five")
                assert await page.run(lambda d: d.find_element("id", "stuck-more").text) == "Show fewer"
                await page.click("stuck-more")
                await page.wait_for(lambda d: stuck_items(d) == 3, "three again")
                await page.screenshot("stuck-collapsed")
            finally:
                driver.quit()


def stuck_items(d: Any) -> int:
    """How many stuck tasks the Needs you card lists."""
    return len(d.find_elements("css selector", '#stuck [data-testid="stuck-task"]'))
