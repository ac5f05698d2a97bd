"""The dashboard's Schedules tab (web/static/views-schedules.js) in headless Chromium: create a cron schedule with
the form, see its next run, run it now, pause and resume it, delete it."""

from __future__ import annotations

import httpx

from tests.conftest import create_token, register, tool
from tests.test_dashboard import Browser, chrome, log_in, page, pytestmark  # noqa: F401 (fixtures, markers)


def schedules_text(d: object) -> str:
    """The text of the schedules table."""
    return d.find_element("id", "schedules").text  # type: ignore[attr-defined]


async def test_a_person_creates_runs_pauses_and_deletes_a_schedule(page: Browser,  # noqa: F811
                                                                   client: httpx.AsyncClient) -> None:
    owner = await register(client)
    worker = await create_token(client, owner, name="w", alias="worker")
    await tool(client, worker, "report_status", {"alias": "worker"})
    await log_in(page, owner)
    await page.open_view("schedules")
    await page.wait_for(lambda d: "No schedule" in schedules_text(d), "the empty Schedules tab")
    await page.type_into("schedule-to", "worker")
    await page.type_into("schedule-content", "run the nightly checks")
    await page.run(lambda d: d.execute_script(
        "const s = document.getElementById('schedule-kind'); s.value = 'cron';"
        "s.dispatchEvent(new Event('change'));"))
    await page.wait_for(lambda d: d.find_element("id", "schedule-cron").is_displayed(), "the cron field")
    assert not await page.run(lambda d: d.find_element("id", "schedule-every").is_displayed())
    await page.type_into("schedule-cron", "0 3 * * *")
    await page.type_into("schedule-tz", "Europe/Berlin", clear=True)
    await page.click_css("#schedule-form button[type=submit]")
    await page.wait_for(lambda d: "created; next run" in d.find_element("id", "schedule-result").text,
                        "the schedule created")
    await page.wait_for(lambda d: "cron 0 3 * * *\nEurope/Berlin" in schedules_text(d), "the schedule listed")
    listed = (await client.get("/api/schedules", headers=owner.auth)).json()["schedules"]
    assert len(listed) == 1 and listed[0]["tz"] == "Europe/Berlin" and listed[0]["from_name"] == owner.username
    sid = listed[0]["schedule_id"]
    # Run now: a task to the worker at once; again while it is open: skipped, and the page says why.
    await page.click_css(f'[data-key="sch-run-{sid}"]')
    await page.wait_for(lambda d: d.find_element("id", "schedule-result").text.startswith("Ran: task"), "a run")
    await page.wait_for(lambda d: "delivered" in schedules_text(d), "the last run's status")
    await page.click_css(f'[data-key="sch-run-{sid}"]')
    await page.wait_for(lambda d: "still open" in d.find_element("id", "schedule-result").text, "a skipped run")
    await page.click_css(f'[data-key="sch-pause-{sid}"]')
    await page.wait_for(lambda d: "paused" in schedules_text(d), "the schedule paused")
    await page.screenshot("schedules-paused")
    await page.click_css(f'[data-key="sch-resume-{sid}"]')
    await page.wait_for(lambda d: "active" in schedules_text(d), "the schedule resumed")
    await page.screenshot("schedules")
    # On a phone in dark colours: nothing wider than the window (the table scrolls inside its card).
    await page.run(lambda d: d.execute_cdp_cmd("Emulation.setEmulatedMedia", {
        "features": [{"name": "prefers-color-scheme", "value": "dark"}]}))
    await page.run(lambda d: d.set_window_size(390, 844))
    overflow = await page.run(lambda d: d.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth"))
    assert overflow <= 0
    await page.screenshot("schedules-phone-dark")
    await page.run(lambda d: d.set_window_size(1280, 900))
    await page.click_css(f'[data-key="sch-del-{sid}"]')
    await page.wait_for(lambda d: "No schedule" in schedules_text(d), "the schedule gone")
    assert (await client.get("/api/schedules", headers=owner.auth)).json()["schedules"] == []
