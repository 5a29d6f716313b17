import json
import random

import anthropic
import httpx2
import pytest
from mitmproxy import http

from pouch.domain import errors
from pouch.domain.money import Money
from pouch.domain.usage import Usage
from pouch.pricing.price import cost
from pouch.pricing.table import PriceTable
from pouch.providers import registry
from pouch.providers.anthropic import Anthropic
from pouch.providers.base import FREE, METERED, UNMETERED, Call, Endpoint

PROVIDER = Anthropic()
MESSAGES = PROVIDER.endpoint("POST", "/v1/messages")
MODEL = "claude-sonnet-5"  # the SDK warns about deprecated models such as claude-sonnet-4-5


# --- endpoints -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method, path, expected",
    [
        ("POST", "/v1/messages", Endpoint("messages", METERED, "anthropic_messages")),
        ("post", "/v1/messages?beta=true", Endpoint("messages", METERED, "anthropic_messages")),
        ("POST", "/v1/messages/count_tokens", Endpoint("messages.count_tokens", FREE)),
        ("POST", "/v1/messages/count_tokens?beta=true", Endpoint("messages.count_tokens", FREE)),
        ("GET", "/v1/models", Endpoint("models.list", FREE)),
        ("GET", "/v1/models?limit=20", Endpoint("models.list", FREE)),
        ("GET", "/v1/models/claude-sonnet-4-5-20250929", Endpoint("models.retrieve", FREE)),
        ("POST", "/v1/messages/batches", Endpoint("messages.batches", UNMETERED)),
        ("GET", "/v1/messages/batches/msgbatch_01/results", Endpoint("messages.batches", UNMETERED)),
        ("DELETE", "/v1/messages/batches/msgbatch_01", Endpoint("messages.batches", UNMETERED)),
        ("POST", "/v1/files", Endpoint("files", UNMETERED)),
        ("GET", "/v1/files/file_01/content", Endpoint("files", UNMETERED)),
        ("POST", "/v1/skills?beta=true", Endpoint("skills", UNMETERED)),
        ("GET", "/v1/skills/skill_01/versions", Endpoint("skills", UNMETERED)),
    ],
)
def test_endpoint(method, path, expected):
    assert PROVIDER.endpoint(method, path) == expected


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/v1/messages"),
        ("PUT", "/v1/messages"),
        ("GET", "/v1/messages/count_tokens"),
        ("POST", "/v1/models"),
        ("GET", "/v1/models/"),
        ("GET", "/v1/models/claude/extra"),
        ("POST", "/v1/messages/batchesX"),
        ("POST", "/v1/filesystem"),
        ("POST", "/v1/complete"),
        ("POST", "/v1/chat/completions"),
        ("POST", "/messages"),
        ("POST", "/v2/messages"),
        ("GET", "/"),
    ],
)
def test_unknown_endpoint(method, path):
    assert PROVIDER.endpoint(method, path) is None


def test_registry():
    assert (PROVIDER.name, PROVIDER.hosts, PROVIDER.credential_env) == ("anthropic", ("api.anthropic.com",), ("ANTHROPIC_API_KEY",))
    assert isinstance(registry.PROVIDERS["anthropic"], Anthropic)
    assert registry.for_host("API.Anthropic.com.") is registry.PROVIDERS["anthropic"]
    assert registry.for_host("anthropic.com") is None


# --- credentials ---------------------------------------------------------------------------


def request(headers=()):
    url = "https://api.anthropic.com/v1/messages?beta=true"
    return http.Request.make("POST", url, headers=[(k.encode(), v.encode()) for k, v in headers])


@pytest.mark.parametrize(
    "headers, expected",
    [
        ([], []),
        ([("x-api-key", "pk-1")], ["pk-1"]),
        ([("X-Api-Key", "  pk-1 ")], ["pk-1"]),
        ([("Authorization", "Bearer pk-1")], ["pk-1"]),  # auth_token, and api_key in SDK 2.x
        ([("authorization", "bearer pk-1")], ["pk-1"]),
        ([("Authorization", "Basic dXNlcjpwYXNz")], []),
        ([("x-api-key", "")], []),
        ([("x-api-key", "pk-1"), ("Authorization", "Bearer pk-2")], ["pk-1", "pk-2"]),
        ([("x-api-key", "pk-1"), ("Authorization", "Bearer pk-1")], ["pk-1"]),
        ([("x-api-key", "pk-1"), ("x-api-key", "pk-2")], ["pk-1", "pk-2"]),
    ],
)
def test_credential(headers, expected):
    req = request(headers)
    assert PROVIDER.credential(req.headers, req.query) == expected


def test_authorize_replaces_every_client_credential_and_sets_a_version():
    req = request([("x-api-key", "pk-1"), ("Authorization", "Bearer pk-2"), ("Authorization", "Bearer pk-3"),
                   ("anthropic-beta", "files-api-2025-04-14")])  # fmt: skip
    PROVIDER.authorize(req.headers, req.query, "sk-ant-real")
    assert req.headers.get_all("x-api-key") == ["sk-ant-real"]
    assert "authorization" not in req.headers
    assert req.headers["anthropic-version"] == "2023-06-01"
    assert req.headers["anthropic-beta"] == "files-api-2025-04-14"
    assert req.query.get_all("beta") == ["true"]


def test_authorize_keeps_the_clients_version():
    req = request([("x-api-key", "pk-1"), ("anthropic-version", "2026-10-21")])
    PROVIDER.authorize(req.headers, req.query, "sk-ant-real")
    assert req.headers.get_all("anthropic-version") == ["2026-10-21"]


# --- reading requests ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, expected",
    [
        ({"model": "claude-sonnet-4-5", "max_tokens": 1024}, Call("claude-sonnet-4-5", False, 1024, 1)),
        ({"model": "claude-opus-4-7", "max_tokens": 1, "stream": True}, Call("claude-opus-4-7", True, 1, 1)),
        ({"model": "claude-haiku-4-5", "max_tokens": 10_000_000, "stream": None}, Call("claude-haiku-4-5", False, 10_000_000, 1)),
    ],
)
def test_read_call(body, expected):
    assert PROVIDER.read_call(MESSAGES, "/v1/messages", body) == expected


@pytest.mark.parametrize(
    "body, message",
    [
        ([], "JSON object"),
        ("text", "JSON object"),
        ({"max_tokens": 10}, "'model'"),
        ({"model": " ", "max_tokens": 10}, "'model'"),
        ({"model": 4, "max_tokens": 10}, "'model'"),
        ({"model": "claude-sonnet-4-5"}, "max_tokens is required by the Messages API"),
        ({"model": "claude-sonnet-4-5", "max_tokens": None}, "max_tokens is required"),
        ({"model": "claude-sonnet-4-5", "max_tokens": True}, "'max_tokens'"),
        ({"model": "claude-sonnet-4-5", "max_tokens": 0}, "'max_tokens'"),
        ({"model": "claude-sonnet-4-5", "max_tokens": -5}, "'max_tokens'"),
        ({"model": "claude-sonnet-4-5", "max_tokens": 10_000_001}, "'max_tokens'"),
        ({"model": "claude-sonnet-4-5", "max_tokens": 1.5}, "'max_tokens'"),
        ({"model": "claude-sonnet-4-5", "max_tokens": "100"}, "'max_tokens'"),
        ({"model": "claude-sonnet-4-5", "max_tokens": [100]}, "'max_tokens'"),
        ({"model": "claude-sonnet-4-5", "max_tokens": 10, "stream": "true"}, "'stream'"),
        ({"model": "claude-sonnet-4-5", "max_tokens": 10, "stream": 1}, "'stream'"),
    ],
)
def test_read_call_refuses(body, message):
    with pytest.raises(errors.BadRequest, match=message):
        PROVIDER.read_call(MESSAGES, "/v1/messages", body)


def test_read_call_quotes_a_long_value_briefly():
    with pytest.raises(errors.BadRequest) as caught:
        PROVIDER.read_call(MESSAGES, "/v1/messages", {"model": "m", "max_tokens": "9" * 10_000})
    assert len(caught.value.message) < 120


def test_cap_output_and_streams_need_no_preparing():
    body = {"model": "m", "max_tokens": 4096, "stream": True}
    PROVIDER.cap_output(MESSAGES, body, 123)
    assert PROVIDER.prepare_stream(MESSAGES, body) is False
    assert body == {"model": "m", "max_tokens": 123, "stream": True}
    assert PROVIDER.read_call(MESSAGES, "/v1/messages", body).max_output == 123


# --- usage from JSON bodies ----------------------------------------------------------------

# A Message as Anthropic sends it: extended thinking, a cache read, 5-minute and 1-hour writes.
MESSAGE_BODY = {
    "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "content": [
        {"type": "thinking", "thinking": "The user wants a haiku.", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3h"},
        {"type": "text", "text": "Autumn moonlight—"},
    ],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 50,
        "cache_creation_input_tokens": 3000,
        "cache_read_input_tokens": 10000,
        "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 2000},
        "output_tokens": 1200,
        "output_tokens_details": {"thinking_tokens": 800},
        "server_tool_use": None,
        "service_tier": "standard",
    },
}
# input: 50 uncached + 10,000 read + 3,000 written = 13,050; output 1,200 includes 800 thinking.
MESSAGE_USAGE = Usage(input_tokens=13_050, cached_tokens=10_000, cache_write_5m_tokens=1_000,
                      cache_write_1h_tokens=2_000, output_tokens=1_200, reasoning_tokens=800)  # fmt: skip


def test_usage_from_a_message():
    assert PROVIDER.usage_from_body(MESSAGES, MESSAGE_BODY) == (MESSAGE_USAGE, "claude-sonnet-4-5-20250929")


def test_cost_of_a_message_by_hand():
    # claude-sonnet-4-5 per 1M tokens: input $3.00, cache read $0.30, 5m write $3.75,
    # 1h write $6.00, output $15.00 (thinking too). Below 200k input tokens: no long-context tier.
    #      50 x 3.00 =    150
    #  10,000 x 0.30 =  3,000
    #   1,000 x 3.75 =  3,750
    #   2,000 x 6.00 = 12,000
    #   1,200 x 15.0 = 18,000
    #                  36,900 / 1M = $0.0369
    price = PriceTable.load().resolve("claude-sonnet-4-5-20250929", "anthropic")
    assert cost(price, MESSAGE_USAGE) == Money.usd("0.0369")


@pytest.mark.parametrize(
    "usage, expected",
    [
        ({"input_tokens": 25, "output_tokens": 150}, Usage(input_tokens=25, output_tokens=150)),
        (
            {"input_tokens": 12, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 48_000, "output_tokens": 400},
            Usage(input_tokens=48_012, cached_tokens=48_000, output_tokens=400),
        ),
        # Before the lifetime breakdown existed, every write was a 5-minute one.
        ({"input_tokens": 50, "cache_creation_input_tokens": 3000, "output_tokens": 5}, Usage(3050, 0, 3000, 0, 5, 0)),
        (
            {"input_tokens": 10, "cache_creation_input_tokens": None, "cache_read_input_tokens": None,
             "cache_creation": None, "output_tokens": 3, "output_tokens_details": None, "server_tool_use": None},
            Usage(input_tokens=10, output_tokens=3),
        ),  # fmt: skip
        # Only the breakdown: its sum is the total written.
        ({"input_tokens": 1, "cache_creation": {"ephemeral_5m_input_tokens": 7, "ephemeral_1h_input_tokens": 3}, "output_tokens": 2},
         Usage(11, 0, 7, 3, 2, 0)),  # fmt: skip
        # Breakdown and total disagree: the larger is billed; what the breakdown misses is a 5m write.
        (
            {"input_tokens": 10, "cache_creation_input_tokens": 100, "output_tokens": 1,
             "cache_creation": {"ephemeral_5m_input_tokens": 80, "ephemeral_1h_input_tokens": 40}},
            Usage(130, 0, 80, 40, 1, 0),
        ),  # fmt: skip
        ({"input_tokens": 10, "cache_creation_input_tokens": 100, "cache_creation": {"ephemeral_1h_input_tokens": 30}, "output_tokens": 1},
         Usage(110, 0, 70, 30, 1, 0)),  # fmt: skip
        # Thinking reported above the output total is clamped to it.
        ({"input_tokens": 5, "output_tokens": 10, "output_tokens_details": {"thinking_tokens": 99}}, Usage(5, 0, 0, 0, 10, 10)),
        # Garbage details count as 0.
        ({"input_tokens": 5, "cache_read_input_tokens": "x", "cache_creation": [1], "output_tokens": 1}, Usage(5, 0, 0, 0, 1, 0)),
        # Garbage totals: no usage.
        ({"input_tokens": 10}, None),
        ({"output_tokens": 10}, None),
        ({"input_tokens": "10", "output_tokens": 3}, None),
        ({"input_tokens": -1, "output_tokens": 3}, None),
        ({"input_tokens": True, "output_tokens": 3}, None),
        ({"input_tokens": 1.5, "output_tokens": 3}, None),
        ({"prompt_tokens": 10, "completion_tokens": 3}, None),  # the OpenAI shape
        (None, None),
        ([], None),
    ],
)
def test_usage_normalisation(usage, expected):
    assert PROVIDER.usage_from_body(MESSAGES, {"model": "claude-haiku-4-5", "usage": usage}) == (expected, "claude-haiku-4-5")


@pytest.mark.parametrize("body", [None, [], "x", {"usage": "x", "model": 3}, {"type": "error", "error": {"type": "api_error"}}])
def test_usage_from_garbage_body(body):
    assert PROVIDER.usage_from_body(MESSAGES, body) == (None, None)


# --- stream tracker ------------------------------------------------------------------------


def sse(*events):
    """Serialise like Anthropic does: an event line, then compact JSON."""
    return b"".join(
        f"event: {e['type']}\ndata: {json.dumps(e, separators=(',', ':'), ensure_ascii=False)}\n\n".encode() for e in events
    )


def block_delta(index, kind, field, value):
    return {"type": "content_block_delta", "index": index, "delta": {"type": kind, field: value}}


START_USAGE = {
    "input_tokens": 12,
    "cache_creation_input_tokens": 1500,
    "cache_read_input_tokens": 20000,
    "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 500},
    "output_tokens": 4,  # a placeholder: the real count comes in message_delta
    "service_tier": "standard",
}
MESSAGE_START = {
    "type": "message_start",
    "message": {"id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
                "content": [], "stop_reason": None, "stop_sequence": None, "usage": START_USAGE},
}  # fmt: skip
CONTENT = sse(
    MESSAGE_START,
    {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}},
    {"type": "ping"},
    block_delta(0, "thinking_delta", "thinking", "Weather tool. "),
    block_delta(0, "signature_delta", "signature", "EqQBCgIYAhIM1gbcDa9GJwZA2b3h"),
    {"type": "content_block_stop", "index": 0},
    {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
    block_delta(1, "text_delta", "text", "Grüß dich — "),
    # text that looks like a usage event must not fool the tracker
    block_delta(1, "text_delta", "text", '{"type":"message_delta","usage":{"output_tokens":1}}'),
    {"type": "content_block_stop", "index": 1},
    {"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {}}},
    block_delta(2, "input_json_delta", "partial_json", ""),
    block_delta(2, "input_json_delta", "partial_json", '{"city":'),
    block_delta(2, "input_json_delta", "partial_json", ' "Paris"}'),
    {"type": "content_block_stop", "index": 2},
)
CONTENT_TEXT = 'Weather tool. Grüß dich — {"type":"message_delta","usage":{"output_tokens":1}}get_weather{"city": "Paris"}'
MESSAGE_DELTA = {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None}, "usage": {"output_tokens": 89}}
STREAM = CONTENT + sse(MESSAGE_DELTA, {"type": "message_stop"})
# input: 12 uncached + 20,000 read + 1,500 written (1,000 for 5 minutes, 500 for an hour)
STREAM_USAGE = Usage(input_tokens=21_512, cached_tokens=20_000, cache_write_5m_tokens=1_000,
                     cache_write_1h_tokens=500, output_tokens=89)  # fmt: skip


def random_chunks(data, seed, pieces=12):
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(data)), pieces))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]


def run(tracker, chunks):
    return [tracker.feed(chunk) for chunk in chunks] + [tracker.feed(b"")]


def tracked(stream, seed=0, pieces=12):
    tracker = PROVIDER.stream_tracker(MESSAGES, injected_usage=False)
    chunks = random_chunks(stream, seed, pieces)
    assert run(tracker, chunks) == chunks + [b""]  # every chunk goes on at once, untouched
    return tracker


@pytest.mark.parametrize("seed", range(25))
def test_stream(seed):
    tracker = tracked(STREAM, seed)
    assert tracker.usage() == STREAM_USAGE
    assert tracker.model() == "claude-sonnet-4-5-20250929"
    assert tracker.output_text() == CONTENT_TEXT


@pytest.mark.parametrize("seed", range(5))
def test_stream_with_crlf_lines_and_without_event_lines(seed):
    # Event types are then read from the JSON (some compatible servers send data lines only).
    stream = STREAM.replace(b"\n", b"\r\n")
    stream = b"".join(line for line in stream.splitlines(keepends=True) if not line.startswith(b"event:"))
    tracker = tracked(stream, seed)
    assert (tracker.usage(), tracker.output_text()) == (STREAM_USAGE, CONTENT_TEXT)


def test_stream_message_delta_counts_win():
    # Newer API versions repeat the input counts in message_delta, cumulatively: after a server
    # tool ran, input grew. The latest non-null count of each kind wins; the lifetime breakdown
    # only comes with message_start.
    usage = {"input_tokens": 2400, "cache_creation_input_tokens": None, "cache_read_input_tokens": 20000,
             "output_tokens": 310, "output_tokens_details": {"thinking_tokens": 120},
             "server_tool_use": {"web_search_requests": 1, "web_fetch_requests": 0}}  # fmt: skip
    tracker = tracked(CONTENT + sse(MESSAGE_DELTA | {"usage": usage}, {"type": "message_stop"}))
    assert tracker.usage() == Usage(23_900, 20_000, 1_000, 500, 310, 120, tool_calls=(("web_search", 1),))


def test_stream_usage_is_final_at_message_delta():
    assert tracked(CONTENT + sse(MESSAGE_DELTA)[:-1]).usage() == STREAM_USAGE


@pytest.mark.parametrize(
    "tail",
    [
        b"",  # cut after the last content block
        sse({"type": "message_stop"}),  # no message_delta: message_start's output count is a placeholder
        sse(MESSAGE_DELTA | {"usage": {"input_tokens": 12}}),  # a delta without its output count
        sse({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    ],
)
def test_stream_without_final_usage(tail):
    tracker = tracked(CONTENT + tail, pieces=6)
    assert tracker.usage() is None  # the chain bills the input plus the output seen
    assert tracker.output_text() == CONTENT_TEXT


def test_stream_cut_mid_event():
    stream = CONTENT[: CONTENT.index(b"Paris")]
    tracker = tracked(stream, 3, pieces=5)
    assert tracker.usage() is None
    assert tracker.model() == "claude-sonnet-4-5-20250929"
    assert tracker.output_text() == 'Weather tool. Grüß dich — {"type":"message_delta","usage":{"output_tokens":1}}get_weather{"city":'


@pytest.mark.parametrize(
    "garbage",
    [b"\xff\xfe\x00", b"event: message_start\ndata: {not json\n\n", b"event: message_delta\ndata: [1]\n\n",
     b'event: message_delta\ndata: {"usage":{"input_tokens":"x","output_tokens":3}}\n\n',
     b'event: content_block_delta\ndata: {"delta":{"type":["x"],"text":1}}\n\n', b"data: 5\n\n"],
)  # fmt: skip
def test_garbage_never_raises(garbage):
    tracker = tracked(garbage, pieces=2)
    assert tracker.usage() is None
    assert tracker.output_text() == ""


def test_a_failing_tracker_passes_the_rest_through(monkeypatch):
    tracker = PROVIDER.stream_tracker(MESSAGES, injected_usage=False)
    chunks = random_chunks(STREAM, 7)
    sent = [tracker.feed(chunks[0])]
    monkeypatch.setattr(tracker, "_observe", lambda event: 1 / 0)
    sent += [tracker.feed(chunk) for chunk in chunks[1:]] + [tracker.feed(b"")]
    assert b"".join(sent) == STREAM


# --- the real anthropic SDK against pouch's replies -----------------------------------------


def sdk(handler, max_retries=0):
    transport = httpx2.MockTransport(handler)
    return anthropic.Anthropic(api_key="pk-test", http_client=httpx2.Client(transport=transport), max_retries=max_retries)


def replying(reply, calls=None):
    def handler(request):
        if calls is not None:
            calls.append(request)
        return httpx2.Response(reply.status, headers=reply.headers, content=reply.body)

    return handler


def create(client, **extra):
    return client.messages.create(model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "hi"}], **extra)


@pytest.mark.parametrize(
    "error, exception, kind",
    [
        (errors.InvalidKey("unknown pouch key"), anthropic.AuthenticationError, "authentication_error"),
        (errors.ModelNotAllowed("key 'alice' may not use claude-opus-4-7"), anthropic.PermissionDeniedError, "permission_error"),
        (errors.EndpointNotMetered("batches are not metered"), anthropic.PermissionDeniedError, "permission_error"),
        (errors.UnknownEndpoint("pouch does not know POST /v1/complete"), anthropic.NotFoundError, "not_found_error"),
        (errors.RateLimited("60 requests/min", {"retry-after": "3"}), anthropic.RateLimitError, "rate_limit_error"),
        (errors.BudgetExhausted("budget of key 'alice' exhausted"), anthropic.RateLimitError, "rate_limit_error"),
        (errors.ModelNotPriced("no price for claude-x"), anthropic.BadRequestError, "invalid_request_error"),
        (errors.BadRequest("max_tokens is required by the Messages API"), anthropic.BadRequestError, "invalid_request_error"),
        (errors.GatewayError("a link failed"), anthropic.InternalServerError, "api_error"),
        (errors.StoreUnavailable("store unavailable"), anthropic.InternalServerError, "api_error"),
    ],
)
def test_errors_raise_the_sdk_exception(error, exception, kind):
    reply = PROVIDER.error(error)
    request_id = reply.headers["request-id"]
    assert reply.status == error.status and request_id.startswith("req_pouch_")
    assert reply.headers["content-type"] == "application/json"
    assert json.loads(reply.body) == {"type": "error", "error": {"type": kind, "message": error.message}, "request_id": request_id}
    with pytest.raises(exception) as caught:
        create(sdk(replying(reply)))
    assert caught.value.status_code == error.status
    assert (caught.value.type, caught.value.api_message, caught.value.request_id) == (kind, error.message, request_id)
    for name, value in error.headers.items():
        assert caught.value.response.headers[name] == value


def test_budget_exhaustion_is_not_retried():
    reply = PROVIDER.error(errors.BudgetExhausted("budget exhausted", {"retry-after-ms": "1"}))
    assert reply.headers["x-should-retry"] == "false"
    calls = []
    with pytest.raises(anthropic.RateLimitError):
        create(sdk(replying(reply, calls), max_retries=2))
    assert len(calls) == 1


def test_rate_limit_is_retried():
    # The contrast that shows the header above is what stops the SDK.
    calls = []
    reply = PROVIDER.error(errors.RateLimited("slow down", {"retry-after-ms": "1"}))
    with pytest.raises(anthropic.RateLimitError):
        create(sdk(replying(reply, calls), max_retries=2))
    assert len(calls) == 3


MOCK_USAGE = Usage(input_tokens=120, cached_tokens=64, cache_write_5m_tokens=6, cache_write_1h_tokens=4,
                   output_tokens=30, reasoning_tokens=12)  # fmt: skip
MOCK_TEXT = "Hello there, I am a mock — ça va?"


def mocking(usage=MOCK_USAGE, text=MOCK_TEXT, seen=None):
    """An upstream that is pouch's mock: the handler the SDK talks to."""

    def handler(request):
        body = json.loads(request.content)
        endpoint = PROVIDER.endpoint(request.method, request.url.raw_path.decode())
        reply = PROVIDER.mock(endpoint, PROVIDER.read_call(endpoint, request.url.path, body), body, usage, text)
        if seen is not None:
            seen.append(reply)
        assert reply.headers["x-pouch-mock"] == "true" and reply.headers["request-id"].startswith("req_pouch_")
        return httpx2.Response(reply.status, headers=reply.headers, content=reply.body)

    return handler


def assert_usage(usage):
    # Anthropic's way: input without the 64 read and the 10 written.
    assert (usage.input_tokens, usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (46, 64, 10)
    assert (usage.cache_creation.ephemeral_5m_input_tokens, usage.cache_creation.ephemeral_1h_input_tokens) == (6, 4)
    assert (usage.output_tokens, usage.output_tokens_details.thinking_tokens) == (30, 12)


def test_mock_message():
    seen = []
    message = create(sdk(mocking(seen=seen)))
    assert message.id.startswith("msg_mock") and message.model == MODEL
    assert [(block.type, block.text) for block in message.content] == [("text", MOCK_TEXT)]
    assert (message.stop_reason, message.stop_sequence) == ("end_turn", None)
    assert_usage(message.usage)
    assert seen[0].headers["content-type"] == "application/json"
    assert PROVIDER.usage_from_body(MESSAGES, json.loads(seen[0].body)) == (MOCK_USAGE, MODEL)


def test_mock_message_cut_at_the_cap():
    message = sdk(mocking()).messages.create(model=MODEL, max_tokens=30, messages=[])
    assert message.stop_reason == "max_tokens"


def test_mock_stream_events():
    seen = []
    events = list(create(sdk(mocking(seen=seen)), stream=True))
    assert [e.type for e in events][:3] == ["message_start", "content_block_start", "content_block_delta"]  # the SDK skips ping
    assert [e.type for e in events][-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert "".join(e.delta.text for e in events if e.type == "content_block_delta") == MOCK_TEXT
    assert events[0].message.usage.output_tokens == 1
    assert (events[-2].delta.stop_reason, events[-2].usage.output_tokens) == ("end_turn", 30)
    assert seen[0].headers["content-type"].startswith("text/event-stream")
    assert b"event: ping\n" in seen[0].body
    # What pouch's own tracker reads from its mock is what the mock was told.
    tracker = PROVIDER.stream_tracker(MESSAGES, injected_usage=False)
    tracker.feed(seen[0].body)
    assert (tracker.usage(), tracker.model(), tracker.output_text()) == (MOCK_USAGE, MODEL, MOCK_TEXT)


def test_mock_stream_helper():
    with sdk(mocking()).messages.stream(model=MODEL, max_tokens=30, messages=[{"role": "user", "content": "hi"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == final.content[0].text == MOCK_TEXT
    assert final.stop_reason == "max_tokens"
    assert_usage(final.usage)


def test_mock_stream_of_nothing():
    usage = Usage(input_tokens=5)
    with sdk(mocking(usage=usage, text="")).messages.stream(model=MODEL, max_tokens=10, messages=[]) as stream:
        final = stream.get_final_message()
    assert [block.text for block in final.content] == [""]
    assert (final.usage.input_tokens, final.usage.output_tokens) == (5, 0)


# --- usage edges that would bill wrongly ---------------------------------------------------


def test_a_null_count_in_message_delta_keeps_message_starts():
    # message_delta may repeat every count, some as null; a null is "not reported here", and
    # must not wipe message_start's cache reads (20,000 tokens unbilled) or its input count.
    nulls = {"input_tokens": None, "cache_read_input_tokens": None, "cache_creation_input_tokens": None,
             "output_tokens": 89}  # fmt: skip
    tracker = tracked(CONTENT + sse(MESSAGE_DELTA | {"usage": nulls}, {"type": "message_stop"}))
    assert tracker.usage() == STREAM_USAGE


def test_zero_counts_are_counts():
    # Everything read from the cache and nothing generated: a real, billable answer.
    usage = {"input_tokens": 0, "cache_read_input_tokens": 4096, "output_tokens": 0}
    assert PROVIDER.usage_from_body(MESSAGES, {"model": MODEL, "usage": usage}) == (
        Usage(input_tokens=4096, cached_tokens=4096), MODEL)
    stream = sse(MESSAGE_START | {"message": MESSAGE_START["message"] | {"usage": usage | {"output_tokens": 1}}},
                 MESSAGE_DELTA | {"usage": {"output_tokens": 0}}, {"type": "message_stop"})  # fmt: skip
    assert tracked(stream).usage() == Usage(input_tokens=4096, cached_tokens=4096)


def test_a_breakdown_with_only_one_hour_writes():
    usage = {"input_tokens": 1, "cache_creation": {"ephemeral_1h_input_tokens": 30}, "output_tokens": 2}
    assert PROVIDER.usage_from_body(MESSAGES, {"model": MODEL, "usage": usage})[0] == Usage(31, 0, 0, 30, 2, 0)


def test_every_paid_server_tool_is_counted():
    server = {"web_search_requests": 2, "web_fetch_requests": 3, "code_execution_requests": 1}
    usage = {"input_tokens": 10, "output_tokens": 2, "server_tool_use": server}
    assert PROVIDER.usage_from_body(MESSAGES, {"model": MODEL, "usage": usage})[0].tool_calls == (
        ("code_execution", 1), ("web_fetch", 3), ("web_search", 2))


def test_absurdly_nested_json_does_not_stop_the_tracker():
    # json.loads raises RecursionError, not ValueError, on deep nesting; the event is skipped.
    nested = b"data: " + b'{"a":' * 100_000 + b"1" + b"}" * 100_000 + b"\n\n"  # no event line: its type is read
    assert tracked(nested + STREAM, pieces=20).usage() == STREAM_USAGE
    start = b'event: message_start\ndata: {"type":"message_start","message":' + b"[" * 100_000 + b"]" * 100_000 + b"}\n\n"
    assert tracked(start + STREAM, pieces=20).usage() == STREAM_USAGE


def test_a_tracker_that_failed_once_reads_no_more_usage(monkeypatch):
    # After a tracker bug the rest of the stream is passed on unread; half-read usage is not
    # trusted (the chain then charges the reservation).
    tracker = PROVIDER.stream_tracker(MESSAGES, injected_usage=False)
    observe, seen = tracker._observe, []

    def fails_first(event):
        seen.append(event)
        if len(seen) == 1:
            raise RuntimeError("a tracker bug")
        observe(event)

    monkeypatch.setattr(tracker, "_observe", fails_first)
    chunks = random_chunks(STREAM, 11)
    assert run(tracker, chunks) == chunks + [b""]
    assert tracker.usage() is None
    assert len(seen) == 1


def test_model_of_a_stream_without_one():
    assert PROVIDER.stream_tracker(MESSAGES, injected_usage=False).model() is None
    odd = MESSAGE_START | {"message": MESSAGE_START["message"] | {"model": 5}}
    assert tracked(sse(odd) + CONTENT).model() == "claude-sonnet-4-5-20250929"  # not a string: ignored
    assert tracked(sse(odd, MESSAGE_DELTA), pieces=4).model() is None


def test_data_only_events_whose_type_is_not_their_first_field():
    # Some compatible servers send no event lines and put "type" anywhere in the object.
    def moved(event):
        return {k: v for k, v in event.items() if k != "type"} | {"type": event["type"]}

    stream = b"".join(
        f"data: {json.dumps(moved(e), separators=(',', ':'))}\n\n".encode()
        for e in [MESSAGE_START, block_delta(0, "text_delta", "text", "Hi"), MESSAGE_DELTA, {"type": "message_stop"}]
    )
    tracker = tracked(stream, pieces=6)
    assert (tracker.usage(), tracker.output_text()) == (STREAM_USAGE, "Hi")


def test_output_text_of_blocks_that_open_with_output():
    stream = sse(
        MESSAGE_START,
        {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "Hm. "}},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": "Sure: "}},
        {"type": "content_block_start", "index": 2, "content_block": {"type": "server_tool_use", "id": "srvtoolu_1",
                                                                      "name": "web_search", "input": {}}},
    )  # fmt: skip
    assert tracked(stream, pieces=6).output_text() == "Hm. Sure: web_search"
