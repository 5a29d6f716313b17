"""addons/providers.py: which APIs are metered (options) and which hosts are decrypted."""

import re

import pytest
from mitmproxy import exceptions
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.test import taddons

from addons.providers import Providers
from pouch.providers import registry


@pytest.fixture
def tctx():
    providers = Providers()
    with taddons.context(Proxyserver(), providers) as tctx:
        tctx.providers = providers
        tctx.configure(providers)  # as mitmproxy does when it loads the script
        yield tctx
    registry.replace_configured([])


def decrypted(patterns, host):
    return any(re.search(pattern, host) for pattern in patterns)


def test_only_llm_hosts_are_decrypted_and_connections_are_lazy(tctx):
    patterns = tctx.options.allow_hosts
    assert all(decrypted(patterns, h) for h in (
        "api.openai.com", "api.openai.com:443", "api.anthropic.com:443", "generativelanguage.googleapis.com",
        "myres.openai.azure.com:443", "api.groq.com:443", "api.deepseek.com:443"))
    assert not any(decrypted(patterns, h) for h in (
        "example.com", "xapi.openai.com", "api.openai.com.evil", "openai.azure.com.evil", "evil.com:443"))
    assert tctx.options.connection_strategy == "lazy"


@pytest.mark.parametrize("option", ["allow_hosts", "ignore_hosts"])
def test_the_operators_host_choice_is_kept(tctx, option):
    tctx.configure(tctx.providers, **{option: ["^example[.]com$"]})
    assert getattr(tctx.options, option) == ["^example[.]com$"]
    assert tctx.options.allow_hosts in (["^example[.]com$"], [])


def test_a_compatible_server_is_metered_and_decrypted(tctx):
    tctx.configure(tctx.providers, pouch_compatible=["vllm=gpu-box:8000/v1", "corp=llm.corp,CORP_KEY"])
    vllm = registry.for_host("gpu-box", 8000)
    assert vllm.name == "vllm" and registry.for_host("gpu-box", 9000) is None
    assert registry.for_host("llm.corp", 443).credential_env == ("CORP_KEY",)
    assert registry.for_host("llm.corp", 8443) is None, "without a port: 80 and 443 only"
    assert vllm.endpoint("POST", "/v1/chat/completions").metering == "metered"
    assert decrypted(tctx.options.allow_hosts, "gpu-box:8000"), "allow_hosts follows the configured servers"
    assert all(decrypted(tctx.options.allow_hosts, h) for h in ("llm.corp:443", "llm.corp:80"))
    assert not any(decrypted(tctx.options.allow_hosts, h) for h in ("gpu-box:9000", "llm.corp:8443"))
    tctx.configure(tctx.providers, pouch_compatible=[])
    assert registry.for_host("gpu-box", 8000) is None


@pytest.mark.parametrize("spec", ["nohost", "x=", "openai=api.openai.com", "evil=api.openai.com:8443", "a=h:0"])
def test_bad_compatible_specs_are_refused_and_change_nothing(tctx, spec):
    tctx.configure(tctx.providers, pouch_compatible=["vllm=gpu-box:8000"])
    with pytest.raises(exceptions.OptionsError):
        tctx.configure(tctx.providers, pouch_compatible=[spec])
    assert registry.for_host("gpu-box", 8000).name == "vllm"


def test_azure_deployments_map_to_models(tctx):
    tctx.configure(tctx.providers, pouch_azure_deployment=["prod-chat=gpt-4o-mini"])
    azure = registry.PROVIDERS["azure"]
    endpoint = azure.endpoint("POST", "/openai/deployments/prod-chat/chat/completions?api-version=2024-10-21")
    call = azure.read_call(endpoint, "/openai/deployments/prod-chat/chat/completions?api-version=2024-10-21",
                           {"messages": [{"role": "user", "content": "hi"}]})
    assert call.model == "gpt-4o-mini"
    with pytest.raises(exceptions.OptionsError):
        tctx.configure(tctx.providers, pouch_azure_deployment=["no-equals-sign"])
    tctx.configure(tctx.providers, pouch_azure_deployment=[])
