"""The perimeter, end to end through real mitmdump: where it listens, who may tunnel what where,
LLM hosts only over https, credentials only to the hosts they belong to, and proxy
authentication with a pouch key (attribution with the openai SDK and curl).

Two gateways: one left to its defaults (loopback, authentication optional) and one told to
listen on every interface (authentication then required for anything but LLM requests).
"""

from __future__ import annotations

import base64
import http.server
import socket
import socketserver
import subprocess
import threading
import time
import uuid

import httpx2
import openai
import pytest

from pouch.services import keys as key_service
from pouch.store import keys as key_store
from pouch.store import ledger
from pouch.store.database import UsageRow
from tests.fakes.openai_fake import FakeOpenAI
from tests.gateway import REAL_KEYS, REAL_OPENAI_KEY, Gateway

MODEL = "gpt-4o-mini"
HELLO = [{"role": "user", "content": "hello there"}]
OWN_KEY = "sk-own-provider-key-of-the-client-0123456789abcdef"
AZURE_PATH = "/openai/v1/chat/completions"


class Echo(socketserver.ThreadingTCPServer):
    """A loopback TCP service standing in for something private: records who connected."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self):
        self.connections = 0
        super().__init__(("127.0.0.1", 0), EchoHandler)
        self.port = self.server_address[1]
        threading.Thread(target=self.serve_forever, daemon=True).start()


class EchoHandler(socketserver.BaseRequestHandler):
    def handle(self):
        self.server.connections += 1
        while data := self.request.recv(4096):
            self.request.sendall(data)


def outside_address() -> str | None:
    """An address of this machine that is not loopback (where another host would connect)."""
    out = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()
    return next((a for a in out if ":" not in a and not a.startswith("127.")), None)


def basic(secret: str, user: str = "pouch") -> str:
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


def connect(gateway, target: str, auth: str | None = None) -> tuple[bytes, socket.socket]:
    """CONNECT through the gateway: (status line and headers, the socket)."""
    tunnel = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
    head = f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n"
    if auth:
        head += f"Proxy-Authorization: {auth}\r\n"
    tunnel.sendall((head + "\r\n").encode())
    reply = b""
    while b"\r\n\r\n" not in reply or len(reply.partition(b"\r\n\r\n")[2]) < body_length(reply):
        chunk = tunnel.recv(4096)  # a refusal's body too
        if not chunk:
            break
        reply += chunk
    return reply, tunnel


def body_length(reply: bytes) -> int:
    for line in reply.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def status(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1])


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    with FakeOpenAI(tls_dir=tmp_path_factory.mktemp("fake-tls")) as fake:
        yield fake


@pytest.fixture(scope="module")
def echo():
    server = Echo()
    yield server
    server.shutdown()


def start(home, fake, **options) -> Gateway:
    routes = {"api.openai.com": fake.url, "good.openai.azure.com": fake.url}
    gateway = Gateway(home, routes, str(fake.ca_path), options)
    gateway.start()
    gateway.open_store()
    return gateway


@pytest.fixture(scope="module")
def local(fake, tmp_path_factory):
    """Defaults: loopback only, proxy authentication optional; `localhost` named as allowed."""
    gateway = start(tmp_path_factory.mktemp("local"), fake, pouch_passthrough="localhost")
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def exposed(fake, tmp_path_factory):
    """Listening on every interface: proxy authentication is required for tunnels."""
    gateway = start(tmp_path_factory.mktemp("exposed"), fake, listen_host="0.0.0.0", pouch_passthrough="localhost",
                    pouch_key_cache="0.2")
    yield gateway
    gateway.stop()


def new_key(gateway, **options):
    gateway.open_store()
    return key_service.create(f"p{uuid.uuid4().hex[:10]}", **options)


def spent(gateway, key) -> tuple:
    gateway.open_store()
    return ledger.window_totals(key_store.get(key.id), key_service.utcnow())


def proxied(gateway, api_key: str, proxy_secret: str | None = None, **kwargs) -> openai.OpenAI:
    """The openai SDK as a tool configured only by HTTPS_PROXY (credentials in its URL)."""
    auth = f"any:{proxy_secret}@" if proxy_secret else ""
    http_client = httpx2.Client(proxy=f"http://{auth}127.0.0.1:{gateway.port}", verify=gateway.tls(), timeout=30)
    return openai.OpenAI(api_key=api_key, http_client=http_client, max_retries=0, **kwargs)


# -- where it listens ----------------------------------------------------------------------


def test_by_default_the_gateway_listens_on_loopback_only(local):
    address = outside_address()
    if address is None:
        pytest.skip("this machine has no address but loopback")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((address, local.port), timeout=5)
    socket.create_connection(("127.0.0.1", local.port), timeout=5).close()


def test_listening_everywhere_is_explicit_and_turns_authentication_on(exposed, echo):
    address = outside_address()
    if address is not None:
        socket.create_connection((address, exposed.port), timeout=5).close()
    reply, _ = connect(exposed, f"localhost:{echo.port}")
    assert status(reply) == 407 and b"proxy-authenticate" in reply.lower()
    assert b"pouch key" in reply


# -- who may tunnel what where -------------------------------------------------------------


def test_an_authenticated_client_tunnels_to_an_allowed_host(exposed, echo):
    _, secret = new_key(exposed)
    reply, tunnel = connect(exposed, f"localhost:{echo.port}", basic(secret))
    assert status(reply) == 200, reply
    tunnel.sendall(b"ping")
    assert tunnel.recv(16) == b"ping"
    tunnel.close()


@pytest.mark.parametrize("user", ["pouch", ""])
def test_a_wrong_or_revoked_proxy_password_is_refused(exposed, echo, user):
    key, secret = new_key(exposed)
    for auth in (basic("pouch-not-a-key", user), basic(secret[:-2], user), "Bearer " + secret):
        reply, _ = connect(exposed, f"localhost:{echo.port}", auth)
        assert status(reply) == 407, (auth, reply)
    exposed.open_store()
    key_store.revoke(key, key_service.utcnow())
    reply, _ = connect(exposed, f"localhost:{echo.port}", basic(secret, user))
    assert status(reply) == 407 and b"revoked" in reply


@pytest.mark.parametrize("target", [
    "127.0.0.1:{echo}", "[::1]:{echo}", "[::ffff:127.0.0.1]:{echo}", "127.1:{echo}", "0.0.0.0:{echo}",
    "2130706433:{echo}", "10.0.0.1:80", "172.16.5.4:443", "192.168.1.1:22", "169.254.169.254:80",
    "[fd00::1]:80", "[fe80::1]:80", "100.64.0.1:80",
])
def test_no_relay_to_loopback_private_or_metadata_even_authenticated(exposed, local, echo, target):
    _, secret = new_key(exposed)
    before = echo.connections
    for gateway, auth in ((exposed, basic(secret)), (exposed, None), (local, None), (local, basic(secret))):
        reply, tunnel = connect(gateway, target.format(echo=echo.port), auth)
        assert status(reply) in (403, 407), (gateway is local, reply)
        tunnel.close()
    assert echo.connections == before


def test_a_hostname_that_resolves_to_loopback_is_not_a_way_around(exposed, echo):
    _, secret = new_key(exposed)
    # `localhost` is allowed by name on these gateways; `localhost.` and `ip6-localhost` are not
    for name in ("localhost.localdomain", "ip6-localhost"):
        reply, _ = connect(exposed, f"{name}:{echo.port}", basic(secret))
        assert status(reply) == 403, (name, reply)


def test_plain_http_relay_is_refused(exposed, local, echo):
    _, secret = new_key(exposed)
    before = echo.connections
    for url in (f"http://127.0.0.1:{echo.port}/", "http://169.254.169.254/latest/meta-data/"):
        with httpx2.Client(proxy=f"http://pouch:{secret}@127.0.0.1:{exposed.port}", timeout=10) as client:
            assert client.get(url).status_code == 403
        with httpx2.Client(proxy=f"http://127.0.0.1:{exposed.port}", timeout=10) as client:
            assert client.get(url).status_code == 407
        with httpx2.Client(proxy=f"http://127.0.0.1:{local.port}", timeout=10) as client:
            assert client.get(url).status_code == 403
    assert echo.connections == before


def test_a_loopback_client_tunnels_without_credentials_when_authentication_is_optional(local, echo):
    reply, tunnel = connect(local, f"localhost:{echo.port}")
    assert status(reply) == 200, reply
    tunnel.sendall(b"pong")
    assert tunnel.recv(16) == b"pong"


def test_llm_requests_need_no_proxy_credentials_they_carry_a_pouch_key(exposed, fake):
    key, secret = new_key(exposed, budget="1")
    reply = proxied(exposed, secret).chat.completions.create(model=MODEL, messages=HELLO)
    assert reply.choices[0].message.content.startswith("echo:")
    assert fake.requests[-1].headers["authorization"] == f"Bearer {REAL_OPENAI_KEY}"


# -- LLM hosts only over TLS, credentials only where they belong ---------------------------


def test_a_provider_over_plain_http_is_refused_before_anything(local, fake):
    _, secret = new_key(local, budget="1")
    seen = len(fake.requests)
    client = proxied(local, secret, base_url="http://api.openai.com/v1")
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=MODEL, messages=HELLO)
    assert refused.value.code == "https_required" and "https://api.openai.com" in refused.value.message
    assert len(fake.requests) == seen
    # another port of a provider's host (not routed here): its credential goes nowhere but 443
    with httpx2.Client(proxy=local.proxy_url, verify=local.tls(), timeout=10) as client:
        reply = client.post("https://api.anthropic.com:8443/v1/messages", headers={"x-api-key": secret},
                            json={"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": HELLO})
    assert reply.status_code == 400 and "only over https on port 443" in reply.json()["error"]["message"]


def test_an_azure_resource_the_operator_did_not_name_gets_no_credential(local, fake):
    _, secret = new_key(local, budget="1")
    seen = len(fake.requests)
    evil = proxied(local, secret, base_url="https://evil.openai.azure.com/openai/v1")
    with pytest.raises(openai.PermissionDeniedError) as refused:
        evil.chat.completions.create(model=MODEL, messages=HELLO)
    assert refused.value.code == "host_not_configured" and "evil.openai.azure.com" in refused.value.message
    assert len(fake.requests) == seen
    good = proxied(local, secret, base_url="https://good.openai.azure.com/openai/v1")
    good.chat.completions.create(model=MODEL, messages=HELLO)
    assert fake.requests[-1].headers["api-key"] == REAL_KEYS["AZURE_OPENAI_API_KEY"]
    assert fake.requests[-1].path.startswith(AZURE_PATH)


# -- proxy authentication attributes a connection to a key ---------------------------------


@pytest.mark.parametrize("api_key", ["unused", "sk-placeholder-for-the-proxy-key"])
def test_a_placeholder_credential_gets_the_real_key_and_the_proxy_key_pays(exposed, fake, api_key):
    key, secret = new_key(exposed, budget="1")
    proxied(exposed, api_key, secret).chat.completions.create(model=MODEL, messages=HELLO)
    sent = fake.requests[-1].headers
    assert sent["authorization"] == f"Bearer {REAL_OPENAI_KEY}" and "proxy-authorization" not in sent
    assert secret not in str(sent)
    exposed.settled()
    assert UsageRow.select().where(UsageRow.key == key.id).count() == 1
    assert spent(exposed, key)[0].pico > 0


def test_the_clients_own_credential_is_kept_and_charged_to_the_proxy_key(exposed, fake):
    key, secret = new_key(exposed, budget="1", models=MODEL)
    proxied(exposed, OWN_KEY, secret).chat.completions.create(model=MODEL, messages=HELLO)
    assert fake.requests[-1].headers["authorization"] == f"Bearer {OWN_KEY}"
    exposed.settled()
    assert UsageRow.select().where(UsageRow.key == key.id).count() == 1 and spent(exposed, key)[0].pico > 0
    with pytest.raises(openai.PermissionDeniedError):  # the key's allowlist applies all the same
        proxied(exposed, OWN_KEY, secret).chat.completions.create(model="gpt-4o", messages=HELLO)


def test_the_proxy_keys_budget_binds_a_client_with_its_own_credential(exposed, fake):
    _, secret = new_key(exposed, budget="0.000001")
    seen = len(fake.requests)
    with pytest.raises(openai.RateLimitError) as refused:
        proxied(exposed, OWN_KEY, secret).chat.completions.create(model=MODEL, messages=HELLO)
    assert refused.value.code == "insufficient_quota"
    assert len(fake.requests) == seen


def test_conflicting_pouch_keys_are_refused(exposed, fake):
    _, first = new_key(exposed, budget="1")
    _, second = new_key(exposed, budget="1")
    seen = len(fake.requests)
    with pytest.raises(openai.AuthenticationError) as refused:
        proxied(exposed, second, first).chat.completions.create(model=MODEL, messages=HELLO)
    assert "another pouch key" in refused.value.message
    proxied(exposed, first, first).chat.completions.create(model=MODEL, messages=HELLO)  # the same key: fine
    assert len(fake.requests) == seen + 1


def test_curl_with_only_proxy_credentials_is_served_and_charged(exposed, fake):
    key, secret = new_key(exposed, budget="1")
    body = '{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}'
    out = subprocess.run(
        ["curl", "-sS", "--max-time", "20", "--proxy", f"http://me:{secret}@127.0.0.1:{exposed.port}",
         "--cacert", str(exposed.ca_path), "-H", "Content-Type: application/json", "-d", body,
         "-w", "\n%{http_code}", "https://api.openai.com/v1/chat/completions"],
        capture_output=True, text=True, timeout=30)
    assert out.stdout.rstrip().endswith("200"), out
    assert fake.requests[-1].headers["authorization"] == f"Bearer {REAL_OPENAI_KEY}"
    exposed.settled()
    assert UsageRow.select().where(UsageRow.key == key.id).count() == 1


# -- what a client names must be where it goes ---------------------------------------------


def test_a_host_header_naming_another_host_is_refused(local, fake):
    _, secret = new_key(local, budget="1")
    seen = len(fake.requests)
    for http2 in (False, True):
        with httpx2.Client(proxy=local.proxy_url, verify=local.tls(), timeout=10, http2=http2) as client:
            reply = client.post("https://api.openai.com/v1/chat/completions", json={"model": MODEL, "messages": HELLO},
                                headers={"authorization": f"Bearer {secret}", "host": "evil.example"})
        assert reply.status_code == 400 and "names evil.example" in reply.json()["error"]["message"], reply.text
    assert len(fake.requests) == seen


def test_a_tls_server_name_naming_another_host_is_refused(local, fake):
    _, secret = new_key(local, budget="1")
    seen = len(fake.requests)
    out = subprocess.run(
        ["curl", "-sS", "--max-time", "20", "--proxy", local.proxy_url, "--cacert", str(local.ca_path),
         "--connect-to", "evil.example:443:api.openai.com:443", "-H", f"Authorization: Bearer {secret}",
         "-H", "Content-Type: application/json", "-d", '{"model": "gpt-4o-mini", "messages": []}',
         "https://evil.example/v1/chat/completions"], capture_output=True, text=True, timeout=30)
    assert "names evil.example" in out.stdout, out
    assert len(fake.requests) == seen


def test_a_trailing_dot_is_the_same_host(local, fake):
    _, secret = new_key(local, budget="1")
    client = proxied(local, secret, base_url="https://api.openai.com.:443/v1")
    client.chat.completions.create(model=MODEL, messages=HELLO)  # routed like api.openai.com
    assert fake.requests[-1].headers["authorization"] == f"Bearer {REAL_OPENAI_KEY}"
    with httpx2.Client(proxy=local.proxy_url, verify=local.tls(), timeout=10) as client:
        reply = client.post("https://api.anthropic.com.:8443/v1/messages", headers={"x-api-key": secret},
                            json={"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": HELLO})
    assert reply.status_code == 400 and "only over https on port 443" in reply.json()["error"]["message"]


# -- a revoked key loses what its proxy credential allowed ---------------------------------


class Hello(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.send_response(200)
        self.send_header("content-length", "5")
        self.end_headers()
        self.wfile.write(b"hello")

    def log_message(self, *args):
        pass


def test_a_revoked_key_loses_its_connection_at_once(exposed):
    key, secret = new_key(exposed)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://localhost:{server.server_address[1]}/"
    try:
        with socket.create_connection(("127.0.0.1", exposed.port), timeout=10) as conn:
            def get(auth: bool) -> bytes:
                head = f"GET {url} HTTP/1.1\r\nHost: localhost\r\n"
                conn.sendall((head + (f"Proxy-Authorization: {basic(secret)}\r\n" if auth else "") + "\r\n").encode())
                reply = b""
                while b"\r\n\r\n" not in reply or len(reply.partition(b"\r\n\r\n")[2]) < body_length(reply):
                    reply += conn.recv(4096)
                return reply
            assert get(auth=True).startswith(b"HTTP/1.1 200")
            assert get(auth=False).startswith(b"HTTP/1.1 200"), "the connection is the key's"
            exposed.open_store()
            key_store.revoke(key, key_service.utcnow())
            time.sleep(0.5)  # the gateway's key cache (pouch_key_cache=0.2)
            assert get(auth=False).startswith(b"HTTP/1.1 407")
    finally:
        server.shutdown()


# -- through the operator's upstream proxy -------------------------------------------------


class ConnectProxy(socketserver.ThreadingTCPServer):
    """An upstream proxy (a corporate one) on loopback: CONNECT only; records what it was asked."""

    daemon_threads = True

    def __init__(self):
        self.asked: list[str] = []
        super().__init__(("127.0.0.1", 0), ConnectHandler)
        self.port = self.server_address[1]
        threading.Thread(target=self.serve_forever, daemon=True).start()


class ConnectHandler(socketserver.StreamRequestHandler):
    def handle(self):
        line = self.rfile.readline().decode()
        while self.rfile.readline() not in (b"\r\n", b""):
            pass
        target = line.split()[1]
        self.server.asked.append(target)
        host, port = target.rsplit(":", 1)
        upstream = socket.create_connection((self.server.fake_host, self.server.fake_port), timeout=10)
        self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        self.wfile.flush()
        pipe = threading.Thread(target=copy, args=(upstream, self.connection), daemon=True)
        pipe.start()
        copy(self.connection, upstream)
        pipe.join(5)


def copy(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        try:
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def test_upstream_mode_through_a_proxy_on_loopback(fake, tmp_path):
    proxy = ConnectProxy()
    proxy.fake_host, proxy.fake_port = "127.0.0.1", fake.port  # every CONNECT ends at the fake
    home = tmp_path / "upstream"
    gateway = Gateway(home, {}, str(fake.ca_path), {"pouch_instance": "upstream-mode"})
    regular = gateway.args.index(f"regular@{gateway.port}")
    gateway.args[regular] = f"upstream:http://127.0.0.1:{proxy.port}@{gateway.port}"
    gateway.start()
    try:
        gateway.open_store()
        _, secret = new_key(gateway, budget="1")
        reply = proxied(gateway, secret).chat.completions.create(model=MODEL, messages=HELLO)
        assert reply.choices[0].message.content.startswith("echo:")
        assert proxy.asked == ["api.openai.com:443"]
        assert fake.requests[-1].headers["authorization"] == f"Bearer {REAL_OPENAI_KEY}"
    finally:
        gateway.stop()
        proxy.shutdown()
