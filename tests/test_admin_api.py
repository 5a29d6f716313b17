"""The admin API route by route, over real HTTP to the server ``pouch admin`` runs (served in
this process on a loopback port): every route, both roles, every error, and the secret shown
once. The CLI is the reference: the API answers with its services, messages and JSON fields."""

import csv
import io
import json
from datetime import timedelta
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from pouch.admin.auth import Authenticator, FailedAttempts
from pouch.cli.main import cli
from pouch.domain.keys import hash_secret
from pouch.domain.money import Money
from pouch.domain.periods import utcnow
from pouch.store import admin_tokens, keys, ledger, refusals
from pouch.store.database import KeyRow
from tests.admin_server import Api, Served, error_of

READS = ["/api/keys", "/api/keys/alice", "/api/keys/alice/requests", "/api/usage", "/api/usage?by=day",
         "/api/usage?format=csv", "/api/prices", "/api/prices/gpt-4o-mini", "/api/overview"]
WRITES = [("POST", "/api/keys", {"name": "mallory"}), ("PATCH", "/api/keys/alice", {"budget_usd": "1000"}),
          ("PATCH", "/api/keys/alice", {"bogus": 1}), ("POST", "/api/keys/alice/revoke", None),
          ("POST", "/api/keys/alice/rotate", None)]


def as_json(*args):
    result = CliRunner().invoke(cli, [*args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture
def tokens(store):
    now = utcnow()
    revoked, revoked_secret = admin_tokens.create("gone", "admin", now)
    admin_tokens.revoke(revoked, now)
    return SimpleNamespace(admin=admin_tokens.create("ops", "admin", now)[1],
                           viewer=admin_tokens.create("look", "viewer", now)[1], revoked=revoked_secret)


@pytest.fixture
def served(store):
    served = Served()
    yield served
    served.stop()


@pytest.fixture
def api(served):
    api = Api(served.url)
    yield api
    api.close()


@pytest.fixture
def alice(store):
    key, secret = keys.create("alice", utcnow(), budget=Money.usd("5"))
    return secret


def stored_keys() -> list[dict]:
    return list(KeyRow.select().order_by(KeyRow.id).dicts())


def test_health_needs_no_token(api):
    assert api.get("/healthz").json() == {"status": "ok"}
    ready = api.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}


@pytest.mark.parametrize("method, path, body", [("GET", path, None) for path in READS] + WRITES)
def test_every_route_needs_a_valid_token(api, tokens, alice, method, path, body):
    before = stored_keys()
    for token in (None, "pouch-admin-made-up", tokens.revoked, alice):  # a pouch key is not an admin token
        response = api.request(method, path, token, body)
        message = error_of(response, 401)
        assert response.headers["www-authenticate"] == 'Bearer realm="pouch"'
        assert ("send an admin token" if token is None else "not valid") in message
    assert stored_keys() == before


@pytest.mark.parametrize("path", READS)
def test_a_viewer_reads_everything(api, tokens, alice, path):
    assert api.get(path, tokens.viewer).status_code == 200


def test_a_viewer_changes_nothing(api, tokens, alice):
    before = stored_keys()
    for method, path, body in WRITES:
        message = error_of(api.request(method, path, tokens.viewer, body), 403)
        assert "'look' is a viewer: it may only read" in message
    assert stored_keys() == before, "a viewer's request changed the store"
    assert len(before) == 1 and before[0]["secret_hash"] == hash_secret(alice)


def test_key_lifecycle_and_the_secret_shown_once(api, tokens):
    created = api.post("/api/keys", tokens.admin, {
        "name": "bob", "budget_usd": "12.50", "period": "monthly", "rpm": 60, "tpm": 1000, "max_concurrent": 2,
        "models": ["gpt-4o*", "claude-*"], "expires_at": "30d", "auto_renew": True, "mock": True})
    assert created.status_code == 201
    body = created.json()
    secret = body["key"]
    assert secret.startswith("pouch-") and body["prefix"] == secret[:12]
    assert created.headers["location"] == f"/api/keys/{body['id']}"
    assert created.headers["cache-control"] == "no-store"
    assert (body["budget_usd"], body["period"], body["rpm"], body["tpm"], body["max_concurrent"]) == (
        "12.5", "monthly", 60, 1000, 2)
    assert (body["models"], body["mock"], body["auto_renew"]) == (["gpt-4o*", "claude-*"], True, True)
    assert "warnings" not in body, "every glob matches a priced model"
    assert KeyRow.get(KeyRow.name == "bob").secret_hash == hash_secret(secret)

    cli_view = as_json("keys", "show", "bob")
    for path in ("/api/keys/bob", f"/api/keys/{body['id']}"):
        shown = api.get(path, tokens.admin).json()
        assert shown == cli_view, "the same fields and values as `pouch keys show --json`"
    listed = api.get("/api/keys", tokens.admin).json()
    assert listed == as_json("keys", "list")
    for response in (api.get("/api/keys", tokens.admin), api.get("/api/keys/bob", tokens.viewer),
                     api.get("/api/keys", tokens.viewer)):
        assert secret not in response.text and '"key"' not in response.text

    updated = api.patch("/api/keys/bob", tokens.admin, {"budget_usd": 20, "rpm": None, "models": None,
                                                        "name": "robert"}).json()
    assert (updated["name"], updated["budget_usd"], updated["rpm"], updated["models"]) == ("robert", "20", None, [])
    assert updated["tpm"] == 1000, "fields not sent stay as they were"
    assert "key" not in updated
    exact = api.patch("/api/keys/robert", tokens.admin, {"budget_usd": 0.1}).json()
    assert exact["budget_usd"] == "0.1", "a JSON number is read exactly, never as a binary float"
    cleared = api.patch("/api/keys/robert", tokens.admin, {"budget_usd": None, "expires_at": None,
                                                           "auto_renew": False}).json()
    assert (cleared["budget_usd"], cleared["expires_at"], cleared["auto_renew"]) == (None, None, False)

    rotated = api.post("/api/keys/robert/rotate", tokens.admin).json()
    assert rotated["key"] != secret and rotated["prefix"] == rotated["key"][:12]
    assert KeyRow.get(KeyRow.name == "robert").secret_hash == hash_secret(rotated["key"])
    assert rotated["key"] not in api.get("/api/keys/robert", tokens.admin).text

    revoked = api.post("/api/keys/robert/revoke", tokens.admin).json()
    assert revoked["revoked"] is True and "key" not in revoked
    assert api.post("/api/keys/robert/revoke", tokens.admin).json()["revoked"] is True, "revoking twice is fine"


def test_unpriced_models_are_accepted_with_the_cli_warning(api, tokens):
    body = api.post("/api/keys", tokens.admin, {"name": "kate", "models": ["gpt-4o-mnii", "gpt-4o*"]}).json()
    assert body["models"] == ["gpt-4o-mnii", "gpt-4o*"]
    [warning] = body["warnings"]
    assert "--models 'gpt-4o-mnii' matches no model pouch has a price for" in warning
    assert "closest priced: gpt-4o-mini" in warning


def test_alert_thresholds_and_a_webhook_only_admins_see_whole(api, tokens):
    body = api.post("/api/keys", tokens.admin, {"name": "dora", "alert_at": [80, 50, 80]}).json()
    assert body["alert_at"] == [50, 80]
    assert body["warnings"] == ["key 'dora' has no budget: its alert_at thresholds never fire until it has one"]
    assert "warnings" not in api.patch("/api/keys/dora", tokens.admin, {"budget_usd": "5"}).json()
    assert api.patch("/api/keys/dora", tokens.admin, {"alert_at": None}).json()["alert_at"] == []
    hook = "https://hooks.slack.com/services/T000/B000/secretpath"
    assert api.patch("/api/keys/dora", tokens.admin, {"webhook": hook}).json()["webhook"] == hook
    assert keys.get("dora").webhook == hook
    assert api.get("/api/keys/dora", tokens.admin).json()["webhook"] == hook
    for response in (api.get("/api/keys/dora", tokens.viewer), api.get("/api/keys", tokens.viewer)):
        assert "secretpath" not in response.text and "https://hooks.slack.com/..." in response.text
    assert api.patch("/api/keys/dora", tokens.admin, {"webhook": None}).json()["webhook"] is None
    assert keys.get("dora").webhook is None
    created = api.post("/api/keys", tokens.admin, {"name": "hooked", "webhook": "http://127.0.0.1:9/alerts"}).json()
    assert created["webhook"] == "http://127.0.0.1:9/alerts"


@pytest.mark.parametrize("body, status, message", [
    ({"name": "carol", "alert_at": [0]}, 400, "bad alert percent '0'"),
    ({"name": "carol", "alert_at": "50,80"}, 400, "alert_at: give a list of budget percents"),
    ({"name": "carol", "budget_usd": "-1"}, 400, "cannot be negative"),
    ({"name": "carol", "budget_usd": "lots"}, 400, "bad budget"),
    ({"name": "carol", "budget_usd": "1e9"}, 400, "at most $1,000,000.00 per key"),
    ({"name": "carol", "period": "fortnightly"}, 400, "bad period"),
    ({"name": "carol", "models": ["gpt 4o"]}, 400, "bad model glob"),
    ({"name": "carol", "models": ["a,b"]}, 400, "bad model glob 'a,b'"),
    ({"name": "carol", "rpm": 0}, 400, "bad rpm 0"),
    ({"name": "carol", "tpm": 2147483648}, 400, "at most 2,147,483,647"),
    ({"name": "carol", "expires_at": "someday"}, 400, "bad time"),
    ({"name": "carol", "auto_renew": True, "expires_at": "30d"}, 400, "--auto-renew needs"),
    ({"name": "carol", "period": "daily", "expires_at": "2000-01-01", "auto_renew": True}, 400,
     "--expires 2000-01-01 is in the past"),
    ({"name": "carol one"}, 400, "bad key name"),
    ({"name": "1234"}, 400, "cannot be all digits"),
    ({"name": 7}, 400, "name: give a string"),
    ({"budget_usd": "5"}, 400, "name: required"),
    ({"name": "carol", "budget_usd": True}, 400, "budget_usd: give USD as a decimal string"),
    ({"name": "carol", "rpm": "60"}, 400, "rpm: give a whole number"),
    ({"name": "carol", "rpm": 1.5}, 400, "rpm: give a whole number"),
    ({"name": "carol", "models": "gpt-4o*"}, 400, "models: give a list of model globs"),
    ({"name": "carol", "mock": "yes"}, 400, "mock: give true or false"),
    ({"name": "carol", "colour": "red", "size": 2}, 400, "unknown field(s) colour, size for POST /api/keys"),
    ({"name": "carol", "key": "pouch-chosen"}, 400, "unknown field(s) key"),
    ({"name": "carol", "team": "research"}, 400, "no team named 'research' (see `pouch teams list`)"),
    ({"name": "carol", "team": True}, 400, "team: give a string"),
    ({"name": "carol", "user_budget_usd": [1]}, 400, "user_budget_usd: give USD as a decimal string"),
    ({"name": "carol", "user_budget_usd": "-1"}, 400, "bad user budget '-1'"),
    ({"name": "carol", "user_period": "fortnightly"}, 400, "bad period"),
    ({"name": "carol", "user_rpm": 0}, 400, "bad user rpm 0"),
    ({"name": "carol", "require_user": "yes"}, 400, "require_user: give true or false"),
    ({"name": "carol", "webhook": "ftp://example.com/x"}, 400, "bad webhook 'ftp://example.com/...'"),
    ({"name": "carol", "webhook": 5}, 400, "webhook: give a string"),
    ({"name": "alice"}, 409, "a key named 'alice' already exists"),
])
def test_create_refuses_what_the_cli_refuses(api, tokens, alice, body, status, message):
    before = stored_keys()
    assert message in error_of(api.post("/api/keys", tokens.admin, body), status)
    assert stored_keys() == before, "nothing written"


@pytest.mark.parametrize("body, status, message", [
    ({}, 400, "nothing to update"),
    ({"budget_usd": "-3"}, 400, "cannot be negative"),
    ({"rpm": -1}, 400, "bad rpm -1"),
    ({"name": "bob"}, 409, "a key named 'bob' already exists"),
    ({"name": "x y"}, 400, "bad key name"),
    ({"auto_renew": True}, 400, "--auto-renew needs"),
    ({"prefix": "pouch-x"}, 400, "unknown field(s) prefix"),
    ({"team": "research"}, 400, "no team named 'research'"),
    ({"user_rpm": "5"}, 400, "user_rpm: give a whole number"),
])
def test_update_refuses_what_the_cli_refuses(api, tokens, alice, body, status, message):
    keys.create("bob", utcnow())
    before = stored_keys()
    assert message in error_of(api.patch("/api/keys/alice", tokens.admin, body), status)
    assert stored_keys() == before, "nothing written"


@pytest.mark.parametrize("method, path", [("GET", "/api/keys/nobody"), ("PATCH", "/api/keys/nobody"),
                                          ("POST", "/api/keys/nobody/revoke"), ("POST", "/api/keys/nobody/rotate"),
                                          ("GET", "/api/keys/nobody/requests"), ("GET", "/api/keys/999")])
def test_an_unknown_key_is_404(api, tokens, method, path):
    body = {"budget_usd": "1"} if method == "PATCH" else None
    message = error_of(api.request(method, path, tokens.admin, body), 404)
    assert "no key named" in message


def test_bodies_that_are_not_a_json_object(api, tokens, alice):
    for content in (b"{not json", b"[1, 2]", b'"text"', b'{"name": NaN}'):
        response = api.request("POST", "/api/keys", tokens.admin, content=content,
                               headers={"content-type": "application/json"})
        assert error_of(response, 400)
    assert "takes no body" in error_of(api.post("/api/keys/alice/revoke", tokens.admin, {"now": True}), 400)
    assert not KeyRow.get(KeyRow.name == "alice").revoked


def test_methods_paths_and_query_parameters(api, tokens, alice):
    response = api.request("DELETE", "/api/keys/alice", tokens.admin)
    assert "DELETE is not allowed on /api/keys/alice (allowed: GET, PATCH)" in error_of(response, 405)
    assert response.headers["allow"] == "GET, PATCH"
    assert error_of(api.request("PUT", "/api/keys", tokens.viewer), 405), "405 before the viewer's 403"
    assert error_of(api.get("/api/things", tokens.admin), 404)
    assert error_of(api.get("/no/such/thing"), 404)
    assert "unknown query parameter(s) keys" in error_of(api.get("/api/usage?keys=alice", tokens.admin), 400)


def test_no_cors_and_no_cookies(api, tokens):
    preflight = api.request("OPTIONS", "/api/keys", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization"})
    assert preflight.status_code == 401
    answered = api.get("/api/keys", tokens.admin, headers={"Origin": "https://evil.example"})
    assert answered.status_code == 200
    for response in (preflight, answered):
        assert not [h for h in response.headers if h.lower().startswith("access-control-")]
        assert "set-cookie" not in response.headers
    assert api.get(f"/api/keys?token={tokens.admin}").status_code == 401, "a token only counts in the header"


@pytest.fixture
def recorded(store, alice):
    """alice: a real request settled against her budget ($0.25), then a mock one; bob: one real
    ($0.5, two days ago); refusals for both and for an unknown key."""
    now = utcnow()
    key = keys.get("alice")
    bob, _ = keys.create("bob", now)
    held = ledger.reserve(key.id, key.window(now), Money.usd("1"), now, owner="test", hold=timedelta(hours=1))
    base = {"provider": "openai", "endpoint": "chat", "status": 200, "input_tokens": 12, "output_tokens": 3}
    ledger.finish(held.id, Money.usd("0.25"), {**base, "ts": now, "key": key.id, "key_name": "alice",
                                               "model": "gpt-4o-mini"})
    ledger.record({**base, "ts": now, "key": key.id, "key_name": "alice", "model": "gpt-4o", "mock": True,
                   "outcome": "mock", "tool_calls": {"web_search": 2}}, Money.usd("0.5"))
    ledger.record({**base, "ts": now - timedelta(days=2), "key": bob.id, "key_name": "bob", "model": "gpt-4o"},
                  Money.usd("0.5"))

    def refused(key, reason, status, ago=timedelta(0)):
        return {"ts": now - ago, "key": key.id if key else None, "provider": "openai", "model": "gpt-4o-mini",
                "endpoint": "chat", "status": status, "reason": reason, "message": f"{reason}!"}

    refusals.record([refused(key, "insufficient_quota", 429, timedelta(seconds=1)),
                     refused(key, "rate_limit_exceeded", 429, timedelta(days=3)),
                     refused(bob, "insufficient_quota", 429), refused(None, "invalid_api_key", 401)])
    return now


def test_usage_rows_and_totals_are_the_cli_s(api, tokens, recorded):
    assert api.get("/api/usage", tokens.viewer).json() == {"rows": as_json("usage")}
    for by in ("key", "model", "day"):
        assert api.get(f"/api/usage?by={by}", tokens.viewer).json() == {"rows": as_json("usage", "--by", by)}
    alice = api.get("/api/usage?key=alice&since=24h", tokens.viewer).json()["rows"]
    assert [row["model"] for row in alice] == ["gpt-4o-mini", "gpt-4o"]
    older = api.get("/api/usage?until=1d", tokens.viewer).json()["rows"]
    assert [row["key"] for row in older] == ["bob"]
    day = recorded.date().isoformat()
    assert api.get(f"/api/usage?since={day}&until={day}", tokens.viewer).json() == {"rows": []}


def test_usage_csv_parses_and_matches_the_json(api, tokens, recorded):
    for query in ("", "?by=key", "?by=day&key=alice"):
        rows = api.get(f"/api/usage{query}", tokens.viewer).json()["rows"]
        response = api.get(f"/api/usage{query}{'&' if query else '?'}format=csv", tokens.viewer)
        assert response.headers["content-type"].startswith("text/csv")
        assert response.headers["content-disposition"].startswith("attachment; filename=")
        parsed = list(csv.DictReader(io.StringIO(response.text)))
        assert len(parsed) == len(rows) > 0
        for row, line in zip(rows, parsed):
            assert list(line) == list(row)
            expected = {field: "" if value is None else json.dumps(value) if isinstance(value, dict) else str(value)
                        for field, value in row.items()}
            assert line == expected
    empty = api.get("/api/usage?key=nobody&format=csv", tokens.viewer).text
    assert empty.splitlines()[0].startswith("id,ts,key,provider,model")


@pytest.mark.parametrize("query, message", [
    ("by=colour", "cannot group usage by"), ("by=colour&format=csv", "cannot group usage by"),
    ("format=xml", "format=xml: give json or csv"), ("since=someday", "bad time 'someday'"),
    ("until=soon", "bad time 'soon'"), ("limit=5", "unknown query parameter(s) limit"),
])
def test_usage_refuses_bad_queries(api, tokens, query, message):
    assert message in error_of(api.get(f"/api/usage?{query}", tokens.viewer), 400)


def test_prices_are_the_cli_s(api, tokens):
    assert api.get("/api/prices", tokens.viewer).json() == as_json("prices")
    assert api.get("/api/prices?provider=anthropic", tokens.viewer).json() == as_json("prices", "--provider",
                                                                                       "anthropic")
    assert api.get("/api/prices/gpt-4o-mini", tokens.viewer).json() == as_json("prices", "show", "gpt-4o-mini")
    dated = api.get("/api/prices/gpt-4o-mini?at=2026-01-01", tokens.viewer).json()
    assert dated == as_json("prices", "show", "gpt-4o-mini", "--at", "2026-01-01")
    assert "no price for 'no-such-model'" in error_of(api.get("/api/prices/no-such-model", tokens.viewer), 404)
    assert "at: 'soon' is not a date" in error_of(api.get("/api/prices/gpt-4o?at=soon", tokens.viewer), 400)


def test_overview(api, tokens, recorded):
    body = api.get("/api/overview?days=7", tokens.viewer).json()
    today = recorded.date().isoformat()
    assert body["today"]["since"].startswith(today)
    assert (body["today"]["cost_usd"], body["today"]["requests"], body["today"]["refused"]) == ("0.25", 2, 3)
    assert body["budgets"] == {"keys": 2, "keys_with_budget": 1, "spent_usd": "0.25", "reserved_usd": "0",
                               "budget_usd": "5"}
    assert len(body["daily"]) == 7 and body["daily"][-1]["day"] == today
    last = body["daily"][-1]
    assert (last["cost_usd"], last["requests"]) == ("0.25", 2)
    assert last["by_model"] == {"gpt-4o-mini": "0.25", "gpt-4o": "0"}, "mock cost is not spend"
    assert last["by_key"] == {"alice": "0.25"}
    two_days_ago = body["daily"][-3]
    assert two_days_ago["by_key"] == {"bob": "0.5"} and two_days_ago["cost_usd"] == "0.5"
    assert body["top_keys"] == [{"key": "bob", "cost_usd": "0.5", "requests": 1},
                                {"key": "alice", "cost_usd": "0.25", "requests": 2}]
    assert body["refusals"] == [{"reason": "insufficient_quota", "count": 2},
                                {"reason": "invalid_api_key", "count": 1},
                                {"reason": "rate_limit_exceeded", "count": 1}]
    one_day = api.get("/api/overview?days=1", tokens.viewer).json()
    assert [d["day"] for d in one_day["daily"]] == [today]
    assert {r["reason"] for r in one_day["refusals"]} == {"insufficient_quota", "invalid_api_key"}
    for days in ("0", "367", "x"):
        assert "days: give a whole number" in error_of(api.get(f"/api/overview?days={days}", tokens.viewer), 400)


def test_a_key_s_recent_requests_newest_first(api, tokens, recorded):
    found = api.get("/api/keys/alice/requests", tokens.viewer).json()["requests"]
    assert [(r["kind"], r.get("model"), r.get("reason")) for r in found] == [
        ("usage", "gpt-4o", None), ("usage", "gpt-4o-mini", None), ("refusal", "gpt-4o-mini", "insufficient_quota"),
        ("refusal", "gpt-4o-mini", "rate_limit_exceeded")]
    usage_rows = {row["id"]: row for row in as_json("usage", "--key", "alice")}
    assert found[0] == usage_rows[found[0]["id"]] | {"kind": "usage", "flow_id": None}  # no flow: written here
    assert found[2]["key"] == "alice" and found[2]["status"] == 429
    assert len(api.get("/api/keys/alice/requests?limit=3", tokens.viewer).json()["requests"]) == 3
    for limit in ("0", "501", "many"):
        assert "limit:" in error_of(api.get(f"/api/keys/alice/requests?limit={limit}", tokens.viewer), 400)


def test_wrong_tokens_are_limited_per_address(store, tokens):
    now = [0.0]
    served = Served(Authenticator(FailedAttempts(burst=3, every=10, clock=lambda: now[0])))
    api = Api(served.url)
    try:
        for _ in range(5):
            assert api.get("/api/keys").status_code == 401, "no token at all is not an attempt"
        for _ in range(3):
            assert api.get("/api/keys", "pouch-admin-guess").status_code == 401
        blocked = api.get("/api/keys", "pouch-admin-guess")
        assert "too many wrong admin tokens" in error_of(blocked, 429)
        assert blocked.headers["retry-after"] == "11"
        assert api.get("/api/keys", tokens.admin).status_code == 200, "a valid token is never refused"
        now[0] += 10  # one attempt back
        assert api.get("/api/keys", "pouch-admin-guess").status_code == 401
        assert api.get("/api/keys", "pouch-admin-guess").status_code == 429
        assert api.get("/healthz").status_code == 200
    finally:
        api.close()
        served.stop()


def test_failed_attempts_forget_the_oldest_addresses():
    attempts = FailedAttempts(burst=1, every=60, max_addresses=2, clock=lambda: 0.0)
    for address in ("a", "b", "c"):
        attempts.failed(address)
    assert attempts.retry_after("a") == 0 and attempts.retry_after("c") == 60
