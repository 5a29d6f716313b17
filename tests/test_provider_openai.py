import base64
import json
import random
import struct

import httpx2
import openai
import pytest
from mitmproxy import http

from pouch.domain import errors
from pouch.domain.usage import Usage
from pouch.providers import registry
from pouch.providers.base import FREE, METERED, UNMETERED, Call, Endpoint
from pouch.providers.openai import OpenAI

PROVIDER = OpenAI()
CHAT = PROVIDER.endpoint("POST", "/v1/chat/completions")
RESPONSES = PROVIDER.endpoint("POST", "/v1/responses")
COMPLETIONS = PROVIDER.endpoint("POST", "/v1/completions")
EMBEDDINGS = PROVIDER.endpoint("POST", "/v1/embeddings")


# --- endpoints -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method, path, name, metering, api",
    [
        ("POST", "/v1/chat/completions", "chat.completions", METERED, "chat"),
        ("POST", "/v1/chat/completions?api-version=1", "chat.completions", METERED, "chat"),
        ("post", "/v1/responses", "responses", METERED, "responses"),
        ("POST", "/v1/completions", "completions", METERED, "completions"),
        ("POST", "/v1/embeddings", "embeddings", METERED, "embeddings"),
        ("GET", "/v1/models", "models.list", FREE, ""),
        ("GET", "/v1/models/ft:gpt-4o-mini:acme::abc123", "models.retrieve", FREE, ""),
        ("GET", "/v1/responses/resp_123", "responses.retrieve", FREE, ""),
        ("DELETE", "/v1/responses/resp_123", "responses.delete", FREE, ""),
        ("GET", "/v1/responses/resp_123/input_items?limit=5", "responses.input_items", FREE, ""),
        ("POST", "/v1/responses/input_tokens", "responses.input_tokens", FREE, ""),
        ("POST", "/v1/responses/resp_123/cancel", "responses.cancel", FREE, ""),
        ("GET", "/v1/chat/completions", "chat.completions.list", FREE, ""),
        ("GET", "/v1/chat/completions/chatcmpl-1", "chat.completions.retrieve", FREE, ""),
        ("DELETE", "/v1/chat/completions/chatcmpl-1", "chat.completions.delete", FREE, ""),
        ("GET", "/v1/chat/completions/chatcmpl-1/messages", "chat.completions.messages", FREE, ""),
        ("POST", "/v1/moderations", "moderations", FREE, ""),
        ("POST", "/v1/images/generations", "images", UNMETERED, ""),
        ("POST", "/v1/audio/speech", "audio", UNMETERED, ""),
        ("POST", "/v1/batches", "batches", UNMETERED, ""),
        ("GET", "/v1/batches/batch_1", "batches", UNMETERED, ""),
        ("POST", "/v1/fine_tuning/jobs", "fine_tuning", UNMETERED, ""),
        ("POST", "/v1/realtime/sessions", "realtime", UNMETERED, ""),
        ("GET", "/v1/realtime?model=gpt-realtime", "realtime", UNMETERED, ""),
        ("POST", "/v1/files", "files", UNMETERED, ""),
        ("POST", "/v1/uploads/upload_1/parts", "uploads", UNMETERED, ""),
        ("POST", "/v1/vector_stores/vs_1/search", "vector_stores", UNMETERED, ""),
        ("POST", "/v1/assistants", "assistants", UNMETERED, ""),
        ("POST", "/v1/threads/runs", "threads", UNMETERED, ""),
        ("POST", "/v1/videos", "videos", UNMETERED, ""),
        ("POST", "/v1/containers", "containers", UNMETERED, ""),
        ("POST", "/v1/evals/eval_1/runs", "evals", UNMETERED, ""),
    ],
)
def test_endpoint(method, path, name, metering, api):
    assert PROVIDER.endpoint(method, path) == Endpoint(name, metering, api)


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/v1/embeddings"),
        ("PUT", "/v1/chat/completions"),
        ("POST", "/v1/models"),
        ("POST", "/v1/responses/resp_1"),
        ("GET", "/v1/responses/resp_1/other"),
        ("POST", "/v1/chat/completions/extra/more/segments"),
        ("POST", "/v1/conversations"),
        ("POST", "/v2/chat/completions"),
        ("POST", "/chat/completions"),
        ("POST", "/proxy/v1/chat/completions"),
        ("GET", "/v1"),
        ("GET", "/"),
    ],
)
def test_unknown_endpoint(method, path):
    assert PROVIDER.endpoint(method, path) is None


def test_compatible_host_configuration():
    groq = OpenAI(name="groq", hosts=("api.groq.com",), credential_env=("GROQ_API_KEY",), base_path="/openai/v1")
    assert (groq.name, groq.hosts, groq.credential_env) == ("groq", ("api.groq.com",), ("GROQ_API_KEY",))
    assert groq.endpoint("POST", "/openai/v1/chat/completions") == CHAT
    assert groq.endpoint("POST", "/v1/chat/completions") is None
    assert PROVIDER.name == "openai" and PROVIDER.base_path == "/v1"


def test_registry():
    assert registry.PROVIDERS["openai"].name == "openai"
    assert registry.for_host("api.openai.com") is registry.PROVIDERS["openai"]
    assert registry.for_host("API.OpenAI.com.") is registry.PROVIDERS["openai"]
    assert registry.for_host("openai.com") is None
    assert registry.for_host("api.openai.com.evil.example") is None


# --- credentials ---------------------------------------------------------------------------


def request(headers=(), url="https://api.openai.com/v1/chat/completions"):
    return http.Request.make("POST", url, headers=[(k.encode(), v.encode()) for k, v in headers])


@pytest.mark.parametrize(
    "headers, expected",
    [
        ([], []),
        ([("Authorization", "Bearer pk-1")], ["pk-1"]),
        ([("authorization", "bearer   pk-1  ")], ["pk-1"]),
        ([("Authorization", "BEARER pk-1")], ["pk-1"]),
        ([("Authorization", "Basic dXNlcjpwYXNz")], []),
        ([("Authorization", "Bearer ")], []),
        ([("api-key", "pk-azure")], ["pk-azure"]),
        ([("X-Api-Key", "pk-x")], ["pk-x"]),
        ([("Authorization", "Bearer pk-1"), ("api-key", "pk-2"), ("x-api-key", "pk-3")], ["pk-1", "pk-2", "pk-3"]),
        ([("Authorization", "Bearer pk-1"), ("Authorization", "Bearer pk-2")], ["pk-1", "pk-2"]),
        ([("Authorization", "Bearer pk-1"), ("api-key", "pk-1")], ["pk-1"]),
    ],
)
def test_credential(headers, expected):
    req = request(headers)
    assert PROVIDER.credential(req.headers, req.query) == expected


def test_authorize_replaces_every_client_credential_and_nothing_else():
    req = request(
        [("Authorization", "Bearer pk-1"), ("api-key", "pk-2"), ("X-API-KEY", "pk-3"), ("OpenAI-Organization", "org-1")],
        url="https://api.openai.com/v1/chat/completions?x=1",
    )
    PROVIDER.authorize(req.headers, req.query, "sk-real")
    assert req.headers.get_all("authorization") == ["Bearer sk-real"]
    assert "api-key" not in req.headers and "x-api-key" not in req.headers
    assert req.headers["openai-organization"] == "org-1"
    assert req.query.get_all("x") == ["1"]


# --- reading requests ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "endpoint, body, expected",
    [
        (CHAT, {"model": "gpt-4o"}, Call("gpt-4o", False, None, 1)),
        (CHAT, {"model": "gpt-4o", "stream": True, "max_tokens": 50}, Call("gpt-4o", True, 50, 1)),
        (CHAT, {"model": "o3", "max_completion_tokens": 900, "max_tokens": 300}, Call("o3", False, 900, 1)),  # the larger bounds it
        (CHAT, {"model": "o3", "max_completion_tokens": 90, "max_tokens": None, "n": 3}, Call("o3", False, 90, 3)),
        (CHAT, {"model": "gpt-4o", "stream": None, "n": None}, Call("gpt-4o", False, None, 1)),
        (RESPONSES, {"model": "gpt-5", "max_output_tokens": 2000, "stream": True}, Call("gpt-5", True, 2000, 1)),
        (RESPONSES, {"model": "gpt-5", "max_tokens": 5}, Call("gpt-5", False, None, 1)),
        (COMPLETIONS, {"model": "gpt-3.5-turbo-instruct"}, Call("gpt-3.5-turbo-instruct", False, 16, 1)),
        (COMPLETIONS, {"model": "davinci-002", "max_tokens": 64, "n": 2, "best_of": 5}, Call("davinci-002", False, 64, 5)),
        (COMPLETIONS, {"model": "davinci-002", "n": 4, "best_of": 1}, Call("davinci-002", False, 16, 4)),
        (EMBEDDINGS, {"model": "text-embedding-3-small", "input": "hi"}, Call("text-embedding-3-small", False, 0, 1)),
    ],
)
def test_read_call(endpoint, body, expected):
    assert PROVIDER.read_call(endpoint, "/v1/x", body) == expected


@pytest.mark.parametrize(
    "endpoint, body, field",
    [
        (CHAT, [], "JSON object"),
        (CHAT, "text", "JSON object"),
        (CHAT, {}, "'model'"),
        (CHAT, {"model": ""}, "'model'"),
        (CHAT, {"model": "  "}, "'model'"),
        (CHAT, {"model": 4}, "'model'"),
        (CHAT, {"model": ["gpt-4o"]}, "'model'"),
        (CHAT, {"model": "gpt-4o", "stream": "yes"}, "'stream'"),
        (CHAT, {"model": "gpt-4o", "stream": 1}, "'stream'"),
        (CHAT, {"model": "gpt-4o", "max_tokens": True}, "'max_tokens'"),
        (CHAT, {"model": "gpt-4o", "max_tokens": 0}, "'max_tokens'"),
        (CHAT, {"model": "gpt-4o", "max_tokens": -1}, "'max_tokens'"),
        (CHAT, {"model": "gpt-4o", "max_tokens": 10.5}, "'max_tokens'"),
        (CHAT, {"model": "gpt-4o", "max_tokens": "100"}, "'max_tokens'"),
        (CHAT, {"model": "gpt-4o", "max_completion_tokens": 10_000_001}, "'max_completion_tokens'"),
        (CHAT, {"model": "gpt-4o", "max_completion_tokens": {"a": 1}}, "'max_completion_tokens'"),
        (CHAT, {"model": "gpt-4o", "n": 0}, "'n'"),
        (CHAT, {"model": "gpt-4o", "n": 129}, "'n'"),
        (CHAT, {"model": "gpt-4o", "n": "2"}, "'n'"),
        (CHAT, {"model": "gpt-4o", "n": False}, "'n'"),
        (RESPONSES, {"model": "gpt-5", "max_output_tokens": [1]}, "'max_output_tokens'"),
        (RESPONSES, {"model": "gpt-5", "stream": "true"}, "'stream'"),
        (COMPLETIONS, {"model": "davinci-002", "best_of": 1.0}, "'best_of'"),
        (COMPLETIONS, {"model": "davinci-002", "max_tokens": 0}, "'max_tokens'"),
        (EMBEDDINGS, {"model": None}, "'model'"),
    ],
)
def test_read_call_refuses(endpoint, body, field):
    with pytest.raises(errors.BadRequest, match=field):
        PROVIDER.read_call(endpoint, "/v1/x", body)


def test_read_call_quotes_a_long_value_briefly():
    with pytest.raises(errors.BadRequest) as caught:
        PROVIDER.read_call(CHAT, "/v1/x", {"model": "gpt-4o", "max_tokens": "9" * 10_000})
    assert len(caught.value.message) < 120


@pytest.mark.parametrize(
    "endpoint, field",
    [(CHAT, "max_completion_tokens"), (RESPONSES, "max_output_tokens"), (COMPLETIONS, "max_tokens")],
)
def test_cap_output(endpoint, field):
    body = {"model": "m", "temperature": 0, "stop": ["\n"]}
    PROVIDER.cap_output(endpoint, body, 123)
    assert body == {"model": "m", "temperature": 0, "stop": ["\n"], field: 123}
    assert PROVIDER.read_call(endpoint, "/v1/x", body).max_output == 123


def test_cap_output_keeps_the_legacy_chat_field():
    body = {"model": "m", "max_tokens": None}
    PROVIDER.cap_output(CHAT, body, 123)
    assert body == {"model": "m", "max_tokens": 123}, "one cap field only: OpenAI refuses both"
    assert PROVIDER.read_call(CHAT, "/v1/x", body).max_output == 123


@pytest.mark.parametrize(
    "endpoint, body, injected, after",
    [
        (CHAT, {"stream": True}, True, {"stream": True, "stream_options": {"include_usage": True}}),
        (CHAT, {"stream": True, "stream_options": None}, True, {"stream": True, "stream_options": {"include_usage": True}}),
        (
            CHAT,
            {"stream": True, "stream_options": {"include_obfuscation": False, "include_usage": False}},
            True,
            {"stream": True, "stream_options": {"include_obfuscation": False, "include_usage": True}},
        ),
        (CHAT, {"stream": True, "stream_options": {"include_usage": True}}, False, None),
        (COMPLETIONS, {"stream": True}, True, {"stream": True, "stream_options": {"include_usage": True}}),
        (CHAT, {"stream": False}, False, None),
        (CHAT, {}, False, None),
        (RESPONSES, {"stream": True}, False, None),
        (EMBEDDINGS, {"stream": True}, False, None),
    ],
)
def test_prepare_stream(endpoint, body, injected, after):
    before = json.loads(json.dumps(body))
    assert PROVIDER.prepare_stream(endpoint, body) is injected
    assert body == (after or before)


# --- usage from JSON bodies ----------------------------------------------------------------

CHAT_BODY = {
    "id": "chatcmpl-CJ7kQ",
    "object": "chat.completion",
    "created": 1761000000,
    "model": "gpt-5.6-2026-07-01",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi."}, "finish_reason": "stop"}],
    "usage": {
        "prompt_tokens": 9657,
        "completion_tokens": 78,
        "total_tokens": 9735,
        "prompt_tokens_details": {"cached_tokens": 1200, "cache_write_tokens": 8000, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 37,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    },
    "service_tier": "default",
    "system_fingerprint": None,
}
RESPONSES_BODY = {
    "id": "resp_68f",
    "object": "response",
    "status": "completed",
    "model": "gpt-5.6-2026-07-01",
    "output": [],
    "usage": {
        "input_tokens": 18014,
        "input_tokens_details": {
            "cache_write_tokens": 18011,
            "cached_tokens": 0,
            "cache_write_tokens_details": {"ttl_12h_tokens": 11, "ttl_30m_tokens": 18000},
        },
        "output_tokens": 42,
        "output_tokens_details": {"reasoning_tokens": 25},
        "total_tokens": 18056,
    },
}
EMBEDDINGS_BODY = {
    "object": "list",
    "data": [{"object": "embedding", "index": 0, "embedding": "AAAA"}],
    "model": "text-embedding-3-small",
    "usage": {"prompt_tokens": 8, "total_tokens": 8},
}


@pytest.mark.parametrize(
    "endpoint, body, usage",
    [
        (
            CHAT,
            CHAT_BODY,
            Usage(input_tokens=9657, cached_tokens=1200, cache_write_5m_tokens=8000, output_tokens=78, reasoning_tokens=37),
        ),
        (
            RESPONSES,
            RESPONSES_BODY,
            Usage(
                input_tokens=18014,
                cache_write_5m_tokens=18000,
                cache_write_1h_tokens=11,
                output_tokens=42,
                reasoning_tokens=25,
            ),
        ),
        (EMBEDDINGS, EMBEDDINGS_BODY, Usage(input_tokens=8)),
        (
            COMPLETIONS,
            {"model": "gpt-3.5-turbo-instruct", "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}},
            Usage(input_tokens=5, output_tokens=7),
        ),
    ],
)
def test_usage_from_body(endpoint, body, usage):
    assert PROVIDER.usage_from_body(endpoint, body) == (usage, body["model"])


@pytest.mark.parametrize(
    "usage, expected",
    [
        # null or missing details count as none
        (
            {"prompt_tokens": 10, "completion_tokens": 3, "prompt_tokens_details": None, "completion_tokens_details": None},
            Usage(input_tokens=10, output_tokens=3),
        ),
        ({"prompt_tokens": 10, "completion_tokens": 3}, Usage(input_tokens=10, output_tokens=3)),
        # details larger than their totals are clamped: OpenAI bills the totals
        (
            {
                "prompt_tokens": 10,
                "completion_tokens": 3,
                "prompt_tokens_details": {"cached_tokens": 50, "cache_write_tokens": 5},
                "completion_tokens_details": {"reasoning_tokens": 9},
            },
            Usage(input_tokens=10, cached_tokens=10, output_tokens=3, reasoning_tokens=3),
        ),
        (
            {"prompt_tokens": 10, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 9}},
            Usage(input_tokens=10, cached_tokens=4, cache_write_5m_tokens=6, output_tokens=3),
        ),
        # garbage details are ignored, not raised
        (
            {"prompt_tokens": 10, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": "4"}},
            Usage(input_tokens=10, output_tokens=3),
        ),
        ({"prompt_tokens": 10, "completion_tokens": 3, "prompt_tokens_details": [1]}, Usage(input_tokens=10, output_tokens=3)),
        # garbage totals: no usage
        ({"prompt_tokens": 10}, None),
        ({"prompt_tokens": "10", "completion_tokens": 3}, None),
        ({"prompt_tokens": -1, "completion_tokens": 3}, None),
        ({"prompt_tokens": True, "completion_tokens": 3}, None),
        ({"prompt_tokens": 1.5, "completion_tokens": 3}, None),
        ({"input_tokens": 10, "output_tokens": 3}, None),  # the Responses shape on a chat endpoint
        (None, None),
        ([], None),
    ],
)
def test_usage_normalisation(usage, expected):
    assert PROVIDER.usage_from_body(CHAT, {"model": "gpt-4o", "usage": usage}) == (expected, "gpt-4o")


@pytest.mark.parametrize("body", [None, [], "x", {"usage": "x", "model": 3}, {"error": {"message": "bad"}}])
def test_usage_from_garbage_body(body):
    assert PROVIDER.usage_from_body(CHAT, body) == (None, None)


# --- stream trackers -----------------------------------------------------------------------


def sse(*chunks, named=False):
    """Serialise like OpenAI does: compact JSON, one event per chunk."""
    out = []
    for chunk in chunks:
        event = f"event: {chunk['type']}\n" if named else ""
        out.append(f"{event}data: {json.dumps(chunk, separators=(',', ':'), ensure_ascii=False)}\n\n".encode())
    return out


CHUNK_HEAD = {
    "id": "chatcmpl-CJ7kQ",
    "object": "chat.completion.chunk",
    "created": 1761000000,
    "model": "gpt-4o-mini-2024-07-18",
    "service_tier": "default",
    "system_fingerprint": "fp_560af6e559",
}


def chat_chunk(delta, finish_reason=None, with_usage=True):
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
    usage = {"usage": None} if with_usage else {}
    return CHUNK_HEAD | {"choices": [choice]} | usage | {"obfuscation": "Zk9"}


CHAT_USAGE = {
    "prompt_tokens": 1200,
    "completion_tokens": 45,
    "total_tokens": 1245,
    "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 20, "audio_tokens": 0},
}
CHAT_EVENTS = sse(
    chat_chunk({"role": "assistant", "content": "", "refusal": None}),
    chat_chunk({"content": "Bonjour"}),
    chat_chunk({"content": " à tous — "}),
    chat_chunk({"content": '{"usage":{"x":1}}'}),  # text that looks like usage must not fool the tracker
    chat_chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}),
    chat_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
    chat_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
    chat_chunk({}, "tool_calls"),
)
CHAT_USAGE_EVENT = sse(CHUNK_HEAD | {"choices": [], "usage": CHAT_USAGE, "obfuscation": "a"})[0]
DONE = b"data: [DONE]\n\n"
CHAT_STREAM = b"".join(CHAT_EVENTS) + CHAT_USAGE_EVENT + DONE
CHAT_TEXT = 'Bonjour à tous — {"usage":{"x":1}}get_weather{"city":"Paris"}'
CHAT_STREAM_USAGE = Usage(input_tokens=1200, cached_tokens=1024, output_tokens=45, reasoning_tokens=20)


def random_chunks(data, seed, pieces=12):
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(data)), pieces))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]


def run(tracker, chunks):
    return [tracker.feed(chunk) for chunk in chunks] + [tracker.feed(b"")]


@pytest.mark.parametrize("seed", range(25))
def test_chat_stream_with_injected_usage_drops_only_the_usage_chunk(seed):
    tracker = PROVIDER.stream_tracker(CHAT, injected_usage=True)
    sent = b"".join(run(tracker, random_chunks(CHAT_STREAM, seed)))
    assert sent == CHAT_STREAM.replace(CHAT_USAGE_EVENT, b"")
    assert tracker.usage() == CHAT_STREAM_USAGE
    assert tracker.model() == "gpt-4o-mini-2024-07-18"
    assert tracker.output_text() == CHAT_TEXT


@pytest.mark.parametrize("seed", range(25))
def test_chat_stream_the_client_asked_usage_for_passes_unchanged(seed):
    tracker = PROVIDER.stream_tracker(CHAT, injected_usage=False)
    chunks = random_chunks(CHAT_STREAM, seed)
    assert run(tracker, chunks) == chunks + [b""]  # every chunk goes on at once, untouched
    assert tracker.usage() == CHAT_STREAM_USAGE
    assert tracker.output_text() == CHAT_TEXT


def test_chat_stream_cut_short():
    stream = b"".join(sse(chat_chunk({"role": "assistant", "content": ""}), chat_chunk({"content": "Once upon"}))) + b'data: {"id":'
    for injected in (True, False):
        tracker = PROVIDER.stream_tracker(CHAT, injected_usage=injected)
        assert b"".join(run(tracker, random_chunks(stream, 3, pieces=5))) == stream  # the tail is flushed too
        assert tracker.usage() is None
        assert tracker.output_text() == "Once upon"


def test_chat_stream_without_any_usage_chunk():
    stream = b"".join(sse(chat_chunk({"content": "hi"}, with_usage=False), chat_chunk({}, "stop", with_usage=False))) + DONE
    tracker = PROVIDER.stream_tracker(CHAT, injected_usage=True)
    assert b"".join(run(tracker, [stream])) == stream
    assert tracker.usage() is None and tracker.output_text() == "hi"


def test_usage_on_a_chunk_with_choices_is_not_dropped():
    # Some compatible servers put usage on the final content chunk: it carries text, so it stays.
    last = CHUNK_HEAD | {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": CHAT_USAGE}
    stream = b"".join(sse(chat_chunk({"content": "hi"}), last)) + DONE
    tracker = PROVIDER.stream_tracker(CHAT, injected_usage=True)
    assert b"".join(run(tracker, [stream])) == stream
    assert tracker.usage() == CHAT_STREAM_USAGE


def test_completions_stream():
    head = {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "gpt-3.5-turbo-instruct"}
    usage_event = sse(head | {"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}})[0]
    stream = b"".join(sse(*[head | {"choices": [{"text": t, "index": 0, "finish_reason": None}]} for t in ("Hel", "lo")]))
    stream += usage_event + DONE
    tracker = PROVIDER.stream_tracker(COMPLETIONS, injected_usage=True)
    assert b"".join(run(tracker, random_chunks(stream, 1))) == stream.replace(usage_event, b"")
    assert tracker.usage() == Usage(input_tokens=4, output_tokens=2)
    assert tracker.output_text() == "Hello"
    assert tracker.model() == "gpt-3.5-turbo-instruct"


def test_crlf_stream():
    stream = CHAT_STREAM.replace(b"\n", b"\r\n")
    tracker = PROVIDER.stream_tracker(CHAT, injected_usage=True)
    sent = b"".join(run(tracker, random_chunks(stream, 7)))
    assert sent == stream.replace(CHAT_USAGE_EVENT.replace(b"\n", b"\r\n"), b"")
    assert tracker.usage() == CHAT_STREAM_USAGE


def test_a_tracker_failure_passes_the_stream_on_untouched(monkeypatch):
    tracker = PROVIDER.stream_tracker(CHAT, injected_usage=True)
    chunks = random_chunks(CHAT_STREAM, 5)
    sent = [tracker.feed(chunks[0])]
    monkeypatch.setattr(tracker, "_observe", lambda event: 1 / 0)
    sent += [tracker.feed(chunk) for chunk in chunks[1:]] + [tracker.feed(b"")]
    assert b"".join(sent) == CHAT_STREAM  # nothing lost, nothing doubled


@pytest.mark.parametrize("garbage", [b"\xff\xfe\x00", b"data: {not json\n\n", b'data: {"usage":{"prompt_tokens":"x"}}\n\n', b"data: 5\n\n"])
def test_garbage_never_raises(garbage):
    for injected in (True, False):
        tracker = PROVIDER.stream_tracker(CHAT, injected_usage=injected)
        assert b"".join(run(tracker, [garbage])) == garbage
        assert tracker.usage() is None
        assert tracker.output_text() == ""


RESPONSE_HEAD = {"id": "resp_68f", "object": "response", "created_at": 1761000000, "model": "gpt-5.6-2026-07-01"}
RESPONSES_STREAM_EVENTS = [
    {"type": "response.created", "sequence_number": 0, "response": RESPONSE_HEAD | {"status": "in_progress", "usage": None}},
    {"type": "response.in_progress", "sequence_number": 1, "response": RESPONSE_HEAD | {"status": "in_progress", "usage": None}},
    {"type": "response.output_item.added", "sequence_number": 2, "output_index": 0, "item": {"id": "rs_1", "type": "reasoning", "summary": []}},
    {"type": "response.reasoning_summary_text.delta", "sequence_number": 3, "item_id": "rs_1", "output_index": 0, "summary_index": 0, "delta": "Thinking. "},
    {"type": "response.output_item.added", "sequence_number": 4, "output_index": 1, "item": {"id": "msg_1", "type": "message", "content": []}},
    {"type": "response.output_text.delta", "sequence_number": 5, "item_id": "msg_1", "output_index": 1, "content_index": 0, "delta": "Grüß ", "logprobs": [], "obfuscation": "q"},
    {"type": "response.output_text.delta", "sequence_number": 6, "item_id": "msg_1", "output_index": 1, "content_index": 0, "delta": "dich", "logprobs": []},
    {"type": "response.refusal.delta", "sequence_number": 7, "item_id": "msg_1", "output_index": 1, "content_index": 1, "delta": "!"},
    {"type": "response.function_call_arguments.delta", "sequence_number": 8, "item_id": "fc_1", "output_index": 2, "delta": '{"q":1}'},
    {"type": "response.output_text.done", "sequence_number": 9, "item_id": "msg_1", "output_index": 1, "content_index": 0, "text": "Grüß dich", "logprobs": []},
]  # fmt: skip
RESPONSES_COMPLETED = {
    "type": "response.completed",
    "sequence_number": 10,
    "response": RESPONSE_HEAD | {"status": "completed", "usage": RESPONSES_BODY["usage"]},
}


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("final", ["response.completed", "response.incomplete", "response.failed"])
def test_responses_stream(seed, final):
    stream = b"".join(sse(*RESPONSES_STREAM_EVENTS, RESPONSES_COMPLETED | {"type": final}, named=True))
    tracker = PROVIDER.stream_tracker(RESPONSES, injected_usage=False)
    chunks = random_chunks(stream, seed)
    assert run(tracker, chunks) == chunks + [b""]
    assert tracker.usage() == PROVIDER.usage_from_body(RESPONSES, RESPONSES_BODY)[0]
    assert tracker.model() == "gpt-5.6-2026-07-01"
    assert tracker.output_text() == 'Thinking. Grüß dich!{"q":1}'


def test_responses_stream_cut_short_and_without_event_lines():
    # Some compatible servers send only data lines; the event type is then read from the JSON.
    stream = b"".join(sse(*RESPONSES_STREAM_EVENTS[:7]))[:-30]
    tracker = PROVIDER.stream_tracker(RESPONSES, injected_usage=False)
    assert b"".join(run(tracker, random_chunks(stream, 2))) == stream
    assert tracker.usage() is None
    assert tracker.model() == "gpt-5.6-2026-07-01"
    assert tracker.output_text() == "Thinking. Grüß "


# --- the real openai SDK against pouch's replies --------------------------------------------


def sdk(handler, max_retries=0):
    transport = httpx2.MockTransport(handler)
    return openai.OpenAI(api_key="pk-test", http_client=httpx2.Client(transport=transport), max_retries=max_retries)


def replying(reply, calls=None):
    def handler(request):
        if calls is not None:
            calls.append(request)
        return httpx2.Response(reply.status, headers=reply.headers, content=reply.body)

    return handler


def chat(client):
    return client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])


@pytest.mark.parametrize(
    "error, exception, kind",
    [
        (errors.InvalidKey("unknown pouch key"), openai.AuthenticationError, "invalid_request_error"),
        (errors.ModelNotAllowed("key 'alice' may not use gpt-5"), openai.PermissionDeniedError, "invalid_request_error"),
        (errors.EndpointNotMetered("images are not metered"), openai.PermissionDeniedError, "invalid_request_error"),
        (errors.RateLimited("60 requests/min", {"retry-after": "3"}), openai.RateLimitError, "requests"),
        (errors.BudgetExhausted("budget of key 'alice' exhausted"), openai.RateLimitError, "insufficient_quota"),
        (errors.ModelNotPriced("no price for gpt-x"), openai.BadRequestError, "invalid_request_error"),
        (errors.BadRequest("'model' must be a non-empty string"), openai.BadRequestError, "invalid_request_error"),
        (errors.StoreUnavailable("store unavailable"), openai.InternalServerError, "server_error"),
    ],
)
def test_errors_raise_the_sdk_exception(error, exception, kind):
    reply = PROVIDER.error(error)
    assert reply.status == error.status
    assert reply.headers["content-type"] == "application/json"
    assert json.loads(reply.body) == {"error": {"message": error.message, "type": kind, "param": None, "code": error.code}}
    with pytest.raises(exception) as caught:
        chat(sdk(replying(reply)))
    assert caught.value.code == error.code
    assert caught.value.type == kind
    assert error.message in caught.value.message
    for name, value in error.headers.items():
        assert caught.value.response.headers[name] == value


def test_budget_exhaustion_is_not_retried():
    reply = PROVIDER.error(errors.BudgetExhausted("budget exhausted", {"retry-after-ms": "1"}))
    assert reply.headers["x-should-retry"] == "false"
    calls = []
    with pytest.raises(openai.RateLimitError):
        chat(sdk(replying(reply, calls), max_retries=2))
    assert len(calls) == 1


def test_rate_limit_is_retried():
    # The contrast that shows the header above is what stops the SDK.
    calls = []
    with pytest.raises(openai.RateLimitError):
        chat(sdk(replying(PROVIDER.error(errors.RateLimited("slow down", {"retry-after-ms": "1"})), calls), max_retries=2))
    assert len(calls) == 3


MOCK_USAGE = Usage(input_tokens=120, cached_tokens=64, cache_write_5m_tokens=6, cache_write_1h_tokens=4, output_tokens=30, reasoning_tokens=12)
MOCK_TEXT = "Hello there, I am a mock — ça va?"


def mocking(usage=MOCK_USAGE, text=MOCK_TEXT, seen=None):
    """An upstream that is pouch's mock: the handler the SDK talks to."""

    def handler(request):
        body = json.loads(request.content)
        endpoint = PROVIDER.endpoint(request.method, request.url.raw_path.decode())
        call = PROVIDER.read_call(endpoint, request.url.path, body)
        reply = PROVIDER.mock(endpoint, call, body, usage, text)
        if seen is not None:
            seen.append(reply)
        assert reply.headers["x-pouch-mock"] == "true"
        return httpx2.Response(reply.status, headers=reply.headers, content=reply.body)

    return handler


def assert_chat_usage(usage):
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (120, 30, 150)
    assert usage.prompt_tokens_details.cached_tokens == 64
    assert usage.prompt_tokens_details.cache_write_tokens == 10
    assert usage.completion_tokens_details.reasoning_tokens == 12


def test_mock_chat():
    completion = chat(sdk(mocking()))
    assert completion.id.startswith("chatcmpl-mock")
    assert completion.model == "gpt-4o"
    assert completion.choices[0].message.content == MOCK_TEXT
    assert completion.choices[0].finish_reason == "stop"
    assert_chat_usage(completion.usage)


def test_mock_chat_cut_at_the_cap():
    client = sdk(mocking())
    completion = client.chat.completions.create(model="gpt-4o", messages=[], max_completion_tokens=30, n=2)
    assert [c.finish_reason for c in completion.choices] == ["length", "length"]


def test_mock_chat_stream_with_usage():
    seen = []
    stream = sdk(mocking(seen=seen)).chat.completions.create(
        model="gpt-4o", messages=[], stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == MOCK_TEXT
    assert chunks[-1].choices == []
    assert_chat_usage(chunks[-1].usage)
    assert all(c.usage is None for c in chunks[:-1])
    # What pouch's own tracker reads from its mock is what the mock was told (chat reports
    # cache writes without their lifetime, so all count at the default one).
    tracker = PROVIDER.stream_tracker(CHAT, injected_usage=False)
    tracker.feed(seen[0].body)
    assert tracker.usage() == Usage(120, 64, 10, 0, 30, 12)
    assert tracker.output_text() == MOCK_TEXT


def test_mock_chat_stream_without_usage():
    chunks = list(sdk(mocking()).chat.completions.create(model="gpt-4o", messages=[], stream=True))
    assert all(c.choices and c.usage is None for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == MOCK_TEXT
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_mock_chat_stream_helper():
    with sdk(mocking()).chat.completions.stream(model="gpt-4o", messages=[], stream_options={"include_usage": True}) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content == MOCK_TEXT
    assert_chat_usage(final.usage)


def assert_responses_usage(usage):
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (120, 30, 150)
    assert usage.input_tokens_details.cached_tokens == 64
    assert usage.input_tokens_details.cache_write_tokens == 10
    assert usage.output_tokens_details.reasoning_tokens == 12


def test_mock_responses():
    response = sdk(mocking()).responses.create(model="gpt-5", input="hi")
    assert response.id.startswith("resp_mock")
    assert response.status == "completed"
    assert response.output_text == MOCK_TEXT
    assert_responses_usage(response.usage)
    assert PROVIDER.usage_from_body(RESPONSES, response.to_dict()) == (MOCK_USAGE, "gpt-5")


def test_mock_responses_stream():
    seen = []
    events = list(sdk(mocking(seen=seen)).responses.create(model="gpt-5", input="hi", stream=True))
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == MOCK_TEXT
    assert events[-1].response.output_text == MOCK_TEXT
    assert_responses_usage(events[-1].response.usage)
    tracker = PROVIDER.stream_tracker(RESPONSES, injected_usage=False)
    tracker.feed(seen[0].body)
    assert (tracker.usage(), tracker.model(), tracker.output_text()) == (MOCK_USAGE, "gpt-5", MOCK_TEXT)


def test_mock_responses_stream_helper():
    with sdk(mocking()).responses.stream(model="gpt-5", input="hi") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == MOCK_TEXT
    assert final.output_text == MOCK_TEXT
    assert_responses_usage(final.usage)


def test_mock_responses_cut_at_the_cap_is_incomplete():
    client = sdk(mocking())
    response = client.responses.create(model="gpt-5", input="hi", max_output_tokens=30)
    assert (response.status, response.incomplete_details.reason) == ("incomplete", "max_output_tokens")
    events = list(client.responses.create(model="gpt-5", input="hi", max_output_tokens=30, stream=True))
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.usage.output_tokens == 30


def test_mock_completions():
    completion = sdk(mocking()).completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hi")
    assert completion.choices[0].text == MOCK_TEXT
    assert completion.choices[0].finish_reason == "length"  # no max_tokens: OpenAI's default cap is 16
    assert_chat_usage(completion.usage)


def test_mock_completions_stream():
    stream = sdk(mocking()).completions.create(
        model="gpt-3.5-turbo-instruct", prompt="Say hi", max_tokens=100, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == MOCK_TEXT
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert_chat_usage(chunks[-1].usage)


def test_mock_embeddings_default_base64():
    seen = []
    client = sdk(mocking(seen=seen))
    result = client.embeddings.create(model="text-embedding-3-small", input=["hello", "world"])
    assert json.loads(seen[0].body)["data"][0]["embedding"].isascii()  # the SDK asked for base64
    assert [len(e.embedding) for e in result.data] == [1536, 1536]
    assert (result.usage.prompt_tokens, result.usage.total_tokens) == (120, 120)
    again = client.embeddings.create(model="text-embedding-3-small", input="hello")
    assert again.data[0].embedding == result.data[0].embedding  # deterministic per input
    assert result.data[0].embedding != result.data[1].embedding
    assert sum(v * v for v in result.data[0].embedding) == pytest.approx(1.0, abs=1e-5)


def test_mock_embeddings_floats_sizes_and_token_inputs():
    client = sdk(mocking())
    floats = client.embeddings.create(model="text-embedding-3-small", input="hello", encoding_format="float")
    packed = client.embeddings.create(model="text-embedding-3-small", input="hello")
    assert floats.data[0].embedding == pytest.approx(packed.data[0].embedding, abs=1e-6)
    assert len(client.embeddings.create(model="text-embedding-3-large", input="x").data[0].embedding) == 3072
    assert len(client.embeddings.create(model="text-embedding-3-large", input="x", dimensions=256).data[0].embedding) == 256
    assert len(client.embeddings.create(model="text-embedding-3-small", input=[1, 2, 3]).data) == 1
    assert len(client.embeddings.create(model="text-embedding-3-small", input=[[1, 2], [3]]).data) == 2


def test_mock_embeddings_base64_is_little_endian_float32():
    call = Call("text-embedding-3-small", False, 0)
    body = {"model": call.model, "input": "a", "encoding_format": "base64", "dimensions": 4}
    encoded = json.loads(PROVIDER.mock(EMBEDDINGS, call, body, Usage(input_tokens=1), "").body)["data"][0]["embedding"]
    values = struct.unpack("<4f", base64.b64decode(encoded))
    floats = json.loads(PROVIDER.mock(EMBEDDINGS, call, body | {"encoding_format": "float"}, Usage(input_tokens=1), "").body)
    assert values == pytest.approx(floats["data"][0]["embedding"], abs=1e-6)


# --- usage edges that would bill wrongly ---------------------------------------------------


def test_zero_counts_are_counts():
    # An all-cached prompt with nothing generated is a billable answer, not a missing usage.
    usage = {"prompt_tokens": 1024, "completion_tokens": 0, "prompt_tokens_details": {"cached_tokens": 1024}}
    assert PROVIDER.usage_from_body(CHAT, {"model": "gpt-4o", "usage": usage}) == (
        Usage(input_tokens=1024, cached_tokens=1024), "gpt-4o")
    empty = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    assert PROVIDER.usage_from_body(CHAT, {"model": "gpt-4o", "usage": empty}) == (Usage(), "gpt-4o")


def test_cache_and_reasoning_details_of_completions_and_embeddings():
    usage = {"prompt_tokens": 100, "completion_tokens": 10, "prompt_tokens_details": {"cached_tokens": 60},
             "completion_tokens_details": {"reasoning_tokens": 4}}  # fmt: skip
    body = {"model": "gpt-3.5-turbo-instruct", "usage": usage}
    assert PROVIDER.usage_from_body(COMPLETIONS, body)[0] == Usage(100, 60, 0, 0, 10, 4)
    body = {"model": "text-embedding-3-small", "usage": {"prompt_tokens": 100, "prompt_tokens_details": {"cached_tokens": 60}}}
    assert PROVIDER.usage_from_body(EMBEDDINGS, body)[0] == Usage(input_tokens=100, cached_tokens=60)


def test_each_paid_tool_call_of_a_responses_object_is_counted():
    output = [{"type": "web_search_call"}, {"type": "message"}, {"type": "web_search_call"}, {"type": "file_search_call"},
              {"type": "mcp_call"}, {"type": "function_call"}, "junk"]  # fmt: skip
    body = RESPONSES_BODY | {"output": output}
    usage = PROVIDER.usage_from_body(RESPONSES, body)[0]
    assert usage.tool_calls == (("file_search", 1), ("mcp", 1), ("web_search", 2))
    assert PROVIDER.usage_from_body(CHAT, CHAT_BODY | {"output": output})[0].tool_calls == ()  # only Responses lists calls


def test_absurdly_nested_json_does_not_stop_the_tracker():
    # json.loads raises RecursionError, not ValueError, on deep nesting: the chunk is skipped.
    nested = b"data: " + b'{"model":' * 100_000 + b"1" + b"}" * 100_000 + b"\n\n"
    for injected in (True, False):
        tracker = PROVIDER.stream_tracker(CHAT, injected_usage=injected)
        run(tracker, [nested, CHAT_STREAM])
        assert tracker.usage() == CHAT_STREAM_USAGE


def test_the_model_is_taken_from_the_first_chunks_that_name_one():
    def stream(*models):
        chunks = [CHUNK_HEAD | {"model": model, "choices": [{"index": 0, "delta": {"content": "x"}}]} for model in models]
        usage = CHUNK_HEAD | {"choices": [], "usage": CHAT_USAGE}
        del usage["model"]
        return b"".join(sse(*chunks, usage))

    def model(data):
        tracker = PROVIDER.stream_tracker(CHAT, injected_usage=False)
        run(tracker, [data])
        return tracker.model()

    assert model(stream("gpt-4o-2024-08-06", "gpt-4o-2024-08-06")) == "gpt-4o-2024-08-06"
    assert model(stream("", "gpt-4o-2024-08-06")) == "gpt-4o-2024-08-06"  # Azure's content-filter chunk first
    assert model(stream(7, "gpt-4o-2024-08-06")) == "gpt-4o-2024-08-06"
    assert model(stream("gpt-4o-2024-08-06", "")) == "gpt-4o-2024-08-06"  # a later chunk does not unname it
    last = CHUNK_HEAD | {"model": "gpt-4o-mini", "choices": [], "usage": CHAT_USAGE}
    unnamed = chat_chunk({"content": "x"}) | {"model": ""}
    assert model(b"".join(sse(unnamed, unnamed, unnamed, last))) == "gpt-4o-mini"  # else the usage chunk's


def test_a_usage_object_written_with_spaces_is_read():
    # Compatible servers (vLLM, llama.cpp) do not write compact JSON.
    events = [json.dumps(chat_chunk({"content": "hi"})), json.dumps(CHUNK_HEAD | {"choices": [], "usage": CHAT_USAGE})]
    stream = b"".join(f"data: {event}\n\n".encode() for event in events) + DONE
    assert b'"usage": {' in stream
    for injected in (True, False):
        tracker = PROVIDER.stream_tracker(CHAT, injected_usage=injected)
        run(tracker, [stream])
        assert tracker.usage() == CHAT_STREAM_USAGE


def test_an_unreadable_event_is_passed_on_even_when_usage_chunks_are_dropped():
    broken = b'data: {"choices":[],"usage":{"prompt_tokens":1,\n\n'
    stream = b"".join(sse(chat_chunk({"content": "hi"}))) + broken + CHAT_USAGE_EVENT + DONE
    tracker = PROVIDER.stream_tracker(CHAT, injected_usage=True)
    assert b"".join(run(tracker, [stream])) == stream.replace(CHAT_USAGE_EVENT, b"")
    assert tracker.usage() == CHAT_STREAM_USAGE


class FailingSplitter:
    """A splitter that breaks while holding what its predecessor held."""

    def __init__(self, held):
        self.tail = held.tail

    def feed(self, data):
        raise RuntimeError("a splitter bug")


def test_a_tracker_whose_splitter_fails_flushes_what_it_held(monkeypatch):
    # An injected-usage tracker holds a partial event back; if it breaks, that part goes on too.
    for injected in (True, False):
        tracker = PROVIDER.stream_tracker(CHAT, injected_usage=injected)
        half = len(CHAT_EVENTS[0]) // 2
        sent = [tracker.feed(CHAT_EVENTS[0][:half])]
        monkeypatch.setattr(tracker, "_splitter", FailingSplitter(tracker._splitter))
        sent += [tracker.feed(CHAT_EVENTS[0][half:]), tracker.feed(CHAT_EVENTS[1])]
        assert b"".join(sent) == CHAT_EVENTS[0] + CHAT_EVENTS[1]


def test_a_failing_tracker_that_forwards_at_once_sends_each_byte_once(monkeypatch):
    tracker = PROVIDER.stream_tracker(CHAT, injected_usage=False)
    half = len(CHAT_EVENTS[0]) // 2
    sent = [tracker.feed(CHAT_EVENTS[0][:half])]  # held by the splitter, but already sent
    monkeypatch.setattr(tracker, "_observe", lambda event: 1 / 0)
    sent += [tracker.feed(CHAT_EVENTS[0][half:] + CHAT_EVENTS[1]), tracker.feed(b"")]
    assert b"".join(sent) == CHAT_EVENTS[0] + CHAT_EVENTS[1]


def test_output_text_of_every_kind_of_billed_delta():
    stream = b"".join(sse(
        chat_chunk({"refusal": "No. "}),
        chat_chunk({"reasoning_content": "Because. "}),
        chat_chunk({"function_call": {"name": "f", "arguments": "{}"}}),
    ))  # fmt: skip
    tracker = PROVIDER.stream_tracker(CHAT, injected_usage=False)
    run(tracker, [stream])
    assert tracker.output_text() == "No. Because. f{}"
    event = {"type": "response.reasoning_text.delta", "sequence_number": 1, "delta": "Step 1."}
    tracker = PROVIDER.stream_tracker(RESPONSES, injected_usage=False)
    run(tracker, [b"".join(sse(event, named=True))])
    assert tracker.output_text() == "Step 1."


def test_a_responses_stream_cut_short_knows_its_model_from_response_created():
    stream = b"".join(sse(*RESPONSES_STREAM_EVENTS[:1], RESPONSES_STREAM_EVENTS[5], named=True))
    tracker = PROVIDER.stream_tracker(RESPONSES, injected_usage=False)
    run(tracker, [stream])
    assert (tracker.model(), tracker.usage()) == ("gpt-5.6-2026-07-01", None)


def test_data_only_responses_events_whose_type_is_not_their_first_field():
    moved = [{k: v for k, v in e.items() if k != "type"} | {"type": e["type"]}
             for e in [*RESPONSES_STREAM_EVENTS, RESPONSES_COMPLETED]]  # fmt: skip
    tracker = PROVIDER.stream_tracker(RESPONSES, injected_usage=False)
    run(tracker, [b"".join(sse(*moved))])
    assert tracker.usage() == PROVIDER.usage_from_body(RESPONSES, RESPONSES_BODY)[0]
    assert tracker.output_text() == 'Thinking. Grüß dich!{"q":1}'


def test_a_responses_object_without_usage_has_none():
    body = {"model": "gpt-4o", "output": [{"type": "web_search_call"}], "status": "failed"}
    assert PROVIDER.usage_from_body(RESPONSES, body) == (None, "gpt-4o")
    assert PROVIDER.usage_from_body(RESPONSES, body | {"usage": None}) == (None, "gpt-4o")


def test_a_later_unreadable_usage_does_not_wipe_the_usage_read():
    garbage = CHUNK_HEAD | {"choices": [], "usage": {"prompt_tokens": "many"}}
    stream = b"".join(CHAT_EVENTS) + CHAT_USAGE_EVENT + b"".join(sse(garbage)) + DONE
    for injected in (True, False):
        tracker = PROVIDER.stream_tracker(CHAT, injected_usage=injected)
        run(tracker, [stream])
        assert tracker.usage() == CHAT_STREAM_USAGE
