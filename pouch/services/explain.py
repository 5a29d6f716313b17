"""The one-line story of an LLM flow, for mitmweb's flow list and the LLM content view."""

from __future__ import annotations

from mitmproxy import http

from pouch.domain.money import Money
from pouch.providers.base import SIDE
from pouch.services import exchange


def explain(flow: http.HTTPFlow) -> str | None:
    """The one-line story of an LLM flow, or None for flows that are not pouch's.

    What it cost and whose key come first, so that mitmweb's comment column (150 px unless
    widened: about 18 characters) shows them: ``$0.00000375 alice · gpt-4o-mini · in 9 · ...``.
    The key is named as ``pouch usage`` names it (``observed:<fingerprint>`` for observed traffic).
    """
    if isinstance(socket := flow.metadata.get("pouch_websocket"), dict):
        return socket.get("story")  # a Responses WebSocket: the story of its responses (addons/websocket.py)
    facts = exchange.snapshot(flow)
    if facts is None:
        return None
    key, endpoint = facts.get("key"), facts.get("endpoint")
    who = key["name"] if key else f"observed:{facts['observed']}" if facts.get("observed") else "no key"
    refused = facts.get("refused")
    if refused:
        return f"refused {refused['kind']} · {who} · {refused['message']}"
    if endpoint and endpoint["metering"] == SIDE:
        return side_path(endpoint["name"], facts.get("local"), who)
    call, result = facts.get("call"), facts.get("usage")
    if not call or not result:
        name = endpoint["name"] if endpoint else flow.request.path
        if local := facts.get("local"):
            status = flow.response.status_code if flow.response else None
            return f"{who} · {name} · answered locally ({local})" + (f" · {status}" if status and status >= 400 else "")
        return f"{who} · {name} · not metered"
    mock = bool(facts.get("mock"))
    # A mock is charged nothing: what it would have cost, said to be a mock before the amount.
    cost = f"mock {Money.usd(result['cost_usd'])}" if mock else str(Money.usd(result["charged_usd"]))
    parts = [f"{cost} {who}", call["model"]]
    tokens = f"in {result['input_tokens']}"
    if result["cached_tokens"]:
        tokens += f" (cached {result['cached_tokens']})"
    tokens += f" · out {result['output_tokens']}"
    if result["reasoning_tokens"]:
        tokens += f" (reasoning {result['reasoning_tokens']})"
    if result.get("tool_calls"):
        tokens += " · tools " + ", ".join(f"{name} x{calls}" for name, calls in result["tool_calls"].items())
    parts.append(tokens)
    if result["outcome"] == "overrun":
        parts.append(f"OVERRUN: reserved {Money.usd(result['reserved_usd'])}")
    if (left := budget_left(facts)) is not None:
        after, in_flight = left
        parts.append(f"left {exact(after)} after settling ({exact(in_flight)} while in flight)")
    parts.append(f"{result['latency_ms']} ms")
    if result["ttft_ms"] is not None and call["stream"]:
        parts.append(f"ttft {result['ttft_ms']} ms")
    if result["outcome"] not in ("ok", "mock"):
        parts.append(result["outcome"].replace("_", " "))
    return " · ".join(parts)


def side_path(name: str, local: str | None, who: str) -> str:
    """What happened to a side path (``pouch.providers.side_paths``): "side path · claude_code
    settings · passed (alice)", "telemetry · event_logging · blocked locally (alice)"."""
    kind, family = ("telemetry", name.removeprefix("telemetry.")) if name.startswith("telemetry.") \
        else ("side path", name)
    if local is None:
        done = "passed"
    elif local == "telemetry blocked":
        done = "blocked locally"
    else:
        done = f"answered locally: {local}"
    return f"{kind} · {family.replace('.', ' ')} · {done} ({who})"


def exact(amount: Money) -> str:
    """Every digit, as the response header has it: "$4.99999625", "-$0.001"."""
    return f"-${(Money(0) - amount).json()}" if amount.pico < 0 else f"${amount.json()}"


def budget_left(facts: dict) -> tuple[Money, Money] | None:
    """(budget left after this request settled, budget left while it was in flight) for a
    settled request of a key with a budget; None otherwise.

    Both are as of the request's admission: "while in flight" is the response header
    ``x-pouch-budget-remaining`` (budget - spent - everything held, this request's worst case
    ``x-pouch-request-reserved`` included), "after settling" is that with the worst case
    given back and what the request was charged taken instead. Other requests of the key
    that settled meanwhile are in neither.
    """
    reservation, result = facts.get("reservation"), facts.get("usage")
    if not reservation or not result or reservation["remaining_usd"] is None:
        return None
    in_flight = Money.usd(reservation["remaining_usd"])
    return in_flight + Money.usd(reservation["amount_usd"]) - Money.usd(result["charged_usd"]), in_flight
