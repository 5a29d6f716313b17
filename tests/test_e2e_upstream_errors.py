"""An upstream pouch cannot reach, end to end: a real mitmdump with the chain, the vendors' own
SDKs (openai, anthropic, google-genai) through HTTPS_PROXY and reverse mode, routes to a
closed port, to an https fake whose CA the gateway does not trust, and to a host name that
does not resolve. The client gets a 502 in its provider's shape naming the cause (never
mitmproxy's HTML page), the reservation is released, tokens/min given back, nothing charged,
and the gateway goes on serving. At start-up the gateway's log already said which routes
would fail and why, and which providers have no credential.
"""

from __future__ import annotations

import time
import uuid

import anthropic
import httpx2
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
from tests.fakes.anthropic_fake import FakeAnthropic
from tests.fakes.openai_fake import FakeOpenAI
from tests.gateway import REAL_KEYS, Gateway, free_port

GPT, CLAUDE, GEMINI, MISTRAL, LLAMA = (
    "gpt-4o-mini", "claude-sonnet-4-6", "gemini-2.5-flash", "mistral-small-latest", "openai/gpt-oss-20b")
HELLO = [{"role": "user", "content": "hello there"}]
NOWHERE = "pouch-test-nowhere.invalid"  # .invalid never resolves (RFC 6761)
MISTRAL_KEY = "mistral-real-provider-key"


@pytest.fixture(scope="module")
def fakes(tmp_path_factory):
    tls = tmp_path_factory.mktemp("tls")
    with FakeAnthropic(tls_dir=tls / "untrusted") as untrusted, FakeOpenAI(tls_dir=tls / "trusted") as working:
        yield {"untrusted": untrusted, "working": working}


@pytest.fixture(scope="module")
def ports():
    return {"openai": free_port(), "gemini": free_port()}


@pytest.fixture(scope="module")
def gateway(fakes, ports, tmp_path_factory):
    routes = {
        "api.openai.com": f"https://127.0.0.1:{ports['openai']}",  # nothing listens there
        "generativelanguage.googleapis.com": f"https://127.0.0.1:{ports['gemini']}",  # nor there
        "api.anthropic.com": fakes["untrusted"].url,  # a CA the gateway was not given
        "api.mistral.ai": f"https://{NOWHERE}",
        "api.groq.com": fakes["working"].url,
    }
    gateway = Gateway(tmp_path_factory.mktemp("gateway"), routes, str(fakes["working"].ca_path))
    gateway.env["MISTRAL_API_KEY"] = MISTRAL_KEY
    gateway.env.pop("XAI_API_KEY", None)
    gateway.start()
    yield gateway
    gateway.stop()


@pytest.fixture(autouse=True)
def fresh(fakes, gateway):
    for fake in fakes.values():
        fake.reset()
    gateway.open_store()


def new_key(**options):
    return key_service.create(f"k{uuid.uuid4().hex[:10]}", **options)


def released(gateway, key, rows: int = 1) -> None:
    """Each request left a row that says it was never sent, charged nothing, and holds nothing."""
    gateway.settled(expected_rows=None)
    wait_until(lambda: UsageRow.select().where(UsageRow.key_name == key.name).count() >= rows, "the usage rows")
    found = list(UsageRow.select().where(UsageRow.key_name == key.name))
    assert [(r.status, r.outcome, r.cost_pico) for r in found] == [(502, "not_sent", 0)] * rows
    assert ReservationRow.select().where(ReservationRow.key == key.id).count() == 0
    assert ledger.window_totals(key_store.get(key.id), key_service.utcnow()) == (Money(0), Money(0))


def wait_until(condition, what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def not_an_html_page(response) -> None:
    assert response.status_code == 502 and "<html" not in response.text.lower()
    assert response.headers["content-type"].startswith("application/json")
    assert not any(secret in response.text for secret in (*REAL_KEYS.values(), MISTRAL_KEY))


def openai_client(gateway, secret, base_url=None):
    client = gateway.client(secret, max_retries=0)
    return client.with_options(base_url=base_url) if base_url else client


def claude_client(gateway, secret):
    return anthropic.Anthropic(api_key=secret, max_retries=0, http_client=anthropic.DefaultHttpxClient(
        proxy=gateway.proxy_url, verify=gateway.tls()))


def gemini_client(gateway, secret):
    return genai.Client(api_key=secret, http_options=genai_types.HttpOptions(
        client_args={"proxy": gateway.proxy_url, "verify": gateway.tls()}))


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("reverse", [False, True], ids=["https_proxy", "reverse_base_url"])
def test_connection_refused_is_an_openai_502_naming_it(gateway, ports, reverse, stream):
    key, secret = new_key(budget="1")
    with pytest.raises(openai.InternalServerError) as failed:
        gateway.client(secret, reverse=reverse, max_retries=0).chat.completions.create(
            model=GPT, messages=HELLO, stream=stream)
    error = failed.value
    not_an_html_page(error.response)
    assert error.code == "upstream_unreachable" and error.type == "server_error"
    assert f"openai upstream 127.0.0.1:{ports['openai']}: connection refused" in error.message
    assert "nothing was charged" in error.message
    released(gateway, key)


def test_over_http2_too(gateway, ports):
    """mitmproxy writes its error page per HTTP version; the provider's 502 replaces it on both."""
    key, secret = new_key(budget="1")
    with httpx2.Client(http2=True, proxy=gateway.proxy_url, verify=gateway.tls()) as client:
        response = client.post("https://api.openai.com/v1/chat/completions",
                               headers={"authorization": f"Bearer {secret}"}, json={"model": GPT, "messages": HELLO})
    assert response.http_version == "HTTP/2"
    not_an_html_page(response)
    assert "connection refused" in response.json()["error"]["message"]
    released(gateway, key)


def test_untrusted_tls_is_an_anthropic_502_saying_what_to_set(gateway, fakes):
    key, secret = new_key(budget="1")
    with pytest.raises(anthropic.InternalServerError) as failed:
        claude_client(gateway, secret).messages.create(model=CLAUDE, max_tokens=100, messages=HELLO)
    not_an_html_page(failed.value.response)
    error = failed.value.body["error"]
    assert error["type"] == "api_error"
    assert "TLS: the gateway does not trust its certificate" in error["message"]
    assert "--set ssl_verify_upstream_trusted_ca=" in error["message"]
    assert failed.value.response.headers["x-should-retry"] == "false", "retrying cannot help"
    assert fakes["untrusted"].requests == [], "verification stays on: nothing reached the untrusted server"
    released(gateway, key)


def test_unreachable_gemini_is_a_google_502(gateway, ports):
    key, secret = new_key(budget="1")
    client = gemini_client(gateway, secret)  # held: the SDK closes its HTTP client when this goes
    with pytest.raises(genai_errors.ServerError) as failed:
        client.models.generate_content(model=GEMINI, contents="hello there")
    assert failed.value.code == 502 and failed.value.status == "INTERNAL"
    assert f"gemini upstream 127.0.0.1:{ports['gemini']}: connection refused" in failed.value.message
    released(gateway, key)


def test_a_host_that_does_not_resolve_is_named(gateway):
    key, secret = new_key(budget="1")
    with pytest.raises(openai.InternalServerError) as failed:
        openai_client(gateway, secret, "https://api.mistral.ai/v1").chat.completions.create(
            model=MISTRAL, messages=HELLO)
    not_an_html_page(failed.value.response)
    assert f"mistral upstream {NOWHERE}:443: DNS:" in failed.value.message
    released(gateway, key)


def test_limits_are_given_back(gateway):
    """Tokens/min room for one request at a time and one request in flight: if a failed request
    kept either, the next would be refused 429 instead of reaching the upstream again."""
    key, secret = new_key(budget="1", tpm=80, max_concurrent=1)
    client = gateway.client(secret, reverse=True, max_retries=0)  # one client connection, kept alive
    for _ in range(3):
        with pytest.raises(openai.InternalServerError) as failed:
            client.chat.completions.create(model=GPT, messages=HELLO, max_tokens=50)
        assert failed.value.code == "upstream_unreachable"
    released(gateway, key, rows=3)


def test_the_gateway_keeps_serving(gateway, fakes):
    key, secret = new_key(budget="1")
    with pytest.raises(openai.InternalServerError):
        gateway.client(secret, max_retries=0).chat.completions.create(model=GPT, messages=HELLO)
    reply = openai_client(gateway, secret, "https://api.groq.com/openai/v1").chat.completions.create(
        model=LLAMA, messages=HELLO)
    assert reply.choices[0].message.content == "echo: hello there" and len(fakes["working"].requests) == 1
    gateway.settled(expected_rows=None)
    wait_until(lambda: UsageRow.select().where(UsageRow.key_name == key.name).count() == 2, "both rows")
    rows = UsageRow.select().where(UsageRow.key_name == key.name).order_by(UsageRow.id)
    assert [(r.provider, r.outcome, r.cost_pico > 0) for r in rows] == [("openai", "not_sent", False),
                                                                         ("groq", "ok", True)]


# --- what the log said at start-up ----------------------------------------------------------


def logged(gateway, text: str) -> str:
    """The first log line holding ``text`` (waited for: the route checks run in the background)."""
    def line():
        return next((l for l in gateway.log_path.read_text(errors="replace").splitlines() if text in l), None)
    wait_until(lambda: line() is not None, f"{text!r} in the gateway's log")
    return line()


def test_start_up_names_providers_without_a_credential(gateway):
    assert "requests with pouch keys to xai will fail until XAI_API_KEY is set" in logged(gateway, "to xai")
    have = logged(gateway, "upstream credentials set for")
    assert all(name in have for name in ("openai", "anthropic", "gemini", "mistral")) and "xai" not in have
    log = gateway.log_path.read_text(errors="replace")
    assert not [v for v in (*REAL_KEYS.values(), MISTRAL_KEY) if v in log], "never a secret"


def test_start_up_checks_each_routes_tls(gateway, fakes, ports):
    anthropic_route = logged(gateway, f"pouch_route api.anthropic.com={fakes['untrusted'].url}:")
    assert "does not trust its TLS certificate" in anthropic_route
    assert "add that CA to them" in anthropic_route and str(fakes["working"].ca_path) in anthropic_route
    assert "requests to api.anthropic.com get a 502" in anthropic_route
    assert "TLS verified" in logged(gateway, f"pouch_route api.groq.com={fakes['working'].url}:")
    assert "refuses connections" in logged(gateway, f"pouch_route api.openai.com=https://127.0.0.1:{ports['openai']}:")
    assert "does not resolve" in logged(gateway, f"pouch_route api.mistral.ai=https://{NOWHERE}:443:")


def test_start_up_says_what_to_set_when_no_upstream_ca_is_given(fakes, tmp_path):
    gateway = Gateway(tmp_path / "gw", {"api.anthropic.com": fakes["untrusted"].url}, None)
    try:
        gateway.start()
        line = logged(gateway, "pouch_route api.anthropic.com=")
        assert "does not trust its TLS certificate" in line
        assert "start the gateway with --set ssl_verify_upstream_trusted_ca=/path/ca.pem" in line
    finally:
        gateway.stop()
