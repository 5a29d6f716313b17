"""The dashboard's breakdowns per end user, session, team and tag, in headless Chromium against
the admin API (pouch admin, served in this process): a key's page lists its top end users and
sessions by spend, as the store sums them; the usage page groups and filters by the new fields
and its CSV export is formula-safe; a client's strings show as text."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from pouch.domain.money import Money
from pouch.domain.periods import utcnow
from pouch.store import admin_tokens, keys
from pouch.store import usage as usage_store
from pouch.store.database import UsageRow
from tests.admin_server import Served
from tests.test_dashboard_browser import (HOSTILE, SCREENSHOTS, browser, errors_in_console, go,  # noqa: F401
                                          shown, sign_in, until)

FORMULA = "=HYPERLINK(\"http://evil.example\",\"x\")"


@pytest.fixture
def seeded(store):
    """support-bot: twelve end users (u00 spends least), three sessions, tags; one end user's id
    is markup, one session's id a formula. eval-runner: no end users, no sessions."""
    now = utcnow()
    bot, _ = keys.create("support-bot", now)
    runner, _ = keys.create("eval-runner", now)

    def use(key, cost, **fields):
        UsageRow.insert(ts=now - timedelta(minutes=len(fields) + cost % 7), key=key.id, key_name=key.name,
                        provider="openai", model="gpt-4o-mini", endpoint="chat", status=200, input_tokens=100,
                        output_tokens=20, cost_pico=Money.usd(cost).pico, **fields).execute()

    for n in range(12):
        use(bot, n + 1, team="support", end_user=f"u{n:02d}", tags="checkout,beta" if n % 2 else "beta",
            session=["run-a", "run-b", FORMULA][n % 3])
    use(bot, 20, team="support", end_user=HOSTILE, tags="search")
    use(runner, 3)
    return now


def spenders(driver, by: str) -> list[str]:
    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, f"#key-by-{by} tbody td:first-child")]


def test_breakdowns_per_end_user_session_and_tag(browser, seeded):  # noqa: F811
    admin_secret = admin_tokens.create("looker", "viewer", utcnow())[1]
    served = Served()
    try:
        sign_in(browser, served.url + "/", admin_secret)

        go(browser, "#/overview", "#top-teams")
        assert [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#top-teams tbody a")] == ["support"]

        go(browser, "#/keys/support-bot", "#key-by-user")
        users = spenders(browser, "user")
        assert users == [HOSTILE, *[f"u{n:02d}" for n in range(11, 2, -1)]], "top 10 by spend, as text"
        assert "top 10 of 13" in shown(browser, "#key-spenders").text
        totals = {row["session"]: row["cost_usd"]
                  for row in usage_store.totals("session", "support-bot")}
        assert spenders(browser, "session") == [FORMULA, "run-b", "run-a"]  # $30, $26, $22
        shown_costs = [e.get_attribute("data-usd") for e in
                       browser.find_elements(By.CSS_SELECTOR, "#key-by-session tbody .money")]
        assert shown_costs == [totals[FORMULA], totals["run-b"], totals["run-a"]]
        assert browser.execute_script("return window.pwned") is None
        browser.save_screenshot(str(SCREENSHOTS / "dashboard-key-spenders.png"))

        go(browser, "#/keys/eval-runner", "#key-chart")
        assert not browser.find_elements(By.CSS_SELECTOR, ".page:not(.old) #key-spenders"), "none: no cards"

        # Per tag for one end user's requests, then the same as CSV.
        go(browser, "#/usage", "#usage-filters")
        Select(shown(browser, "#usage-by")).select_by_value("tag")
        shown(browser, "#usage-user").send_keys("u05")
        browser.execute_script("document.querySelectorAll('.page').forEach(p => p.classList.add('old'))")
        shown(browser, "#usage-filters button[type=submit]").click()
        until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".page:not(.old) #usage-table"))
        assert "by=tag" in browser.current_url and "user=u05" in browser.current_url
        rows = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#usage-table tbody td:first-child")]
        assert rows == ["beta", "checkout"]
        assert not browser.find_elements(By.CSS_SELECTOR, "#usage-table tfoot"), "tags overlap: no total row"

        # Per session, all of them: the formula is shown as typed, and neutralised in the CSV.
        go(browser, "#/usage?by=session&since=all", "#usage-table")
        assert FORMULA in [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#usage-table tbody td:first-child")]
        assert "(no session)" in shown(browser, "#usage-table tbody").text
        shown(browser, "#export-csv").click()
        saved = until(browser, lambda d: next(iter(d.downloads.glob("pouch-usage-by-session*.csv")), None))
        exported = {row["session"] for row in csv.DictReader(io.StringIO(saved.read_text()))}
        assert exported == {"'" + FORMULA, "run-a", "run-b", ""}
        browser.save_screenshot(str(SCREENSHOTS / "dashboard-usage-by-session.png"))
        assert errors_in_console(browser) == []
    finally:
        served.stop()
