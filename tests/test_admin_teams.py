"""``/api/teams`` and the keys API's team and end-user fields, over real HTTP to the server
``pouch admin`` runs: every route, both roles, every error. The CLI is the reference: the same
services, messages and JSON fields."""

import json
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from pouch.cli.main import cli
from pouch.domain.periods import utcnow
from pouch.services import key_cache
from pouch.store import admin_tokens, keys
from pouch.store import teams as team_store
from pouch.store.database import KeyRow, TeamRow
from tests.admin_server import Api, Served, error_of

TEAM_FIELDS = ["id", "name", "budget_usd", "spent_usd", "reserved_usd", "period", "window_start", "window_end",
               "rpm", "tpm", "max_concurrent", "models", "keys", "created_at"]
WRITES = [("POST", "/api/teams", {"name": "mallory"}), ("PATCH", "/api/teams/platform", {"budget_usd": "1000"}),
          ("DELETE", "/api/teams/platform", None), ("PATCH", "/api/keys/alice", {"team": None})]


def as_json(*args):
    result = CliRunner().invoke(cli, [*args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture
def tokens(store):
    now = utcnow()
    return SimpleNamespace(admin=admin_tokens.create("ops", "admin", now)[1],
                           viewer=admin_tokens.create("look", "viewer", now)[1])


@pytest.fixture
def api(store):
    served = Served()
    api = Api(served.url)
    yield api
    api.close()
    served.stop()


@pytest.fixture
def platform(store):
    """A team with one key in it."""
    team = team_store.create("platform", utcnow())
    keys.create("alice", utcnow(), team=team)
    return team


def stored() -> tuple[list, list]:
    return (list(TeamRow.select().order_by(TeamRow.id).dicts()), list(KeyRow.select().order_by(KeyRow.id).dicts()))


def test_team_lifecycle(api, tokens):
    created = api.post("/api/teams", tokens.admin, {
        "name": "platform", "budget_usd": "100", "period": "monthly", "rpm": 600, "tpm": 90000,
        "max_concurrent": 8, "models": ["gpt-4o*", "claude-*"]})
    assert created.status_code == 201
    body = created.json()
    assert list(body) == TEAM_FIELDS
    assert created.headers["location"] == f"/api/teams/{body['id']}"
    assert (body["budget_usd"], body["spent_usd"], body["reserved_usd"], body["period"]) == ("100", "0", "0", "monthly")
    assert (body["rpm"], body["tpm"], body["max_concurrent"], body["models"], body["keys"]) == (
        600, 90000, 8, ["gpt-4o*", "claude-*"], [])
    assert "warnings" not in body, "every glob matches a priced model"

    key = api.post("/api/keys", tokens.admin, {"name": "alice", "team": "platform"}).json()
    assert key["team"] == "platform"
    assert api.post("/api/keys", tokens.admin, {"name": "bob", "team": body["id"]}).json()["team"] == "platform"

    cli_view = as_json("teams", "show", "platform")
    for path in ("/api/teams/platform", f"/api/teams/{body['id']}"):
        shown = api.get(path, tokens.admin).json()
        assert shown == cli_view, "the same fields and values as `pouch teams show --json`"
    assert shown["keys"] == ["alice", "bob"]
    assert api.get("/api/teams", tokens.viewer).json() == as_json("teams", "list") == [cli_view]

    updated = api.patch("/api/teams/platform", tokens.admin, {"budget_usd": 0.1, "rpm": None, "models": None,
                                                              "name": "infra"}).json()
    assert (updated["name"], updated["budget_usd"], updated["rpm"], updated["models"]) == ("infra", "0.1", None, [])
    assert (updated["tpm"], updated["max_concurrent"], updated["period"]) == (90000, 8, "monthly"), "fields not sent stay"
    assert api.get("/api/keys/alice", tokens.admin).json()["team"] == "infra"
    cleared = api.patch("/api/teams/infra", tokens.admin, {"budget_usd": None, "period": None, "tpm": None,
                                                           "max_concurrent": None}).json()
    assert (cleared["budget_usd"], cleared["period"], cleared["tpm"], cleared["max_concurrent"]) == (
        None, "none", None, None)

    message = error_of(api.request("DELETE", "/api/teams/infra", tokens.admin), 409)
    assert "team 'infra' still has keys (alice, bob)" in message
    for name in ("alice", "bob"):
        assert api.patch(f"/api/keys/{name}", tokens.admin, {"team": None}).json()["team"] is None
    deleted = api.request("DELETE", f"/api/teams/{body['id']}", tokens.admin)
    assert deleted.status_code == 200 and deleted.json() == {"id": body["id"], "name": "infra", "deleted": True}
    assert api.get("/api/teams", tokens.admin).json() == []
    assert "no team named 'infra'" in error_of(api.get("/api/teams/infra", tokens.admin), 404)


def test_unpriced_team_models_are_accepted_with_the_cli_warning(api, tokens):
    body = api.post("/api/teams", tokens.admin, {"name": "platform", "models": ["gpt-4o-mnii"]}).json()
    assert body["models"] == ["gpt-4o-mnii"]
    [warning] = body["warnings"]
    assert "--models 'gpt-4o-mnii' matches no model pouch has a price for" in warning


def test_a_viewer_reads_teams_and_changes_nothing(api, tokens, platform):
    assert api.get("/api/teams", tokens.viewer).json()[0]["keys"] == ["alice"]
    assert api.get("/api/teams/platform", tokens.viewer).json()["name"] == "platform"
    before = stored()
    for method, path, body in WRITES:
        message = error_of(api.request(method, path, tokens.viewer, body), 403)
        assert "'look' is a viewer: it may only read" in message
    assert stored() == before, "a viewer's request changed the store"


@pytest.mark.parametrize("method, path, body", [("GET", "/api/teams", None), ("GET", "/api/teams/platform", None)]
                         + WRITES)
def test_every_team_route_needs_a_token(api, tokens, platform, method, path, body):
    before = stored()
    for token in (None, "pouch-admin-made-up"):
        error_of(api.request(method, path, token, body), 401)
    assert stored() == before


@pytest.mark.parametrize("body, status, message", [
    ({}, 400, "name: required (the team's unique name)"),
    ({"name": 7}, 400, "name: give a string"),
    ({"name": "x y"}, 400, "bad team name 'x y'"),
    ({"name": "42"}, 400, "a name cannot be all digits"),
    ({"name": "t", "budget_usd": True}, 400, "budget_usd: give USD as a decimal string"),
    ({"name": "t", "budget_usd": "-1"}, 400, "cannot be negative"),
    ({"name": "t", "budget_usd": "1e9"}, 400, "at most $1,000,000.00"),
    ({"name": "t", "period": "fortnightly"}, 400, "bad period"),
    ({"name": "t", "period": 5}, 400, "period: give a string"),
    ({"name": "t", "rpm": "60"}, 400, "rpm: give a whole number"),
    ({"name": "t", "tpm": 0}, 400, "bad tpm 0"),
    ({"name": "t", "max_concurrent": 2147483648}, 400, "at most 2,147,483,647"),
    ({"name": "t", "models": "gpt-4o*"}, 400, "models: give a list of model globs"),
    ({"name": "t", "models": ["gpt 4o"]}, 400, "bad model glob"),
    ({"name": "t", "keys": ["alice"]}, 400, "unknown field(s) keys for POST /api/teams"),
    ({"name": "platform"}, 409, "a team named 'platform' already exists"),
])
def test_create_refuses_what_the_cli_refuses(api, tokens, platform, body, status, message):
    before = stored()
    assert message in error_of(api.post("/api/teams", tokens.admin, body), status)
    assert stored() == before, "nothing written"


@pytest.mark.parametrize("body, status, message", [
    ({}, 400, "nothing to update"),
    ({"rpm": -1}, 400, "bad rpm -1"),
    ({"rpm": True}, 400, "rpm: give a whole number"),
    ({"name": "research"}, 409, "a team named 'research' already exists"),
    ({"name": "x y"}, 400, "bad team name"),
    ({"spent_usd": "0"}, 400, "unknown field(s) spent_usd"),
])
def test_update_refuses_what_the_cli_refuses(api, tokens, platform, body, status, message):
    team_store.create("research", utcnow())
    before = stored()
    assert message in error_of(api.patch("/api/teams/platform", tokens.admin, body), status)
    assert stored() == before, "nothing written"


@pytest.mark.parametrize("method, path", [("GET", "/api/teams/nobody"), ("PATCH", "/api/teams/nobody"),
                                          ("DELETE", "/api/teams/nobody"), ("GET", "/api/teams/999")])
def test_an_unknown_team_is_404(api, tokens, method, path):
    body = {"budget_usd": "1"} if method == "PATCH" else None
    assert "no team named" in error_of(api.request(method, path, tokens.admin, body), 404)


def test_delete_takes_no_body_and_other_methods_are_405(api, tokens, platform):
    assert "it takes no body" in error_of(api.request("DELETE", "/api/teams/platform", tokens.admin, {"force": True}), 400)
    response = api.request("DELETE", "/api/teams", tokens.admin)
    assert "DELETE is not allowed on /api/teams" in error_of(response, 405)
    assert response.headers["allow"] == "GET, POST"
    assert team_store.get("platform").name == "platform"


def test_key_team_and_end_user_fields(api, tokens, platform):
    created = api.post("/api/keys", tokens.admin, {
        "name": "app", "team": "platform", "user_budget_usd": "0.50", "user_period": "daily", "user_rpm": 10,
        "require_user": True}).json()
    assert (created["team"], created["user_budget_usd"], created["user_period"], created["user_rpm"],
            created["require_user"]) == ("platform", "0.5", "daily", 10, True)
    assert api.get("/api/keys/app", tokens.admin).json() == as_json("keys", "show", "app")
    assert api.get("/api/teams/platform", tokens.admin).json()["keys"] == ["alice", "app"]

    updated = api.patch("/api/keys/app", tokens.admin, {"user_budget_usd": None, "user_rpm": None,
                                                        "require_user": False, "team": None}).json()
    assert (updated["team"], updated["user_budget_usd"], updated["user_rpm"], updated["require_user"]) == (
        None, None, None, False)
    assert updated["user_period"] == "daily", "fields not sent stay"
    plain = api.post("/api/keys", tokens.admin, {"name": "plain"}).json()
    assert (plain["team"], plain["user_budget_usd"], plain["user_period"], plain["user_rpm"],
            plain["require_user"]) == (None, None, "none", None, False)


def test_a_team_change_clears_the_gateways_key_cache(api, tokens, platform):
    """The gateway caches keys, each with its team, for a few seconds: a team's new limit must
    apply to its keys' next request, as a key's own does."""
    alice = keys.get("alice")
    for method, path, body in [("PATCH", "/api/teams/platform", {"rpm": 1}),
                               ("POST", "/api/teams", {"name": "research"}),
                               ("DELETE", "/api/teams/research", None)]:
        key_cache.keys.cache.put("some-hash", alice)
        assert key_cache.keys.cache.get("some-hash") == (True, alice)
        assert api.request(method, path, tokens.admin, body).status_code in (200, 201)
        assert key_cache.keys.cache.get("some-hash") == (False, None), f"{method} {path} left the cache"
