"""Security, end to end: only LLM hosts are decrypted, secrets stay out of everything a
client, an operator or a provider can see, and key lookup goes by hash.

One gateway for the module, as verbose as mitmproxy gets (flow_detail=3, termlog debug) and
saving every flow; the log and the flow file are read once it has stopped.
"""

from __future__ import annotations

import ast
import hashlib
import json
import secrets
import socket
import sqlite3
import ssl
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

import httpx2
import openai
import pytest
from mitmproxy import io

import pouch.store.keys
from pouch.services import keys as key_service
from pouch.store import keys as key_store
from pouch.store.database import UsageRow
from tests import addon_helpers
from tests.fakes.openai_fake import FakeOpenAI
from tests.gateway import REAL_KEYS, REAL_OPENAI_KEY, ROOT, Gateway

MODEL = "gpt-4o-mini"
HELLO = [{"role": "user", "content": "hello there"}]
CHAT = "https://api.openai.com/v1/chat/completions"


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    with FakeOpenAI(tls_dir=tmp_path_factory.mktemp("fake-tls")) as fake:
        yield fake


@pytest.fixture(scope="module")
def gateway(fake, tmp_path_factory):
    home = tmp_path_factory.mktemp("gateway")
    gateway = Gateway(home, {"api.openai.com": fake.url}, str(fake.ca_path),
                      {"flow_detail": "3", "termlog_verbosity": "debug", "save_stream_file": str(home / "flows.mitm"),
                       "pouch_passthrough": "127.0.0.1"})  # the tunnel test's fake server is on loopback
    gateway.start()
    gateway.open_store()
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def sent():
    """Every credential a client sent in this module: none may show up anywhere."""
    return set(REAL_KEYS.values())


@pytest.fixture(scope="module")
def marks():
    """Texts tests leave for the checks made once the gateway has stopped."""
    return {}


def new_key(sent, **options):
    key, secret = key_service.create(f"k{uuid.uuid4().hex[:10]}", **options)
    sent.add(secret)
    return key, secret


def http(gateway) -> httpx2.Client:
    """A plain HTTPS client through the gateway's proxy: every header and byte visible."""
    return httpx2.Client(proxy=gateway.proxy_url, verify=gateway.tls(), timeout=30)


def connect_through(gateway, host: str, port: int) -> socket.socket:
    """A TCP tunnel through the gateway's proxy (what HTTPS_PROXY clients open)."""
    tunnel = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
    tunnel.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    reply = b""
    while b"\r\n\r\n" not in reply:
        reply += tunnel.recv(4096)
    assert reply.startswith(b"HTTP/1.1 200"), reply
    return tunnel


# --- only LLM hosts are decrypted --------------------------------------------------------


def test_a_non_llm_host_is_tunnelled_untouched(gateway, marks, tmp_path):
    """A TLS server with its own CA (not an LLM host): the client, trusting only that CA,
    completes the handshake through the proxy and sees the server's own certificate, so
    mitmproxy never held the keys to read the traffic; nothing of it is recorded."""
    gateway.open_store()
    rows = UsageRow.select().count()
    with FakeOpenAI(tls_dir=tmp_path / "other-tls", hosts=("example.test",)) as other:
        trusts_other = ssl.create_default_context(cafile=str(other.ca_path))
        marker = f"/v1/models?marker={uuid.uuid4().hex}"
        with trusts_other.wrap_socket(connect_through(gateway, "127.0.0.1", other.port),
                                      server_hostname="example.test") as tls:
            seen = tls.getpeercert(binary_form=True)
            tls.sendall(f"GET {marker} HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n".encode())
            answer = b""
            while data := tls.recv(65536):
                answer += data
        assert seen == ssl.PEM_cert_to_DER_cert(other.tls.cert.read_text()), "the server's own certificate"
        assert answer.startswith(b"HTTP/1.1 200") and b'"object": "list"' in answer
        assert [r.path for r in other.requests] == [marker]
    assert UsageRow.select().count() == rows
    # The log and the flow file must not know the path (checked once the gateway has stopped).
    marks["tunnel"], marks["tunnel_port"] = marker.split("=")[1], other.port


def test_an_llm_host_is_intercepted(gateway, fake):
    """The contrast: api.openai.com gets a certificate from mitmproxy's CA, which a client
    trusting only the provider's (here the fake's) CA refuses."""
    with gateway.tls().wrap_socket(connect_through(gateway, "api.openai.com", 443),
                                   server_hostname="api.openai.com") as tls:
        issuer = dict(pair[0] for pair in tls.getpeercert()["issuer"])
    assert "mitmproxy" in issuer["commonName"]
    trusts_provider = ssl.create_default_context(cafile=str(fake.ca_path))
    with pytest.raises(ssl.SSLCertVerificationError):
        trusts_provider.wrap_socket(connect_through(gateway, "api.openai.com", 443), server_hostname="api.openai.com")


# --- refusals: no secret in what the client gets back --------------------------------------


def refusal_cases(sent):
    """kind -> (status, error code, request kwargs for httpx2, credentials in it)."""
    unknown = "pouch-" + secrets.token_urlsafe(32)
    revoked_key, revoked = new_key(sent)
    key_store.revoke(revoked_key, key_service.utcnow())
    expired_key, expired = new_key(sent)
    key_store.update(expired_key, key_service.utcnow(), expires_at=key_service.utcnow() - timedelta(days=1))
    _, narrow = new_key(sent, models="gpt-4o*")
    _, poor = new_key(sent, budget="0.000001")
    _, limited = new_key(sent, rpm=1, mock=True)
    _, plain = new_key(sent)
    other = "sk-another-credential-" + uuid.uuid4().hex
    sent.update({unknown, other})

    def chat(secret, **body):
        return {"url": CHAT, "headers": {"authorization": f"Bearer {secret}"},
                "json": {"model": MODEL, "messages": HELLO, **body}}

    return {
        "unknown_key": (401, "invalid_api_key", chat(unknown), {unknown}),
        "revoked": (401, "invalid_api_key", chat(revoked), {revoked}),
        "expired": (401, "invalid_api_key", chat(expired), {expired}),
        "two_credentials": (401, "invalid_api_key",
                            {**chat(plain), "headers": {"authorization": f"Bearer {plain}", "x-api-key": other}},
                            {plain, other}),
        "model_not_allowed": (403, "model_not_allowed", chat(narrow, model="gpt-4.1"), {narrow}),
        "budget": (429, "insufficient_quota", chat(poor, max_tokens=1000), {poor}),
        "rate_limit": (429, "rate_limit_exceeded", chat(limited), {limited}),
        "unpriced": (400, "model_not_priced", chat(plain, model="gpt-4o-nonexistent"), {plain}),
        "bad_body": (400, "invalid_request_error",
                     {"url": CHAT, "headers": {"authorization": f"Bearer {plain}", "content-type": "application/json"},
                      "content": b"{not json"}, {plain}),
        "unknown_endpoint": (404, "unknown_endpoint",
                             {**chat(plain), "url": "https://api.openai.com/v1/no-such-thing"}, {plain}),
        "not_metered": (403, "endpoint_not_metered",
                        {"url": "https://api.openai.com/v1/images/generations",
                         "headers": {"authorization": f"Bearer {plain}"},
                         "json": {"model": "gpt-image-1", "prompt": "a cat"}}, {plain}),
    }


@pytest.fixture(scope="module")
def refusals(gateway, fake, sent):
    """Every kind of refusal pouch makes, each as the client received it."""
    fake.reset()
    cases = refusal_cases(sent)
    answers = {}
    with http(gateway) as client:
        rate_limited = cases["rate_limit"][2]
        assert client.post(**rate_limited).status_code == 200  # the mock answers: the minute's one request
        for kind, (_, _, request, credentials) in cases.items():
            answers[kind] = (client.post(**request), credentials)
    assert fake.requests == [], "refusals never go upstream"
    return {kind: (cases[kind][0], cases[kind][1], *answers[kind]) for kind in cases}


KINDS = ["unknown_key", "revoked", "expired", "two_credentials", "model_not_allowed", "budget", "rate_limit",
         "unpriced", "bad_body", "unknown_endpoint", "not_metered"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_refusal_shows_no_secret(refusals, kind):
    status, code, response, credentials = refusals[kind]
    assert (response.status_code, response.json()["error"]["code"]) == (status, code), response.text
    shown = response.text + "\n" + "\n".join(f"{n}: {v}" for n, v in response.headers.multi_items())
    for secret in (*credentials, REAL_OPENAI_KEY):
        assert secret not in shown, f"{secret[:12]} in the {kind} refusal"


# --- the provider gets the real key and never the pouch key -------------------------------


@pytest.mark.parametrize("how", ["authorization", "x-api-key", "api-key", "authorization+query", "reverse"])
def test_the_pouch_key_never_reaches_the_provider(gateway, fake, sent, how):
    _, secret = new_key(sent, budget="1")
    fake.reset()
    headers = {"authorization": f"Bearer {secret}"} if how.startswith("authorization") or how == "reverse" \
        else {how: secret}
    url = CHAT + (f"?key={secret}&api-key={secret}" if how == "authorization+query" else "")
    body = {"model": MODEL, "messages": HELLO}
    if how == "reverse":
        response = httpx2.post(f"http://127.0.0.1:{gateway.reverse_port}/v1/chat/completions", headers=headers,
                               json=body, timeout=30)
    else:
        with http(gateway) as client:
            response = client.post(url, headers=headers, json=body)
    assert response.status_code == 200, response.text
    [upstream] = fake.requests
    assert upstream.headers["authorization"] == f"Bearer {REAL_OPENAI_KEY}"
    assert "x-api-key" not in upstream.headers and "api-key" not in upstream.headers
    everything = upstream.path + json.dumps(upstream.headers) + json.dumps(upstream.body)
    assert secret not in everything and secret[12:] not in everything
    assert REAL_OPENAI_KEY not in response.text + json.dumps(dict(response.headers))


def test_a_pouch_key_only_in_the_query_is_not_a_credential(gateway, fake, marks):
    """OpenAI's SDKs never send a key in the URL, so pouch does not look for one there: the
    request is refused as keyless (and not forwarded with the key in its URL)."""
    _, secret = key_service.create(f"k{uuid.uuid4().hex[:10]}", budget="1")
    marks["query_only"] = secret  # not in ``sent``: see test_a_pouch_key_in_the_query_is_scrubbed
    fake.reset()
    with http(gateway) as client:
        response = client.post(f"{CHAT}?key={secret}", json={"model": MODEL, "messages": HELLO})
    assert response.status_code == 401 and secret not in response.text
    assert fake.requests == []


# --- store, log and saved flows -----------------------------------------------------------


def error_paths(gateway, fake, sent):
    """Flows that end in an error while the real key is in the request: the client gives up
    while the request is upstream; the provider answers 5xx; a stream aborts midway."""
    _, secret = new_key(sent, budget="1")
    client = gateway.client(secret)
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model=MODEL, messages=HELLO, timeout=0.5, extra_headers={"x-fake-delay": "1.5"})
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model=MODEL, messages=HELLO, extra_headers={"x-fake-status": "503"})
    with pytest.raises(openai.APIConnectionError):
        list(client.chat.completions.create(model=MODEL, messages=HELLO, stream=True,
                                            extra_headers={"x-fake-abort-after": "1"}))
    list(client.chat.completions.create(model=MODEL, messages=HELLO, stream=True))


@pytest.fixture(scope="module")
def stopped(gateway, fake, refusals, sent):
    """The gateway after error paths and a shutdown with a request in flight: its store,
    log and flow file, with every credential the module sent."""
    error_paths(gateway, fake, sent)
    gateway.settled()
    _, secret = new_key(sent, budget="1")
    fake.reset()
    failures = []

    def call():
        try:
            gateway.client(secret).chat.completions.create(model=MODEL, messages=HELLO,
                                                           extra_headers={"x-fake-delay": "3"})
        except openai.APIConnectionError as e:
            failures.append(e)

    in_flight = threading.Thread(target=call)
    in_flight.start()
    deadline = time.monotonic() + 10
    while not fake.requests and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fake.requests, "a request was upstream when the gateway stopped"
    gateway.stop()
    in_flight.join(10)
    assert failures, "the client saw the gateway go away"
    with open(gateway.home / "flows.mitm", "rb") as f:
        flows = list(io.FlowReader(f).stream())
    return gateway, flows, sorted(sent)


def leaked(text: str, credentials) -> list[str]:
    return [c[:12] + "..." for c in credentials if c in text]


def test_the_store_holds_no_secret(stopped):
    gateway, _, credentials = stopped
    with sqlite3.connect(gateway.home / "pouch.db") as db:
        rows = db.execute("SELECT * FROM pouch_usage").fetchall()
        dump = "\n".join(db.iterdump())
    assert len(rows) >= 4 and leaked(repr(rows), credentials) == []
    assert leaked(dump, credentials) == [], "keys are stored as hashes only"
    for path in gateway.home.glob("pouch.db*"):
        raw = path.read_bytes()
        assert [c for c in credentials if c.encode() in raw] == [], path.name


def test_the_debug_log_holds_no_secret(stopped, marks):
    gateway, _, credentials = stopped
    log = gateway.log_path.read_text(errors="replace")
    assert "Bearer <OPENAI_API_KEY for pouch-" in log, "flow_detail=3 printed request headers"
    assert "insufficient_quota" in log and "model_not_allowed" in log, "refusals were logged, bodies included"
    assert "Initializing UDP server" in log, "debug verbosity was on"
    assert leaked(log, credentials) == []
    assert f"server connect 127.0.0.1:{marks['tunnel_port']}" in log, "the tunnel went through this gateway"
    assert marks["tunnel"] not in log, "but its request was never decrypted"


def flow_text(flow) -> str:
    return repr(flow.get_state())


def finished(flows):
    return [f for f in flows if f.response is not None or f.error is not None]


def test_saved_flows_hold_no_secret_refusals_and_errors_included(stopped, marks):
    gateway, flows, credentials = stopped
    done = finished(flows)
    codes = {json.loads(f.response.content)["error"]["code"] for f in done
             if f.response is not None and f.response.status_code >= 400 and f.response.content.startswith(b"{")}
    assert {"invalid_api_key", "model_not_allowed", "insufficient_quota", "rate_limit_exceeded", "model_not_priced",
            "invalid_request_error", "unknown_endpoint", "endpoint_not_metered"} <= codes
    assert any(f.error is not None for f in done) and any(f.response and f.response.status_code == 503 for f in done)
    for flow in done:
        assert leaked(flow_text(flow), credentials) == [], flow.request.pretty_url
    assert not any(marks["tunnel"] in flow_text(f) for f in flows), "no flow for the tunnel"


def test_a_flow_in_flight_at_shutdown_is_saved_without_the_real_key(stopped):
    _, flows, credentials = stopped
    in_flight = [f for f in flows if f not in finished(flows)]
    assert in_flight, "the request upstream at shutdown was saved"
    for flow in in_flight:
        assert leaked(flow_text(flow), credentials) == [], flow.request.headers.get("authorization")


def test_a_pouch_key_in_the_query_is_scrubbed(stopped, marks):
    gateway, flows, _ = stopped
    secret = marks["query_only"]
    assert secret not in gateway.log_path.read_text(errors="replace")
    assert not any(secret in flow_text(f) for f in flows)


# --- key lookup is by hash ----------------------------------------------------------------


def test_key_lookup_goes_by_hash_only(monkeypatch):
    """Why this is the timing test. A lookup that compared the client's secret with stored
    ones character by character would answer sooner the fewer leading characters match, and
    a client could time its way to a key. pouch never holds secrets to compare against: the
    store has sha256(secret) in a unique index, and the gateway asks it (and its cache) for
    exactly that hash. A guess sharing a prefix with a real secret has an unrelated hash, so
    whatever time the index or dict lookup takes says nothing about the secret. Wall-clock
    statistics would be flaky (and the project asserts no timings), so this checks the
    structure instead: what the store is queried with, what the cache is keyed by, and that
    the key link compares no secret itself."""
    queried = []
    by_hash = pouch.store.keys.by_hash
    monkeypatch.setattr(pouch.store.keys, "by_hash", lambda h: queried.append(h) or by_hash(h))
    with addon_helpers.gateway() as gw:
        _, secret = addon_helpers.create_key("timing")
        near_miss = secret[:-1] + ("A" if secret[-1] != "A" else "B")
        for credential in (secret, near_miss, secret):
            gw.request(addon_helpers.openai_flow(body=addon_helpers.chat_body(), secret=credential), until=gw.keys)
        assert queried == [hashlib.sha256(s.encode()).hexdigest() for s in (secret, near_miss)], "then cached"
        cached = set(gw.keys.cache._entries)
        assert cached == set(queried) and secret not in cached and near_miss not in cached

    # The only other use of the raw secret, looks_like_pouch_key, checks its constant public
    # prefix ("pouch-"); no comparison in the key link or its cache involves a secret.
    compared = 0
    for source in (ROOT / "addons" / "keys.py", ROOT / "pouch" / "services" / "key_cache.py"):
        for node in ast.walk(ast.parse(Path(source).read_text())):
            if isinstance(node, ast.Compare):
                compared += 1
                operands = [ast.unparse(o) for o in (node.left, *node.comparators)]
                assert not any("secret" in o and "hash" not in o for o in operands), (source.name, operands)
    assert compared > 5
