"""Which provider owns which host: a plain dict, looked up on every request.

A provider lists exact hosts (``api.openai.com``) or, with a leading dot, a domain whose
subdomains it owns (``.openai.azure.com`` for per-resource Azure hosts). Exact hosts are one
dict lookup; suffixes are tried only when that misses.
"""

from __future__ import annotations

from pouch.providers.base import Provider
from pouch.providers.openai import OpenAI

PROVIDERS: dict[str, Provider] = {provider.name: provider for provider in (OpenAI(),)}

_BY_HOST = {host: p for p in PROVIDERS.values() for host in p.hosts if not host.startswith(".")}
_BY_SUFFIX = tuple((host, p) for p in PROVIDERS.values() for host in p.hosts if host.startswith("."))


def for_host(host: str) -> Provider | None:
    host = host.lower().rstrip(".")
    if provider := _BY_HOST.get(host):
        return provider
    for suffix, provider in _BY_SUFFIX:
        if host.endswith(suffix):
            return provider
    return None
