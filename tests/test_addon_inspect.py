"""addons/inspect.py with the chain: the flow comment (cost and key first; the budget left after
settling beside the x-pouch-budget-remaining the client got while in flight) and the bounded
copy of LLM stream bodies kept for mitmweb's LLM view.

Amounts from the shipped price of gpt-4o-mini: $0.15 per 1M input tokens (150,000
pico-dollars a token), $0.60 per 1M output tokens (600,000).
"""

import json

import pytest
from mitmproxy import contentviews, exceptions, flowfilter, http
from mitmproxy.addons.view import View
from mitmproxy.hooks import ConfigureHook

from addons.inspect import Inspect
from pouch.domain.money import Money
from pouch.services import chain
from pouch.services.explain import explain
from pouch.services.store_thread import store_thread
from pouch.services.stream_body import marker
from pouch.store.database import UsageRow
from tests.addon_helpers import chat_body, create_key, facts, gateway, openai_flow, sse_chunks
from tests.fakes.openai_shapes import Controls, chat_completions

INPUT, OUTPUT = 150_000, 600_000
JSON = {"content-type": "application/json"}
SSE = {"content-type": "text/event-stream; charset=utf-8"}


@pytest.fixture
def gw(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-real-provider-key")
    with gateway() as gw:
        gw.inspect = Inspect()
        gw.tctx.master.addons.add(gw.inspect)  # last, as in addons/pouch.py
        # as mitmproxy configures a script it loaded: every option is new to it
        gw.tctx.master.addons.invoke_addon_sync(gw.inspect, ConfigureHook(set(gw.tctx.options.keys())))
        yield gw


def with_view(gw):
    """What mitmweb and the mitmproxy console have: a view holding the flows."""
    gw.tctx.master.addons.register(View())


def sent(gw, secret, **fields):
    body = chat_body("Count with me one two three", max_completion_tokens=50, **fields)
    return gw.request(openai_flow(body=body, secret=secret))


def streamed(gw, flow, **controls) -> tuple[bytes, list[bytes]]:
    """The fake OpenAI's stream for the request as it left, through the chain as mitmproxy
    streams it (no body on the response); (what the client received, the upstream events)."""
    events = [e.data for e in chat_completions(json.loads(flow.request.content), Controls(**controls))]
    response = http.Response.make(200, b"", SSE)
    response.raw_content = None  # a streamed response has no body unless someone keeps one
    return gw.respond(flow, response, sse_chunks(events)), events


class TestComment:
    def test_cost_and_key_come_first(self, gw):
        _, secret = create_key(budget=Money.usd("5"))
        flow = sent(gw, secret)
        payload = chat_completions(json.loads(flow.request.content),
                                   Controls(usage={"prompt_tokens": 30, "completion_tokens": 5}))
        gw.respond(flow, http.Response.make(200, json.dumps(payload), JSON))
        # 30 * 150,000 + 5 * 600,000 = 7,500,000 pico-dollars
        assert flow.comment.startswith("$0.0000075 alice · gpt-4o-mini · in 30 · out 5 · left $")
        assert flow.comment == explain(flow)

    def test_a_mock_says_so_before_its_amount(self, gw):
        _, secret = create_key("mocked", budget=Money.usd("5"), mock=True)
        flow = sent(gw, secret)
        gw.hook("response", flow)
        assert flow.comment.startswith("mock $0.0000") and " mocked · gpt-4o-mini · in " in flow.comment
        assert not flow.comment.endswith(" mock"), "said once, at the start"

    def test_a_refusal_starts_with_its_reason(self, gw):
        _, secret = create_key(budget=Money(1))
        flow = sent(gw, secret)
        gw.hook("response", flow)
        assert flow.comment.startswith("refused budget · alice · budget of key 'alice' exhausted")
        assert flow.marked == ":money_with_wings:"


    def test_observed_traffic_is_named_as_pouch_usage_names_it(self, gw):
        gw.configure(pouch_unknown_keys="observe")
        flow = gw.request(openai_flow(body=chat_body(max_completion_tokens=50), secret="sk-proj-someone-elses"))
        payload = chat_completions(json.loads(flow.request.content),
                                   Controls(usage={"prompt_tokens": 12, "completion_tokens": 3}))
        gw.respond(flow, http.Response.make(200, json.dumps(payload), JSON))
        store_thread.drain()
        row = UsageRow.get()
        assert row.key_name.startswith("observed:")
        assert flow.comment.startswith(f"$0.0000036 {row.key_name} · gpt-4o-mini · in 12 · out 3 · ")
        assert flowfilter.match('~comment "observed:"', flow) and " left " not in flow.comment

    def test_the_readme_filters_find_them(self, gw):
        _, alice = create_key(budget=Money.usd("5"))
        _, broke = create_key("alice2", budget=Money(1))
        _, mocked = create_key("mocked", mock=True)
        flows = {name: sent(gw, secret) for name, secret in (("alice", alice), ("broke", broke), ("mock", mocked))}
        payload = chat_completions(json.loads(flows["alice"].request.content), Controls())
        gw.respond(flows["alice"], http.Response.make(200, json.dumps(payload), JSON))
        for name in ("broke", "mock"):
            gw.hook("response", flows[name])

        def found(expression):
            return {name for name, flow in flows.items() if flowfilter.match(expression, flow)}

        assert found('~comment " alice · "') == {"alice"}
        assert found('~comment " alice2 · "') == {"broke"}
        assert found('~comment "^refused"') == found("~marked") == {"broke"}
        assert found('~comment "^mock "') == {"mock"}


class TestBudgetLeft:
    def test_header_in_flight_and_comment_after_settling_agree(self, gw):
        """A request that settles for less than it reserved: the header, sent while it was in
        flight, has its worst case held; the comment, written after settlement, has its cost
        taken instead; each says which it is."""
        _, secret = create_key(budget=Money.usd("5"))
        flow = sent(gw, secret)
        payload = chat_completions(json.loads(flow.request.content),
                                   Controls(usage={"prompt_tokens": 30, "completion_tokens": 5}))
        gw.respond(flow, http.Response.make(200, json.dumps(payload), JSON))
        reserved = Money.usd(flow.response.headers["x-pouch-request-reserved"])
        in_flight = Money.usd(flow.response.headers["x-pouch-budget-remaining"])
        charged = Money(30 * INPUT + 5 * OUTPUT)
        assert reserved == Money.usd(facts(flow)["reservation"]["amount_usd"]) and reserved > charged
        assert in_flight == Money.usd("5") - reserved
        after = in_flight + reserved - charged
        assert after == Money.usd("4.9999925")
        assert (f" · left ${after.json()} after settling (${in_flight.json()} while in flight) · "
                in flow.comment)

    def test_a_stream_cut_short_leaves_what_its_reservation_left(self, gw):
        _, secret = create_key(budget=Money.usd("5"))
        flow = sent(gw, secret, stream=True)
        flow.response = http.Response.make(200, b"", SSE)
        gw.hook("responseheaders", flow)
        gw.fail(flow, "client disconnected")
        in_flight = flow.response.headers["x-pouch-budget-remaining"]
        assert f" · left ${in_flight} after settling (${in_flight} while in flight) · " in flow.comment
        assert flow.comment.endswith("cut short")

    def test_no_budget_no_budget_left(self, gw):
        _, secret = create_key()
        flow = sent(gw, secret)
        payload = chat_completions(json.loads(flow.request.content), Controls())
        gw.respond(flow, http.Response.make(200, json.dumps(payload), JSON))
        assert "x-pouch-budget-remaining" not in flow.response.headers and " left " not in flow.comment


class TestStreamBodies:
    def test_a_stream_is_kept_as_the_client_received_it(self, gw):
        with_view(gw)
        key, secret = create_key(budget=Money.usd("5"))
        flow = sent(gw, secret, stream=True)
        received, _ = streamed(gw, flow, usage={"prompt_tokens": 30, "completion_tokens": 5})
        assert received.endswith(b"data: [DONE]\n\n") and b'"usage": {' not in received
        assert flow.response.raw_content == received
        shown = contentviews.prettify_message(flow.response, flow, "llm").text
        assert "echo: Count with me one two three" in shown and "streamed: " in shown
        assert "── pouch ──\n$0.0000075 alice · gpt-4o-mini" in shown

    def test_over_the_limit_the_rest_is_dropped_with_a_marker_and_still_metered(self, gw):
        with_view(gw)
        gw.configure(pouch_stream_bodies="1k")
        _, secret = create_key(budget=Money.usd("5"))
        flow = sent(gw, secret, stream=True)
        received, _ = streamed(gw, flow, reply=" ".join(["word"] * 40), usage={"prompt_tokens": 30,
                                                                                "completion_tokens": 41})
        assert len(received) > 4096
        assert flow.response.raw_content == received[:1024] + marker(1024, len(received) - 1024)
        store_thread.drain()
        row = UsageRow.get()
        assert (row.outcome, row.input_tokens, row.output_tokens) == ("ok", 30, 41), "the whole stream was read"
        assert row.cost_pico == 30 * INPUT + 41 * OUTPUT
        shown = contentviews.prettify_message(flow.response, flow, "llm").text
        assert shown.startswith("model gpt-4o-mini\n── assistant ──\nword word")
        assert "(could not read" not in shown, "the event cut in half is left out"
        dropped = len(received) - 1024
        assert f"── pouch kept the first 1,024 bytes of this stream and dropped the other {dropped:,}" in shown

    def test_what_arrived_of_a_stream_cut_short_is_kept(self, gw):
        with_view(gw)
        _, secret = create_key(budget=Money.usd("5"))
        flow = sent(gw, secret, stream=True)
        events = [e.data for e in chat_completions(json.loads(flow.request.content), Controls())][:3]
        flow.response = http.Response.make(200, b"", SSE)
        flow.response.raw_content = None
        gw.hook("responseheaders", flow)
        gw.stream(flow, sse_chunks(events), end=False)
        gw.fail(flow, "server disconnected")
        assert flow.response.raw_content == b"".join(events)

    def test_headless_nothing_is_kept(self, gw):
        """mitmdump without a flow file: nobody would see the bodies."""
        _, secret = create_key(budget=Money.usd("5"))
        flow = sent(gw, secret, stream=True)
        received, _ = streamed(gw, flow)
        assert received.endswith(b"data: [DONE]\n\n") and flow.response.raw_content is None

    def test_limit_zero_keeps_nothing(self, gw):
        with_view(gw)
        gw.configure(pouch_stream_bodies="0")
        _, secret = create_key(budget=Money.usd("5"))
        flow = sent(gw, secret, stream=True)
        streamed(gw, flow)
        assert flow.response.raw_content is None

    def test_a_bad_limit_is_refused(self, gw):
        with pytest.raises(exceptions.OptionsError, match="pouch_stream_bodies"):
            gw.configure(pouch_stream_bodies="lots")

    def test_non_llm_flows_are_left_alone(self, gw):
        with_view(gw)
        flow = openai_flow(host="example.com", path="/events", method="GET")
        flow.response = http.Response.make(200, b"", SSE)
        flow.response.stream = True
        gw.inspect.responseheaders(flow)
        assert flow.response.stream is True
