"""The dashboard's teams in a real browser (headless Chromium, as tests/test_dashboard_browser.py
runs it) against the admin API served in this process: each team's budget bar as the store
says, a team made and deleted in the dashboard, a team with keys refused deletion with the API's
message, a team's page with its keys, a key put in a team with end-user limits from the key
form, and a viewer seeing no write controls. Screenshots go to build/screenshots/."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from pouch.domain.money import Money
from pouch.domain.periods import utcnow
from pouch.store import admin_tokens, database
from pouch.store import keys as key_store
from pouch.store import teams as team_store
from pouch.store.database import BudgetLedgerRow
from tests.admin_server import Served
from tests.test_dashboard_browser import SCREENSHOTS, browser, go, shown, sign_in, text_of, until  # noqa: F401

pytestmark = pytest.mark.usefixtures("browser")


@pytest.fixture
def served(store):
    now = utcnow()
    platform = team_store.create("platform", now, budget=Money.usd("10"), rpm=600)
    window = platform.window(now)
    BudgetLedgerRow.create(scope=platform.scope, window_start=database.naive(window.start),
                           spent_pico=Money.usd("2.5").pico, reserved_pico=Money.usd("0.5").pico)
    team_store.create("scratch", now)
    key_store.create("alice", now, team=platform, budget=Money.usd("5"))
    key_store.create("bob", now, team=platform)
    key_store.create("carol", now)
    served = Served()
    served.admin = admin_tokens.create("ops", "admin", now)[1]
    served.viewer = admin_tokens.create("wall", "viewer", now)[1]
    yield served
    served.stop()


def team_row(driver, name: str):
    return shown(driver, f'#teams tr[data-team="{name}"]')


def button(row, text: str):
    return next(b for b in row.find_elements(By.TAG_NAME, "button") if b.text == text)


def closed(driver) -> None:
    until(driver, lambda d: not d.find_elements(By.CSS_SELECTOR, "dialog[open]"))


def test_teams_in_the_dashboard(browser, served):  # noqa: F811
    url = served.url + "/"
    sign_in(browser, url, served.admin)
    go(browser, "#/teams", "#teams")
    budget = team_row(browser, "platform").find_element(By.CSS_SELECTOR, ".budget")
    assert [budget.get_attribute(f"data-{part}") for part in ("spent", "held", "left", "budget")] == [
        "2.5", "0.5", "7", "10"]
    assert "600 rpm" in team_row(browser, "platform").text
    assert team_row(browser, "platform").find_element(By.CSS_SELECTOR, ".key-count").text == "2"
    assert "no budget" in team_row(browser, "scratch").text
    browser.save_screenshot(str(SCREENSHOTS / "dashboard-teams.png"))

    # A team made here: what the form says is what the store holds; a bad value is refused in the form.
    shown(browser, "#new-team").click()
    form = shown(browser, "dialog .team-form")
    form.find_element(By.NAME, "name").send_keys("research")
    form.find_element(By.NAME, "budget_usd").send_keys("3.25")
    form.find_element(By.NAME, "rpm").send_keys("many")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    assert "Requests per minute: give a whole number" in text_of(browser, "dialog .team-form .notice.error")
    form.find_element(By.NAME, "rpm").clear()
    form.find_element(By.NAME, "rpm").send_keys("5")
    form.find_element(By.NAME, "models").send_keys("gpt-4o*")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    closed(browser)
    assert "$3.25" in team_row(browser, "research").text
    research = team_store.get("research")
    assert (research.budget, research.rpm, research.models) == (Money.usd("3.25"), 5, ("gpt-4o*",))

    # Deleting a team with keys is refused with the API's message; one without keys goes.
    button(team_row(browser, "platform"), "Delete").click()
    shown(browser, "#confirm-action").click()
    assert "team 'platform' still has keys (alice, bob)" in text_of(browser, "dialog .notice.error")
    shown(browser, "dialog .button.ghost").click()
    closed(browser)
    assert team_store.get("platform").name == "platform"
    button(team_row(browser, "scratch"), "Delete").click()
    shown(browser, "#confirm-action").click()
    closed(browser)
    until(browser, lambda d: not d.find_elements(By.CSS_SELECTOR, '#teams tr[data-team="scratch"]'))
    assert [t.name for t in team_store.all_teams()] == ["platform", "research"]

    # A team's page: its bar and its keys with their own.
    go(browser, "#/teams/platform", "#team-budget")
    assert shown(browser, "#team-budget .budget").get_attribute("data-spent") == "2.5"
    rows = browser.find_elements(By.CSS_SELECTOR, "#team-keys tbody tr")
    assert [row.get_attribute("data-key") for row in rows] == ["alice", "bob"]
    assert rows[0].find_element(By.CSS_SELECTOR, ".budget").get_attribute("data-budget") == "5"
    browser.save_screenshot(str(SCREENSHOTS / "dashboard-team.png"))

    # The key form puts a key in a team and gives its end users limits of their own.
    go(browser, "#/keys", "#keys")
    button(shown(browser, '#keys tr[data-key="carol"]'), "Edit").click()
    form = shown(browser, "dialog .key-form")
    until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, '#key-team option[value="research"]'))
    Select(form.find_element(By.ID, "key-team")).select_by_value("research")
    form.find_element(By.NAME, "user_budget_usd").send_keys("0.25")
    form.find_element(By.NAME, "user_period").clear()
    form.find_element(By.NAME, "user_period").send_keys("daily")
    form.find_element(By.NAME, "user_rpm").send_keys("3")
    form.find_element(By.NAME, "require_user").click()
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    closed(browser)
    until(browser, lambda d: "team research" in d.find_element(By.CSS_SELECTOR, '#keys tr[data-key="carol"]').text)
    carol = key_store.get("carol")
    assert (carol.team.name, carol.user_budget, str(carol.user_period), carol.user_rpm, carol.require_user) == (
        "research", Money.usd("0.25"), "daily", 3, True)
    go(browser, "#/keys/carol", ".facts .team-link")
    assert text_of(browser, ".facts .team-link") == "research"
    assert text_of(browser, ".facts .end-users") == "$0.25 each, daily · 3 rpm each · an end-user id required"
    go(browser, "#/keys", "#keys")
    # ...and takes it out again ("no team"), leaving the rest as it was.
    button(shown(browser, '#keys tr[data-key="carol"]'), "Edit").click()
    form = shown(browser, "dialog .key-form")
    Select(form.find_element(By.ID, "key-team")).select_by_value("")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    closed(browser)
    until(browser, lambda d: "team research" not in d.find_element(By.CSS_SELECTOR, '#keys tr[data-key="carol"]').text)
    carol = key_store.get("carol")
    assert (carol.team, carol.user_rpm, carol.require_user) == (None, 3, True)
    shown(browser, "#sign-out").click()


def test_a_viewer_sees_teams_and_no_write_controls(browser, served):  # noqa: F811
    sign_in(browser, served.url + "/", served.viewer)
    go(browser, "#/teams", "#teams")
    assert team_row(browser, "platform")
    assert not browser.find_elements(By.CSS_SELECTOR, "#new-team")
    assert not browser.find_elements(By.CSS_SELECTOR, "#teams button")
    go(browser, "#/teams/platform", "#team-budget")
    assert not browser.find_elements(By.CSS_SELECTOR, ".page-tools .actions")
    shown(browser, "#sign-out").click()
