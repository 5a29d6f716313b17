"""Which provider owns which host: a plain dict, looked up on every request.

A provider lists exact hosts (``api.openai.com``) or, with a leading dot, a domain whose
subdomains it owns (``.openai.azure.com`` for per-resource Azure hosts). Exact hosts are one
dict lookup; suffixes are tried only when that misses. A host may carry a port
(``gpu-box:8000``, a self-hosted server): requests to that port prefer it over the bare host.
A bare host (built-ins only) matches every port; a configured provider names each port, since
every port it owns is one a key holder reaches through the gateway.

Providers configured at run time (``pouch_compatible``) come and go through ``register`` /
``unregister``; the built-in ones stay.
"""

from __future__ import annotations

from collections.abc import Iterable

from pouch.providers.anthropic import Anthropic
from pouch.providers.azure import AzureOpenAI
from pouch.providers.base import Provider
from pouch.providers.compatible import VENDORS
from pouch.providers.gemini import Gemini
from pouch.providers.openai import OpenAI

PROVIDERS: dict[str, Provider] = {
    provider.name: provider for provider in (OpenAI(), Anthropic(), Gemini(), AzureOpenAI(), *VENDORS)
}

_BUILT_IN = frozenset(PROVIDERS)
_BY_HOST: dict[str, Provider] = {}
_BY_SUFFIX: tuple[tuple[str, Provider], ...] = ()


def _index() -> None:
    global _BY_HOST, _BY_SUFFIX  # rebound whole, so a lookup never sees half an update
    _BY_HOST = {host: p for p in PROVIDERS.values() for host in p.hosts if not host.startswith(".")}
    _BY_SUFFIX = tuple((host, p) for p in PROVIDERS.values() for host in p.hosts if host.startswith("."))


_index()


def for_host(host: str, port: int | None = None) -> Provider | None:
    host = host.lower().rstrip(".")
    if port is not None and (provider := _BY_HOST.get(f"{host}:{port}")):
        return provider
    if provider := _BY_HOST.get(host):
        return provider
    for suffix, provider in _BY_SUFFIX:
        if host.endswith(suffix):
            return provider
    return None


def is_built_in(provider: Provider) -> bool:
    """A provider pouch ships (a public API), not one an operator configured."""
    return provider.name in _BUILT_IN


def named_host(provider: Provider, host: str, port: int | None = None) -> bool:
    """Whether ``host`` is one the provider's credential may go to: one of its exact hosts, or
    a host under one of its domains that the operator named (``provider.resources``: an Azure
    resource). Any subdomain a client names is not enough: anyone can create one."""
    host = host.lower().rstrip(".")
    if _BY_HOST.get(host) is provider or (port is not None and _BY_HOST.get(f"{host}:{port}") is provider):
        return True
    return host in getattr(provider, "resources", ())


def register(provider: Provider) -> None:
    """Add a configured provider; ValueError if its name or a host is taken, or a host has no
    port. It may not claim a built-in provider's host on any port (that would divert the
    built-in's traffic and billing)."""
    if provider.name in PROVIDERS:
        raise ValueError(f"a provider named {provider.name!r} already exists")
    for host in provider.hosts:
        if not host.rpartition(":")[2].isdigit():
            raise ValueError(f"{host} names no port: a configured server owns only the ports it names")
        taken = _BY_HOST.get(host) or dict(_BY_SUFFIX).get(host)
        shadowed = for_host(host.split(":", 1)[0])
        if taken or (shadowed and shadowed.name in _BUILT_IN):
            raise ValueError(f"{host} already belongs to provider {(taken or shadowed).name!r}")
    PROVIDERS[provider.name] = provider
    _index()


def unregister(name: str) -> None:
    """Remove a configured provider (KeyError for an unknown or built-in one)."""
    if name in _BUILT_IN or name not in PROVIDERS:
        raise KeyError(f"no configured provider named {name!r}")
    del PROVIDERS[name]
    _index()


def replace_configured(providers: Iterable[Provider]) -> None:
    """Make ``providers`` the configured ones, all or nothing: on ValueError the previous ones stay."""
    previous = [p for name, p in PROVIDERS.items() if name not in _BUILT_IN]
    for provider in previous:
        unregister(provider.name)
    try:
        for provider in providers:
            register(provider)
    except ValueError:
        for name in [n for n in PROVIDERS if n not in _BUILT_IN]:
            unregister(name)
        for provider in previous:
            register(provider)
        raise
