"""End to end: real mitmdump with the chain, the real openai SDK, a fake OpenAI on loopback."""

import asyncio
import uuid

import httpx2
import openai
import pytest

from pouch.domain.money import Money
from pouch.domain.usage import Usage
from pouch.pricing.price import cost
from pouch.services import keys as key_service
from pouch.store import keys as key_store
from pouch.store import ledger
from pouch.store.database import UsageRow
from pouch.tokens.count import count_prompt
from tests import pinned_prices
from tests.fakes.openai_fake import FakeOpenAI
from tests.gateway import REAL_OPENAI_KEY, Gateway

MODEL = "gpt-4o-mini"
PRICE = pinned_prices.table().resolve(MODEL)
HELLO = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    with FakeOpenAI(tls_dir=tmp_path_factory.mktemp("fake-tls")) as fake:
        yield fake


@pytest.fixture(scope="module")
def gateway(fake, tmp_path_factory):
    gateway = Gateway(tmp_path_factory.mktemp("gateway"), {"api.openai.com": fake.url}, str(fake.ca_path),
                      {"pouch_unknown_keys": "observe"}).start()
    yield gateway
    gateway.stop()


@pytest.fixture(autouse=True)
def fresh(fake, gateway):
    fake.reset()
    gateway.open_store()


def new_key(**options):
    key, secret = key_service.create(f"k{uuid.uuid4().hex[:10]}", **options)
    return key, secret


def rows_of(key):
    return list(UsageRow.select().where(UsageRow.key_name == key.name).order_by(UsageRow.id))


def spent(key):
    return ledger.window_totals(key_store.get(key.id), key_service.utcnow())


@pytest.mark.parametrize("reverse", [False, True], ids=["https_proxy", "reverse_base_url"])
def test_chat_json_and_stream_are_charged_exactly(gateway, fake, reverse):
    key, secret = new_key(budget="1")
    client = gateway.client(secret, reverse=reverse)
    reply = client.chat.completions.create(model=MODEL, messages=HELLO)
    assert reply.choices[0].message.content == "echo: hello there"
    chunks = list(client.chat.completions.create(model=MODEL, messages=HELLO, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: hello there"
    assert all(c.usage is None for c in chunks), "the usage chunk pouch asked for is not shown"

    assert fake.requests[-1].body["stream_options"] == {"include_usage": True}
    assert {r.headers["authorization"] for r in fake.requests} == {f"Bearer {REAL_OPENAI_KEY}"}

    gateway.settled(expected_rows=2)
    rows = rows_of(key)
    usage = Usage(input_tokens=reply.usage.prompt_tokens, output_tokens=reply.usage.completion_tokens)
    assert [(r.streamed, r.status, r.outcome) for r in rows] == [(False, 200, "ok"), (True, 200, "ok")]
    assert all(r.cost_pico == cost(PRICE, usage).pico for r in rows)
    assert spent(key) == (cost(PRICE, usage) * 2, Money(0))


def test_stream_usage_kept_when_the_client_asked(gateway):
    _, secret = new_key()
    chunks = list(gateway.client(secret).chat.completions.create(
        model=MODEL, messages=HELLO, stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens > 0


def test_async_sdk_json_and_stream(gateway):
    key, secret = new_key(budget="1")

    async def main():
        client = gateway.async_client(secret)
        reply = await client.chat.completions.create(model=MODEL, messages=HELLO)
        stream = await client.chat.completions.create(model=MODEL, messages=HELLO, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        await client.close()
        return reply.choices[0].message.content, text

    assert asyncio.run(main()) == ("echo: hello there", "echo: hello there")
    gateway.settled(expected_rows=2)
    assert len(rows_of(key)) == 2


def test_responses_completions_embeddings(gateway):
    key, secret = new_key(budget="1")
    client = gateway.client(secret)
    assert client.responses.create(model=MODEL, input="hi responses").output_text == "echo: hi responses"
    events = list(client.responses.create(model=MODEL, input="hi stream", stream=True))
    assert events[-1].type == "response.completed" and events[-1].response.usage.output_tokens > 0
    assert client.completions.create(model="gpt-4o-mini", prompt="say", max_tokens=5).choices[0].text
    vectors = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert len(vectors.data) == 2 and len(vectors.data[0].embedding) == 1536
    gateway.settled(expected_rows=4)
    assert [r.endpoint for r in rows_of(key)] == ["responses", "responses", "completions", "embeddings"]
    assert all(r.cost_pico > 0 and r.outcome == "ok" for r in rows_of(key))


def test_free_endpoint_passes_with_the_real_credential(gateway, fake):
    _, secret = new_key()
    assert gateway.client(secret).models.list().data
    assert fake.requests[-1].headers["authorization"] == f"Bearer {REAL_OPENAI_KEY}"


def error_of(call):
    with pytest.raises(openai.APIStatusError) as raised:
        call()
    return raised.value


def test_errors_raise_the_sdk_exception_classes(gateway, fake):
    _, secret = new_key(models="gpt-4o*")
    client = gateway.client(secret)
    chat = dict(model=MODEL, messages=HELLO)

    unknown = error_of(lambda: gateway.client("pouch-" + "x" * 43).chat.completions.create(**chat))
    assert isinstance(unknown, openai.AuthenticationError) and unknown.code == "invalid_api_key"

    revoked_key, revoked = new_key()
    key_store.revoke(revoked_key, key_service.utcnow())
    gone = error_of(lambda: gateway.client(revoked).chat.completions.create(**chat))
    assert isinstance(gone, openai.AuthenticationError) and "revoked" in gone.message

    denied = error_of(lambda: client.chat.completions.create(model="gpt-4.1", messages=HELLO))
    assert isinstance(denied, openai.PermissionDeniedError) and denied.code == "model_not_allowed"

    unpriced = error_of(lambda: client.chat.completions.create(model="gpt-4o-nonexistent", messages=HELLO))
    assert isinstance(unpriced, openai.BadRequestError) and unpriced.code == "model_not_priced"

    _, poor = new_key(budget="0.000001")
    broke = error_of(lambda: gateway.client(poor).chat.completions.create(max_tokens=1000, **chat))
    assert isinstance(broke, openai.RateLimitError) and broke.code == "insufficient_quota"
    assert broke.response.headers["x-should-retry"] == "false" and "exhausted" in broke.message

    assert not fake.requests, "refusals never go upstream"


def test_rate_limit_headers(gateway, fake):
    _, secret = new_key(rpm=2)
    client = gateway.client(secret)
    first = client.chat.completions.with_raw_response.create(model=MODEL, messages=HELLO)
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    client.chat.completions.create(model=MODEL, messages=HELLO)
    limited = error_of(lambda: client.chat.completions.create(model=MODEL, messages=HELLO))
    assert isinstance(limited, openai.RateLimitError) and limited.code == "rate_limit_exceeded"
    assert 1 <= int(limited.response.headers["retry-after"]) <= 60
    assert limited.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert len(fake.requests) == 2


def test_malformed_body_is_refused_and_not_forwarded(gateway, fake):
    _, secret = new_key()
    with httpx2.Client(base_url=f"http://127.0.0.1:{gateway.reverse_port}") as http:
        for body in (b"{not json", b"[1, 2]", b'{"model": 5, "messages": []}', b"\xff\xfe"):
            response = http.post("/v1/chat/completions", content=body,
                                 headers={"authorization": f"Bearer {secret}", "content-type": "application/json"})
            assert response.status_code == 400, body
            assert response.json()["error"]["code"] == "invalid_request_error"
    assert not fake.requests


def test_upstream_error_releases_the_reservation(gateway, fake):
    key, secret = new_key(budget="1")
    failed = error_of(lambda: gateway.client(secret).chat.completions.create(
        model=MODEL, messages=HELLO, extra_headers={"x-fake-status": "500"}))
    assert isinstance(failed, openai.InternalServerError)
    gateway.settled(expected_rows=1)
    assert [(r.status, r.cost_pico, r.outcome) for r in rows_of(key)] == [(500, 0, "upstream_error")]
    assert spent(key) == (Money(0), Money(0))


def test_upstream_abort_mid_stream_charges_the_reservation(gateway):
    key, secret = new_key(budget="1")
    stream = gateway.client(secret).chat.completions.create(
        model=MODEL, messages=HELLO, stream=True, extra_headers={"x-fake-abort-after": "2", "x-fake-reply": "one two three four five"})
    with pytest.raises(openai.APIConnectionError):
        list(stream)
    gateway.settled(expected_rows=1)
    [row] = rows_of(key)
    assert row.outcome == "cut_short" and row.input_tokens > 0 and 1 <= row.output_tokens < 6
    assert row.cost_pico == row.reserved_pico > 0 and spent(key)[0] == Money(row.cost_pico)


def test_mock_key_never_goes_upstream_and_is_not_charged(gateway, fake):
    key, secret = new_key(budget="1", mock=True)
    client = gateway.client(secret)
    assert client.chat.completions.create(model=MODEL, messages=HELLO).choices[0].message.content == "hello there"
    assert "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model=MODEL, messages=HELLO, stream=True) if c.choices) == "hello there"
    assert not fake.requests
    gateway.settled(expected_rows=2)
    assert all(r.mock and r.cost_pico > 0 for r in rows_of(key))
    assert spent(key) == (Money(0), Money(0))


def test_observe_mode_records_a_foreign_credential(gateway, fake):
    foreign = "sk-someone-elses-key-" + uuid.uuid4().hex
    gateway.open_store()
    rows = UsageRow.select().count()
    reply = gateway.client(foreign).chat.completions.create(model=MODEL, messages=HELLO)
    assert reply.choices[0].message.content == "echo: hello there"
    assert fake.requests[-1].headers["authorization"] == f"Bearer {foreign}", "observed traffic is untouched"
    gateway.settled(expected_rows=rows + 1)  # an observed request holds no reservation to wait for
    observed = list(UsageRow.select().where(UsageRow.observed == True))  # noqa: E712
    assert observed and observed[-1].key_name.startswith("observed:") and foreign not in observed[-1].key_name


def test_unmetered_endpoint_is_refused(gateway, fake):
    _, secret = new_key()
    refused = error_of(lambda: gateway.client(secret).images.generate(model="gpt-image-1", prompt="a cat"))
    assert isinstance(refused, openai.PermissionDeniedError) and refused.code == "endpoint_not_metered"
    assert not fake.requests


def test_output_is_capped_to_what_the_budget_covers(gateway, fake):
    input_tokens = count_prompt(MODEL, {"messages": HELLO}, "chat")
    budget = PRICE.input * input_tokens + PRICE.output * 100  # room for exactly 100 output tokens
    key, secret = new_key(budget=budget.json())
    raw = gateway.client(secret).chat.completions.with_raw_response.create(model=MODEL, messages=HELLO)
    assert raw.headers["x-pouch-output-capped"] == "100"
    assert fake.requests[-1].body["max_completion_tokens"] == 100
    gateway.settled(expected_rows=1)
    assert spent(key)[0] <= budget


# --- the money promise under concurrency -------------------------------------------------


def burst(gateway, secret, n, *, stream=False, hang_up=False, **extra):
    """n simultaneous requests with the async SDK; returns (admitted, refused-for-budget)."""

    async def one(client):
        try:
            if not stream:
                await client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=50, **extra)
                return "ok"
            events = await client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=50,
                                                          stream=True, **extra)
            async for chunk in events:
                if hang_up and chunk.choices and chunk.choices[0].delta.content:
                    await events.close()
                    break
            return "ok"
        except openai.RateLimitError as e:
            assert e.code == "insufficient_quota", e
            return "refused"

    async def main():
        client = gateway.async_client(secret)
        outcomes = await asyncio.gather(*(one(client) for _ in range(n)))
        await client.close()
        return outcomes

    outcomes = asyncio.run(main())
    return outcomes.count("ok"), outcomes.count("refused")


@pytest.mark.parametrize("mode", ["json", "stream", "hang_up"])
def test_burst_of_100_on_a_budget_for_10(gateway, fake, mode):
    input_tokens = count_prompt(MODEL, {"messages": HELLO}, "chat")
    worst = PRICE.input * input_tokens + PRICE.highest_output * 50
    key, secret = new_key(budget=(worst * 10).json())
    # A slow upstream (3 s, well above how long the burst takes to arrive on a busy 2-core machine):
    # all 100 are in flight together, so none is freed up before the others arrive.
    fake.behaviour.update(delay=3.0, chunk_delay=0.2, reply="one two three four five six")
    admitted, refused = burst(gateway, secret, 100, stream=mode != "json", hang_up=mode == "hang_up")
    assert admitted == 10 and refused == 90
    gateway.settled(expected_rows=10)
    rows = rows_of(key)
    assert len(rows) == 10 and len({r.reservation_id for r in rows}) == 10
    total, held = spent(key)
    assert held == Money(0) and Money(0) < total <= worst * 10
    assert sum(r.cost_pico for r in rows) == total.pico
    if mode == "hang_up":
        assert {r.outcome for r in rows} == {"cut_short"} and all(r.output_tokens >= 1 for r in rows)


def limited_burst(gateway, secret, n):
    """n simultaneous requests; returns (admitted, rate-limited)."""

    async def one(client):
        try:
            await client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=20)
            return "ok"
        except openai.RateLimitError as e:
            assert e.code == "rate_limit_exceeded" and "retry-after" in e.response.headers
            return "limited"

    async def main():
        client = gateway.async_client(secret)
        outcomes = await asyncio.gather(*(one(client) for _ in range(n)))
        await client.close()
        return outcomes

    outcomes = asyncio.run(main())
    return outcomes.count("ok"), outcomes.count("limited")


@pytest.mark.parametrize("limit", [{"rpm": 7}, {"max_concurrent": 3}, {"tpm": 400}])
def test_rate_limits_hold_under_a_burst(gateway, fake, limit):
    fake.behaviour.update(delay=2.0)  # all in flight together
    _, secret = new_key(**limit)
    admitted, limited = limited_burst(gateway, secret, 30)
    per_request = count_prompt(MODEL, {"messages": HELLO}, "chat") + 20
    expected = {"rpm": 7, "max_concurrent": 3, "tpm": 400 // per_request}[next(iter(limit))]
    assert (admitted, limited) == (expected, 30 - expected)
    assert len(fake.requests) == expected
