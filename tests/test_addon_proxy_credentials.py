"""addons/proxy_credentials.py: Proxy-Authorization is off every request from its first hook
on, and given back only for the perimeter to read, on requests nobody answered."""

import pytest
from mitmproxy import http
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import taddons, tflow

from addons.perimeter import Perimeter
from addons.proxy_credentials import ProxyCredentials

CREDENTIAL = "Basic cG91Y2g6cG91Y2gta2V5"


@pytest.fixture
def addon():
    addon = ProxyCredentials()
    with taddons.context(addon):
        yield addon


def proxied(mode="regular"):
    flow = tflow.tflow()
    flow.client_conn.proxy_mode = ProxyMode.parse(mode)
    flow.request.headers["Proxy-Authorization"] = CREDENTIAL
    return flow


def test_off_from_the_first_hook_and_back_for_the_perimeter(addon):
    flow = proxied()
    addon.requestheaders(flow)
    assert "proxy-authorization" not in flow.request.headers, "what mitmweb shows and a failed flow saves"
    addon.request(flow)
    assert flow.request.headers["proxy-authorization"] == CREDENTIAL, "the perimeter reads it next"
    addon.request(flow)
    assert flow.request.headers.get_all("proxy-authorization") == [CREDENTIAL], "given back once"


def test_a_request_mitmproxy_answered_never_gets_it_back(addon):
    flow = proxied()  # http://mitm.it: mitmproxy's onboarding app answers in its request hook, before scripts
    addon.requestheaders(flow)
    flow.response = http.Response.make(200, b"mitmproxy")
    addon.request(flow)
    assert "proxy-authorization" not in flow.request.headers


def test_a_failed_request_never_gets_it_back(addon):
    flow = proxied()
    addon.requestheaders(flow)
    flow.error = tflow.terr()
    addon.request(flow)
    assert "proxy-authorization" not in flow.request.headers


@pytest.mark.parametrize("mode", ["reverse:https://api.openai.com", "transparent"])
def test_where_the_perimeter_does_not_read_it_it_is_dropped(addon, mode):
    flow = proxied(mode)
    addon.requestheaders(flow)
    addon.request(flow)
    assert "proxy-authorization" not in flow.request.headers


def test_an_answered_connect_loses_it(addon):
    answered, open_ = proxied(), proxied()
    answered.request.method = open_.request.method = "CONNECT"
    answered.response = http.Response.make(407)
    addon.http_connect(answered)
    addon.http_connect(open_)
    assert "proxy-authorization" not in answered.request.headers
    assert open_.request.headers["proxy-authorization"] == CREDENTIAL, "the perimeter reads it next"


def test_it_runs_right_before_the_perimeter():
    from addons.pouch import addons

    kinds = [type(a) for a in addons[0].links]
    assert kinds.index(ProxyCredentials) + 1 == kinds.index(Perimeter)
