"""Usage from what Anthropic sends back: Message bodies, and Messages SSE streams as they pass.

Anthropic's ``input_tokens`` excludes cache reads and cache writes, which it reports beside
it; pouch's input count includes both, so they are added back here. ``output_tokens``
already includes extended-thinking tokens. Anthropic broke thinking out only recently
(``output_tokens_details.thinking_tokens``); when a response lacks it, ``reasoning_tokens``
is 0, which costs the same (Anthropic bills thinking at the output price) and only loses
the breakdown.

Server tool requests (``server_tool_use.web_search_requests`` ...) are billed per request, on
top of the tokens: they become ``Usage.tool_calls`` under the price table's tool names.
"""

from __future__ import annotations

from pouch.domain.usage import Usage
from pouch.providers.base import GuardedTracker
from pouch.providers.sse import SSEEvent, SSESplitter
from pouch.providers.values import as_dict, count, event_type, loads_object


def usage_from_dict(usage: object) -> Usage | None:
    """Normalise an Anthropic ``usage`` object; None when its totals are missing or not counts.

    Missing or null cache counts are 0. Cache writes are split by lifetime from the
    ``cache_creation`` breakdown; without one, all writes are at the default 5 minutes. When
    the breakdown and ``cache_creation_input_tokens`` disagree, the larger is billed
    (under-billing is the error a budget gateway must not make).
    """
    if not isinstance(usage, dict):
        return None
    uncached = count(usage.get("input_tokens"))
    output = count(usage.get("output_tokens"))
    if uncached is None or output is None:
        return None
    read = count(usage.get("cache_read_input_tokens")) or 0
    lifetimes = as_dict(usage.get("cache_creation"))
    written_1h = count(lifetimes.get("ephemeral_1h_input_tokens")) or 0
    written_5m = count(lifetimes.get("ephemeral_5m_input_tokens")) or 0
    written = max(count(usage.get("cache_creation_input_tokens")) or 0, written_5m + written_1h)
    thinking = count(as_dict(usage.get("output_tokens_details")).get("thinking_tokens")) or 0
    server = as_dict(usage.get("server_tool_use"))
    calls = {tool: count(server.get(field)) or 0 for field, tool in _SERVER_TOOL_COUNTS.items()}
    return Usage(
        input_tokens=uncached + read + written,
        cached_tokens=read,
        cache_write_5m_tokens=written - written_1h,
        cache_write_1h_tokens=written_1h,
        output_tokens=output,
        reasoning_tokens=min(thinking, output),
        tool_calls=Usage.tools(calls),
    )


_SERVER_TOOL_COUNTS = {"web_search_requests": "web_search", "web_fetch_requests": "web_fetch",
                       "code_execution_requests": "code_execution"}


# Billed output, by delta type and the field holding it. signature_delta is left out: a
# signature is an opaque proof over the thinking, not generated tokens.
_DELTA_TEXT = {"text_delta": "text", "input_json_delta": "partial_json", "thinking_delta": "thinking"}
# A block can open with output in it: a tool's name, (rarely) leading text or thinking.
_BLOCK_TEXT = {"text": "text", "thinking": "thinking", "tool_use": "name", "server_tool_use": "name"}


class MessagesStreamTracker(GuardedTracker):
    """Follows a Messages stream: ``message_start`` carries the model and the input counts
    (and a placeholder output count), ``message_delta`` the cumulative final counts.

    Usage is final once a ``message_delta`` with usage has passed: it is sent once, after
    the last content block. A stream cut before it (or one that ends in an ``error`` event)
    has no final usage, so ``usage()`` is None and the chain bills the input plus the output
    seen, rather than trusting ``message_start``'s output count of 1.

    Bytes always go on untouched and at once. Only ``message_start`` and ``message_delta``
    are parsed as they pass; content events are kept as their JSON text and read only if
    ``output_text()`` is asked for.
    """

    name = "anthropic"

    def __init__(self):
        super().__init__()
        self._splitter = SSESplitter()
        self._start_usage: dict = {}
        self._delta_usage: dict = {}
        self._final = False
        self._model: str | None = None
        self._content: list[str] = []

    def _read(self, data: bytes) -> bytes:
        for event in self._splitter.feed(data) if data else self._splitter.end():
            self._observe(event)
        return data

    def _observe(self, event: SSEEvent) -> None:
        kind = event.name or event_type(event.data)
        if kind in ("content_block_delta", "content_block_start"):
            self._content.append(event.data)
        elif kind == "message_start":
            message = as_dict((loads_object(event.data) or {}).get("message"))
            model = message.get("model")
            self._model = model if isinstance(model, str) and model else self._model
            self._start_usage = as_dict(message.get("usage"))
        elif kind == "message_delta":
            usage = (loads_object(event.data) or {}).get("usage")
            if isinstance(usage, dict):
                # Counts are cumulative: the latest non-null value of each wins.
                self._delta_usage |= {k: v for k, v in usage.items() if v is not None}
                # Without its own output count, message_start's placeholder would be billed.
                self._final = self._final or count(usage.get("output_tokens")) is not None

    def usage(self) -> Usage | None:
        if not self._final:
            return None
        return usage_from_dict(self._start_usage | self._delta_usage)

    def output_text(self) -> str:
        parts = []
        for data in self._content:
            event = loads_object(data) or {}
            if "delta" in event:
                part, fields = as_dict(event["delta"]), _DELTA_TEXT
            else:
                part, fields = as_dict(event.get("content_block")), _BLOCK_TEXT
            kind = part.get("type")
            text = part.get(fields[kind]) if isinstance(kind, str) and kind in fields else None
            if isinstance(text, str):
                parts.append(text)
        return "".join(parts)

    def model(self) -> str | None:
        return self._model
