import json

import pytest
from mitmproxy import contentviews, http
from mitmproxy.test import taddons, tflow, tutils

from pouch.services.llm_view import PRIORITY, LLMView, api_of
from tests.fakes import openai_shapes as shapes

CHAT = {"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def view():
    """The view in mitmproxy's global registry for one test. ``contentviews.remove`` is a
    no-op in mitmproxy 12, so the entry is taken out of the registry directly."""
    registered = LLMView()
    with taddons.context():  # prettify_message reads ctx.options
        contentviews.add(registered)
        yield registered
        contentviews.registry._by_name.pop(registered.name.lower(), None)


def flow(host="api.openai.com", path="/v1/chat/completions", method="POST", request=CHAT, response=None,
         content_type="application/json", metadata=None) -> http.HTTPFlow:  # fmt: skip
    headers = http.Headers(content_type="application/json")
    content = json.dumps(request).encode()
    req = tutils.treq(method=method.encode(), host=host, port=443, path=path.encode(), headers=headers, content=content)
    resp = False
    if response is not None:
        content = response if isinstance(response, bytes) else json.dumps(response).encode()
        resp = tutils.tresp(headers=http.Headers(content_type=content_type), content=content)
    f = tflow.tflow(req=req, resp=resp)
    f.metadata.update(metadata or {})
    return f


def shown(message, f, view_name="auto"):
    return contentviews.prettify_message(message, f, view_name)


def test_name_and_registration(view):
    assert view.name == "LLM"
    assert contentviews.registry["llm"] is view  # mitmweb: /flows/<id>/response/content/llm.json
    assert "llm" in contentviews.registry.available_views()
    assert view.syntax_highlight == "none"


def test_picked_for_a_chat_request_and_json_response(view):
    body = shapes.chat_completions({**CHAT, "stream": False}, shapes.Controls(reply="hello"))
    f = flow(response=body)
    request = shown(f.request, f)
    assert request.view_name == "LLM"
    assert request.text == "model gpt-4o · stream\n── user ──\nhi"
    response = shown(f.response, f)
    assert response.view_name == "LLM"
    assert response.text.startswith("model gpt-4o\n── assistant ──\nhello\nfinish: stop\nusage: input ")


def test_picked_for_a_streamed_response(view):
    stream = b"".join(event.data for event in shapes.chat_completions(CHAT, shapes.Controls(reply="one two")))
    f = flow(response=stream, content_type="text/event-stream; charset=utf-8")
    result = shown(f.response, f)
    assert result.view_name == "LLM"
    assert result.text == "\n".join([
        "model gpt-4o", "── assistant ──", "one two", "finish: stop", "usage: not reported", "streamed: 5 events",
    ])  # fmt: skip


def test_not_picked_for_other_traffic(view):
    f = flow(host="example.com", path="/api/things", request={"messages": []}, response={"ok": True})
    assert shown(f.request, f).view_name == "JSON"
    assert shown(f.response, f).view_name == "JSON"


def test_not_picked_for_a_provider_endpoint_without_a_transcript(view):
    f = flow(method="GET", path="/v1/models", response=shapes.models({}, shapes.Controls()))
    assert shown(f.response, f).view_name == "JSON"


def test_routed_flow_is_found_through_the_chain_metadata(view):
    """pouch_route rewrote host and path; the chain's classification (the saved snapshot of its
    exchange, flow.metadata["pouch"]) still names the API."""
    endpoint = {"name": "chat.completions", "metering": "metered", "api": "chat"}
    f = flow(host="127.0.0.1", path="/proxy/v1/chat/completions", response={"choices": []},
             metadata={"pouch": {"provider": "openai", "endpoint": endpoint}})  # fmt: skip
    assert api_of(f) == "chat"
    assert shown(f.request, f).view_name == "LLM"
    free = flow(metadata={"pouch": {"provider": "openai", "endpoint": {"name": "x", "metering": "free", "api": ""}}})
    assert api_of(free) is None


def test_provider_from_metadata_when_the_endpoint_is_not_recorded(view):
    f = flow(host="127.0.0.1", metadata={"pouch": {"provider": "openai"}})
    assert api_of(f) == "chat"


def test_chosen_by_hand_for_a_compatible_server(view):
    f = flow(host="localhost", path="/v1/chat/completions")
    assert shown(f.request, f).view_name == "JSON"  # never picked on its own for unknown hosts
    assert shown(f.request, f, "llm").text == "model gpt-4o · stream\n── user ──\nhi"


def test_chosen_by_hand_for_other_traffic_shows_the_body(view):
    f = flow(host="example.com", path="/api/things", request={"a": 1})
    result = shown(f.request, f, "LLM")
    assert result.view_name == "LLM"
    assert result.text == '(not a call to an LLM API this view knows)\n{"a": 1}'


def test_unreadable_bodies_never_raise(view):
    f = flow(response=b"<html>502 Bad Gateway</html>", content_type="text/html")
    f.request.content = b'{"model": "gpt-4o", "messages": ['
    assert shown(f.request, f).text.startswith("(not JSON: ")
    assert shown(f.response, f).text.startswith("(not JSON: ")
    metadata = contentviews.Metadata(flow=f, http_message=f.request)
    f.metadata["pouch"] = {"endpoint": ["not", "a", "dict"]}
    assert isinstance(view.prettify(b"\xff\xfe", metadata), str)
    f.metadata["pouch"] = ["not", "a", "dict"]
    assert isinstance(view.prettify(b"\xff\xfe", metadata), str)


def test_priority(view):
    f = flow(response={"choices": []})
    request = contentviews.Metadata(flow=f, http_message=f.request, content_type="application/json")
    assert view.render_priority(f.request.content, request) == PRIORITY
    assert view.render_priority(b"", request) == 0
    assert view.render_priority(b"{}", contentviews.Metadata(flow=f)) == 0  # not an HTTP body (WebSocket, TCP)
    assert view.render_priority(b"{}", contentviews.Metadata()) == 0
    f.metadata["pouch"] = {"provider": ["unhashable"]}
    assert view.render_priority(f.request.content, request) == PRIORITY  # found by host instead


def test_mitmweb_content_url_reaches_the_view(view):
    """What mitmweb answers for GET /flows/<id>/response/content/llm.json."""
    from mitmproxy.tools.web.app import FlowContentView

    f = flow(response={"model": "gpt-4o", "choices": [{"message": {"role": "assistant", "content": "hey"}}]})
    answer = FlowContentView.message_to_json(None, "llm", f.response, f)  # uses nothing of the handler
    assert answer["view_name"] == "LLM"
    assert answer["text"] == "model gpt-4o\n── assistant ──\nhey\nusage: not reported"
