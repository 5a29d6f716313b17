"""The one-line story of an LLM flow, for mitmweb's flow list and the LLM content view."""

from __future__ import annotations

from mitmproxy import http

from pouch.domain.money import Money
from pouch.services import chain


def explain(flow: http.HTTPFlow) -> str | None:
    """The one-line story of an LLM flow, or None for flows that are not pouch's."""
    if chain.PROVIDER not in flow.metadata:
        return None
    key = flow.metadata.get(chain.KEY)
    who = f"key {key['name']}" if key else f"observed {flow.metadata.get(chain.OBSERVED, '?')}"
    refused = flow.metadata.get(chain.REFUSED)
    if refused:
        return f"refused {refused['kind']} · {who} · {refused['message']}"
    call, result = flow.metadata.get(chain.CALL), flow.metadata.get(chain.RESULT)
    if not call or not result:
        endpoint = flow.metadata.get(chain.ENDPOINT)
        return f"{who} · {endpoint['name'] if endpoint else flow.request.path} · not metered"
    parts = [who, call["model"]]
    tokens = f"in {result['input_tokens']}"
    if result["cached_tokens"]:
        tokens += f" (cached {result['cached_tokens']})"
    tokens += f" · out {result['output_tokens']}"
    if result["reasoning_tokens"]:
        tokens += f" (reasoning {result['reasoning_tokens']})"
    if result.get("tool_calls"):
        tokens += " · tools " + ", ".join(f"{name} x{calls}" for name, calls in result["tool_calls"].items())
    parts += [tokens, str(Money.usd(result["cost_usd"]))]
    if result["outcome"] == "overrun":
        parts.append(f"OVERRUN: reserved {Money.usd(result['reserved_usd'])}")
    reservation = flow.metadata.get(chain.RESERVATION)
    if reservation and reservation["remaining_usd"] is not None:
        left = Money.usd(reservation["remaining_usd"]) + Money.usd(reservation["amount_usd"]) \
            - Money.usd(result["charged_usd"])
        parts.append(f"left {left}")
    parts.append(f"{result['latency_ms']} ms")
    if result["ttft_ms"] is not None and call["stream"]:
        parts.append(f"ttft {result['ttft_ms']} ms")
    if flow.metadata.get(chain.MOCK):
        parts.append("mock")
    if result["outcome"] not in ("ok", "mock"):
        parts.append(result["outcome"].replace("_", " "))
    return " · ".join(parts)
