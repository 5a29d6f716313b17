"""The dashboard in a real browser (headless Chromium through ChromeDriver), against a real
gateway under mitmweb with its admin listener on, the openai SDK sending traffic through it to
the fake OpenAI: sign in, make a key in the dashboard and read its secret from the one-time
dialog, use it, watch the money move on the overview and the key's bar, open a request's flow
in mitmweb, revoke the key and see the next request refused. A viewer sees no write controls;
names and messages from clients show as text. Screenshots go to build/screenshots/.

The second test fills a store with a team's five weeks of traffic (tests/dashboard_demo.py) and
photographs each page; with POUCH_UPDATE_DOCS_SCREENSHOT=1 the overview also goes to
docs/dashboard.png, the README's picture."""

from __future__ import annotations

import csv
import io
import os
import shutil
import time
from decimal import Decimal
from pathlib import Path

import httpx2
import openai
import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from pouch.domain.periods import utcnow
from pouch.services import keys as key_service
from pouch.store import admin_tokens, ledger
from pouch.store import keys as key_store
from pouch.store.database import RefusalRow
from tests import dashboard_demo
from tests.admin_server import Served
from tests.fakes.openai_fake import FakeOpenAI
from tests.gateway import ROOT, Gateway, free_port

SCREENSHOTS = ROOT / "build" / "screenshots"
DOCS_SCREENSHOT = ROOT / "docs" / "dashboard.png"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
MODEL = "gpt-4o-mini"
HOSTILE = '<img src=x onerror="window.pwned=1">'  # a "model name" a client may send

if os.environ.get("POUCH_SKIP_BROWSER") == "1":
    pytest.skip("POUCH_SKIP_BROWSER=1", allow_module_level=True)


def chromium_missing() -> str | None:
    if Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists():
        return None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return ("Chromium and ChromeDriver are not installed and cannot be installed here (not root, or no apt-get): "
                "install chromium and chromium-driver to run the dashboard's browser test")
    pytest.fail("Chromium and ChromeDriver are needed (apt-get install chromium chromium-driver; scripts/test "
                "installs them), or set POUCH_SKIP_BROWSER=1")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if reason := chromium_missing():
        pytest.skip(reason)
    downloads = tmp_path_factory.mktemp("downloads")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # Flags for a root sandbox with no network: no background connections to Google's hosts.
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--disable-quic", "--window-size=1440,960", "--force-device-scale-factor=1",
                 f"--user-data-dir={tmp_path_factory.mktemp('chrome')}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.downloads = downloads
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    with FakeOpenAI(tls_dir=tmp_path_factory.mktemp("fake-tls")) as fake:
        yield fake


@pytest.fixture(scope="module")
def gateway(fake, tmp_path_factory):
    port = free_port()
    gateway = Gateway(tmp_path_factory.mktemp("gateway"), {"api.openai.com": fake.url}, str(fake.ca_path),
                      options={"pouch_admin": f"127.0.0.1:{port}"}, tool="mitmweb").start()
    gateway.admin_url = f"http://127.0.0.1:{port}/"
    try:
        gateway.open_store()
        now = utcnow()
        gateway.admin = admin_tokens.create("ops", "admin", now)[1]
        gateway.viewer = admin_tokens.create("wall", "viewer", now)[1]
        yield gateway
    finally:
        gateway.stop()


def until(driver, condition, timeout: float = 20):
    """What ``condition(driver)`` returns once it is truthy (a page that redraws may replace an
    element between finding and reading it: that counts as not yet)."""
    def check(d):
        try:
            return condition(d)
        except StaleElementReferenceException:
            return None
    return WebDriverWait(driver, timeout).until(check)


def shown(driver, css: str):
    return until(driver, lambda d: next((e for e in d.find_elements(By.CSS_SELECTOR, css) if e.is_displayed()), None))


def text_of(driver, css: str) -> str:
    return shown(driver, css).text


def go(driver, fragment: str, ready_css: str):
    """Show a page by its #fragment and wait until it has drawn ``ready_css`` anew."""
    if driver.execute_script("return location.hash") == fragment:
        refresh(driver, ready_css)
        return
    driver.execute_script("document.querySelectorAll('.page').forEach(p => p.classList.add('old'))")
    driver.execute_script("location.hash = arguments[0]", fragment)
    until(driver, lambda d: d.find_elements(By.CSS_SELECTOR, f".page:not(.old) {ready_css}"))


def refresh(driver, ready_css: str):
    driver.execute_script("document.querySelectorAll('.page').forEach(p => p.classList.add('old'))")
    shown(driver, "#refresh").click()
    until(driver, lambda d: d.find_elements(By.CSS_SELECTOR, f".page:not(.old) {ready_css}"))


def sign_in(driver, url: str, token: str):
    driver.get(url)
    driver.execute_script("sessionStorage.clear()")
    driver.get(url)
    field = shown(driver, "#token")
    field.clear()
    field.send_keys(token)
    shown(driver, "#signin button[type=submit]").click()
    shown(driver, "#main .page")  # the first page drawn: what a test does next is not raced by it


def errors_in_console(driver) -> list[str]:
    """What went wrong in the page since the last call, less the refusals a test asked for."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"
            and not any(f"status of {status} " in entry["message"] for status in (401, 403))]


def bar(driver, key: str) -> dict:
    """The key's budget bar on the keys page, as the DOM says it."""
    row = shown(driver, f'#keys tr[data-key="{key}"]')
    budget = row.find_element(By.CSS_SELECTOR, ".budget")
    spent = budget.find_element(By.CSS_SELECTOR, ".seg.spent")
    return {"spent": budget.get_attribute("data-spent"), "held": budget.get_attribute("data-held"),
            "left": budget.get_attribute("data-left"), "budget": budget.get_attribute("data-budget"),
            "width": float(driver.execute_script("return parseFloat(arguments[0].style.width) || 0", spent)),
            "label": budget.find_element(By.CSS_SELECTOR, ".key-spent").text,
            "status": [b.text for b in row.find_elements(By.CSS_SELECTOR, ".badge")]}


def test_a_key_made_in_the_dashboard_meters_traffic_and_is_revoked_there(browser, gateway):
    # A wrong token is refused where it was typed.
    browser.get(gateway.admin_url)
    shown(browser, "#token").send_keys("pouch-admin-not-a-token")
    shown(browser, "#signin button[type=submit]").click()
    assert "not valid" in until(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#signin .notice.error").text)
    browser.save_screenshot(str(SCREENSHOTS / "dashboard-signin.png"))

    sign_in(browser, gateway.admin_url, gateway.admin)
    assert text_of(browser, "#who-role") == "admin"
    assert "mitmweb at" in text_of(browser, "#footer")
    assert "No spend yet" in text_of(browser, "#spend-chart")
    assert shown(browser, "#spend-today .money").get_attribute("data-usd") == "0"

    # Create a key through the dashboard; its secret shows once.
    go(browser, "#/keys", "#new-key")
    shown(browser, "#new-key").click()
    form = shown(browser, "dialog .key-form")
    form.find_element(By.NAME, "name").send_keys("team-alpha")
    form.find_element(By.NAME, "budget_usd").send_keys("0.002")
    form.find_element(By.NAME, "models").send_keys(MODEL)
    form.find_element(By.NAME, "rpm").send_keys("600")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    secret = until(browser, lambda d: d.find_element(By.ID, "secret-value").get_attribute("value"))
    assert secret.startswith("pouch-")
    assert "will not be shown again" in text_of(browser, "dialog .notice.warn")
    browser.save_screenshot(str(SCREENSHOTS / "dashboard-secret-once.png"))
    shown(browser, "#copy-secret").click()
    shown(browser, "#secret-done").click()
    until(browser, lambda d: not d.find_elements(By.CSS_SELECTOR, "dialog[open]"))
    assert secret not in browser.find_element(By.TAG_NAME, "body").get_attribute("textContent")
    key = key_store.get("team-alpha")
    assert (str(key.budget.json()), key.models, key.rpm) == ("0.002", (MODEL,), 600)
    before = bar(browser, "team-alpha")
    assert (before["spent"], before["budget"], before["width"], before["status"]) == ("0", "0.002", 0, ["active"])

    # Edit: a field changed is sent, a limit emptied is lifted, a bad value is refused in the form.
    row = shown(browser, '#keys tr[data-key="team-alpha"]')
    assert "600 rpm" in row.text
    next(b for b in row.find_elements(By.TAG_NAME, "button") if b.text == "Edit").click()
    form = shown(browser, "dialog .key-form")
    form.find_element(By.NAME, "rpm").clear()
    form.find_element(By.NAME, "tpm").send_keys("lots")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    assert "whole number" in text_of(browser, "dialog .key-form .notice.error")
    form.find_element(By.NAME, "tpm").clear()
    form.find_element(By.NAME, "tpm").send_keys("50000")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    until(browser, lambda d: "50,000 tpm" in d.find_element(By.CSS_SELECTOR, '#keys tr[data-key="team-alpha"]').text)
    key = key_store.get("team-alpha")
    assert (key.rpm, key.tpm, key.models) == (None, 50000, (MODEL,))

    # Traffic with that key, one request refused (a model it may not use, named to break a page).
    client = gateway.client(secret)
    for _ in range(3):
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hello dashboard"}],
                                       max_tokens=20)
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model=HOSTILE, messages=[{"role": "user", "content": "hi"}], max_tokens=5)
    gateway.settled(expected_rows=3)
    deadline = time.monotonic() + 15
    while RefusalRow.select().count() < 1:
        assert time.monotonic() < deadline, "the refusal was not recorded"
        time.sleep(0.05)
    spent, held = ledger.window_totals(key_store.get("team-alpha"), utcnow())
    assert spent.pico > 0 and held.pico == 0

    # The key's bar moved by what the store says it spent.
    refresh(browser, "#keys")
    after = bar(browser, "team-alpha")
    assert (after["spent"], after["held"]) == (spent.json(), "0")
    assert Decimal(after["left"]) == Decimal("0.002") - Decimal(spent.json())
    assert after["width"] > 0 and after["label"].startswith("$0.0000") and after["label"].endswith("spent")
    browser.save_screenshot(str(SCREENSHOTS / "dashboard-keys.png"))

    # The overview: today's spend, and the chart by model and by key.
    go(browser, "#/overview", "#spend-chart")
    assert shown(browser, "#spend-today .money").get_attribute("data-usd") == spent.json()
    assert "3 requests · 1 refused" in text_of(browser, "#spend-today")
    chart = shown(browser, "#spend-chart")
    assert chart.get_attribute("data-total") == spent.json() and chart.find_elements(By.TAG_NAME, "canvas")
    legend = {e.text: e.find_element(By.XPATH, "..").find_element(By.CSS_SELECTOR, ".legend-value").get_attribute("data-usd")
              for e in browser.find_elements(By.CSS_SELECTOR, ".legend-name")}
    assert legend == {MODEL: spent.json()}
    assert "team-alpha" in text_of(browser, "#top-keys") and "model_not_allowed" in text_of(browser, "#refusals")
    # Hovering today's bar shows its exact amount.
    canvas = chart.find_element(By.CSS_SELECTOR, ".u-over")
    webdriver.ActionChains(browser).move_to_element_with_offset(canvas, canvas.size["width"] // 2 - 8, 0).perform()
    assert f"${spent.json()}" in text_of(browser, ".chart-tip")
    browser.save_screenshot(str(SCREENSHOTS / "dashboard-overview-live.png"))
    shown(browser, '.segmented button[data-value="key"]').click()
    until(browser, lambda d: [e.text for e in d.find_elements(By.CSS_SELECTOR, "#spend-chart[data-by=key] ~ .legend .legend-name")] == ["team-alpha"])

    # The key's page: its requests and the refusal, each linked to its flow in mitmweb.
    go(browser, "#/keys/team-alpha", "#recent-requests")
    rows = browser.find_elements(By.CSS_SELECTOR, "#recent-requests tbody tr")
    assert [r.get_attribute("data-kind") for r in rows] == ["refusal", "usage", "usage", "usage"]
    refused = rows[0]
    assert HOSTILE in refused.text and "model not allowed" in refused.text
    assert browser.execute_script("return window.pwned") is None
    assert not browser.find_elements(By.CSS_SELECTOR, "#recent-requests img")
    links = [r.find_element(By.CSS_SELECTOR, "a.flow-link").get_attribute("href") for r in rows]
    web = f"http://127.0.0.1:{gateway.web_port}/#/flows/"
    assert all(link.startswith(web) and link.endswith("/request") for link in links)
    flows = httpx2.get(f"http://127.0.0.1:{gateway.web_port}/flows",
                       headers={"Authorization": f"Bearer {gateway.web_password}"}).json()
    assert {link[len(web):-len("/request")] for link in links} <= {flow["id"] for flow in flows}
    assert shown(browser, "#key-chart").get_attribute("data-total") == spent.json()
    browser.save_screenshot(str(SCREENSHOTS / "dashboard-key.png"))

    # Clicked, the link opens the flow in mitmweb (signed in to mitmweb once, as its user would be).
    assert errors_in_console(browser) == []
    dashboard = browser.current_window_handle
    browser.switch_to.new_window("tab")
    browser.get(f"http://127.0.0.1:{gateway.web_port}/?token={gateway.web_password}")
    browser.close()
    browser.switch_to.window(dashboard)
    rows[1].find_element(By.CSS_SELECTOR, "a.flow-link").click()
    opened = until(browser, lambda d: next((w for w in d.window_handles if w != dashboard), None))
    browser.switch_to.window(opened)
    assert browser.execute_script("return window.opener") is None, "rel=noopener"
    until(browser, lambda d: "hello dashboard" in d.find_element(By.TAG_NAME, "body").text)
    browser.save_screenshot(str(SCREENSHOTS / "dashboard-flow-in-mitmweb.png"))
    browser.close()
    browser.switch_to.window(dashboard)
    browser.get_log("browser")  # mitmweb's own complaints (its source maps): not the dashboard's

    # Rotate it: the new secret shows once, the old one is refused at once.
    browser.execute_script("window.scrollTo(0, 0)")  # the page's head, not under the sticky top bar
    buttons = {b.text: b for b in browser.find_elements(By.CSS_SELECTOR, ".page-tools .actions button")}
    assert set(buttons) == {"Edit", "Rotate", "Revoke"}
    buttons["Rotate"].click()
    shown(browser, "#confirm-action").click()
    rotated = until(browser, lambda d: d.find_element(By.ID, "secret-value").get_attribute("value"))
    assert rotated.startswith("pouch-") and rotated != secret
    shown(browser, "#secret-done").click()
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "old"}], max_tokens=5)
    client = gateway.client(rotated)
    client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "new"}], max_tokens=5)

    # Revoke it in the dashboard: the very next request is refused.
    buttons = {b.text: b for b in shown(browser, ".page:not(.old) .page-tools .actions").find_elements(By.TAG_NAME, "button")}
    buttons["Revoke"].click()
    shown(browser, "#confirm-action").click()
    until(browser, lambda d: "revoked" in [b.text for b in d.find_elements(By.CSS_SELECTOR, ".page:not(.old) .badges .badge")])
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "again"}], max_tokens=5)
    assert key_store.get("team-alpha").revoked

    # Signing out forgets the token.
    shown(browser, "#sign-out").click()
    shown(browser, "#token")
    assert browser.execute_script("return sessionStorage.length") == 0
    assert errors_in_console(browser) == []


def test_a_viewer_sees_the_money_and_no_write_controls(browser, gateway):
    gateway.open_store()
    key_service.create("viewer-check", budget="1")
    sign_in(browser, gateway.admin_url, gateway.viewer)
    assert text_of(browser, "#who-role") == "viewer · read only"
    go(browser, "#/keys", "#keys")
    assert shown(browser, '#keys tr[data-key="viewer-check"]')
    assert not browser.find_elements(By.CSS_SELECTOR, "#new-key")
    assert not browser.find_elements(By.CSS_SELECTOR, "#keys button")
    go(browser, "#/keys/viewer-check", ".budget")
    assert not browser.find_elements(By.CSS_SELECTOR, ".page-tools .actions")
    # The API answers for itself: a viewer's token changes nothing, whatever a page sends.
    status = browser.execute_script("""
        return fetch('api/keys/viewer-check/revoke', {method: 'POST',
            headers: {Authorization: 'Bearer ' + sessionStorage.getItem('pouch.adminToken')}}).then(r => r.status)""")
    assert status == 403 and not key_store.get("viewer-check").revoked
    shown(browser, "#sign-out").click()


def test_a_team_s_five_weeks_page_by_page(browser, store):
    """The pages with realistic data (and a revoked token signing the page out)."""
    dashboard_demo.seed()
    admin, admin_secret = admin_tokens.create("screenshots", "admin", utcnow())
    served = Served()
    try:
        url = served.url + "/"
        browser.set_window_size(1440, 960)
        sign_in(browser, url, admin_secret)
        go(browser, "#/overview", "#spend-chart canvas")
        legend = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".legend-name")]
        assert legend[0] == "gpt-4o" and "claude-sonnet-4-5" in legend
        top = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#top-keys tbody a")]
        assert set(top) == {"search-api", "support-bot", "data-pipeline", "eval-runner", "intern-sandbox"}
        # The whole page in one picture (the README's): the window as tall as the page.
        browser.set_window_size(1440, browser.execute_script("return document.documentElement.scrollHeight") + 140)
        browser.save_screenshot(str(SCREENSHOTS / "dashboard-overview.png"))
        if os.environ.get("POUCH_UPDATE_DOCS_SCREENSHOT") == "1":
            shutil.copy(SCREENSHOTS / "dashboard-overview.png", DOCS_SCREENSHOT)
        browser.set_window_size(1440, 960)

        go(browser, "#/keys", "#keys")
        assert "budget spent" in bar(browser, "support-bot")["status"]
        assert not browser.find_elements(By.CSS_SELECTOR, '#keys tr[data-key="old-prototype"]'), "revoked: hidden"
        assert "no budget" in shown(browser, '#keys tr[data-key="eval-runner"]').text
        browser.save_screenshot(str(SCREENSHOTS / "dashboard-keys-team.png"))

        go(browser, "#/keys/support-bot", "#key-chart canvas")
        assert "budget spent" in text_of(browser, "#recent-requests")
        browser.save_screenshot(str(SCREENSHOTS / "dashboard-key-exhausted.png"))

        # Usage per model over two weeks, and the same as CSV through the export button.
        go(browser, "#/usage", "#usage-filters")
        since = shown(browser, "#usage-since")
        since.clear()
        since.send_keys("14d")
        Select(shown(browser, "#usage-by")).select_by_value("model")
        browser.execute_script("document.querySelectorAll('.page').forEach(p => p.classList.add('old'))")
        shown(browser, "#usage-filters button[type=submit]").click()
        until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".page:not(.old) #usage-table"))
        assert "by=model" in browser.current_url and "since=14d" in browser.current_url
        shown_models = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#usage-table tbody td:first-child")]
        shown(browser, "#export-csv").click()
        saved = until(browser, lambda d: next(iter(d.downloads.glob("pouch-usage-by-model.csv")), None))
        exported = list(csv.DictReader(io.StringIO(saved.read_text())))
        assert [row["model"] for row in exported] == shown_models
        browser.save_screenshot(str(SCREENSHOTS / "dashboard-usage.png"))

        # At a small laptop's width nothing spills sideways.
        browser.set_window_size(1024, 768)
        go(browser, "#/overview", "#spend-chart canvas")
        assert browser.execute_script("return document.documentElement.scrollWidth") <= 1024
        browser.save_screenshot(str(SCREENSHOTS / "dashboard-overview-1024.png"))

        # A token revoked meanwhile signs the page out at its next request.
        admin_tokens.revoke(admin, utcnow())
        shown(browser, "#refresh").click()
        assert "Signed out" in text_of(browser, "#signin .notice.error")
        assert browser.execute_script("return sessionStorage.length") == 0
        assert errors_in_console(browser) == []
    finally:
        browser.set_window_size(1440, 960)
        served.stop()
