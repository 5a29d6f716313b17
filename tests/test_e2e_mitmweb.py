"""mitmweb as the LLM traffic inspector, through its own REST API: comments, markers, the
LLM content view, pouch's commands, and no secret in anything it serves or saves."""

import json

import httpx2
import openai
import pytest

from pouch.services import keys as key_service
from tests.fakes.openai_fake import FakeOpenAI
from tests.gateway import REAL_OPENAI_KEY, Gateway

HELLO = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello inspector"}]


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mitmweb")
    with FakeOpenAI(tls_dir=tmp / "tls") as fake:
        gateway = Gateway(tmp / "gw", {"api.openai.com": fake.url}, str(fake.ca_path), tool="mitmweb").start()
        gateway.open_store()
        _, secret = key_service.create("inspected", budget="0.01")
        _, mock_secret = key_service.create("mocked", mock=True)
        client = gateway.client(secret)
        client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
        list(client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, stream=True))
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="gpt-4o", messages=HELLO, max_tokens=100_000)
        gateway.client(mock_secret).chat.completions.create(model="gpt-4o-mini", messages=HELLO)
        gateway.settled(expected_rows=3)
        api = httpx2.Client(base_url=f"http://127.0.0.1:{gateway.web_port}",
                            headers={"authorization": f"Bearer {gateway.web_password}"})
        yield gateway, api, secret
        api.close()
        gateway.stop()


def flows(api):
    response = api.get("/flows")
    assert response.status_code == 200
    return [f for f in response.json() if f["request"]["host"] in ("127.0.0.1", "api.openai.com")]


def test_every_llm_flow_explains_itself(web):
    _, api, _ = web
    comments = [f["comment"] for f in flows(api)]
    assert len(comments) == 4
    json_call, stream_call, refused, mocked = comments
    assert json_call.startswith("$0.0000") and " inspected · gpt-4o-mini · in " in json_call, "cost and key first"
    assert " · left $0.00" in json_call and " after settling ($0.00" in json_call
    assert " while in flight) · " in json_call
    assert json_call.endswith(" ms")
    assert "ttft" in stream_call
    assert refused.startswith("refused budget · inspected · budget of key 'inspected' exhausted")
    assert mocked.startswith("mock $0.0000") and " mocked · gpt-4o-mini · in " in mocked


def test_refused_flows_are_marked(web):
    _, api, _ = web
    assert [f["marked"] for f in flows(api)] == ["", "", "💸", ""]  # :money_with_wings:, as mitmweb shows it


def content(api, flow, side, view="llm"):
    response = api.get(f"/flows/{flow['id']}/{side}/content/{view}.json")
    assert response.status_code == 200
    return response.json()


def text_of(rendered) -> str:
    return rendered["text"]


def test_the_llm_view_renders_the_conversation(web):
    _, api, _ = web
    json_call, stream_call, *_ = flows(api)
    request = content(api, json_call, "request", "auto")
    assert request["view_name"] == "LLM"
    shown = text_of(request)
    assert "── system ──\nBe brief." in shown and "── user ──\nhello inspector" in shown

    answer = text_of(content(api, json_call, "response"))
    assert "── assistant ──\necho: hello inspector" in answer and "usage: input" in answer

    streamed = text_of(content(api, stream_call, "response"))
    assert "echo: hello inspector" in streamed and "streamed:" in streamed
    assert "── pouch ──\n$0.0000" in streamed and " inspected · gpt-4o-mini · in " in streamed, \
        "what pouch recorded from the hidden usage chunk"


def test_other_views_still_work(web):
    _, api, _ = web
    json_call, *_ = flows(api)
    assert json.loads(text_of(content(api, json_call, "response", "raw")))["object"] == "chat.completion"


def test_pouch_commands(web):
    _, api, _ = web
    login = httpx2.get(f"{api.base_url}")  # the login page sets the XSRF cookie commands check
    token = login.headers["set-cookie"].split(";")[0].split("=", 1)[1]
    api.cookies.set("_mitmproxy_xsrf", token)
    result = api.post("/commands/pouch.budget", json={"arguments": ["inspected"]},
                      headers={"x-xsrftoken": token}).json()
    assert result["value"].startswith("inspected: $0.0000") and "of $0.01" in result["value"]
    keys = api.post("/commands/pouch.keys", json={"arguments": []}, headers={"x-xsrftoken": token}).json()
    assert "inspected (pouch-" in keys["value"] and "mocked" in keys["value"]


def test_no_secret_in_anything_mitmweb_serves_or_saves(web):
    gateway, api, secret = web
    served = [api.get("/flows").content, api.get("/flows/dump").content]
    for flow in flows(api):
        for side in ("request", "response"):
            served.append(api.get(f"/flows/{flow['id']}/{side}/content.data").content)
            served.append(api.get(f"/flows/{flow['id']}/{side}/content/auto.json").content)
        served.append(json.dumps(flow["request"]["headers"]).encode())
    everything = b"\n".join(served)
    assert b"inspector" in everything, "the API did serve the flows"
    assert REAL_OPENAI_KEY.encode() not in everything
    assert secret.encode() not in everything
    assert secret[:12].encode() in everything, "the pouch key shows only by its display prefix"
