"""Budget alerts end to end: a real mitmdump with the chain, the openai SDK through HTTPS_PROXY
against the fake OpenAI, and a webhook receiver on loopback. Spend is set exactly with the fake's
``x-fake-usage``; the receiver sees exactly the events the traffic caused, each once."""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import openai
import pytest

from pouch.alerts.outbox import AlertRow
from pouch.domain.money import Money
from pouch.domain.periods import utcnow
from pouch.services import keys as key_service
from pouch.store import keys as key_store
from pouch.store import ledger
from tests import pinned_prices
from tests.alerts_receiver import Receiver
from tests.conftest import PG_URL, fresh_postgres
from tests.fakes.openai_fake import FakeOpenAI
from tests.gateway import Gateway

MODEL = "gpt-4o-mini"
PRICE = pinned_prices.table().resolve(MODEL, "openai")
HELLO = [{"role": "user", "content": "hello there"}]
SECRET = "whsec-e2e"
SLACK = "http://hooks.slack.com/services/T000/B000/XXXX"
FAST = {"pouch_alert_interval": "0.1", "pouch_webhook_backoff": "0.1", "pouch_webhook_timeout": "1",
        "pouch_webhook_secret": SECRET}


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    with FakeOpenAI(tls_dir=tmp_path_factory.mktemp("tls")) as fake:
        yield fake


@pytest.fixture(scope="module")
def receiver():
    with Receiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def gateway(fake, receiver, tmp_path_factory):
    gateway = Gateway(tmp_path_factory.mktemp("gateway"), {"api.openai.com": fake.url}, str(fake.ca_path),
                      {"pouch_webhook": f"{receiver.url}/all", **FAST})
    gateway.env["POUCH_WEBHOOK_RESOLVE"] = f"hooks.slack.com=127.0.0.1:{receiver.port}"  # no real Slack
    gateway.start()
    yield gateway
    gateway.stop()
    log = gateway.log_path.read_text()
    assert "alert delivery failed" not in log and "recording an alert" not in log
    assert "/services/T000" not in log, "a webhook's path (Slack's secret) is never logged"
    assert "pouch: alert evt_" in log


@pytest.fixture(autouse=True)
def fresh(receiver, gateway):
    receiver.refusing, receiver.refused_path, receiver.fail_each = False, None, 0
    gateway.open_store()


def new_key(**options):
    return key_service.create(f"k{uuid.uuid4().hex[:10]}", **options)


def spend(gateway, secret, output_tokens: int, *, max_tokens: int | None = None, input_tokens: int = 8):
    """One request billed exactly ``output_tokens`` of output and ``input_tokens`` of input
    (the prompt is 9 tokens as pouch counts it for its reservation)."""
    usage = {"prompt_tokens": input_tokens, "completion_tokens": output_tokens}
    gateway.client(secret).chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=max_tokens or output_tokens,
        extra_headers={"x-fake-usage": json.dumps(usage)})


def cost(output_tokens: int, input_tokens: int = 8) -> Money:
    return PRICE.input * input_tokens + PRICE.output * output_tokens


def events_of(receiver, key, path="/all"):
    return [r for r in receiver.accepted(path) if r.json.get("key") == key.name]


def stored(key) -> list[AlertRow]:
    return list(AlertRow.select().where(AlertRow.key == key.id))


def wait_delivered(receiver, key, count, path="/all"):
    receiver.wait_for(lambda r: len(events_of(r, key, path)) >= count and
                      all(row.state == "delivered" for row in stored(key)) and len(stored(key)) == count)


def test_thresholds_crossed_by_traffic_send_exactly_their_events_signed(gateway, receiver):
    key, secret = new_key(budget="0.01", alert_at="50,80", webhook=f"{receiver.url}/key")
    for _ in range(4):  # 24%, 48%, 72% (crosses 50), 96% (crosses 80)
        spend(gateway, secret, 4000)
    with pytest.raises(openai.RateLimitError) as refused:  # its worst case no longer fits
        spend(gateway, secret, 10, max_tokens=4000)
    assert refused.value.code == "insufficient_quota"
    gateway.settled(expected_rows=4)
    wait_delivered(receiver, key, 3)

    for path in ("/all", "/key"):
        got = events_of(receiver, key, path)
        assert sorted((r.json["event"], r.json["threshold_pct"]) for r in got) == [
            ("budget.exhausted", 100), ("budget.threshold", 50), ("budget.threshold", 80)], path
        assert len({r.json["id"] for r in got}) == 3
        assert all(r.signed_by(SECRET) for r in got), "X-Pouch-Signature verifies with the secret"
        assert not any(r.signed_by("another secret") for r in got)
    by_pct = {r.json["threshold_pct"]: r.json for r in events_of(receiver, key)}
    assert by_pct[50]["spent_usd"] == (cost(4000) * 3).json() and by_pct[50]["budget_usd"] == "0.01"
    assert by_pct[80]["spent_usd"] == (cost(4000) * 4).json()
    assert by_pct[100]["spent_usd"] == ledger.window_totals(key_store.get(key.id), utcnow())[0].json()
    assert "was refused a request for budget" in by_pct[100]["message"]
    assert by_pct[50]["period_start"] == key.window(utcnow()).start.isoformat() and by_pct[50]["team"] is None

    with pytest.raises(openai.RateLimitError):  # refused again: nothing more is sent this period
        spend(gateway, secret, 10, max_tokens=4000)
    spend_more = new_key(budget="1")[1]  # a request after it (any key) passes through the outbox's next looks
    spend(gateway, spend_more, 1)
    gateway.settled(expected_rows=5)
    assert len(stored(key)) == 3


def test_an_overrun_is_sent(gateway, receiver):
    key, secret = new_key(budget="1")
    spend(gateway, secret, 50_000, max_tokens=10)  # the provider billed far past max_tokens
    gateway.settled(expected_rows=1)
    wait_delivered(receiver, key, 1)
    [got] = events_of(receiver, key)
    assert (got.json["event"], got.json["threshold_pct"]) == ("spend.overrun", None)
    assert got.json["spent_usd"] == cost(50_000).json() and got.signed_by(SECRET)


def test_a_receiver_failing_a_few_times_still_gets_each_event_once(gateway, receiver):
    receiver.fail_each = 3
    key, secret = new_key(budget="0.01", alert_at="25,50,75")
    spend(gateway, secret, 16_000)  # 96%: three thresholds in one settlement
    gateway.settled(expected_rows=1)
    wait_delivered(receiver, key, 3)
    got = events_of(receiver, key)
    assert sorted(r.json["threshold_pct"] for r in got) == [25, 50, 75]
    assert len({r.json["id"] for r in got}) == 3, "three events, each accepted once"
    tries = [r for r in receiver.received if r.path == "/all" and r.json.get("key") == key.name]
    assert len(tries) == 12, "three refused tries each, then the one accepted"
    assert {row.attempts for row in stored(key)} == {4}


def test_a_slack_webhook_gets_slacks_shape(gateway, receiver):
    key, secret = new_key(budget=cost(1660, 9).json(), webhook=SLACK)
    spend(gateway, secret, 1660, input_tokens=9)  # the whole budget, to the pico-dollar
    gateway.settled(expected_rows=1)
    wait_delivered(receiver, key, 1)
    [full] = events_of(receiver, key)
    receiver.wait_for(lambda r: r.accepted("/services/T000/B000/XXXX"))
    [slack] = [r for r in receiver.accepted("/services/T000/B000/XXXX") if key.name in r.json["text"]]
    assert slack.headers["host"] == "hooks.slack.com"
    assert slack.json == {"text": full.json["message"]}
    assert full.json["event"] == "budget.exhausted" and "has spent its whole budget" in slack.json["text"]
    assert slack.signed_by(SECRET)


def test_a_gateway_killed_before_delivering_delivers_after_restart(fake, receiver, tmp_path):
    """The receiver refuses until the gateway is SIGKILLed; a new gateway on the same store
    delivers what the dead one detected, each event once."""
    options = {"pouch_webhook": f"{receiver.url}/killed", **FAST}
    first = Gateway(tmp_path / "first", {"api.openai.com": fake.url}, str(fake.ca_path), options)
    receiver.refused_path = "/killed"
    first.open_store()
    soon, _ = key_service.create("soon", expires=(utcnow() + timedelta(days=2)).isoformat())
    first.start()
    try:
        key, secret = key_service.create("crash", budget="0.01", alert_at="50")
        spend(first, secret, 10_000)  # 60%
        first.settled(expected_rows=1)

        def tried(who):
            return lambda r: any(x.path == "/killed" and x.json.get("key") == who.name for x in r.received)

        receiver.wait_for(tried(key))
        receiver.wait_for(tried(soon))
    finally:
        first.process.kill()  # SIGKILL: no done hooks, nothing flushed
        first.process.wait()
    assert {row.state for row in AlertRow.select()} == {"pending"}

    receiver.refused_path = None
    second = Gateway(tmp_path / "second", {"api.openai.com": fake.url}, str(fake.ca_path),
                     {**options, "pouch_db": first.db_url})
    second.start()
    try:
        receiver.wait_for(lambda r: {x.json["key"] for x in r.accepted("/killed")} >= {"crash", "soon"})
        second.open_store()
        receiver.wait_for(lambda r: {row.state for row in AlertRow.select()} == {"delivered"})
    finally:
        second.stop()
    accepted = receiver.accepted("/killed")
    assert sorted((r.json["key"], r.json["event"]) for r in accepted) == [
        ("crash", "budget.threshold"), ("soon", "key.expiring")], "each once"
    assert all(r.signed_by(SECRET) for r in accepted)
    assert accepted[0].json["id"] != accepted[1].json["id"]


@pytest.mark.skipif(not PG_URL, reason="PostgreSQL not available (scripts/test starts it when installed)")
def test_two_gateways_on_one_postgresql_store_send_each_event_once(fake, receiver, tmp_path):
    """Both gateways settle the key's requests, at once, and both look at the outbox every
    0.1 s: each threshold is detected once and delivered once."""
    fresh_postgres(PG_URL)
    options = {"pouch_webhook": f"{receiver.url}/pg", "pouch_db": PG_URL, **FAST}
    gateways = [Gateway(tmp_path / name, {"api.openai.com": fake.url}, str(fake.ca_path),
                        {**options, "pouch_instance": name}).start() for name in ("eu-1", "eu-2")]
    try:
        gateways[0].open_store()
        key, secret = key_service.create("shared", budget="0.01", alert_at="20,40,60,80")
        with ThreadPoolExecutor(8) as pool:  # 16 requests of 6%, half through each gateway
            list(pool.map(lambda i: spend(gateways[i % 2], secret, 1000), range(16)))
        gateways[0].settled(expected_rows=16)
        wait_delivered(receiver, key, 4, path="/pg")
        got = events_of(receiver, key, "/pg")
        assert sorted(r.json["threshold_pct"] for r in got) == [20, 40, 60, 80]
        assert len({r.json["id"] for r in got}) == 4
    finally:
        for gateway in gateways:
            gateway.stop()
