"""Plain `mitmweb -s addons/pouch.py` (mitmproxy's store_streamed_bodies left off, as it is
unless `pouch web` sets it) keeps what LLM streams it decrypts, up to pouch_stream_bodies, so
its LLM view renders them; a stream over the limit is kept in part, with a marker, and still
metered whole. And the budget left: the response header (in flight) and the flow comment
(after settling) agree, each labelled."""

import anthropic
import httpx2
import pytest

from pouch.domain.money import Money
from pouch.services import keys as key_service
from pouch.services.stream_body import marker, truncation
from pouch.store.database import UsageRow
from tests.fakes.anthropic_fake import FakeAnthropic
from tests.fakes.openai_fake import FakeOpenAI
from tests.gateway import Gateway

LIMIT = 16 * 1024
HELLO = [{"role": "user", "content": "hello inspector"}]
LONG_REPLY = " ".join(f"word{i}" for i in range(600))  # ~180 KB of chat chunks


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mitmweb-streams")
    with FakeOpenAI(tls_dir=tmp / "o") as openai_fake, FakeAnthropic(tls_dir=tmp / "a") as claude_fake:
        bundle = tmp / "cas.pem"
        bundle.write_text(openai_fake.ca_path.read_text() + claude_fake.ca_path.read_text())
        routes = {"api.openai.com": openai_fake.url, "api.anthropic.com": claude_fake.url}
        gateway = Gateway(tmp / "gw", routes, str(bundle), tool="mitmweb",
                          options={"store_streamed_bodies": "false", "pouch_stream_bodies": "16k"}).start()
        assert "store_streamed_bodies=false" in gateway.args, "mitmproxy keeps no streamed body itself"
        gateway.open_store()
        _, secret = key_service.create("streamer", budget="1")
        client = gateway.client(secret)

        openai_stream = "".join(chunk.choices[0].delta.content or "" for chunk in client.chat.completions.create(
            model="gpt-4o-mini", messages=HELLO, stream=True) if chunk.choices)
        claude = anthropic.Anthropic(api_key=secret, max_retries=0, http_client=anthropic.DefaultHttpxClient(
            proxy=gateway.proxy_url, verify=gateway.tls()))
        with claude.messages.stream(model="claude-sonnet-4-6", max_tokens=100, messages=HELLO) as stream:
            claude_stream = stream.get_final_text()
        long_chunks = list(client.chat.completions.create(
            model="gpt-4o-mini", messages=HELLO, stream=True, stream_options={"include_usage": True},
            max_tokens=4000, extra_headers={"x-fake-reply": LONG_REPLY}))
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=HELLO, max_tokens=200)
        gateway.settled(expected_rows=4)
        api = httpx2.Client(base_url=f"http://127.0.0.1:{gateway.web_port}",
                            headers={"authorization": f"Bearer {gateway.web_password}"})
        yield {"api": api, "openai_stream": openai_stream, "claude_stream": claude_stream,
               "long_chunks": long_chunks, "raw": raw}
        api.close()
        gateway.stop()


def flows(api):
    response = api.get("/flows")
    assert response.status_code == 200
    return [f for f in response.json() if f["request"]["path"].startswith("/v1/")]


def body(api, flow) -> bytes:
    response = api.get(f"/flows/{flow['id']}/response/content.data")
    assert response.status_code == 200
    return response.content


def llm_view(api, flow) -> str:
    response = api.get(f"/flows/{flow['id']}/response/content/llm.json")
    assert response.status_code == 200
    return response.json()["text"]


def test_an_openai_stream_is_kept_and_rendered(web):
    api = web["api"]
    openai_stream, *_ = flows(api)
    assert web["openai_stream"] == "echo: hello inspector"
    assert body(api, openai_stream).endswith(b"data: [DONE]\n\n")
    shown = llm_view(api, openai_stream)
    assert "── assistant ──\necho: hello inspector" in shown and "streamed: " in shown
    assert "stream ended early" not in shown and "pouch kept the first" not in shown
    assert "── pouch ──\n$0.0000" in shown and " streamer · gpt-4o-mini · " in shown


def test_an_anthropic_stream_is_kept_and_rendered(web):
    api = web["api"]
    _, claude_stream, *_ = flows(api)
    assert web["claude_stream"] == "echo: hello inspector"
    assert b"event: message_stop" in body(api, claude_stream)
    shown = llm_view(api, claude_stream)
    assert "── assistant ──\necho: hello inspector" in shown and "streamed: " in shown
    assert " streamer · claude-sonnet-4-6 · in " in shown


def test_a_stream_over_the_limit_is_cut_with_a_marker_and_metered_whole(web):
    api = web["api"]
    long_stream = flows(api)[2]
    whole = body(api, long_stream)
    kept, kept_size, dropped = truncation(whole)
    assert kept.startswith(b"data: {") and len(kept) == kept_size == LIMIT
    assert whole == kept + marker(LIMIT, dropped) and dropped > 100_000, "the rest was dropped, not kept"
    reported = web["long_chunks"][-1].usage  # what the provider billed, in the last chunk the client got
    row = UsageRow.select().where(UsageRow.output_tokens == reported.completion_tokens).get()
    assert (row.outcome, row.input_tokens, row.streamed) == ("ok", reported.prompt_tokens, True)
    assert row.cost_pico == reported.prompt_tokens * 150_000 + reported.completion_tokens * 600_000
    shown = llm_view(api, long_stream)
    assert shown.startswith("model gpt-4o-mini\n── assistant ──\nword0 word1 word2")
    assert "── pouch kept the first 16,384 bytes of this stream and dropped the other " in shown
    assert long_stream["comment"].startswith(f"{Money(row.cost_pico)} streamer · gpt-4o-mini · ")


def test_the_header_in_flight_and_the_comment_after_settling_agree(web):
    api, raw = web["api"], web["raw"]
    in_flight = Money.usd(raw.headers["x-pouch-budget-remaining"])
    reserved = Money.usd(raw.headers["x-pouch-request-reserved"])
    comment = flows(api)[3]["comment"]
    row = UsageRow.select().where(UsageRow.streamed == False).get()  # noqa: E712 (peewee)
    charged = Money(row.cost_pico)
    assert reserved > charged, "it settles for less than its worst case"
    assert comment.startswith(f"{charged} streamer · gpt-4o-mini · ")
    after = in_flight + reserved - charged
    assert f" · left ${after.json()} after settling (${in_flight.json()} while in flight) · " in comment
