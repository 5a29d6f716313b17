"""Chain link 1 (addons/keys.py): who is calling, and may they make this call."""

import hashlib
import re
from datetime import timedelta

import peewee
import pytest
from mitmproxy import exceptions, http

from addons.keys import parse_body
from pouch.domain.errors import BadRequest
from pouch.domain.periods import Period, utcnow
from pouch.services import chain
from pouch.services.key_cache import KeyCache
from pouch.store import keys as key_store
from tests.addon_helpers import MODEL, chat_body, create_key, error_of, exchange_of, facts, gateway, openai_flow


@pytest.mark.parametrize(
    "content, expected",
    [
        (b'{"model": "gpt-4o-mini"}', {"model": "gpt-4o-mini"}),
        ('{"messages": [{"content": "h\u00e9"}]}'.encode(), {"messages": [{"content": "h\u00e9"}]}),
    ],
)
def test_parse_body_reads_a_json_object(content, expected):
    assert parse_body(openai_flow(content=content)) == expected


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "not valid JSON"),
        (b'{"model": ', "not valid JSON"),
        (b"\xff\xfe{}", "not valid JSON"),
        (b'[{"model": "gpt-4o"}]', "must be a JSON object"),
        (b'"gpt-4o"', "must be a JSON object"),
    ],
)
def test_parse_body_refuses_what_is_not_a_json_object(content, message):
    with pytest.raises(BadRequest, match=message):
        parse_body(openai_flow(content=content))


@pytest.fixture
def gw():
    with gateway() as gw:
        yield gw


def admit(gw, flow):
    """Run the keys link alone, as the first link of the chain."""
    gw.run(gw.keys.request(flow))
    return flow


def assert_refused(flow, status, code, *, message="", model=None):
    assert flow.response is not None and flow.response.status_code == status
    assert flow.response.headers["content-type"] == "application/json"
    error = error_of(flow)
    assert error["code"] == code
    assert message in error["message"]
    assert facts(flow)["refused"]["status"] == status
    assert (facts(flow)["call"]["model"] if model else facts(flow)["call"]) == model  # refusal names it
    return error


class TestOptions:
    @pytest.mark.parametrize("option, value", [
        ("pouch_unknown_keys", "allow"),
        ("pouch_unknown_keys", ""),
        ("pouch_unmetered", "forward"),
    ])
    def test_bad_values_are_refused(self, gw, option, value):
        with pytest.raises(exceptions.OptionsError, match=option):
            gw.configure(**{option: value})

    def test_a_store_that_cannot_be_opened_is_an_options_error(self, gw, tmp_path):
        not_a_directory = tmp_path / "file"
        not_a_directory.write_text("")
        with pytest.raises(exceptions.OptionsError, match="pouch_db"):
            gw.configure(pouch_db=f"sqlite:///{not_a_directory}/pouch.db")

    def test_key_cache_seconds_set_the_cache_ttl(self, gw):
        gw.configure(pouch_key_cache="0.5")
        assert gw.keys.cache.ttl == 0.5


class TestKeys:
    def test_other_hosts_are_not_pouchs_business(self, gw):
        flow = admit(gw, openai_flow("/v1/chat/completions", chat_body(), host="example.com"))
        assert flow.response is None and flow.metadata == {}

    def test_already_handled_flows_are_left_alone(self, gw):
        answered = openai_flow(body=chat_body())  # no key at all: would be a 401
        answered.response = http.Response.make(204)
        admit(gw, answered)
        assert answered.response.status_code == 204 and answered.metadata == {}

        failed = openai_flow(body=chat_body())
        failed.kill()
        admit(gw, failed)
        assert failed.response is None and failed.metadata == {}

    def test_a_metered_call_is_admitted_with_its_facts(self, gw):
        key, secret = create_key(rpm=10)
        body = chat_body(max_completion_tokens=50, n=2, stream=True)
        flow = admit(gw, openai_flow(body=body, secret=secret))
        assert flow.response is None
        assert facts(flow)["provider"] == "openai"
        assert facts(flow)["endpoint"] == {"name": "chat.completions", "metering": "metered", "api": "chat"}
        found = facts(flow)["key"]
        assert (found["id"], found["name"], found["prefix"], found["rpm"]) == (key.id, "alice", key.prefix, 10)
        assert secret not in repr(facts(flow))
        assert facts(flow)["call"] == {"model": MODEL, "stream": True, "max_output": 50, "choices": 2,
                                       "hidden_input": False, "tool_calls": [], "long_context": False,
                                       "input_tokens": None, "exact": True}  # counted later, on first use
        assert exchange_of(flow).body == body

    @pytest.mark.parametrize("header", ["x-api-key", "api-key"])
    def test_the_key_is_found_where_sdks_send_it(self, gw, header):
        _, secret = create_key()
        flow = admit(gw, openai_flow(body=chat_body(), headers={header: secret}))
        assert flow.response is None and facts(flow)["key"]["name"] == "alice"

    def test_the_same_key_sent_twice_is_one_credential(self, gw):
        _, secret = create_key()
        flow = admit(gw, openai_flow(body=chat_body(), secret=secret, headers={"x-api-key": secret}))
        assert flow.response is None and facts(flow)["key"] is not None

    def test_missing_credential(self, gw):
        error = assert_refused(admit(gw, openai_flow(body=chat_body())), 401, "invalid_api_key", message="no API key")
        assert error["type"] == "invalid_request_error"

    def test_two_different_credentials(self, gw):
        _, secret = create_key()
        flow = openai_flow(body=chat_body(), secret=secret, headers={"x-api-key": "sk-something-else"})
        assert_refused(admit(gw, flow), 401, "invalid_api_key", message="several different credentials")

    def test_unknown_pouch_key(self, gw):
        flow = admit(gw, openai_flow(body=chat_body(), secret="pouch-" + "x" * 43))
        assert_refused(flow, 401, "invalid_api_key", message="unknown API key")
        assert facts(flow)["refused"]["kind"] == "auth"

    def test_a_provider_key_is_refused_by_default(self, gw):
        flow = admit(gw, openai_flow(body=chat_body(), secret="sk-proj-real-openai-key"))
        assert_refused(flow, 401, "invalid_api_key")
        assert facts(flow)["observed"] is None

    def test_revoked_key(self, gw):
        key, secret = create_key()
        key_store.revoke(key, utcnow())
        assert_refused(admit(gw, openai_flow(body=chat_body(), secret=secret)), 401, "invalid_api_key",
                       message="key 'alice' has been revoked")

    def test_expired_key_names_its_expiry(self, gw):
        expired = (utcnow() - timedelta(hours=2)).replace(second=0, microsecond=0)
        _, secret = create_key(expires_at=expired)
        assert_refused(admit(gw, openai_flow(body=chat_body(), secret=secret)), 401, "invalid_api_key",
                       message=f"key 'alice' expired at {expired:%Y-%m-%d %H:%M} UTC")

    def test_an_auto_renew_key_past_expiry_is_renewed_and_admitted(self, gw):
        expired = (utcnow() - timedelta(minutes=5)).replace(microsecond=0)
        key, secret = create_key(period=Period.parse("daily"), expires_at=expired, auto_renew=True)
        flow = admit(gw, openai_flow(body=chat_body(), secret=secret))
        assert flow.response is None
        stored = key_store.get(key.id)
        assert stored.expires_at == expired + timedelta(days=1)
        assert stored.anchor == expired  # the renewal starts a fresh budget window
        assert facts(flow)["key"]["anchor"] == expired.isoformat()

    def test_observe_mode_lets_a_provider_key_through_under_a_fingerprint(self, gw):
        gw.configure(pouch_unknown_keys="observe")
        secret = "sk-proj-real-openai-key-1234567890"
        flow = admit(gw, openai_flow(body=chat_body(), secret=secret))
        assert flow.response is None
        fingerprint = facts(flow)["observed"]
        assert re.fullmatch(r"[0-9a-f]{12}", fingerprint)
        assert fingerprint == hashlib.sha256(secret.encode()).hexdigest()[:12]
        assert facts(flow)["key"] is None
        assert facts(flow)["call"]["model"] == MODEL  # still metered: usage is recorded
        assert secret not in repr(flow.metadata)

    def test_observe_mode_copes_with_a_credential_that_is_not_utf8(self, gw):
        gw.configure(pouch_unknown_keys="observe")
        garbage = b"sk-\xff\xfe-not-utf8".decode("utf-8", "surrogateescape")  # as mitmproxy decodes headers
        flow = admit(gw, openai_flow(body=chat_body(), headers={"authorization": f"Bearer {garbage}"}))
        assert flow.response is None or flow.response.status_code == 401

    def test_observe_mode_still_refuses_an_unknown_pouch_key(self, gw):
        gw.configure(pouch_unknown_keys="observe")
        flow = admit(gw, openai_flow(body=chat_body(), secret="pouch-" + "y" * 43))
        assert_refused(flow, 401, "invalid_api_key")
        assert facts(flow)["observed"] is None

    @pytest.mark.parametrize("method, path", [
        ("POST", "/v1/no/such/thing"), ("GET", "/"), ("PUT", "/v1/chat/completions"),
    ])
    def test_unknown_endpoint(self, gw, method, path):
        _, secret = create_key()
        flow = admit(gw, openai_flow(path, chat_body(), method=method, secret=secret))
        assert_refused(flow, 404, "unknown_endpoint", message=f"{method} {path}")

    def test_unmetered_endpoint_is_refused(self, gw):
        _, secret = create_key()
        flow = openai_flow("/v1/images/generations", {"model": "gpt-image-1", "prompt": "a cat"}, secret=secret)
        assert_refused(admit(gw, flow), 403, "endpoint_not_metered", message="pouch_unmetered=allow")

    def test_unmetered_endpoint_may_be_allowed(self, gw):
        gw.configure(pouch_unmetered="allow")
        _, secret = create_key()
        flow = openai_flow("/v1/images/generations", {"model": "gpt-image-1", "prompt": "a cat"}, secret=secret)
        admit(gw, flow)
        assert flow.response is None
        assert facts(flow)["endpoint"]["metering"] == "unmetered"
        assert facts(flow)["key"] is not None and facts(flow)["call"] is None

    @pytest.mark.parametrize("method, path", [
        ("GET", "/v1/models"), ("GET", "/v1/models/gpt-4o"), ("POST", "/v1/moderations"),
    ])
    def test_free_endpoints_pass_with_the_key_and_no_call(self, gw, method, path):
        _, secret = create_key(models=("gpt-4o",))
        flow = admit(gw, openai_flow(path, method=method, secret=secret, content=b"not json"))
        assert flow.response is None
        assert facts(flow)["key"]["name"] == "alice"
        assert facts(flow)["call"] is None and exchange_of(flow).body is None

    @pytest.mark.parametrize("content", [b"{not json", b'["a list"]', b"\xff\xfe\xfd", b""])
    def test_unreadable_body(self, gw, content):
        _, secret = create_key()
        error = assert_refused(admit(gw, openai_flow(secret=secret, content=content)), 400, "invalid_request_error")
        assert "JSON" in error["message"]

    @pytest.mark.parametrize("body, message", [
        ({"messages": []}, "'model'"),
        (chat_body(max_tokens=-1), "'max_tokens'"),
        (chat_body(stream="yes"), "'stream'"),
    ])
    def test_unreadable_call(self, gw, body, message):
        _, secret = create_key()
        assert_refused(admit(gw, openai_flow(body=body, secret=secret)), 400, "invalid_request_error", message=message)

    def test_model_outside_the_allowlist(self, gw):
        _, secret = create_key(models=("gpt-4o", "o3*"))
        flow = admit(gw, openai_flow(body=chat_body(model="gpt-4o-mini"), secret=secret))
        assert_refused(flow, 403, "model_not_allowed", message="key 'alice' may not use model 'gpt-4o-mini'",
                       model="gpt-4o-mini")

    @pytest.mark.parametrize("model", ["gpt-4o", "o3-mini"])
    def test_model_inside_the_allowlist(self, gw, model):
        _, secret = create_key(models=("gpt-4o", "o3*"))
        flow = admit(gw, openai_flow(body=chat_body(model=model), secret=secret))
        assert flow.response is None and facts(flow)["call"]["model"] == model


class TestKeyCache:
    @pytest.fixture
    def loads(self, monkeypatch):
        calls = []
        real = KeyCache.load

        def counting(secret_hash):
            calls.append(secret_hash)
            return real(secret_hash)

        monkeypatch.setattr(KeyCache, "load", staticmethod(counting))
        return calls

    def test_a_second_lookup_does_not_ask_the_store(self, gw, loads):
        _, secret = create_key()
        for _ in range(3):
            assert admit(gw, openai_flow(body=chat_body(), secret=secret)).response is None
        assert len(loads) == 1

    def test_unknown_keys_are_cached_too(self, gw, loads):
        for _ in range(3):
            assert admit(gw, openai_flow(body=chat_body(), secret="pouch-made-up")).response.status_code == 401
        assert len(loads) == 1

    def test_a_revocation_binds_once_the_cache_expires(self, gw):
        gw.configure(pouch_key_cache="0")
        key, secret = create_key()
        assert admit(gw, openai_flow(body=chat_body(), secret=secret)).response is None
        key_store.revoke(key, utcnow())
        assert admit(gw, openai_flow(body=chat_body(), secret=secret)).response.status_code == 401

    def test_store_failure_during_renewal_fails_closed_as_store_unavailable(self, gw, monkeypatch):
        _, secret = create_key(period=Period.parse("daily"), expires_at=utcnow() - timedelta(minutes=1),
                               auto_renew=True)

        def broken(key, now):
            raise peewee.OperationalError("database is locked")

        monkeypatch.setattr(key_store, "renew_if_expired", broken)
        assert_refused(admit(gw, openai_flow(body=chat_body(), secret=secret)), 503, "store_unavailable")

    def test_store_failure_fails_closed(self, gw, monkeypatch):
        _, secret = create_key()

        def broken(secret_hash):
            raise peewee.OperationalError("database is locked")

        monkeypatch.setattr(KeyCache, "load", staticmethod(broken))
        flow = admit(gw, openai_flow(body=chat_body(), secret=secret))
        assert_refused(flow, 503, "store_unavailable", message="key store")
        assert facts(flow)["key"] is None
