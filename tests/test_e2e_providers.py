"""End to end for the other providers: real mitmdump, the vendors' own SDKs (anthropic,
google-genai, groq) through HTTPS_PROXY, fakes of each API on loopback. Budgets, errors and
model rules hold per provider exactly as for OpenAI."""

import asyncio
import threading
import time
import uuid

import anthropic
import httpx
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types
import groq

from pouch.domain.money import Money
from pouch.services import keys as key_service
from pouch.store import keys as key_store
from pouch.store import ledger
from pouch.store.database import ReservationRow, UsageRow
from tests.fakes.anthropic_fake import FakeAnthropic
from tests.fakes.gemini_fake import FakeGemini
from tests.fakes.openai_fake import FakeOpenAI
from tests.gateway import REAL_KEYS, Gateway

CLAUDE, GEMINI, LLAMA = "claude-sonnet-4-6", "gemini-2.5-flash", "openai/gpt-oss-20b"


@pytest.fixture(scope="module")
def fakes(tmp_path_factory):
    tls = tmp_path_factory.mktemp("tls")
    with FakeAnthropic(tls_dir=tls / "a") as claude, FakeGemini(tls_dir=tls / "g") as gemini, \
            FakeOpenAI(tls_dir=tls / "o") as groq_:
        fakes = {"anthropic": claude, "gemini": gemini, "groq": groq_}
        bundle = tls / "cas.pem"  # the gateway trusts each fake's own CA
        bundle.write_text("".join(open(fake.ca_path).read() for fake in fakes.values()))
        fakes["ca_bundle"] = bundle
        yield fakes


@pytest.fixture(scope="module")
def gateway(fakes, tmp_path_factory):
    routes = {"api.anthropic.com": fakes["anthropic"].url, "generativelanguage.googleapis.com": fakes["gemini"].url,
              "api.groq.com": fakes["groq"].url}
    gateway = Gateway(tmp_path_factory.mktemp("gateway"), routes, str(fakes["ca_bundle"])).start()
    yield gateway
    gateway.stop()


@pytest.fixture(autouse=True)
def fresh(fakes, gateway):
    for name in ("anthropic", "gemini", "groq"):
        fakes[name].reset()
    gateway.open_store()


def new_key(**options):
    return key_service.create(f"k{uuid.uuid4().hex[:10]}", **options)


def claude_client(gateway, secret, async_=False):
    if async_:
        return anthropic.AsyncAnthropic(api_key=secret, max_retries=0, http_client=anthropic.DefaultAsyncHttpxClient(
            proxy=gateway.proxy_url, verify=gateway.tls(), limits=__import__("httpx2").Limits(max_connections=200)))
    return anthropic.Anthropic(api_key=secret, max_retries=0, http_client=anthropic.DefaultHttpxClient(
        proxy=gateway.proxy_url, verify=gateway.tls()))


def gemini_client(gateway, secret):
    options = genai_types.HttpOptions(client_args={"proxy": gateway.proxy_url, "verify": gateway.tls()},
                                      async_client_args={"proxy": gateway.proxy_url, "verify": gateway.tls()})
    return genai.Client(api_key=secret, http_options=options)


def groq_client(gateway, secret):
    return groq.Groq(api_key=secret, max_retries=0,
                     http_client=httpx.Client(proxy=gateway.proxy_url, verify=gateway.tls()))


def rows_of(key):
    return list(UsageRow.select().where(UsageRow.key_name == key.name).order_by(UsageRow.id))


def spent(key):
    return ledger.window_totals(key_store.get(key.id), key_service.utcnow())


HI = [{"role": "user", "content": "hello claude"}]


def test_anthropic_json_stream_and_free_count_tokens(gateway, fakes):
    key, secret = new_key(budget="1")
    client = claude_client(gateway, secret)
    message = client.messages.create(model=CLAUDE, max_tokens=100, messages=HI)
    assert message.content[0].text == "echo: hello claude"
    with client.messages.stream(model=CLAUDE, max_tokens=100, messages=HI) as stream:
        final = stream.get_final_message()
    assert final.content[0].text == "echo: hello claude"
    assert client.messages.count_tokens(model=CLAUDE, messages=HI).input_tokens > 0
    sent = fakes["anthropic"].requests
    assert {r.headers.get("x-api-key") for r in sent} == {REAL_KEYS["ANTHROPIC_API_KEY"]}
    assert not any(secret in str(r.headers) for r in sent)
    gateway.settled(expected_rows=2)
    rows = rows_of(key)
    assert [(r.endpoint, r.streamed, r.outcome) for r in rows] == [("messages", False, "ok"), ("messages", True, "ok")]
    assert rows[0].input_tokens == message.usage.input_tokens and rows[0].output_tokens == message.usage.output_tokens
    assert spent(key)[0] == Money(rows[0].cost_pico + rows[1].cost_pico) and rows[0].cost_pico > 0


def test_anthropic_errors_raise_the_sdk_classes(gateway, fakes):
    _, secret = new_key(models="claude-*")
    with pytest.raises(anthropic.AuthenticationError):
        claude_client(gateway, "pouch-" + "y" * 43).messages.create(model=CLAUDE, max_tokens=10, messages=HI)
    with pytest.raises(anthropic.PermissionDeniedError):
        claude_client(gateway, secret).messages.create(model="gpt-4o", max_tokens=10, messages=HI)
    _, poor = new_key(budget="0.000001")
    with pytest.raises(anthropic.RateLimitError) as broke:
        claude_client(gateway, poor).messages.create(model=CLAUDE, max_tokens=1000, messages=HI)
    assert broke.value.response.headers["x-should-retry"] == "false" and "exhausted" in broke.value.message
    with pytest.raises(anthropic.InternalServerError):
        claude_client(gateway, secret).messages.create(model=CLAUDE, max_tokens=10, messages=HI,
                                                       extra_headers={"x-fake-status": "500"})
    assert len(fakes["anthropic"].requests) == 1, "only the upstream failure reached the provider"


def test_gemini_generate_stream_embed(gateway, fakes):
    key, secret = new_key(budget="1")
    client = gemini_client(gateway, secret)
    reply = client.models.generate_content(model=GEMINI, contents="hello gemini")
    assert reply.text == "echo: hello gemini"
    streamed = "".join(chunk.text or "" for chunk in client.models.generate_content_stream(
        model=GEMINI, contents="hello stream"))
    assert streamed == "echo: hello stream"
    embedded = client.models.embed_content(model="gemini-embedding-001", contents="embed me")
    assert embedded.embeddings and embedded.embeddings[0].values
    sent = fakes["gemini"].requests
    assert {r.headers.get("x-goog-api-key") for r in sent} == {REAL_KEYS["GEMINI_API_KEY"]}
    gateway.settled(expected_rows=3)
    rows = rows_of(key)
    assert [r.streamed for r in rows] == [False, True, False]
    assert all(r.cost_pico > 0 for r in rows[:2])
    assert rows[0].input_tokens == reply.usage_metadata.prompt_token_count


def test_gemini_key_in_the_query_and_errors(gateway, fakes):
    key, secret = new_key(budget="1", models="gemini-*")
    with httpx.Client(proxy=gateway.proxy_url, verify=gateway.tls()) as http:
        response = http.post(f"https://generativelanguage.googleapis.com/v1beta/models/{GEMINI}:generateContent",
                             params={"key": secret}, json={"contents": [{"parts": [{"text": "via query"}]}]})
        assert response.status_code == 200, response.text
        upstream = fakes["gemini"].requests[-1]
        assert "key=" not in upstream.path and secret not in upstream.path, "the pouch key left the URL"
        assert upstream.headers["x-goog-api-key"] == REAL_KEYS["GEMINI_API_KEY"]
        denied = http.post("https://generativelanguage.googleapis.com/v1beta/models/gpt-4o:generateContent",
                           headers={"x-goog-api-key": secret}, json={"contents": [{"parts": [{"text": "x"}]}]})
        assert denied.status_code == 403 and denied.json()["error"]["status"] == "PERMISSION_DENIED"
    stranger = gemini_client(gateway, "pouch-" + "z" * 43)  # kept: a collected genai client closes its HTTP client
    with pytest.raises(genai_errors.ClientError) as unknown:
        stranger.models.generate_content(model=GEMINI, contents="x")
    assert unknown.value.code == 401


def test_groq_through_its_sdk(gateway, fakes):
    key, secret = new_key(budget="1")
    reply = groq_client(gateway, secret).chat.completions.create(
        model=LLAMA, messages=[{"role": "user", "content": "hello groq"}])
    assert reply.choices[0].message.content == "echo: hello groq"
    assert fakes["groq"].requests[-1].headers["authorization"] == f"Bearer {REAL_KEYS['GROQ_API_KEY']}"
    gateway.settled(expected_rows=1)
    [row] = rows_of(key)
    assert (row.provider, row.model, row.outcome) == ("groq", LLAMA, "ok") and row.cost_pico > 0


def test_a_key_for_one_provider_cannot_spend_on_another(gateway, fakes):
    _, secret = new_key(budget="1", models="gemini-*")
    with pytest.raises(anthropic.PermissionDeniedError):
        claude_client(gateway, secret).messages.create(model=CLAUDE, max_tokens=10, messages=HI)
    with pytest.raises(groq.PermissionDeniedError):
        groq_client(gateway, secret).chat.completions.create(model=LLAMA, messages=HI)
    assert not fakes["anthropic"].requests and not fakes["groq"].requests


# --- the same burst as for OpenAI, per provider ---------------------------------------------


def worst_case(gateway, fake, send):
    """The reservation the gateway makes for ``send``'s request, read from the store while the
    request waits upstream."""
    key, secret = new_key()
    fake.behaviour["delay"] = 1.0
    thread = threading.Thread(target=send, args=(secret,))
    thread.start()
    deadline = time.monotonic() + 10
    amount = None
    while amount is None and time.monotonic() < deadline:
        amount = ReservationRow.select(ReservationRow.amount_pico).where(ReservationRow.key == key.id).scalar()
        time.sleep(0.02)
    thread.join()
    fake.reset()
    return Money(amount)


def test_anthropic_burst_of_60_on_a_budget_for_10(gateway, fakes):
    body = dict(model=CLAUDE, max_tokens=50, messages=HI)
    worst = worst_case(gateway, fakes["anthropic"], lambda s: claude_client(gateway, s).messages.create(**body))
    key, secret = new_key(budget=(worst * 10).json())
    fakes["anthropic"].behaviour.update(delay=3.0)

    async def main():
        client = claude_client(gateway, secret, async_=True)

        async def one():
            try:
                await client.messages.create(**body)
                return "ok"
            except anthropic.RateLimitError:
                return "refused"

        outcomes = await asyncio.gather(*(one() for _ in range(60)))
        await client.close()
        return outcomes

    outcomes = asyncio.run(main())
    assert outcomes.count("ok") == 10 and outcomes.count("refused") == 50
    gateway.settled(expected_rows=10)
    assert len(rows_of(key)) == 10
    total, held = spent(key)
    assert held == Money(0) and Money(0) < total <= worst * 10


def test_gemini_burst_of_60_on_a_budget_for_10(gateway, fakes):
    config = genai_types.GenerateContentConfig(max_output_tokens=50)

    def send(secret):
        client = gemini_client(gateway, secret)
        client.models.generate_content(model=GEMINI, contents="hello", config=config)

    worst = worst_case(gateway, fakes["gemini"], send)
    key, secret = new_key(budget=(worst * 10).json())
    fakes["gemini"].behaviour.update(delay=3.0)

    async def main():
        client = gemini_client(gateway, secret)

        async def one():
            try:
                await client.aio.models.generate_content(model=GEMINI, contents="hello", config=config)
                return "ok"
            except genai_errors.ClientError as e:
                assert e.code == 429
                return "refused"

        return await asyncio.gather(*(one() for _ in range(60)))

    outcomes = asyncio.run(main())
    assert outcomes.count("ok") == 10 and outcomes.count("refused") == 50
    gateway.settled(expected_rows=10)
    total, held = spent(key)
    assert held == Money(0) and Money(0) < total <= worst * 10


def test_rate_limits_hold_per_provider(gateway, fakes):
    _, secret = new_key(rpm=2)
    claude = claude_client(gateway, secret)
    for _ in range(2):
        claude.messages.create(model=CLAUDE, max_tokens=10, messages=HI)
    with pytest.raises(anthropic.RateLimitError) as limited:
        claude.messages.create(model=CLAUDE, max_tokens=10, messages=HI)
    assert int(limited.value.response.headers["retry-after"]) >= 1
    gemini = gemini_client(gateway, secret)  # the same key's limit spans providers
    with pytest.raises(genai_errors.ClientError) as also_limited:
        gemini.models.generate_content(model=GEMINI, contents="x")
    assert also_limited.value.code == 429
    assert len(fakes["anthropic"].requests) == 2 and not fakes["gemini"].requests
