"""LLM API calls as readable conversations: the text behind mitmweb's "LLM" content view.

``render_request(api, body)`` and ``render_response(api, body, sse)`` take the ``Endpoint.api``
name and a parsed JSON body (or, for a streamed response, the raw SSE bytes) and return plain
text: a line of parameters, the tools, then each turn as a ``── role ──`` section; responses
end with the finish reason and a usage line. Streams are folded into the message the client
assembled. Images, audio and files show as placeholders, never as base64.

This is an inspector: it must show something for every body. A shape a renderer does not
recognise, or any failure inside one, degrades to the JSON, pretty-printed; nothing raises.
Each request shape's renderer is its ``Api.transcript``, in its provider's folder.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from pouch.providers import registry
from pouch.providers.transcript_format import Renderer, Unrecognised, error_line, pretty, sse_events

log = logging.getLogger(__name__)


def renderer(api: str) -> Renderer | None:
    """The renderer of the request shape ``api`` names; None when it has none."""
    shape = registry.api(api)
    return shape.transcript if shape else None

# Keys that mark a body as a real response even when it also carries an error.
_CONTENT_KEYS = ("choices", "output", "content", "candidates", "data")


def render_request(api: str, body: dict) -> str:
    found = renderer(api)
    if found is None:
        return _fallback(body, f"no transcript for {api!r} requests")
    if not isinstance(body, dict):
        return _fallback(body, "the request body is not a JSON object")
    return _render(found.request, body)


def render_response(api: str, body: dict | None = None, sse: bytes | None = None) -> str:
    """A JSON response (``body``) or a streamed one (``sse``, the raw event-stream bytes)."""
    found = renderer(api)
    if sse is not None:
        return _render_stream(api, found, sse)
    if body is None:
        return "(no body)"
    if found is None:
        return _fallback(body, f"no transcript for {api!r} responses")
    error = error_line(body.get("error")) if isinstance(body, dict) else None
    if error and not any(key in body for key in _CONTENT_KEYS):
        return error  # an error response: the provider's message is all there is
    if not isinstance(body, (dict, list)):
        return _fallback(body, "the response body is not a JSON object")
    return _render(found.response, body)


def _render_stream(api: str, found: Renderer | None, sse: bytes) -> str:
    try:
        events = sse_events(sse)
        if found is None or found.stream is None:
            return f"(no transcript for {api!r} streams)\n" + sse.decode("utf-8", "replace")
        if not events and sse.strip():
            return "(no SSE events in this stream; showing it as text)\n" + sse.decode("utf-8", "replace")
        folded = found.stream(events)
        lines = [_render(found.response, folded.body)]
        if folded.complete:
            lines.append(f"streamed: {len(events)} events")
        else:
            lines.append(f"streamed: {len(events)} events · stream ended early (no {folded.end_marker})")
        return "\n".join(lines)
    except Exception as e:  # an inspector shows what it can, it never fails the view
        log.debug("transcript of a %s stream failed", api, exc_info=True)
        return f"(could not read the stream: {e!r})\n" + sse.decode("utf-8", "replace")


def _render(render: Callable[[dict], list[str]], body: dict) -> str:
    try:
        return "\n".join(line for line in render(body) if line)  # "": a parameter line with nothing set
    except Unrecognised as e:
        return _fallback(body, str(e))
    except Exception as e:  # a renderer bug must not hide the body
        log.debug("transcript failed", exc_info=True)
        return _fallback(body, f"transcript failed: {type(e).__name__}: {e}")


def _fallback(body: object, why: str) -> str:
    try:
        return f"({why}; showing the JSON)\n{pretty(body)}"
    except Exception:  # not JSON-serialisable: nothing from json.loads, but callers may pass anything
        return f"({why})\n{body!r}"
