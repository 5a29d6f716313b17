"""The money promise at its edges, end to end: a real mitmdump with the chain, the vendors' own
SDKs through HTTPS_PROXY, fakes on loopback that bill paid server-side tools, ignore bounds,
over-report usage and break off reasoning streams.

The invariant: what a provider can bill for a request is at most what pouch reserved for it;
when a provider bills more anyway, it is charged, recorded as an overrun, and the key is
refused until it is within its budget again.
"""

from __future__ import annotations

import json
import uuid

import anthropic
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from pouch.domain.money import Money
from pouch.services import keys as key_service
from pouch.store import keys as key_store
from pouch.store import ledger
from pouch.store.database import ReservationRow, UsageRow
from tests import pinned_prices
from tests.fakes.anthropic_fake import FakeAnthropic
from tests.fakes.gemini_fake import FakeGemini
from tests.fakes.openai_fake import FakeOpenAI
from tests.gateway import Gateway, free_port

MODEL, CLAUDE, GEMINI = "gpt-4o-mini", "claude-haiku-4-5", "gemini-2.5-flash"
PRICES = pinned_prices.table()
PRICE, CLAUDE_PRICE = PRICES.resolve(MODEL, "openai"), PRICES.resolve(CLAUDE, "anthropic")
GEMINI_PRICE = PRICES.resolve(GEMINI, "gemini")
SEARCH = Money.usd("0.01")
HELLO = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def fakes(tmp_path_factory):
    tls = tmp_path_factory.mktemp("tls")
    with FakeOpenAI(tls_dir=tls / "o") as gpt, FakeAnthropic(tls_dir=tls / "a") as claude, \
            FakeGemini(tls_dir=tls / "g") as gemini, FakeOpenAI(plain=True) as plain:
        bundle = tls / "cas.pem"
        bundle.write_text("".join(open(fake.ca_path).read() for fake in (gpt, claude, gemini)))
        yield {"openai": gpt, "anthropic": claude, "gemini": gemini, "plain": plain, "ca_bundle": bundle}


@pytest.fixture(scope="module")
def gateway(fakes, tmp_path_factory):
    routes = {"api.openai.com": fakes["openai"].url, "api.anthropic.com": fakes["anthropic"].url,
              "generativelanguage.googleapis.com": fakes["gemini"].url}
    gateway = Gateway(tmp_path_factory.mktemp("gateway"), routes, str(fakes["ca_bundle"])).start()
    yield gateway
    gateway.stop()


@pytest.fixture(autouse=True)
def fresh(fakes, gateway):
    for name in ("openai", "anthropic", "gemini", "plain"):
        fakes[name].reset()
    gateway.open_store()


def new_key(**options):
    return key_service.create(f"k{uuid.uuid4().hex[:10]}", **options)


def rows_of(key):
    return list(UsageRow.select().where(UsageRow.key_name == key.name).order_by(UsageRow.id))


def totals(key) -> tuple[Money, Money]:
    return ledger.window_totals(key_store.get(key.id), key_service.utcnow())


def claude_client(gateway, secret):
    return anthropic.Anthropic(api_key=secret, max_retries=0, http_client=anthropic.DefaultHttpxClient(
        proxy=gateway.proxy_url, verify=gateway.tls()))


def assert_settled_exactly(gateway, key, rows=1):
    gateway.settled(expected_rows=rows)
    found = rows_of(key)
    assert len(found) == rows
    assert totals(key) == (Money(sum(r.cost_pico for r in found)), Money(0))
    assert ReservationRow.select().where(ReservationRow.key == key.id).count() == 0
    return found


# --- paid server-side tools --------------------------------------------------------------------


def test_openai_web_search_fees_are_reserved_bounded_and_charged(gateway, fakes):
    key, secret = new_key(budget="5")
    raw = gateway.client(secret).responses.with_raw_response.create(
        model=MODEL, input="what happened today?", max_output_tokens=40, tools=[{"type": "web_search"}],
        extra_headers={"x-fake-tool-calls": "5", "x-fake-tool-input": "2000"})
    response = raw.parse()
    assert raw.headers["x-pouch-tool-calls-capped"] == "3"
    [sent] = fakes["openai"].requests
    assert sent.body["max_tool_calls"] == 3, "the provider was told the bound pouch reserved for"
    assert [item.type for item in response.output].count("web_search_call") == 3  # 5 asked, 3 allowed
    [row] = assert_settled_exactly(gateway, key)
    assert row.tool_calls == {"web_search": 3} and row.outcome == "ok"
    assert row.input_tokens == response.usage.input_tokens  # includes the 3 x 2,000 tokens of results
    tokens = PRICE.input * response.usage.input_tokens + PRICE.output * response.usage.output_tokens
    assert row.cost_pico == (tokens + SEARCH * 3).pico
    assert row.cost_pico <= row.reserved_pico


def test_anthropic_web_search_in_a_stream_is_charged_its_fees(gateway, fakes):
    key, secret = new_key(budget="5")
    tools = [{"type": "web_search_20250305", "name": "web_search"}]
    with claude_client(gateway, secret).messages.stream(
            model=CLAUDE, max_tokens=50, messages=HELLO, tools=tools,
            extra_headers={"x-fake-tool-calls": "2"}) as stream:
        final = stream.get_final_message()
    assert final.usage.server_tool_use.web_search_requests == 2
    [sent] = fakes["anthropic"].requests
    assert sent.body["tools"][0]["max_uses"] == 3
    [row] = assert_settled_exactly(gateway, key)
    assert row.tool_calls == {"web_search": 2} and row.streamed
    assert row.input_tokens == final.usage.input_tokens  # message_delta's cumulative count, tool rounds in
    tokens = CLAUDE_PRICE.input * final.usage.input_tokens + CLAUDE_PRICE.output * final.usage.output_tokens
    assert row.cost_pico == (tokens + SEARCH * 2).pico <= row.reserved_pico


@pytest.mark.parametrize("tools, named", [
    ([{"type": "code_interpreter", "container": {"type": "auto"}}], "code_interpreter"),
    ([{"type": "image_generation"}], "image_generation"),
])  # fmt: skip
def test_a_tool_pouch_cannot_bound_never_reaches_the_provider(gateway, fakes, tools, named):
    key, secret = new_key(budget="5")
    with pytest.raises(openai.PermissionDeniedError) as refused:
        gateway.client(secret).responses.create(model=MODEL, input="hi", tools=tools)
    assert refused.value.code == "tool_not_metered" and named in refused.value.message
    assert fakes["openai"].requests == [] and totals(key) == (Money(0), Money(0))


def test_anthropic_code_execution_is_refused(gateway, fakes):
    _, secret = new_key(budget="5")
    with pytest.raises(anthropic.PermissionDeniedError, match="code_execution"):
        claude_client(gateway, secret).messages.create(
            model=CLAUDE, max_tokens=50, messages=HELLO,
            tools=[{"type": "code_execution_20250825", "name": "code_execution"}])
    assert fakes["anthropic"].requests == []


def gemini_client(gateway, secret, headers=None):
    options = genai_types.HttpOptions(client_args={"proxy": gateway.proxy_url, "verify": gateway.tls()},
                                      headers=headers or {})
    return genai.Client(api_key=secret, http_options=options)


def test_gemini_url_context_rounds_are_billed_as_input(gateway, fakes):
    key, secret = new_key(budget="5")
    config = genai_types.GenerateContentConfig(max_output_tokens=40, tools=[{"url_context": {}}])
    client = gemini_client(gateway, secret, {"x-fake-tool-calls": "1", "x-fake-tool-input": "3000"})
    reply = client.models.generate_content(model=GEMINI, contents="summarise https://example.com", config=config)
    assert reply.usage_metadata.tool_use_prompt_token_count == 3000
    [row] = assert_settled_exactly(gateway, key)
    assert row.input_tokens == reply.usage_metadata.prompt_token_count + 3000
    tokens = GEMINI_PRICE.input * row.input_tokens + GEMINI_PRICE.output * row.output_tokens
    assert row.cost_pico == tokens.pico <= row.reserved_pico


def test_gemini_search_grounding_is_refused(gateway, fakes):
    _, secret = new_key(budget="5")
    config = genai_types.GenerateContentConfig(tools=[{"google_search": {}}])
    client = gemini_client(gateway, secret)
    with pytest.raises(genai_errors.ClientError) as refused:
        client.models.generate_content(model=GEMINI, contents="news?", config=config)
    assert refused.value.code == 403 and "google" in refused.value.message.lower()
    assert fakes["gemini"].requests == []


# --- providers that bill more than was reserved ------------------------------------------------


def test_a_provider_that_ignores_the_tool_bound_is_charged_and_flagged(gateway, fakes):
    key, secret = new_key(budget="0.5")
    gateway.client(secret).responses.create(
        model=MODEL, input="hi", max_output_tokens=10, max_tool_calls=1, tools=[{"type": "web_search"}],
        extra_headers={"x-fake-tool-calls": "60", "x-fake-ignore-bounds": "1", "x-fake-tool-input": "1"})
    [row] = assert_settled_exactly(gateway, key)
    assert row.outcome == "overrun" and row.tool_calls == {"web_search": 60}
    assert row.cost_pico > row.reserved_pico and Money(row.cost_pico) > SEARCH * 50
    # $0.60 spent of $0.50: the key is refused until it is within its budget again
    with pytest.raises(openai.RateLimitError) as refused:
        gateway.client(secret).chat.completions.create(model=MODEL, messages=HELLO, max_tokens=1)
    assert refused.value.code == "insufficient_quota"
    overruns = {r["key"]: r["overruns"] for r in __import__("pouch.store.usage", fromlist=["totals"]).totals("key")}
    assert overruns[key.name] == 1
    assert "overrun" in gateway.log_path.read_text()


@pytest.mark.parametrize("stream", [False, True])
def test_a_server_that_ignores_max_tokens_is_an_overrun(gateway, fakes, stream):
    key, secret = new_key(budget="5")
    usage = json.dumps({"prompt_tokens": 9, "completion_tokens": 50_000})
    reply = gateway.client(secret).chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=10, stream=stream, extra_headers={"x-fake-usage": usage})
    if stream:
        list(reply)
    [row] = assert_settled_exactly(gateway, key)
    assert (row.outcome, row.output_tokens) == ("overrun", 50_000)
    assert row.cost_pico == (PRICE.input * 9 + PRICE.output * 50_000).pico > row.reserved_pico


# --- streams cut short -------------------------------------------------------------------------


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_a_reasoning_stream_cut_short_is_charged_its_reservation(gateway, fakes, api):
    """The provider bills reasoning that never streams: what it billed cannot be known, so the
    reservation is charged, never only the visible words."""
    key, secret = new_key(budget="5")
    headers = {"x-fake-abort-after": "2", "x-fake-reply": "one two three four five",
               "x-fake-usage": json.dumps({"reasoning_tokens": 5000})}
    client = gateway.client(secret)
    with pytest.raises(openai.APIConnectionError):
        if api == "chat":
            list(client.chat.completions.create(model="o3", messages=HELLO, max_completion_tokens=8000,
                                                stream=True, extra_headers=headers))
        else:
            list(client.responses.create(model="o3", input="hello there", max_output_tokens=8000,
                                         stream=True, extra_headers=headers))
    [row] = assert_settled_exactly(gateway, key)
    assert row.outcome == "cut_short" and 1 <= row.output_tokens < 8000
    assert row.cost_pico == row.reserved_pico
    price = PRICES.resolve("o3", "openai")
    assert row.reserved_pico == (price.input * row.input_tokens + price.highest_output * 8000).pico


# --- tokens per minute -------------------------------------------------------------------------


def test_tokens_per_minute_count_an_uncapped_request_as_the_budget_does(gateway, fakes):
    _, secret = new_key(tpm=1000)
    with pytest.raises(openai.RateLimitError) as refused:
        gateway.client(secret).chat.completions.create(model=MODEL, messages=HELLO)  # may write 16,384
    assert refused.value.code == "rate_limit_exceeded" and "no output cap" in refused.value.message
    assert fakes["openai"].requests == []
    client = gateway.client(secret)
    for _ in range(3):  # capped at 300: 3 fit in 1,000, and each settles to its real, small count
        client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=300)
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=HELLO, max_tokens=300)
    assert int(raw.headers["x-ratelimit-remaining-tokens"]) > 1000 - 4 * 320


# --- a plain-HTTP upstream (a self-hosted server) ----------------------------------------------


def test_a_request_abandoned_on_a_plain_http_upstream_is_charged(fakes, tmp_path):
    """Sent over plain HTTP (no TLS handshake to wait for), then the client left: the provider
    finishes and bills it, so it is charged its worst case, not classed as never sent."""
    gateway = Gateway(tmp_path / "plain-gateway", {"api.openai.com": fakes["plain"].url}, None,
                      {"pouch_instance": f"plain-{free_port()}"}).start()
    try:
        gateway.open_store()
        key, secret = new_key(budget="1")
        client = gateway.client(secret)
        client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=40)  # the connection is up
        with pytest.raises(openai.APITimeoutError):
            client.chat.completions.create(
                model=MODEL, messages=HELLO, max_tokens=40, timeout=0.5, extra_headers={"x-fake-delay": "2"})
        answered, row = assert_settled_exactly(gateway, key, rows=2)
        assert len(fakes["plain"].requests) == 2 and answered.outcome == "ok"
        assert row.outcome == "abandoned" and row.cost_pico == row.reserved_pico > 0
    finally:
        gateway.stop()
