"""Fabricated OpenAI responses for mock mode, shaped so the official SDKs parse them.

Bodies follow OpenAI's own (field order, compact JSON, ``usage: null`` on every chunk of a
stream that asked for usage), so the rest of the chain sees exactly what it would upstream.
"""

from __future__ import annotations

import base64
import json
import secrets
import struct
import time

from pouch.domain.usage import Usage
from pouch.providers.base import Call, Reply
from pouch.providers.mocking import dumps, pieces, unit_vector

_JSON = {"content-type": "application/json", "x-pouch-mock": "true"}
_SSE = {"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache", "x-pouch-mock": "true"}
_MAX_EMBEDDING_DIMENSIONS = 3072  # OpenAI's largest; also keeps a mock from allocating at a client's whim


def mock(api: str, call: Call, body: dict, usage: Usage, text: str) -> Reply:
    if api == "embeddings":
        return Reply(200, dumps(_embeddings(call, body, usage)), dict(_JSON))
    truncated = call.max_output is not None and usage.output_tokens >= call.max_output
    build = _BUILDERS.get((api, call.stream))
    if build is None:
        raise ValueError(f"no OpenAI mock for {api!r}")
    return build(call, body, usage, text, truncated)


def _chat(call: Call, body: dict, usage: Usage, text: str, truncated: bool) -> Reply:
    message = {"role": "assistant", "content": text, "refusal": None, "annotations": []}
    choices = [
        {"index": i, "message": message, "logprobs": None, "finish_reason": "length" if truncated else "stop"}
        for i in range(_returned_choices(body))
    ]
    completion = {
        "id": _id("chatcmpl-mock"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": call.model,
        "choices": choices,
        "usage": _chat_usage(usage),
        "service_tier": "default",
        "system_fingerprint": None,
    }
    return Reply(200, dumps(completion), dict(_JSON))


def _chat_stream(call: Call, body: dict, usage: Usage, text: str, truncated: bool) -> Reply:
    head = {"id": _id("chatcmpl-mock"), "object": "chat.completion.chunk", "created": int(time.time())}
    head |= {"model": call.model, "service_tier": "default", "system_fingerprint": None}
    include_usage = _include_usage(body)

    def chunk(index: int, delta: dict, finish_reason: str | None = None) -> dict:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return head | {"choices": [choice]} | ({"usage": None} if include_usage else {})

    chunks = []
    for i in range(_returned_choices(body)):
        chunks.append(chunk(i, {"role": "assistant", "content": "", "refusal": None}))
        chunks.extend(chunk(i, {"content": piece}) for piece in pieces(text))
        chunks.append(chunk(i, {}, "length" if truncated else "stop"))
    if include_usage:
        chunks.append(head | {"choices": [], "usage": _chat_usage(usage)})
    return _sse_reply([_sse_event(c) for c in chunks] + [b"data: [DONE]\n\n"])


def _completion(call: Call, body: dict, usage: Usage, text: str, truncated: bool) -> Reply:
    choices = [
        {"text": text, "index": i, "logprobs": None, "finish_reason": "length" if truncated else "stop"}
        for i in range(_returned_choices(body))
    ]
    completion = {
        "id": _id("cmpl-mock"),
        "object": "text_completion",
        "created": int(time.time()),
        "model": call.model,
        "choices": choices,
        "usage": _chat_usage(usage),
        "system_fingerprint": None,
    }
    return Reply(200, dumps(completion), dict(_JSON))


def _completion_stream(call: Call, body: dict, usage: Usage, text: str, truncated: bool) -> Reply:
    head = {"id": _id("cmpl-mock"), "object": "text_completion", "created": int(time.time())}
    include_usage = _include_usage(body)

    def chunk(index: int, piece: str, finish_reason: str | None = None) -> dict:
        choice = {"text": piece, "index": index, "logprobs": None, "finish_reason": finish_reason}
        tail = {"model": call.model, "system_fingerprint": None} | ({"usage": None} if include_usage else {})
        return head | {"choices": [choice]} | tail

    chunks = []
    for i in range(_returned_choices(body)):
        chunks.extend(chunk(i, piece) for piece in pieces(text))
        chunks.append(chunk(i, "", "length" if truncated else "stop"))
    if include_usage:
        chunks.append(head | {"choices": [], "model": call.model, "usage": _chat_usage(usage)})
    return _sse_reply([_sse_event(c) for c in chunks] + [b"data: [DONE]\n\n"])


def _response(call: Call, body: dict, usage: Usage, text: str, truncated: bool) -> Reply:
    ids = _id("resp_mock"), _id("msg_mock")
    status = "incomplete" if truncated else "completed"
    response = _response_object(call, body, ids, status, _message(ids[1], text, status), usage)
    return Reply(200, dumps(response), dict(_JSON))


def _response_stream(call: Call, body: dict, usage: Usage, text: str, truncated: bool) -> Reply:
    return _sse_reply([_sse_event(event, event["type"]) for event in response_events(call, body, usage, text)])


def response_events(call: Call, body: dict, usage: Usage, text: str) -> list[dict]:
    """The full event sequence OpenAI sends for a one-message text response: an SSE stream's
    events, or the messages of the Responses API over WebSocket."""
    truncated = call.max_output is not None and usage.output_tokens >= call.max_output
    ids = _id("resp_mock"), _id("msg_mock")
    status = "incomplete" if truncated else "completed"
    in_progress = _response_object(call, body, ids, "in_progress", None, None)
    message = _message(ids[1], text, status)
    part = {"type": "output_text", "annotations": [], "logprobs": [], "text": text}
    where = {"item_id": ids[1], "output_index": 0, "content_index": 0}
    added = {"status": "in_progress", "content": []}
    events = [
        {"type": "response.created", "response": in_progress},
        {"type": "response.in_progress", "response": in_progress},
        {"type": "response.output_item.added", "output_index": 0, "item": message | added},
        {"type": "response.content_part.added", **where, "part": part | {"text": ""}},
        *({"type": "response.output_text.delta", **where, "delta": piece, "logprobs": []} for piece in pieces(text)),
        {"type": "response.output_text.done", **where, "text": text, "logprobs": []},
        {"type": "response.content_part.done", **where, "part": part},
        {"type": "response.output_item.done", "output_index": 0, "item": message},
        # A response cut at max_output_tokens ends in response.incomplete, as OpenAI's does.
        {"type": f"response.{status}", "response": _response_object(call, body, ids, status, message, usage)},
    ]
    return [{"type": e["type"], "sequence_number": n} | e for n, e in enumerate(events)]


def _response_object(
    call: Call, body: dict, ids: tuple[str, str], status: str, message: dict | None, usage: Usage | None
) -> dict:
    instructions = body.get("instructions")
    return {
        "id": ids[0],
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": instructions if isinstance(instructions, str) else None,
        "max_output_tokens": call.max_output,
        "model": call.model,
        "output": [message] if message else [],
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": None if usage is None else _responses_usage(usage),
        "user": None,
        "metadata": {},
    }


def _message(message_id: str, text: str, status: str) -> dict:
    content = [{"type": "output_text", "annotations": [], "logprobs": [], "text": text}]
    return {"id": message_id, "type": "message", "status": status, "content": content, "role": "assistant"}


def _embeddings(call: Call, body: dict, usage: Usage) -> dict:
    dimensions = body.get("dimensions")
    if not isinstance(dimensions, int) or isinstance(dimensions, bool):
        dimensions = 3072 if "text-embedding-3-large" in call.model else 1536
    dimensions = max(1, min(dimensions, _MAX_EMBEDDING_DIMENSIONS))
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    for index, item in enumerate(_embedding_inputs(body.get("input"))):
        vector = unit_vector(json.dumps(item).encode(), dimensions)
        packed = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode() if as_base64 else vector
        data.append({"object": "embedding", "index": index, "embedding": packed})
    usage_body = {"prompt_tokens": usage.input_tokens, "total_tokens": usage.input_tokens}
    return {"object": "list", "data": data, "model": call.model, "usage": usage_body}


def _embedding_inputs(value: object) -> list:
    """One entry per vector: a string, a list of strings, a token list or a list of token lists."""
    if isinstance(value, list) and value and all(isinstance(token, int) for token in value):
        return [value]
    if isinstance(value, list):
        return value
    return [value]


def _chat_usage(usage: Usage) -> dict:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens, "cache_write_tokens": usage.cache_write_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def _responses_usage(usage: Usage) -> dict:
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {
            "cache_write_tokens": usage.cache_write_tokens,
            "cached_tokens": usage.cached_tokens,
            "cache_write_tokens_details": {
                "ttl_12h_tokens": usage.cache_write_1h_tokens,
                "ttl_30m_tokens": usage.cache_write_5m_tokens,
            },
        },
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.total_tokens,
    }


def _include_usage(body: dict) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _returned_choices(body: dict) -> int:
    n = body.get("n")
    return n if isinstance(n, int) and not isinstance(n, bool) and n >= 1 else 1


def _sse_event(data: dict, name: str | None = None) -> bytes:
    event = b"event: " + name.encode() + b"\n" if name else b""
    return event + b"data: " + dumps(data) + b"\n\n"


def _sse_reply(events: list[bytes]) -> Reply:
    return Reply(200, b"".join(events), dict(_SSE))


def _id(prefix: str) -> str:
    return prefix + secrets.token_hex(12)


_BUILDERS = {
    ("chat", False): _chat,
    ("chat", True): _chat_stream,
    ("completions", False): _completion,
    ("completions", True): _completion_stream,
    ("responses", False): _response,
    ("responses", True): _response_stream,
}
