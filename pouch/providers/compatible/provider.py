"""The class every OpenAI-compatible API is: OpenAI's requests, errors and response shapes,
with the vendor's base paths and its way of counting usage (the table in
``pouch.providers.compatible``), normalised to OpenAI's way."""

from __future__ import annotations

import dataclasses

from pouch.domain.usage import Usage
from pouch.providers.base import Endpoint
from pouch.providers.openai import OpenAI
from pouch.providers.openai.usage import tool_calls_of, usage_from_dict
from pouch.providers.values import as_dict, count


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
            usage = as_dict(message.get("x_groq")).get("usage")
        read = compatible_usage(api, usage, self.reasoning_separate)
        if read is not None and api == "responses":
            read = dataclasses.replace(read, tool_calls=tool_calls_of(message))
        return read


def compatible_usage(api: str, usage: object, reasoning_separate: bool = False) -> Usage | None:
    """A compatible vendor's ``usage`` object, normalised (see the table in ``pouch.providers.compatible``)."""
    if not isinstance(usage, dict):
        return None
    usage = dict(usage)  # the caller's dict stays as the vendor sent it
    hit = usage.get("prompt_cache_hit_tokens")
    if count(hit) is not None:  # DeepSeek
        usage["prompt_tokens_details"] = as_dict(usage.get("prompt_tokens_details")) | {"cached_tokens": hit}
    if api == "responses":
        input_field, output_field, details_field = "input_tokens", "output_tokens", "output_tokens_details"
    else:
        input_field, output_field, details_field = "prompt_tokens", "completion_tokens", "completion_tokens_details"
    output, reasoning = usage.get(output_field), as_dict(usage.get(details_field)).get("reasoning_tokens")
    if count(output) is not None and count(reasoning):  # some reasoning
        total, input_count = usage.get("total_tokens"), usage.get(input_field)
        if count(total) is not None and count(input_count) is not None:
            reasoning_separate = total == input_count + output + reasoning
        if reasoning_separate:  # xAI
            usage[output_field] = output + reasoning
    return usage_from_dict(api, usage)
