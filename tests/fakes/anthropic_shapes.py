"""What the fake Anthropic answers: Messages API JSON bodies and SSE events, as pure functions.

Each route takes the parsed request body and the request's ``Controls`` and returns a JSON
object or a ``list[Event]`` (a stream). It raises ``ValueError`` for a body Anthropic would
refuse with 400. Usage is realistic by default: prompts are counted the way the gateway counts
them (``count_prompt(..., "anthropic_messages")``: the raw o200k count, before the safety
factor the gateway reserves with), output is the reply text's tokens.
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import NamedTuple

from pouch.tokens.count import count_prompt, count_text

from .controls import Controls
from .replies import calls_made, last_user_text, pieces, reply_text, sse
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
    tool_blocks: list[dict]  # server_tool_use and its result, per call, before the text
    input_before_tools: int  # input_tokens before the tool rounds (a stream's message_start)


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
    beside it, and cache writes are broken down by TTL. An x-fake-usage field wins."""
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


def _server_tool(tools) -> tuple[str, dict] | None:
    """The first tool Anthropic runs itself (and bills per call), with the name its blocks use."""
    for tool in tools if isinstance(tools, list) else ():
        kind = tool.get("type") if isinstance(tool, dict) else None
        for name in ("web_search", "web_fetch"):
            if isinstance(kind, str) and kind.startswith(name + "_"):
                return name, tool
    return None


def _tool_blocks(name: str, calls: int) -> list[dict]:
    """Per call, the server_tool_use block and its result block, as the anthropic SDK types them."""
    blocks = []
    for i in range(1, calls + 1):
        tool_use_id, url = f"srvtoolu_{uuid.uuid4().hex[:24]}", f"https://example.com/{i}"
        if name == "web_search":
            use_input = {"query": f"fake query {i}"}
            encrypted = base64.b64encode(f"fake result {i} {uuid.uuid4().hex}".encode()).decode()
            content = [{"type": "web_search_result", "url": url, "title": f"Result {i}",
                        "encrypted_content": encrypted, "page_age": None}]
        else:
            use_input = {"url": url}
            document = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "fetched"}}
            content = {"type": "web_fetch_result", "url": url, "content": document, "retrieved_at": None}
        blocks += [{"type": "server_tool_use", "id": tool_use_id, "name": name, "input": use_input},
                   {"type": f"{name}_tool_result", "tool_use_id": tool_use_id, "content": content}]
    return blocks


def _reply(body: dict, controls: Controls) -> Reply:
    model = body["model"]
    prompt = count_prompt(model, body, "anthropic_messages")  # first: it refuses malformed messages
    text, truncated = reply_text(controls, model, last_user_text(body["messages"]), body["max_tokens"])
    found = _server_tool(body.get("tools"))
    name, tool = found or ("web_search", {})
    calls = calls_made(controls, tool.get("max_uses")) if found else 0
    # Each call's results are input the next round re-reads, billed as input tokens.
    usage = _usage(controls, prompt + calls * controls.tool_input, count_text(model, text))
    if calls:
        # The SDK's ServerToolUsage has both counts; the other one is 0, as Anthropic sends it.
        usage["server_tool_use"] = {"web_search_requests": 0, "web_fetch_requests": 0, f"{name}_requests": calls}
    before = (controls.usage or {}).get("input_tokens", prompt)
    return Reply(text, truncated, usage, _tool_blocks(name, calls), before)


def messages(body, controls: Controls):
    body = _body(body, needs_max_tokens=True)
    reply = _reply(body, controls)
    usage = {} if controls.no_usage else {"usage": reply.usage}
    message = {
        "id": f"msg_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant", "model": body["model"],
        "content": [*reply.tool_blocks, {"type": "text", "text": reply.text}],
        "stop_reason": "max_tokens" if reply.truncated else "end_turn", "stop_sequence": None,
    }
    if not body.get("stream"):
        return {**message, **usage}

    # message_start reports the input side (before any tool round) and a first output token;
    # message_delta the final, cumulative output_tokens, and only that, as in Anthropic's
    # documented stream, unless server tools ran: then, as Anthropic does, every cumulative
    # total, the tool rounds' input and the tool counts included.
    opening = {key: value for key, value in reply.usage.items() if key != "server_tool_use"}
    opening.update(input_tokens=reply.input_before_tools, output_tokens=1)
    closing = {"output_tokens": reply.usage["output_tokens"]}
    if reply.tool_blocks:
        closing = {key: reply.usage[key] for key in ("input_tokens", "cache_creation_input_tokens",
                                                     "cache_read_input_tokens", "output_tokens", "server_tool_use")}
    start_usage = {} if controls.no_usage else {"usage": opening}
    delta_usage = {} if controls.no_usage else {"usage": closing}
    start = {**message, "content": [], "stop_reason": None, **start_usage}
    tool_events = []
    for index, block in enumerate(reply.tool_blocks):
        if block["type"] == "server_tool_use":  # its input arrives as JSON deltas, like a client tool's
            tool_events += [
                ("content_block_start", {"index": index, "content_block": {**block, "input": {}}}, False),
                ("content_block_delta", {"index": index, "delta": {
                    "type": "input_json_delta", "partial_json": json.dumps(block["input"])}}, False),
            ]
        else:
            tool_events.append(("content_block_start", {"index": index, "content_block": block}, False))
        tool_events.append(("content_block_stop", {"index": index}, False))
    text_index = len(reply.tool_blocks)
    events = [
        ("message_start", {"message": start}, False),
        *tool_events,
        ("content_block_start", {"index": text_index, "content_block": {"type": "text", "text": ""}}, False),
        *(("content_block_delta", {"index": text_index, "delta": {"type": "text_delta", "text": piece}}, True)
          for piece in pieces(reply.text, controls.chunks)),
        ("content_block_stop", {"index": text_index}, False),
        ("message_delta", {"delta": {"stop_reason": message["stop_reason"], "stop_sequence": None}, **delta_usage},
         False),
        ("message_stop", {}, False),
    ]
    events.insert(2, ("ping", {}, False))  # after the first block starts, as Anthropic sends it
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
