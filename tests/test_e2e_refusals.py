"""End to end: refused requests outlive the gateway and show in `pouch usage`; mock requests'
cost is reported apart from real spend.

A real mitmdump refuses an unknown key, a disallowed model, an exhausted budget and a rate
limit (and an unknown path with a pouch key in its query), serves a mock and a real request;
it is stopped and started again, refuses once more, and the `pouch` command reads it all
back from the store.
"""

import json
import subprocess
import sys
from pathlib import Path

import httpx2
import openai
import pytest

from pouch.domain.money import Money
from pouch.services import keys as key_service
from tests.fakes.openai_fake import FakeOpenAI
from tests.gateway import REAL_KEYS, Gateway

MODEL = "gpt-4o-mini"
HELLO = [{"role": "user", "content": "hello there"}]


def pouch(db_url: str, *args) -> list:
    """`pouch --db URL usage ... --json`, the installed command, as an operator runs it."""
    done = subprocess.run([str(Path(sys.executable).with_name("pouch")), "--db", db_url, "usage", *args, "--json"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def chat(client, model=MODEL, **fields):
    return client.chat.completions.create(model=model, messages=HELLO, max_tokens=20, **fields)


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    with FakeOpenAI(tls_dir=tmp_path_factory.mktemp("fake-tls")) as fake:
        yield fake


@pytest.fixture(scope="module")
def recorded(fake, tmp_path_factory):
    """Two runs of one gateway (same home, same store); returns (db URL, keys' secrets)."""
    home = tmp_path_factory.mktemp("gateway")
    first = Gateway(home, {"api.openai.com": fake.url}, str(fake.ca_path)).start()
    first.open_store()
    secrets = {name: key_service.create(name, **options)[1] for name, options in {
        "narrow": {"models": "gpt-4o-mini"},
        "poor": {"budget": "0.000001"},
        "slow": {"rpm": 1},
        "mocky": {"mock": True, "budget": "1"},
    }.items()}
    try:
        with pytest.raises(openai.AuthenticationError):
            chat(first.client("sk-not-a-pouch-key"))
        with pytest.raises(openai.PermissionDeniedError):
            chat(first.client(secrets["narrow"]), model="gpt-4o")
        with pytest.raises(openai.RateLimitError) as budget:
            chat(first.client(secrets["poor"]))
        assert budget.value.code == "insufficient_quota"
        assert chat(first.client(secrets["slow"])).choices, "the minute's one request"
        with pytest.raises(openai.RateLimitError) as rate:
            chat(first.client(secrets["slow"]))
        assert rate.value.code == "rate_limit_exceeded"
        assert chat(first.client(secrets["mocky"])).usage.total_tokens > 0
        with httpx2.Client(proxy=first.proxy_url, verify=first.tls(), timeout=30) as client:
            lost = client.get(f"https://api.openai.com/v1/no-such-thing?key={secrets['narrow']}",
                              headers={"authorization": f"Bearer {secrets['narrow']}"})
        assert lost.status_code == 404
        first.settled(expected_rows=2)
    finally:
        first.stop()

    second = Gateway(home, {"api.openai.com": fake.url}, str(fake.ca_path)).start()
    try:
        with pytest.raises(openai.AuthenticationError):
            chat(second.client("sk-still-not-a-pouch-key"))
    finally:
        second.stop()  # its refusal is written by now: at the latest when the gateway stops
    return first.db_url, secrets


def test_refusals_survive_a_restart_and_are_listed(recorded):
    db_url, _ = recorded
    rows = pouch(db_url, "--refused")
    assert [(r["key"], r["status"], r["reason"]) for r in rows] == [
        (None, 401, "invalid_api_key"),
        ("narrow", 403, "model_not_allowed"),
        ("poor", 429, "insufficient_quota"),
        ("slow", 429, "rate_limit_exceeded"),
        ("narrow", 404, "unknown_endpoint"),  # the key is known by then: the refusal is its
        (None, 401, "invalid_api_key"),  # the second run's
    ]
    assert all(r["provider"] == "openai" for r in rows)
    assert [r["model"] for r in rows[2:4]] == [MODEL, MODEL]
    assert rows[2]["endpoint"] == rows[3]["endpoint"] == "chat.completions"
    assert "budget of key 'poor' exhausted" in rows[2]["message"]
    assert "may not use model 'gpt-4o'" in rows[1]["message"]
    assert [r["id"] for r in pouch(db_url, "--refused", "--key", "slow")] == [rows[3]["id"]]


def test_no_secret_is_stored_with_a_refusal(recorded):
    db_url, secrets = recorded
    listed = json.dumps(pouch(db_url, "--refused"), ensure_ascii=False)
    for secret in [*secrets.values(), *REAL_KEYS.values(), "sk-not-a-pouch-key"]:
        assert secret not in listed and secret[12:] not in listed
    assert "pouch does not know GET /v1/no-such-thing" in listed, "the path is kept, its query (a credential) is not"


def test_by_key_counts_refusals_and_keeps_mock_cost_out_of_spend(recorded):
    db_url, _ = recorded
    by_key = {row["key"]: row for row in pouch(db_url, "--by", "key")}
    assert {name: row["refused"] for name, row in by_key.items()} == {
        "mocky": 0, "narrow": 2, "poor": 1, "slow": 1, None: 2}
    mocky, slow = by_key["mocky"], by_key["slow"]
    assert (mocky["requests"], mocky["cost_usd"]) == (1, "0") and Money.usd(mocky["mock_usd"]) > Money(0)
    assert (slow["requests"], slow["mock_usd"]) == (1, "0") and Money.usd(slow["cost_usd"]) > Money(0)
    [usage_mock] = [r for r in pouch(db_url) if r["mock"]]
    assert usage_mock["cost_usd"] == mocky["mock_usd"], "what the mock request would have cost, reported apart"
    days = pouch(db_url, "--by", "day")  # one day, or two if the test ran across midnight UTC
    assert sum(day["refused"] for day in days) == 6
    assert sum((Money.usd(day["cost_usd"]) for day in days), Money(0)) == Money.usd(slow["cost_usd"])
    assert sum((Money.usd(day["mock_usd"]) for day in days), Money(0)) == Money.usd(mocky["mock_usd"])
