"""Input tokens of a metered request, counted once per flow and shared by the links that
need them (tokens/min limits, budget reservation, mock usage)."""

from __future__ import annotations

import asyncio

from mitmproxy import http

from pouch.domain.errors import BadRequest
from pouch.pricing.reserve import Bounds
from pouch.services import chain
from pouch.tokens.count import count_prompt, count_text, input_upper_bound, is_exact

# Bodies above this size are tokenized in a worker thread (tiktoken releases the GIL), so a
# 100k-token prompt never stalls the event loop that serves every other flow.
OFF_LOOP_BYTES = 32 * 1024


def _count(model: str, body: dict, api: str) -> tuple[int, bool]:
    try:
        counted = count_prompt(model, body, api)
    except ValueError as e:
        raise BadRequest(f"cannot read the prompt: {e}") from None
    exact = is_exact(model)
    return (counted if exact else input_upper_bound(model, counted)), exact


async def input_tokens(flow: http.HTTPFlow) -> int:
    """Exact for OpenAI models, an upper bound (documented safety factor) for the others;
    counted once per exchange."""
    found = chain.existing(flow)
    if found.input_tokens is None:
        model, api = found.call.model, found.endpoint.api
        if len(flow.request.raw_content or b"") > OFF_LOOP_BYTES:
            counted, exact = await asyncio.to_thread(_count, model, found.body, api)
        else:
            counted, exact = _count(model, found.body, api)
        found.input_tokens, found.exact = counted, exact
    return found.input_tokens


async def bounds(flow: http.HTTPFlow) -> Bounds:
    """What the request lets the provider bill for: the input of the worst case."""
    counted = await input_tokens(flow)
    found = chain.existing(flow)
    call = found.call
    return Bounds(counted, call.max_output, call.choices, call.hidden_input, found.tool_calls,
                  found.long_context, found.exact)


def warm() -> None:
    """Load the tokenizers now (about half a second) so the first request does not pay it."""
    count_text("gpt-4o", "warm")
    count_text("gpt-4", "warm")
