"""Following OpenAI's streams as they pass: chat and completions chunks, Responses events.

Trackers run on every chunk of every stream: they keep each event's data string and parse
JSON only for the few events that matter (the first one for the model, the ones carrying
usage); the output text is assembled only when a stream is cut short.
"""

from __future__ import annotations

from collections.abc import Callable

from pouch.domain.usage import Usage
from pouch.providers.base import GuardedTracker
from pouch.providers.openai.usage import usage_field
from pouch.providers.sse import SSEEvent, SSESplitter
from pouch.providers.values import event_type, loads_object, nonempty_str


class _Tracker(GuardedTracker):
    """Splitting and pass-through, shared by both stream shapes.

    Subclasses implement ``_observe(event) -> bool`` (True: drop the event from the bytes
    sent on). Only a tracker that may drop events forwards whole events; otherwise bytes
    go on the moment they arrive.
    """

    def __init__(self, api: str, drops_events: bool):
        super().__init__()
        self.name = api
        self._api = api
        self._drops_events = drops_events
        self._splitter = SSESplitter()
        self._events: list[SSEEvent] | None = None  # those split from the bytes being read
        self._usage: Usage | None = None
        self._model: str | None = None

    def _read(self, data: bytes) -> bytes:
        self._events = None
        self._events = events = self._splitter.feed(data) if data else self._splitter.end()
        if not self._drops_events:
            for event in events:
                self._observe(event)
            return data
        return b"".join([event.raw for event in events if not self._observe(event)])

    def _unsent(self, data: bytes) -> bytes:
        if not self._drops_events:
            return data
        if self._events is None:  # the splitter failed: it holds what it had
            return self._splitter.tail + data
        return b"".join(event.raw for event in self._events) + self._splitter.tail

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
            self._model = nonempty_str((loads_object(data) or {}).get("model"))
        # Inside JSON strings quotes are escaped, so this only matches a real, non-null usage.
        if '"usage":{' not in data and '"usage": {' not in data:
            return False
        chunk = loads_object(data)
        if chunk is None:
            return False
        usage = self._read_usage(self._api, chunk)
        if usage is None:
            return False
        self._usage = usage
        choices = chunk.get("choices")
        self._final = self._final or choices == [] or any(
            isinstance(c, dict) and c.get("finish_reason") for c in (choices if isinstance(choices, list) else ()))
        self._model = self._model or nonempty_str(chunk.get("model"))
        return self._drops_events and choices == []

    def output_text(self) -> str:
        parts: list[str] = []
        for data in self._chunks:
            chunk = loads_object(data)
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


class ResponsesStreamTracker(_Tracker):
    """Responses API streams: named events; usage in the final response object."""

    def __init__(self, read_usage: Callable[[str, dict], Usage | None] = usage_field):
        super().__init__("responses", drops_events=False)
        self._deltas: list[str] = []
        self._read_usage = read_usage

    def event(self, data: str) -> None:
        """Watch one event that arrived whole, not in an SSE stream: a WebSocket message."""
        self._observe(SSEEvent(None, data, b""))

    def _observe(self, event: SSEEvent) -> bool:
        kind = event.name or event_type(event.data)
        if kind in _TEXT_EVENTS:
            self._deltas.append(event.data)
        elif kind in _FINAL_EVENTS or (kind == "response.created" and self._model is None):
            response = (loads_object(event.data) or {}).get("response")
            if isinstance(response, dict):
                self._model = nonempty_str(response.get("model")) or self._model
                if kind in _FINAL_EVENTS:
                    self._usage = self._read_usage("responses", response) or self._usage
        return False

    def output_text(self) -> str:
        deltas = ((loads_object(data) or {}).get("delta") for data in self._deltas)
        return "".join(delta for delta in deltas if isinstance(delta, str))
