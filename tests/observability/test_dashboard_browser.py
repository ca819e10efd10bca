"""The dashboard in a real headless browser: Debian's chromium, driven by selenium.

The server binds 0.0.0.0 with a token, and the browser reaches it on the
machine's non-loopback address (127.0.0.1 when it has none). Without the
token the page is refused; with it the page shows a job appear, show its
progress and finish, and requeues a dead letter when its button is clicked.

Without chromium, chromedriver or selenium the test skips, saying which is
missing, except under CI (``.ci/run`` sets CI and installs them), where it fails.

``GUILD_DASHBOARD_SCREENSHOT=docs/dashboard.png`` saves the screenshot in the
docs (taken with jobs running and dead letters listed).
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

import guild
from guild import JobStatus

from .dashboard_app import Site, site

TOKEN = "dashboard-browser-token"
pytestmark = pytest.mark.slow


def _unavailable(problem: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI is set, and the dashboard's browser test cannot run: {problem}")
    pytest.skip(problem)


@pytest.fixture
def driver() -> Iterator[Any]:
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or chromedriver is None:
        _unavailable(
            "chromium and chromedriver are needed (apt-get install chromium chromium-driver)"
        )
    try:
        from selenium import webdriver
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _unavailable("selenium is not installed (pip install -e '.[test]')")
    options = webdriver.ChromeOptions()
    options.binary_location = str(chromium)
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in a container has no user namespace for chromium's own
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1360,1240",
    ):
        options.add_argument(argument)
    try:
        browser = webdriver.Chrome(options=options, service=Service(str(chromedriver)))
    except WebDriverException as exc:
        _unavailable(f"chromium did not start: {exc.msg}")
    try:
        yield browser
    finally:
        browser.quit()


def _outward_address() -> str:
    """This machine's non-loopback IPv4 address, or 127.0.0.1 when it has none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            # A UDP connect sends nothing; it only picks the outgoing interface.
            probe.connect(("192.0.2.1", 9))
        except OSError:
            return "127.0.0.1"
        return str(probe.getsockname()[0])


class Page:
    """The browser, from Trio: every selenium call runs in a thread."""

    def __init__(self, browser: Any) -> None:
        self.browser = browser

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await trio.to_thread.run_sync(fn, *args)

    async def get(self, url: str) -> None:
        await self.call(self.browser.get, url)

    async def js(self, script: str, *args: Any) -> Any:
        return await self.call(self.browser.execute_script, script, *args)

    async def until(self, script: str, *args: Any) -> Any:
        """Poll ``script`` until it returns something truthy (bounded by the caller)."""
        while True:
            value = await self.js(script, *args)
            if value:
                return value
            await trio.sleep(0.05)

    async def click(self, selector: str) -> None:
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.common.by import By

        def click() -> bool:
            try:
                self.browser.find_element(By.CSS_SELECTOR, selector).click()
            except StaleElementReferenceException:
                return False  # re-rendered between finding and clicking
            return True

        while True:
            if await self.call(click):
                return
            await trio.sleep(0.05)


ROW = "return document.querySelector(`#${arguments[0]} tbody tr[data-id='${arguments[1]}']`)"
GONE = "return !document.querySelector(`#${arguments[0]} tbody tr[data-id='${arguments[1]}']`)"
TEXT = "const e = document.querySelector(arguments[0]); return e ? e.textContent : null"
DONE_COUNT = (
    "const r = document.querySelector(`#queues tr[data-queue='${arguments[0]}']`);"
    " return r !== null && r.cells[4].textContent === arguments[1]"
)


async def test_the_dashboard_in_a_real_browser(driver: Any, tmp_path: Path) -> None:
    page = Page(driver)
    address = _outward_address()
    with trio.fail_after(60):
        async with site(tmp_path, host="0.0.0.0", token=TOKEN) as s:
            url = f"http://{address}:{s.port}"
            await _refused_without_the_token(page, s, url)

            await page.get(f"{url}/?token={TOKEN}")
            assert await page.js("return location.pathname + location.search") == "/"
            await page.until("return document.getElementById('live').textContent === 'live'")

            # A job appears while it runs, and goes when it finishes.
            job = await s.app.enqueue("slow", {"order": 1}, broker=s.broker)
            await page.until(ROW, "running", job.id)
            age = await page.js(TEXT, f"#running tr[data-id='{job.id}'] .age")
            assert age.endswith("s"), age
            # Its progress comes over /events (the handler reports half, then waits).
            await page.until(
                "const e = document.querySelector(`#running tr[data-id='${arguments[0]}'] .progress`);"
                " return e !== null && e.textContent.trim() === '50% half packed'"
                " && e.querySelector('progress').value === 0.5",
                job.id,
            )
            s.release(job.id)
            await page.until(GONE, "running", job.id)
            await page.until(DONE_COUNT, "slow", "1")

            # With some jobs running and two dead letters: the screenshot.
            busy = [await s.app.enqueue("slow", {"order": n}, broker=s.broker) for n in (2, 3)]
            dead = [await s.app.enqueue("flaky", n, broker=s.broker) for n in (41, 42)]
            for letter in dead:
                await page.until(ROW, "dead", letter.id)
                await page.until(ROW, "failures", letter.id)
            for running in busy:
                await page.until(ROW, "running", running.id)
            order = guild.chain(
                guild.Step("pack", "slow", {"order": 4}),
                guild.Step("ship", "slow", {"order": 4}),
                name="order-4",
            )
            workflow_id = await s.app.submit(order)
            await page.until(ROW, "workflows", workflow_id)
            steps = await page.until(
                "const e = document.querySelector(`#workflows tr[data-id='${arguments[0]}'] .steps`);"
                " return e && e.textContent.includes('pack') ? e.textContent : null",
                workflow_id,
            )
            assert steps.startswith("0/2"), steps
            # A dead letter's traceback opens under its error.
            await page.click(f"#dead tr[data-id='{dead[1].id}'] summary")
            traceback = await page.until(TEXT, f"#dead tr[data-id='{dead[1].id}'] pre")
            assert "ConnectionError: the warehouse refused parcel 42" in traceback
            await _screenshot(page, tmp_path)

            # Requeue one dead letter by clicking its button; it now succeeds.
            s.failing = False
            await page.click(f"#dead button.requeue[data-id='{dead[0].id}']")
            await page.until(GONE, "dead", dead[0].id)
            result = await s.broker.get_result(dead[0].id, wait=10)
            message = await page.until(TEXT, "#message")
            still_dead = await page.js(ROW, "dead", dead[1].id)
            for running in busy:
                s.release(running.id)
    assert result is not None and result.status is JobStatus.DONE
    assert message == "requeued 1 job"
    assert still_dead is not None


async def _refused_without_the_token(page: Page, s: Site, url: str) -> None:
    """The page, its state, its actions and /events all refuse a request without it."""
    await page.get(f"{url}/")
    body = await page.js("return document.body.innerText")
    assert "a valid token is needed" in body, body
    async with httpx.AsyncClient(base_url=url) as client:
        statuses = [
            (await client.get("/")).status_code,
            (await client.get("/api/state")).status_code,
            (await client.post("/api/dead/requeue", json={"ids": ["x"]})).status_code,
            (await client.get("/events", headers=_upgrade())).status_code,
        ]
    assert statuses == [401, 401, 401, 403]


def _upgrade() -> dict[str, str]:
    return {
        "connection": "Upgrade",
        "upgrade": "websocket",
        "sec-websocket-version": "13",
        "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
    }


async def _screenshot(page: Page, tmp_path: Path) -> None:
    target = os.environ.get("GUILD_DASHBOARD_SCREENSHOT") or str(tmp_path / "dashboard.png")
    height = await page.js("return document.documentElement.scrollHeight")
    # The window's height includes what is not page; a margin keeps the last table whole.
    await page.call(page.browser.set_window_size, 1360, max(900, int(height) + 160))
    await page.call(page.browser.save_screenshot, target)
    assert Path(target).read_bytes().startswith(b"\x89PNG")
