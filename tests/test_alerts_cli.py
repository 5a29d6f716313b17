"""The key fields alerts read, as an operator sets them: ``pouch keys create|update --alert-at
--webhook``, shown by ``keys show|list --json``."""

import json

import pytest
from click.testing import CliRunner

from pouch.cli.main import cli

SLACK = "https://hooks.slack.com/services/T0/B0/secret"


def pouch(*args, ok=True):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def as_json(*args):
    return json.loads(pouch(*args, "--json").stdout)


def test_alert_fields_are_set_shown_listed_and_cleared(isolated_home):
    created = as_json("keys", "create", "--name", "alice", "--budget", "5", "--alert-at", "80,50,100",
                      "--webhook", SLACK)
    assert (created["alert_at"], created["webhook"]) == ([50, 80, 100], SLACK)
    shown = as_json("keys", "show", "alice")
    assert (shown["alert_at"], shown["webhook"]) == ([50, 80, 100], SLACK)
    [listed] = as_json("keys", "list")
    assert (listed["alert_at"], listed["webhook"]) == ([50, 80, 100], SLACK)
    assert "alerts 50,80,100" in pouch("keys", "list").stdout

    assert as_json("keys", "update", "alice", "--alert-at", "90")["alert_at"] == [90]
    assert as_json("keys", "update", "alice", "--budget", "6")["webhook"] == SLACK, "options not given stay"
    cleared = as_json("keys", "update", "alice", "--alert-at", "none", "--webhook", "none")
    assert (cleared["alert_at"], cleared["webhook"]) == ([], None)
    plain = as_json("keys", "create", "--name", "bob")
    assert (plain["alert_at"], plain["webhook"]) == ([], None)


@pytest.mark.parametrize("args, message", [
    (["--alert-at", "50,abc"], "bad alert percent 'abc'"),
    (["--alert-at", "0"], "bad alert percent '0'"),
    (["--alert-at", "120"], "bad alert percent '120'"),
    (["--webhook", "hooks.slack.com/services/x"], "bad webhook"),
    (["--webhook", "ftp://example.com/x"], "bad webhook 'ftp://example.com/...'"),
])
def test_bad_values_are_refused_in_one_line(isolated_home, args, message):
    result = pouch("keys", "create", "--name", "carol", "--budget", "5", *args, ok=False)
    assert result.exit_code == 1 and result.output.startswith(f"Error: {message}"), result.output
    assert len(result.output.strip().splitlines()) == 1
    pouch("keys", "create", "--name", "dave", "--budget", "5")
    assert pouch("keys", "update", "dave", *args, ok=False).exit_code == 1
    assert as_json("keys", "show", "dave")["alert_at"] == [], "nothing changed"


def test_thresholds_on_a_key_without_a_budget_get_a_warning(isolated_home):
    result = pouch("keys", "create", "--name", "open", "--alert-at", "50")
    assert "warning: key 'open' has no budget: its --alert-at thresholds never fire" in result.output
    assert "warning" not in pouch("keys", "update", "open", "--budget", "5").output
