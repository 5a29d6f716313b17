"""The fake OpenAI's Responses API over WebSocket (tests/fakes/openai_websocket.py), driven
directly with the `websockets` library."""

import json
import ssl

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.fakes.openai_fake import FakeOpenAI


@pytest.fixture(scope="module")
def fake():
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def socket(fake):
    fake.reset()
    tls = ssl.create_default_context(cafile=str(fake.ca_path))
    url = fake.url.replace("https://", "wss://") + "/v1/responses"
    with connect(url, ssl=tls, proxy=None, additional_headers={"authorization": "Bearer sk-test"}) as ws:
        yield ws


def create(ws, **fields):
    ws.send(json.dumps({"type": "response.create", "model": "gpt-4o-mini", "input": "hello there", **fields}))


def until_end(ws) -> list[dict]:
    got = []
    while not got or got[-1]["type"] not in ("response.completed", "response.incomplete", "error"):
        got.append(json.loads(ws.recv(timeout=10)))
    return got


def test_a_create_is_answered_with_the_stream_events_and_usage(fake, socket):
    create(socket)
    got = until_end(socket)
    assert got[0]["type"] == "response.created" and got[-1]["type"] == "response.completed"
    assert "".join(e["delta"] for e in got if e["type"] == "response.output_text.delta") == "echo: hello there"
    assert got[-1]["response"]["usage"]["output_tokens"] == 4
    [handshake] = fake.requests
    assert (handshake.method, handshake.path, handshake.headers["authorization"]) == ("GET", "/v1/responses",
                                                                                       "Bearer sk-test")
    assert [m.body["type"] for m in fake.messages] == ["response.create"]


def test_creates_are_answered_in_order_on_their_lane(socket):
    create(socket, input="one", stream_id="a", max_output_tokens=2)
    create(socket, input="two", stream_id="b")
    first, second = until_end(socket), until_end(socket)
    assert {e["stream_id"] for e in first} == {"a"} and first[-1]["type"] == "response.incomplete"
    assert {e["stream_id"] for e in second} == {"b"} and second[-1]["type"] == "response.completed"


def test_controls_per_create_in_its_metadata(socket):
    create(socket, metadata={"x-fake-status": "429"})
    [error] = until_end(socket)
    assert (error["status"], error["error"]["code"]) == (429, "rate_limit_exceeded")
    create(socket, metadata={"x-fake-no-usage": "1", "x-fake-reply": "hi"})
    assert until_end(socket)[-1]["response"]["usage"] is None


def test_acknowledgements_are_silent_and_unknown_messages_are_errors(socket):
    socket.send(json.dumps({"type": "response.processed", "response_id": "resp_1"}))
    socket.send(json.dumps({"type": "response.steer", "input": "x"}))
    [error] = until_end(socket)
    assert error["status"] == 400 and "response.steer" in error["error"]["message"]


def test_abort_after_cuts_the_connection_mid_response(socket):
    create(socket, input="one two three four", metadata={"x-fake-abort-after": "2"})
    got = []
    with pytest.raises(ConnectionClosed):
        while True:
            got.append(json.loads(socket.recv(timeout=10)))
    assert [e["type"] for e in got].count("response.output_text.delta") == 2


def test_a_handshake_can_be_refused(fake):
    tls = ssl.create_default_context(cafile=str(fake.ca_path))
    url = fake.url.replace("https://", "wss://") + "/v1/responses"
    with pytest.raises(Exception, match="401"):
        connect(url, ssl=tls, proxy=None, additional_headers={"x-fake-status": "401"})
