"""The keys CLI as an operator uses it: create -> show -> update -> revoke -> rotate."""

import json
import sqlite3
from datetime import timedelta

import click
import pytest
from click.testing import CliRunner

from pouch.cli.main import cli
from pouch.domain.keys import hash_secret


def pouch(*args, ok=True):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def as_json(*args):
    return json.loads(pouch(*args, "--json").stdout)


def all_commands(group, path=()):
    for name, command in group.commands.items():
        yield (*path, name)
        if isinstance(command, click.Group):
            yield from all_commands(command, (*path, name))


@pytest.mark.parametrize("path", [()] + list(all_commands(cli)), ids=lambda p: " ".join(p) or "pouch")
def test_every_command_has_help(path):
    result = pouch(*path, "--help")
    assert "Usage:" in result.output
    command = cli
    for name in path:
        command = command.commands[name]
    assert command.help, f"pouch {' '.join(path)} has no help text"


def test_lifecycle(isolated_home):
    created = as_json("keys", "create", "--name", "alice", "--budget", "5", "--period", "monthly",
                      "--rpm", "60", "--models", "gpt-4o*,claude-*")
    secret = created["key"]
    assert secret.startswith("pouch-") and len(secret) > 40
    assert created["prefix"] == secret[:12]
    assert created["budget_usd"] == "5" and created["spent_usd"] == "0"
    assert created["models"] == ["gpt-4o*", "claude-*"]

    shown = as_json("keys", "show", "alice")
    assert "key" not in shown and shown["id"] == created["id"]
    assert as_json("keys", "show", str(created["id"]))["name"] == "alice"

    updated = as_json("keys", "update", "alice", "--budget", "12.50", "--tpm", "1000", "--mock",
                      "--period", "12h")
    assert (updated["budget_usd"], updated["tpm"], updated["mock"], updated["period"]) == ("12.5", 1000, True, "12h")
    assert updated["rpm"] == 60, "options not given stay as they were"
    assert as_json("keys", "update", "alice", "--models", "")["models"] == []

    assert as_json("keys", "revoke", "alice")["revoked"] is True

    rotated = as_json("keys", "rotate", "alice")
    assert rotated["key"] != secret and rotated["prefix"] == rotated["key"][:12]
    assert [k["name"] for k in as_json("keys", "list")] == ["alice"]

    db_bytes = b"".join(p.read_bytes() for p in isolated_home.glob("pouch.db*"))
    for s in (secret, rotated["key"]):
        assert s.encode() not in db_bytes, "a secret reached the database"
    stored = sqlite3.connect(isolated_home / "pouch.db").execute("SELECT secret_hash FROM pouch_keys").fetchone()
    assert stored == (hash_secret(rotated["key"]),)


def test_create_prints_secret_once_in_text_mode():
    result = pouch("keys", "create", "--name", "bob")
    secret = next(line for line in result.stdout.splitlines() if line.startswith("pouch-") and len(line) > 40)
    assert secret not in pouch("keys", "show", "bob").stdout
    assert secret not in pouch("keys", "list").stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--budget", "-1"], "cannot be negative"),
        (["--budget", "lots"], "bad budget"),
        (["--period", "fortnightly"], "bad period"),
        (["--period", "0h"], "bad period"),
        (["--models", "gpt 4o"], "bad model glob"),
        (["--models", "gpt-[4o"], "bad model glob"),
        (["--rpm", "0"], "bad rpm"),
        (["--expires", "someday"], "bad time"),
        (["--auto-renew", "--expires", "30d"], "--auto-renew needs"),
    ],
)
def test_invalid_input_is_refused_and_nothing_written(args, message):
    result = pouch("keys", "create", "--name", "carol", *args, ok=False)
    assert result.exit_code != 0
    assert message in result.output
    assert as_json("keys", "list") == []


@pytest.mark.parametrize("command", ["show", "update", "revoke", "rotate"])
def test_unknown_key(command):
    extra = ["--budget", "1"] if command == "update" else []
    result = pouch("keys", command, "nobody", *extra, ok=False)
    assert result.exit_code == 1 and "no key named 'nobody'" in result.output


def test_duplicate_name_and_bad_update():
    pouch("keys", "create", "--name", "dave")
    assert "already exists" in pouch("keys", "create", "--name", "dave", ok=False).output
    assert "nothing to update" in pouch("keys", "update", "dave", ok=False).output
    before = as_json("keys", "show", "dave")
    assert pouch("keys", "update", "dave", "--budget", "-3", ok=False).exit_code == 1
    assert as_json("keys", "show", "dave") == before


def test_an_auto_renewing_key_cannot_start_from_a_past_expiry():
    args = ["--period", "1s", "--expires", "2000-01-01", "--auto-renew"]
    refused = pouch("keys", "create", "--name", "frank", *args, ok=False)
    assert refused.exit_code != 0 and "--expires 2000-01-01 is in the past" in refused.output
    assert as_json("keys", "list") == []

    pouch("keys", "create", "--name", "frank", "--period", "daily", "--expires", "30d", "--auto-renew")
    before = as_json("keys", "show", "frank")
    for update in (["--expires", "2000-01-01"], ["--expires", "2000-01-01", "--auto-renew"]):
        refused = pouch("keys", "update", "frank", *update, ok=False)
        assert refused.exit_code != 0 and "in the past" in refused.output
    assert as_json("keys", "show", "frank") == before
    stopped = as_json("keys", "update", "frank", "--expires", "2000-01-01", "--no-auto-renew")
    assert stopped["expires_at"].startswith("2000-01-01") and stopped["auto_renew"] is False


def test_db_option_and_env(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'other.db'}"
    pouch("--db", url, "keys", "create", "--name", "erin")
    assert as_json("keys", "list") == []
    monkeypatch.setenv("POUCH_DB", url)
    assert [k["name"] for k in as_json("keys", "list")] == ["erin"]


@pytest.mark.parametrize(
    "budget, message",
    [
        ("1e9", "at most $1,000,000.00 per key ('none' for no limit)"),
        ("1e999999999", "at most $1,000,000.00 per key"),  # was a decimal.Overflow traceback
        ("1000000.000000000001", "at most $1,000,000.00 per key"),
        ("9300000", "at most $1,000,000.00 per key"),  # was an OverflowError from SQLite
        ("1e-30", "finer than a pico-dollar"),
        ("-1", "cannot be negative"),
        ("nan", "not an amount of USD"),
        ("inf", "not an amount of USD"),
        ("5$", "not an amount of USD"),
    ],
)
@pytest.mark.parametrize("command", ["create", "update"])
def test_odd_budgets_are_refused_in_one_line(budget, message, command):
    if command == "update":
        pouch("keys", "create", "--name", "gina", "--budget", "5")
    before = as_json("keys", "list")
    args = ["create", "--name", "henry"] if command == "create" else ["update", "gina"]
    result = pouch("keys", *args, "--budget", budget, ok=False)  # a traceback would raise here
    assert result.exit_code == 1 and message in result.output
    assert result.output.startswith("Error: bad budget"), result.output
    assert as_json("keys", "list") == before


@pytest.mark.parametrize("option", ["--rpm", "--tpm", "--max-concurrent"])
@pytest.mark.parametrize("value", ["2147483648", "99999999999999999999"])
def test_limits_beyond_an_integer_column_are_refused(option, value):
    result = pouch("keys", "create", "--name", "ivan", option, value, ok=False)
    assert result.exit_code == 1 and "at most 2,147,483,647 (omit for no limit)" in result.output
    pouch("keys", "create", "--name", "ivan")
    refused = pouch("keys", "update", "ivan", option, value, ok=False)
    assert refused.exit_code == 1 and "at most 2,147,483,647" in refused.output
    assert as_json("keys", "show", "ivan")[option.strip("-").replace("-", "_")] is None


def test_the_documented_maximums_fit_every_store(store_url):
    """$1,000,000 and 2,147,483,647 are stored and read back exactly on SQLite and PostgreSQL,
    and admitting a request against the largest budget sums spend, holds and a worst case in
    SQL without overflowing the store's integers."""
    from pouch.domain.money import Money
    from pouch.domain.periods import utcnow
    from pouch.store import keys as key_store
    from pouch.store import ledger

    created = as_json("--db", store_url, "keys", "create", "--name", "judy", "--budget", "1000000",
                      "--rpm", "2147483647", "--tpm", "2147483647", "--max-concurrent", "2147483647")
    shown = as_json("--db", store_url, "keys", "show", "judy")
    for described in (created, shown):
        assert described["budget_usd"] == "1000000"
        assert (described["rpm"], described["tpm"], described["max_concurrent"]) == (2147483647,) * 3

    key, now = key_store.get("judy"), utcnow()  # the CLI left the store open on store_url
    whole = ledger.reserve(key.id, key.window(now), Money.usd("1000000"), now, owner="test", hold=timedelta(hours=1))
    assert isinstance(whole, ledger.Reservation)
    refused = ledger.reserve(key.id, key.window(now), Money.usd("8000000"), now, owner="test", hold=timedelta(hours=1))
    assert isinstance(refused, ledger.Refusal) and refused.reserved == Money.usd("1000000")


@pytest.mark.parametrize("command", ["create", "update"])
def test_models_no_priced_model_matches_are_accepted_with_a_warning(command):
    models = "gpt-4o-mnii,gpt-4o*,gpt-4o-2024-08-06,openai/gpt-4o-mini,zzzzzz"
    if command == "create":
        result = pouch("keys", "create", "--name", "kate", "--models", models, "--json")
    else:
        pouch("keys", "create", "--name", "kate")
        result = pouch("keys", "update", "kate", "--models", models, "--json")
    assert json.loads(result.stdout)["models"] == models.split(","), "warnings stay off stdout"
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2, result.stderr  # a priced glob, snapshot or prefixed name is fine
    typo, nothing_close = warnings
    assert "--models 'gpt-4o-mnii' matches no model pouch has a price for" in typo
    assert "closest priced: gpt-4o-mini" in typo and "model_not_priced" in typo
    assert "'zzzzzz'" in nothing_close and "`pouch prices` lists the priced models" in nothing_close


def test_models_that_are_priced_raise_no_warning():
    result = pouch("keys", "create", "--name", "leo", "--models", "gpt-4o*,claude-*,gemini-2.5-pro")
    assert "warning" not in result.stderr


def test_a_retired_model_in_models_is_named_as_retired(isolated_home, monkeypatch):
    from pouch.cli import keys as keys_cli
    from pouch.pricing.price_file import parse_prices
    from pouch.pricing.table import PriceTable

    retired = PriceTable(parse_prices({"models": [
        {"model": "gpt-old", "provider": "openai", "retired": "2026-01-01", "use": "gpt-4o-mini",
         "source": "test", "as_of": "2026-11-27"}]}, "test"))
    monkeypatch.setattr(keys_cli, "price_table", lambda: retired)
    result = pouch("keys", "create", "--name", "mia", "--models", "gpt-old-0613")
    assert ("warning: --models 'gpt-old-0613': model 'gpt-old' was retired by openai on 2026-01-01: "
            "use gpt-4o-mini instead; requests for it are refused") in result.stderr
