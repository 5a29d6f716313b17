"""Usage from what Gemini sends back: complete JSON bodies, and streams as they pass.

Gemini's ``promptTokenCount`` already includes ``cachedContentTokenCount``, but tool-use
prompt tokens and thinking tokens are reported beside the totals, not inside them; pouch's
Usage counts both inside (input and output), so they are added here.

``streamGenerateContent`` streams one of two ways: Server-Sent Events with ``alt=sse`` (what
the SDKs ask for) or, without it, one JSON array whose elements arrive in pieces. Each event
or element is a whole GenerateContentResponse whose ``usageMetadata`` is the running total,
so the last one seen is the final usage once the stream has finished.
"""

from __future__ import annotations

import codecs
import dataclasses
import json
import re

from pouch.domain.usage import Usage
from pouch.providers.base import GuardedTracker
from pouch.providers.sse import SSESplitter
from pouch.providers.values import as_dict, count, loads_object

_MAX_PENDING_ELEMENT = 16 * 1024 * 1024  # an array element larger than this is not one of Gemini's


def usage_from_metadata(metadata: object) -> Usage | None:
    """Normalise a ``usageMetadata`` object; None unless it has a prompt token count.

    Missing or malformed breakdowns count as 0; a cache count larger than the prompt is
    clamped to it (the prompt count is what Google bills).
    """
    if not isinstance(metadata, dict):
        return None
    prompt = count(metadata.get("promptTokenCount"))
    if prompt is None:
        return None
    thoughts = count(metadata.get("thoughtsTokenCount")) or 0
    return Usage(
        input_tokens=prompt + (count(metadata.get("toolUsePromptTokenCount")) or 0),
        cached_tokens=min(count(metadata.get("cachedContentTokenCount")) or 0, prompt),
        output_tokens=(count(metadata.get("candidatesTokenCount")) or 0) + thoughts,
        reasoning_tokens=thoughts,
    )


def usage_from_body(body: object) -> tuple[Usage | None, str | None]:
    """(usage, model) of a response object, or of a whole streamed array (the last usage)."""
    responses = body if isinstance(body, list) else [body]
    responses = [r for r in responses if isinstance(r, dict)]
    usage = next((u for r in reversed(responses) if (u := usage_from_metadata(r.get("usageMetadata")))), None)
    model = next((m for r in responses if isinstance(m := r.get("modelVersion"), str) and m), None)
    return (with_tool_calls(usage, responses) if usage else None), model


def with_tool_calls(usage: Usage, responses: list[dict]) -> Usage:
    """The calls of Google's own tools a response (or a stream's responses) shows: each code
    run, one URL retrieval, each search query (grounding, when the operator allows it)."""
    calls = {"code_execution": 0, "url_context": 0, "google_search": 0}
    for response in responses:
        candidates = response.get("candidates")
        for candidate in candidates if isinstance(candidates, list) else ():
            if not isinstance(candidate, dict):
                continue
            parts = as_dict(candidate.get("content")).get("parts")
            calls["code_execution"] += sum(isinstance(p, dict) and "executableCode" in p
                                           for p in (parts if isinstance(parts, list) else ()))
            if as_dict(candidate.get("urlContextMetadata")).get("urlMetadata"):
                calls["url_context"] = 1
            queries = as_dict(candidate.get("groundingMetadata")).get("webSearchQueries")
            if isinstance(queries, list):
                calls["google_search"] = max(calls["google_search"], len(queries))
    return dataclasses.replace(usage, tool_calls=Usage.tools(calls)) if any(calls.values()) else usage


def response_text(response: dict, parts: list[str]) -> None:
    """Append the billed output of one response: text (thought summaries included),
    function calls, and code the model wrote."""
    candidates = response.get("candidates")
    for candidate in candidates if isinstance(candidates, list) else ():
        content = candidate.get("content") if isinstance(candidate, dict) else None
        pieces = content.get("parts") if isinstance(content, dict) else None
        for part in pieces if isinstance(pieces, list) else ():
            if not isinstance(part, dict):
                continue
            if isinstance(part.get("text"), str):
                parts.append(part["text"])
            call = part.get("functionCall")
            if isinstance(call, dict):
                parts.append(str(call.get("name") or "") + json.dumps(call.get("args") or {}, ensure_ascii=False))
            code = part.get("executableCode")
            if isinstance(code, dict) and isinstance(code.get("code"), str):
                parts.append(code["code"])


# Between array elements: whitespace, the separating commas, and the opening bracket.
_BETWEEN_ELEMENTS = re.compile(r"[\s,\[]*")


class GeminiStreamTracker(GuardedTracker):
    """Follows one streamGenerateContent response, SSE or JSON array (told apart by the
    first byte that is not whitespace). Bytes are passed on untouched the moment they
    arrive. Each response's JSON text is kept; it is parsed only for the model (the first
    one), and at the end for the usage (the last ones) or, if cut short, the text.
    """

    name = "gemini"

    def __init__(self):
        super().__init__()
        self._format: str | None = None  # "sse" or "array", once known
        self._head = b""  # whitespace received before the format is known
        self._sse = SSESplitter()
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")
        self._array_text = ""  # array text not yet read as whole elements
        self._json = json.JSONDecoder()
        self._responses: list[str] = []
        self._finished = False
        self._model: str | None = None

    def usage(self) -> Usage | None:
        """The last usage seen, once the stream finished; None if it was cut short."""
        if not self._finished:
            return None
        for data in reversed(self._responses):
            if usage := usage_from_metadata((loads_object(data) or {}).get("usageMetadata")):
                return with_tool_calls(usage, [r for d in self._responses if (r := loads_object(d))])
        return None

    def output_text(self) -> str:
        parts: list[str] = []
        for data in self._responses:
            if response := loads_object(data):
                response_text(response, parts)
        return "".join(parts)

    def model(self) -> str | None:
        return self._model

    def _read(self, data: bytes) -> bytes:
        self._split(data)
        return data

    def _split(self, data: bytes) -> None:
        if self._format is None:
            data = self._head + data
            start = data.lstrip()
            if not start and data:  # only whitespace so far: the format is still unknown
                self._head = data
                return
            self._format = "array" if start.startswith(b"[") else "sse"
            self._head = b""
        if self._format == "sse":
            for event in self._sse.feed(data) if data else self._sse.end():
                self._observe(event.data)
        else:
            self._read_array(data)

    def _read_array(self, data: bytes) -> None:
        chunk = self._utf8.decode(data, final=not data)
        text = self._array_text + chunk
        # An element can only be complete once a "}" arrived; "]" may close the array.
        if "}" not in chunk and "]" not in chunk:
            self._array_text = text
            return
        position = 0
        while True:
            position = _BETWEEN_ELEMENTS.match(text, position).end()
            if position < len(text) and text[position] == "]":
                self._finished = True  # the array closed: Google ended the response
                position = len(text)
            if position >= len(text):
                break
            try:
                _, end = self._json.raw_decode(text, position)
            except ValueError:  # incomplete: wait for more
                break
            self._observe(text[position:end])
            position = end
        self._array_text = text[position:]
        if len(self._array_text) > _MAX_PENDING_ELEMENT:
            raise ValueError("a streamed array element that never ends")

    def _observe(self, data: str) -> None:
        if not data or data.isspace():
            return
        self._responses.append(data)
        if len(self._responses) == 1:
            model = (loads_object(data) or {}).get("modelVersion")
            self._model = model if isinstance(model, str) and model else None
        # Plain substring tests are safe: inside JSON strings every quote is escaped.
        # A response's candidates carry finishReason once they are done; a multi-candidate
        # stream is finished only if its latest candidates are. A blocked prompt has none.
        if '"candidates"' in data:
            self._finished = '"finishReason"' in data
        elif '"blockReason"' in data:
            self._finished = True
