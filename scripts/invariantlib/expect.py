"""What the harness expects the gateway to reserve, count and bill for one request, worked out
from the request and what the fake was told, not read back from the gateway.

- the worst case (pouch.pricing.reserve, the gateway's own rules): the budget reserves it and
  tokens/min counts its tokens;
- the bill of a complete answer: the tokens the fake reports (the prompt as counted, each tool
  round's input, the reply, reasoning tokens, or what x-fake-usage says instead) at the model's
  prices, plus each tool call's fee.

A tool request's worst case includes, per allowed call, its fee and the model's context window
at the dearest input price: thousands of times a plain request's.
"""

from __future__ import annotations

import dataclasses
import json

from pouch.domain.money import Money
from pouch.pricing import reserve
from pouch.tokens.count import count_prompt, count_text, input_upper_bound

from .kinds import DEFAULT_TOOL_CALLS, GEMINI_TOOL_BOUNDS, KINDS, PRICES, TOOLS, Planned

# How many calls a row shows for the calls the fake made: Gemini's URL context is one retrieval
# however many URLs it fetched; every other tool call is one call.
def shown_calls(tool: str | None, calls: int) -> int:
    return min(calls, 1) if tool == "url_context" else calls


@dataclasses.dataclass(frozen=True)
class Bill:
    """A complete answer's row, as the provider reported it."""

    input_tokens: int
    cached_tokens: int
    output_tokens: int
    reasoning_tokens: int
    tool_calls: dict  # {"web_search": 2}; {} when no call was made
    cost: Money


def bound_of(planned: Planned) -> int:
    """The most tool calls the gateway lets the provider make (and reserves for)."""
    if planned.provider == "gemini":
        return GEMINI_TOOL_BOUNDS[planned.tool]
    return planned.tool_bound if planned.tool_bound is not None else DEFAULT_TOOL_CALLS


def calls_made(planned: Planned) -> int:
    """The calls the fake performs: what it was asked for, held to the bound it was sent (Google
    sends none: the fake performs them all), unless it was told to ignore bounds."""
    if not planned.tool:
        return 0
    if planned.ignore_bounds or planned.provider == "gemini":
        return planned.tool_calls
    return min(planned.tool_calls, bound_of(planned))


def forwarded_body(planned: Planned) -> dict:
    """The body as the gateway counts and forwards it: with its default tool bound injected
    where the request set none (Anthropic's max_uses sits in the tool, which is counted)."""
    body = json.loads(planned.body)
    if planned.tool and planned.tool_bound is None:
        if planned.provider == "openai":
            body["max_tool_calls"] = DEFAULT_TOOL_CALLS
        elif planned.provider == "anthropic":
            body["tools"][0]["max_uses"] = DEFAULT_TOOL_CALLS
    return body


def bounds_of(planned: Planned, max_output: int | None = None) -> reserve.Bounds:
    kind = KINDS[planned.kind]
    counted = count_prompt(planned.model, forwarded_body(planned), kind.api)
    tools = ()
    if planned.tool:
        tools = (((TOOLS[planned.provider][planned.tool],), bound_of(planned)),)
    cap = planned.max_tokens if max_output is None else max_output
    return reserve.Bounds(input_upper_bound(planned.model, counted), cap, tool_calls=tools)


def worst_case(planned: Planned, max_output: int | None = None) -> Money:
    """What the gateway reserves for the request (``max_output``: the cap it set itself)."""
    price = PRICES.resolve(planned.model, planned.provider)
    return reserve.worst_case(price, bounds_of(planned, max_output)).total


def worst_tokens(planned: Planned) -> int:
    """What the request counts against tokens/min until it is measured."""
    return reserve.worst_tokens(PRICES.resolve(planned.model, planned.provider), bounds_of(planned))


def bill(planned: Planned, prompt: int, reply: str, output: int | None = None) -> Bill:
    """The row of a complete answer to ``planned`` whose prompt the fake counted as ``prompt``
    and whose visible reply was ``reply`` (``output``: its output tokens, if already known)."""
    model, usage = planned.model, planned.usage
    calls = calls_made(planned)
    rounds = calls * planned.tool_input
    output = count_text(model, reply) if output is None else output
    reasoning = usage.get("reasoning_tokens", usage.get("thoughtsTokenCount", 0))
    if planned.provider == "openai":
        input_tokens = usage.get("prompt_tokens", prompt + rounds)
        output = usage.get("completion_tokens", output + reasoning)  # OpenAI's includes reasoning
        cached = usage.get("cached_tokens", 0)
    elif planned.provider == "anthropic":
        input_tokens = usage.get("input_tokens", prompt + rounds)
        output, cached = usage.get("output_tokens", output), 0
    else:  # Gemini reports tool rounds and thoughts beside the prompt and the reply
        prompt = usage.get("promptTokenCount", prompt)
        input_tokens = prompt + usage.get("toolUsePromptTokenCount", rounds)
        output = usage.get("candidatesTokenCount", output) + reasoning
        cached = min(usage.get("cachedContentTokenCount", 0), prompt)
    tool = TOOLS[planned.provider][planned.tool] if planned.tool else None
    shown = shown_calls(tool, calls)
    return Bill(input_tokens, cached, output, reasoning, {tool: shown} if shown else {},
                priced(planned, input_tokens, cached, output, reasoning, shown))


def priced(planned: Planned, input_tokens: int, cached: int, output: int, reasoning: int, calls: int) -> Money:
    """Tokens and tool calls at the model's prices (none of the models here has input tiers)."""
    price = PRICES.resolve(planned.model, planned.provider)
    cached_price = price.cached_input if price.cached_input is not None else price.input
    reasoning_price = price.reasoning if price.reasoning is not None else price.output
    total = (price.input * (input_tokens - cached) + cached_price * cached
             + price.output * (output - reasoning) + reasoning_price * reasoning)
    if calls:
        total += price.tool_fee(TOOLS[planned.provider][planned.tool]) * calls
    return total


def least_bill(planned: Planned) -> Money:
    """The least a complete answer can cost: the prompt as the fake counts it, the tool calls
    and any reported output, with no reply at all."""
    prompt = count_prompt(planned.model, forwarded_body(planned), KINDS[planned.kind].api)
    return bill(planned, prompt, "", output=0).cost
