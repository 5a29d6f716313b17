"""Chain link 2 (addons/ratelimit.py) with the budget link that takes the limits: requests/min,
tokens/min and requests in flight per key, kept in the store (pouch.store.limits)."""

import json

import pytest
from mitmproxy import http

import pouch.store.limits
from pouch.domain.money import Money
from pouch.domain.periods import utcnow
from pouch.store import keys as key_store
from pouch.store.database import LimitStateRow
from pouch.tokens.count import count_prompt
from tests.addon_helpers import MODEL, chat_body, create_key, error_of, facts, gateway, openai_flow
from tests.fakes.openai_shapes import Controls, chat_completions

PROMPT = count_prompt(MODEL, chat_body(), "chat")  # 8
JSON = {"content-type": "application/json"}


class Clock:
    def __init__(self, now: float = 1_800_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(pouch.store.limits, "clock", clock)
    return clock


@pytest.fixture
def gw(clock, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-real")
    with gateway() as gw:
        yield gw


def admitted(gw, secret, body=None, **kwargs):
    """keys, ratelimit, then budget: where a metered request's limits are taken."""
    flow = openai_flow(body=body or chat_body(), secret=secret, **kwargs)
    return gw.request(flow, until=gw.budget)


def answer(gw, flow, prompt=PROMPT, completion=4):
    payload = chat_completions(json.loads(flow.request.content), Controls(
        usage={"prompt_tokens": prompt, "completion_tokens": completion}))
    gw.respond(flow, http.Response.make(200, json.dumps(payload), JSON))


def assert_rate_limited(flow):
    assert flow.response is not None and flow.response.status_code == 429
    error = error_of(flow)
    assert (error["code"], error["type"]) == ("rate_limit_exceeded", "requests")
    assert facts(flow)["refused"]["kind"] == "rate"
    return error


class TestRateLimit:
    def test_requests_per_minute(self, gw, clock):
        _, secret = create_key(rpm=2)
        assert admitted(gw, secret).response is None
        clock.now += 20
        assert admitted(gw, secret).response is None
        clock.now += 10
        refused = admitted(gw, secret)
        error = assert_rate_limited(refused)
        assert "key 'alice' is rate limited: over 2 requests per minute" in error["message"]
        headers = refused.response.headers
        assert headers["retry-after"] == "30"  # the first request leaves the window 60 s after it came
        assert headers["retry-after-ms"] == "30000"
        assert headers["x-ratelimit-limit-requests"] == "2"
        assert headers["x-ratelimit-remaining-requests"] == "0"
        assert headers["x-ratelimit-reset-requests"] == "50.000s"
        assert "x-should-retry" not in headers

    def test_the_window_slides(self, gw, clock):
        _, secret = create_key(rpm=1)
        assert admitted(gw, secret).response is None
        clock.now += 59.999
        assert admitted(gw, secret).response.status_code == 429
        clock.now += 0.001
        assert admitted(gw, secret).response is None

    def test_tokens_per_minute_count_input_and_every_output_token(self, gw, clock):
        body = chat_body(max_completion_tokens=40, n=2)  # 8 in + 2 x 40 out
        need = PROMPT + 2 * 40
        _, secret = create_key(tpm=2 * need - 1)
        assert admitted(gw, secret, body).response is None
        refused = admitted(gw, secret, body)
        error = assert_rate_limited(refused)
        assert f"over {2 * need - 1} tokens per minute" in error["message"]
        assert refused.response.headers["x-ratelimit-remaining-tokens"] == str(need - 1)
        assert refused.response.headers["retry-after"] == "60"

    def test_a_request_that_fits_tokens_per_minute_exactly_is_admitted(self, gw, clock):
        _, secret = create_key(tpm=PROMPT + 40)
        assert admitted(gw, secret, chat_body(max_tokens=40)).response is None

    def test_a_request_larger_than_tokens_per_minute_is_never_retried(self, gw, clock):
        _, secret = create_key(rpm=5, tpm=PROMPT + 39)
        refused = admitted(gw, secret, chat_body(max_tokens=40))
        error = assert_rate_limited(refused)
        assert f"needs {PROMPT + 40} tokens, more than the key's {PROMPT + 39} tokens per minute" in error["message"]
        assert refused.response.headers["x-should-retry"] == "false"
        assert "retry-after" not in refused.response.headers
        # all or nothing: the refused request took no request slot either
        assert refused.response.headers["x-ratelimit-remaining-requests"] == "5"

    def test_max_concurrent_holds_a_slot_until_the_request_settles(self, gw, clock):
        _, secret = create_key(max_concurrent=1)
        first = admitted(gw, secret)
        assert first.response is None
        refused = admitted(gw, secret)
        error = assert_rate_limited(refused)
        assert "1 requests already in flight (limit 1)" in error["message"]
        assert refused.response.headers["retry-after"] == "1"
        answer(gw, first)
        assert admitted(gw, secret).response is None

    def test_max_concurrent_slot_is_freed_by_an_upstream_error(self, gw, clock):
        _, secret = create_key(max_concurrent=1)
        first = admitted(gw, secret)
        gw.fail(first)
        assert admitted(gw, secret).response is None

    def test_responses_carry_the_ratelimit_headers(self, gw, clock):
        _, secret = create_key(rpm=3, tpm=1000)
        flow = admitted(gw, secret, chat_body(max_tokens=10))
        answer(gw, flow)
        headers = flow.response.headers
        assert (headers["x-ratelimit-limit-requests"], headers["x-ratelimit-remaining-requests"]) == ("3", "2")
        assert (headers["x-ratelimit-limit-tokens"], headers["x-ratelimit-remaining-tokens"]) == (
            "1000", str(1000 - PROMPT - 10))

    def test_changed_limits_are_picked_up_and_keep_the_minutes_count(self, gw, clock):
        gw.configure(pouch_key_cache="0")
        key, secret = create_key(rpm=1)
        assert admitted(gw, secret).response is None
        assert admitted(gw, secret).response.status_code == 429
        key_store.update(key, utcnow(), rpm=3)
        assert [admitted(gw, secret).response for _ in range(2)] == [None] * 2  # 3 in the minute now
        refused = admitted(gw, secret)
        assert refused.response.headers["x-ratelimit-limit-requests"] == "3"

    def test_already_handled_flows_are_left_alone(self, gw, clock):
        _, secret = create_key(rpm=1, max_concurrent=1)
        answered = gw.request(openai_flow(body=chat_body(), secret=secret), until=gw.keys)
        answered.response = http.Response.make(204)
        gw.run(gw.ratelimit.request(answered))
        assert answered.response.status_code == 204 and facts(answered)["refused"] is None
        assert admitted(gw, secret).response is None  # the answered flow took nothing

    def test_keys_without_limits_take_no_row(self, gw, clock):
        _, secret = create_key()
        flows = [admitted(gw, secret) for _ in range(5)]
        assert all(flow.response is None for flow in flows)
        assert LimitStateRow.select().count() == 0
        answer(gw, flows[0])
        assert not any(name.startswith("x-ratelimit") for name in flows[0].response.headers)

    def test_a_free_endpoint_counts_against_requests_per_minute(self, gw, clock):
        _, secret = create_key(rpm=1, max_concurrent=1)
        models = gw.request(openai_flow(method="GET", path="/v1/models", secret=secret, body=None), until=gw.budget)
        assert models.response is None
        assert admitted(gw, secret).response.status_code == 429


class TestTokensPerMinuteWorstCase:
    """tokens/min counts what the budget reserves, then settles to what the provider reported."""

    def test_an_uncapped_request_counts_the_models_maximum_output(self, gw, clock):
        _, secret = create_key(tpm=16_384 + PROMPT - 1)  # gpt-4o-mini may write 16,384 tokens
        error = assert_rate_limited(admitted(gw, secret, chat_body()))
        assert f"needs {PROMPT + 16_384} tokens" in error["message"]
        assert "the request sets no output cap" in error["message"]

    def test_server_tool_rounds_count_the_context_they_may_reread(self, gw, clock):
        _, secret = create_key(tpm=200_000)  # 2 rounds of gpt-4o-mini's 128,000-token context do not fit
        body = {"model": MODEL, "input": "hi", "max_output_tokens": 10, "tools": [{"type": "web_search"}],
                "max_tool_calls": 2}
        assert_rate_limited(admitted(gw, secret, body, path="/v1/responses"))
        body["max_tool_calls"] = 1
        assert admitted(gw, secret, body, path="/v1/responses").response is None

    def test_the_window_settles_to_the_tokens_reported(self, gw, clock):
        _, secret = create_key(tpm=20_000)
        flow = admitted(gw, secret, chat_body(max_tokens=15_000))
        assert flow.response is None  # 15,008 of 20,000 taken
        assert_rate_limited(admitted(gw, secret, chat_body(max_tokens=15_000)))
        gw.hook("request", flow, after=gw.budget)
        answer(gw, flow, completion=4)  # settled to 8 + 4 = 12 tokens: the same request now fits
        again = admitted(gw, secret, chat_body(max_tokens=15_000))
        assert again.response is None
        gw.hook("request", again, after=gw.budget)
        answer(gw, again)
        assert again.response.headers["x-ratelimit-remaining-tokens"] == str(20_000 - 12 - (PROMPT + 15_000))

    def test_a_request_the_budget_refuses_takes_no_tokens(self, gw, clock):
        _, secret = create_key(tpm=20_000, budget=Money.usd("0.000001"))
        flow = admitted(gw, secret, chat_body(max_tokens=15_000))
        assert flow.response.status_code == 429 and error_of(flow)["code"] == "insufficient_quota"
        _, other = create_key(name="bob", tpm=20_000)
        fits = admitted(gw, other, chat_body(max_tokens=15_000))
        assert fits.response is None
        refused_once = admitted(gw, secret, chat_body(max_tokens=10))
        assert error_of(refused_once)["code"] == "insufficient_quota", "alice's minute holds nothing"

    def test_an_overrun_settles_to_the_larger_tokens_reported(self, gw, clock):
        _, secret = create_key(tpm=1000)
        flow = admitted(gw, secret, chat_body(max_tokens=10))
        gw.hook("request", flow, after=gw.budget)
        answer(gw, flow, completion=900)
        assert facts(flow)["usage"]["outcome"] == "overrun"
        assert_rate_limited(admitted(gw, secret, chat_body(max_tokens=190)))  # 908 + 198 > 1000
