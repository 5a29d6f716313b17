"""A metered body two JSON parsers could read differently never reaches a provider, through a
real gateway: mitmdump with the chain, raw requests over its proxy (so every byte and header
is the test's), fakes of OpenAI and Anthropic behind it. A compressed body goes upstream as
the plain JSON pouch read, and is metered as any other."""

import gzip
import json
import uuid

import httpx2
import pytest

from pouch.services import keys as key_service
from pouch.store import ledger
from pouch.store.database import UsageRow
from tests.fakes.anthropic_fake import FakeAnthropic
from tests.fakes.openai_fake import FakeOpenAI
from tests.gateway import Gateway

URLS = {"openai": "https://api.openai.com/v1/chat/completions", "anthropic": "https://api.anthropic.com/v1/messages"}
MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-sonnet-4-6"}
HELLO = '"messages": [{"role": "user", "content": "hello there"}]'


@pytest.fixture(scope="module")
def fakes(tmp_path_factory):
    tls = tmp_path_factory.mktemp("tls")
    with FakeOpenAI(tls_dir=tls / "o") as openai_fake, FakeAnthropic(tls_dir=tls / "a") as anthropic_fake:
        bundle = tls / "cas.pem"  # the gateway trusts each fake's own CA
        bundle.write_text(openai_fake.ca_path.read_text() + anthropic_fake.ca_path.read_text())
        yield {"openai": openai_fake, "anthropic": anthropic_fake, "ca_bundle": bundle}


@pytest.fixture(scope="module")
def gateway(fakes, tmp_path_factory):
    routes = {"api.openai.com": fakes["openai"].url, "api.anthropic.com": fakes["anthropic"].url}
    gateway = Gateway(tmp_path_factory.mktemp("gateway"), routes, str(fakes["ca_bundle"])).start()
    gateway.open_store()
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def client(gateway):
    with httpx2.Client(proxy=gateway.proxy_url, verify=gateway.tls(), timeout=30) as client:
        yield client


def send(client, provider: str, secret: str, raw: bytes, **headers) -> httpx2.Response:
    headers = {"authorization": f"Bearer {secret}", "content-type": "application/json", **headers}
    return client.post(URLS[provider], content=raw, headers=headers)


def valid(provider: str, text: str = "hello there") -> bytes:
    return json.dumps({"model": MODELS[provider], "max_tokens": 20,
                       "messages": [{"role": "user", "content": text}]}).encode()


def refused(provider: str, kind: str) -> tuple[bytes, dict, str]:
    """(body, headers, what the message says) of a request pouch must refuse."""
    model = MODELS[provider]
    return {
        "duplicate": (f'{{"model": "{model}", "max_tokens": 20, "max_tokens": 900000, {HELLO}}}'.encode(), {},
                      "sets 'max_tokens' twice in one object"),
        "case": (f'{{"model": "{model}", "max_tokens": 20, "Max_Tokens": 900000, {HELLO}}}'.encode(), {},
                 "sets both 'max_tokens' and 'Max_Tokens' in one object"),
        "nan": (f'{{"model": "{model}", "max_tokens": 20, "temperature": NaN, {HELLO}}}'.encode(), {},
                "NaN is not a JSON number"),
        "utf16": (valid(provider).decode().encode("utf-16"), {}, "it is UTF-16 or UTF-32; send UTF-8"),
        "compress": (valid(provider), {"content-encoding": "compress"}, "Content-Encoding 'compress' is not supported"),
    }[kind]


def error_message(provider: str, response: httpx2.Response) -> str:
    """The refusal's message, checking it is in the provider's own shape."""
    assert response.status_code == 400, response.text
    body = response.json()
    if provider == "openai":
        assert body["error"]["type"] == "invalid_request_error" and body["error"]["code"] == "invalid_request_error"
    else:
        assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
        assert response.headers["request-id"] == body["request_id"]
    return body["error"]["message"]


def new_key():
    return key_service.create(f"k{uuid.uuid4().hex[:10]}", budget="10")


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize("kind", ["duplicate", "case", "nan", "utf16", "compress"])
def test_an_ambiguous_body_is_refused_in_the_providers_shape_and_never_sent(gateway, fakes, client, provider, kind):
    _, secret = new_key()
    raw, headers, message = refused(provider, kind)
    sent_before = len(fakes[provider].requests)
    response = send(client, provider, secret, raw, **headers)
    assert message in error_message(provider, response)
    gateway.settled()
    assert len(fakes[provider].requests) == sent_before, "nothing reached the provider"
    assert ledger.open_reservations() == 0
    response = send(client, provider, secret, valid(provider, "still there?"))
    assert response.status_code == 200 and "echo: still there?" in response.text, "the gateway keeps serving"


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_gzip_body_reaches_the_provider_as_plain_json_and_is_metered(gateway, fakes, client, provider):
    key, secret = new_key()
    raw = valid(provider, "compressed hello")
    response = send(client, provider, secret, gzip.compress(raw), **{"content-encoding": "gzip"})
    assert response.status_code == 200, response.text
    assert "echo: compressed hello" in response.text
    upstream = fakes[provider].requests[-1]
    assert "content-encoding" not in upstream.headers
    assert upstream.body == json.loads(raw) and upstream.headers["content-length"] == str(len(raw))
    gateway.settled()
    rows = list(UsageRow.select().where(UsageRow.key_name == key.name))
    assert len(rows) == 1 and rows[0].outcome == "ok" and rows[0].status == 200 and rows[0].cost_pico > 0
    usage = response.json()["usage"]
    if provider == "openai":
        assert (rows[0].input_tokens, rows[0].output_tokens) == (usage["prompt_tokens"], usage["completion_tokens"])
    else:
        assert (rows[0].input_tokens, rows[0].output_tokens) == (usage["input_tokens"], usage["output_tokens"])
    assert rows[0].input_tokens > 0 and rows[0].output_tokens > 0
