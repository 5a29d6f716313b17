"""Which provider owns which host, and which request shapes and model families they know.

Each provider is a folder (``pouch.providers.openai``, ...) whose package lists its providers in
``PROVIDERS``; ``FOLDERS`` names the ones pouch ships, one line each, and is all that changes
when a provider is added. Their ``apis`` (request shapes) and ``tokenizers`` (model families)
are gathered here for ``pouch.tokens``, the mock and mitmweb's LLM view, which use them
without knowing whose they are.

Hosts are a plain dict, looked up on every request. A provider lists exact hosts
(``api.openai.com``) or, with a leading dot, a domain whose subdomains it owns
(``.openai.azure.com`` for per-resource Azure hosts). Exact hosts are one dict lookup;
suffixes are tried only when that misses. A host may carry a port
(``gpu-box:8000``, a self-hosted server): requests to that port prefer it over the bare host.
A bare host (built-ins only) matches every port; a configured provider names each port, since
every port it owns is one a key holder reaches through the gateway.

Providers configured at run time (``pouch_compatible``) come and go through ``register`` /
``unregister``; the built-in ones stay.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Iterable

from pouch.providers.base import Api, Provider, Tokenizer

# The provider folders pouch ships, as importable packages; earlier ones' tokenizers are tried first.
FOLDERS = (
    "pouch.providers.openai",
    "pouch.providers.anthropic",
    "pouch.providers.gemini",
    "pouch.providers.azure",
    "pouch.providers.compatible",
)

PROVIDERS: dict[str, Provider] = {}  # by name; changed in place (others hold this dict)
APIS: dict[str, Api] = {}  # the built-in providers' request shapes, by Endpoint.api name
_BUILT_IN: frozenset[str] = frozenset()
_BY_HOST: dict[str, Provider] = {}
_BY_SUFFIX: tuple[tuple[str, Provider], ...] = ()
_tokenizer: Callable[[str], Tokenizer | None]  # set by load


def load() -> None:
    """Read the providers of every folder in ``FOLDERS`` (done at import; again by a test that
    adds a folder). Configured providers are kept. ValueError if two folders clash."""
    global APIS, _BUILT_IN, _tokenizer  # rebound whole, so a lookup never sees half an update
    configured = [p for name, p in PROVIDERS.items() if name not in _BUILT_IN]
    built_in: dict[str, Provider] = {}
    for folder in FOLDERS:
        for provider in importlib.import_module(folder).PROVIDERS:
            if built_in.setdefault(provider.name, provider) is not provider:
                raise ValueError(f"two providers are named {provider.name!r}")
    apis: dict[str, Api] = {}
    for shape in (shape for provider in built_in.values() for shape in provider.apis):
        if apis.setdefault(shape.name, shape) is not shape:
            raise ValueError(f"two request shapes are named {shape.name!r}")
    tokenizers = tuple(dict.fromkeys(t for provider in built_in.values() for t in provider.tokenizers))
    PROVIDERS.clear()
    PROVIDERS.update(built_in)
    APIS, _BUILT_IN = apis, frozenset(built_in)

    def find(name: str) -> Tokenizer | None:
        return next((t for t in tokenizers if t.matches(name)), None)

    _tokenizer = functools.lru_cache(maxsize=1024)(find)  # bounded: model names come from clients
    _index()
    for provider in configured:
        register(provider)


def _index() -> None:
    global _BY_HOST, _BY_SUFFIX  # rebound whole, so a lookup never sees half an update
    _BY_HOST = {host: p for p in PROVIDERS.values() for host in p.hosts if not host.startswith(".")}
    _BY_SUFFIX = tuple((host, p) for p in PROVIDERS.values() for host in p.hosts if host.startswith("."))


def api(name: str) -> Api | None:
    """The request shape an ``Endpoint.api`` names."""
    return APIS.get(name)


def tokenizer(model: str) -> Tokenizer | None:
    """How a provider folder counts ``model`` (a canonical name); None: no folder knows it."""
    return _tokenizer(model)


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
    port, or it takes a request shape no built-in provider defines. It may not claim a
    built-in provider's host on any port (that would divert the built-in's traffic and billing)."""
    if provider.name in PROVIDERS:
        raise ValueError(f"a provider named {provider.name!r} already exists")
    if unknown := [a.name for a in provider.apis if APIS.get(a.name) is not a]:
        raise ValueError(f"provider {provider.name!r} takes request shapes pouch does not know: {', '.join(unknown)}")
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


load()
