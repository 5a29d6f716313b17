"""The building blocks every provider folder's transcript is made of: the parameter line, turn
sections, tool lines, media placeholders, the usage line.

Bodies come from clients and servers pouch does not control, so everything here accepts any
JSON value (``pouch.providers.values`` reads them) and answers with a harmless default rather
than raising.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from typing import NamedTuple

from pouch.providers.sse import SSEEvent, SSESplitter
from pouch.providers.values import as_dict, as_str, count, loads


class Stream(NamedTuple):
    """A streamed response folded into the body a non-streamed call would have returned."""

    body: dict | list
    complete: bool  # the provider's end-of-stream marker arrived
    end_marker: str  # what a complete stream ends with, named for the "ended early" line


class Renderer(NamedTuple):
    """How an ``Api``'s bodies read as a conversation: each function returns the lines of the
    transcript, raising ``Unrecognised`` for a body that is not its shape."""

    request: Callable[[dict], list[str]]
    response: Callable[[dict], list[str]]
    stream: Callable[[list[SSEEvent]], Stream] | None  # folds a stream's events; None: it does not stream


class Unrecognised(ValueError):
    """The body is not the shape this renderer reads; the caller shows the JSON instead."""


def as_count(value: object) -> int:
    """A count to show: 0 for anything that is not one."""
    return count(value) or 0


def sse_events(sse: bytes) -> list[SSEEvent]:
    """Every event of a whole stream, the unterminated last one included."""
    splitter = SSESplitter()
    return [event for event in splitter.feed(sse) + splitter.end() if event.data]


# --- turns ---------------------------------------------------------------------------------


class Turns:
    """Sections in the order they appear.

    One message can yield several sections (a tool result inside an Anthropic user message,
    thinking before an answer); ``add`` continues the current section when the title is the
    same and no new message began, so a message's text and tool calls stay together.
    """

    def __init__(self) -> None:
        self._sections: list[tuple[str, list[str]]] = []
        self._fresh = True

    def begin(self) -> None:
        """The next ``add`` starts a section even when the title repeats (a new message)."""
        self._fresh = True

    def add(self, title: str, *lines: str) -> None:
        if self._fresh or not self._sections or self._sections[-1][0] != title:
            self._sections.append((title, []))
            self._fresh = False
        self._sections[-1][1].extend(lines)

    def flush(self, title: str, lines: list[str]) -> None:
        """Add the lines gathered so far, if any, and empty the list: another kind of section
        (thinking, a tool result) comes next."""
        if lines:
            self.add(title, *lines)
            lines.clear()

    def lines(self) -> list[str]:
        out = []
        for title, lines in self._sections:
            out.append(f"── {title} ──")
            out.extend([line for line in lines if line] or ["(empty)"])
        return out


# --- parameters and tools ------------------------------------------------------------------


def parameter_line(params: list[tuple[str, object]]) -> str:
    """``model gpt-4o · stream · max_tokens 500``: absent (None/False) parameters are skipped."""
    shown = []
    for name, value in params:
        if value is None or value is False or value == "":
            continue
        shown.append(name if value is True else f"{name} {scalar(value)}")
    return " · ".join(shown)


def scalar(value: object) -> str:
    return value if isinstance(value, str) else compact(value)


def tool_signature(name: object, schema: object) -> str:
    """``get_weather(city, unit?)`` from a JSON schema; ``?`` marks what ``required`` omits."""
    schema = as_dict(schema)
    properties = as_dict(schema.get("properties"))
    required = schema.get("required")
    params = [
        param if not isinstance(required, list) or param in required else f"{param}?"
        for param in properties
    ]
    return f"{scalar(name) or '?'}({', '.join(params)})"


def tool_lines(signatures: list[str]) -> list[str]:
    """Tools aligned under a ``tools`` label, one per line."""
    return [("tools  " if i == 0 else "       ") + signature for i, signature in enumerate(signatures)]


def call_line(name: object, arguments: object, call_id: object = None) -> str:
    """``→ get_weather({"city": "Paris"})  (call_1)``; arguments as sent (JSON text or object)."""
    if isinstance(arguments, str):
        parsed = loads(arguments)
        shown = compact(parsed) if isinstance(parsed, (dict, list)) else arguments
    else:
        shown = compact(redact(arguments)) if arguments is not None else ""
    suffix = f"  ({call_id})" if isinstance(call_id, str) and call_id else ""
    return f"→ {scalar(name) or '?'}({shown}){suffix}"


# --- media and binary ----------------------------------------------------------------------

_DATA_URL = re.compile(r"data:([^;,]*)(?:;[^,]*)?,", re.IGNORECASE)
_BASE64_ONLY = re.compile(r"[A-Za-z0-9+/=_\-\s]+")
_LONG_BASE64 = 256  # shorter strings are shown: ids and hashes look like base64 too


def size(count: int) -> str:
    if count < 1024:
        return f"{count} B"
    if count < 1024 * 1024:
        return f"{count / 1024:.0f} KB"
    return f"{count / (1024 * 1024):.1f} MB"


def base64_size(data: object) -> str:
    """The decoded size of base64 text, without decoding it ("" for anything else)."""
    if not isinstance(data, str) or not data:
        return ""
    return size(len(data.strip().rstrip("=")) * 3 // 4)


def media(kind: str, *details: object) -> str:
    """``[image: https://…/cat.png]``, ``[image: data:image/png, 12 KB]``, ``[audio: wav, 3 KB]``.

    Details that are not non-empty strings are left out; a data URL shows as type and size.
    """
    shown = [data_url_summary(d) or d for d in details if isinstance(d, str) and d]
    return f"[{kind}: {', '.join(shown)}]" if shown else f"[{kind}]"


def data_url_summary(url: str) -> str | None:
    """``data:image/png, 12 KB`` for a data URL, None for any other URL."""
    match = _DATA_URL.match(url)
    return f"data:{match.group(1)}, {base64_size(url[match.end():])}" if match else None


def redact(value: object) -> object:
    """A JSON value fit to show: base64 and data URLs become size placeholders, long number
    arrays (embeddings, token ids) a count."""
    if isinstance(value, str):
        if len(value) >= _LONG_BASE64 and (summary := data_url_summary(value)):
            return f"[{summary}]"
        if len(value) >= _LONG_BASE64 and " " not in value and _BASE64_ONLY.fullmatch(value):
            return f"[base64, {base64_size(value)}]"
        return value
    if isinstance(value, dict):
        return {key: redact(item) for key, item in value.items()}
    if isinstance(value, list):
        if len(value) > 32 and all(isinstance(item, (int, float)) for item in value):
            return f"[{len(value)} numbers]"
        return [redact(item) for item in value]
    return value


def compact(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)


def pretty(value: object) -> str:
    return json.dumps(redact(value), ensure_ascii=False, indent=2)


def float32_count(data: str) -> int:
    """Dimensions of a base64 embedding (little-endian float32, as OpenAI sends)."""
    try:
        return len(base64.b64decode(data, validate=False)) // 4
    except (binascii.Error, ValueError):
        return 0


# --- usage and errors ----------------------------------------------------------------------


def usage_line(
    input_tokens: int, output_tokens: int | None, cached: int = 0, cache_write: int = 0, reasoning: int = 0
) -> str:
    """``usage: input 123 (cached 100) · output 45 (reasoning 12)``; input and output include
    their parts, the way pouch normalises every provider's usage."""
    cache = [f"cached {cached}" if cached else "", f"cache write {cache_write}" if cache_write else ""]
    cache = [part for part in cache if part]
    line = f"usage: input {input_tokens}" + (f" ({', '.join(cache)})" if cache else "")
    if output_tokens is not None:
        line += f" · output {output_tokens}" + (f" (reasoning {reasoning})" if reasoning else "")
    return line


def error_line(error: object) -> str | None:
    """One line for any provider's error object (OpenAI ``type``/``code``, Anthropic ``type``,
    Gemini ``status``/``code``)."""
    if isinstance(error, str) and error:
        return f"error: {error}"
    error = as_dict(error)
    if not error:
        return None
    kinds = []
    for field in ("status", "type", "code"):
        value = error.get(field)
        if isinstance(value, (str, int)) and not isinstance(value, bool) and value != "" and str(value) not in kinds:
            kinds.append(str(value))
    message = as_str(error.get("message")) or compact(redact(error))
    line = f"error ({', '.join(kinds)}): {message}" if kinds else f"error: {message}"
    if isinstance(error.get("param"), str):
        line += f"  [param {error['param']}]"
    return line


def unknown(value: object) -> str:
    """A part or item this transcript has no words for: its type, then its JSON (redacted)."""
    if not isinstance(value, dict):
        return compact(redact(value))
    kind = value.get("type")
    rest = {key: item for key, item in value.items() if key != "type"}
    return f"[{scalar(kind)}] {compact(redact(rest))}" if kind is not None else compact(redact(value))


def index(value: object, default: int = 0) -> int:
    """A stream's ``index`` field; malformed ones fold into ``default``."""
    return value if isinstance(value, int) and not isinstance(value, bool) else default
