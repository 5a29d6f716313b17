"""The teams CLI as an operator uses it: create -> keys in it -> show -> update -> delete, and
the keys' team and end-user options."""

import json

import pytest
from click.testing import CliRunner

from pouch.cli.main import cli
from pouch.domain.money import Money
from pouch.domain.periods import utcnow
from pouch.store import database, ledger
from pouch.store import teams as team_store
from pouch.store.database import BudgetLedgerRow


def pouch(*args, ok=True):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def as_json(*args):
    return json.loads(pouch(*args, "--json").stdout)


def refused(*args) -> str:
    result = pouch(*args, ok=False)
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: "), result.output
    return result.output


def test_lifecycle(isolated_home):
    created = as_json("teams", "create", "--name", "platform", "--budget", "100", "--period", "monthly",
                      "--rpm", "600", "--tpm", "90000", "--max-concurrent", "8", "--models", "gpt-4o*,claude-*")
    assert list(created) == ["id", "name", "budget_usd", "spent_usd", "reserved_usd", "period", "window_start",
                             "window_end", "rpm", "tpm", "max_concurrent", "models", "keys", "created_at"]
    assert (created["name"], created["budget_usd"], created["spent_usd"], created["reserved_usd"]) == (
        "platform", "100", "0", "0")
    assert (created["period"], created["rpm"], created["tpm"], created["max_concurrent"]) == ("monthly", 600, 90000, 8)
    assert created["models"] == ["gpt-4o*", "claude-*"] and created["keys"] == []

    key = as_json("keys", "create", "--name", "alice", "--team", "platform")
    assert key["team"] == "platform"
    pouch("keys", "create", "--name", "bob", "--team", str(created["id"]))  # a team by id too
    pouch("keys", "create", "--name", "carol")

    shown = as_json("teams", "show", "platform")
    assert shown["keys"] == ["alice", "bob"] and shown["id"] == created["id"]
    assert as_json("teams", "show", str(created["id"]))["name"] == "platform"

    updated = as_json("teams", "update", "platform", "--budget", "250.50", "--period", "weekly", "--rpm", "60")
    assert (updated["budget_usd"], updated["period"], updated["rpm"]) == ("250.5", "weekly", 60)
    assert (updated["tpm"], updated["models"]) == (90000, ["gpt-4o*", "claude-*"]), "options not given stay"
    assert as_json("teams", "update", "platform", "--models", "")["models"] == []
    assert as_json("teams", "update", "platform", "--budget", "none")["budget_usd"] is None

    renamed = as_json("teams", "update", "platform", "--rename", "infra")
    assert renamed["name"] == "infra" and renamed["id"] == created["id"]
    assert as_json("keys", "show", "alice")["team"] == "infra", "a key names its team as it is now"

    listed = pouch("teams", "list").stdout.splitlines()
    assert listed[0].split() == ["id", "name", "budget_usd", "spent_usd", "reserved_usd", "period", "rpm", "tpm",
                                 "max_concurrent", "models", "keys"]
    assert listed[1].split() == [str(created["id"]), "infra", "-", "0", "0", "weekly", "60", "90000", "8", "*", "2"]
    assert [t["name"] for t in as_json("teams", "list")] == ["infra"]
    keys_listed = pouch("keys", "list").stdout.splitlines()
    assert keys_listed[0].split()[:4] == ["id", "name", "prefix", "team"]
    assert [line.split()[3] for line in keys_listed[1:]] == ["infra", "infra", "-"]


def test_spend_shows_the_team_levels_window(store):
    team = team_store.create("platform", utcnow(), budget=Money.usd("10"))
    window = team.window(utcnow())
    BudgetLedgerRow.create(scope=team.scope, window_start=database.naive(window.start),
                           spent_pico=Money.usd("1.25").pico, reserved_pico=Money.usd("0.5").pico)
    assert ledger.level_totals(team.scope, window) == (Money.usd("1.25"), Money.usd("0.5"))
    shown = as_json("teams", "show", "platform")
    assert (shown["spent_usd"], shown["reserved_usd"]) == ("1.25", "0.5")
    assert pouch("teams", "list").stdout.splitlines()[1].split()[2:5] == ["10", "1.25", "0.5"]


def test_delete_refuses_a_team_with_keys(isolated_home):
    pouch("teams", "create", "--name", "platform")
    pouch("keys", "create", "--name", "alice", "--team", "platform")
    message = refused("teams", "delete", "platform")
    assert "team 'platform' still has keys (alice)" in message
    assert as_json("teams", "show", "platform")["keys"] == ["alice"], "nothing deleted"

    assert as_json("keys", "update", "alice", "--team", "none")["team"] is None
    assert pouch("teams", "delete", "platform").stdout == "team 'platform' deleted\n"
    assert as_json("teams", "list") == []
    assert "no team named 'platform'" in refused("teams", "show", "platform")


def test_delete_as_json(isolated_home):
    created = as_json("teams", "create", "--name", "platform")
    assert as_json("teams", "delete", str(created["id"])) == {"id": created["id"], "name": "platform", "deleted": True}


@pytest.mark.parametrize("args, message", [
    (["--name", "x y"], "bad team name 'x y'"),
    (["--name", "42"], "bad team name '42': a name cannot be all digits"),
    (["--name", "t", "--budget", "-1"], "cannot be negative"),
    (["--name", "t", "--budget", "lots"], "bad budget"),
    (["--name", "t", "--budget", "1e9"], "at most $1,000,000.00"),
    (["--name", "t", "--period", "fortnightly"], "bad period"),
    (["--name", "t", "--rpm", "0"], "bad rpm 0"),
    (["--name", "t", "--tpm", "-5"], "bad tpm -5"),
    (["--name", "t", "--max-concurrent", "2147483648"], "bad max concurrent"),
    (["--name", "t", "--models", "gpt 4o"], "bad model glob"),
])
def test_create_refuses_bad_input(isolated_home, args, message):
    assert message in refused("teams", "create", *args)
    assert as_json("teams", "list") == []


def test_update_and_names(isolated_home):
    pouch("teams", "create", "--name", "platform", "--rpm", "5")
    pouch("teams", "create", "--name", "research")
    assert "a team named 'platform' already exists" in refused("teams", "create", "--name", "platform")
    assert "a team named 'research' already exists" in refused("teams", "update", "platform", "--rename", "research")
    assert "nothing to update" in refused("teams", "update", "platform")
    assert "bad rpm 0" in refused("teams", "update", "platform", "--rpm", "0")
    for command in ("show", "update", "delete"):
        extra = ["--rpm", "1"] if command == "update" else []
        assert "no team named 'nobody' (see `pouch teams list`)" in refused("teams", command, "nobody", *extra)
    assert as_json("teams", "show", "platform")["rpm"] == 5, "nothing changed"


def test_unpriced_team_models_warn(isolated_home):
    result = pouch("teams", "create", "--name", "platform", "--models", "gtp-4o*")
    assert "warning: --models 'gtp-4o*' matches no model pouch has a price for" in result.stderr


def test_key_team_and_end_user_options(isolated_home):
    pouch("teams", "create", "--name", "platform")
    created = as_json("keys", "create", "--name", "app", "--team", "platform", "--user-budget", "0.50",
                      "--user-period", "daily", "--user-rpm", "10", "--require-user")
    assert (created["team"], created["user_budget_usd"], created["user_period"], created["user_rpm"],
            created["require_user"]) == ("platform", "0.5", "daily", 10, True)
    assert "require_user per user $0.5/daily,10rpm" in pouch("keys", "list").stdout

    plain = as_json("keys", "create", "--name", "plain")
    assert (plain["team"], plain["user_budget_usd"], plain["user_period"], plain["user_rpm"],
            plain["require_user"]) == (None, None, "none", None, False)

    updated = as_json("keys", "update", "app", "--user-budget", "none", "--no-require-user", "--user-period", "12h")
    assert (updated["user_budget_usd"], updated["require_user"], updated["user_period"]) == (None, False, "12h")
    assert (updated["team"], updated["user_rpm"]) == ("platform", 10), "options not given stay"
    assert as_json("keys", "update", "app", "--team", "none")["team"] is None
    assert as_json("keys", "update", "plain", "--team", "platform", "--user-rpm", "3")["user_rpm"] == 3


@pytest.mark.parametrize("args, message", [
    (["--team", "nobody"], "no team named 'nobody' (see `pouch teams list`)"),
    (["--user-budget", "-1"], "bad user budget '-1': a budget cannot be negative"),
    (["--user-budget", "1e9"], "at most $1,000,000.00 per end user"),
    (["--user-period", "fortnightly"], "bad period"),
    (["--user-rpm", "0"], "bad user rpm 0"),
])
@pytest.mark.parametrize("command", ["create", "update"])
def test_key_options_refuse_bad_input(isolated_home, command, args, message):
    if command == "update":
        pouch("keys", "create", "--name", "app")
    before = as_json("keys", "list")
    target = ["create", "--name", "other"] if command == "create" else ["update", "app"]
    assert message in refused("keys", *target, *args)
    assert as_json("keys", "list") == before, "nothing written"


def test_teams_on_every_store(store_url):
    """The same commands on SQLite and PostgreSQL: the largest values stored exactly, a key read
    with its team, a team with keys kept, one without deleted."""
    big = ["--budget", "1000000", "--rpm", "2147483647", "--tpm", "2147483647", "--max-concurrent", "2147483647"]
    created = as_json("--db", store_url, "teams", "create", "--name", "platform", *big)
    assert (created["budget_usd"], created["rpm"], created["tpm"], created["max_concurrent"]) == (
        "1000000", 2147483647, 2147483647, 2147483647)
    key = as_json("--db", store_url, "keys", "create", "--name", "alice", "--team", "platform",
                  "--user-budget", "1000000", "--user-rpm", "2147483647")
    assert (key["team"], key["user_budget_usd"], key["user_rpm"]) == ("platform", "1000000", 2147483647)
    assert as_json("--db", store_url, "teams", "list")[0]["keys"] == ["alice"]
    assert "still has keys (alice)" in refused("--db", store_url, "teams", "delete", "platform")
    pouch("--db", store_url, "keys", "update", "alice", "--team", "none")
    pouch("--db", store_url, "teams", "delete", "platform")
    assert as_json("--db", store_url, "teams", "list") == []
    assert as_json("--db", store_url, "keys", "show", "alice")["team"] is None
