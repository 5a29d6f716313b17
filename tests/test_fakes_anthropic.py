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


SEARCH = {"type": "web_search_20250305", "name": "web_search"}
FETCH = {"type": "web_fetch_20250910", "name": "web_fetch"}
CLIENT_TOOL = {"name": "lookup", "description": "look it up", "input_schema": {"type": "object"}}
RAW_HEADERS = {"x-api-key": "k", "anthropic-version": "2023-06-01"}


def tool_calls(**controls) -> dict:
    return {"extra_headers": {f"x-fake-{name.replace('_', '-')}": str(value) for name, value in controls.items()}}


def prompt_of(fake) -> int:
    """The input the request itself bills, before any tool round: as the fake counts it."""
    return count_prompt(MODEL, fake.requests[-1].body, "anthropic_messages")


def sse_events(text: str) -> list[dict]:
    return [json.loads(line.removeprefix("data: ")) for line in text.splitlines() if line.startswith("data: ")]


def without_ids(block) -> dict:
    """A content block as a dict, without what is made up afresh for every answer."""
    fields = block.to_dict()
    fields.pop("id", None), fields.pop("tool_use_id", None)
    for result in fields.get("content") if isinstance(fields.get("content"), list) else ():
        result.pop("encrypted_content")
    return fields


class TestServerTools:
    """Server tools run as Anthropic runs them: a server_tool_use block and its result per call
    before the text, counted in usage.server_tool_use, each call's results billed as input."""

    @pytest.mark.parametrize("tool, result, counted", [
        (SEARCH, "WebSearchToolResultBlock", "web_search_requests"),
        (FETCH, "WebFetchToolResultBlock", "web_fetch_requests"),
    ])
    def test_calls_are_blocks_before_the_text(self, fake, client, tool, result, counted):
        message = client.messages.create(**ASK, tools=[tool], **tool_calls(tool_calls=2))
        kinds = [type(block).__name__ for block in message.content]
        assert kinds == ["ServerToolUseBlock", result, "ServerToolUseBlock", result, "TextBlock"]
        uses, results = message.content[0:4:2], message.content[1:4:2]
        assert [r.tool_use_id for r in results] == [use.id for use in uses]
        assert all(use.id.startswith("srvtoolu_") and use.name == tool["name"] for use in uses)
        if tool is SEARCH:
            assert [use.input for use in uses] == [{"query": "fake query 1"}, {"query": "fake query 2"}]
            assert [r.content[0].url for r in results] == ["https://example.com/1", "https://example.com/2"]
            assert results[1].content[0].title == "Result 2" and results[1].content[0].encrypted_content
        else:
            assert [use.input for use in uses] == [{"url": "https://example.com/1"}, {"url": "https://example.com/2"}]
            assert results[0].content.url == "https://example.com/1"
            assert results[0].content.content.source.data == "fetched"
        assert message.content[-1].text == "echo: hello there world"
        assert message.usage.input_tokens == prompt_of(fake) + 2 * 1000
        other = ({"web_search_requests", "web_fetch_requests"} - {counted}).pop()
        assert getattr(message.usage.server_tool_use, counted) == 2
        assert getattr(message.usage.server_tool_use, other) == 0

    @pytest.mark.parametrize("controls, performed", [
        ({"tool_calls": 5}, 2),
        ({"tool_calls": 1}, 1),
        ({"tool_calls": 5, "ignore_bounds": "true"}, 5),  # a provider that overruns max_uses
    ])
    def test_max_uses_bounds_the_calls(self, fake, client, controls, performed):
        message = client.messages.create(**ASK, tools=[{**SEARCH, "max_uses": 2}], **tool_calls(**controls))
        assert [block.type for block in message.content].count("server_tool_use") == performed
        assert message.usage.server_tool_use.web_search_requests == performed
        assert message.usage.input_tokens == prompt_of(fake) + performed * 1000

    def test_first_server_tool_is_the_one_called(self, fake, client):
        message = client.messages.create(**ASK, tools=[CLIENT_TOOL, FETCH, SEARCH], **tool_calls(tool_calls=1))
        assert [block.type for block in message.content] == ["server_tool_use", "web_fetch_tool_result", "text"]

    @pytest.mark.parametrize("tools", [[], [CLIENT_TOOL]])
    def test_no_server_tool_no_calls(self, fake, client, tools):
        message = client.messages.create(**ASK, tools=tools, **tool_calls(tool_calls=3))
        assert [block.type for block in message.content] == ["text"]
        assert message.usage.server_tool_use is None
        assert message.usage.input_tokens == prompt_of(fake)

    def test_tool_input_and_usage_override(self, fake, client):
        message = client.messages.create(**ASK, tools=[SEARCH], **tool_calls(tool_calls=3, tool_input=7))
        assert message.usage.input_tokens == prompt_of(fake) + 3 * 7
        headers = tool_calls(tool_calls=3)
        headers["extra_headers"]["x-fake-usage"] = '{"input_tokens": 10}'
        message = client.messages.create(**ASK, tools=[SEARCH], **headers)
        assert message.usage.input_tokens == 10 and message.usage.server_tool_use.web_search_requests == 3

    @pytest.mark.parametrize("tool", [SEARCH, FETCH])
    def test_stream_agrees_with_json(self, fake, client, tool):
        ask = {**ASK, "tools": [tool], **tool_calls(tool_calls=2)}
        whole = client.messages.create(**ask)
        with client.messages.stream(**ask) as stream:
            streamed = stream.get_final_message()
        assert [without_ids(block) for block in streamed.content] == [without_ids(block) for block in whole.content]
        assert streamed.content[1].tool_use_id == streamed.content[0].id
        assert streamed.usage.to_dict() == whole.usage.to_dict()

    def test_stream_events(self, fake, raw):
        body = {**ASK, "tools": [{**SEARCH, "max_uses": 2}], "stream": True}
        response = raw.post("/v1/messages", json=body, headers={**RAW_HEADERS, "x-fake-tool-calls": "2"})
        events = sse_events(response.text)
        prompt = prompt_of(fake)
        assert events[0]["message"]["usage"]["input_tokens"] == prompt  # the input side, before the tools
        assert "server_tool_use" not in events[0]["message"]["usage"]
        starts = [(e["index"], e["content_block"]["type"]) for e in events if e["type"] == "content_block_start"]
        assert starts == [(0, "server_tool_use"), (1, "web_search_tool_result"), (2, "server_tool_use"),
                          (3, "web_search_tool_result"), (4, "text")]
        assert [e["type"] for e in events[1:3]] == ["content_block_start", "ping"]
        use = next(e["content_block"] for e in events if e["type"] == "content_block_start")
        assert use["input"] == {}  # the input arrives as JSON deltas
        partial = [e["delta"] for e in events if e["type"] == "content_block_delta" and e["index"] == 0]
        assert [d["type"] for d in partial] == ["input_json_delta"]
        assert json.loads(partial[0]["partial_json"]) == {"query": "fake query 1"}
        assert [e["index"] for e in events if e["type"] == "content_block_stop"] == [0, 1, 2, 3, 4]
        delta = next(e for e in events if e["type"] == "message_delta")
        assert delta["usage"] == {  # cumulative totals, as Anthropic sends them when server tools ran
            "input_tokens": prompt + 2000, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
            "output_tokens": count_text(MODEL, "echo: hello there world"),
            "server_tool_use": {"web_search_requests": 2, "web_fetch_requests": 0},
        }

    @pytest.mark.parametrize("tools", [[], [SEARCH]])
    def test_stream_without_calls_keeps_the_plain_message_delta(self, fake, raw, tools):
        response = raw.post("/v1/messages", json={**ASK, "tools": tools, "stream": True}, headers=RAW_HEADERS)
        delta = next(e for e in sse_events(response.text) if e["type"] == "message_delta")
        assert delta["usage"] == {"output_tokens": count_text(MODEL, "echo: hello there world")}

    def test_stream_helper_reads_the_tool_usage(self, fake, client):
        with client.messages.stream(**ASK, tools=[SEARCH], **tool_calls(tool_calls=3)) as stream:
            message = stream.get_final_message()
        assert message.usage.input_tokens == prompt_of(fake) + 3000
        assert message.usage.server_tool_use.web_search_requests == 3

    def test_abort_counts_text_deltas_only(self, fake, client):
        seen = []
        headers = tool_calls(tool_calls=1, abort_after=1)
        with pytest.raises(httpx2.RemoteProtocolError):
            for event in client.messages.create(**ASK, tools=[SEARCH], stream=True, **headers):
                seen.append((event.type, getattr(event, "index", None)))
        assert seen == [("message_start", None), ("content_block_start", 0), ("content_block_delta", 0),
                        ("content_block_stop", 0), ("content_block_start", 1), ("content_block_stop", 1),
                        ("content_block_start", 2), ("content_block_delta", 2)]


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
