import base64
import json
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pouch.providers import registry
from pouch.providers.transcript import render_request, render_response
from pouch.providers.transcript_format import Unrecognised, sse_events

# Every request shape's renderer, whichever provider folder defines it.
RENDERERS = {name: api.transcript for name, api in registry.APIS.items() if api.transcript}
from tests.fakes import openai_shapes as shapes

CAT_PNG = "data:image/png;base64," + base64.b64encode(b"\x89PNG" + bytes(125_000)).decode()


def sse(*events, named=False) -> bytes:
    """An event stream; ``named`` adds ``event:`` lines from each event's type (Responses, Anthropic)."""
    out = b""
    for event in events:
        data = event if isinstance(event, str) else json.dumps(event)
        if named and isinstance(event, dict):
            out += f"event: {event['type']}\n".encode()
        out += f"data: {data}\n\n".encode()
    return out


def fake_stream(route, body, **controls) -> bytes:
    return b"".join(event.data for event in route(body, shapes.Controls(**controls)))


def chunk(delta=None, index=0, finish=None, **extra):
    choice = {"index": index, "delta": delta or {}, "logprobs": None, "finish_reason": finish}
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "gpt-4o", "choices": [choice], **extra}


# --- chat completions ----------------------------------------------------------------------

CHAT_REQUEST = {
    "model": "gpt-4o",
    "stream": True,
    "max_completion_tokens": 500,
    "temperature": 0.2,
    "n": 2,
    "response_format": {"type": "json_schema", "json_schema": {"name": "weather", "schema": {}}},
    "reasoning_effort": "low",
    "tools": [
        {"type": "function", "function": {"name": "get_weather", "parameters": {
            "type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
            "required": ["city"]}}},
        {"type": "function", "function": {"name": "search", "parameters": {
            "type": "object", "properties": {"query": {"type": "string"}}}}},
    ],
    "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": [
            {"type": "text", "text": "Where is this cat?\nAnd what's the weather there?"},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
            {"type": "image_url", "image_url": {"url": CAT_PNG, "detail": "high"}},
        ]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 18}'},
    ],
}  # fmt: skip


def test_chat_request():
    assert render_request("chat", CHAT_REQUEST) == "\n".join([
        "model gpt-4o · stream · max_completion_tokens 500 · temperature 0.2 · n 2 · tools 2"
        " · response_format json_schema weather · reasoning_effort low",
        "tools  get_weather(city, unit?)",
        "       search(query)",
        "── system ──",
        "You are a helpful assistant.",
        "── user ──",
        "Where is this cat?\nAnd what's the weather there?",
        "[image: https://example.com/cat.png]",
        "[image: data:image/png, 122 KB, detail high]",
        "── assistant ──",
        '→ get_weather({"city": "Paris"})  (call_1)',
        "── tool (call_1) ──",
        '{"temp": 18}',
    ])  # fmt: skip


def test_chat_request_other_parts_are_placeholders():
    audio = base64.b64encode(bytes(3000)).decode()
    pdf = "data:application/pdf;base64," + base64.b64encode(bytes(40_000)).decode()
    body = {"model": "gpt-4o-audio-preview", "max_tokens": 10, "messages": [
        {"role": "developer", "content": "Be terse."},
        {"role": "user", "name": "alice", "content": [
            {"type": "input_audio", "input_audio": {"data": audio, "format": "wav"}},
            {"type": "file", "file": {"filename": "report.pdf", "file_data": pdf}},
            {"type": "file", "file": {"file_id": "file-abc"}},
            {"type": "video", "video": {"data": audio * 10}},
        ]},
        {"role": "assistant", "content": "", "refusal": "I can't help with that."},
    ]}  # fmt: skip
    text = render_request("chat", body)
    assert "max_tokens 10" in text
    assert "── developer ──\nBe terse." in text
    assert "── user (alice) ──\n[audio: wav, 3 KB]\n[file: report.pdf, data:application/pdf, 39 KB]\n" in text
    assert "[file: file-abc]" in text
    assert '[video] {"video": {"data": "[base64, 29 KB]"}}' in text  # unknown part: its JSON, base64 elided
    assert "refusal: I can't help with that." in text
    assert audio[:100] not in text and "AAAA" not in text


def test_chat_response_with_tool_calls_refusal_and_usage():
    body = {
        "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "Let me look.", "refusal": None, "tool_calls": [
                {"id": "call_a", "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}},
                {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
            ]}}],
        "usage": {"prompt_tokens": 123, "completion_tokens": 45, "total_tokens": 168,
                  "prompt_tokens_details": {"cached_tokens": 100},
                  "completion_tokens_details": {"reasoning_tokens": 12}},
    }  # fmt: skip
    assert render_response("chat", body) == "\n".join([
        "model gpt-4o-2024-08-06",
        "── assistant ──",
        "Let me look.",
        '→ get_weather({"city": "Oslo"})  (call_a)',
        "→ get_time({})  (call_b)",
        "finish: tool_calls",
        "usage: input 123 (cached 100) · output 45 (reasoning 12)",
    ])  # fmt: skip


def test_chat_response_labels_each_choice_when_n_is_more_than_one():
    body = {"model": "gpt-4o", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Heads."}, "finish_reason": "stop"},
        {"index": 1, "message": {"role": "assistant", "content": "Tails."}, "finish_reason": "length"},
    ], "usage": {"prompt_tokens": 5, "completion_tokens": 4}}  # fmt: skip
    text = render_response("chat", body)
    assert "── assistant (choice 0) ──\nHeads.\nfinish: stop\n" in text
    assert "── assistant (choice 1) ──\nTails.\nfinish: length\n" in text


def test_chat_response_from_the_fake():
    body = shapes.chat_completions({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
                                   shapes.Controls(usage={"cached_tokens": 3}))  # fmt: skip
    text = render_response("chat", body)
    assert text.startswith("model gpt-4o-mini\n── assistant ──\necho: hi\nfinish: stop\nusage: input ")
    assert "(cached 3)" in text


def test_chat_stream_is_reassembled():
    body = {"model": "gpt-4o", "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "tell me a story"}]}  # fmt: skip
    stream = fake_stream(shapes.chat_completions, body, reply="Once upon a time, the end.")
    assert render_response("chat", sse=stream) == "\n".join([
        "model gpt-4o",
        "── assistant ──",
        "Once upon a time, the end.",
        "finish: stop",
        "usage: input 11 · output 8",
        "streamed: 10 events",
    ])  # fmt: skip


def test_chat_stream_tool_call_fragments_fold_by_index():
    stream = sse(
        chunk({"role": "assistant", "content": None}),
        chunk({"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                               "function": {"name": "get_weather", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"ci'}}]}),
        chunk({"tool_calls": [{"index": 1, "id": "call_b", "type": "function",
                               "function": {"name": "get_time", "arguments": '{"tz":'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ty": "Paris"}'}}]}),
        chunk({"tool_calls": [{"index": 1, "function": {"arguments": ' "CET"}'}}]}),
        chunk(finish="tool_calls"),
        {"id": "chatcmpl-1", "model": "gpt-4o", "choices": [], "usage": {"prompt_tokens": 50, "completion_tokens": 20}},
        "[DONE]",
    )  # fmt: skip
    assert render_response("chat", sse=stream) == "\n".join([
        "model gpt-4o",
        "── assistant ──",
        '→ get_weather({"city": "Paris"})  (call_a)',
        '→ get_time({"tz": "CET"})  (call_b)',
        "finish: tool_calls",
        "usage: input 50 · output 20",
        "streamed: 9 events",
    ])  # fmt: skip


def test_chat_stream_with_two_choices_interleaved():
    stream = sse(
        chunk({"role": "assistant", "content": "Hea"}, index=0),
        chunk({"role": "assistant", "content": "Ta"}, index=1),
        chunk({"content": "ds."}, index=0, finish="stop"),
        chunk({"content": "ils."}, index=1, finish="stop"),
        "[DONE]",
    )
    text = render_response("chat", sse=stream)
    assert "── assistant (choice 0) ──\nHeads.\nfinish: stop\n── assistant (choice 1) ──\nTails.\n" in text


def test_chat_stream_cut_short_shows_what_arrived():
    body = {"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "one two three four"}]}
    stream = fake_stream(shapes.chat_completions, body)
    cut = stream[: stream.index(b"four")]  # mid-event: the last event is a fragment
    text = render_response("chat", sse=cut)
    assert "── assistant ──\necho: one two three\n" in text
    assert "finish:" not in text
    assert "usage: not reported" in text
    assert text.endswith("stream ended early (no [DONE])")


def test_chat_stream_with_a_tool_call_cut_mid_arguments():
    call = {"index": 0, "id": "call_a", "function": {"name": "f", "arguments": '{"q": "ab'}}
    stream = sse(chunk({"tool_calls": [call]}))
    text = render_response("chat", sse=stream)
    assert '→ f({"q": "ab)  (call_a)' in text  # the fragment, as received
    assert "stream ended early" in text


def test_error_mid_stream():
    stream = sse(chunk({"content": "Hi"}), {"error": {"message": "The server had an error", "type": "server_error"}})
    text = render_response("chat", sse=stream)
    assert "Hi" in text and "error (server_error): The server had an error" in text


@pytest.mark.parametrize("body, expected", [
    ({"error": {"message": "budget of key 'alice' exhausted", "type": "insufficient_quota", "param": None,
                "code": "insufficient_quota"}}, "error (insufficient_quota): budget of key 'alice' exhausted"),
    ({"error": {"message": "Invalid value", "type": "invalid_request_error", "param": "messages[0].role",
                "code": None}}, "error (invalid_request_error): Invalid value  [param messages[0].role]"),
    ({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
     "error (overloaded_error): Overloaded"),
    ({"error": {"code": 400, "message": "API key not valid.", "status": "INVALID_ARGUMENT"}},
     "error (INVALID_ARGUMENT, 400): API key not valid."),
])  # fmt: skip
def test_error_responses(body, expected):
    for api in RENDERERS:
        assert render_response(api, body) == expected


# --- completions ---------------------------------------------------------------------------


def test_completions_request_response_and_stream():
    body = {"model": "gpt-3.5-turbo-instruct", "prompt": "Say this is a test", "max_tokens": 7, "stream": True}
    assert render_request("completions", body) == (
        "model gpt-3.5-turbo-instruct · stream · max_tokens 7\n── prompt ──\nSay this is a test"
    )
    tokens = {"model": "davinci-002", "prompt": [[1, 2, 3], "two"]}
    assert render_request("completions", tokens).endswith("── prompt (0) ──\n[3 tokens]\n── prompt (1) ──\ntwo")
    answer = "── completion ──\nThis is a test\nfinish: stop\nusage: input "
    json_body = shapes.completions({**body, "stream": False}, shapes.Controls(reply="This is a test"))
    assert answer in render_response("completions", json_body)
    with_usage = {**body, "stream_options": {"include_usage": True}}
    text = render_response("completions", sse=fake_stream(shapes.completions, with_usage, reply="This is a test"))
    assert answer in text
    assert text.endswith("streamed: 7 events")


# --- Responses API -------------------------------------------------------------------------


def test_responses_request_with_items():
    body = {
        "model": "gpt-5", "instructions": "You are terse.", "max_output_tokens": 800,
        "reasoning": {"effort": "medium", "summary": "auto"}, "previous_response_id": "resp_prev",
        "text": {"format": {"type": "json_schema", "name": "answer", "schema": {}}},
        "tools": [{"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {"id": {}}}},
                  {"type": "web_search"}],
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "What is in this image?"},
                                         {"type": "input_image", "image_url": CAT_PNG},
                                         {"type": "input_file", "file_id": "file-1"}]},
            {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAAA" * 100},
            {"type": "function_call", "call_id": "call_1", "name": "lookup", "arguments": '{"id": 7}'},
            {"type": "function_call_output", "call_id": "call_1", "output": "a cat"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "A cat."}]},
        ],
    }  # fmt: skip
    assert render_request("responses", body) == "\n".join([
        "model gpt-5 · max_output_tokens 800 · tools 2 · format json_schema answer · reasoning_effort medium"
        " · reasoning_summary auto · previous_response_id resp_prev",
        "tools  lookup(id)",
        "       web_search",
        "── instructions ──",
        "You are terse.",
        "── user ──",
        "What is in this image?",
        "[image: data:image/png, 122 KB]",
        "[file: file-1]",
        "── assistant (reasoning) ──",
        "[encrypted reasoning, 375 B]",
        "── assistant ──",
        '→ lookup({"id": 7})  (call_1)',
        "── tool (call_1) ──",
        "a cat",
        "── assistant ──",
        "A cat.",
    ])  # fmt: skip
    assert render_request("responses", {"model": "gpt-5", "input": "hi"}) == "model gpt-5\n── user ──\nhi"


def test_responses_json_response():
    body = shapes.responses({"model": "gpt-5", "input": "hello"}, shapes.Controls(usage={"reasoning_tokens": 64}))
    text = render_response("responses", body)
    assert text.startswith("model gpt-5 · status completed\n── assistant ──\necho: hello\nusage: input ")
    assert "(reasoning 64)" in text


def test_responses_output_items():
    body = {"model": "gpt-5", "status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"},
            "output": [
                {"type": "reasoning", "summary": [{"type": "summary_text", "text": "Thinking it over."}]},
                {"type": "web_search_call", "id": "ws_1", "status": "completed",
                 "action": {"type": "search", "query": "weather"}},
                {"type": "function_call", "call_id": "call_9", "name": "lookup", "arguments": "{}"},
                {"type": "image_generation_call", "id": "ig_1", "result": base64.b64encode(bytes(9000)).decode()},
                {"type": "message", "role": "assistant", "content": [{"type": "refusal", "refusal": "No."}]},
            ],
            "usage": None}  # fmt: skip
    assert render_response("responses", body) == "\n".join([
        "model gpt-5 · status incomplete (max_output_tokens)",
        "── assistant (reasoning) ──",
        "Thinking it over.",
        "── assistant ──",
        '[web_search_call] {"status": "completed", "action": {"type": "search", "query": "weather"}}',
        "→ lookup({})  (call_9)",
        '[image_generation_call] {"result": "[base64, 9 KB]"}',
        "── assistant ──",
        "refusal: No.",
        "usage: not reported",
    ])  # fmt: skip


def test_responses_stream_uses_the_final_response():
    stream = fake_stream(shapes.responses, {"model": "gpt-5", "input": "hi there", "stream": True})
    text = render_response("responses", sse=stream)
    assert text.startswith("model gpt-5 · status completed\n── assistant ──\necho: hi there\nusage: input ")
    assert text.endswith("streamed: 11 events")


def test_responses_stream_cut_short_is_rebuilt_from_deltas():
    item = {"id": "fc_1", "type": "function_call", "call_id": "call_1", "name": "lookup", "arguments": ""}
    message = {"id": "msg_1", "type": "message", "role": "assistant", "status": "in_progress", "content": []}
    where = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
    stream = sse(
        {"type": "response.created", "response": {"id": "resp_1", "model": "gpt-5", "status": "in_progress",
                                                  "output": [], "usage": None}},
        {"type": "response.output_item.added", "output_index": 0, "item": message},
        {"type": "response.content_part.added", **where, "part": {"type": "output_text", "text": ""}},
        {"type": "response.output_text.delta", **where, "delta": "Looking "},
        {"type": "response.output_text.delta", **where, "delta": "it up."},
        {"type": "response.output_item.added", "output_index": 1, "item": item},
        {"type": "response.function_call_arguments.delta", "item_id": "fc_1", "output_index": 1, "delta": '{"id":'},
        {"type": "response.function_call_arguments.delta", "item_id": "fc_1", "output_index": 1, "delta": " 7}"},
        named=True,
    )  # fmt: skip
    assert render_response("responses", sse=stream) == "\n".join([
        "model gpt-5 · status in_progress",
        "── assistant ──",
        "Looking it up.",
        '→ lookup({"id": 7})  (call_1)',
        "usage: not reported",
        "streamed: 8 events · stream ended early (no response.completed)",
    ])  # fmt: skip


def test_responses_stream_error_event():
    stream = sse({"type": "error", "code": "server_error", "message": "Something broke", "sequence_number": 1},
                 named=True)  # fmt: skip
    assert "error (error, server_error): Something broke" in render_response("responses", sse=stream)


# --- embeddings ----------------------------------------------------------------------------


def test_embeddings_request_preview():
    body = {"model": "text-embedding-3-small", "dimensions": 256, "input": ["first text", [1, 2, 3]]
            + [f"text {i}" for i in range(10)]}  # fmt: skip
    assert render_request("embeddings", body) == "\n".join([
        "model text-embedding-3-small · dimensions 256",
        "── inputs (12) ──",
        "[0] first text", "[1] [3 tokens]", "[2] text 0", "[3] text 1", "[4] text 2",
        "… 7 more",
    ])  # fmt: skip
    one = render_request("embeddings", {"model": "m", "input": "x" * 500})
    assert "── inputs (1) ──\n[0] " + "x" * 119 + "…" in one


def test_embeddings_base64_response_counts_dimensions():
    body = {"model": "text-embedding-3-small", "input": ["a", "b", "c"], "encoding_format": "base64",
            "dimensions": 512}  # fmt: skip
    response = shapes.embeddings(body, shapes.Controls(usage={"prompt_tokens": 3}))
    assert render_response("embeddings", response) == (
        "model text-embedding-3-small\n3 vectors × 512 dims (base64 float32)\nusage: input 3"
    )
    floats = {"data": [{"embedding": [0.1] * 1536, "index": 0}], "model": "m", "usage": {"prompt_tokens": 1}}
    assert "1 vector × 1536 dims\n" in render_response("embeddings", floats)


# --- Anthropic and Gemini ------------------------------------------------------------------


def test_anthropic_request():
    body = {
        "model": "claude-sonnet-4-5", "max_tokens": 1024, "thinking": {"type": "enabled", "budget_tokens": 2048},
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "tools": [{"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {}}}},
                  {"type": "web_search_20250305", "name": "web_search"}],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "Weather here?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg",
                                             "data": base64.b64encode(bytes(20_000)).decode()}},
            ]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "Use the tool.", "signature": "sig"},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "18C"}]},
                {"type": "text", "text": "Thanks!"},
            ]},
        ],
    }  # fmt: skip
    assert render_request("anthropic_messages", body) == "\n".join([
        "model claude-sonnet-4-5 · max_tokens 1024 · tools 2 · thinking 2048",
        "tools  get_weather(city)",
        "       web_search [web_search_20250305]",
        "── system ──",
        "Be brief.",
        "── user ──",
        "Weather here?",
        "[image: image/jpeg, 20 KB]",
        "── assistant (thinking) ──",
        "Use the tool.",
        "── assistant ──",
        '→ get_weather({"city": "Paris"})  (toolu_1)',
        "── tool (toolu_1) ──",
        "18C",
        "── user ──",
        "Thanks!",
    ])  # fmt: skip


ANTHROPIC_STREAM = [
    {"type": "message_start", "message": {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5", "content": [],
        "stop_reason": None, "usage": {"input_tokens": 20, "cache_read_input_tokens": 100,
                                       "cache_creation_input_tokens": 30, "output_tokens": 1}}},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Tool "}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "time."}},
    {"type": "content_block_stop", "index": 0},
    {"type": "ping"},
    {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Checking "}},
    {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "now."}},
    {"type": "content_block_stop", "index": 1},
    {"type": "content_block_start", "index": 2,
     "content_block": {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {}}},
    {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": '{"city": '}},
    {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": '"Oslo"}'}},
    {"type": "content_block_stop", "index": 2},
    {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
     "usage": {"output_tokens": 42}},
    {"type": "message_stop"},
]  # fmt: skip


def test_anthropic_stream_is_reassembled():
    assert render_response("anthropic_messages", sse=sse(*ANTHROPIC_STREAM, named=True)) == "\n".join([
        "model claude-sonnet-4-5",
        "── assistant (thinking) ──",
        "Tool time.",
        "── assistant ──",
        "Checking now.",
        '→ get_weather({"city": "Oslo"})  (toolu_2)',
        "finish: tool_use",
        "usage: input 150 (cached 100, cache write 30) · output 42",
        "streamed: 16 events",
    ])  # fmt: skip


def test_anthropic_stream_cut_short():
    text = render_response("anthropic_messages", sse=sse(*ANTHROPIC_STREAM[:12], named=True))
    assert '→ get_weather({"city": )  (toolu_2)' in text  # the partial JSON, as received
    assert "usage: input 150 (cached 100, cache write 30) · output 1" in text
    assert text.endswith("streamed: 12 events · stream ended early (no message_stop)")


def test_anthropic_json_response():
    body = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-haiku-4-5",
            "content": [{"type": "text", "text": "Hello!"}], "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": 12, "output_tokens": 3}}  # fmt: skip
    assert render_response("anthropic_messages", body) == (
        "model claude-haiku-4-5\n── assistant ──\nHello!\nfinish: end_turn\nusage: input 12 · output 3"
    )


def test_gemini_request_and_stream():
    body = {
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "contents": [
            {"role": "user", "parts": [{"text": "What's this?"},
                                       {"inlineData": {"mimeType": "image/png", "data": "iVBOR" * 2000}}]},
            {"role": "model", "parts": [{"functionCall": {"name": "lookup", "args": {"q": "cat"}}}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "lookup", "response": {"answer": "a cat"}}}]},
        ],
        "tools": [{"functionDeclarations": [{"name": "lookup", "parameters": {"type": "OBJECT",
                                                                             "properties": {"q": {}}}}]},
                  {"googleSearch": {}}],
        "generationConfig": {"maxOutputTokens": 256, "thinkingConfig": {"thinkingBudget": 512}},
    }  # fmt: skip
    assert render_request("gemini", body) == "\n".join([
        "max_output_tokens 256 · tools 2 · thinking_budget 512",
        "tools  lookup(q)",
        "       googleSearch",
        "── system ──",
        "Be brief.",
        "── user ──",
        "What's this?",
        "[image: image/png, 7 KB]",
        "── assistant ──",
        '→ lookup({"q": "cat"})',
        "── tool (lookup) ──",
        '{"answer": "a cat"}',
    ])  # fmt: skip
    chunks = [
        {"candidates": [{"content": {"role": "model", "parts": [{"text": "Hmm.", "thought": True}]}, "index": 0}]},
        {"candidates": [{"content": {"role": "model", "parts": [{"text": "It is "}]}, "index": 0}]},
        {"candidates": [{"content": {"role": "model", "parts": [{"text": "a cat."}]}, "finishReason": "STOP",
                         "index": 0}], "modelVersion": "gemini-2.5-flash",
         "usageMetadata": {"promptTokenCount": 300, "cachedContentTokenCount": 200, "candidatesTokenCount": 4,
                           "thoughtsTokenCount": 20}},
    ]  # fmt: skip
    expected = [
        "model gemini-2.5-flash",
        "── assistant (thinking) ──",
        "Hmm.",
        "── assistant ──",
        "It is a cat.",
        "finish: STOP",
        "usage: input 300 (cached 200) · output 24 (reasoning 20)",
    ]
    assert render_response("gemini", sse=sse(*chunks)) == "\n".join([*expected, "streamed: 3 events"])
    assert render_response("gemini", chunks) == "\n".join(expected)  # streamGenerateContent without alt=sse
    assert render_response("gemini", sse=sse(*chunks[:2])).endswith("stream ended early (no a finishReason)")


# --- robustness ----------------------------------------------------------------------------


@pytest.mark.parametrize("api, body", [
    ("chat", {"model": "gpt-4o", "messages": "hello"}),
    ("chat", {"model": "gpt-4o"}),
    ("responses", {"model": "gpt-5", "input": 42}),
    ("embeddings", {"model": "m", "input": {"text": "x"}}),
    ("anthropic_messages", {"model": "claude", "messages": None}),
    ("gemini", {"contents": "hi"}),
])  # fmt: skip
def test_unrecognised_request_shows_the_json(api, body):
    text = render_request(api, body)
    assert text.startswith("(")
    assert "showing the JSON" in text
    assert json.dumps(body, indent=2) in text


def test_unrecognised_response_shows_the_json_without_base64():
    body = {"choices": "none", "blob": "QUFB" * 200}
    text = render_response("chat", body)
    assert "showing the JSON" in text and '"blob": "[base64, 600 B]"' in text
    assert "QUFBQUFB" not in text


def test_unknown_api_and_non_objects():
    assert render_request("images", {"prompt": "a cat"}).startswith("(no transcript for 'images' requests")
    assert render_request("chat", ["not", "an", "object"]).startswith("(the request body is not a JSON object")
    assert render_response("chat", "text").startswith("(the response body is not a JSON object")
    assert render_response("chat") == "(no body)"
    assert render_response("images", sse=b"data: {}\n\n").startswith("(no transcript for 'images' streams)")
    assert render_response("embeddings", sse=b"data: {}\n\n").startswith("(no transcript for 'embeddings' streams)")


def test_wrong_types_inside_do_not_crash():
    body = {"model": ["x"], "stream": "yes", "temperature": {"a": 1}, "tools": [None, 3, {"type": "function"}],
            "messages": [None, 7, {"role": 5, "content": {"weird": True}},
                         {"role": "user", "content": [None, {"type": "image_url", "image_url": 9}, {"text": 3}]},
                         {"role": "assistant", "tool_calls": [None, {"function": "x"}]}]}  # fmt: skip
    text = render_request("chat", body)
    assert "── ? ──\nnull" in text and "[image]" in text
    response = {"choices": [None, {"message": "hi", "finish_reason": 3}], "usage": {"prompt_tokens": "many"}}
    assert "usage: not reported" in render_response("chat", response)


def test_garbage_streams():
    assert render_response("chat", sse=b"").endswith("streamed: 0 events · stream ended early (no [DONE])")
    text = render_response("chat", sse=b"data: {not json\n\ndata: [1, 2]\n\n: comment\n\n")
    assert text.endswith("streamed: 2 events · stream ended early (no [DONE])")
    assert render_response("responses", sse=b"\xff\xfegarbage") == (
        "(no SSE events in this stream; showing it as text)\n\ufffd\ufffdgarbage"
    )


KEYS = st.sampled_from([
    "model", "messages", "role", "content", "type", "text", "tool_calls", "function", "arguments", "name",
    "choices", "message", "delta", "index", "finish_reason", "usage", "prompt_tokens", "error", "input",
    "output", "parts", "candidates", "contents", "data", "embedding", "image_url", "url", "source", "tools",
    "system", "instructions", "item", "response", "stream", "prompt", "functionCall", "inlineData",
])  # fmt: skip
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS | st.text(max_size=8), children, max_size=5),
    max_leaves=30,
)
BODY = st.dictionaries(KEYS, JSON, max_size=5)  # the right top-level names, anything inside
EVENT_NAMES = st.none() | st.sampled_from([
    "message_start", "content_block_start", "content_block_delta", "message_delta", "message_stop", "error",
    "response.created", "response.output_item.added", "response.output_text.delta", "response.completed",
    "response.function_call_arguments.delta", "response.content_part.added", "response.reasoning_summary_text.delta",
])  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(api=st.sampled_from([*RENDERERS, "unknown"]), body=BODY | JSON)
def test_render_never_raises(api, body):
    assert isinstance(render_request(api, body), str)
    assert isinstance(render_response(api, body), str)


@settings(max_examples=300, deadline=None)
@given(api=st.sampled_from(list(RENDERERS)), body=BODY)
def test_wrong_types_inside_a_shape_are_shown_not_fatal(api, body):
    """Renderers give up (falling back to JSON) only on a shape they do not recognise."""
    for render in (RENDERERS[api].request, RENDERERS[api].response):
        try:
            assert all(isinstance(line, str) for line in render(body))
        except Unrecognised:
            pass


@settings(max_examples=300, deadline=None)
@given(api=st.sampled_from(list(RENDERERS)), events=st.lists(st.tuples(EVENT_NAMES, JSON), max_size=8))
def test_render_stream_never_raises(api, events):
    stream = b"".join(
        (f"event: {name}\n" if name else "").encode() + b"data: " + json.dumps(data).encode() + b"\n\n"
        for name, data in events
    )
    assert isinstance(render_response(api, sse=stream), str)
    if RENDERERS[api].stream:
        folded = RENDERERS[api].stream(sse_events(stream))
        try:
            RENDERERS[api].response(folded.body)
        except Unrecognised:
            pass


def test_float32_helper_agrees_with_struct():
    vector = struct.pack("<7f", *range(7))
    body = {"data": [{"embedding": base64.b64encode(vector).decode()}]}
    assert "1 vector × 7 dims (base64 float32)" in render_response("embeddings", body)
