"""Chain link 2 (addons/ratelimit.py): requests/min, tokens/min and requests in flight per key."""

import gc
import weakref

import pytest
from mitmproxy import http

import addons.ratelimit
from pouch.domain.periods import utcnow
from pouch.services import chain
from pouch.store import keys as key_store
from pouch.tokens.count import count_prompt
from tests.addon_helpers import MODEL, chat_body, create_key, error_of, facts, gateway, openai_flow

PROMPT = count_prompt(MODEL, chat_body(), "chat")  # 8


class Clock:
    """Stands in for the ``time`` module the link reads ``monotonic()`` from."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(addons.ratelimit, "time", clock)
    return clock


@pytest.fixture
def gw(clock):
    with gateway() as gw:
        yield gw


def through_ratelimit(gw, secret, body=None, **kwargs):
    """keys, then ratelimit: what the link sees in the chain."""
    flow = openai_flow(body=body or chat_body(), secret=secret, **kwargs)
    return gw.request(flow, until=gw.ratelimit)


def assert_rate_limited(flow):
    assert flow.response is not None and flow.response.status_code == 429
    error = error_of(flow)
    assert (error["code"], error["type"]) == ("rate_limit_exceeded", "requests")
    assert facts(flow)["refused"]["kind"] == "rate"
    return error


class TestRateLimit:
    def test_requests_per_minute(self, gw, clock):
        _, secret = create_key(rpm=2)
        assert through_ratelimit(gw, secret).response is None
        clock.now += 20
        assert through_ratelimit(gw, secret).response is None
        clock.now += 10
        refused = through_ratelimit(gw, secret)
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
        assert through_ratelimit(gw, secret).response is None
        clock.now += 59.999
        assert through_ratelimit(gw, secret).response.status_code == 429
        clock.now += 0.001
        assert through_ratelimit(gw, secret).response is None

    def test_tokens_per_minute_count_input_and_every_output_token(self, gw, clock):
        body = chat_body(max_completion_tokens=40, n=2)  # 8 in + 2 x 40 out
        need = PROMPT + 2 * 40
        _, secret = create_key(tpm=2 * need - 1)
        assert through_ratelimit(gw, secret, body).response is None
        refused = through_ratelimit(gw, secret, body)
        error = assert_rate_limited(refused)
        assert f"over {2 * need - 1} tokens per minute" in error["message"]
        assert refused.response.headers["x-ratelimit-remaining-tokens"] == str(need - 1)
        assert refused.response.headers["retry-after"] == "60"

    def test_a_request_that_fits_tokens_per_minute_exactly_is_admitted(self, gw, clock):
        _, secret = create_key(tpm=PROMPT + 40)
        assert through_ratelimit(gw, secret, chat_body(max_tokens=40)).response is None

    def test_a_request_larger_than_tokens_per_minute_is_never_retried(self, gw, clock):
        _, secret = create_key(rpm=5, tpm=PROMPT + 39)
        refused = through_ratelimit(gw, secret, chat_body(max_tokens=40))
        error = assert_rate_limited(refused)
        assert f"needs {PROMPT + 40} tokens, more than the key's {PROMPT + 39} tokens per minute" in error["message"]
        assert refused.response.headers["x-should-retry"] == "false"
        assert "retry-after" not in refused.response.headers
        # all or nothing: the refused request took no request slot either
        assert refused.response.headers["x-ratelimit-remaining-requests"] == "5"

    def test_max_concurrent_holds_a_slot_until_the_response(self, gw, clock):
        _, secret = create_key(max_concurrent=1)
        first = through_ratelimit(gw, secret)
        assert first.response is None
        refused = through_ratelimit(gw, secret)
        error = assert_rate_limited(refused)
        assert "1 requests already in flight (limit 1)" in error["message"]
        assert refused.response.headers["retry-after"] == "1"
        gw.ratelimit.response(refused)  # a refusal held no slot: freeing it frees nothing
        assert through_ratelimit(gw, secret).response.status_code == 429

        gw.respond(first, http.Response.make(200, b"{}", {"content-type": "application/json"}))
        assert through_ratelimit(gw, secret).response is None

    def test_max_concurrent_slot_is_freed_by_the_error_hook(self, gw, clock):
        _, secret = create_key(max_concurrent=1)
        first = through_ratelimit(gw, secret)
        gw.fail(first)
        assert through_ratelimit(gw, secret).response is None

    def test_a_slot_is_freed_once(self, gw, clock):
        _, secret = create_key(max_concurrent=2)
        first, second = through_ratelimit(gw, secret), through_ratelimit(gw, secret)
        gw.ratelimit.response(first)
        gw.ratelimit.error(first)  # mitmproxy may call both: the second call frees nothing
        third = through_ratelimit(gw, secret)  # held: a collected flow frees its slot (see below)
        assert third.response is None
        assert through_ratelimit(gw, secret).response.status_code == 429
        assert second.response is None

    def test_a_flow_collected_without_hooks_frees_its_slot(self, gw, clock):
        _, secret = create_key(max_concurrent=1)
        lost = through_ratelimit(gw, secret)
        alive = weakref.ref(lost)
        del lost
        gc.collect()
        assert alive() is None
        assert through_ratelimit(gw, secret).response is None

    def test_responses_carry_the_ratelimit_headers(self, gw, clock):
        _, secret = create_key(rpm=3, tpm=1000)
        flow = through_ratelimit(gw, secret, chat_body(max_tokens=10))
        gw.respond(flow, http.Response.make(200, b"{}", {"content-type": "application/json"}))
        headers = flow.response.headers
        assert (headers["x-ratelimit-limit-requests"], headers["x-ratelimit-remaining-requests"]) == ("3", "2")
        assert (headers["x-ratelimit-limit-tokens"], headers["x-ratelimit-remaining-tokens"]) == (
            "1000", str(1000 - PROMPT - 10))

    def test_changed_limits_are_picked_up(self, gw, clock):
        gw.configure(pouch_key_cache="0")
        key, secret = create_key(rpm=1)
        assert through_ratelimit(gw, secret).response is None
        assert through_ratelimit(gw, secret).response.status_code == 429
        key_store.update(key, utcnow(), rpm=3)
        assert [through_ratelimit(gw, secret).response for _ in range(3)] == [None] * 3
        refused = through_ratelimit(gw, secret)
        assert refused.response.headers["x-ratelimit-limit-requests"] == "3"

    def test_changing_limits_while_a_request_is_in_flight_does_not_leak_its_slot(self, gw, clock):
        gw.configure(pouch_key_cache="0")
        key, secret = create_key(rpm=100, max_concurrent=1)
        in_flight = through_ratelimit(gw, secret)
        assert in_flight.response is None
        key_store.update(key, utcnow(), rpm=200)
        assert through_ratelimit(gw, secret).response.status_code == 429  # still one in flight: right
        gw.respond(in_flight, http.Response.make(200, b"{}", {"content-type": "application/json"}))
        assert through_ratelimit(gw, secret).response is None

    def test_already_handled_flows_are_left_alone(self, gw, clock):
        _, secret = create_key(rpm=1, max_concurrent=1)
        answered = gw.request(openai_flow(body=chat_body(), secret=secret), until=gw.keys)
        answered.response = http.Response.make(204)
        gw.run(gw.ratelimit.request(answered))
        assert answered.response.status_code == 204 and facts(answered)["refused"] is None
        assert through_ratelimit(gw, secret).response is None  # the answered flow took nothing

    def test_keys_without_limits_are_untouched(self, gw, clock):
        _, secret = create_key()
        flows = [through_ratelimit(gw, secret) for _ in range(50)]
        assert all(flow.response is None for flow in flows)
        assert gw.ratelimit.limits == {}
        gw.respond(flows[0], http.Response.make(200, b"{}", {"content-type": "application/json"}))
        assert not any(name.startswith("x-ratelimit") for name in flows[0].response.headers)

    def test_observed_credentials_are_not_limited(self, gw, clock):
        gw.configure(pouch_unknown_keys="observe")
        flow = through_ratelimit(gw, "sk-proj-someone")
        assert flow.response is None and gw.ratelimit.limits == {}


class TestTokensPerMinuteWorstCase:
    """tokens/min counts what the budget reserves, then settles to what the provider reported."""

    def test_an_uncapped_request_counts_the_models_maximum_output(self, gw, clock):
        _, secret = create_key(tpm=16_384 + PROMPT - 1)  # gpt-4o-mini may write 16,384 tokens
        flow = through_ratelimit(gw, secret, chat_body())
        error = assert_rate_limited(flow)
        assert f"needs {PROMPT + 16_384} tokens" in error["message"]

    def test_an_uncapped_responses_request_too(self, gw, clock):
        _, secret = create_key(tpm=1000)
        flow = through_ratelimit(gw, secret, {"model": MODEL, "input": "hi"}, path="/v1/responses")
        assert_rate_limited(flow)

    def test_server_tool_rounds_count_the_context_they_may_reread(self, gw, clock):
        _, secret = create_key(tpm=200_000)  # 2 rounds of gpt-4o-mini's 128,000-token context do not fit
        body = {"model": MODEL, "input": "hi", "max_output_tokens": 10, "tools": [{"type": "web_search"}],
                "max_tool_calls": 2}
        assert_rate_limited(through_ratelimit(gw, secret, body, path="/v1/responses"))
        body["max_tool_calls"] = 1
        assert through_ratelimit(gw, secret, body, path="/v1/responses").response is None

    def test_the_window_settles_to_the_tokens_reported(self, gw, clock, monkeypatch):
        import json

        from tests.fakes.openai_shapes import Controls, chat_completions

        monkeypatch.setenv("OPENAI_API_KEY", "sk-real")
        _, secret = create_key(tpm=20_000, budget=None)
        flow = gw.request(openai_flow(body=chat_body(max_tokens=15_000), secret=secret))
        assert flow.response is None
        assert flow.response is None and gw.ratelimit.limits  # admitted: 15,008 of 20,000 taken
        refused = through_ratelimit(gw, secret, chat_body(max_tokens=15_000))
        assert_rate_limited(refused)
        payload = chat_completions(json.loads(flow.request.content), Controls(
            usage={"prompt_tokens": PROMPT, "completion_tokens": 4}))
        gw.respond(flow, http.Response.make(200, json.dumps(payload), {"content-type": "application/json"}))
        # settled to 8 + 4 = 12 tokens: the same request now fits
        assert through_ratelimit(gw, secret, chat_body(max_tokens=15_000)).response is None
        limits = next(iter(gw.ratelimit.limits.values()))
        assert limits.tokens.remaining(clock.now) == 20_000 - 12 - (PROMPT + 15_000)

    def test_a_request_the_budget_refuses_gives_its_tokens_back(self, gw, clock):
        from pouch.domain.money import Money

        _, secret = create_key(tpm=20_000, budget=Money.usd("0.000001"))
        flow = gw.request(openai_flow(body=chat_body(max_tokens=15_000), secret=secret))
        assert flow.response.status_code == 429 and error_of(flow)["code"] == "insufficient_quota"
        gw.hook("response", flow)
        limits = next(iter(gw.ratelimit.limits.values()))
        assert limits.tokens.remaining(clock.now) == 20_000

    def test_an_overrun_settles_to_the_larger_tokens_reported(self, gw, clock, monkeypatch):
        import json

        from tests.fakes.openai_shapes import Controls, chat_completions

        monkeypatch.setenv("OPENAI_API_KEY", "sk-real")
        _, secret = create_key(tpm=1000)
        flow = gw.request(openai_flow(body=chat_body(max_tokens=10), secret=secret))
        payload = chat_completions(json.loads(flow.request.content), Controls(
            usage={"prompt_tokens": PROMPT, "completion_tokens": 900}))
        gw.respond(flow, http.Response.make(200, json.dumps(payload), {"content-type": "application/json"}))
        assert facts(flow)["usage"]["outcome"] == "overrun"
        assert_rate_limited(through_ratelimit(gw, secret, chat_body(max_tokens=190)))  # 908 + 198 > 1000
