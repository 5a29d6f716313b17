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

import json
import logging
import re

from pouch.domain.usage import Usage
from pouch.providers.sse import SSEEvent, SSESplitter

log = logging.getLogger(__name__)


def usage_from_dict(usage: object) -> Usage | None:
    """Normalise an Anthropic ``usage`` object; None when its totals are missing or not counts.

    Missing or null cache counts are 0. Cache writes are split by lifetime from the
    ``cache_creation`` breakdown; without one, all writes are at the default 5 minutes. When
    the breakdown and ``cache_creation_input_tokens`` disagree, the larger is billed
    (under-billing is the error a budget gateway must not make).
    """
    if not isinstance(usage, dict):
        return None
    uncached = _count(usage.get("input_tokens"))
    output = _count(usage.get("output_tokens"))
    if uncached is None or output is None:
        return None
    read = _count(usage.get("cache_read_input_tokens")) or 0
    lifetimes = _dict(usage.get("cache_creation"))
    written_1h = _count(lifetimes.get("ephemeral_1h_input_tokens")) or 0
    written_5m = _count(lifetimes.get("ephemeral_5m_input_tokens")) or 0
    written = max(_count(usage.get("cache_creation_input_tokens")) or 0, written_5m + written_1h)
    thinking = _count(_dict(usage.get("output_tokens_details")).get("thinking_tokens")) or 0
    server = _dict(usage.get("server_tool_use"))
    calls = {tool: _count(server.get(field)) or 0 for field, tool in _SERVER_TOOL_COUNTS.items()}
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


# Anthropic names every event; a compatible server that does not is read from the JSON.
_LEADING_TYPE = re.compile(r'\{\s*"type"\s*:\s*"([^"\\]+)"')
# Billed output, by delta type and the field holding it. signature_delta is left out: a
# signature is an opaque proof over the thinking, not generated tokens.
_DELTA_TEXT = {"text_delta": "text", "input_json_delta": "partial_json", "thinking_delta": "thinking"}
# A block can open with output in it: a tool's name, (rarely) leading text or thinking.
_BLOCK_TEXT = {"text": "text", "thinking": "thinking", "tool_use": "name", "server_tool_use": "name"}


class MessagesStreamTracker:
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

    def __init__(self):
        self._splitter = SSESplitter()
        self._start_usage: dict = {}
        self._delta_usage: dict = {}
        self._final = False
        self._model: str | None = None
        self._content: list[str] = []
        self._broken = False

    def feed(self, data: bytes) -> bytes:
        if self._broken:
            return data
        try:
            for event in self._splitter.feed(data) if data else self._splitter.end():
                self._observe(event)
        except Exception:
            # A tracker bug must not break the client's stream: stop watching, pass bytes on.
            log.exception("anthropic stream tracker failed; passing the rest through untouched")
            self._broken = True
        return data

    def _observe(self, event: SSEEvent) -> None:
        kind = event.name or _event_type(event.data)
        if kind in ("content_block_delta", "content_block_start"):
            self._content.append(event.data)
        elif kind == "message_start":
            message = _dict((_loads(event.data) or {}).get("message"))
            model = message.get("model")
            self._model = model if isinstance(model, str) and model else self._model
            self._start_usage = _dict(message.get("usage"))
        elif kind == "message_delta":
            usage = (_loads(event.data) or {}).get("usage")
            if isinstance(usage, dict):
                # Counts are cumulative: the latest non-null value of each wins.
                self._delta_usage |= {k: v for k, v in usage.items() if v is not None}
                # Without its own output count, message_start's placeholder would be billed.
                self._final = self._final or _count(usage.get("output_tokens")) is not None

    def usage(self) -> Usage | None:
        if not self._final:
            return None
        return usage_from_dict(self._start_usage | self._delta_usage)

    def output_text(self) -> str:
        parts = []
        for data in self._content:
            event = _loads(data) or {}
            if "delta" in event:
                part, fields = _dict(event["delta"]), _DELTA_TEXT
            else:
                part, fields = _dict(event.get("content_block")), _BLOCK_TEXT
            kind = part.get("type")
            text = part.get(fields[kind]) if isinstance(kind, str) and kind in fields else None
            if isinstance(text, str):
                parts.append(text)
        return "".join(parts)

    def model(self) -> str | None:
        return self._model


def _event_type(data: str) -> str | None:
    if match := _LEADING_TYPE.match(data):
        return match.group(1)
    kind = (_loads(data) or {}).get("type") if data else None
    return kind if isinstance(kind, str) else None
