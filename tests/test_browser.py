"""mitmweb in a real browser (headless Chromium): an LLM flow's comment in the flow list and
its conversation in the LLM view are what a person sees. Screenshots land in
build/screenshots/ for people to look at."""

import os
import shutil

from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from pouch.services import keys as key_service
from tests.fakes.openai_fake import FakeOpenAI
from tests.gateway import ROOT, Gateway

SCREENSHOTS = ROOT / "build" / "screenshots"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

if os.environ.get("POUCH_SKIP_BROWSER") == "1":
    pytest.skip("POUCH_SKIP_BROWSER=1", allow_module_level=True)


# (width the text needs in the cell's font, width the cell shows), in CSS pixels
FITS = """
const [cell, text] = arguments;
const probe = document.createElement("span");
probe.style.font = getComputedStyle(cell).font;
probe.style.whiteSpace = "pre";
probe.textContent = text;
document.body.appendChild(probe);
const needed = probe.getBoundingClientRect().width;
probe.remove();
const style = getComputedStyle(cell);
return [needed, cell.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight)];
"""


@pytest.fixture
def browser(tmp_path):
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail("Chromium and ChromeDriver are needed (apt-get install chromium chromium-driver; "
                    "scripts/test installs them), or set POUCH_SKIP_BROWSER=1")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # Flags for a root sandbox with no network: no background connections to Google's hosts.
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--disable-quic", "--window-size=1400,900", f"--user-data-dir={tmp_path / 'chrome'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def test_mitmweb_shows_the_comment_and_the_conversation(tmp_path, browser):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with FakeOpenAI(tls_dir=tmp_path / "tls") as fake:
        gateway = Gateway(tmp_path / "gw", {"api.openai.com": fake.url}, str(fake.ca_path), tool="mitmweb").start()
        try:
            gateway.open_store()
            _, secret = key_service.create("alice", budget="1")
            gateway.client(secret).chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "system", "content": "Be brief."},
                                               {"role": "user", "content": "hello browser"}])
            gateway.settled(expected_rows=1)

            browser.get(f"http://127.0.0.1:{gateway.web_port}/?token={gateway.web_password}")
            wait = WebDriverWait(browser, 20)
            row = wait.until(lambda d: next((r for r in d.find_elements(By.CSS_SELECTOR, "tr")
                                             if "chat/completions" in r.text), None))
            assert " alice · gpt-4o-mini · in " in row.text and "$0.0000" in row.text
            # Cost and key first, and they fit mitmweb's comment column at its default width.
            cell = row.find_element(By.CSS_SELECTOR, "td.col-comment")
            head = cell.text.split(" · ")[0]
            assert head.startswith("$0.0000") and head.endswith(" alice")
            needed, room = browser.execute_script(FITS, cell, head)
            assert needed <= room, f"{head!r} needs {needed}px, the column shows {room}px"
            browser.save_screenshot(str(SCREENSHOTS / "mitmweb-flow-list.png"))

            row.click()
            tab = wait.until(lambda d: next((t for t in d.find_elements(By.CSS_SELECTOR, "nav a, .nav-tabs a")
                                             if t.text.strip() == "Response"), None))
            tab.click()
            wait.until(lambda d: "── assistant ──" in d.find_element(By.TAG_NAME, "body").text)
            shown = browser.find_element(By.TAG_NAME, "body").text
            assert "echo: hello browser" in shown and "usage: input" in shown and "── pouch ──" in shown
            browser.save_screenshot(str(SCREENSHOTS / "mitmweb-llm-response.png"))

            next(t for t in browser.find_elements(By.CSS_SELECTOR, "nav a, .nav-tabs a")
                 if t.text.strip() == "Request").click()
            wait.until(lambda d: "── user ──" in d.find_element(By.TAG_NAME, "body").text)
            shown = browser.find_element(By.TAG_NAME, "body").text
            assert "── system ──\nBe brief." in shown and "hello browser" in shown
            assert secret not in shown and "pouch-" in shown, "the pouch key shows only by its prefix"
            browser.save_screenshot(str(SCREENSHOTS / "mitmweb-llm-request.png"))
        finally:
            gateway.stop()

