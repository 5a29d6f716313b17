"""Which LLM APIs the gateway meters (not a chain link: it configures the others).

Built in: OpenAI, Anthropic, Gemini, Azure OpenAI, Groq, Mistral, DeepSeek, xAI, OpenRouter,
Together and Fireworks. Options add self-hosted OpenAI-compatible servers and map Azure
deployments to models. Only these hosts are decrypted; everything else is tunnelled untouched.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from mitmproxy import ctx, exceptions

from pouch.providers import registry
from pouch.providers.azure import parse_deployments, parse_resource
from pouch.providers.compatible import parse_compatible


def llm_host_patterns() -> list[str]:
    """Regexes for mitmproxy's allow_hosts: each provider host (with its port if it names
    one), and every subdomain of a provider that owns a domain (a host with a leading dot)."""
    patterns = []
    for host in sorted({h for p in registry.PROVIDERS.values() for h in p.hosts}):
        escaped = host.replace(".", "[.]")  # a name may end in a dot (api.openai.com.): the same host
        if host.startswith("."):
            patterns.append(rf"^[^:]+{escaped}[.]?(:\d+)?$")
        elif ":" in host:
            name, port = host.rsplit(":", 1)
            patterns.append(rf"^{name.replace('.', '[.]')}[.]?:{port}$")
        else:
            patterns.append(rf"^{escaped}[.]?(:\d+)?$")
    return patterns


class Providers:
    def __init__(self):
        self.patterns: list[str] | None = None  # the allow_hosts pouch set, if it set them

    def load(self, loader):
        loader.add_option(
            "pouch_compatible", Sequence[str], [],
            "An OpenAI-compatible server to meter (vLLM, Ollama, llama.cpp): NAME=HOST[:PORT][/BASE_PATH][,ENV_VAR] "
            "(repeatable), e.g. vllm=gpu-box:8000/v1 or ollama=127.0.0.1:11434. Without a port: ports 80 and 443 "
            "only; base path default /v1; ENV_VAR holds its key (none: no credential is sent). Give its models "
            "prices in $POUCH_HOME/prices.json with provider NAME.")
        loader.add_option(
            "pouch_azure_deployment", Sequence[str], [],
            "Azure OpenAI deployment -> the model it runs: DEPLOYMENT=MODEL (repeatable), e.g. prod-chat=gpt-4o. "
            "Prices and key model rules use the model; an unmapped deployment is taken to be named after its model.")
        loader.add_option(
            "pouch_azure_resource", Sequence[str], [],
            "An Azure OpenAI resource the gateway's AZURE_OPENAI_API_KEY belongs to: its name (my-res), host "
            "(my-res.openai.azure.com) or endpoint URL (repeatable; $AZURE_OPENAI_ENDPOINT counts too). "
            "Requests with pouch keys to any other resource are refused: anyone can create one.")

    def configure(self, updated):
        if "pouch_azure_deployment" in updated:
            try:
                registry.PROVIDERS["azure"].deployments = parse_deployments(ctx.options.pouch_azure_deployment)
            except ValueError as e:
                raise exceptions.OptionsError(f"pouch_azure_deployment: {e}") from e
        if "pouch_azure_resource" in updated:
            specs = [("pouch_azure_resource", spec) for spec in ctx.options.pouch_azure_resource]
            if os.environ.get("AZURE_OPENAI_ENDPOINT"):
                specs.append(("AZURE_OPENAI_ENDPOINT", os.environ["AZURE_OPENAI_ENDPOINT"]))
            resources = set()
            for source, spec in specs:
                try:
                    resources.add(parse_resource(spec))
                except ValueError as e:
                    raise exceptions.OptionsError(f"{source}: {e}") from e
            registry.PROVIDERS["azure"].resources = frozenset(resources)
        if "pouch_compatible" in updated:
            try:
                registry.replace_configured([parse_compatible(s) for s in ctx.options.pouch_compatible])
            except ValueError as e:
                raise exceptions.OptionsError(f"pouch_compatible: {e}") from e
        # Here rather than in running(): mitmproxy accepts connections before running() is
        # called, and those first connections must already follow these settings.
        # Decrypt only LLM hosts, unless the operator set allow/ignore hosts themselves.
        hosts = ctx.options.allow_hosts
        chosen_by_operator = bool(ctx.options.ignore_hosts) or (bool(hosts) and hosts != self.patterns)
        if not chosen_by_operator and hosts != (patterns := llm_host_patterns()):
            self.patterns = patterns
            ctx.options.update(allow_hosts=patterns)
        elif ctx.options.ignore_hosts and hosts and hosts == self.patterns:
            ctx.options.update(allow_hosts=[])  # the two exclude each other: the operator's wins
        # Connect upstream only when a request is really forwarded: mitmproxy's default
        # (eager) would dial the provider before pouch could refuse or route a request, so
        # pouch replaces the default (a non-default choice is kept).
        if not ctx.options.has_changed("connection_strategy") and ctx.options.connection_strategy != "lazy":
            ctx.options.update(connection_strategy="lazy")
