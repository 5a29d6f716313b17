"""Bad input through a real gateway: generated bodies, headers and paths sent over HTTP to
mitmdump. Each gets an answer (an OpenAI-shaped 4xx, or the provider's answer for a valid
request); nothing unaccounted reaches the provider; the gateway keeps serving."""

import json

import httpx2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pouch.services import keys as key_service
from pouch.store import ledger
from pouch.store.database import UsageRow
from tests.fakes.openai_fake import FakeOpenAI
from tests.gateway import Gateway
from tests.test_fuzz_chain import BODIES, PATHS

HEADER_VALUES = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    with FakeOpenAI(tls_dir=tmp_path_factory.mktemp("tls")) as fake:
        gateway = Gateway(tmp_path_factory.mktemp("gw"), {"api.openai.com": fake.url}, str(fake.ca_path)).start()
        gateway.open_store()
        _, secret = key_service.create("fuzzed", budget="1000")
        try:
            yield gateway, fake, secret
        finally:
            gateway.stop()


def test_generated_requests_are_answered_and_accounted(served):
    gateway, fake, secret = served
    client = httpx2.Client(base_url=f"http://127.0.0.1:{gateway.reverse_port}", timeout=30)

    @settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
    @given(body=BODIES, path=PATHS, method=st.sampled_from(["POST", "GET", "PUT"]),
           auth=st.sampled_from(["pouch", "none", "garbage", "two"]), extra=HEADER_VALUES)
    def check(body, path, method, auth, extra):
        extra = extra.strip()  # what an HTTP client can send at all
        headers = {"content-type": "application/json", "x-extra": extra}
        if auth in ("pouch", "two"):
            headers["authorization"] = f"Bearer {secret}"
        if auth == "two":
            headers["x-api-key"] = "sk-other"
        if auth == "garbage":
            headers["authorization"] = "Bearer g" + extra
        response = client.request(method, path, content=body, headers=headers)
        if response.status_code >= 400 and response.status_code != 502:
            assert response.status_code < 500 or response.json()["error"]["code"] != "gateway_error", response.text
            assert json.loads(response.content)["error"]["message"]
        assert secret not in response.text

    check()
    client.close()
    gateway.settled()
    admitted = UsageRow.select().where(UsageRow.reservation_id.is_null(False)).count()
    metered_upstream = [r for r in fake.requests if r.method == "POST" and not r.path.startswith("/v1/models")]
    assert len(metered_upstream) <= admitted, "every metered request that reached the provider was admitted"
    assert ledger.open_reservations() == 0
    assert all(secret not in str(r.headers) + r.path for r in fake.requests), "no pouch key upstream"
    reply = gateway.client(secret, reverse=True).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "still there?"}])
    assert reply.choices[0].message.content == "echo: still there?", "the gateway keeps serving"
