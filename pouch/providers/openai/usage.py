"""Usage from what OpenAI sends back in a JSON body, a stream chunk or a Responses object
(``streams`` follows the streams that carry them).

OpenAI already reports the normalised way (input counts include cache reads and writes,
output counts include reasoning), so this only validates, clamps and sorts cache writes.
"""

from __future__ import annotations

import dataclasses

from pouch.domain.usage import Usage
from pouch.providers.values import as_dict, count

# api -> (input field, its details, output field, its details); embeddings have no output.
_USAGE_FIELDS = {
    "chat": ("prompt_tokens", "prompt_tokens_details", "completion_tokens", "completion_tokens_details"),
    "completions": ("prompt_tokens", "prompt_tokens_details", "completion_tokens", "completion_tokens_details"),
    "embeddings": ("prompt_tokens", "prompt_tokens_details", None, None),
    "responses": ("input_tokens", "input_tokens_details", "output_tokens", "output_tokens_details"),
}


def usage_from_dict(api: str, usage: object) -> Usage | None:
    """Normalise an OpenAI ``usage`` object; None when it is missing or not numbers.

    Details that are missing or null count as 0; details larger than their total are
    clamped to it (the totals are what OpenAI bills). Cache writes (GPT-5.6 and later bill
    them above the input price) map by lifetime: OpenAI's default 30 minutes to
    ``cache_write_5m_tokens``, its extended 12 hours to ``cache_write_1h_tokens``, the
    pricing table's default and extended write prices.
    """
    if not isinstance(usage, dict) or api not in _USAGE_FIELDS:
        return None
    input_field, input_details, output_field, output_details = _USAGE_FIELDS[api]
    input_tokens = count(usage.get(input_field))
    output_tokens = count(usage.get(output_field)) if output_field else 0
    if input_tokens is None or output_tokens is None:
        return None
    details = as_dict(usage.get(input_details))
    cached = min(count(details.get("cached_tokens")) or 0, input_tokens)
    written = min(count(details.get("cache_write_tokens")) or 0, input_tokens - cached)
    written_12h = min(count(as_dict(details.get("cache_write_tokens_details")).get("ttl_12h_tokens")) or 0, written)
    reasoning = count(as_dict(usage.get(output_details)).get("reasoning_tokens")) or 0
    return Usage(
        input_tokens=input_tokens,
        cached_tokens=cached,
        cache_write_5m_tokens=written - written_12h,
        cache_write_1h_tokens=written_12h,
        output_tokens=output_tokens,
        reasoning_tokens=min(reasoning, output_tokens),
    )


# Output items of a Responses object that are paid server-side tool calls, by price-table name
# (``web_search`` calls are priced at the requested tool's fee: ``web_search_preview`` is dearer).
_TOOL_ITEMS = {"web_search_call": "web_search", "file_search_call": "file_search", "mcp_call": "mcp"}


def usage_field(api: str, message: dict) -> Usage | None:
    """The usage of a response, chunk or Responses object: its ``usage`` field, read OpenAI's way,
    with the server-side tool calls a Responses object lists in its output.

    The default ``read_usage`` of the stream trackers; a compatible vendor that reports usage
    elsewhere or counts differently passes its own (``OpenAI.read_usage``).
    """
    usage = usage_from_dict(api, message.get("usage"))
    if usage is not None and api == "responses":
        usage = dataclasses.replace(usage, tool_calls=tool_calls_of(message))
    return usage


def tool_calls_of(response: dict) -> tuple[tuple[str, int], ...]:
    """The paid server-side tool calls a Responses object lists in its output."""
    calls: dict[str, int] = {}
    output = response.get("output")
    for item in output if isinstance(output, list) else ():
        name = _TOOL_ITEMS.get(item.get("type")) if isinstance(item, dict) else None
        if name:
            calls[name] = calls.get(name, 0) + 1
    return Usage.tools(calls)
