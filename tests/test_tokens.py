import base64
import hashlib
import logging
import math
import os
import shutil
import socket
import threading

import pytest
import tiktoken
from hypothesis import given, settings
from hypothesis import strategies as st
import tiktoken.load
import tiktoken.registry

from pouch.providers import registry
from pouch.providers.anthropic import tokens as anthropic_tokens
from pouch.providers.gemini import tokens as gemini_tokens
from pouch.providers.openai import tokens as openai_tokens
from pouch.tokens import encodings, estimates
from pouch.tokens.count import count_prompt, count_text, encoding_name, input_upper_bound, is_exact


def count_chat(model: str, messages: list, tools: list | None = None, functions: list | None = None) -> int:
    return count_prompt(model, {"messages": messages, "tools": tools, "functions": functions}, "chat")

SHIPPED = {
    # name: (source URL, sha256 that tiktoken checks)
    "o200k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    ),
    "cl100k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    ),
}


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No test here may reach the network or inherit the developer's tiktoken cache."""

    def refuse(*args, **kwargs):
        raise OSError("a test tried to use the network")

    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)
    monkeypatch.delenv("DATA_GYM_CACHE_DIR", raising=False)
    monkeypatch.setattr(tiktoken.load, "read_file", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture
def user_cache(tmp_path, monkeypatch):
    """A user's own TIKTOKEN_CACHE_DIR holding the files, and tiktoken with nothing loaded yet."""
    for url, _ in SHIPPED.values():
        name = hashlib.sha1(url.encode()).hexdigest()
        shutil.copy(encodings.DATA_DIR / name, tmp_path / name)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})
    return tmp_path


def encode(name, text):
    return encodings.get_encoding(name).encode_ordinary(text)


# Loading


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_file_is_tiktokens(name):
    url, sha256 = SHIPPED[name]
    data = (encodings.DATA_DIR / hashlib.sha1(url.encode()).hexdigest()).read_bytes()
    assert hashlib.sha256(data).hexdigest() == sha256


def test_licence_ships_with_the_files():
    assert "MIT License" in (encodings.DATA_DIR / "LICENSE").read_text()
    assert "OpenAI" in (encodings.DATA_DIR / "LICENSE").read_text()


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_encoding_equals_tiktokens_own(name, user_cache):
    ours = encodings.load_shipped(name)
    theirs = tiktoken.get_encoding(name)  # tiktoken's loader, from the cache dir, hash-checked
    assert (ours.name, ours.n_vocab, ours._pat_str) == (theirs.name, theirs.n_vocab, theirs._pat_str)
    assert ours._special_tokens == theirs._special_tokens
    text = "Héllo wörld 123 <|endoftext|> 日本語 def f(x):\n\treturn x"
    assert ours.encode_ordinary(text) == theirs.encode_ordinary(text)


def test_loads_without_network_or_cache_dir():
    encoding = encodings.load_shipped("o200k_base")
    assert len(encoding.encode_ordinary("hello world")) == 2
    assert "TIKTOKEN_CACHE_DIR" not in os.environ  # pouch never points tiktoken anywhere


def test_user_cache_dir_is_respected(user_cache, monkeypatch):
    calls = []
    real_get_encoding = tiktoken.get_encoding
    monkeypatch.setattr(tiktoken, "get_encoding", lambda name: calls.append(name) or real_get_encoding(name))
    encoding = encodings.load_encoding("cl100k_base")
    assert calls == ["cl100k_base"]
    assert os.environ["TIKTOKEN_CACHE_DIR"] == str(user_cache)
    assert encoding.encode_ordinary("hello world") == encode("cl100k_base", "hello world")


def test_empty_user_cache_without_network_falls_back(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})
    with caplog.at_level(logging.WARNING):
        encoding = encodings.load_encoding("o200k_base")
    assert len(encoding.encode_ordinary("hello world")) == 2
    assert "shipped with pouch" in caplog.text
    assert list(tmp_path.iterdir()) == []  # nothing written into the user's cache


def test_damaged_shipped_file_is_refused(tmp_path, monkeypatch):
    url, _ = SHIPPED["cl100k_base"]
    (tmp_path / hashlib.sha1(url.encode()).hexdigest()).write_bytes(b"aGVsbG8= 0\n")
    monkeypatch.setattr(encodings, "DATA_DIR", tmp_path)
    with pytest.raises(RuntimeError, match="sha256"):
        encodings.load_shipped("cl100k_base")


def test_each_encoding_is_built_once_under_concurrency(monkeypatch):
    built = []
    monkeypatch.setattr(encodings, "_loaded", {})
    monkeypatch.setattr(encodings, "load_encoding", lambda name: built.append(name) or object())
    results = []

    def load():
        results.append(encodings.get_encoding("o200k_base"))

    threads = [threading.Thread(target=load) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert built == ["o200k_base"]
    assert len({id(result) for result in results}) == 1


# Models


@pytest.mark.parametrize(
    "model, encoding, exact",
    [
        ("gpt-4o", "o200k_base", True),
        ("gpt-4o-mini", "o200k_base", True),
        ("gpt-4o-2024-08-06", "o200k_base", True),
        ("chatgpt-4o-latest", "o200k_base", True),
        ("gpt-4.1-nano", "o200k_base", True),
        ("gpt-4.5-preview", "o200k_base", True),
        ("gpt-5", "o200k_base", True),
        ("gpt-5.1-codex", "o200k_base", True),
        ("o1", "o200k_base", True),
        ("o3-mini", "o200k_base", True),
        ("o4-mini-2025-04-16", "o200k_base", True),
        ("openai/gpt-4o", "o200k_base", True),
        ("ft:gpt-4o-mini-2024-07-18:acme::abc123", "o200k_base", True),
        ("gpt-4", "cl100k_base", True),
        ("gpt-4-0613", "cl100k_base", True),
        ("gpt-4-turbo", "cl100k_base", True),
        ("gpt-3.5-turbo", "cl100k_base", True),
        ("gpt-35-turbo", "cl100k_base", True),
        ("text-embedding-3-small", "cl100k_base", True),
        ("text-embedding-ada-002", "cl100k_base", True),
        ("gpt-4.2", "o200k_base", False),  # not gpt-4, not a known o200k family
        ("claude-sonnet-4-5", "o200k_base", False),
        ("anthropic/claude-opus-4-7", "o200k_base", False),
        ("gemini-2.5-pro", "o200k_base", False),
        ("models/gemini-3-pro-preview", "o200k_base", False),
        ("mistral-large-latest", "o200k_base", False),
        ("meta-llama/Llama-3.3-70B-Instruct", "o200k_base", False),
        ("o10-ultra", "o200k_base", False),
        ("", "o200k_base", False),
    ],
)
def test_model_encoding(model, encoding, exact):
    assert encoding_name(model) == encoding
    assert is_exact(model) is exact


@pytest.mark.parametrize(
    "model",
    ["gpt-4o-mini", "gpt-4-0613", "gpt-4.1-nano", "o3-mini", "text-embedding-3-small", "gpt-3.5-turbo"],
)
def test_mapping_agrees_with_tiktoken(model):
    assert encoding_name(model) == tiktoken.encoding_name_for_model(model)


def test_model_must_be_a_string():
    with pytest.raises(ValueError, match="model"):
        count_text(["gpt-4o"], "hi")


@pytest.mark.parametrize(
    "model, bound",
    [
        ("gpt-4o", 1000),
        ("gpt-4", 1000),
        ("claude-sonnet-4-5", 1750),
        ("gemini-2.5-pro", 1350),
        ("llama-3", 1350),
    ],
)
def test_input_upper_bound(model, bound):
    assert input_upper_bound(model, 1000) == bound


def test_input_upper_bound_rounds_up():
    assert input_upper_bound("claude-haiku-4-5", 1) == 2
    assert input_upper_bound("gemini-2.5-flash", 0) == 0


# Text


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-4", "claude-sonnet-4-5"])
def test_hello_world_is_two_tokens(model):
    assert count_text(model, "hello world") == 2


def test_special_token_text_counts_as_text():
    assert count_text("gpt-4o", "<|endoftext|>") == len(encode("o200k_base", "<|endoftext|>")) > 1
    assert count_text("gpt-4", "a <|endofprompt|> b") > 3


def test_empty_text_is_zero():
    assert count_text("gpt-4o", "") == 0


# Chat

COOKBOOK_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate jargon "
        "into plain English.",
    },
    {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Things working well together will increase revenue.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch base on opportunities "
        "for increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client deliverable.",
    },
]


@pytest.mark.parametrize(
    "model, encoding, api_count", [("gpt-4o", "o200k_base", 124), ("gpt-4-0613", "cl100k_base", 129)]
)
def test_chat_matches_the_cookbook(model, encoding, api_count):
    expected = 3  # reply priming
    for message in COOKBOOK_MESSAGES:
        expected += 3 + sum(len(encode(encoding, value)) for value in message.values()) + ("name" in message)
    assert count_chat(model, COOKBOOK_MESSAGES) == expected
    assert expected == api_count  # what the OpenAI API reported for these messages in the cookbook


def test_chat_single_message():
    # 3 (message) + 1 ("user") + 1 ("hi") + 3 (reply)
    assert count_chat("gpt-4o", [{"role": "user", "content": "hi"}]) == 8


def test_chat_text_parts_count_like_a_string():
    as_string = count_chat("gpt-4o", [{"role": "user", "content": "hello world"}])
    as_parts = [{"type": "text", "text": "hello"}, {"type": "text", "text": " world"}]
    assert count_chat("gpt-4o", [{"role": "user", "content": as_parts}]) == as_string


@pytest.mark.parametrize(
    "model, detail, tokens",
    [
        ("gpt-4o", "low", 85),
        ("gpt-4o", "high", 85 + 8 * 170),
        ("gpt-4o", None, 85 + 8 * 170),  # auto is high at worst
        ("gpt-4o-mini", "auto", 2_833 + 8 * 5_667),
        ("gpt-4.1-nano", "low", 3_779),  # patch models ignore detail
        ("gpt-5.4", "original", openai_tokens.ORIGINAL_IMAGE_TOKENS),
        ("gemini-2.5-flash", "low", 5_000),  # another vendor's image rule, its worst case
    ],
)
def test_chat_images(model, detail, tokens):
    text_only = [{"role": "user", "content": [{"type": "text", "text": "what is this?"}]}]
    image = {"url": "https://example.com/cat.png"} | ({"detail": detail} if detail else {})
    parts = text_only[0]["content"] + [{"type": "image_url", "image_url": image}]
    with_image = [{"role": "user", "content": parts}]
    assert count_chat(model, with_image) - count_chat(model, text_only) == tokens


def test_chat_tools_and_functions_are_counted():
    messages = [{"role": "user", "content": "weather in Paris?"}]
    function = {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
    without = count_chat("gpt-4o", messages)
    with_tools = count_chat("gpt-4o", messages, tools=[{"type": "function", "function": function}])
    with_functions = count_chat("gpt-4o", messages, functions=[function])
    assert with_tools > without + len(encode("o200k_base", "get_weather Current weather for a city"))
    assert with_functions > without


def test_chat_tool_calls_and_tool_results():
    function = {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    call = {"id": "call_1", "type": "function", "function": function}
    messages = [
        {"role": "user", "content": "weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18 degrees and sunny"},
    ]
    first = count_chat("gpt-4o", messages[:1])
    shown = len(encode("o200k_base", 'get_weather{"city": "Paris"}18 degrees and sunny'))
    assert count_chat("gpt-4o", messages) > first + shown


def test_chat_audio_and_files_are_estimated_high():
    audio = base64.b64encode(b"\0" * 30_000).decode()  # 1,500 tokens at 20 bytes a token
    parts = [
        {"type": "input_audio", "input_audio": {"data": audio, "format": "wav"}},
        {"type": "file", "file": {"file_id": "file-abc"}},
    ]
    base = count_chat("gpt-4o", [{"role": "user", "content": []}])
    with_media = count_chat("gpt-4o", [{"role": "user", "content": parts}])
    assert with_media == base + 1_500 + estimates.MEDIA_MAX_TOKENS


# Prompts of each API


def test_prompt_chat_counts_response_format():
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    assert count_prompt("gpt-4o", body, "chat") == 8
    schema = {"type": "json_schema", "json_schema": {"name": "answer", "schema": {"type": "object"}}}
    assert count_prompt("gpt-4o", body | {"response_format": schema}, "chat") > 8


def test_prompt_responses():
    assert count_prompt("gpt-4o", {"input": "hi"}, "responses") == 3 + 1 + 3
    items = {
        "instructions": "Be brief.",
        "input": [
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "hi"},
                    {"type": "input_image", "image_url": "https://x/y.png"},
                ],
            },
            {"type": "function_call", "call_id": "c1", "name": "lookup", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "found"},
        ],
        "tools": [{"type": "function", "name": "lookup", "parameters": {"type": "object"}}],
    }
    shown = len(encode("o200k_base", "Be brief.hilookupfound"))
    assert count_prompt("gpt-4o", items, "responses") > 1445 + shown


@pytest.mark.parametrize(
    "prompt, tokens",
    [("hello world", 2), (["hello world", "hello"], 3), ([1, 2, 3], 3), ([[1, 2], [3]], 3), ([], 0)],
)
def test_prompt_completions_and_embeddings(prompt, tokens):
    assert count_prompt("gpt-3.5-turbo-instruct", {"prompt": prompt}, "completions") == tokens
    assert count_prompt("text-embedding-3-small", {"input": prompt}, "embeddings") == tokens


def test_prompt_anthropic_messages():
    body = {
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": "hello world"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "look", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "found"}]},
        ],
    }
    text_only = count_prompt("claude-sonnet-4-5", body, "anthropic_messages")
    assert text_only > len(encode("o200k_base", "Be brief.hello worldfound"))
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}}
    with_image = body | {"messages": body["messages"] + [{"role": "user", "content": [image]}]}
    assert count_prompt("claude-sonnet-4-5", with_image, "anthropic_messages") >= text_only + 5_000
    tool = {"name": "look", "description": "Look it up", "input_schema": {"type": "object"}}
    with_tools = count_prompt("claude-sonnet-4-5", body | {"tools": [tool]}, "anthropic_messages")
    assert with_tools > text_only + anthropic_tokens.TOOLS_TOKENS


def test_prompt_gemini():
    body = {
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "contents": [{"role": "user", "parts": [{"text": "hello world"}]}],
    }
    text_only = count_prompt("gemini-2.5-pro", body, "gemini")
    assert text_only > len(encode("o200k_base", "Be brief.hello world"))
    image = {"inline_data": {"mime_type": "image/jpeg", "data": "/9j/"}}  # snake_case works too
    with_image = body | {"contents": [{"role": "user", "parts": [{"text": "hello world"}, image]}]}
    assert count_prompt("gemini-2.5-pro", with_image, "gemini") == text_only + gemini_tokens.IMAGE_TOKENS
    tools = [{"functionDeclarations": [{"name": "look", "parameters": {"type": "object"}}]}]
    assert count_prompt("gemini-2.5-pro", body | {"tools": tools}, "gemini") > text_only


@pytest.mark.parametrize(
    "api, body",
    [
        ("chat", []),
        ("chat", {}),
        ("chat", {"messages": "hi"}),
        ("chat", {"messages": ["hi"]}),
        ("chat", {"messages": [{"role": "user", "content": 5}]}),
        ("chat", {"messages": [{"role": "user", "content": ["hi"]}]}),
        ("chat", {"messages": [{"role": "user", "content": [{"type": "text"}]}]}),
        ("chat", {"messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]}),
        ("chat", {"messages": [{"role": "user", "content": "hi", "name": 7}]}),
        ("chat", {"messages": [{"role": "assistant", "tool_calls": {"id": 1}}]}),
        ("chat", {"messages": [{"role": "assistant", "tool_calls": [{"function": "f"}]}]}),
        ("chat", {"messages": [], "tools": {"type": "function"}}),
        ("chat", {"messages": [], "tools": ["get_weather"]}),
        ("responses", {"input": 5}),
        ("responses", {"input": [5]}),
        ("responses", {"instructions": ["x"]}),
        ("completions", {"prompt": [1, "a"]}),
        ("completions", {"prompt": [True]}),
        ("embeddings", {"input": {"text": "hi"}}),
        ("embeddings", {"input": [[1], "a"]}),
        ("anthropic_messages", {"messages": [], "system": 5}),
        ("anthropic_messages", {"messages": [{"role": "user", "content": [{"type": "text", "text": None}]}]}),
        ("anthropic_messages", {"messages": [{"role": "user", "content": [{"type": "document"}]}]}),
        ("gemini", {"contents": "hi"}),
        ("gemini", {"contents": [{"parts": "hi"}]}),
        ("gemini", {"contents": [{"parts": [{"text": 3}]}]}),
        ("gemini", {"contents": [{"parts": [{"inlineData": "abc"}]}]}),
        ("unknown", {}),
    ],
)
def test_malformed_bodies_raise_value_error(api, body):
    with pytest.raises(ValueError):
        count_prompt("gpt-4o", body, api)


def test_deeply_nested_body_raises_value_error():
    content = "x"
    for _ in range(5_000):
        content = [{"type": "tool_result", "tool_use_id": "t", "content": content}]
    with pytest.raises(ValueError, match="nested"):
        body = {"messages": [{"role": "user", "content": content}]}
        count_prompt("claude-sonnet-4-5", body, "anthropic_messages")


_FIELDS = st.sampled_from(
    ["messages", "contents", "input", "prompt", "system", "tools", "content", "role", "type", "text", "parts"]
    + ["image_url", "input_audio", "file", "source", "data", "name", "arguments", "function", "tool_calls"]
    + ["inlineData", "fileData", "mimeType", "instructions", "detail", "output", "thinking", "format"]
)
_KINDS = st.sampled_from(
    ["text", "image_url", "input_image", "input_audio", "file", "message", "function_call", "image"]
    + ["function_call_output", "document", "tool_use", "tool_result", "base64", "content", "image/png"]
)
_LEAVES = st.none() | st.booleans() | st.integers(-5, 10**6) | st.text(max_size=12) | _KINDS
_JSON = st.recursive(
    _LEAVES, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_FIELDS, inner, max_size=5)
)


@settings(max_examples=300, deadline=None)
@given(api=st.sampled_from(list(registry.APIS)), body=st.dictionaries(_FIELDS, _JSON, max_size=5))
def test_any_json_body_counts_or_raises_value_error(api, body):
    try:
        assert isinstance(count_prompt("gpt-4o-mini", body, api), int)
    except ValueError:
        pass


def test_unknown_parts_count_as_their_json():
    part = {"type": "future_part", "payload": "hello world"}
    base = count_chat("gpt-4o", [{"role": "user", "content": []}])
    with_part = count_chat("gpt-4o", [{"role": "user", "content": [part]}])
    assert with_part - base == len(encode("o200k_base", '{"type": "future_part", "payload": "hello world"}'))


def test_media_estimate_is_capped():
    huge = "A" * 4 * 1_000_000  # 3 MB decoded
    assert estimates.media_tokens(huge, estimates.DOCUMENT_BYTES_PER_TOKEN) == estimates.MEDIA_MAX_TOKENS
    assert estimates.media_tokens("A" * 400, estimates.DOCUMENT_BYTES_PER_TOKEN) == math.ceil(300 / 2)
