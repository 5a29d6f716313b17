"""Fabricated Anthropic Messages responses for mock mode, shaped so the official SDK parses them.

Usage is written the way Anthropic reports it (input without cache reads and writes), so
``usage.usage_from_dict`` reads back exactly the ``Usage`` the mock was given.
"""

from __future__ import annotations

import secrets

from pouch.domain.usage import Usage
from pouch.providers.base import Call, Reply
from pouch.providers.mocking import dumps, pieces

_JSON = {"content-type": "application/json", "x-pouch-mock": "true"}
_SSE = {"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache", "x-pouch-mock": "true"}


def mock(call: Call, usage: Usage, text: str) -> Reply:
    truncated = call.max_output is not None and usage.output_tokens >= call.max_output
    stop_reason = "max_tokens" if truncated else "end_turn"
    message_id = "msg_mock" + secrets.token_hex(12)
    headers = {"request-id": request_id()}
    if not call.stream:
        content = [{"type": "text", "text": text}]
        counts = _usage(usage, usage.output_tokens, usage.reasoning_tokens)
        message = _message(message_id, call.model, content, stop_reason, counts)
        return Reply(200, dumps(message), _JSON | headers)
    # message_start carries the input counts and a first output count, as Anthropic's does.
    started = _message(message_id, call.model, [], None, _usage(usage, min(1, usage.output_tokens), 0))
    events = [
        {"type": "message_start", "message": started},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "ping"},
        *(
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}
            for piece in pieces(text)
        ),
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": None},
            "usage": _delta_usage(usage),
        },
        {"type": "message_stop"},
    ]
    body = b"".join(b"event: " + e["type"].encode() + b"\ndata: " + dumps(e) + b"\n\n" for e in events)
    return Reply(200, body, _SSE | headers)


def request_id() -> str:
    """An id in Anthropic's ``request-id`` style, marked as pouch's own."""
    return "req_pouch_" + secrets.token_hex(12)


def _message(message_id: str, model: str, content: list, stop_reason: str | None, usage: dict) -> dict:
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage,
    }


def _usage(usage: Usage, output_tokens: int, thinking_tokens: int) -> dict:
    written = {
        "ephemeral_5m_input_tokens": usage.cache_write_5m_tokens,
        "ephemeral_1h_input_tokens": usage.cache_write_1h_tokens,
    }
    body = {
        "input_tokens": usage.uncached_input_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
        "cache_creation": written,
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }
    if thinking_tokens:
        body["output_tokens_details"] = {"thinking_tokens": thinking_tokens}
    return body


def _delta_usage(usage: Usage) -> dict:
    """message_delta's cumulative counts (newer API versions repeat the input counts here)."""
    body = {
        "input_tokens": usage.uncached_input_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
        "output_tokens": usage.output_tokens,
    }
    if usage.reasoning_tokens:
        body["output_tokens_details"] = {"thinking_tokens": usage.reasoning_tokens}
    return body
