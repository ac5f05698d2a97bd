"""The dashboard in a real headless Chromium (Debian's chromium + chromedriver, driven by Selenium).

The server runs in the test's nursery; every Selenium call blocks, so it runs in a worker thread
(trio.to_thread.run_sync) while the server's loop keeps serving. Agents act over MCP with their own tokens.
Screenshots go to the test's tmp dir (look at them when the page changes).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from commhub_lib.runtime.server import ServerHandle
from tests.conftest import Account, create_token, mcp_call, register

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WAIT_SECONDS = 15


def chrome_available() -> bool:
    """Debian's chromium and chromium-driver, and Selenium, are installed."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return False
    return CHROMIUM.exists() and CHROMEDRIVER.exists()


def launch_chrome(profile: Path) -> Any:
    """Headless Chromium through the system chromedriver: the driver path is given, so Selenium Manager never
    downloads anything; the flags keep Chromium off the network (no updates, sync or QUIC)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1280,900"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)


class Browser:
    """Blocking Selenium calls run in a worker thread, so the server in the test's nursery keeps serving."""

    def __init__(self, driver: Any, base_url: str, shots: Path) -> None:
        self.driver = driver
        self.base_url = base_url
        self.shots = shots

    async def run(self, fn: Callable[[Any], Any]) -> Any:
        """fn(driver) in a thread."""
        return await trio.to_thread.run_sync(fn, self.driver)

    async def wait_for(self, condition: Callable[[Any], Any], what: str, seconds: float = WAIT_SECONDS) -> Any:
        """Wait until condition(driver) is truthy (polled by WebDriverWait), failing with `what`."""
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.support.ui import WebDriverWait

        def wait(d: Any) -> Any:
            return WebDriverWait(d, seconds, poll_frequency=0.05,
                                 ignored_exceptions=(StaleElementReferenceException,)).until(
                condition, f"waited {seconds} s for {what}")
        return await self.run(wait)

    async def open(self, path: str) -> None:
        """Load a page of this test's server."""
        await self.run(lambda d: d.get(self.base_url + path))

    async def open_view(self, name: str) -> None:
        """Switch tab the way a person does (the tab link), without reloading."""
        await self.run(lambda d: d.find_element("css selector", f'.tabs a[data-view="{name}"]').click())
        await self.wait_for(lambda d: d.find_element("id", f"view-{name}").is_displayed(), f"the {name} view")

    async def type_into(self, element_id: str, text: str, clear: bool = False) -> None:
        """Type into a field, as keys."""
        def typing(d: Any) -> None:
            el = d.find_element("id", element_id)
            if clear:
                el.clear()
            el.send_keys(text)
        await self.run(typing)

    async def click(self, element_id: str) -> None:
        """Click an element by id."""
        await self.run(lambda d: d.find_element("id", element_id).click())

    async def click_css(self, selector: str) -> None:
        """Click the first element matching a CSS selector, again if a re-render replaced it meanwhile (stale)."""
        def click(d: Any) -> bool:
            d.find_element("css selector", selector).click()
            return True
        await self.wait_for(click, f"a click on {selector}")

    async def screenshot(self, name: str) -> Path:
        """Save a full-height screenshot of the page under the test's tmp dir."""
        path = self.shots / f"{name}.png"

        def shoot(d: Any) -> None:
            size = d.get_window_size()
            height = d.execute_script("return document.documentElement.scrollHeight")
            d.set_window_size(size["width"], max(size["height"], min(height + 140, 4000)))
            d.save_screenshot(str(path))
            d.set_window_size(size["width"], size["height"])
        await self.run(shoot)
        return path

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not chrome_available(), reason="chromium and chromium-driver are not installed "
                                 "(apt-get install -y chromium chromium-driver; .ci/run does it)")]


@pytest.fixture(scope="module")
def chrome(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One headless Chromium for the module (a fresh profile); each test uses its own server origin."""
    driver = launch_chrome(tmp_path_factory.mktemp("chrome-profile"))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
async def page(chrome: Any, server: ServerHandle, tmp_path: Path) -> Browser:
    """The browser, pointed at this test's server, at laptop size and light colours."""
    browser = Browser(chrome, server.url, tmp_path)
    await browser.run(lambda d: d.set_window_size(1280, 900))
    await browser.run(lambda d: d.execute_cdp_cmd("Emulation.setEmulatedMedia", {
        "features": [{"name": "prefers-color-scheme", "value": "light"}]}))
    return browser


async def log_in(page: Browser, account: Account) -> None:
    """Open the page and log in with the keyboard; marks the window so a reload would be noticed."""
    await page.open("/")
    await page.type_into("login-username", account.username)
    await page.type_into("login-password", account.password + "\n")  # Enter submits the form
    await page.wait_for(lambda d: d.find_element("id", "app-view").is_displayed(), "the app after login")
    await page.wait_for(lambda d: d.find_element("id", "live-state").text == "live", "the live stream")
    await page.run(lambda d: d.execute_script("window.__noReload = true"))


async def still_same_page(page: Browser) -> bool:
    """True while the page was not reloaded since log_in."""
    return await page.run(lambda d: d.execute_script("return window.__noReload === true"))


def session_status(alias: str) -> Callable[[Any], str | None]:
    """The status badge of an alias's session card, or None while it is not shown."""
    def read(d: Any) -> str | None:
        cards = d.find_elements("css selector", f'.session[data-alias="{alias}"] [data-testid="session-status"]')
        return cards[0].text if cards else None
    return read


def task_column(task_id: str) -> Callable[[Any], str | None]:
    """The board column (status) a task's card is in, or None."""
    def read(d: Any) -> str | None:
        cards = d.find_elements("css selector", f'.task-card[data-task-id="{task_id}"]')
        if not cards:
            return None
        return d.execute_script("return arguments[0].closest('.column').dataset.status", cards[0])
    return read


async def test_page_is_served_with_a_strict_content_security_policy(client: httpx.AsyncClient) -> None:
    r = await client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "connect-src 'self'" in csp
    assert "unsafe-inline" not in csp
    html = r.text
    # No inline script, style or handler (the CSP would block them anyway) and nothing from another origin.
    assert "<script>" not in html and " style=" not in html and " onclick=" not in html
    assert "http://" not in html and "https://" not in html
    for asset in ("/assets/app.css", "/assets/main.js", "/assets/stream.js"):
        a = await client.get(asset)
        assert a.status_code == 200, asset
        assert a.headers["content-security-policy"] == csp
    assert (await client.get("/assets/main.js")).headers["content-type"].startswith("text/javascript")
    # Data is rendered as text: no script builds markup from strings.
    static = Path(__file__).parent.parent / "commhub_lib" / "web" / "static"
    for script in static.glob("*.js"):
        code = "\n".join(line for line in script.read_text().splitlines() if not line.lstrip().startswith("//"))
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in code, (script.name, sink)
        assert len(script.read_text().splitlines()) < 400, script.name  # split by idea before it grows past
    assert (await client.get("/assets/nope.js")).status_code == 404
    assert (await client.get("/assets/../routes.py")).status_code == 404
    assert (await client.get("/assets/%2e%2e/routes.py")).status_code == 404


async def test_login_keeps_the_token_out_of_urls_and_a_wrong_password_is_said(
        page: Browser, client: httpx.AsyncClient) -> None:
    account = await register(client)
    await page.open("/")
    await page.type_into("login-username", account.username)
    await page.type_into("login-password", "wrong-password\n")
    await page.wait_for(lambda d: d.find_element("id", "login-error").text, "the login error")
    error = await page.run(lambda d: d.find_element("id", "login-error").text)
    assert "password" in error.lower()
    await page.type_into("login-password", account.password + "\n", clear=True)
    await page.wait_for(lambda d: d.find_element("id", "app-view").is_displayed(), "the app after login")
    stored = await page.run(lambda d: d.execute_script("return sessionStorage.getItem('commhub.login')"))
    token = json.loads(stored)["token"]
    assert token.startswith("utok_")
    url = await page.run(lambda d: d.current_url)
    assert token not in url
    # Every request the page made: none carried the token in its URL.
    urls = await page.run(lambda d: d.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"))
    assert urls and not [u for u in urls if token in u]
    await page.screenshot("after-login")
    # Log out forgets the token.
    await page.click("logout-button")
    await page.wait_for(lambda d: d.find_element("id", "login-view").is_displayed(), "the login form")
    assert await page.run(lambda d: d.execute_script("return sessionStorage.getItem('commhub.login')")) is None


async def test_an_agent_coming_online_appears_without_a_reload(page: Browser, client: httpx.AsyncClient) -> None:
    account = await register(client)
    token = await create_token(client, account, "coder", alias="coder-1")
    await log_in(page, account)
    assert await page.run(session_status("coder-1")) is None
    # The agent connects over MCP after the page is open.
    await mcp_call(client, token, "report_status", {"alias": "coder-1", "status": "working", "agent": "claude-code",
                                                     "task": "Refactor the broker", "progress": "40"})
    await page.wait_for(lambda d: session_status("coder-1")(d) == "working", "coder-1 online and working")
    card = await page.run(lambda d: d.find_element("css selector", '.session[data-alias="coder-1"]').text)
    assert "Refactor the broker" in card and "40%" in card
    await mcp_call(client, token, "report_status", {"status": "idle"})
    await page.wait_for(lambda d: session_status("coder-1")(d) == "idle", "coder-1 idle")
    assert await still_same_page(page)
    await page.screenshot("session-online")
    # From a session to its tasks: the board, filtered to that alias.
    await page.click_css('.session[data-alias="coder-1"] button[aria-label="tasks for coder-1"]')
    await page.wait_for(lambda d: d.find_element("id", "view-tasks").is_displayed(), "the board")
    assert await page.run(lambda d: d.find_element("id", "filter-to").get_attribute("value")) == "coder-1"


async def test_a_task_sent_from_the_page_goes_to_replied_live(page: Browser, client: httpx.AsyncClient) -> None:
    account = await register(client)
    agent = await create_token(client, account, "coder", alias="coder-1")
    await mcp_call(client, agent, "report_status", {"alias": "coder-1", "status": "idle"})
    await log_in(page, account)
    await page.wait_for(lambda d: session_status("coder-1")(d) == "idle", "coder-1 in the sessions")
    title = "Fix <b>the</b> flaky test"  # shown as text, never as markup
    await page.type_into("send-to", "coder-1")
    await page.type_into("send-title", title)
    await page.type_into("send-content", "The SSE test fails one run in ten.")
    await page.click("send-button")
    await page.wait_for(lambda d: "Task sent to coder-1" in d.find_element("id", "send-result").text, "send result")
    tasks = (await client.get("/api/tasks", headers=account.auth)).json()["tasks"]
    assert len(tasks) == 1 and tasks[0]["title"] == title and tasks[0]["from_name"] == account.username
    task_id = tasks[0]["task_id"]

    await page.open_view("tasks")
    await page.wait_for(lambda d: task_column(task_id)(d) == "delivered", "the task in Delivered")
    card = await page.run(lambda d: d.find_element("css selector", f'.task-card[data-task-id="{task_id}"]'))
    assert title in await page.run(lambda d: card.text)
    assert await page.run(lambda d: d.find_elements("css selector", ".board b")) == []
    # The agent picks it up and replies over MCP; the board follows without a reload.
    await mcp_call(client, agent, "get_inbox", {})
    await page.wait_for(lambda d: task_column(task_id)(d) == "running", "the task in Running")
    await mcp_call(client, agent, "send_reply", {"task_id": task_id, "status": "done", "content": "Fixed: a race."})
    await page.wait_for(lambda d: task_column(task_id)(d) == "replied", "the task in Replied")
    await page.screenshot("board-replied")

    # Its page: the timeline and the reply.
    await page.run(lambda d: d.find_element("css selector", f'.task-card[data-task-id="{task_id}"]').click())
    await page.wait_for(lambda d: "Fixed: a race." in d.find_element("id", "task-body").text, "the reply")
    body = await page.run(lambda d: d.find_element("id", "task-body").text)
    for step in ("delivered", "running", "replied"):
        assert step in body
    await page.screenshot("task-page")
    await page.run(lambda d: d.find_element("css selector", "#task-dialog [data-close]").click())

    # The live feed got the reply from the stream (the feed shows only streamed events).
    await page.open_view("overview")
    await page.wait_for(lambda d: "reply (done)" in d.find_element("id", "feed").text, "the reply in the feed")
    assert await still_same_page(page)
    await page.screenshot("overview")


async def test_a_message_and_a_broadcast_reach_the_agents(page: Browser, client: httpx.AsyncClient) -> None:
    account = await register(client)
    agent = await create_token(client, account, "coder", alias="coder-1")
    await mcp_call(client, agent, "report_status", {"alias": "coder-1", "status": "idle"})
    await log_in(page, account)
    await page.run(lambda d: d.find_element("css selector", 'input[name="kind"][value="message"]').click())
    assert await page.run(lambda d: d.find_element("id", "send-title").is_displayed()) is False
    await page.type_into("send-to", "coder-1")
    await page.type_into("send-content", "Please pull main first.")
    await page.click("send-button")
    await page.wait_for(lambda d: d.find_element("id", "send-result").text == "Sent.", "message sent")
    await page.run(lambda d: d.find_element("css selector", 'input[name="kind"][value="broadcast"]').click())
    assert await page.run(lambda d: d.find_element("id", "send-to").is_displayed()) is False
    await page.type_into("send-content", "Deploy freeze at five.")
    await page.click("send-button")
    await page.wait_for(lambda d: "Broadcast to 1" in d.find_element("id", "send-result").text, "broadcast sent")
    inbox = (await mcp_call(client, agent, "get_inbox", {}))["structuredContent"]
    texts = [item["content"] for item in inbox["items"]]
    assert "Please pull main first." in texts and "Deploy freeze at five." in texts
    # A send the hub refuses shows the hub's message.
    await page.run(lambda d: d.find_element("css selector", 'input[name="kind"][value="task"]').click())
    await page.type_into("send-to", "nobody-here")
    await page.type_into("send-content", "hello")
    await page.click("send-button")
    await page.wait_for(lambda d: "nobody-here" in d.find_element("id", "send-result").text, "the refusal")


async def test_creating_a_token_shows_the_config_once(page: Browser, client: httpx.AsyncClient,
                                                      server: ServerHandle) -> None:
    account = await register(client)
    await log_in(page, account)
    await page.open_view("network")
    await page.type_into("token-name", "laptop-claude")
    await page.type_into("token-alias", "coder-7")
    await page.run(lambda d: d.find_element("css selector", '#token-expires option[value="86400"]').click())
    await page.click_css("#token-form button[type=submit]")
    await page.wait_for(lambda d: d.find_element("id", "token-dialog").is_displayed(), "the token dialog")
    blocks = await page.run(lambda d: {
        el.get_attribute("data-client"): el.find_element("css selector", "code").text
        for el in d.find_elements("css selector", "#token-config .config")})
    assert {"Claude Code", "Codex", "Gemini CLI"} <= set(blocks)
    # The agent's token is COMMHUB_AGENT_TOKEN everywhere (COMMHUB_TOKEN is the person's own).
    secret = blocks["Environment"].removeprefix("export COMMHUB_AGENT_TOKEN=")
    assert secret.startswith("ntok_")
    mcp_url = f"{server.url}/mcp"
    claude = json.loads(blocks["Claude Code"])["mcpServers"]["commhub"]
    assert claude["type"] == "http" and claude["url"] == mcp_url
    assert claude["headers"]["Authorization"] == "Bearer ${COMMHUB_AGENT_TOKEN}"
    assert f'url = "{mcp_url}"' in blocks["Codex"]
    assert 'bearer_token_env_var = "COMMHUB_AGENT_TOKEN"' in blocks["Codex"]
    gemini = json.loads(blocks["Gemini CLI"])["mcpServers"]["commhub"]
    assert gemini["httpUrl"] == mcp_url and gemini["headers"]["Authorization"] == "Bearer $COMMHUB_AGENT_TOKEN"
    # And the lines that start each agent so that CommHub wakes it.
    assert blocks["Claude Code (woken by CommHub)"] == "claude --dangerously-load-development-channels server:commhub"
    assert f"commhub run codex --alias coder-7 --url {server.url}" in blocks["Codex or Gemini CLI (woken by CommHub)"]
    assert "coder-7" in blocks["Agent rules"]
    await page.screenshot("token-config")
    # The shown token is real and bound to the alias.
    who = (await mcp_call(client, secret, "whoami"))["structuredContent"]
    assert who["alias"] == "coder-7"
    # Closing the dialog forgets the secret; the list shows the token without it.
    await page.run(lambda d: d.find_element("css selector", "#token-dialog [data-close]").click())
    assert await page.run(lambda d: d.find_element("id", "token-config").text) == ""
    await page.wait_for(lambda d: "laptop-claude" in d.find_element("id", "tokens").text, "the token in the list")
    tokens = (await client.get("/api/tokens", headers=account.auth)).json()["tokens"]
    assert [t["expires_at"] for t in tokens if t["name"] == "laptop-claude"][0]  # it expires (in a day)
    assert secret not in await page.run(lambda d: d.find_element("tag name", "body").text)


async def test_answering_an_agents_question(page: Browser, client: httpx.AsyncClient) -> None:
    account = await register(client)
    agent = await create_token(client, account, "coder", alias="coder-1")
    await mcp_call(client, agent, "report_status", {"alias": "coder-1", "status": "idle"})
    sent = await client.post("/api/tasks", headers=account.auth, json={"to": "coder-1", "content": "Ship it"})
    task_id = sent.json()["task_id"]
    asked = await mcp_call(client, agent, "send_reply", {"task_id": task_id, "status": "question",
                                                         "content": "Which branch?"})
    assert not asked.get("isError"), asked
    await log_in(page, account)
    await page.open_view("tasks")
    await page.wait_for(lambda d: task_column(task_id)(d) == "input_required", "the task under Question")
    await page.click_css(f'.task-card[data-task-id="{task_id}"]')  # the live board may re-render the card
    await page.wait_for(lambda d: "Which branch?" in d.find_element("id", "task-body").text, "the question")
    await page.type_into("answer-content", "Use main.")
    await page.click_css(".answer-form button[type=submit]")
    await page.wait_for(lambda d: "Answer sent." in d.find_element("id", "task-body").text, "answer sent")
    inbox = (await mcp_call(client, agent, "get_inbox", {}))["structuredContent"]
    answers = [i for i in inbox["items"] if i.get("task_id") == task_id and i["content"] == "Use main."]
    assert answers, inbox
    await page.screenshot("question-answered")


async def test_cancelling_a_task_from_its_page(page: Browser, client: httpx.AsyncClient) -> None:
    account = await register(client)
    agent = await create_token(client, account, "coder", alias="coder-1")
    await mcp_call(client, agent, "report_status", {"alias": "coder-1", "status": "idle"})
    task_id = (await client.post("/api/tasks", headers=account.auth, json={
        "to": "coder-1", "content": "Long job", "title": "Long job"})).json()["task_id"]
    await log_in(page, account)
    await page.open_view("tasks")
    await page.wait_for(lambda d: task_column(task_id)(d) == "delivered", "the task in Delivered")
    await page.run(lambda d: d.find_element("css selector", f'.task-card[data-task-id="{task_id}"]').click())
    await page.wait_for(lambda d: d.find_elements("id", "cancel-reason"), "the cancel form")
    await page.type_into("cancel-reason", "not needed")
    await page.click_css(".cancel-form button[type=submit]")
    await page.wait_for(lambda d: task_column(task_id)(d) == "cancelled", "the task in Cancelled")
    task = (await client.get(f"/api/tasks/{task_id}", headers=account.auth)).json()["task"]
    assert task["status"] == "cancelled"


async def test_readable_on_a_phone_and_in_dark_mode(page: Browser, client: httpx.AsyncClient) -> None:
    account = await register(client)
    agent = await create_token(client, account, "coder", alias="coder-1")
    await mcp_call(client, agent, "report_status", {"alias": "coder-1", "status": "working", "task": "Port the CLI",
                                                     "progress": "70"})
    await client.post("/api/tasks", headers=account.auth, json={"to": "coder-1", "content": "x", "title": "A task"})
    await log_in(page, account)
    await page.wait_for(lambda d: session_status("coder-1")(d) == "working", "the session")
    light_bg = await page.run(lambda d: d.execute_script("return getComputedStyle(document.body).backgroundColor"))
    for scheme in ("light", "dark"):
        await page.run(lambda d, s=scheme: d.execute_cdp_cmd("Emulation.setEmulatedMedia", {
            "features": [{"name": "prefers-color-scheme", "value": s}]}))
        for width, height, name in ((1280, 900, "laptop"), (390, 844, "phone")):
            await page.run(lambda d, w=width, h=height: d.set_window_size(w, h))
            for view in ("overview", "tasks", "network"):
                await page.open_view(view)
                # Nothing wider than the window: no sideways scrolling on a phone.
                overflow = await page.run(lambda d: d.execute_script(
                    "return document.documentElement.scrollWidth - document.documentElement.clientWidth"))
                assert overflow <= 0, (scheme, name, view, overflow)
                await page.screenshot(f"{view}-{name}-{scheme}")
    dark_bg = await page.run(lambda d: d.execute_script("return getComputedStyle(document.body).backgroundColor"))
    assert dark_bg != light_bg


async def test_the_sse_parser_splits_lines_only_at_cr_and_lf(page: Browser) -> None:
    await page.open("/")
    result = await page.run(lambda d: d.execute_async_script("""
        const done = arguments[arguments.length - 1];
        import("/assets/stream.js").then(({ SseParser }) => {
          const events = [];
          const p = new SseParser((ev) => events.push(ev));
          // CRLF split across chunks, a bare CR, and U+2028 / U+0085 inside data (not line ends).
          const chunks = ["retry: 3000\\r", "\\nid: 7\\r\\n\\r\\n", ": comment\\n",
            "event: new_task\\rdata: {\\"a\\":", "\\"x\\u2028y\\u0085z\\"}\\n", "id: 8\\n\\n",
            "data: one\\ndata: two\\n\\n"];
          for (const chunk of chunks) p.feed(chunk);
          done({ events, lastId: p.lastId, retry: p.retry });
        }).catch((e) => done({ error: String(e) }));
    """))
    assert "error" not in result, result
    assert result["retry"] == 3000 and result["lastId"] == "8"
    assert result["events"] == [
        {"type": "new_task", "data": '{"a":"x\u2028y\u0085z"}', "id": "8"},
        {"type": "message", "data": "one\ntwo", "id": "8"},
    ]


async def test_owner_creates_a_network_and_an_invite_and_sees_the_new_member(
        page: Browser, client: httpx.AsyncClient) -> None:
    owner = await register(client)
    await log_in(page, owner)
    await page.open_view("network")
    await page.type_into("network-name", "prod")
    await page.click_css("#network-form button[type=submit]")
    await page.wait_for(lambda d: "prod" in [o.text for o in d.find_elements("css selector", "#network-select option")],
                        "the new network in the picker")
    await page.type_into("invite-uses", "2", clear=True)
    await page.click_css("#invite-form button[type=submit]")
    await page.wait_for(lambda d: d.find_elements("css selector", "#invite-result code"), "the invite code")
    code = await page.run(lambda d: d.find_element("css selector", "#invite-result code").text)
    assert code.startswith("inv_")
    newcomer = await register(client)
    joined = await client.post("/api/networks/join", headers=newcomer.auth, json={"invite_code": code})
    assert joined.status_code == 200, joined.text
    await page.open_view("overview")
    await page.open_view("network")  # opening the tab reads it again
    await page.wait_for(lambda d: newcomer.username in d.find_element("id", "members").text, "the new member")
    await page.screenshot("network")
    # Make the newcomer an admin from the members list.
    network_id = await page.run(lambda d: d.find_element("id", "network-select").get_attribute("value"))
    await page.run(lambda d: d.find_element(
        "css selector", f'select[aria-label="role of {newcomer.username}"] option[value="admin"]').click())
    await page.wait_for(lambda d: d.find_element("id", "invite-result").text, "the role change result")
    members = (await client.get(f"/api/networks/{network_id}/members", headers=owner.auth)).json()["members"]
    assert {m["username"]: m["role"] for m in members}[newcomer.username] == "admin"


async def test_the_audit_log_is_for_owners_and_admins(page: Browser, client: httpx.AsyncClient) -> None:
    admin = await register(client)  # the first user of this server: system admin and owner of its network
    await client.post("/api/auth/login", json={"username": admin.username, "password": "not-it"})
    await log_in(page, admin)
    await page.open_view("audit")
    await page.wait_for(lambda d: "token_create" in d.find_element("id", "audit").text, "the network's log")
    assert "login_failed" not in await page.run(lambda d: d.find_element("id", "audit").text)  # not a network's
    # The system admin reads the whole hub's log: a failed login belongs to no network.
    await page.run(lambda d: d.find_element("css selector", '#audit-scope option[value="all"]').click())
    await page.wait_for(lambda d: "login_failed" in d.find_element("id", "audit").text, "the failed login")
    await page.type_into("audit-action", "register\n")
    await page.wait_for(lambda d: "login_failed" not in d.find_element("id", "audit").text, "the filtered log")
    assert "register" in await page.run(lambda d: d.find_element("id", "audit").text)
    await page.screenshot("audit")
    # A plain member of someone else's network is not offered the audit log.
    member = await register(client)
    invite = (await client.post(f"/api/networks/{admin.network_id}/invite", headers=admin.auth, json={})).json()
    await client.post("/api/networks/join", headers=member.auth, json={"invite_code": invite["invite_code"]})
    await page.click("logout-button")
    await page.wait_for(lambda d: d.find_element("id", "login-view").is_displayed(), "the login form")
    await log_in(page, member)
    assert await page.run(lambda d: d.find_element("id", "audit-tab").is_displayed()) is True  # owns its default
    await page.run(lambda d: d.execute_script(
        "const s = document.getElementById('network-select'); s.value = arguments[0];"
        "s.dispatchEvent(new Event('change'))", admin.network_id))
    await page.open_view("audit")
    await page.wait_for(lambda d: "owners and admins" in d.find_element("id", "audit").text, "the refusal")


async def test_log_out_revokes_the_login_when_the_hub_can(page: Browser, client: httpx.AsyncClient) -> None:
    account = await register(client)
    await log_in(page, account)
    token = json.loads(await page.run(lambda d: d.execute_script("return sessionStorage.getItem('commhub.login')")))[
        "token"]
    await page.click("logout-button")
    await page.wait_for(lambda d: d.find_element("id", "login-view").is_displayed(), "the login form")
    after = await client.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert after.status_code == 401


async def test_the_page_works_from_the_keyboard(page: Browser, client: httpx.AsyncClient) -> None:
    from selenium.webdriver.common.keys import Keys

    account = await register(client)
    agent = await create_token(client, account, "coder", alias="coder-1")
    await mcp_call(client, agent, "report_status", {"alias": "coder-1", "status": "idle"})
    await log_in(page, account)

    def tab_to(d: Any, element_id: str, limit: int = 40) -> None:
        body = d.find_element("tag name", "body")
        for _ in range(limit):
            if d.switch_to.active_element.get_attribute("id") == element_id:
                return
            body.send_keys(Keys.TAB) if d.switch_to.active_element is None else d.switch_to.active_element.send_keys(
                Keys.TAB)
        raise AssertionError(f"Tab never reached #{element_id}")

    await page.run(lambda d: d.find_element("id", "send-to").click())
    await page.run(lambda d: d.switch_to.active_element.send_keys("coder-1"))
    await page.run(lambda d: tab_to(d, "send-content"))
    await page.run(lambda d: d.switch_to.active_element.send_keys("From the keyboard"))
    await page.run(lambda d: tab_to(d, "send-button"))
    outline = await page.run(lambda d: d.execute_script(
        "return getComputedStyle(document.activeElement).outlineStyle"))
    assert outline != "none"  # a visible focus ring
    await page.run(lambda d: d.switch_to.active_element.send_keys(Keys.ENTER))
    await page.wait_for(lambda d: "Task sent to coder-1" in d.find_element("id", "send-result").text, "sent")
    task_id = (await client.get("/api/tasks", headers=account.auth)).json()["tasks"][0]["task_id"]
    await page.open_view("tasks")
    await page.wait_for(lambda d: task_column(task_id)(d) == "delivered", "the task")
    card = f'.task-card[data-task-id="{task_id}"]'
    await page.run(lambda d: d.find_element("css selector", card).send_keys(Keys.ENTER))
    await page.wait_for(lambda d: d.find_element("id", "task-dialog").is_displayed(), "the task page")
    await page.run(lambda d: d.switch_to.active_element.send_keys(Keys.ESCAPE))
    await page.wait_for(lambda d: not d.find_element("id", "task-dialog").is_displayed(), "the task page closed")


async def test_the_feed_catches_up_after_its_stream_drops(page: Browser, client: httpx.AsyncClient,
                                                          server: ServerHandle) -> None:
    from commhub_lib.service import accounts

    account = await register(client)
    agent = await create_token(client, account, "coder", alias="coder-1")
    await mcp_call(client, agent, "report_status", {"alias": "coder-1", "status": "idle"})
    broker = server.hub.broker
    await log_in(page, account)
    login = json.loads(await page.run(lambda d: d.execute_script("return sessionStorage.getItem('commhub.login')")))
    token_id = accounts.authenticate(server.hub, login["token"]).token_id
    # The hub ends the page's stream; while the page waits to reconnect (retry: 3000 ms), a task is sent.
    broker.close_token_streams(token_id)
    await page.wait_for(lambda d: d.find_element("id", "live-state").text != "live", "the page to see the drop")
    sent = await client.post("/api/tasks", headers=account.auth, json={"to": "coder-1", "content": "while away",
                                                                         "title": "Sent while away"})
    assert sent.status_code == 200
    assert await page.run(lambda d: d.find_element("id", "live-state").text) != "live"  # sent while it was away
    # The page reconnects with Last-Event-ID and the missed event is replayed into the feed, once.
    await page.wait_for(lambda d: "Sent while away" in d.find_element("id", "feed").text, "the replayed event")
    await page.wait_for(lambda d: d.find_element("id", "live-state").text == "live", "live again")
    feed = await page.run(lambda d: d.find_element("id", "feed").text)
    assert feed.count("Sent while away") == 1
