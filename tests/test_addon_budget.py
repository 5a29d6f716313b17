"""Chain link 3 (addons/budget.py): reserve the worst case atomically, or refuse, or cap the output.

Amounts are worked out by hand from the shipped price of gpt-4o-mini: $0.15 per 1M input tokens
(150,000 pico-dollars a token), $0.60 per 1M output tokens (600,000), max output 16,384 tokens;
the prompt ``HELLO`` is 8 tokens.
"""

import asyncio
import json
import socket
from datetime import UTC, date, datetime, timedelta

import peewee
import pytest
from mitmproxy import http

import addons.gateway
from pouch.domain.keys import Key
from pouch.domain.money import Money
from pouch.domain.periods import Period, utcnow
from pouch.pricing.reserve import Bounds, worst_case
from pouch.pricing.price import Price, Tier
from pouch.services import chain
from pouch.services.reserving import exhausted_message
from pouch.store import ledger
from pouch.store.database import LedgerRow, ReservationRow, UsageRow
from tests.addon_helpers import MODEL, chat_body, create_key, error_of, exchange_of, facts, gateway, openai_flow

INPUT, OUTPUT = 150_000, 600_000  # pico-dollars per token
HELLO_TOKENS = 8
MODEL_MAX_OUTPUT = 16_384

PRICE = Price(
    model="m", provider="p", mode="chat", input=Money(10), output=Money(100), source="test", as_of=date(2026, 1, 1),
    cache_write_5m=Money(12), cache_write_1h=Money(20), reasoning=Money(150),
    tiers=(Tier(above_input_tokens=1000, input=Money(30), output=Money(300)),),
)


@pytest.mark.parametrize("input_tokens, choices, expected", [
    (500, 1, (Money(20 * 500), Money(300))),  # dearest input side: the 1h cache write; dearest output: any tier
    (2000, 3, (Money(30 * 2000), Money(300 * 3))),  # the long-context tier's input price
])
def test_worst_case(input_tokens, choices, expected):
    worst = worst_case(PRICE, Bounds(input_tokens, 50, choices))
    assert (worst.fixed, worst.per_output, worst.max_output) == (*expected, 50)


@pytest.mark.parametrize("refusal, period, message", [
    (ledger.Refusal(Money.usd("5"), Money.usd("4.5"), Money(0), datetime(2026, 11, 1, tzinfo=UTC),
                    datetime(2026, 12, 1, tzinfo=UTC)), "monthly",
     "budget of key 'alice' exhausted: $4.50 spent of $5.00 (period monthly, resets 2026-12-01 00:00 UTC); "
     "this request may cost up to $0.75"),
    (ledger.Refusal(Money.usd("5"), Money.usd("4"), Money.usd("0.5"), datetime(2026, 11, 1, tzinfo=UTC), None),
     "none",
     "budget of key 'alice' exhausted: $4.00 spent and $0.50 held by requests in flight of $5.00 (period none); "
     "this request may cost up to $0.75"),
])
def test_exhausted_message(refusal, period, message):
    key = Key(id=1, name="alice", prefix="pouch-abc", secret_hash="h", created_at=datetime(2026, 11, 1, tzinfo=UTC),
              anchor=datetime(2026, 11, 1, tzinfo=UTC),
              period=Period.parse(period))
    assert exhausted_message(key, refusal, Money.usd("0.75")) == message


@pytest.fixture
def gw():
    with gateway(pouch_instance="budget-test") as gw:
        yield gw


def reserve(gw, secret, body=None, **kwargs):
    """keys, ratelimit, then budget."""
    return gw.request(openai_flow(body=body or chat_body(), secret=secret, **kwargs), until=gw.budget)


def assert_no_reservation(flow):
    assert facts(flow)["reservation"] is None
    assert ReservationRow.select().count() == 0


class TestReservation:
    def test_the_worst_case_is_reserved_in_metadata_and_store(self, gw):
        key, secret = create_key(budget=Money.usd("5"))
        flow = reserve(gw, secret, chat_body(max_completion_tokens=100, n=2))
        assert flow.response is None
        worst = HELLO_TOKENS * INPUT + 2 * 100 * OUTPUT  # 121,200,000 pico = $0.0001212
        reservation = facts(flow)["reservation"]
        assert reservation["amount_usd"] == "0.0001212" == Money(worst).json()
        assert reservation["price_model"] == MODEL
        assert reservation["remaining_usd"] == Money(5 * 10**12 - worst).json()
        row = ReservationRow.get_by_id(reservation["id"])
        assert (row.amount_pico, row.key_id, row.owner) == (worst, key.id, "budget-test")
        assert (row.provider, row.model, row.endpoint) == ("openai", MODEL, "chat.completions")
        assert row.deadline - row.created_at == timedelta(seconds=900)
        assert ledger.window_totals(key, utcnow()) == (Money(0), Money(worst))

    def test_without_an_output_cap_the_models_maximum_is_reserved(self, gw):
        _, secret = create_key(budget=Money.usd("5"))
        flow = reserve(gw, secret)
        worst = HELLO_TOKENS * INPUT + MODEL_MAX_OUTPUT * OUTPUT  # $0.0098316
        assert ReservationRow.get_by_id(facts(flow)["reservation"]["id"]).amount_pico == worst
        assert facts(flow)["output_capped"] is None

    @pytest.mark.parametrize("stored", [{"previous_response_id": "resp_1"}, {"conversation": "conv_1"},
                                        {"prompt": {"id": "pmpt_1"}}])
    def test_stored_context_reserves_the_whole_context_window(self, gw, stored):
        """The provider bills a previous response's or conversation's input, which the body does
        not show: the worst case counts the model's whole context window (128,000 tokens)."""
        gw.configure(pouch_unmetered="allow")  # a stored prompt may carry tools pouch cannot see
        _, secret = create_key(budget=Money.usd("5"))
        body = {"model": MODEL, "input": "and then?", "max_output_tokens": 20, **stored}
        flow = reserve(gw, secret, body, path="/v1/responses")
        worst = 128_000 * INPUT + 20 * OUTPUT  # $0.019212
        assert ReservationRow.get_by_id(facts(flow)["reservation"]["id"]).amount_pico == worst

    def test_a_stored_prompt_is_refused_unless_unmetered_use_is_allowed(self, gw):
        """A stored prompt can bring tools (code interpreter, image generation) pouch cannot see."""
        _, secret = create_key(budget=Money.usd("5"))
        body = {"model": MODEL, "input": "and then?", "max_output_tokens": 20, "prompt": {"id": "pmpt_1"}}
        flow = reserve(gw, secret, body, path="/v1/responses")
        assert flow.response.status_code == 403
        assert error_of(flow)["code"] == "tool_not_metered"
        assert "stored prompt" in error_of(flow)["message"]
        assert ReservationRow.select().count() == 0

    def test_a_key_without_a_budget_is_still_reserved(self, gw):
        key, secret = create_key()
        flow = reserve(gw, secret, chat_body(max_tokens=10))
        assert facts(flow)["reservation"]["remaining_usd"] is None
        assert ReservationRow.select().count() == 1

    def test_pouch_hold_sets_the_deadline(self, gw):
        gw.configure(pouch_hold=60)
        _, secret = create_key()
        row = ReservationRow.get_by_id(facts(reserve(gw, secret))["reservation"]["id"])
        assert row.deadline - row.created_at == timedelta(seconds=60)

    def test_an_unpriced_model_is_refused(self, gw):
        _, secret = create_key(budget=Money.usd("5"))
        flow = reserve(gw, secret, chat_body(model="pouch-test-model-nobody-prices"))
        assert flow.response.status_code == 400
        error = error_of(flow)
        assert error["code"] == "model_not_priced"
        assert "'pouch-test-model-nobody-prices'" in error["message"]
        assert_no_reservation(flow)

    def test_a_store_failure_fails_closed(self, gw, monkeypatch):
        _, secret = create_key(budget=Money.usd("5"))

        def broken(*args, **kwargs):
            raise peewee.OperationalError("disk I/O error")

        monkeypatch.setattr(ledger, "reserve", broken)
        flow = reserve(gw, secret)
        assert flow.response.status_code == 503
        assert error_of(flow)["code"] == "store_unavailable"
        assert facts(flow)["reservation"] is None

    def test_already_handled_flows_are_left_alone(self, gw):
        _, secret = create_key(budget=Money.usd("5"))
        flow = gw.request(openai_flow(body=chat_body(), secret=secret), until=gw.ratelimit)
        flow.response = http.Response.make(204)
        gw.run(gw.budget.request(flow))
        assert flow.response.status_code == 204
        assert_no_reservation(flow)

    def test_observed_credentials_are_not_reserved(self, gw):
        gw.configure(pouch_unknown_keys="observe")
        flow = reserve(gw, "sk-proj-someone-elses")
        assert flow.response is None and facts(flow)["observed"] is not None
        assert_no_reservation(flow)

    def test_free_endpoints_are_not_reserved(self, gw):
        _, secret = create_key(budget=Money(0))
        flow = gw.request(openai_flow("/v1/models", method="GET", secret=secret), until=gw.budget)
        assert flow.response is None
        assert_no_reservation(flow)


class TestExhausted:
    def test_a_request_that_does_not_fit_is_refused_and_never_retried(self, gw):
        key, secret = create_key(budget=Money.usd("0.0001"))
        flow = reserve(gw, secret, chat_body(max_completion_tokens=200))  # needs $0.0001212
        assert flow.response.status_code == 429
        assert flow.response.headers["x-should-retry"] == "false"
        error = error_of(flow)
        assert (error["code"], error["type"]) == ("insufficient_quota", "insufficient_quota")
        assert error["message"] == ("budget of key 'alice' exhausted: $0.00 spent of $0.0001 (period none); "
                                    "this request may cost up to $0.0001212")
        assert facts(flow)["refused"]["kind"] == "budget"
        assert_no_reservation(flow)
        assert ledger.window_totals(key, utcnow()) == (Money(0), Money(0))

    def test_the_message_counts_what_requests_in_flight_hold(self, gw):
        _, secret = create_key(budget=Money.usd("0.0001"), period=Period.parse("monthly"))
        held = reserve(gw, secret, chat_body(max_completion_tokens=90))  # $0.0000552
        assert held.response is None
        refused = reserve(gw, secret, chat_body(max_completion_tokens=90))
        message = error_of(refused)["message"]
        assert "$0.00 spent and $0.0000552 held by requests in flight of $0.0001" in message
        now = utcnow()
        first_of_next_month = datetime(now.year + now.month // 12, now.month % 12 + 1, 1)
        assert f"(period monthly, resets {first_of_next_month:%Y-%m-%d} 00:00 UTC)" in message

    def test_an_uncapped_request_is_capped_to_what_the_budget_covers(self, gw):
        _, secret = create_key(budget=Money.usd("0.001"))  # 1,000,000,000 pico
        flow = reserve(gw, secret)
        # 1e9 - 8 x 150,000 = 998,800,000 left for output: 1,664 tokens at 600,000
        assert flow.response is None
        assert facts(flow)["output_capped"] == 1664
        assert exchange_of(flow).body["max_completion_tokens"] == 1664
        assert exchange_of(flow).body_changed is True
        reservation = facts(flow)["reservation"]
        assert ReservationRow.get_by_id(reservation["id"]).amount_pico == HELLO_TOKENS * INPUT + 1664 * OUTPUT
        assert reservation["remaining_usd"] == Money(400_000).json()

        gw.run(gw.upstream.request(flow))  # the capped body is what goes upstream
        assert json.loads(flow.request.content)["max_completion_tokens"] == 1664
        assert flow.request.headers["content-length"] == str(len(flow.request.content))

    def test_the_cap_counts_every_choice(self, gw):
        _, secret = create_key(budget=Money.usd("0.001"))
        flow = reserve(gw, secret, chat_body(n=2))
        assert facts(flow)["output_capped"] == 998_800_000 // (2 * OUTPUT)  # 832
        assert ReservationRow.get().amount_pico == HELLO_TOKENS * INPUT + 832 * 2 * OUTPUT

    def test_capping_can_be_turned_off(self, gw):
        gw.configure(pouch_cap_output=False)
        _, secret = create_key(budget=Money.usd("0.001"))
        flow = reserve(gw, secret)
        assert flow.response.status_code == 429 and error_of(flow)["code"] == "insufficient_quota"
        assert facts(flow)["output_capped"] is None and "max_completion_tokens" not in exchange_of(flow).body

    def test_a_clients_own_cap_is_never_lowered(self, gw):
        _, secret = create_key(budget=Money.usd("0.001"))
        flow = reserve(gw, secret, chat_body(max_completion_tokens=5000))
        assert flow.response.status_code == 429 and facts(flow)["output_capped"] is None

    def test_the_cap_is_what_is_left_after_spend_and_holds(self, gw):
        key, secret = create_key(budget=Money.usd("0.001"))  # 1,000,000,000 pico
        first = reserve(gw, secret, chat_body(max_completion_tokens=50))
        ledger.finish(facts(first)["reservation"]["id"], Money(100_000_000),
                      {"ts": utcnow(), "key": key.id, "key_name": key.name})  # spent 100,000,000
        reserve(gw, secret, chat_body(max_completion_tokens=50))  # held: 8 x 150,000 + 50 x 600,000
        flow = reserve(gw, secret)
        # 1e9 - 100,000,000 spent - 31,200,000 held - 1,200,000 input = 867,600,000: 1,446 tokens
        assert facts(flow)["output_capped"] == 1446

    def test_a_cap_of_one_token_is_still_a_cap(self, gw):
        _, secret = create_key(budget=Money(HELLO_TOKENS * INPUT + OUTPUT))
        flow = reserve(gw, secret)
        assert flow.response is None and facts(flow)["output_capped"] == 1

    def test_no_cap_when_not_even_one_output_token_fits(self, gw):
        _, secret = create_key(budget=Money(HELLO_TOKENS * INPUT + OUTPUT - 1))
        flow = reserve(gw, secret)
        assert flow.response.status_code == 429 and facts(flow)["output_capped"] is None
        assert_no_reservation(flow)


class TestResponseHeaders:
    def test_the_remaining_budget_and_the_cap_are_announced(self, gw):
        _, secret = create_key(budget=Money.usd("0.001"))
        flow = reserve(gw, secret)
        flow.response = http.Response.make(200, b"{}", {"content-type": "application/json"})
        gw.budget.responseheaders(flow)
        assert flow.response.headers["x-pouch-budget-remaining"] == "0.0000004"
        assert flow.response.headers["x-pouch-output-capped"] == "1664"

    def test_a_flow_without_a_reservation_is_left_alone(self, gw):
        flow = openai_flow("/v1/models", method="GET")
        flow.response = http.Response.make(200, b"{}")
        gw.budget.responseheaders(flow)
        assert "x-pouch-budget-remaining" not in flow.response.headers

    def test_no_budget_no_remaining_header(self, gw):
        _, secret = create_key()
        flow = reserve(gw, secret, chat_body(max_tokens=10))
        flow.response = http.Response.make(200, b"{}")
        gw.budget.responseheaders(flow)
        assert "x-pouch-budget-remaining" not in flow.response.headers
        assert "x-pouch-output-capped" not in flow.response.headers


class TestRecovery:
    @pytest.fixture
    def gw(self):
        with gateway(started=False, pouch_instance="budget-test") as gw:
            yield gw

    def start(self, gw):
        gw.lifecycle("running")

    def stop(self, gw):
        gw.lifecycle("done")
        loop = gw.tctx.master.event_loop
        assert not [task for task in asyncio.all_tasks(loop) if not task.done()]

    def open_reservation(self, key, amount, owner, hold=timedelta(minutes=15)):
        now = utcnow()
        return ledger.reserve(key.id, key.window(now), Money(amount), now, owner=owner, hold=hold,
                              provider="openai", model=MODEL, endpoint="chat.completions")

    def test_running_charges_what_a_previous_run_left_open(self, gw):
        key, _ = create_key(budget=Money.usd("5"))
        mine = self.open_reservation(key, 1_000, "budget-test")
        stale = self.open_reservation(key, 20_000, "crashed-elsewhere", hold=timedelta(seconds=-1))
        alive = self.open_reservation(key, 300_000, "another-gateway")
        self.start(gw)
        try:
            assert [row.id for row in ReservationRow.select()] == [alive.id]
            assert ledger.window_totals(key, utcnow()) == (Money(21_000), Money(300_000))
            recovered = {row.reservation_id: row for row in UsageRow.select()}
            assert set(recovered) == {mine.id, stale.id}
            assert recovered[mine.id].cost_pico == 1_000 and recovered[mine.id].outcome == "recovered"
        finally:
            self.stop(gw)

    def test_recovery_runs_periodically(self, gw, monkeypatch):
        monkeypatch.setattr(addons.gateway, "RECOVERY_INTERVAL", 0.01)
        key, _ = create_key(budget=Money.usd("5"))
        self.start(gw)
        try:
            self.open_reservation(key, 7_000, "crashed-elsewhere", hold=timedelta(seconds=-1))
            gw.run(asyncio.sleep(0.3))
            assert ReservationRow.select().count() == 0
            assert LedgerRow.get().spent_pico == 7_000
        finally:
            self.stop(gw)

    def test_the_owner_defaults_to_host_and_port(self):
        with gateway(started=False) as gw:  # the name is fixed once running (tests/test_addon_budget_instance.py)
            assert gw.shared.owner == f"{socket.gethostname()}:8080"
            gw.configure(listen_port=9090)
            assert gw.shared.owner == f"{socket.gethostname()}:9090"
            gw.configure(pouch_instance="eu-1")
            assert gw.shared.owner == "eu-1"
