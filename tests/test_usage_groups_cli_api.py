"""``pouch usage`` and ``GET /api/usage`` per team, end user, tag and session: the API answers
what the CLI prints, filters and groups alike, and its CSV is the JSON's, formula-safe."""

import csv
import io
import json
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from click.testing import CliRunner

from pouch.cli.main import cli
from pouch.domain.periods import utcnow
from pouch.store import admin_tokens, keys
from pouch.store.database import RefusalRow, UsageRow
from tests.admin_server import Api, Served, error_of


def pouch(*args):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def as_json(*args):
    return json.loads(pouch(*args, "--json"))


@pytest.fixture
def recorded(store):
    """alice (team platform): u1 tagged checkout,beta in session s1, u2 tagged beta, and a row
    with nothing; bob (no team): a session whose id a spreadsheet would run; u2 refused once."""
    now = utcnow()
    alice, _ = keys.create("alice", now)
    bob, _ = keys.create("bob", now)

    def use(key, cost, team=None, user=None, tags=None, session=None, ago=timedelta(0)):
        UsageRow.insert(ts=now - ago, key=key.id, key_name=key.name, provider="openai", model="gpt-4o-mini",
                        endpoint="chat", status=200, input_tokens=10, output_tokens=5, cost_pico=cost,
                        team=team, end_user=user, tags=tags, session=session).execute()

    use(alice, 1000, "platform", "u1", "checkout,beta", "s1", ago=timedelta(seconds=3))
    use(alice, 2000, "platform", "u1", "checkout,beta", "s1", ago=timedelta(seconds=2))
    use(alice, 4000, "platform", "u2", "beta", ago=timedelta(seconds=1))
    use(alice, 8000, "platform")
    use(bob, 16000, user="u2", session="=cmd|' /C calc'!A0", ago=timedelta(days=2))
    RefusalRow.insert(ts=now, key=alice.id, provider="openai", model="gpt-4o-mini", endpoint="chat", status=429,
                      reason="insufficient_quota", message="no", team="platform", end_user="u2").execute()
    return now


@pytest.fixture
def api(store):
    served = Served()
    api = Api(served.url)
    api.token = admin_tokens.create("look", "viewer", utcnow())[1]
    yield api
    api.close()
    served.stop()


def test_cli_totals_per_tag_user_team_session(recorded):
    by_tag = {row["tag"]: (row["requests"], row["cost_usd"]) for row in as_json("usage", "--by", "tag")}
    assert by_tag == {"beta": (3, "0.000000007"), "checkout": (2, "0.000000003"), None: (2, "0.000000024")}
    by_user = {row["user"]: (row["requests"], row["refused"]) for row in as_json("usage", "--by", "user")}
    assert by_user == {"u1": (2, 0), "u2": (2, 1), None: (1, 0)}
    by_team = {row["team"]: row["cost_usd"] for row in as_json("usage", "--by", "team")}
    assert by_team == {"platform": "0.000000015", None: "0.000000016"}
    by_session = as_json("usage", "--by", "session", "--key", "alice")
    assert [(row["session"], row["requests"]) for row in by_session] == [("s1", 2), (None, 2)]


def test_cli_filters(recorded):
    assert [row["user"] for row in as_json("usage", "--tag", "beta")] == ["u1", "u1", "u2"]
    assert [row["tags"] for row in as_json("usage", "--user", "u2")] == [[], ["beta"]]  # oldest first
    assert [row["key"] for row in as_json("usage", "--team", "platform", "--session", "s1")] == ["alice", "alice"]
    assert [(row["user"], row["requests"]) for row in as_json("usage", "--by", "user", "--tag", "checkout")] == [
        ("u1", 2)]
    assert [row["requests"] for row in as_json("usage", "--by", "key", "--user", "u2", "--since", "1d")] == [1]


def test_cli_tables_show_groups_and_tags(recorded):
    lines = pouch("usage", "--by", "tag").splitlines()
    assert lines[0].split()[:2] == ["tag", "requests"]
    assert [line.split()[0] for line in lines[1:]] == ["beta", "checkout", "-"]
    rows = pouch("usage", "--key", "alice").splitlines()
    assert rows[0].split()[-4:] == ["team", "user", "tags", "session"]
    assert "checkout,beta" in rows[1] and "s1" in rows[1]
    plain = pouch("usage", "--key", "alice", "--tag", "nothing-has-this").splitlines()
    assert "team" not in plain[0].split(), "no attribution columns when no row has one"


def test_cli_csv_neutralises_a_formula(recorded):
    rows = list(csv.DictReader(io.StringIO(pouch("usage", "--format", "csv", "--key", "bob"))))
    assert rows[0]["session"] == "'=cmd|' /C calc'!A0"
    grouped = list(csv.DictReader(io.StringIO(pouch("usage", "--by", "session", "--format", "csv"))))
    assert [row["session"] for row in grouped] == ["'=cmd|' /C calc'!A0", "s1", ""]


@pytest.mark.parametrize("params", [
    {"by": "team"}, {"by": "user"}, {"by": "tag"}, {"by": "session"}, {"by": "user", "team": "platform"},
    {"tag": "beta"}, {"user": "u2"}, {"session": "s1", "team": "platform"}, {"by": "tag", "user": "u1"},
    {"by": "key", "session": "s1"}, {"by": "day", "tag": "checkout", "key": "alice"},
])
def test_api_answers_what_the_cli_prints(api, recorded, params):
    cli_args = [arg for name, value in params.items() for arg in (f"--{name}", value)]
    body = api.get(f"/api/usage?{urlencode(params)}", api.token).json()
    assert body == {"rows": as_json("usage", *cli_args)} and body["rows"]


@pytest.mark.parametrize("query", ["", "by=session", "by=user", "by=tag"])
def test_api_csv_is_the_json_formula_safe(api, recorded, query):
    rows = api.get(f"/api/usage?{query}", api.token).json()["rows"]
    response = api.get(f"/api/usage?{query}&format=csv", api.token)
    assert response.headers["content-type"].startswith("text/csv")
    parsed = list(csv.DictReader(io.StringIO(response.text)))
    assert len(parsed) == len(rows) > 0
    for row, line in zip(rows, parsed):
        for field, value in row.items():
            text = "" if value is None else json.dumps(value) if isinstance(value, (list, dict)) else str(value)
            assert line[field] == ("'" + text if text.startswith("=") else text), field
    assert any(line.get("session", "").startswith("'=cmd") for line in parsed) == (query in ("", "by=session"))


def test_api_refuses_unknown_groups_and_parameters(api, recorded):
    assert "group by one of key, model, day, team, user, tag, session" in error_of(
        api.get("/api/usage?by=colour", api.token), 400)
    assert "unknown query parameter(s) tags" in error_of(api.get("/api/usage?tags=beta", api.token), 400)


def test_overview_lists_top_teams(api, recorded):
    body = api.get("/api/overview?days=7", api.token).json()
    assert body["top_teams"] == [{"team": "platform", "cost_usd": "0.000000015", "requests": 4}]
    assert body["top_teams"][0]["cost_usd"] == as_json("usage", "--by", "team", "--since", "7d")[0]["cost_usd"]
