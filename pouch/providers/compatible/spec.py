"""Self-hosted OpenAI-compatible servers (vLLM, Ollama, llama.cpp, ...) from the operator's
``pouch_compatible`` specs."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from pouch.providers.compatible.provider import Compatible

_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_HOST = re.compile(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?")
_ENV_VAR = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# The ports a spec without one names. Never "every port": each port of a configured host is
# an LLM host that key holders reach through the gateway, so a bare host would open the host's
# other services (an admin API, a database) to them, where the perimeter refuses them otherwise.
DEFAULT_PORTS = (80, 443)
_SPEC_HELP = "use NAME=HOST[:PORT][/BASE_PATH][,ENV_VAR], e.g. vllm=gpu-box:8000/v1 or ollama=127.0.0.1:11434"


def parse_compatible(spec: str) -> Compatible:
    """A self-hosted server from a ``pouch_compatible`` spec, ``NAME=HOST[:PORT][/BASE_PATH][,ENV_VAR]``.

    ``vllm=gpu-box:8000/v1`` serves requests to gpu-box port 8000 under /v1; without a port
    only the default ports, 80 and 443 (``DEFAULT_PORTS``); without a base path it is /v1 (a
    lone "/" is the root).
    ENV_VAR names the gateway's variable holding the server's key; without one the server
    gets no credential at all. Host names and IPv4 addresses only.
    """
    name, sep, rest = spec.partition("=")
    location, _, env_var = rest.partition(",")
    name, location, env_var = name.strip().lower(), location.strip(), env_var.strip()
    if not sep or not location or "://" in location:
        raise ValueError(f"bad compatible server {spec!r}: {_SPEC_HELP}")
    if not _NAME.fullmatch(name):
        raise ValueError(f"bad compatible server {spec!r}: the name is letters, digits, '-' and '_'")
    if env_var and not _ENV_VAR.fullmatch(env_var):
        raise ValueError(f"bad compatible server {spec!r}: {env_var!r} is not an environment variable name")
    try:
        parts = urlsplit("//" + location)
        port = parts.port
    except ValueError as e:
        raise ValueError(f"bad compatible server {spec!r}: {e}") from None
    host = parts.hostname or ""
    if not _HOST.fullmatch(host) or port == 0 or parts.username or parts.password or parts.query or parts.fragment:
        raise ValueError(f"bad compatible server {spec!r}: {_SPEC_HELP}")
    base_path = parts.path or "/v1"
    hosts = tuple(f"{host}:{p}" for p in ((port,) if port else DEFAULT_PORTS))
    return Compatible(name, hosts, (env_var,) if env_var else (), base_path)
