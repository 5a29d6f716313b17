"""Paid server-side tools through the chain (keys -> budget -> usage): what is reserved for them,
the bound pouch injects, refusals of what it cannot bound, and the fees charged afterwards.
Also overruns: usage above the reservation is charged and flagged.

Costs by hand from the shipped prices: gpt-4o-mini input 150,000 and output 600,000
pico-dollars a token, context window 128,000; OpenAI web search $0.01 a call, the preview
$0.025; claude-haiku-4-5 input 1,000,000 (1h cache write 2,000,000), output 5,000,000,
context 200,000; Anthropic web search $0.01.
"""

from __future__ import annotations

import json

import pytest
from mitmproxy import http

from pouch.domain.money import Money
from pouch.services import chain
from pouch.services.explain import explain
from pouch.services.store_thread import store_thread
from pouch.store.database import LedgerRow, ReservationRow, UsageRow
from tests.addon_helpers import MODEL, create_key, error_of, facts, gateway, openai_flow
from tests.fakes.openai_shapes import Controls, responses

INPUT, OUTPUT, CONTEXT = 150_000, 600_000, 128_000
SEARCH, PREVIEW = 10_000_000_000, 25_000_000_000


@pytest.fixture
def gw(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-real-provider-key")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-real-provider-key")
    with gateway(pouch_instance="tools-test") as gw:
        yield gw


def search_body(**extra) -> dict:
    return {"model": MODEL, "input": "what happened today?", "max_output_tokens": 50,
            "tools": [{"type": "web_search"}], **extra}


def sent(gw, secret, body, path="/v1/responses"):
    return gw.request(openai_flow(path, body, secret=secret))


def reserved(flow) -> int:
    return Money.usd(facts(flow)["reservation"]["amount_usd"]).pico


def input_tokens(flow) -> int:
    return facts(flow)["call"]["input_tokens"]


def spent(key) -> tuple[int, int]:
    store_thread.drain()
    row = LedgerRow.get(LedgerRow.key == key.id)
    return row.spent_pico, row.reserved_pico


class TestReservation:
    def test_the_default_bound_is_injected_reserved_and_announced(self, gw):
        key, secret = create_key(budget=Money.usd("5"))
        flow = sent(gw, secret, search_body())
        sent_body = json.loads(flow.request.content)
        assert sent_body["max_tool_calls"] == 3, "the provider is told the bound pouch reserved for"
        worst = input_tokens(flow) * INPUT + 3 * SEARCH + 3 * CONTEXT * INPUT + 50 * OUTPUT
        assert reserved(flow) == worst
        gw.respond(flow, http.Response.make(200, json.dumps(responses(json.loads(flow.request.content), Controls())),
                                            {"content-type": "application/json"}))
        assert flow.response.headers["x-pouch-tool-calls-capped"] == "3"

    def test_the_clients_own_bound_is_kept(self, gw):
        _, secret = create_key(budget=Money.usd("5"))
        flow = sent(gw, secret, search_body(max_tool_calls=1, tools=[{"type": "web_search_preview"}]))
        assert json.loads(flow.request.content)["max_tool_calls"] == 1
        assert reserved(flow) == input_tokens(flow) * INPUT + PREVIEW + CONTEXT * INPUT + 50 * OUTPUT
        assert facts(flow)["tools_capped"] is None

    def test_the_operator_sets_the_default(self, gw):
        gw.configure(pouch_tool_calls=1)
        _, secret = create_key(budget=Money.usd("5"))
        flow = sent(gw, secret, search_body())
        assert json.loads(flow.request.content)["max_tool_calls"] == 1
        assert reserved(flow) == input_tokens(flow) * INPUT + SEARCH + CONTEXT * INPUT + 50 * OUTPUT

    def test_a_budget_that_cannot_cover_the_tool_rounds_refuses(self, gw):
        """Three searches could re-read the whole context three times: $0.0876 for this key."""
        _, secret = create_key(budget=Money.usd("0.05"))
        flow = sent(gw, secret, search_body())
        assert flow.response.status_code == 429 and error_of(flow)["code"] == "insufficient_quota"
        assert ReservationRow.select().count() == 0

    @pytest.mark.parametrize("body, named", [
        (search_body(tools=[{"type": "code_interpreter", "container": {"type": "auto"}}]), "code_interpreter"),
        (search_body(tools=[{"type": "image_generation"}]), "image_generation"),
        ({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "web_search_options": {}},
         "web_search_options"),
    ])  # fmt: skip
    def test_a_tool_pouch_cannot_bound_is_refused_and_nothing_is_sent(self, gw, body, named):
        _, secret = create_key(budget=Money.usd("5"))
        path = "/v1/chat/completions" if "messages" in body else "/v1/responses"
        flow = sent(gw, secret, body, path)
        assert flow.response.status_code == 403
        error = error_of(flow)
        assert error["code"] == "tool_not_metered" and named in error["message"]
        assert "pouch_unmetered=allow" in error["message"]
        assert ReservationRow.select().count() == 0

    def test_the_operator_may_let_such_a_tool_through(self, gw):
        gw.configure(pouch_unmetered="allow")
        _, secret = create_key(budget=Money.usd("5"))
        flow = sent(gw, secret, search_body(tools=[{"type": "image_generation"}]))
        assert flow.response is None and reserved(flow) == input_tokens(flow) * INPUT + 50 * OUTPUT

    def test_anthropic_server_tools_each_get_a_bound(self, gw):
        _, secret = create_key(budget=Money.usd("50"))
        body = {"model": "claude-haiku-4-5", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}],
                "tools": [{"type": "web_search_20250305", "name": "web_search"},
                          {"type": "web_fetch_20250910", "name": "web_fetch", "max_uses": 1}]}
        flow = gw.request(openai_flow("/v1/messages", body, secret=secret, host="api.anthropic.com"))
        sent_tools = json.loads(flow.request.content)["tools"]
        assert [tool["max_uses"] for tool in sent_tools] == [3, 1]
        tokens = input_tokens(flow)
        # input at the dearest input-side price (the 1h cache write), 3 searches at $0.01,
        # 4 rounds re-reading up to 200,000 tokens of context, 10 output tokens
        worst = tokens * 2_000_000 + 3 * SEARCH + 4 * 200_000 * 2_000_000 + 10 * 5_000_000
        assert reserved(flow) == worst


class TestSettlement:
    def respond(self, gw, flow, usage=None, calls=0):
        body = responses(json.loads(flow.request.content), Controls(usage=usage))
        body["output"] = [{"type": "web_search_call", "id": f"ws_{i}", "status": "completed"}
                          for i in range(calls)] + body["output"]
        gw.respond(flow, http.Response.make(200, json.dumps(body), {"content-type": "application/json"}))

    def test_the_fees_of_the_calls_made_are_charged(self, gw):
        key, secret = create_key(budget=Money.usd("5"))
        flow = sent(gw, secret, search_body())
        self.respond(gw, flow, {"input_tokens": 4000, "output_tokens": 30}, calls=2)
        assert spent(key) == (4000 * INPUT + 30 * OUTPUT + 2 * SEARCH, 0)
        row = UsageRow.get()
        assert (row.tool_calls, row.outcome) == ({"web_search": 2}, "ok")
        assert "tools web_search x2" in explain(flow)  # the flow's comment in mitmweb

    def test_a_preview_search_is_charged_at_the_previews_fee(self, gw):
        key, secret = create_key(budget=Money.usd("5"))
        flow = sent(gw, secret, search_body(tools=[{"type": "web_search_preview"}]))
        self.respond(gw, flow, {"input_tokens": 100, "output_tokens": 10}, calls=1)
        assert spent(key) == (100 * INPUT + 10 * OUTPUT + PREVIEW, 0)
        assert UsageRow.get().tool_calls == {"web_search_preview": 1}

    def test_usage_above_the_reservation_is_charged_and_flagged(self, gw):
        """A provider that ignored the bound: the money is spent, so it is charged, recorded as
        an overrun, and the key stays refused until it is within budget again."""
        key, secret = create_key(budget=Money.usd("1"))
        flow = sent(gw, secret, search_body(max_tool_calls=1))
        self.respond(gw, flow, {"input_tokens": 100, "output_tokens": 10}, calls=120)  # $1.20 of fees
        charged = 100 * INPUT + 10 * OUTPUT + 120 * SEARCH
        assert charged > reserved(flow)
        assert spent(key) == (charged, 0)
        row = UsageRow.get()
        assert (row.outcome, row.cost_pico, row.reserved_pico) == ("overrun", charged, reserved(flow))
        assert facts(flow)["usage"]["outcome"] == "overrun"
        assert f"OVERRUN: reserved {Money(reserved(flow))}" in explain(flow)
        refused = sent(gw, secret, {"model": MODEL, "input": "hi", "max_output_tokens": 1})
        assert refused.response.status_code == 429 and error_of(refused)["code"] == "insufficient_quota"

    def test_a_dearer_model_the_provider_reports_is_what_is_charged(self, gw):
        """A router or fallback answered with another model: the provider bills that one."""
        key, secret = create_key(budget=Money.usd("5"))
        flow = sent(gw, secret, {"model": MODEL, "input": "hi", "max_output_tokens": 50})
        body = responses(json.loads(flow.request.content), Controls(usage={"input_tokens": 100, "output_tokens": 10}))
        body["model"] = "gpt-4o-2024-08-06"  # $2.50 / $10 per 1M, against gpt-4o-mini's $0.15 / $0.60
        gw.respond(flow, http.Response.make(200, json.dumps(body), {"content-type": "application/json"}))
        assert spent(key) == (100 * 2_500_000 + 10 * 10_000_000, 0)

    def test_a_cheaper_reported_model_does_not_lower_the_charge(self, gw):
        key, secret = create_key(budget=Money.usd("5"))
        flow = sent(gw, secret, {"model": "gpt-4o", "input": "hi", "max_output_tokens": 50})
        body = responses(json.loads(flow.request.content), Controls(usage={"input_tokens": 100, "output_tokens": 10}))
        body["model"] = MODEL
        gw.respond(flow, http.Response.make(200, json.dumps(body), {"content-type": "application/json"}))
        assert spent(key) == (100 * 2_500_000 + 10 * 10_000_000, 0)


def test_another_providers_tool_fees_do_not_price_a_router_s_tools(gw, monkeypatch):
    """OpenRouter passes OpenAI's price for openai/gpt-4o through, so OpenAI's is used for the
    tokens; but OpenAI's web search fee says nothing about what OpenRouter bills for its searches."""
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-or-real")
    _, secret = create_key(budget=Money.usd("5"))
    flow = gw.request(openai_flow("/api/v1/responses", search_body(model="openai/gpt-4o"), secret=secret,
                                  host="openrouter.ai"))
    assert flow.response.status_code == 403 and error_of(flow)["code"] == "tool_not_metered"
    assert "no price for the tool(s) web_search of openrouter" in error_of(flow)["message"]


def test_a_search_billed_as_either_of_two_requested_tools_is_charged_the_dearer(gw):
    key, secret = create_key(budget=Money.usd("5"))
    flow = sent(gw, secret, search_body(tools=[{"type": "web_search"}, {"type": "web_search_preview"}]))
    TestSettlement().respond(gw, flow, {"input_tokens": 100, "output_tokens": 10}, calls=1)
    assert spent(key) == (100 * INPUT + 10 * OUTPUT + PREVIEW, 0)


def test_an_observed_request_for_a_model_pouch_cannot_price_records_nothing_charged(gw):
    gw.configure(pouch_unknown_keys="observe")
    flow = sent(gw, "sk-someone-elses-key", {"model": "some-unpriced-model", "input": "hi"})
    body = responses(json.loads(flow.request.content), Controls(usage={"input_tokens": 100, "output_tokens": 10}))
    body["model"] = "some-unpriced-model"
    gw.respond(flow, http.Response.make(200, json.dumps(body), {"content-type": "application/json"}))
    store_thread.drain()
    row = UsageRow.get()
    assert (row.observed, row.cost_pico, row.input_tokens) == (True, 0, 100)


def test_a_gemini_budget_refusal_tells_sdks_not_to_retry(gw, monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", "gm-real")
    _, secret = create_key(budget=Money(1))
    body = {"contents": [{"parts": [{"text": "hi"}]}], "generationConfig": {"maxOutputTokens": 100}}
    flow = gw.request(openai_flow("/v1beta/models/gemini-2.5-flash:generateContent", body, secret=secret,
                                  host="generativelanguage.googleapis.com"))
    assert flow.response.status_code == 429 and flow.response.headers["x-should-retry"] == "false"
