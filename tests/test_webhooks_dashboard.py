"""The dashboard's Webhooks card (web/static/views-webhooks.js) in headless Chromium: add one (its secret shown
once), read its delivery log, delete it."""

from __future__ import annotations

import httpx

from tests.conftest import create_token, register, tool
from tests.test_dashboard import Browser, chrome, log_in, page, pytestmark  # noqa: F401 (fixtures, markers)


async def test_an_owner_adds_a_webhook_reads_its_log_and_deletes_it(page: Browser,  # noqa: F811
                                                                    client: httpx.AsyncClient) -> None:
    owner = await register(client)
    worker = await create_token(client, owner, name="w", alias="worker")
    await tool(client, worker, "report_status", {"alias": "worker"})
    await log_in(page, owner)
    await page.open_view("network")
    await page.wait_for(lambda d: d.find_element("id", "webhooks-card").is_displayed(), "the Webhooks card")
    await page.type_into("webhook-url", "https://example.invalid/hook")
    await page.click_css("#webhook-form button[type=submit]")
    await page.wait_for(lambda d: "whsec_" in d.find_element("id", "webhook-result").text, "the secret, once")
    await page.wait_for(lambda d: "example.invalid" in d.find_element("id", "webhooks").text, "the webhook listed")
    hooks = (await client.get(f"/api/networks/{owner.network_id}/webhooks", headers=owner.auth)).json()["webhooks"]
    webhook_id = hooks[0]["webhook_id"]
    sent = await client.post("/api/messages", headers=owner.auth, json={"to": "worker", "content": "x"})
    assert sent.status_code == 200
    await page.click_css(f'[data-key="wh-log-{webhook_id}"]')
    await page.wait_for(lambda d: "new_message" in d.find_element("id", "webhooks").text, "the delivery log")
    await page.screenshot("webhooks")
    await page.click_css(f'[data-key="wh-del-{webhook_id}"]')
    await page.wait_for(lambda d: "No webhook" in d.find_element("id", "webhooks").text, "the webhook gone")
