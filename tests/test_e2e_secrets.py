"""No secret in saved flows or logs: not the real provider key, not a pouch key, not an
observed client's credential."""

import base64
import contextlib
import json
import threading
import time
import uuid

import httpx2
import openai
import pytest
import websockets.sync.client

from pouch.services import keys as key_service
from tests.fakes.openai_fake import FakeOpenAI
from tests.gateway import REAL_OPENAI_KEY, Gateway

HELLO = [{"role": "user", "content": "hello"}]


def test_saved_flows_and_logs_hold_no_secret(tmp_path):
    flows_file = tmp_path / "flows.mitm"
    with FakeOpenAI(tls_dir=tmp_path / "tls") as fake:
        gateway = Gateway(tmp_path / "gw", {"api.openai.com": fake.url}, str(fake.ca_path),
                          {"save_stream_file": str(flows_file), "pouch_unknown_keys": "observe",
                           "flow_detail": "3"}).start()
        try:
            gateway.open_store()
            _, secret = key_service.create("saver", budget="1")
            client = gateway.client(secret)
            client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
            list(client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, stream=True))
            with pytest.raises(openai.BadRequestError):
                client.chat.completions.create(model="no-such-model", messages=HELLO)
            foreign = "sk-foreign-" + uuid.uuid4().hex
            gateway.client(foreign).chat.completions.create(model="gpt-4o-mini", messages=HELLO)
            assert {r.headers["authorization"] for r in fake.requests} == {
                f"Bearer {REAL_OPENAI_KEY}", f"Bearer {foreign}"}, "upstream still gets the right credentials"
        finally:
            gateway.stop()
    saved = flows_file.read_bytes()
    assert b"/v1/chat/completions" in saved and saved.count(b"chat.completion") >= 2, "flows were saved"
    logs = gateway.log_path.read_bytes()
    assert b"/v1/chat/completions" in logs, "flow_detail=3 logged the flows, headers included"
    for text in (REAL_OPENAI_KEY, secret, foreign):
        assert text.encode() not in saved, f"{text[:12]} in saved flows"
        assert text.encode() not in logs, f"{text[:12]} in the log"
    assert secret[:12].encode() in saved, "a pouch key shows as its display prefix"


def basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


class Updates:
    """Every message mitmweb's web UI receives over its websocket (``/updates``), collected
    on a thread while the test sends requests."""

    def __init__(self, gateway: Gateway):
        self.socket = websockets.sync.client.connect(
            f"ws://127.0.0.1:{gateway.web_port}/updates", proxy=None, legacy=True,
            additional_headers={"Authorization": f"Bearer {gateway.web_password}"})
        self.messages: list[str] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        with contextlib.suppress(websockets.exceptions.ConnectionClosed):
            for message in self.socket:
                self.messages.append(message if isinstance(message, str) else message.decode())

    def wait_for(self, condition, what: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not condition([json.loads(m) for m in list(self.messages)]):
            assert time.monotonic() < deadline, f"mitmweb never sent {what}"
            time.sleep(0.05)

    def close(self) -> str:
        self.socket.close()
        self.thread.join(10)
        return "\n".join(self.messages)


def answered(path: str):
    """A condition on mitmweb's messages: the flow for ``path`` was shown with its response."""
    return lambda messages: any(
        m.get("type") == "flows/update" and m["payload"]["flow"]["request"]["path"] == path
        and "response" in m["payload"]["flow"] for m in messages)


def test_mitmweb_never_shows_a_secret_while_a_request_is_in_flight(tmp_path):
    """mitmweb broadcasts every flow after each hook; a flow waiting for its response, a
    flow just in, and a plain-HTTP proxied request (Proxy-Authorization) are all shown."""
    with FakeOpenAI(tls_dir=tmp_path / "tls") as fake:
        gateway = Gateway(tmp_path / "gw", {"api.openai.com": fake.url}, str(fake.ca_path), tool="mitmweb").start()
        updates = None
        try:
            gateway.open_store()
            _, secret = key_service.create("watched", budget="1")
            api = httpx2.Client(base_url=f"http://127.0.0.1:{gateway.web_port}",
                                headers={"authorization": f"Bearer {gateway.web_password}"})
            updates = Updates(gateway)
            proxied = httpx2.Client(proxy=f"http://watcher:{secret}@127.0.0.1:{gateway.port}",
                                    verify=gateway.tls(), timeout=30)
            client = openai.OpenAI(api_key=secret, http_client=proxied, max_retries=0)
            answers = []
            slow = threading.Thread(target=lambda: answers.append(client.chat.completions.create(
                model="gpt-4o-mini", messages=HELLO, extra_headers={"x-fake-delay": "2"})))
            slow.start()
            deadline = time.monotonic() + 20
            while not fake.requests:  # upstream has it; its response is 2 s away
                assert time.monotonic() < deadline and slow.is_alive(), "the request never reached the provider"
                time.sleep(0.02)
            in_flight = api.get("/flows").content + api.get("/flows/dump").content
            slow.join(30)
            assert answers[0].choices[0].message.content == "echo: hello"
            assert fake.requests[-1].headers["authorization"] == f"Bearer {REAL_OPENAI_KEY}", "upstream: the real key"

            plain = proxied.get("http://api.openai.com/v1/models", headers={"authorization": f"Bearer {secret}"})
            assert plain.status_code == 400 and "https_required" in plain.text, "refused: LLM hosts only over https"
            updates.wait_for(answered("/v1/chat/completions"), "the chat flow's response")
            updates.wait_for(answered("/v1/models"), "the plain request's refusal")
            after = api.get("/flows").content + api.get("/flows/dump").content
        finally:
            shown = updates.close() if updates else ""
            gateway.stop()
    assert "flows/add" in shown and "/v1/models" in shown, "mitmweb did show the flows"
    assert secret[:12] in shown, "a pouch key shows as its display prefix"
    for where, text in (("websocket", shown), ("REST API in flight", in_flight.decode("latin-1")),
                        ("REST API after", after.decode("latin-1"))):
        assert REAL_OPENAI_KEY not in text, f"the real provider key in mitmweb's {where}"
        assert secret not in text, f"the pouch key in mitmweb's {where}"
        assert basic("watcher", secret) not in text, f"the proxy password (Proxy-Authorization) in mitmweb's {where}"
        assert "proxy-authorization" not in text.lower(), f"a Proxy-Authorization header in mitmweb's {where}"


def test_proxy_credentials_are_not_kept_when_mitmproxy_answers_itself(tmp_path):
    """mitm.it (mitmproxy's certificate page) is answered before the chain sees the request:
    its Proxy-Authorization must not be saved or logged either."""
    flows_file = tmp_path / "flows.mitm"
    gateway = Gateway(tmp_path / "gw", {}, None, {"save_stream_file": str(flows_file), "flow_detail": "3"}).start()
    try:
        gateway.open_store()
        _, secret = key_service.create("onboarded")
        with httpx2.Client(proxy=f"http://pouch:{secret}@127.0.0.1:{gateway.port}", timeout=30) as client:
            page = client.get("http://mitm.it/")
    finally:
        gateway.stop()
    assert page.status_code == 200 and b"mitmproxy" in page.content, "mitmproxy's onboarding app answered"
    saved, logs = flows_file.read_bytes(), gateway.log_path.read_bytes()
    assert b"mitm.it" in saved and b"mitm.it" in logs, "the flow was saved and logged"
    for text in (secret, basic("pouch", secret)):
        assert text.encode() not in saved, "the proxy password in saved flows"
        assert text.encode() not in logs, "the proxy password in the log"
    assert b"proxy-authorization" not in saved.lower() and b"proxy-authorization" not in logs.lower()


def test_http2_clients_and_reused_connections_send_the_real_key_and_keep_none(tmp_path):
    """HTTP/2 from the client (several streams at once, each request a copy made HTTP/1 for the
    provider), then HTTP/1 requests one after another on one reused upstream connection."""
    flows_file = tmp_path / "flows.mitm"
    with FakeOpenAI(tls_dir=tmp_path / "tls") as fake:
        gateway = Gateway(tmp_path / "gw", {"api.openai.com": fake.url}, str(fake.ca_path),
                          {"save_stream_file": str(flows_file)}).start()
        try:
            gateway.open_store()
            _, secret = key_service.create("multiplexed", budget="1")
            h2 = httpx2.Client(proxy=gateway.proxy_url, verify=gateway.tls(), timeout=30, http2=True)
            client = openai.OpenAI(api_key=secret, http_client=h2, max_retries=0)
            threads = [threading.Thread(target=lambda: client.chat.completions.create(
                model="gpt-4o-mini", messages=HELLO, extra_headers={"x-fake-delay": "0.5"})) for _ in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
            reused = gateway.client(secret)
            for _ in range(3):
                reused.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
            gateway.settled(expected_rows=7)
        finally:
            gateway.stop()
    assert [r.headers["authorization"] for r in fake.requests] == [f"Bearer {REAL_OPENAI_KEY}"] * 7
    saved = flows_file.read_bytes()
    assert saved.count(b"chat.completion") >= 7 and b"HTTP/2.0" in saved, "the flows were saved"
    assert REAL_OPENAI_KEY.encode() not in saved and secret.encode() not in saved


def test_an_llm_request_mitmproxy_would_stream_is_not_sent(tmp_path):
    """A body larger than stream_large_bodies goes upstream as it arrives, before the chain's
    request hooks: unmetered, with the client's pouch key. pouch does not open its connection."""
    with FakeOpenAI(tls_dir=tmp_path / "tls") as fake:
        gateway = Gateway(tmp_path / "gw", {"api.openai.com": fake.url}, str(fake.ca_path),
                          {"stream_large_bodies": "1k"}).start()
        try:
            gateway.open_store()
            _, secret = key_service.create("large", budget="1")
            client = gateway.client(secret)
            with pytest.raises(openai.InternalServerError) as refused:
                client.chat.completions.create(model="gpt-4o-mini",
                                               messages=[{"role": "user", "content": "hi " * 1000}])
            small = client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
        finally:
            gateway.stop()
    assert refused.value.status_code == 502 and "stream_large_bodies" in str(refused.value.body or refused.value)
    assert small.choices[0].message.content == "echo: hello", "a body under the limit goes as always"
    assert len(fake.requests) == 1
