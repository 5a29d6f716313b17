"""pouch/services/upstream_connection.py: what a client is told when an upstream cannot be
reached, the request sent once it is reached, and the wrapper around mitmproxy's
``HttpStream.make_server_connection`` (driven here command by command, as mitmproxy's layer
drives it)."""

import asyncio
import json

import pytest
from mitmproxy import connection, options
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.layers.http import GetHttpConnection, HttpStream
from mitmproxy.proxy.layers.http._events import ResponseData, ResponseHeaders, ResponseProtocolError
from mitmproxy.proxy.layers.http._hooks import HttpErrorHook, HttpResponseHeadersHook, HttpResponseHook
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import tflow

from pouch.services import chain, upstream_connection
from pouch.services.upstream_connection import explain
from tests.addon_helpers import facts

ADDRESS = ("127.0.0.1", 4431)


@pytest.mark.parametrize("err, cause, retry", [
    ("[Errno 111] Connect call failed ('127.0.0.1', 4431)", "connection refused: nothing listens there", True),
    ("Certificate verify failed: unable to get local issuer certificate",
     "TLS: the gateway does not trust its certificate", False),
    ("The remote server does not speak TLS.", "TLS: it does not speak TLS", False),
    ("[Errno -2] Name or service not known", "DNS: the host name does not resolve", False),
    ("[Errno -3] Temporary failure in name resolution", "DNS: the lookup failed for now", True),
    ("[Errno 110] Connection timed out", "the connection timed out", True),
    ("[Errno 101] Network is unreachable", "no route to it", True),
    ("something new", "something new", True),
])
def test_explain_names_the_cause_and_the_upstream(err, cause, retry):
    error = explain("openai", ADDRESS, err)
    assert (error.status, error.code, error.kind) == (502, "upstream_unreachable", "upstream")
    assert error.message.startswith(f"pouch could not reach the openai upstream 127.0.0.1:4431: {cause}")
    assert err in error.message, "mitmproxy's own words are kept"
    assert error.message.endswith("The request was not sent and nothing was charged.")
    assert ("x-should-retry" not in error.headers) == retry


def test_a_tls_failure_says_what_to_set():
    message = explain("openai", ADDRESS, "Certificate verify failed: self-signed certificate").message
    assert "--set ssl_verify_upstream_trusted_ca=/path/ca.pem" in message


def stream_for(flow, *, body_read=True) -> HttpStream:
    client = connection.Client(peername=("127.0.0.1", 50000), sockname=("127.0.0.1", 8080), timestamp_start=0,
                               proxy_mode=ProxyMode.parse("regular"))
    stream = HttpStream(Context(client, options.Options()), 1)
    stream.flow = flow
    stream.client_state = stream.state_done if body_read else stream.state_stream_request_body
    return stream


def llm_flow():
    """A chain's flow to api.openai.com, which pouch_route sent on to ADDRESS."""
    flow = tflow.tflow()
    flow.request.host, flow.request.port = "api.openai.com", 443
    chain.exchange(flow)  # the links took it up before the route
    flow.request.host, flow.request.port = ADDRESS
    return flow


def drive(generator, reply, then=None):
    """Every command ``generator`` yields, answering its first (the connection) with ``reply``
    and every later one with None, and what it returns."""
    sent = [next(generator)]
    answer = reply
    try:
        while True:
            sent.append(generator.send(answer))
            answer = then
    except StopIteration as done:
        return sent, done.value


@pytest.fixture(autouse=True)
def no_callback():
    upstream_connection.when_connected(None)
    yield
    upstream_connection.when_connected(None)


def test_a_connection_that_opens_is_mitmproxys_own():
    server = connection.Server(address=ADDRESS)
    stream = stream_for(llm_flow())
    sent, ok = drive(upstream_connection.make_server_connection(stream), (server, None))
    assert ok is True and len(sent) == 1 and isinstance(sent[0], GetHttpConnection)
    assert sent[0].address == ADDRESS and stream.context.server is server and stream.flow.server_conn is server
    assert stream.flow.response is None and facts(stream.flow)["refused"] is None


@pytest.mark.parametrize("case", ["not an llm flow", "request body streamed upstream", "already answered"])
def test_other_failures_get_mitmproxys_own_handling(case):
    def make():
        flow = tflow.tflow() if case == "not an llm flow" else llm_flow()
        if case == "already answered":
            flow.response = tflow.tresp()
        return stream_for(flow, body_read=case != "request body streamed upstream")

    ours, theirs = make(), make()
    sent, ok = drive(upstream_connection.make_server_connection(ours), (None, "[Errno 111] Connect call failed"))
    expected, expected_ok = drive(upstream_connection._original(theirs), (None, "[Errno 111] Connect call failed"))
    assert ok is expected_ok is False
    assert [type(c) for c in sent] == [type(c) for c in expected]
    assert any(isinstance(c, HttpErrorHook) for c in sent)
    protocol_errors = [c.event for c in sent if isinstance(getattr(c, "event", None), ResponseProtocolError)]
    assert [e.message for e in protocol_errors] == ["[Errno 111] Connect call failed"], "mitmproxy's error page"
    assert facts(ours.flow)["refused"] is None and ours.flow.error.msg == "[Errno 111] Connect call failed"


def test_a_failed_llm_connection_is_answered_in_the_providers_shape():
    stream = stream_for(llm_flow())
    sent, ok = drive(upstream_connection.make_server_connection(stream), (None, "[Errno 111] Connect call failed"))
    assert ok is False
    hooks = [type(c) for c in sent if isinstance(c, HttpResponseHeadersHook | HttpResponseHook | HttpErrorHook)]
    assert hooks == [HttpResponseHeadersHook, HttpResponseHook], "as for a response an addon set: no error hook"
    events = [c.event for c in sent if hasattr(c, "event")]
    assert not [e for e in events if isinstance(e, ResponseProtocolError)], "not mitmproxy's error page"
    [headers] = [e for e in events if isinstance(e, ResponseHeaders)]
    [data] = [e for e in events if isinstance(e, ResponseData)]
    assert headers.response.status_code == 502 and headers.response.headers["content-type"] == "application/json"
    error = json.loads(data.data)["error"]
    assert error["code"] == "upstream_unreachable" and error["type"] == "server_error"
    assert "connection refused" in error["message"] and "127.0.0.1:4431" in error["message"]
    assert facts(stream.flow)["refused"]["kind"] == "upstream" and stream.flow.error is None


def test_install_wraps_once(monkeypatch):
    monkeypatch.setattr(HttpStream, "make_server_connection", upstream_connection._original)
    upstream_connection.install()
    upstream_connection.install()
    assert HttpStream.make_server_connection is upstream_connection.make_server_connection
    assert HttpStream.make_server_connection.__wrapped__ is upstream_connection._original
    assert upstream_connection._original.__qualname__ == "HttpStream.make_server_connection", "mitmproxy's own"


def connect_on_the_loop(stream, callback):
    """Open ``stream``'s connection inside an event loop, as mitmproxy does: what the flow
    holds when the connection returns, and after the loop's next turn."""
    upstream_connection.when_connected(callback)

    async def run():
        result = drive(upstream_connection.make_server_connection(stream), (connection.Server(address=ADDRESS), None))
        held = stream.flow.request
        await asyncio.sleep(0)
        return result, held, stream.flow.request

    return asyncio.run(run())


def with_credential(flow):
    request = flow.request.copy()
    request.headers["authorization"] = "Bearer sk-real"
    return request


def test_the_callbacks_request_is_sent_and_the_flow_gets_its_own_back():
    stream = stream_for(llm_flow())
    own = stream.flow.request
    (sent, ok), held, after = connect_on_the_loop(stream, with_credential)
    assert ok is True and len(sent) == 1
    assert held is not own and held.headers["authorization"] == "Bearer sk-real", \
        "what mitmproxy reads for the headers it sends next"
    assert after is own and "sk-real" not in str(own.headers), "one loop turn later: no hook could see it"


def test_without_a_request_from_the_callback_the_flows_own_is_sent():
    stream = stream_for(llm_flow())
    own = stream.flow.request
    (_, ok), held, after = connect_on_the_loop(stream, lambda flow: None)
    assert ok is True and held is own and after is own


def test_a_failing_callback_sends_nothing():
    def broken(flow):
        raise RuntimeError("boom")

    stream = stream_for(llm_flow())
    (sent, ok), held, _ = connect_on_the_loop(stream, broken)
    assert ok is False and held is stream.flow.request
    assert any(isinstance(c, HttpErrorHook) for c in sent)
    [error] = [c.event for c in sent if isinstance(getattr(c, "event", None), ResponseProtocolError)]
    assert error.message == "pouch could not prepare the request for its upstream"


def test_a_streamed_llm_request_is_not_connected():
    """Its body streams upstream before the chain's request hooks: neither metered nor given
    its credential, so no connection is opened for it."""
    flow = tflow.tflow()
    flow.request.host, flow.request.port = "api.openai.com", 443
    stream = stream_for(flow, body_read=False)
    sent, ok = drive(upstream_connection.make_server_connection(stream), None)
    assert ok is False and not any(isinstance(c, GetHttpConnection) for c in sent)
    [error] = [c.event for c in sent if isinstance(getattr(c, "event", None), ResponseProtocolError)]
    assert "stream_large_bodies" in error.message and stream.flow.error is not None


def test_other_streamed_requests_connect():
    stream = stream_for(tflow.tflow(), body_read=False)
    (sent, ok), _, _ = connect_on_the_loop(stream, lambda flow: None)
    assert ok is True and isinstance(sent[0], GetHttpConnection)
