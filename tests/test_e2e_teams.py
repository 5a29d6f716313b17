"""Teams, end users, tags and sessions end to end: a real mitmdump with the chain, the openai and
anthropic SDKs through HTTPS_PROXY, fakes on loopback.

A request fits its key AND its team AND its end user (budget, limits, allowlist), a refusal names
the level that refused and holds nothing anywhere, and the usage row says which team, end user,
tags and session it belongs to. The x-pouch-* headers never reach the provider."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import anthropic
import openai
import pytest

from pouch.domain.money import Money
from pouch.domain.periods import utcnow
from pouch.services import keys as key_service
from pouch.services import teams as team_service
from pouch.store import keys as key_store
from pouch.store import ledger
from pouch.store.database import BudgetLedgerRow, RefusalRow, ReservationRow, UsageRow
from tests.conftest import PG_URL, fresh_postgres
from tests.fakes.anthropic_fake import FakeAnthropic
from tests.fakes.openai_fake import FakeOpenAI
from tests.gateway import Gateway

MODEL, CLAUDE = "gpt-4o-mini", "claude-haiku-4-5"
HELLO = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def fakes(tmp_path_factory):
    tls = tmp_path_factory.mktemp("tls")
    with FakeOpenAI(tls_dir=tls / "o") as gpt, FakeAnthropic(tls_dir=tls / "a") as claude:
        bundle = tls / "cas.pem"
        bundle.write_text("".join(open(fake.ca_path).read() for fake in (gpt, claude)))
        yield {"openai": gpt, "anthropic": claude, "ca_bundle": bundle}


@pytest.fixture(scope="module")
def gateway(fakes, tmp_path_factory):
    routes = {"api.openai.com": fakes["openai"].url, "api.anthropic.com": fakes["anthropic"].url}
    gateway = Gateway(tmp_path_factory.mktemp("gateway"), routes, str(fakes["ca_bundle"])).start()
    yield gateway
    gateway.stop()


@pytest.fixture(autouse=True)
def fresh(fakes, gateway):
    for fake in (fakes["openai"], fakes["anthropic"]):
        fake.reset()
    gateway.open_store()


def name(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def claude(gateway, secret):
    return anthropic.Anthropic(api_key=secret, max_retries=0, http_client=anthropic.DefaultHttpxClient(
        proxy=gateway.proxy_url, verify=gateway.tls()))


def level(scope: str) -> tuple[int, int]:
    rows = list(BudgetLedgerRow.select().where(BudgetLedgerRow.scope == scope))
    return (sum(r.spent_pico for r in rows), sum(r.reserved_pico for r in rows))


def chat(gateway, secret, **extra):
    return gateway.client(secret).chat.completions.create(model=MODEL, messages=HELLO, max_tokens=20, **extra)


def test_a_team_budget_binds_across_its_keys_and_its_refusal_names_the_team(gateway, fakes):
    team = team_service.create(name("team"), budget="0.0001")
    a, secret_a = key_service.create(name("a"), team=team.name, budget="1")
    b, secret_b = key_service.create(name("b"), team=team.name, budget="1")
    for _ in range(3):  # each reserves ~20 output tokens' worth, far below the team's $0.0001
        chat(gateway, secret_a, extra_headers={"x-fake-output-tokens": "20"})
    gateway.settled(expected_rows=3)
    spent, _ = level(team.scope)
    assert spent == sum(r.cost_pico for r in UsageRow.select().where(UsageRow.team == team.name)) > 0
    # the team has less left than b's request needs, though b's own budget is untouched
    with pytest.raises(openai.RateLimitError) as refused:
        gateway.client(secret_b).chat.completions.create(model=MODEL, messages=HELLO, max_tokens=4000)
    message = refused.value.body["message"]
    assert f"budget of team '{team.name}' exhausted" in message
    assert refused.value.response.headers["x-should-retry"] == "false"
    assert ledger.window_totals(key_store.get(b.id), utcnow()) == (Money(0), Money(0)), "nothing held at the key"
    assert level(team.scope)[1] == 0 and ReservationRow.select().count() == 0
    deadline = time.monotonic() + 15  # refusals are written in batches, off the request path
    while not (refusal := RefusalRow.select().where(RefusalRow.reason == "insufficient_quota").first()):
        assert time.monotonic() < deadline, "the refusal was never recorded"
        time.sleep(0.05)
    assert refusal.team == team.name


def test_a_team_allowlist_and_rate_limit_bind_its_keys(gateway, fakes):
    team = team_service.create(name("team"), models="gpt-4o-mini", rpm=2)
    a, secret_a = key_service.create(name("a"), team=team.name)
    b, secret_b = key_service.create(name("b"), team=team.name)
    with pytest.raises(openai.PermissionDeniedError, match=f"team '{team.name}' may not use model 'gpt-4o'"):
        gateway.client(secret_a).chat.completions.create(model="gpt-4o", messages=HELLO, max_tokens=5)
    chat(gateway, secret_a)
    chat(gateway, secret_b)
    with pytest.raises(openai.RateLimitError, match=f"team '{team.name}' is rate limited: over 2 requests per minute"):
        chat(gateway, secret_a)
    assert len(fakes["openai"].requests) == 2


def test_end_users_from_the_sdks_field_and_the_header_each_get_their_budget(gateway, fakes):
    key, secret = key_service.create(name("app"), budget="1", user_budget="0.00002", user_period="daily")
    chat(gateway, secret, user="ann", extra_headers={"x-fake-output-tokens": "20"})
    chat(gateway, secret, safety_identifier="bob")
    chat(gateway, secret, extra_headers={"x-pouch-user": "cy"})  # the header: no SDK field needed
    gateway.settled(expected_rows=3)
    rows = list(UsageRow.select().where(UsageRow.key_name == key.name).order_by(UsageRow.id))
    assert [r.end_user for r in rows] == ["ann", "bob", "cy"]
    for row in rows:
        assert level(key.user_scope(row.end_user)) == (row.cost_pico, 0)
    with pytest.raises(openai.RateLimitError, match=f"budget of end user 'ann' of key '{key.name}' exhausted"):
        gateway.client(secret).chat.completions.create(model=MODEL, messages=HELLO, max_tokens=4000, user="ann")
    for sent in fakes["openai"].requests:
        assert not any(h.startswith("x-pouch-") for h in sent.headers), "pouch's headers never go upstream"


def test_anthropic_metadata_user_id_and_claude_codes_json_user_id(gateway, fakes):
    key, secret = key_service.create(name("app"), user_budget="1")
    client = claude(gateway, secret)
    client.messages.create(model=CLAUDE, max_tokens=10, messages=HELLO, metadata={"user_id": "dana"})
    claude_code = json.dumps({"device_id": "dev-1", "account_uuid": "acct-7", "session_id": "sess-42"})
    client.messages.create(model=CLAUDE, max_tokens=10, messages=HELLO, metadata={"user_id": claude_code})
    client.messages.create(model=CLAUDE, max_tokens=10, messages=HELLO,
                           extra_headers={"x-claude-code-session-id": "sess-43"})
    gateway.settled(expected_rows=3)
    rows = list(UsageRow.select().where(UsageRow.key_name == key.name).order_by(UsageRow.id))
    assert [(r.end_user, r.session) for r in rows] == [("dana", None), ("acct-7", "sess-42"), (None, "sess-43")]
    assert fakes["anthropic"].requests[1].body["metadata"]["user_id"] == claude_code, "the body goes on unchanged"


def test_a_key_that_requires_an_end_user_refuses_a_request_without_one(gateway, fakes):
    key, secret = key_service.create(name("strict"), require_user=True)
    with pytest.raises(openai.BadRequestError, match=f"key '{key.name}' requires an end-user id"):
        chat(gateway, secret)
    with pytest.raises(anthropic.BadRequestError, match="requires an end-user id"):
        claude(gateway, secret).messages.create(model=CLAUDE, max_tokens=10, messages=HELLO)
    assert fakes["openai"].requests == [] and fakes["anthropic"].requests == []
    chat(gateway, secret, user="erin")
    claude(gateway, secret).messages.create(model=CLAUDE, max_tokens=10, messages=HELLO,
                                            extra_headers={"x-pouch-user": "fay"})
    gateway.settled(expected_rows=2)
    assert {r.end_user for r in UsageRow.select().where(UsageRow.key_name == key.name)} == {"erin", "fay"}


def test_tags_and_sessions_are_recorded_and_never_sent_upstream(gateway, fakes):
    key, secret = key_service.create(name("agent"))
    chat(gateway, secret, extra_headers={"x-pouch-tags": "checkout, beta,checkout", "x-pouch-session": "run-1"})
    chat(gateway, secret, extra_headers={"x-pouch-session": "run-1"})
    chat(gateway, secret, extra_headers={"session_id": "codex-9"})  # Codex's own header
    gateway.settled(expected_rows=3)
    rows = list(UsageRow.select().where(UsageRow.key_name == key.name).order_by(UsageRow.id))
    assert [(r.tags, r.session) for r in rows] == [("checkout,beta", "run-1"), (None, "run-1"), (None, "codex-9")]
    for sent in fakes["openai"].requests:
        assert "x-pouch-tags" not in sent.headers and "x-pouch-session" not in sent.headers
    with pytest.raises(openai.BadRequestError, match="x-pouch-tags: bad tag"):
        chat(gateway, secret, extra_headers={"x-pouch-tags": "=cmd|calc"})
    with pytest.raises(openai.BadRequestError, match="x-pouch-session: give 1 to 256 printable"):
        chat(gateway, secret, extra_headers={"x-pouch-session": "x" * 300})
    assert len(fakes["openai"].requests) == 3


def test_the_gateway_ceiling_binds_every_key(fakes, tmp_path):
    routes = {"api.openai.com": fakes["openai"].url}
    ceiling = Gateway(tmp_path / "gw", routes, str(fakes["ca_bundle"]),
                      {"pouch_budget_total": "0.0001", "pouch_budget_total_period": "daily"}).start()
    try:
        ceiling.open_store()
        (a, secret_a), (b, secret_b) = key_service.create("a"), key_service.create("b")
        ceiling.client(secret_a).chat.completions.create(model=MODEL, messages=HELLO, max_tokens=20)
        with pytest.raises(openai.RateLimitError, match=r"budget of the gateway \(pouch_budget_total\) exhausted"):
            ceiling.client(secret_b).chat.completions.create(model=MODEL, messages=HELLO, max_tokens=4000)
        ceiling.settled(expected_rows=1)
        assert len(fakes["openai"].requests) == 1
        assert level("total") == (UsageRow.get().cost_pico, 0)
    finally:
        ceiling.stop()


STORES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.skipif(
    not PG_URL, reason="PostgreSQL not available (scripts/test starts it when installed)"))]


@pytest.mark.parametrize("store", STORES)
def test_a_burst_over_a_teams_keys_and_their_end_users_overspends_no_level(fakes, tmp_path, store):
    """60 concurrent requests over 3 keys of one team and 5 end users each: the team's, each
    key's and each end user's budget bind at some point; none is exceeded and each level's
    ledger is the sum of its rows."""
    options = {}
    if store == "postgresql":
        fresh_postgres(PG_URL)
        options["pouch_db"] = PG_URL
    burst = Gateway(tmp_path / "gw", {"api.openai.com": fakes["openai"].url}, str(fakes["ca_bundle"]), options).start()
    try:
        burst.open_store()
        team = team_service.create("platform", budget="0.0004")
        members = [key_service.create(f"k{i}", team="platform", budget="0.00018", user_budget="0.00006")
                   for i in range(3)]

        async def one(i):
            key, secret = members[i % 3]
            client = burst.async_client(secret)
            try:
                await client.chat.completions.create(
                    model=MODEL, messages=HELLO, max_tokens=60, user=f"u{i % 5}",
                    extra_headers={"x-fake-output-tokens": "50"})
                return "ok"
            except openai.RateLimitError as e:
                return e.body["message"].split(" exhausted")[0]
            finally:
                await client.close()

        async def run():
            return await asyncio.gather(*(one(i) for i in range(60)))

        outcomes = asyncio.run(run())
        burst.settled(expected_rows=outcomes.count("ok"))
        refused_by = {outcome for outcome in outcomes if outcome != "ok"}
        assert refused_by and all(o.startswith("budget of ") for o in refused_by)
        rows = list(UsageRow.select())
        assert len(rows) == outcomes.count("ok") and ReservationRow.select().count() == 0
        team_spent = level(team.scope)
        assert team_spent == (sum(r.cost_pico for r in rows), 0) and team_spent[0] <= Money.usd("0.0004").pico
        for key, _ in members:
            mine = [r for r in rows if r.key_name == key.name]
            assert ledger.window_totals(key_store.get(key.id), utcnow()) == (Money(sum(r.cost_pico for r in mine)),
                                                                           Money(0))
            assert sum(r.cost_pico for r in mine) <= Money.usd("0.00018").pico
            for user in {r.end_user for r in mine}:
                theirs = sum(r.cost_pico for r in mine if r.end_user == user)
                assert level(key.user_scope(user)) == (theirs, 0) and theirs <= Money.usd("0.00006").pico
    finally:
        burst.stop()
