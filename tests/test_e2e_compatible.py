"""Self-hosted OpenAI-compatible servers (``pouch_compatible``) end to end: real mitmdump, the
openai SDK through the proxy, plain-HTTP fakes on loopback as the servers.

A server named with its port (``local=127.0.0.1:PORT/v1``) is metered and answered, with the
gateway's credential for it. No other port of its host is reachable through it: a private
service there is refused and sees no connection. A server named without a port
(``corp=127.0.0.3/v1``) owns ports 80 and 443 only.
"""

from __future__ import annotations

import json
import socket
import socketserver
import threading
import uuid

import httpx2
import openai
import pytest

from pouch.domain.money import Money
from pouch.services import keys as key_service
from pouch.store import keys as key_store
from pouch.store import ledger
from pouch.store.database import UsageRow
from tests.fakes.openai_fake import FakeOpenAI
from tests import pinned_prices
from tests.gateway import Gateway

MODEL = "local-llama-3"
HELLO = [{"role": "user", "content": "hello there"}]
CORP_HOST = "127.0.0.3"  # named without a port: its ports 80 and 443
LOCAL_CREDENTIAL = "sk-local-server-key-0123456789"
PRIVATE_BODY = b'{"data": [{"id": "private-model-list"}]}'
# USD per 1M tokens: a pico-dollar cost of input * 1e6 + output * 2e6
PRICE = {"model": MODEL, "mode": "chat", "input": "1.00", "output": "2.00", "max_output_tokens": 4096,
         "source": "test", "as_of": "2026-01-01"}


class Private(socketserver.ThreadingTCPServer):
    """A private HTTP service on another port of a configured host: counts who connects and
    would answer anyone with its secret body."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host: str):
        self.connections = 0
        super().__init__((host, 0), PrivateHandler)
        self.host, self.port = host, self.server_address[1]
        threading.Thread(target=self.serve_forever, daemon=True).start()


class PrivateHandler(socketserver.BaseRequestHandler):
    def handle(self):
        self.server.connections += 1
        self.request.recv(65536)
        self.request.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n"
                             b"content-length: %d\r\n\r\n%s" % (len(PRIVATE_BODY), PRIVATE_BODY))


@pytest.fixture(scope="module")
def local():
    with FakeOpenAI(plain=True) as fake:
        yield fake


@pytest.fixture(scope="module")
def corp():
    """The port-less server's port 80 (binding it needs the privilege to)."""
    try:
        fake = FakeOpenAI(plain=True, host=CORP_HOST, port=80)
    except OSError as e:
        pytest.skip(f"cannot serve {CORP_HOST}:80 here: {e}")
    with fake:
        yield fake


@pytest.fixture(scope="module")
def private():
    """A private service on another port of each configured host."""
    services = {host: Private(host) for host in ("127.0.0.1", CORP_HOST)}
    yield services
    for service in services.values():
        service.shutdown()
        service.server_close()


@pytest.fixture(scope="module")
def gateway(local, tmp_path_factory):
    home = tmp_path_factory.mktemp("gateway")
    pinned_prices.write(home, [dict(PRICE, provider="local"), dict(PRICE, provider="corp")])
    gateway = Gateway(home, {}, None)  # default pouch_passthrough: no tunnel to loopback
    gateway.args += ["--set", f"pouch_compatible=local=127.0.0.1:{local.port}/v1,LOCAL_LLM_KEY",
                     "--set", f"pouch_compatible=corp={CORP_HOST}/v1"]
    gateway.env["LOCAL_LLM_KEY"] = LOCAL_CREDENTIAL
    gateway.start()
    yield gateway
    gateway.stop()


@pytest.fixture(autouse=True)
def fresh(local, gateway):
    local.reset()
    gateway.open_store()


def new_key(**options):
    return key_service.create(f"c{uuid.uuid4().hex[:10]}", **options)


def sdk(gateway, secret: str, base_url: str, proxy_secret: str | None = None) -> openai.OpenAI:
    """The openai SDK through the gateway as a proxy (a pouch key as proxy password if given)."""
    auth = f"any:{proxy_secret}@" if proxy_secret else ""
    http_client = httpx2.Client(proxy=f"http://{auth}127.0.0.1:{gateway.port}", verify=gateway.tls(), timeout=30)
    return openai.OpenAI(api_key=secret, base_url=base_url, http_client=http_client, max_retries=0)


def rows_of(key):
    return list(UsageRow.select().where(UsageRow.key_name == key.name).order_by(UsageRow.id))


def spent(key) -> tuple[Money, Money]:
    return ledger.window_totals(key_store.get(key.id), key_service.utcnow())


def cost_of(usage) -> int:
    return usage.prompt_tokens * 1_000_000 + usage.completion_tokens * 2_000_000


def connect(gateway, target: str) -> bytes:
    """CONNECT through the gateway: its status line (a port scan's probe)."""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as tunnel:
        tunnel.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        return tunnel.recv(4096).split(b"\r\n", 1)[0]


def test_a_server_named_with_its_port_is_metered_and_answered(gateway, local):
    key, secret = new_key(budget="1")
    client = sdk(gateway, secret, f"{local.url}/v1")
    reply = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=50)
    assert reply.choices[0].message.content == "echo: hello there"
    chunks = list(client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=50, stream=True,
                                                 stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: hello there"
    streamed_usage = chunks[-1].usage
    assert [r.path for r in local.requests] == ["/v1/chat/completions"] * 2
    for request in local.requests:  # the gateway's credential for this server, never the pouch key
        assert request.headers["authorization"] == f"Bearer {LOCAL_CREDENTIAL}"
        assert secret not in json.dumps(request.headers)
    gateway.settled(expected_rows=2)
    rows = rows_of(key)
    assert [(r.provider, r.model, r.status, r.streamed) for r in rows] == [
        ("local", MODEL, 200, False), ("local", MODEL, 200, True)]
    assert [r.cost_pico for r in rows] == [cost_of(reply.usage), cost_of(streamed_usage)]
    assert rows[0].cost_pico > 0 and spent(key) == (Money(sum(r.cost_pico for r in rows)), Money(0))


@pytest.mark.parametrize("proxy_auth", [False, True])
def test_another_port_of_its_host_is_not_reachable(gateway, local, private, proxy_auth):
    key, secret = new_key(budget="1")
    service = private["127.0.0.1"]
    client = sdk(gateway, secret, f"http://127.0.0.1:{service.port}/v1", secret if proxy_auth else None)
    for call in (client.models.list,
                 lambda: client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=50)):
        with pytest.raises(openai.PermissionDeniedError) as refused:
            call()
        assert b"private-model-list" not in refused.value.response.content
    assert connect(gateway, f"127.0.0.1:{service.port}").split(b" ")[1] == b"403"
    assert service.connections == 0, "the private service saw a connection"
    assert not local.requests
    gateway.settled()
    assert not rows_of(key) and spent(key) == (Money(0), Money(0))


def test_a_server_named_without_a_port_owns_80_and_443_only(gateway, private):
    key, secret = new_key(budget="1", mock=True)  # answered by the gateway: no server needed
    for base_url in (f"http://{CORP_HOST}/v1", f"https://{CORP_HOST}/v1"):
        reply = sdk(gateway, secret, base_url).chat.completions.create(model=MODEL, messages=HELLO)
        assert reply.choices[0].message.content == "hello there", base_url
    gateway.settled(expected_rows=2)
    assert [(r.provider, r.model, r.mock) for r in rows_of(key)] == [("corp", MODEL, True)] * 2

    service = private[CORP_HOST]
    client = sdk(gateway, secret, f"http://{CORP_HOST}:{service.port}/v1")
    for call in (client.models.list, lambda: client.chat.completions.create(model=MODEL, messages=HELLO)):
        with pytest.raises(openai.PermissionDeniedError):
            call()
    assert connect(gateway, f"{CORP_HOST}:{service.port}").split(b" ")[1] == b"403"
    assert service.connections == 0, "the private service saw a connection"
    assert len(rows_of(key)) == 2


def test_a_server_named_without_a_port_is_metered_on_port_80(gateway, corp):
    key, secret = new_key(budget="1")
    reply = sdk(gateway, secret, f"http://{CORP_HOST}/v1").chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=50)
    assert reply.choices[0].message.content == "echo: hello there"
    [request] = corp.requests
    assert "authorization" not in request.headers, "a server without ENV_VAR gets no credential"
    gateway.settled(expected_rows=1)
    [row] = rows_of(key)
    assert (row.provider, row.cost_pico) == ("corp", cost_of(reply.usage)) and row.cost_pico > 0
