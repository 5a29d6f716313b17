"""pouch/services/preflight.py and addons/preflight.py: what the gateway says at start-up about
missing credentials and the TLS trust of its routes (checked against fakes on loopback)."""

import asyncio
import logging

import pytest
from mitmproxy.test import taddons

from addons.preflight import Preflight
from addons.upstream import Upstream
from pouch.providers.registry import PROVIDERS
from pouch.services import preflight
from pouch.services.preflight import Trust, check_tls, missing_credentials
from tests.fakes.openai_fake import FakeOpenAI
from tests.gateway import free_port


def test_missing_credentials_by_provider():
    have, missing = missing_credentials(PROVIDERS.values(), {"OPENAI_API_KEY": "sk-x", "GOOGLE_API_KEY": "g",
                                                             "ANTHROPIC_API_KEY": ""})
    assert {"openai", "gemini"} <= set(have) and "anthropic" not in have, "an empty variable is no credential"
    assert "anthropic" in {p.name for p in missing} and not {"openai", "gemini"} & {p.name for p in missing}
    assert preflight.missing_line(PROVIDERS["gemini"]) == (
        "requests with pouch keys to gemini will fail until GEMINI_API_KEY or GOOGLE_API_KEY is set in the "
        "gateway's environment")


@pytest.fixture(scope="module")
def fakes(tmp_path_factory):
    with FakeOpenAI(tls_dir=tmp_path_factory.mktemp("a")) as trusted, \
            FakeOpenAI(tls_dir=tmp_path_factory.mktemp("b")) as untrusted:
        yield trusted, untrusted


def check(fake_or_address, trust: Trust) -> str | None:
    host, port = (fake_or_address.host, fake_or_address.port) if hasattr(fake_or_address, "port") else fake_or_address
    return asyncio.run(check_tls(host, port, trust, timeout=10))


def test_a_target_signed_by_the_trusted_ca_verifies(fakes):
    trusted, _ = fakes
    assert check(trusted, Trust(str(trusted.ca_path), None, False)) is None


def test_an_untrusted_target_says_what_to_set(fakes):
    trusted, untrusted = fakes
    problem = check(untrusted, Trust(None, None, False))
    assert "does not trust its TLS certificate" in problem
    assert "start the gateway with --set ssl_verify_upstream_trusted_ca=/path/ca.pem" in problem
    problem = check(untrusted, Trust(str(trusted.ca_path), None, False))
    assert f"the CAs the gateway trusts for upstreams ({trusted.ca_path}) do not include it" in problem


@pytest.mark.parametrize("address, says", [
    (("127.0.0.1", None), "refuses connections"),
    (("pouch-test-nowhere.invalid", 443), "does not resolve"),
])
def test_an_unreachable_target(address, says):
    host, port = address
    assert says in check((host, port or free_port()), Trust(None, None, False))


def test_a_plain_http_target_is_no_tls_server(tmp_path):
    with FakeOpenAI(plain=True) as plain:
        assert "TLS handshake failed" in check(plain, Trust(None, None, False))


def test_a_ca_file_that_does_not_load(tmp_path):
    assert "cannot load its upstream CAs" in check(("127.0.0.1", 1), Trust(str(tmp_path / "missing.pem"), None, False))


class TestAddon:
    def test_routes_are_checked_at_running_and_secrets_never_logged(self, fakes, caplog, monkeypatch):
        trusted, untrusted = fakes
        monkeypatch.setenv("OPENAI_API_KEY", "sk-never-logged")
        monkeypatch.delenv("XAI_API_KEY", raising=False)
        caplog.set_level(logging.INFO)
        addon = Preflight()

        async def run():
            with taddons.context(Upstream(), addon) as tctx:
                tctx.configure(addon, ssl_verify_upstream_trusted_ca=str(trusted.ca_path), pouch_route=[
                    f"api.openai.com={trusted.url}/v1-proxy", f"api.anthropic.com=https://user:pw@{untrusted.host}:"
                    f"{untrusted.port}", "api.groq.com=http://127.0.0.1:1"])
                addon.running()
                await asyncio.gather(*addon.checks)

        asyncio.run(run())
        log = caplog.text
        assert f"pouch_route api.openai.com=https://{trusted.host}:{trusted.port}: TLS verified" in log
        assert "api.anthropic.com" in log and "does not trust its TLS certificate" in log
        assert "api.groq.com" not in log, "plain http: nothing to verify"
        assert "to xai will fail until XAI_API_KEY is set" in log and "openai" in log
        assert "sk-never-logged" not in log and "pw@" not in log

    def test_insecure_upstreams_are_said_and_not_checked(self, caplog):
        caplog.set_level(logging.INFO)
        addon = Preflight()

        async def run():
            with taddons.context(Upstream(), addon) as tctx:
                tctx.configure(addon, ssl_insecure=True, pouch_route=["api.openai.com=https://127.0.0.1:1"])
                addon.running()
                assert not addon.checks

        asyncio.run(run())
        assert "its TLS certificate is not verified (ssl_insecure is on)" in caplog.text
