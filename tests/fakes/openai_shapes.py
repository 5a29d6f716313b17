"""What the fake OpenAI answers: OpenAI-shaped JSON bodies and SSE events, as pure functions.

Each route takes the parsed request body and the request's ``Controls`` and returns a JSON
object or a ``list[Event]`` (a stream). It raises ``ValueError`` for a body OpenAI would refuse
with 400. Usage is realistic by default: prompts are counted the way the gateway counts them
(``pouch.tokens``, tiktoken), completions are the reply text's tokens.
"""

from __future__ import annotations

import base64
import struct
import time
import uuid
from typing import NamedTuple

from pouch.tokens.count import count_prompt, count_text

from .controls import Controls
from .replies import calls_made, last_user_text, pieces, reply_text, sse, vector
from .server import Event

MODELS = ("gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-5", "o3-mini", "text-embedding-3-small")
EMBEDDING_DIMENSIONS = 1536


class Usage(NamedTuple):
    prompt: int  # includes cached, as OpenAI reports it
    completion: int  # includes reasoning, as OpenAI reports it
    cached: int = 0
    reasoning: int = 0


class Reply(NamedTuple):
    text: str
    truncated: bool  # the request's max tokens cut it short ("length" / "incomplete")
    usage: Usage


def error_body(status: int, message: str) -> dict:
    kind, code = {
        401: ("invalid_request_error", "invalid_api_key"),
        404: ("invalid_request_error", None),
        429: ("requests", "rate_limit_exceeded"),
    }.get(status, ("server_error" if status >= 500 else "invalid_request_error", None))
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _object(body) -> dict:
    if not isinstance(body, dict):
        raise ValueError("We could not parse the JSON body of your request. (fake: expected an object)")
    if not isinstance(body.get("model"), str):
        raise ValueError("you must provide a model parameter")
    return body


def _reply(controls: Controls, model: str, prompt_tokens: int, said: str, max_tokens, tool_tokens: int = 0) -> Reply:
    """``tool_tokens``: the input server tool rounds re-billed (their results, read by the next
    round), on top of the prompt; an x-fake-usage prompt count still wins."""
    text, truncated = reply_text(controls, model, said, max_tokens)
    usage = Usage(prompt_tokens + tool_tokens, count_text(model, text))
    overrides = dict(controls.usage or {})
    for alias, name in (("input_tokens", "prompt_tokens"), ("output_tokens", "completion_tokens")):
        if alias in overrides:
            overrides[name] = overrides.pop(alias)
    unknown = set(overrides) - {"prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens"}
    if unknown:
        raise ValueError(f"fake: unknown usage fields {sorted(unknown)}")
    reasoning = overrides.get("reasoning_tokens", 0)
    usage = Usage(
        overrides.get("prompt_tokens", usage.prompt),
        # OpenAI's completion count includes reasoning; keep that true when only reasoning is set.
        overrides.get("completion_tokens", usage.completion + reasoning),
        overrides.get("cached_tokens", 0),
        reasoning,
    )
    return Reply(text, truncated, usage)


def _chat_usage(usage: Usage) -> dict:
    return {
        "prompt_tokens": usage.prompt,
        "completion_tokens": usage.completion,
        "total_tokens": usage.prompt + usage.completion,
        "prompt_tokens_details": {"cached_tokens": usage.cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": usage.reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _openai_stream(controls: Controls, reply: Reply, body: dict, base: dict, choice, first=None) -> list[Event]:
    """A chat or completions stream: ``first`` (chat's role chunk), content, finish, usage, [DONE]."""
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    # With include_usage, OpenAI puts "usage": null on every chunk before the usage chunk.
    extra = {"usage": None} if include_usage else {}

    def event(one_choice, is_content=False):
        return Event(sse({**base, "choices": [one_choice], **extra}), is_content)

    events = [event(first)] if first else []
    events += [event(choice(piece, None), True) for piece in pieces(reply.text, controls.chunks)]
    events.append(event(choice("", "length" if reply.truncated else "stop")))
    if include_usage and not controls.no_usage:
        events.append(Event(sse({**base, "choices": [], "usage": _chat_usage(reply.usage)}), False))
    return [*events, Event(sse("[DONE]"), False)]


def _citations(body: dict, controls: Controls) -> list[dict]:
    """A search model (a request with ``web_search_options``) searches once per request, and
    says so only through url_citation annotations."""
    if body.get("web_search_options") is None or controls.tool_calls < 1:
        return []
    cited = {"url": "https://example.com/1", "title": "Result 1", "start_index": 0, "end_index": 1}
    return [{"type": "url_citation", "url_citation": cited}]


def chat_completions(body, controls: Controls):
    body = _object(body)
    model = body["model"]
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    said = last_user_text(body.get("messages"))
    annotations = _citations(body, controls)
    tool_tokens = controls.tool_input if annotations else 0
    reply = _reply(controls, model, count_prompt(model, body, "chat"), said, max_tokens, tool_tokens)
    base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": model,
            "system_fingerprint": "fp_fake", "service_tier": "default"}
    if not body.get("stream"):
        message = {"role": "assistant", "content": reply.text, "refusal": None, "annotations": annotations}
        finish = "length" if reply.truncated else "stop"
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
        usage = {} if controls.no_usage else {"usage": _chat_usage(reply.usage)}
        return {**base, "object": "chat.completion", "choices": [choice], **usage}

    def choice(text, finish_reason, delta=None):
        delta = delta or ({"content": text} if text else {})
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}

    first = choice("", None, {"role": "assistant", "content": "", "refusal": None,
                              **({"annotations": annotations} if annotations else {})})
    return _openai_stream(controls, reply, body, {**base, "object": "chat.completion.chunk"}, choice, first)


def completions(body, controls: Controls):
    body = _object(body)
    model = body["model"]
    prompt = body.get("prompt", "")
    said = prompt if isinstance(prompt, str) else next((p for p in reversed(prompt) if isinstance(p, str)), "")
    # Legacy completions default max_tokens to 16, so a long echo is cut there, as OpenAI's is.
    reply = _reply(controls, model, count_prompt(model, body, "completions"), said, body.get("max_tokens", 16))
    base = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
            "model": model, "system_fingerprint": "fp_fake"}

    def choice(text, finish_reason):
        return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}

    if not body.get("stream"):
        usage = {} if controls.no_usage else {"usage": _chat_usage(reply.usage)}
        return {**base, "choices": [choice(reply.text, "length" if reply.truncated else "stop")], **usage}
    return _openai_stream(controls, reply, body, base, choice)


_SERVER_TOOLS = ("file_search", "code_interpreter", "mcp")  # and web_search, web_search_preview, dated


def _server_tool(tools) -> dict | None:
    """The first tool OpenAI runs itself (and bills per call), if any."""
    for tool in tools if isinstance(tools, list) else ():
        kind = tool.get("type") if isinstance(tool, dict) else None
        if isinstance(kind, str) and (kind.startswith("web_search") or kind in _SERVER_TOOLS):
            return tool
    return None


def _tool_items(tool: dict | None, calls: int) -> list[dict]:
    """The output items of ``calls`` calls of ``tool``, shaped as the openai SDK's types."""
    if tool is None:
        return []
    kind, container, items = tool["type"], f"cntr_{uuid.uuid4().hex}", []
    for i in range(1, calls + 1):
        hex_id = uuid.uuid4().hex
        if kind.startswith("web_search"):
            item = {"type": "web_search_call", "id": f"ws_{hex_id}", "status": "completed",
                    "action": {"type": "search", "query": f"fake query {i}"}}
        elif kind == "file_search":
            item = {"type": "file_search_call", "id": f"fs_{hex_id}", "status": "completed",
                    "queries": [f"fake query {i}"], "results": None}
        elif kind == "code_interpreter":
            item = {"type": "code_interpreter_call", "id": f"ci_{hex_id}", "status": "completed",
                    "code": f"print({i})", "container_id": container, "outputs": None}
        else:
            item = {"type": "mcp_call", "id": f"mcp_{hex_id}", "status": "completed", "name": "fake_tool",
                    "server_label": tool.get("server_label"), "arguments": "{}", "output": "ok", "error": None}
        items.append(item)
    return items


def responses(body, controls: Controls):
    answer = _responses(body, controls)
    if isinstance(answer, dict):
        return answer
    return [Event(sse(event, event["type"]), content) for event, content in answer]


def response_events(body, controls: Controls) -> list[tuple[dict, bool]]:
    """A response's stream events, each with whether it is a content chunk (what a Responses
    WebSocket sends, one message each, for a ``response.create`` with ``body``)."""
    return _responses({**_object(body), "stream": True}, controls)


def _responses(body, controls: Controls) -> dict | list[tuple[dict, bool]]:
    body = _object(body)
    model = body["model"]
    said = last_user_text(body.get("input"))
    tool = _server_tool(body.get("tools"))
    # max_tool_calls bounds every built-in tool call of the response, as OpenAI applies it.
    tool_items = _tool_items(tool, calls_made(controls, body.get("max_tool_calls")))
    reply = _reply(controls, model, count_prompt(model, body, "responses"), said, body.get("max_output_tokens"),
                   len(tool_items) * controls.tool_input)
    usage = reply.usage
    part = {"type": "output_text", "text": reply.text, "annotations": [], "logprobs": []}
    item = {"id": f"msg_{uuid.uuid4().hex}", "type": "message", "status": "completed", "role": "assistant",
            "content": [part]}
    response = {
        "id": f"resp_{uuid.uuid4().hex}", "object": "response", "created_at": int(time.time()),
        "status": "incomplete" if reply.truncated else "completed", "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if reply.truncated else None,
        "instructions": body.get("instructions"), "max_output_tokens": body.get("max_output_tokens"),
        "model": model, "output": [*tool_items, item], "parallel_tool_calls": True, "previous_response_id": None,
        "max_tool_calls": body.get("max_tool_calls"),
        "reasoning": {"effort": None, "summary": None}, "store": True, "temperature": 1.0,
        "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [], "top_p": 1.0,
        "truncation": "disabled", "user": None, "metadata": {},
        "usage": None if controls.no_usage else {
            "input_tokens": usage.prompt,
            "input_tokens_details": {"cached_tokens": usage.cached},
            "output_tokens": usage.completion,
            "output_tokens_details": {"reasoning_tokens": usage.reasoning},
            "total_tokens": usage.prompt + usage.completion,
        },
    }
    if not body.get("stream"):
        if controls.no_usage:
            del response["usage"]
        return response

    pending = {**response, "status": "in_progress", "incomplete_details": None, "output": [], "usage": None}
    # The tool calls come first, each added then done, and the message after them.
    index = len(tool_items)
    at = {"item_id": item["id"], "output_index": index, "content_index": 0}
    tool_events = []
    for n, tool_item in enumerate(tool_items):
        running = {**tool_item, "status": "in_progress", **({"output": None} if "output" in tool_item else {})}
        tool_events += [("response.output_item.added", {"output_index": n, "item": running}, False),
                        ("response.output_item.done", {"output_index": n, "item": tool_item}, False)]
    events = [
        ("response.created", {"response": pending}, False),
        ("response.in_progress", {"response": pending}, False),
        *tool_events,
        ("response.output_item.added",
         {"output_index": index, "item": {**item, "status": "in_progress", "content": []}}, False),
        ("response.content_part.added", {**at, "part": {**part, "text": ""}}, False),
        *(("response.output_text.delta", {**at, "delta": piece, "logprobs": []}, True)
          for piece in pieces(reply.text, controls.chunks)),
        ("response.output_text.done", {**at, "text": reply.text, "logprobs": []}, False),
        ("response.content_part.done", {**at, "part": part}, False),
        ("response.output_item.done", {"output_index": index, "item": item}, False),
        # A reply cut by max_output_tokens ends with response.incomplete, as OpenAI's does.
        ("response.incomplete" if reply.truncated else "response.completed", {"response": response}, False),
    ]
    return [({"type": kind, "sequence_number": n, **data}, content) for n, (kind, data, content) in enumerate(events)]


def embeddings(body, controls: Controls):
    body = _object(body)
    prompt = count_prompt(body["model"], body, "embeddings")  # first: it refuses malformed input
    value = body.get("input")
    # One text, one list of token ids, or a list of either.
    inputs = [value] if isinstance(value, str) or (value and isinstance(value[0], int)) else list(value or [])
    dimensions = body.get("dimensions", EMBEDDING_DIMENSIONS)
    data = []
    for index, one in enumerate(inputs):
        values = vector(one, dimensions)
        if body.get("encoding_format") == "base64":  # little-endian float32, as OpenAI sends
            values = base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
        data.append({"object": "embedding", "index": index, "embedding": values})
    if controls.usage:
        prompt = controls.usage.get("prompt_tokens", controls.usage.get("input_tokens", prompt))
    usage = {} if controls.no_usage else {"usage": {"prompt_tokens": prompt, "total_tokens": prompt}}
    return {"object": "list", "data": data, "model": body["model"], **usage}


def models(body, controls: Controls):
    data = [{"id": m, "object": "model", "created": 1_700_000_000, "owned_by": "openai"} for m in MODELS]
    return {"object": "list", "data": data}


ROUTES = {
    ("POST", "/v1/chat/completions"): chat_completions,
    ("POST", "/v1/responses"): responses,
    ("POST", "/v1/completions"): completions,
    ("POST", "/v1/embeddings"): embeddings,
    ("GET", "/v1/models"): models,
}
