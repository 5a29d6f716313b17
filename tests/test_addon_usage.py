"""Chain link 5 (addons/usage.py): every way a metered request ends closes its reservation once,
with one usage row, at the right cost.

Flows go through the whole chain with a real store; the provider's answers come from the
OpenAI fake's shapes (tests/fakes/openai_shapes.py). Costs are worked out by hand from the
shipped price of gpt-4o-mini, in pico-dollars a token: input 150,000, cached input 75,000,
output 600,000.
"""

import hashlib
import json

import pytest
from mitmproxy import http

from pouch.domain.money import Money
from pouch.domain.periods import utcnow
from pouch.providers.registry import PROVIDERS
from pouch.services import chain
from pouch.services.store_thread import store_thread
from pouch.store import ledger
from pouch.store import usage as usage_store
from pouch.store.database import LedgerRow, ReservationRow, UsageRow
from pouch.tokens.count import count_prompt, count_text
from tests.addon_helpers import MODEL, chat_body, create_key, exchange_of, facts, gateway, openai_flow, sse_chunks
from tests.fakes.openai_shapes import Controls, chat_completions, responses

INPUT, CACHED, OUTPUT = 150_000, 75_000, 600_000
SAID = "Count with me one two three four five six seven"
PROMPT = count_prompt(MODEL, chat_body(SAID), "chat")
JSON = {"content-type": "application/json", "x-request-id": "req_0123"}
SSE = {"content-type": "text/event-stream; charset=utf-8", "x-request-id": "req_0123"}


@pytest.fixture
def gw(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-real-provider-key")
    with gateway() as gw:
        yield gw


@pytest.fixture
def alice():
    key, secret = create_key(budget=Money.usd("5"))
    return key, secret


def sent(gw, secret, body=None, path="/v1/chat/completions"):
    """A request through the whole chain, as it leaves for the provider."""
    return gw.request(openai_flow(path, body or chat_body(SAID, max_completion_tokens=50), secret=secret))


def upstream_body(flow) -> dict:
    return json.loads(flow.request.content)


def reserved(flow) -> int:
    return Money.usd(facts(flow)["reservation"]["amount_usd"]).pico


def settled(key=None):
    """Wait for settlement (off the event loop), then (spent, reserved) of the key's window."""
    store_thread.drain()
    assert ReservationRow.select().count() == 0
    if key is None:
        return None
    row = LedgerRow.get(LedgerRow.key == key.id)
    assert row.reserved_pico == 0
    return row.spent_pico


def only_row() -> UsageRow:
    assert UsageRow.select().count() == 1
    return UsageRow.get()


class TestJSON:
    def test_provider_usage_is_charged_at_cost(self, gw, alice):
        key, secret = alice
        flow = sent(gw, secret)
        payload = chat_completions(upstream_body(flow), Controls(
            usage={"prompt_tokens": 20, "completion_tokens": 7, "cached_tokens": 4}))
        gw.respond(flow, http.Response.make(200, json.dumps(payload), JSON))
        cost = 16 * INPUT + 4 * CACHED + 7 * OUTPUT  # 6,900,000 = $0.0000069
        assert settled(key) == cost
        [row] = usage_store.rows()  # the DESIGN's field names
        timings = {"id", "ts", "latency_ms", "ttft_ms"}
        assert {name: value for name, value in row.items() if name not in timings} == {
            "key": "alice", "provider": "openai", "model": MODEL, "endpoint": "chat.completions",
            "status": 200, "streamed": False, "input_tokens": 20, "cached_tokens": 4, "cache_write_tokens": 0,
            "output_tokens": 7, "reasoning_tokens": 0, "cost_usd": "0.0000069", "mock": False, "observed": False,
            "request_id": "req_0123", "outcome": "ok", "tool_calls": {},
            "reserved_usd": facts(flow)["reservation"]["amount_usd"],
            "team": None, "user": None, "tags": [], "session": None,
        }
        assert row["latency_ms"] >= 0 and row["ttft_ms"] >= 0
        stored = only_row()
        assert (stored.key_id, stored.reservation_id) == (key.id, facts(flow)["reservation"]["id"])
        assert facts(flow)["usage"]["charged_usd"] == "0.0000069"
        assert facts(flow)["usage"]["outcome"] == "ok"

    def test_a_2xx_without_usage_is_charged_the_full_reservation(self, gw, alice):
        key, secret = alice
        flow = sent(gw, secret)
        payload = chat_completions(upstream_body(flow), Controls(no_usage=True))
        gw.respond(flow, http.Response.make(200, json.dumps(payload), JSON))
        assert settled(key) == reserved(flow) == PROMPT * INPUT + 50 * OUTPUT
        row = only_row()
        assert (row.outcome, row.cost_pico) == ("no_usage", reserved(flow))

    @pytest.mark.parametrize("status", [400, 429, 500, 503])
    def test_an_upstream_error_is_released(self, gw, alice, status):
        key, secret = alice
        flow = sent(gw, secret)
        body = json.dumps({"error": {"message": "overloaded", "type": "server_error", "code": None}})
        gw.respond(flow, http.Response.make(status, body, JSON))
        assert settled(key) == 0
        row = only_row()
        assert (row.status, row.cost_pico, row.outcome) == (status, 0, "upstream_error")

    def test_error_before_anything_was_sent_is_released(self, gw, alice):
        key, secret = alice
        flow = sent(gw, secret)
        flow.server_conn.timestamp_tcp_setup = None  # the upstream connection never came up
        gw.fail(flow, "connection refused")
        assert settled(key) == 0
        row = only_row()
        assert (row.status, row.cost_pico, row.outcome) == (None, 0, "not_sent")

    def test_an_upstream_abort_after_sending_charges_the_worst_case(self, gw, alice):
        """The provider may have generated (and billed) the whole answer before the
        connection broke: what it billed cannot be known, so the reservation is charged."""
        key, secret = alice
        flow = sent(gw, secret)
        gw.fail(flow, "server disconnected")
        assert settled(key) == reserved(flow)
        row = only_row()
        assert (row.input_tokens, row.output_tokens, row.outcome) == (PROMPT, 0, "cut_short")

    def test_a_client_that_leaves_before_a_non_streamed_answer_pays_the_worst_case(self, gw, alice):
        key, secret = alice
        flow = sent(gw, secret)
        gw.fail(flow, "Client disconnected.")
        assert settled(key) == reserved(flow)
        row = only_row()
        assert (row.input_tokens, row.output_tokens, row.outcome) == (PROMPT, 0, "abandoned")

    def test_a_response_then_an_error_closes_once(self, gw, alice):
        key, secret = alice
        flow = sent(gw, secret)
        payload = chat_completions(upstream_body(flow), Controls(usage={"prompt_tokens": 10, "completion_tokens": 1}))
        gw.respond(flow, http.Response.make(200, json.dumps(payload), JSON))
        gw.fail(flow, "client disconnected")
        gw.hook("response", flow)
        assert settled(key) == 10 * INPUT + 1 * OUTPUT
        only_row()

    def test_a_refusal_after_the_reservation_is_released(self, gw, alice, monkeypatch):
        monkeypatch.delenv("OPENAI_API_KEY")  # the upstream link refuses
        key, secret = alice
        flow = sent(gw, secret)
        assert flow.response.status_code == 500 and facts(flow)["reservation"] is not None
        gw.hook("response", flow)  # mitmproxy's only hook for an answer set in the request phase
        assert settled(key) == 0
        row = only_row()
        assert (row.status, row.cost_pico, row.outcome) == (500, 0, "refused")

    def test_a_refusal_before_the_reservation_records_nothing(self, gw):
        flow = sent(gw, "pouch-unknown")
        gw.hook("response", flow)
        settled()
        assert UsageRow.select().count() == 0

    def test_free_endpoints_record_nothing(self, gw, alice):
        _, secret = alice
        flow = gw.request(openai_flow("/v1/models", method="GET", secret=secret))
        gw.respond(flow, http.Response.make(200, b'{"object": "list", "data": []}', JSON))
        settled()
        assert UsageRow.select().count() == 0

    def test_a_mock_is_recorded_at_what_it_would_cost_and_not_charged(self, gw):
        key, secret = create_key(budget=Money.usd("5"), mock=True)
        flow = sent(gw, secret)
        gw.hook("response", flow)
        assert settled(key) == 0
        row = only_row()
        output = count_text(MODEL, SAID)
        assert (row.mock, row.input_tokens, row.output_tokens) == (True, PROMPT, output)
        assert row.cost_pico == PROMPT * INPUT + output * OUTPUT
        assert row.outcome == "mock"

    def test_observed_usage_is_recorded_under_a_fingerprint_without_a_ledger(self, gw):
        gw.configure(pouch_unknown_keys="observe")
        secret = "sk-proj-someone-elses-key"
        flow = sent(gw, secret)
        assert facts(flow)["reservation"] is None
        payload = chat_completions(upstream_body(flow), Controls(usage={"prompt_tokens": 12, "completion_tokens": 3}))
        gw.respond(flow, http.Response.make(200, json.dumps(payload), JSON))
        settled()
        row = only_row()
        assert row.key_name == f"observed:{hashlib.sha256(secret.encode()).hexdigest()[:12]}"
        assert (row.key_id, row.observed, row.reservation_id) == (None, True, None)
        assert row.cost_pico == 12 * INPUT + 3 * OUTPUT
        assert LedgerRow.select().count() == 0


def stream_events(flow, **controls) -> list[bytes]:
    """What the fake OpenAI streams for the request as it left the gateway."""
    return [event.data for event in chat_completions(upstream_body(flow), Controls(**controls))]


class TestStreams:
    def test_usage_is_asked_for_charged_and_removed(self, gw, alice):
        key, secret = alice
        flow = sent(gw, secret, chat_body(SAID, stream=True))
        assert upstream_body(flow)["stream_options"] == {"include_usage": True}
        events = stream_events(flow, usage={"prompt_tokens": 30, "completion_tokens": 5})
        usage_event = next(event for event in events if b'"choices": []' in event)
        received = gw.respond(flow, http.Response.make(200, b"", SSE), sse_chunks(events))
        assert received == b"".join(event for event in events if event is not usage_event)
        assert b'"usage": {' not in received and received.endswith(b"data: [DONE]\n\n")
        assert settled(key) == 30 * INPUT + 5 * OUTPUT
        row = only_row()
        assert (row.streamed, row.status, row.outcome) == (True, 200, "ok")
        assert row.ttft_ms is not None and row.ttft_ms >= 0

    def test_already_handled_flows_are_left_alone(self, gw, alice):
        _, secret = alice
        body = chat_body(SAID, stream=True)
        flow = gw.request(openai_flow(body=body, secret=secret), until=gw.mock)
        flow.response = http.Response.make(204)
        gw.run(gw.usage.request(flow))
        assert exchange_of(flow).body == body
        assert not exchange_of(flow).injected_usage and not exchange_of(flow).body_changed

    def test_usage_the_client_asked_for_is_kept(self, gw, alice):
        key, secret = alice
        flow = sent(gw, secret, chat_body(SAID, stream=True, stream_options={"include_usage": True}))
        assert not exchange_of(flow).injected_usage
        events = stream_events(flow, usage={"prompt_tokens": 30, "completion_tokens": 5})
        received = gw.respond(flow, http.Response.make(200, b"", SSE), sse_chunks(events))
        assert received == b"".join(events)
        assert settled(key) == 30 * INPUT + 5 * OUTPUT

    def test_a_stream_cut_short_charges_the_reservation_and_records_what_was_seen(self, gw, alice):
        """Providers bill what they generated, not what reached pouch: hidden reasoning and
        what they generate after the client left are invisible, so the worst case is charged."""
        key, secret = alice
        flow = sent(gw, secret, chat_body(SAID, stream=True))
        events = stream_events(flow)[:5]  # the role chunk and four words; no usage
        flow.response = http.Response.make(200, b"", SSE)
        gw.hook("responseheaders", flow)
        gw.stream(flow, sse_chunks(events), end=False)
        gw.fail(flow, "client disconnected")
        seen = "".join(json.loads(event[len(b"data: "):])["choices"][0]["delta"]["content"] for event in events)
        assert seen == "echo: Count with me"
        output = count_text(MODEL, seen)
        assert settled(key) == reserved(flow)
        row = only_row()
        assert (row.input_tokens, row.output_tokens, row.outcome) == (PROMPT, output, "cut_short")
        assert row.cost_pico == row.reserved_pico == reserved(flow)

    def test_a_whole_stream_without_usage_is_charged_the_full_reservation(self, gw, alice):
        key, secret = alice
        flow = sent(gw, secret, chat_body(SAID, stream=True))
        events = [e for e in stream_events(flow) if b'"choices":[]' not in e.replace(b" ", b"")]
        gw.respond(flow, http.Response.make(200, b"", SSE), sse_chunks(events))
        assert settled(key) == reserved(flow)
        assert only_row().outcome == "no_usage"

    def test_an_upstream_error_stream_is_released(self, gw, alice):
        key, secret = alice
        flow = sent(gw, secret, chat_body(SAID, stream=True))
        body = json.dumps({"error": {"message": "rate limited", "type": "requests", "code": None}})
        gw.respond(flow, http.Response.make(429, body, JSON))
        assert settled(key) == 0
        assert only_row().outcome == "upstream_error"

    def test_a_responses_stream_is_charged_from_its_final_event(self, gw, alice):
        key, secret = alice
        flow = sent(gw, secret, {"model": MODEL, "input": SAID, "stream": True}, path="/v1/responses")
        assert not exchange_of(flow).injected_usage  # a responses stream always ends with usage
        controls = Controls(usage={"input_tokens": 9, "output_tokens": 2})
        events = [event.data for event in responses(upstream_body(flow), controls)]
        received = gw.respond(flow, http.Response.make(200, b"", SSE), sse_chunks(events, size=101))
        assert received == b"".join(events)
        assert settled(key) == 9 * INPUT + 2 * OUTPUT

    def test_a_held_back_event_is_no_chunk_not_an_empty_one(self, gw, alice):
        _, secret = alice
        flow = sent(gw, secret, chat_body(SAID, stream=True))
        flow.response = http.Response.make(200, b"", SSE)
        gw.hook("responseheaders", flow)
        # b"" mid-stream would end a chunked HTTP/1 body early
        assert flow.response.stream(b'data: {"id": "chatcmpl-1", "choi') == []

    def test_the_callable_never_raises(self, gw, alice, monkeypatch):
        class Broken:
            def feed(self, data):
                raise RuntimeError("tracker bug")

            def usage(self):
                raise RuntimeError("tracker bug")

            def output_text(self):
                raise RuntimeError("tracker bug")

        monkeypatch.setattr(PROVIDERS["openai"], "stream_tracker", lambda endpoint, injected: Broken())
        key, secret = alice
        flow = sent(gw, secret, chat_body(SAID, stream=True))
        events = stream_events(flow)
        flow.response = http.Response.make(200, b"", SSE)
        gw.hook("responseheaders", flow)
        for chunk in sse_chunks(events):
            assert flow.response.stream(chunk) == chunk  # passed on untouched
        flow.response.stream(b"")
        gw.hook("response", flow)
        # what was used cannot be told: the worst case is charged, never $0
        assert settled(key) == reserved(flow)
        assert only_row().outcome == "measure_failed"


def test_an_observed_stream_cut_short_records_its_input(gw):
    gw.configure(pouch_unknown_keys="observe")
    flow = sent(gw, "sk-proj-someone-elses-key", chat_body(SAID, stream=True))
    flow.response = http.Response.make(200, b"", SSE)
    gw.hook("responseheaders", flow)
    gw.stream(flow, sse_chunks(stream_events(flow)[:3]), end=False)
    gw.fail(flow, "client disconnected")
    settled()
    assert only_row().input_tokens == PROMPT


def test_ledger_invariant_after_every_ending(gw):
    """One key, every ending above in a row: spend equals the sum of the rows' charges."""
    key, secret = create_key(budget=Money.usd("1"))
    ok = sent(gw, secret)
    gw.respond(ok, http.Response.make(200, json.dumps(chat_completions(upstream_body(ok), Controls())), JSON))
    failed = sent(gw, secret)
    gw.respond(failed, http.Response.make(500, b"{}", JSON))
    cut = sent(gw, secret)
    gw.fail(cut)
    store_thread.drain()
    spent, held = ledger.window_totals(key, utcnow())
    assert held == Money(0)
    assert spent.pico == sum(row.cost_pico for row in UsageRow.select()) > 0
    assert UsageRow.select().count() == 3


@pytest.mark.parametrize("stream", [False, True])
def test_a_route_with_a_path_prefix_is_still_metered_from_usage(monkeypatch, stream):
    """pouch_route may send api.openai.com to a base URL with a path (a proxy, a local server):
    the request leaves with the prefixed path, yet it is metered as the endpoint it was."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-real-provider-key")
    with gateway(pouch_route=["api.openai.com=http://127.0.0.1:8000/prefix"]) as gw:
        key, secret = create_key(budget=Money.usd("5"))
        flow = sent(gw, secret, chat_body(SAID, max_completion_tokens=50, stream=stream))
        assert flow.request.path == "/prefix/v1/chat/completions"
        usage = {"prompt_tokens": 20, "completion_tokens": 7}
        if stream:
            gw.respond(flow, http.Response.make(200, b"", SSE), sse_chunks(stream_events(flow, usage=usage)))
        else:
            payload = chat_completions(upstream_body(flow), Controls(usage=usage))
            gw.respond(flow, http.Response.make(200, json.dumps(payload), JSON))
        assert settled(key) == 20 * INPUT + 7 * OUTPUT
        assert only_row().outcome == "ok"
