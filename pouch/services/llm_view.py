"""mitmweb's "LLM" content view: LLM API requests and responses read as a conversation.

An addon registers it with ``contentviews.add(LLMView())``. It wins over the JSON view for
calls to an LLM endpoint pouch knows and steps aside for all other traffic. This file only
finds out which API a flow speaks; ``pouch.providers.transcript`` does the rendering.
"""

from __future__ import annotations

import json

from mitmproxy import contentviews, http

from pouch.providers import registry, transcript
from pouch.providers.registry import PROVIDERS, for_host
from pouch.providers.sse import SSESplitter
from pouch.services import exchange
from pouch.services.explain import explain
from pouch.services.stream_body import truncation

# Above JSON (1) and GraphQL (2), the highest built-in priorities for a JSON body.
PRIORITY = 3.0



class LLMView(contentviews.Contentview):
    name = "LLM"  # mitmweb's URL uses it lowercased: /flows/<id>/response/content/llm.json
    syntax_highlight = "none"  # a transcript is no format the highlighters know

    def prettify(self, data: bytes, metadata: contentviews.Metadata) -> str:
        try:
            return _prettify(data, metadata)
        except Exception as e:  # mitmproxy would show a traceback; the raw body says more
            return f"(LLM view failed: {e!r})\n{data.decode('utf-8', 'replace')}"

    def render_priority(self, data: bytes, metadata: contentviews.Metadata) -> float:
        try:
            return PRIORITY if data and _side(metadata) and api_of(metadata.flow) else 0
        except Exception:
            return 0


def api_of(flow: http.HTTPFlow) -> str | None:
    """The API a flow speaks (an ``Endpoint.api`` with a transcript), None for other traffic.

    The chain's own classification comes first: once ``pouch_route`` sent a request on, its
    host (and Host header) and path are the upstream's, not the provider's.
    """
    facts = exchange.snapshot(flow) or {}
    endpoint = facts.get("endpoint")
    if isinstance(endpoint, dict):
        api = endpoint.get("api")
        return api if isinstance(api, str) and transcript.renderer(api) else None
    name = facts.get("provider")
    provider = (
        (PROVIDERS.get(name) if isinstance(name, str) else None)
        or for_host(flow.request.pretty_host, flow.request.port)
        or for_host(flow.request.host, flow.request.port)
    )
    found = provider.endpoint(flow.request.method, flow.request.path) if provider else None
    return found.api if found and transcript.renderer(found.api) else None


def _side(metadata: contentviews.Metadata) -> str | None:
    """"request" or "response" of an HTTP flow; None for anything else (WebSocket messages)."""
    flow, message = metadata.flow, metadata.http_message
    if not isinstance(flow, http.HTTPFlow) or message is None:
        return None
    if message is flow.request:
        return "request"
    return "response" if message is flow.response else None


def _prettify(data: bytes, metadata: contentviews.Metadata) -> str:
    side = _side(metadata)
    api = side and (api_of(metadata.flow) or _api_from_path(metadata.flow.request.path))
    if not api:
        return "(not a call to an LLM API this view knows)\n" + data.decode("utf-8", "replace")
    if not data:
        return "(no body)"
    if side == "request":
        return _render(api, side, data, metadata)
    note = ""
    if cut := truncation(data):
        data, kept, dropped = cut
        if _is_sse(data, metadata):  # the last event is cut in half: show the whole ones
            splitter = SSESplitter()
            splitter.feed(data)
            data = data[: len(data) - len(splitter.tail)]
        note = (f"\n── pouch kept the first {kept:,} bytes of this stream and dropped the other {dropped:,} "
                "(pouch_stream_bodies) ──")
    story = explain(metadata.flow)
    # What pouch recorded, e.g. usage from a stream chunk it asked for and hid from the client.
    return _render(api, side, data, metadata) + note + (f"\n── pouch ──\n{story}" if story else "")


def _render(api: str, side: str, data: bytes, metadata: contentviews.Metadata) -> str:
    if side == "response" and _is_sse(data, metadata):
        return transcript.render_response(api, sse=data)
    try:
        body = json.loads(data)
    except (ValueError, RecursionError) as e:
        return f"(not JSON: {e})\n" + data.decode("utf-8", "replace")
    if side == "request":
        return transcript.render_request(api, body)
    return transcript.render_response(api, body)


def _api_from_path(path: str) -> str | None:
    """Only when the view is picked by hand for a flow no provider owns (an OpenAI-compatible
    server on another host): the request shape whose paths end like this one."""
    path = path.split("?", 1)[0]
    return next((api.name for api in registry.APIS.values() if api.path and api.path.search(path)), None)


def _is_sse(data: bytes, metadata: contentviews.Metadata) -> bool:
    # A stream saved without its headers still starts with a field name, which JSON never does.
    return metadata.content_type == "text/event-stream" or data.lstrip().startswith((b"data:", b"event:", b":"))
