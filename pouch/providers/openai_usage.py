"""Usage from what OpenAI sends back: complete JSON bodies, and SSE streams as they pass.

OpenAI already reports the normalised way (input counts include cache reads and writes,
output counts include reasoning), so this only validates, clamps and sorts cache writes.

Stream trackers run on every chunk of every stream: they keep each event's data string and
parse JSON only for the few events that matter (the first one for the model, the ones
carrying usage); the output text is assembled only when a stream is cut short.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Callable

from pouch.domain.usage import Usage
from pouch.providers.sse import SSEEvent, SSESplitter

log = logging.getLogger(__name__)

# api -> (input field, its details, output field, its details); embeddings have no output.
_USAGE_FIELDS = {
    "chat": ("prompt_tokens", "prompt_tokens_details", "completion_tokens", "completion_tokens_details"),
    "completions": ("prompt_tokens", "prompt_tokens_details", "completion_tokens", "completion_tokens_details"),
    "embeddings": ("prompt_tokens", "prompt_tokens_details", None, None),
    "responses": ("input_tokens", "input_tokens_details", "output_tokens", "output_tokens_details"),
}


def usage_from_dict(api: str, usage: object) -> Usage | None:
    """Normalise an OpenAI ``usage`` object; None when it is missing or not numbers.

    Details that are missing or null count as 0; details larger than their total are
    clamped to it (the totals are what OpenAI bills). Cache writes (GPT-5.6 and later bill
    them above the input price) map by lifetime: OpenAI's default 30 minutes to
    ``cache_write_5m_tokens``, its extended 12 hours to ``cache_write_1h_tokens``, the
    pricing table's default and extended write prices.
    """
    if not isinstance(usage, dict) or api not in _USAGE_FIELDS:
        return None
    input_field, input_details, output_field, output_details = _USAGE_FIELDS[api]
    input_tokens = _count(usage.get(input_field))
    output_tokens = _count(usage.get(output_field)) if output_field else 0
    if input_tokens is None or output_tokens is None:
        return None
    details = _dict(usage.get(input_details))
    cached = min(_count(details.get("cached_tokens")) or 0, input_tokens)
    written = min(_count(details.get("cache_write_tokens")) or 0, input_tokens - cached)
    written_12h = min(_count(_dict(details.get("cache_write_tokens_details")).get("ttl_12h_tokens")) or 0, written)
    reasoning = _count(_dict(usage.get(output_details)).get("reasoning_tokens")) or 0
    return Usage(
        input_tokens=input_tokens,
        cached_tokens=cached,
        cache_write_5m_tokens=written - written_12h,
        cache_write_1h_tokens=written_12h,
        output_tokens=output_tokens,
        reasoning_tokens=min(reasoning, output_tokens),
    )


# Output items of a Responses object that are paid server-side tool calls, by price-table name
# (``web_search`` calls are priced at the requested tool's fee: ``web_search_preview`` is dearer).
_TOOL_ITEMS = {"web_search_call": "web_search", "file_search_call": "file_search", "mcp_call": "mcp"}


def usage_field(api: str, message: dict) -> Usage | None:
    """The usage of a response, chunk or Responses object: its ``usage`` field, read OpenAI's way,
    with the server-side tool calls a Responses object lists in its output.

    The default ``read_usage`` of the stream trackers; a compatible vendor that reports usage
    elsewhere or counts differently passes its own (``OpenAI.read_usage``).
    """
    usage = usage_from_dict(api, message.get("usage"))
    if usage is not None and api == "responses":
        usage = dataclasses.replace(usage, tool_calls=tool_calls_of(message))
    return usage


def tool_calls_of(response: dict) -> tuple[tuple[str, int], ...]:
    """The paid server-side tool calls a Responses object lists in its output."""
    calls: dict[str, int] = {}
    output = response.get("output")
    for item in output if isinstance(output, list) else ():
        name = _TOOL_ITEMS.get(item.get("type")) if isinstance(item, dict) else None
        if name:
            calls[name] = calls.get(name, 0) + 1
    return Usage.tools(calls)


def _count(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _dict(value: object) -> dict:
    return value if isinstance(value, dict) else {}


def _loads(data: str) -> dict | None:
    try:
        parsed = json.loads(data)
    except (ValueError, RecursionError):  # RecursionError: absurdly nested JSON
        return None
    return parsed if isinstance(parsed, dict) else None


def _string(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


class _Tracker:
    """Splitting, pass-through and never-raise, shared by both stream shapes.

    Subclasses implement ``_observe(event) -> bool`` (True: drop the event from the bytes
    sent on). Only a tracker that may drop events forwards whole events; otherwise bytes
    go on the moment they arrive.
    """

    def __init__(self, api: str, drops_events: bool):
        self._api = api
        self._drops_events = drops_events
        self._splitter = SSESplitter()
        self._usage: Usage | None = None
        self._model: str | None = None
        self._broken = False

    def feed(self, data: bytes) -> bytes:
        if self._broken:
            return data
        events = None
        try:
            events = self._splitter.feed(data) if data else self._splitter.end()
            if not self._drops_events:
                for event in events:
                    self._observe(event)
                return data
            return b"".join([event.raw for event in events if not self._observe(event)])
        except Exception:
            # A tracker bug must not break the client's stream: stop watching, pass bytes on.
            log.exception("%s stream tracker failed; passing the rest through untouched", self._api)
            self._broken = True
            if not self._drops_events:
                return data
            if events is None:
                return self._splitter.tail + data
            return b"".join(event.raw for event in events) + self._splitter.tail

    def usage(self) -> Usage | None:
        return self._usage

    def model(self) -> str | None:
        return self._model

    def _observe(self, event: SSEEvent) -> bool:
        raise NotImplementedError


class ChatStreamTracker(_Tracker):
    """chat.completions and completions streams: ``data: {chunk}`` events, then ``[DONE]``.

    With ``injected_usage`` the client never asked for usage, so the usage-only chunk
    (``"choices": []`` with a usage object) that pouch asked for is removed.
    """

    def __init__(self, api: str, injected_usage: bool, read_usage: Callable[[str, dict], Usage | None] = usage_field):
        super().__init__(api, drops_events=injected_usage)
        self._chunks: list[str] = []
        self._read_usage = read_usage
        self._final = False

    def usage(self) -> Usage | None:
        # Servers that stream running totals (vLLM's continuous_usage_stats) put usage in every
        # chunk: only the last one is what the stream cost, so a total counts once the stream
        # says it is done (a usage-only chunk, a finish reason, or [DONE]).
        return self._usage if self._final else None

    def _observe(self, event: SSEEvent) -> bool:
        data = event.data
        if data == "[DONE]":
            self._final = True
        if not data or data == "[DONE]":
            return False
        self._chunks.append(data)
        # Azure's first chunk carries content-filter results and an empty model: look at two.
        if self._model is None and len(self._chunks) <= 2:
            self._model = _string((_loads(data) or {}).get("model"))
        # Inside JSON strings quotes are escaped, so this only matches a real, non-null usage.
        if '"usage":{' not in data and '"usage": {' not in data:
            return False
        chunk = _loads(data)
        if chunk is None:
            return False
        usage = self._read_usage(self._api, chunk)
        if usage is None:
            return False
        self._usage = usage
        choices = chunk.get("choices")
        self._final = self._final or choices == [] or any(
            isinstance(c, dict) and c.get("finish_reason") for c in (choices if isinstance(choices, list) else ()))
        self._model = self._model or _string(chunk.get("model"))
        return self._drops_events and choices == []

    def output_text(self) -> str:
        parts: list[str] = []
        for data in self._chunks:
            chunk = _loads(data)
            choices = chunk.get("choices") if chunk else None
            for choice in choices if isinstance(choices, list) else ():
                if isinstance(choice, dict):
                    _choice_text(choice, parts)
        return "".join(parts)


def _choice_text(choice: dict, parts: list[str]) -> None:
    """Append the billed output text of one streamed choice (chat delta or completions text)."""
    delta = choice.get("delta")
    if not isinstance(delta, dict):
        if isinstance(choice.get("text"), str):
            parts.append(choice["text"])
        return
    # reasoning_content: OpenAI-compatible servers (vLLM, DeepSeek) stream billed reasoning there.
    for field in ("content", "refusal", "reasoning_content"):
        if isinstance(delta.get(field), str):
            parts.append(delta[field])
    calls = delta.get("tool_calls")
    calls = calls if isinstance(calls, list) else []
    functions = [call.get("function") for call in calls if isinstance(call, dict)]
    functions.append(delta.get("function_call"))
    for function in functions:
        if isinstance(function, dict):
            for field in ("name", "arguments"):
                if isinstance(function.get(field), str):
                    parts.append(function[field])


# Events whose ``delta`` is billed output. reasoning_text: open-weight reasoning models on
# compatible servers stream it; OpenAI's own reasoning stays hidden (counted in usage only).
_TEXT_EVENTS = frozenset(
    {
        "response.output_text.delta",
        "response.refusal.delta",
        "response.function_call_arguments.delta",
        "response.reasoning_summary_text.delta",
        "response.reasoning_text.delta",
    }
)
_FINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})
_LEADING_TYPE = re.compile(r'\{\s*"type"\s*:\s*"([^"\\]+)"')


class ResponsesStreamTracker(_Tracker):
    """Responses API streams: named events; usage in the final response object."""

    def __init__(self, read_usage: Callable[[str, dict], Usage | None] = usage_field):
        super().__init__("responses", drops_events=False)
        self._deltas: list[str] = []
        self._read_usage = read_usage

    def _observe(self, event: SSEEvent) -> bool:
        kind = event.name or _event_type(event.data)
        if kind in _TEXT_EVENTS:
            self._deltas.append(event.data)
        elif kind in _FINAL_EVENTS or (kind == "response.created" and self._model is None):
            response = (_loads(event.data) or {}).get("response")
            if isinstance(response, dict):
                self._model = _string(response.get("model")) or self._model
                if kind in _FINAL_EVENTS:
                    self._usage = self._read_usage("responses", response) or self._usage
        return False

    def output_text(self) -> str:
        deltas = ((_loads(data) or {}).get("delta") for data in self._deltas)
        return "".join(delta for delta in deltas if isinstance(delta, str))


def _event_type(data: str) -> str | None:
    """The ``type`` of an event sent without an ``event:`` line (some compatible servers)."""
    if match := _LEADING_TYPE.match(data):
        return match.group(1)
    kind = (_loads(data) or {}).get("type") if data else None
    return kind if isinstance(kind, str) else None
