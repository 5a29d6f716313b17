"""OpenAI-compatible APIs: hosted vendors built in, self-hosted servers added by configuration.

They take OpenAI's requests, errors and response shapes (so ``OpenAI`` serves them), but count
usage in their own ways. ``compatible_usage`` turns each into OpenAI's way (input counts
include cache reads, output counts include reasoning):

=========== ===================== ================================================= =================================
vendor      base path             usage as sent                                     normalised
=========== ===================== ================================================= =================================
groq        /openai/v1            OpenAI's; a stream's totals come in the final     read from ``x_groq.usage`` when
                                  chunk's ``x_groq.usage`` (OpenAI's usage chunk    there is no ``usage``
                                  only when asked)
mistral     /v1                   prompt/completion tokens; usage always in a       as is; pouch never asks (Mistral
                                  stream's last chunk                               refuses ``stream_options``)
deepseek    "" and /v1 (/beta)    ``prompt_cache_hit_tokens`` + ``_miss_tokens`` =  cached = hit tokens
                                  ``prompt_tokens``; reasoning (deepseek-reasoner)
                                  inside ``completion_tokens``
xai         /v1                   cached inside ``prompt_tokens``; reasoning NOT    output = completion + reasoning
                                  inside ``completion_tokens`` (total = prompt +
                                  completion + reasoning)
openrouter  /api/v1               OpenAI's, plus ``cost`` (ignored: pouch prices    as is
                                  itself) and ``cache_write_tokens``
together    /v1                   OpenAI's                                          as is
fireworks   /inference/v1         OpenAI's                                          as is
=========== ===================== ================================================= =================================

Whether reasoning sits inside the output count is decided by ``total_tokens`` where a vendor
sends one (total = input + output + reasoning means it does not), so a vendor changing its
habit is still counted right; only without a total does the vendor's documented habit decide.

Output caps pouch sets go in ``max_tokens``, the field every compatible server reads (Mistral
refuses ``max_completion_tokens``, and a server that silently skipped it would leave the request
uncapped, beyond what its reservation covers).

Self-hosted servers (vLLM, Ollama, llama.cpp, ...) come from ``pouch_compatible`` specs, see
``parse_compatible``. Model prices for them go in the operator's prices.json under the
server's name, like any other provider's.
"""

from __future__ import annotations

import dataclasses
import re
from urllib.parse import urlsplit

from pouch.domain.usage import Usage
from pouch.providers.base import Endpoint
from pouch.providers.openai import OpenAI
from pouch.providers.openai_usage import tool_calls_of, usage_from_dict

_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_HOST = re.compile(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?")
_ENV_VAR = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# The ports a spec without one names. Never "every port": each port of a configured host is
# an LLM host that key holders reach through the gateway, so a bare host would open the host's
# other services (an admin API, a database) to them, where the perimeter refuses them otherwise.
DEFAULT_PORTS = (80, 443)
_SPEC_HELP = "use NAME=HOST[:PORT][/BASE_PATH][,ENV_VAR], e.g. vllm=gpu-box:8000/v1 or ollama=127.0.0.1:11434"


class Compatible(OpenAI):
    """An OpenAI-compatible API. Beyond OpenAI's constructor arguments: ``other_base_paths``
    the same API is also served under, ``stream_usage_option`` False for a vendor that refuses
    ``stream_options`` (and reports stream usage anyway), ``reasoning_separate`` True for a
    vendor whose output count leaves reasoning out (used only when no total says so)."""

    def __init__(
        self,
        name: str,
        hosts: tuple[str, ...],
        credential_env: tuple[str, ...],
        base_path: str,
        *,
        other_base_paths: tuple[str, ...] = (),
        stream_usage_option: bool = True,
        reasoning_separate: bool = False,
        unpriced: tuple[str, ...] = (),
    ):
        super().__init__(name, hosts, credential_env, base_path)
        self.other_base_paths = other_base_paths
        self.stream_usage_option = stream_usage_option
        self.reasoning_separate = reasoning_separate
        self.unpriced = unpriced

    def unpriced_fields(self, body: dict) -> tuple[str, ...]:
        """Also the vendor's own fields that bill beyond the price of the model named: fallback
        models and web plugins (OpenRouter), live search (xAI)."""
        return super().unpriced_fields(body) + tuple(field for field in self.unpriced if body.get(field))

    def endpoint(self, method: str, path: str) -> Endpoint | None:
        for other in self.other_base_paths:
            if path.startswith(other + "/"):
                path = self.base_path + path[len(other) :]
                break
        return super().endpoint(method, path)

    def cap_output(self, endpoint: Endpoint, body: dict, max_tokens: int) -> None:
        if endpoint.api == "chat":
            body["max_tokens"] = max_tokens
        else:
            super().cap_output(endpoint, body, max_tokens)

    def prepare_stream(self, endpoint: Endpoint, body: dict) -> bool:
        return self.stream_usage_option and super().prepare_stream(endpoint, body)

    def read_usage(self, api: str, message: dict) -> Usage | None:
        usage = message.get("usage")
        if not isinstance(usage, dict):  # Groq streams: totals in the final chunk's x_groq
            usage = _dict(message.get("x_groq")).get("usage")
        read = compatible_usage(api, usage, self.reasoning_separate)
        if read is not None and api == "responses":
            read = dataclasses.replace(read, tool_calls=tool_calls_of(message))
        return read


def compatible_usage(api: str, usage: object, reasoning_separate: bool = False) -> Usage | None:
    """A compatible vendor's ``usage`` object, normalised (see the table in the module docstring)."""
    if not isinstance(usage, dict):
        return None
    usage = dict(usage)  # the caller's dict stays as the vendor sent it
    hit = usage.get("prompt_cache_hit_tokens")
    if _is_count(hit):  # DeepSeek
        usage["prompt_tokens_details"] = _dict(usage.get("prompt_tokens_details")) | {"cached_tokens": hit}
    if api == "responses":
        input_field, output_field, details_field = "input_tokens", "output_tokens", "output_tokens_details"
    else:
        input_field, output_field, details_field = "prompt_tokens", "completion_tokens", "completion_tokens_details"
    output, reasoning = usage.get(output_field), _dict(usage.get(details_field)).get("reasoning_tokens")
    if _is_count(output) and _is_count(reasoning) and reasoning:
        total, input_count = usage.get("total_tokens"), usage.get(input_field)
        if _is_count(total) and _is_count(input_count):
            reasoning_separate = total == input_count + output + reasoning
        if reasoning_separate:  # xAI
            usage[output_field] = output + reasoning
    return usage_from_dict(api, usage)


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _dict(value: object) -> dict:
    return value if isinstance(value, dict) else {}


VENDORS = (
    Compatible("groq", ("api.groq.com",), ("GROQ_API_KEY",), "/openai/v1"),
    Compatible("mistral", ("api.mistral.ai",), ("MISTRAL_API_KEY",), "/v1", stream_usage_option=False),
    Compatible("deepseek", ("api.deepseek.com",), ("DEEPSEEK_API_KEY",), "", other_base_paths=("/v1", "/beta")),
    Compatible("xai", ("api.x.ai",), ("XAI_API_KEY",), "/v1", reasoning_separate=True, unpriced=("search_parameters",)),
    Compatible("openrouter", ("openrouter.ai",), ("OPENROUTER_API_KEY",), "/api/v1",
               unpriced=("models", "route", "plugins")),
    Compatible("together", ("api.together.xyz", "api.together.ai"), ("TOGETHER_API_KEY",), "/v1"),
    Compatible("fireworks", ("api.fireworks.ai",), ("FIREWORKS_API_KEY",), "/inference/v1"),
)


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
