"""No secret in saved flows or logs: not the real provider key, not a pouch key, not an
observed client's credential."""

import uuid

import openai
import pytest

from pouch.services import keys as key_service
from tests.fakes.openai_fake import FakeOpenAI
from tests.gateway import REAL_OPENAI_KEY, Gateway

HELLO = [{"role": "user", "content": "hello"}]


def test_saved_flows_and_logs_hold_no_secret(tmp_path):
    flows_file = tmp_path / "flows.mitm"
    with FakeOpenAI(tls_dir=tmp_path / "tls") as fake:
        gateway = Gateway(tmp_path / "gw", {"api.openai.com": fake.url}, str(fake.ca_path),
                          {"save_stream_file": str(flows_file), "pouch_unknown_keys": "observe",
                           "flow_detail": "3"}).start()
        try:
            gateway.open_store()
            _, secret = key_service.create("saver", budget="1")
            client = gateway.client(secret)
            client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
            list(client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, stream=True))
            with pytest.raises(openai.BadRequestError):
                client.chat.completions.create(model="no-such-model", messages=HELLO)
            foreign = "sk-foreign-" + uuid.uuid4().hex
            gateway.client(foreign).chat.completions.create(model="gpt-4o-mini", messages=HELLO)
            assert {r.headers["authorization"] for r in fake.requests} == {
                f"Bearer {REAL_OPENAI_KEY}", f"Bearer {foreign}"}, "upstream still gets the right credentials"
        finally:
            gateway.stop()
    saved = flows_file.read_bytes()
    assert b"/v1/chat/completions" in saved and saved.count(b"chat.completion") >= 2, "flows were saved"
    logs = gateway.log_path.read_bytes()
    assert b"/v1/chat/completions" in logs, "flow_detail=3 logged the flows, headers included"
    for text in (REAL_OPENAI_KEY, secret, foreign):
        assert text.encode() not in saved, f"{text[:12]} in saved flows"
        assert text.encode() not in logs, f"{text[:12]} in the log"
    assert secret[:12].encode() in saved, "a pouch key shows as its display prefix"
