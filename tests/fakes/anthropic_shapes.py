"""What the fake Anthropic answers: Messages API JSON bodies and SSE events, as pure functions.

Each route takes the parsed request body and the request's ``Controls`` and returns a JSON
object or a ``list[Event]`` (a stream). It raises ``ValueError`` for a body Anthropic would
refuse with 400. Usage is realistic by default: prompts are counted the way the gateway counts
them (``count_prompt(..., "anthropic_messages")``: the raw o200k count, before the safety
factor the gateway reserves with), output is the reply text's tokens.
"""

from __future__ import annotations

import uuid
from typing import NamedTuple

from pouch.tokens.count import count_prompt, count_text

from .controls import Controls
from .replies import last_user_text, pieces, reply_text, sse
from .server import Event

MODELS = (  # (id, display_name, created_at); the dates are placeholders
    ("claude-opus-4-7", "Claude Opus 4.7", "2026-04-01T00:00:00Z"),
    ("claude-sonnet-4-6", "Claude Sonnet 4.6", "2026-02-01T00:00:00Z"),
    ("claude-haiku-4-5-20251001", "Claude Haiku 4.5", "2025-10-01T00:00:00Z"),
)
_CACHE_TTLS = ("ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens")
_USAGE_FIELDS = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens",
                 "cache_creation")
_ERROR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 402: "billing_error", 403: "permission_error",
    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 500: "api_error",
    504: "timeout_error", 529: "overloaded_error",
}


class Reply(NamedTuple):
    text: str
    truncated: bool  # max_tokens cut it short: stop_reason "max_tokens"
    usage: dict  # Anthropic's usage object, as the Message carries it


def error_body(status: int, message: str, request_id: str) -> dict:
    kind = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": message}, "request_id": request_id}


def _body(body, *, needs_max_tokens: bool) -> dict:
    """``body`` checked the way Anthropic checks it, with Anthropic's messages."""
    if not isinstance(body, dict):
        raise ValueError("The request body is not valid JSON.")
    for field in ("model", "messages", "max_tokens") if needs_max_tokens else ("model", "messages"):
        if field not in body:
            raise ValueError(f"{field}: Field required")
    if not isinstance(body["model"], str):
        raise ValueError("model: Input should be a valid string")
    if needs_max_tokens and (not isinstance(body["max_tokens"], int) or isinstance(body["max_tokens"], bool)):
        raise ValueError("max_tokens: Input should be a valid integer")
    return body


def _usage(controls: Controls, input_tokens: int, output_tokens: int) -> dict:
    """Anthropic's usage: ``input_tokens`` excludes cache reads and writes, which are reported
    beside it, and cache writes are broken down by TTL."""
    overrides = dict(controls.usage or {})
    unknown = set(overrides) - set(_USAGE_FIELDS)
    if unknown:
        raise ValueError(f"fake: unknown usage fields {sorted(unknown)}")
    breakdown = overrides.get("cache_creation")
    if breakdown is not None and (not isinstance(breakdown, dict) or set(breakdown) - set(_CACHE_TTLS)):
        raise ValueError(f"fake: cache_creation takes only {', '.join(_CACHE_TTLS)}")
    written = overrides.get("cache_creation_input_tokens")
    if breakdown is None:  # a bare write count is a 5-minute write, the default TTL
        breakdown = {_CACHE_TTLS[0]: written or 0}
    breakdown = {ttl: breakdown.get(ttl, 0) for ttl in _CACHE_TTLS}
    return {
        "input_tokens": overrides.get("input_tokens", input_tokens),
        "cache_creation_input_tokens": sum(breakdown.values()) if written is None else written,
        "cache_read_input_tokens": overrides.get("cache_read_input_tokens", 0),
        "cache_creation": breakdown,
        "output_tokens": overrides.get("output_tokens", output_tokens),
        "service_tier": "standard",
    }


def _reply(body: dict, controls: Controls) -> Reply:
    model = body["model"]
    prompt = count_prompt(model, body, "anthropic_messages")  # first: it refuses malformed messages
    text, truncated = reply_text(controls, model, last_user_text(body["messages"]), body["max_tokens"])
    return Reply(text, truncated, _usage(controls, prompt, count_text(model, text)))


def messages(body, controls: Controls):
    body = _body(body, needs_max_tokens=True)
    reply = _reply(body, controls)
    usage = {} if controls.no_usage else {"usage": reply.usage}
    message = {
        "id": f"msg_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant", "model": body["model"],
        "content": [{"type": "text", "text": reply.text}],
        "stop_reason": "max_tokens" if reply.truncated else "end_turn", "stop_sequence": None,
    }
    if not body.get("stream"):
        return {**message, **usage}

    # message_start reports the input side and a first output token; message_delta the final,
    # cumulative output_tokens (and only that, as in Anthropic's documented stream).
    start_usage = {} if controls.no_usage else {"usage": {**reply.usage, "output_tokens": 1}}
    delta_usage = {} if controls.no_usage else {"usage": {"output_tokens": reply.usage["output_tokens"]}}
    start = {**message, "content": [], "stop_reason": None, **start_usage}
    events = [
        ("message_start", {"message": start}, False),
        ("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}, False),
        ("ping", {}, False),
        *(("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": piece}}, True)
          for piece in pieces(reply.text, controls.chunks)),
        ("content_block_stop", {"index": 0}, False),
        ("message_delta", {"delta": {"stop_reason": message["stop_reason"], "stop_sequence": None}, **delta_usage},
         False),
        ("message_stop", {}, False),
    ]
    return [Event(sse({"type": kind, **data}, kind), content) for kind, data, content in events]


def count_tokens(body, controls: Controls):
    body = _body(body, needs_max_tokens=False)
    tokens = count_prompt(body["model"], body, "anthropic_messages")
    return {"input_tokens": (controls.usage or {}).get("input_tokens", tokens)}


def models(body, controls: Controls):
    data = [{"type": "model", "id": model, "display_name": name, "created_at": created}
            for model, name, created in MODELS]
    return {"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]}


ROUTES = {
    ("POST", "/v1/messages"): messages,
    ("POST", "/v1/messages/count_tokens"): count_tokens,
    ("GET", "/v1/models"): models,
}
