"""pouch/services/web_redaction.py: what mitmweb serialises for its UI (``flow_to_json``)
shows pouch keys by their placeholder and no proxy credentials; the flow keeps them."""

import base64
import json

import pytest
from mitmproxy.test import tflow
from mitmproxy.tools.web import app, static_viewer

from pouch.domain.keys import display_prefix, new_secret
from pouch.services import web_redaction

MITMPROXYS_OWN = getattr(app.flow_to_json, "__wrapped__", app.flow_to_json)


@pytest.fixture
def installed(monkeypatch):
    monkeypatch.setattr(app, "flow_to_json", MITMPROXYS_OWN)
    monkeypatch.setattr(static_viewer, "flow_to_json", MITMPROXYS_OWN)
    web_redaction.install()
    web_redaction.install()  # a script reload
    yield


def flow_with(secret: str):
    flow = tflow.tflow(resp=True)
    flow.request.path = f"/v1beta/models/gemini:generateContent?key={secret}&alt=sse"
    flow.request.headers["authorization"] = f"Bearer {secret}"
    flow.request.headers["x-note"] = f"keys {secret}, {secret}"
    flow.request.headers.add("Proxy-Authorization", "Basic " + base64.b64encode(f"me:{secret}".encode()).decode())
    flow.request.headers.add("proxy-authorization", "Basic c2Vjb25kOm9uZQ==")
    return flow


def test_mitmwebs_json_shows_no_pouch_key_and_no_proxy_credentials(installed):
    secret = new_secret()
    flow = flow_with(secret)
    for serialise in (app.flow_to_json, static_viewer.flow_to_json):
        shown = serialise(flow)
        text = json.dumps(shown)
        assert secret not in text and "proxy-authorization" not in text.lower() and "c2Vjb25kOm9uZQ==" not in text
        headers = dict(shown["request"]["headers"])
        assert headers["authorization"] == f"Bearer {display_prefix(secret)}…"
        assert headers["x-note"] == f"keys {display_prefix(secret)}…, {display_prefix(secret)}…"
        shown_key = f"{display_prefix(secret)}…"
        assert shown["request"]["path"] == f"/v1beta/models/gemini:generateContent?key={shown_key}&alt=sse"
        assert shown["request"]["host"] == flow.request.host and shown["response"]["status_code"] == 200, \
            "the rest as mitmproxy describes it"
    assert flow.request.headers["authorization"] == f"Bearer {secret}", "the flow is untouched: the chain reads it"
    assert len(flow.request.headers.get_all("proxy-authorization")) == 2


def test_install_wraps_mitmproxys_own_once(installed):
    assert app.flow_to_json.__wrapped__ is MITMPROXYS_OWN
    assert MITMPROXYS_OWN.__module__ == "mitmproxy.tools.web.app"


def test_other_flows_are_shown_as_mitmproxy_shows_them(installed):
    for flow in (tflow.tflow(resp=True), tflow.tdnsflow(resp=True), tflow.ttcpflow()):
        assert app.flow_to_json(flow) == MITMPROXYS_OWN(flow)
