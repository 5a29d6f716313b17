"""The Responses API over WebSocket, end to end: a real mitmdump with the chain, a real WebSocket
client (the `websockets` library, as Codex CLI's tungstenite would speak it) through HTTPS_PROXY
and reverse mode, and the OpenAI fake's Responses WebSocket on loopback.

Each response is metered like POST /v1/responses: admitted before it is forwarded, one usage row
at its cost, refusals as the API's error event with the socket left usable, the cut-short rules
when the socket closes mid-response, and nothing of a mock key's socket reaches the provider.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import socket
import threading
import uuid

import openai
import pytest
import websockets.asyncio.client
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from pouch.domain.money import Money
from pouch.services import keys as key_service
from pouch.store import keys as key_store
from pouch.store import ledger
from pouch.store.database import ReservationRow, UsageRow
from tests import pinned_prices
from tests.fakes.openai_fake import FakeOpenAI
from tests.gateway import REAL_OPENAI_KEY, Gateway

MODEL = "gpt-4o-mini"
PRICE = pinned_prices.table().resolve(MODEL, "openai")
URL = "wss://api.openai.com/v1/responses"
ENDS = ("response.completed", "response.incomplete", "response.failed", "error")


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    with FakeOpenAI(tls_dir=tmp_path_factory.mktemp("tls")) as fake:
        yield fake


@pytest.fixture(scope="module")
def gateway(fake, tmp_path_factory):
    gateway = Gateway(tmp_path_factory.mktemp("gateway"), {"api.openai.com": fake.url}, str(fake.ca_path),
                      {"pouch_key_cache": "0"}).start()
    yield gateway
    gateway.stop()


@pytest.fixture(autouse=True)
def fresh(fake, gateway):
    fake.reset()
    gateway.open_store()


def new_key(**options):
    return key_service.create(f"ws{uuid.uuid4().hex[:10]}", **options)


def open_socket(gateway, secret: str, *, reverse: bool = True):
    """A Responses WebSocket through the gateway: reverse mode unless ``reverse=False`` (through
    HTTPS_PROXY). The websockets client can deadlock joining its reader thread after a handshake
    through an HTTP proxy (about once in 200-400 connections, reproduced with plain mitmdump), so
    only the tests that are about the proxy path take it; Codex takes it in the compatibility suite."""
    headers = {"Authorization": f"Bearer {secret}", "OpenAI-Beta": "responses_websockets=2026-02-06"}
    if reverse:
        return connect(f"ws://127.0.0.1:{gateway.reverse_port}/v1/responses", proxy=None, additional_headers=headers)
    return connect(URL, proxy=gateway.proxy_url, ssl=gateway.tls(), additional_headers=headers)


def create(ws, said: str = "hello there", **fields) -> None:
    ws.send(json.dumps({"type": "response.create", "model": MODEL, "input": said, **fields}))


def until_end(ws) -> list[dict]:
    events: list[dict] = []
    while not events or events[-1]["type"] not in ENDS:
        events.append(json.loads(ws.recv(timeout=20)))
    return events


def rows_of(key) -> list[UsageRow]:
    return list(UsageRow.select().where(UsageRow.key_name == key.name).order_by(UsageRow.id))


def totals(key) -> tuple[Money, Money]:
    """(spent, held) in the key's budget window."""
    return ledger.window_totals(key_store.get(key.id), key_service.utcnow())


def cost(usage: dict) -> int:
    return (PRICE.input * usage["input_tokens"] + PRICE.output * usage["output_tokens"]).pico


@pytest.mark.parametrize("reverse", [False, True], ids=["proxy", "reverse"])
def test_each_response_is_metered_at_its_cost_with_one_row(gateway, fake, reverse):
    key, secret = new_key(budget="5")
    with open_socket(gateway, secret, reverse=reverse) as ws:
        create(ws)
        first = until_end(ws)
        create(ws, "and once more, please", max_output_tokens=3)
        second = until_end(ws)
    assert first[-1]["type"] == "response.completed" and second[-1]["type"] == "response.incomplete"
    gateway.settled(expected_rows=2)
    rows = rows_of(key)
    assert [(r.endpoint, r.streamed, r.model, r.outcome, r.status) for r in rows] == [
        ("responses.websocket", True, MODEL, "ok", 200)] * 2
    for row, events in zip(rows, (first, second)):
        usage = events[-1]["response"]["usage"]
        assert (row.input_tokens, row.output_tokens) == (usage["input_tokens"], usage["output_tokens"])
        assert row.cost_pico == cost(usage) <= row.reserved_pico
        assert row.request_id == events[0]["response"]["id"]
    assert totals(key) == (Money(sum(r.cost_pico for r in rows)), Money(0))
    [handshake] = fake.requests
    assert handshake.method == "GET" and handshake.headers["authorization"] == f"Bearer {REAL_OPENAI_KEY}"
    assert handshake.headers["openai-beta"] == "responses_websockets=2026-02-06"
    assert [m.body["input"] for m in fake.messages] == ["hello there", "and once more, please"]


@pytest.mark.filterwarnings("ignore:connect\\(\\) must be used as a context manager:DeprecationWarning")  # the SDK's own
def test_the_openai_sdks_responses_websocket_gets_its_answer_and_its_refusal(gateway, fake):
    key, secret = new_key(budget="5", models="gpt-4o-mini")
    client = openai.OpenAI(api_key=secret, max_retries=0)
    through = {"proxy": gateway.proxy_url, "ssl": gateway.tls()}
    with client.beta.responses.connect(websocket_connection_options=through) as connection:
        connection.send({"type": "response.create", "model": MODEL, "input": "hello sdk"})
        answered = [event for event in until(connection)]
        connection.send({"type": "response.create", "model": "gpt-4o", "input": "hello sdk"})
        [refused] = until(connection)
    assert type(answered[-1]).__name__ == "BetaResponseWsCompleted"
    assert "".join(e.delta for e in answered if e.type == "response.output_text.delta") == "echo: hello sdk"
    assert type(refused).__name__ == "BetaResponseWsError"
    assert (refused.status, refused.error.code) == (403, "model_not_allowed")
    gateway.settled(expected_rows=1)
    [row] = rows_of(key)
    usage = answered[-1].response.usage
    assert (row.input_tokens, row.output_tokens) == (usage.input_tokens, usage.output_tokens)


def until(connection):
    for event in connection:
        yield event
        if event.type in ENDS:
            return


def test_refused_creates_get_the_error_event_and_the_socket_stays_usable(gateway, fake):
    key, secret = new_key(budget="5", models="gpt-4o-mini,no-such-model")
    with open_socket(gateway, secret) as ws:
        create(ws, model="gpt-4o")
        [refused] = until_end(ws)
        create(ws, model="no-such-model")
        [unpriced] = until_end(ws)
        ws.send(json.dumps({"type": "response.steer", "previous_response_id": "resp_1", "input": "faster"}))
        [steered] = until_end(ws)
        create(ws)
        answered = until_end(ws)
    assert (refused["status"], refused["error"]["code"]) == (403, "model_not_allowed")
    assert "may not use model 'gpt-4o'" in refused["error"]["message"]
    assert (unpriced["status"], unpriced["error"]["code"]) == (400, "model_not_priced")
    assert (steered["status"], steered["error"]["code"]) == (403, "endpoint_not_metered")
    assert answered[-1]["type"] == "response.completed"
    assert [m.body["model"] for m in fake.messages] == [MODEL], "nothing refused reached the provider"
    gateway.settled(expected_rows=1)
    assert len(rows_of(key)) == 1


def test_a_create_the_budget_cannot_cover_is_refused_before_it_leaves(gateway, fake):
    key, secret = new_key(budget="0.00001")  # $10 per 1M: a 50-token cap ($0.00003) does not fit
    with open_socket(gateway, secret) as ws:
        create(ws, max_output_tokens=50)
        [refused] = until_end(ws)
    assert (refused["status"], refused["error"]["type"], refused["error"]["code"]) == (
        429, "insufficient_quota", "insufficient_quota")
    assert refused["headers"]["x-should-retry"] == "false"
    assert "budget of key" in refused["error"]["message"]
    assert fake.messages == [] and totals(key) == (Money(0), Money(0))


def test_rate_limits_count_each_create_with_the_http_requests_of_the_key(gateway, fake):
    key, secret = new_key(rpm=3)
    with gateway.client(secret) as client:
        client.responses.create(model=MODEL, input="over HTTP", max_output_tokens=20)
    with open_socket(gateway, secret) as ws:  # the handshake is the key's second request this minute
        create(ws)
        assert until_end(ws)[-1]["type"] == "response.completed"
        create(ws)
        [limited] = until_end(ws)
    assert (limited["status"], limited["error"]["code"]) == (429, "rate_limit_exceeded")
    assert int(limited["headers"]["retry-after"]) >= 1
    assert len([m for m in fake.messages if m.body["type"] == "response.create"]) == 1


def test_a_burst_across_sockets_never_overspends_the_budget(gateway, fake):
    budget = Money.usd("0.0003")
    key, secret = new_key(budget=str(budget.as_usd))
    # every response bills exactly what was reserved for it: its whole 50-token cap
    create_fields = {"max_output_tokens": 50, "metadata": {"x-fake-usage": json.dumps({"output_tokens": 50})}}
    headers = {"Authorization": f"Bearer {secret}"}

    async def one_socket() -> tuple[int, int]:
        answered = refused = 0
        async with websockets.asyncio.client.connect(URL, proxy=gateway.proxy_url, ssl=gateway.tls(),
                                                     additional_headers=headers) as ws:
            for _ in range(4):
                await ws.send(json.dumps({"type": "response.create", "model": MODEL, "input": "hi", **create_fields}))
                while (event := json.loads(await asyncio.wait_for(ws.recv(), 20)))["type"] not in ENDS:
                    pass
                answered += event["type"] == "response.completed"
                refused += event["type"] == "error"
        return answered, refused

    async def burst():
        return await asyncio.gather(*(one_socket() for _ in range(8)))

    results = asyncio.run(burst())
    answered, refused = sum(a for a, _ in results), sum(r for _, r in results)
    assert answered + refused == 32 and answered >= 1 and refused >= 1
    gateway.settled(expected_rows=answered)
    rows = rows_of(key)
    assert len(rows) == answered, "every admitted response has exactly one usage row"
    spent, held = totals(key)
    assert held == Money(0) and spent == Money(sum(r.cost_pico for r in rows))
    assert spent <= budget, f"spent {spent} of a {budget} budget"
    assert all(r.cost_pico == r.reserved_pico for r in rows)
    assert len([m for m in fake.messages if m.body["type"] == "response.create"]) == answered


def test_a_socket_the_client_closes_mid_response_is_charged_by_the_cut_short_rules(gateway, fake):
    key, secret = new_key(budget="5")
    with open_socket(gateway, secret) as ws:
        create(ws, "one two three four five six seven eight", max_output_tokens=40,
               metadata={"x-fake-chunk-delay": "0.2"})
        while json.loads(ws.recv(timeout=20))["type"] != "response.output_text.delta":
            pass
    gateway.settled(expected_rows=1)
    [row] = rows_of(key)
    assert row.outcome == "cut_short" and row.endpoint == "responses.websocket"
    assert row.cost_pico == row.reserved_pico  # the provider may bill all it generates after the client left
    assert totals(key) == (Money(row.cost_pico), Money(0))


def test_a_provider_dying_mid_response_is_charged_by_the_cut_short_rules(gateway, fake):
    key, secret = new_key(budget="5")
    with open_socket(gateway, secret) as ws:
        create(ws, "one two three four five", max_output_tokens=40, metadata={"x-fake-abort-after": "2"})
        with pytest.raises(ConnectionClosed):
            until_end(ws)
    gateway.settled(expected_rows=1)
    [row] = rows_of(key)
    assert row.outcome == "cut_short" and row.cost_pico == row.reserved_pico


def test_a_create_the_provider_refuses_is_not_charged(gateway, fake):
    key, secret = new_key(budget="5")
    with open_socket(gateway, secret) as ws:
        create(ws, metadata={"x-fake-status": "400"})
        [error] = until_end(ws)
        create(ws)
        assert until_end(ws)[-1]["type"] == "response.completed"
    assert error["status"] == 400
    gateway.settled(expected_rows=2)
    first, second = rows_of(key)
    assert (first.outcome, first.cost_pico, first.status) == ("upstream_error", 0, 400)
    assert second.outcome == "ok" and totals(key) == (Money(second.cost_pico), Money(0))


def test_a_mock_key_socket_never_reaches_the_provider(gateway, fake):
    key, secret = new_key(budget="5", mock=True)
    with open_socket(gateway, secret) as ws:
        create(ws, "hello mock")
        events = until_end(ws)
        ws.send(json.dumps({"type": "response.processed", "response_id": events[0]["response"]["id"]}))
        create(ws, "twice", stream_id="lane-2")
        second = until_end(ws)
    assert events[-1]["type"] == "response.completed"
    assert "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta") == "hello mock"
    assert {e.get("stream_id") for e in second} == {"lane-2"}
    assert fake.requests == [] and fake.messages == [], "not even the handshake reached the provider"
    gateway.settled(expected_rows=2)
    rows = rows_of(key)
    assert all(r.mock and r.outcome == "mock" and r.endpoint == "responses.websocket" for r in rows)
    usage = events[-1]["response"]["usage"]
    assert rows[0].cost_pico == cost(usage) > 0, "recorded at what it would have cost"
    assert totals(key) == (Money(0), Money(0)), "and charged nothing"


def test_no_secret_reaches_the_client_the_flows_or_the_log(tmp_path):
    flows_file = tmp_path / "flows.mitm"
    with FakeOpenAI(tls_dir=tmp_path / "tls") as fake:
        gateway = Gateway(tmp_path / "gw", {"api.openai.com": fake.url}, str(fake.ca_path),
                          {"save_stream_file": str(flows_file), "flow_detail": "3"}).start()
        try:
            gateway.open_store()
            key, secret = new_key(budget="1")
            with open_socket(gateway, secret) as ws:
                handshake = ws.response
                create(ws)
                received = until_end(ws)
                create(ws, model="no-such-model")
                received += until_end(ws)
            gateway.settled(expected_rows=1)
            assert fake.requests[0].headers["authorization"] == f"Bearer {REAL_OPENAI_KEY}"
        finally:
            gateway.stop()
    seen_by_client = json.dumps(received) + json.dumps(dict(handshake.headers.raw_items()))
    saved, logs = flows_file.read_bytes(), gateway.log_path.read_bytes()
    assert b"response.completed" in saved and b"responses.websocket" in saved, "the socket was saved"
    assert b"pouch_websocket" in saved and b"WebSocket \xc2\xb7 1 response" in saved, "with its story"
    assert b"/v1/responses" in logs
    for text in (REAL_OPENAI_KEY, secret):
        assert text not in seen_by_client
        assert text.encode() not in saved, f"{text[:12]} in saved flows"
        assert text.encode() not in logs, f"{text[:12]} in the log"


def raw_handshake(port: int, secret: str, versions: list[str]) -> bytes:
    """A WebSocket handshake written by hand (no client library sends a malformed one), and the
    gateway's answer: its head and body, or all it sent before it closed the connection."""
    lines = ["GET /v1/responses HTTP/1.1", "Host: api.openai.com", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}", f"Authorization: Bearer {secret}",
             *(f"Sec-WebSocket-Version: {v}" for v in versions)]
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        sock.settimeout(10)
        got = b""
        try:
            while chunk := sock.recv(65536):
                got += chunk
                head, _, body = got.partition(b"\r\n\r\n")
                length = re.search(rb"(?im)^content-length: *(\d+)", head)
                if _ and len(body) >= (int(length[1]) if length else 0):
                    break
        except TimeoutError:
            pass
    return got


def test_a_handshake_mitmproxy_would_relay_as_raw_tcp_is_refused_before_it_leaves(gateway, fake):
    key, secret = new_key(budget="5")
    # mitmproxy reads two versions as "13, 13", not a WebSocket: the 101 would be relayed as raw TCP
    answer = raw_handshake(gateway.reverse_port, secret, ["13", "13"])
    assert answer.startswith(b"HTTP/1.1 400") and b"exactly one Sec-WebSocket-Version: 13" in answer
    assert fake.requests == []


class RawUpgrader(threading.Thread):
    """A server that answers any request with a 101 to raw TCP (``Upgrade: tcp``: mitmproxy relays
    what follows unseen), and keeps whatever reaches it after its 101."""

    def __init__(self):
        super().__init__(daemon=True)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.handshakes: list[bytes] = []
        self.after = b""

    def run(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                head = b""
                while b"\r\n\r\n" not in head and (chunk := conn.recv(4096)):
                    head += chunk
                self.handshakes.append(head)
                conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: tcp\r\nConnection: Upgrade\r\n\r\n")
                conn.settimeout(5)
                with contextlib.suppress(OSError):
                    while data := conn.recv(4096):
                        self.after += data


def test_a_101_the_server_makes_raw_tcp_is_killed_before_the_client_sees_it(tmp_path):
    upstream = RawUpgrader()
    upstream.start()
    gateway = Gateway(tmp_path / "gw", {"api.openai.com": f"http://127.0.0.1:{upstream.port}"}, None).start()
    try:
        gateway.open_store()
        key, secret = new_key(budget="5")
        answer = raw_handshake(gateway.reverse_port, secret, ["13"])
    finally:
        gateway.stop()
        upstream.listener.close()
    assert len(upstream.handshakes) == 1, "the handshake went upstream (the server decides to upgrade)"
    assert answer == b"", "the client never got the 101: the connection closed"
    assert upstream.after == b""
    assert "raw TCP" in gateway.log_path.read_text()


def test_a_key_made_mock_while_its_socket_is_open_is_closed_and_its_next_socket_answered_by_pouch(gateway, fake):
    key, secret = new_key(budget="5")
    with open_socket(gateway, secret, reverse=True) as ws:
        create(ws, "to the provider")
        assert until_end(ws)[-1]["type"] == "response.completed"
        key_store.update(key_store.get(key.id), key_service.utcnow(), mock=True)
        create(ws, "not to the provider")
        [closing] = until_end(ws)
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
    assert (closing["status"], closing["error"]["code"]) == (409, "reconnect_required")
    assert [m.body["input"] for m in fake.messages] == ["to the provider"]
    fake.reset()
    with open_socket(gateway, secret, reverse=True) as ws:
        create(ws, "to pouch")
        assert until_end(ws)[-1]["type"] == "response.completed"
    assert fake.requests == [] and fake.messages == []
    gateway.settled(expected_rows=2)
    assert [r.mock for r in rows_of(key)] == [False, True]
