"""The fake Anthropic upstream, driven directly by the real anthropic SDK: end-to-end tests of the
gateway can only be as trustworthy as the upstream they run against."""

import json
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import anthropic
import httpx2
import pytest

from pouch.tokens.count import count_prompt, count_text
from tests.fakes.anthropic_fake import FakeAnthropic

MODEL = "claude-sonnet-4-6"
HELLO = [{"role": "user", "content": "hello there world"}]
ASK = {"model": MODEL, "max_tokens": 100, "messages": HELLO}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with FakeAnthropic(tls_dir=tmp_path_factory.mktemp("tls")) as fake:
        yield fake


@pytest.fixture
def fake(server):
    server.reset()
    return server


@pytest.fixture(scope="module")
def client(server):
    http_client = anthropic.DefaultHttpxClient(verify=ssl.create_default_context(cafile=server.ca_path))
    yield anthropic.Anthropic(base_url=server.url, api_key="sk-ant-test", http_client=http_client, max_retries=0)
    http_client.close()


@pytest.fixture(scope="module")
def raw(server):
    """A plain HTTP client, for what the SDK would not send."""
    with httpx2.Client(base_url=server.url, verify=ssl.create_default_context(cafile=server.ca_path)) as http:
        yield http


def test_certificate_verifies_as_api_anthropic_com(server):
    context = ssl.create_default_context(cafile=server.ca_path)
    with socket.create_connection((server.host, server.port)) as plain:
        with context.wrap_socket(plain, server_hostname="api.anthropic.com") as tls:
            assert tls.version()


class TestMessages:
    def test_json_echoes_with_realistic_usage(self, fake, client):
        raw = client.messages.with_raw_response.create(**ASK)
        message = raw.parse()
        assert message.content[0].text == "echo: hello there world"
        assert (message.role, message.stop_reason, message.model) == ("assistant", "end_turn", MODEL)
        assert message.id.startswith("msg_")
        assert message.usage.input_tokens == count_prompt(MODEL, ASK, "anthropic_messages")
        assert message.usage.output_tokens == count_text(MODEL, "echo: hello there world")
        assert (message.usage.cache_read_input_tokens, message.usage.cache_creation_input_tokens) == (0, 0)
        assert message.usage.cache_creation.ephemeral_5m_input_tokens == 0
        assert raw.headers["request-id"].startswith("req_")
        assert raw.headers["content-type"] == "application/json"

    def test_stream_event_sequence(self, fake, client):
        events = list(client.messages.create(**ASK, stream=True))
        kinds = [event.type for event in events]  # the SDK drops the ping
        assert kinds[:2] == ["message_start", "content_block_start"]
        assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
        deltas = [event.delta.text for event in events if event.type == "content_block_delta"]
        assert deltas == ["echo:", " hello", " there", " world"]
        start, delta = events[0].message.usage, events[-2].usage
        assert start.input_tokens == count_prompt(MODEL, ASK, "anthropic_messages")
        assert start.output_tokens == 1
        assert delta.output_tokens == count_text(MODEL, "echo: hello there world")  # cumulative
        assert events[-2].delta.stop_reason == "end_turn"

    def test_stream_sends_ping_after_the_block_starts(self, fake, raw):
        response = raw.post("/v1/messages", json={**ASK, "stream": True},
                            headers={"x-api-key": "k", "anthropic-version": "2023-06-01"})
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        names = [line.removeprefix("event: ") for line in response.text.splitlines() if line.startswith("event: ")]
        assert names[:3] == ["message_start", "content_block_start", "ping"]

    def test_stream_helper_final_message(self, fake, client):
        with client.messages.stream(**ASK) as stream:
            assert "".join(stream.text_stream) == "echo: hello there world"
            message = stream.get_final_message()
        assert message.content[0].text == "echo: hello there world"
        assert message.usage.output_tokens == count_text(MODEL, "echo: hello there world")
        assert message.usage.input_tokens == count_prompt(MODEL, ASK, "anthropic_messages")

    def test_max_tokens_cuts_the_reply(self, fake, client):
        message = client.messages.create(**{**ASK, "max_tokens": 2})
        assert message.content[0].text == "echo:"
        assert message.stop_reason == "max_tokens"
        assert message.usage.output_tokens <= 2

    @pytest.mark.parametrize("stream", [False, True])
    def test_usage_override_fills_anthropic_fields(self, fake, client, stream):
        usage = {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 7,
                 "cache_creation": {"ephemeral_5m_input_tokens": 2, "ephemeral_1h_input_tokens": 3}}
        headers = {"x-fake-usage": json.dumps(usage)}
        if stream:
            with client.messages.stream(**ASK, extra_headers=headers) as answer:
                got = answer.get_final_message().usage
        else:
            got = client.messages.create(**ASK, extra_headers=headers).usage
        assert (got.input_tokens, got.output_tokens, got.cache_read_input_tokens) == (10, 5, 7)
        assert got.cache_creation_input_tokens == 5  # the sum of the TTL breakdown
        assert (got.cache_creation.ephemeral_5m_input_tokens, got.cache_creation.ephemeral_1h_input_tokens) == (2, 3)

    def test_bare_cache_write_is_a_five_minute_write(self, fake, client):
        headers = {"x-fake-usage": '{"cache_creation_input_tokens": 4}'}
        usage = client.messages.create(**ASK, extra_headers=headers).usage
        assert usage.cache_creation_input_tokens == usage.cache_creation.ephemeral_5m_input_tokens == 4

    def test_unknown_usage_field_is_a_400(self, fake, client):
        with pytest.raises(anthropic.BadRequestError, match="unknown usage fields"):
            client.messages.create(**ASK, extra_headers={"x-fake-usage": '{"prompt_tokens": 1}'})

    @pytest.mark.parametrize("stream", [False, True])
    def test_no_usage(self, fake, raw, stream):
        headers = {"x-api-key": "k", "anthropic-version": "2023-06-01", "x-fake-no-usage": "1"}
        response = raw.post("/v1/messages", json={**ASK, "stream": stream}, headers=headers)
        assert response.status_code == 200
        assert '"usage"' not in response.text

    def test_reply_and_chunks(self, fake, client):
        headers = {"x-fake-reply": "one two three four five", "x-fake-chunks": "2"}
        events = client.messages.create(**ASK, stream=True, extra_headers=headers)
        assert [e.delta.text for e in events if e.type == "content_block_delta"] == ["one two", " three four five"]

    def test_abort_mid_stream(self, fake, client):
        seen = []
        with pytest.raises(httpx2.RemoteProtocolError):  # this SDK lets the transport error through
            for event in client.messages.create(**ASK, stream=True, extra_headers={"x-fake-abort-after": "2"}):
                seen.append(event.type)
        assert seen == ["message_start", "content_block_start", "content_block_delta", "content_block_delta"]

    def test_delay_before_headers(self, fake, client):
        with pytest.raises(anthropic.APITimeoutError):
            client.messages.create(**ASK, extra_headers={"x-fake-delay": "0.5"}, timeout=0.1)


def test_count_tokens(fake, client):
    counted = client.messages.count_tokens(model=MODEL, messages=HELLO, system="be brief")
    assert counted.input_tokens == count_prompt(MODEL, {"messages": HELLO, "system": "be brief"}, "anthropic_messages")
    assert fake.requests[-1].path == "/v1/messages/count_tokens"


def test_models_list(fake, client):
    assert MODEL in [model.id for model in client.models.list()]


@pytest.mark.parametrize(
    "status, error, kind",
    [
        (400, anthropic.BadRequestError, "invalid_request_error"),
        (401, anthropic.AuthenticationError, "authentication_error"),
        (403, anthropic.PermissionDeniedError, "permission_error"),
        (404, anthropic.NotFoundError, "not_found_error"),
        (429, anthropic.RateLimitError, "rate_limit_error"),
        (500, anthropic.InternalServerError, "api_error"),
        (529, anthropic.OverloadedError, "overloaded_error"),
    ],
)
def test_status_raises_the_sdk_exception(fake, client, status, error, kind):
    with pytest.raises(error) as raised:
        client.messages.create(**ASK, extra_headers={"x-fake-status": str(status)})
    assert raised.value.status_code == status
    assert raised.value.type == kind
    assert raised.value.body["error"]["message"].startswith("fake: HTTP")
    assert raised.value.request_id == raised.value.body["request_id"]


@pytest.mark.parametrize(
    "headers, body, status, message",
    [
        ({"anthropic-version": "2023-06-01"}, ASK, 401, "x-api-key header is required"),
        ({"x-api-key": "k"}, ASK, 400, "anthropic-version: header is required"),
        ({"x-api-key": "k", "anthropic-version": "2023-06-01"}, {"model": MODEL, "messages": HELLO}, 400,
         "max_tokens: Field required"),
    ],
)
def test_refuses_what_anthropic_refuses(fake, raw, headers, body, status, message):
    response = raw.post("/v1/messages", json=body, headers=headers)
    assert response.status_code == status
    assert response.json()["error"]["message"] == message
    assert response.json()["type"] == "error"


def test_api_key_as_header_or_bearer(fake, client, raw):
    # This SDK sends its key as a bearer token; curl and older SDKs use x-api-key.
    client.messages.create(**ASK)
    assert fake.requests[-1].headers["authorization"] == "Bearer sk-ant-test"
    assert "anthropic-version" in fake.requests[-1].headers
    response = raw.post("/v1/messages", json=ASK, headers={"x-api-key": "k", "anthropic-version": "2023-06-01"})
    assert response.status_code == 200


def test_behaviour_applies_until_a_header_overrides_it(fake, client):
    fake.behaviour["reply"] = "set once"
    assert client.messages.create(**ASK).content[0].text == "set once"
    assert client.messages.create(**ASK, extra_headers={"x-fake-reply": "mine"}).content[0].text == "mine"


def test_runs_as_a_process(tmp_path):
    root = Path(__file__).parents[1]
    command = [sys.executable, "-m", "tests.fakes.anthropic_fake", "--print-url", "--tls-dir", str(tmp_path)]
    with subprocess.Popen(command, cwd=root, stdout=subprocess.PIPE, text=True) as process:
        try:
            url = process.stdout.readline().strip()
            assert process.stdout.readline().strip() == str(tmp_path / "ca.pem")
            with httpx2.Client(verify=ssl.create_default_context(cafile=tmp_path / "ca.pem")) as http:
                headers = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
                assert http.get(url + "/v1/models", headers=headers).json()["has_more"] is False
        finally:
            process.terminate()
