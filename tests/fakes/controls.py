"""The ``x-fake-*`` controls every fake provider obeys: per request by header, or by default
through the fake's ``behaviour`` dict."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields

_FLAGS_OFF = ("", "0", "false", "no")


@dataclass(frozen=True)
class Controls:
    """How one request is answered: the ``x-fake-*`` headers, else the fake's ``behaviour``."""

    usage: dict | None = None  # overrides of the provider's own usage fields
    status: int | None = None  # answer with this status and the provider's error shape
    reply: str | None = None  # the reply text instead of "echo: <last user message>"
    chunks: int | None = None  # content chunks a streamed reply is split into; default one per word
    delay: float = 0.0  # seconds before the response headers
    chunk_delay: float = 0.0  # seconds between streamed events
    abort_after: int | None = None  # cut the connection once this many content chunks went out
    no_usage: bool = False  # a provider that forgets usage: no usage chunk, no usage object
    tool_calls: int = 0  # calls of the request's first server tool (web search etc.) the fake performs
    ignore_bounds: bool = False  # perform tool_calls even past the request's bound (a misbehaving provider)
    tool_input: int = 1000  # input tokens each tool call adds to the bill (its results, re-read)


def parse_controls(headers: dict[str, str], behaviour: dict) -> Controls:
    """``Controls`` from ``x-fake-<name>`` headers (``chunk_delay``: ``x-fake-chunk-delay``), each
    overriding ``behaviour[name]``. Raises ``ValueError`` for a value that does not parse."""
    unknown = set(behaviour) - {f.name for f in fields(Controls)}
    if unknown:
        raise ValueError(f"fake: unknown behaviour keys {sorted(unknown)}")
    values = dict(behaviour)
    for f in fields(Controls):
        name = "x-fake-" + f.name.replace("_", "-")
        header = headers.get(name)
        if header is None:
            continue
        try:
            if f.name == "usage":
                values[f.name] = json.loads(header)
            elif f.name in ("no_usage", "ignore_bounds"):
                values[f.name] = header.strip().lower() not in _FLAGS_OFF
            elif f.name == "reply":
                values[f.name] = header
            else:
                values[f.name] = (float if "delay" in f.name else int)(header)
        except ValueError as e:
            raise ValueError(f"fake: bad {name} header {header!r}: {e}") from e
    if values.get("usage") is not None and not isinstance(values["usage"], dict):
        raise ValueError("fake: usage must be a JSON object")
    if min(values.get("delay", 0), values.get("chunk_delay", 0)) < 0:
        raise ValueError("fake: delays must not be negative")
    if min(values.get("tool_calls", 0), values.get("tool_input", 0)) < 0:
        raise ValueError("fake: tool_calls and tool_input must not be negative")
    return Controls(**values)
