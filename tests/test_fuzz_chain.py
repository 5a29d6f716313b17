"""Bad input, generated: whatever a client sends, the chain either refuses it with an
OpenAI-shaped 4xx or forwards it fully accounted (key resolved, budget reserved, the real
credential and never the pouch key going upstream) - and keeps serving."""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pouch.domain.money import Money
from pouch.services import chain
from pouch.store import ledger
from tests.addon_helpers import create_key, exchange_of, facts, gateway, openai_flow

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
FIELDS = {
    "model": st.sampled_from(["gpt-4o-mini", "gpt-4o", "", "no-such-model", "gpt-4o-mini\x00"]) | JSON,
    "messages": st.just([{"role": "user", "content": "hi"}]) | JSON,
    "max_tokens": st.integers(min_value=-10, max_value=10**12) | JSON,
    "max_completion_tokens": st.integers(min_value=-10, max_value=10**9) | JSON,
    "stream": st.booleans() | JSON,
    "n": st.integers(min_value=-2, max_value=300) | JSON,
    "stream_options": JSON,
    "tools": JSON,
    "unknown_field": JSON,
}
BODIES = st.one_of(
    st.fixed_dictionaries({}, optional=FIELDS).map(lambda d: json.dumps(d).encode()),
    st.binary(max_size=200),  # not JSON, not UTF-8
    JSON.map(lambda v: json.dumps(v).encode()),
    st.integers(min_value=50, max_value=100_000).map(lambda depth: b"[" * depth + b"]" * depth),
    st.integers(min_value=1, max_value=3).map(  # large prompts (~100k tokens)
        lambda n: json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "lorem " * 50_000 * n}]}).encode()),
)
PATHS = st.sampled_from([
    "/v1/chat/completions", "/v1/responses", "/v1/completions", "/v1/embeddings", "/v1/models",
    "/v1/chat/completions/", "//v1/chat/completions", "/v1/../v1/chat/completions", "/v1/chat/completions?x=1",
    "/v1/images/generations", "/v2/chat", "/", "/v1/chat%2Fcompletions",
])


def credentials(secret):
    return st.sampled_from(["pouch", "none", "two", "spaces", "long", "lowercase-bearer", "basic"]).map(lambda kind: {
        "pouch": {"authorization": f"Bearer {secret}"},
        "none": {},
        "two": {"authorization": f"Bearer {secret}", "x-api-key": "sk-other"},
        "spaces": {"authorization": f"Bearer    {secret}   "},
        "long": {"authorization": "Bearer pouch-" + "A" * 10_000},
        "lowercase-bearer": {"authorization": f"bearer {secret}"},
        "basic": {"authorization": f"Basic {secret}"},
    }[kind])


def test_whatever_arrives_is_refused_in_shape_or_forwarded_accounted(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-real")
    with gateway() as gw:
        _, secret = create_key(budget=Money.usd("1000"))

        @settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
        @given(body=BODIES, path=PATHS, method=st.sampled_from(["POST", "GET", "DELETE"]), data=st.data())
        def check(body, path, method, data):
            headers = data.draw(credentials(secret))
            flow = openai_flow(path, method=method, content=body, headers=headers)
            gw.request(flow)
            assert exchange_of(flow).body is None, "the parsed body never stays on the flow"
            if flow.response is not None:
                assert 400 <= flow.response.status_code < 500, (flow.response.status_code, flow.response.content[:300])
                error = json.loads(flow.response.content)["error"]
                assert error["message"] and error["code"]
                assert secret not in flow.response.text
                gw.hook("response", flow)
                return
            assert flow.error is None, "never killed without an answer"
            assert facts(flow)["key"] is not None, "only requests with a resolved key are forwarded"
            if chain.metered(flow):
                assert facts(flow)["reservation"] is not None, "a metered request is forwarded only with a reservation"
                json.loads(flow.request.content)  # what goes upstream is still JSON
            sent = bytes(flow.request.headers.fields.__repr__(), "utf-8") + flow.request.path.encode()
            assert secret.encode() not in sent, "the pouch key never goes upstream"
            gw.fail(flow)  # close whatever was reserved

        check()
        gw.run(__import__("asyncio").sleep(0))
    from pouch.services.store_thread import store_thread

    store_thread.drain()
    assert ledger.open_reservations() == 0
