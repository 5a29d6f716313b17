"""The price file format, shared by the shipped ``prices.json`` and the operator's
``$POUCH_HOME/prices.json``. Prices are USD per 1M tokens, written as exact decimal strings::

    {"models": [
      {"model": "gpt-4o", "provider": "openai", "mode": "chat",
       "input": "2.50", "cached_input": "1.25", "output": "10.00",
       "max_input_tokens": 128000, "max_output_tokens": 16384,
       "source": "https://openai.com/api/pricing", "as_of": "2026-11-27"}
    ]}

Required: ``model``, ``provider``, ``input``, ``source``, ``as_of`` (ISO date), and ``output``
unless ``mode`` is ``embedding`` (the default mode is ``chat``). Optional: ``cached_input``
(cache reads), ``cache_write_5m`` / ``cache_write_1h`` (cache writes with the default and the
extended lifetime: Anthropic's 5 minutes / 1 hour, OpenAI's default / 12 hours), ``reasoning``,
``max_input_tokens``, ``max_output_tokens``, and ``tiers``: long-context prices such as
``[{"above_input_tokens": 200000, "input": "2.50", "output": "15.00"}]``, which apply when a
request's input tokens (cache reads and writes included) exceed the threshold; a tier replaces
only the prices it names. Leave out a price the provider does not charge separately: cache reads
and writes then cost the input price, reasoning tokens the output price.

Also optional on every entry:

- ``from``: the date (midnight UTC) or instant the entry applies from. A model may have several
  entries with different ``from``; a request is priced by the one in effect when it was made.
- ``aliases``: other names of the same model at the same price (``mistral-large-2512`` for
  ``mistral-large-latest``).
- ``per_request``: USD every request pays on top of its tokens (``"0.01"``: a search model
  that runs a web search on each request).
- ``differs_from_map``: ``{"cached_input": "why, with the source"}`` — where this entry
  deliberately differs from the public price map (``pouch prices check``).

An entry with ``"retired": "2026-10-23"`` (and ``"use": "the replacement"``) instead of prices
says the provider stopped serving the model that day: from then on requests for it are refused
with the date and the replacement, not sent to fail upstream.

An override entry replaces the shipped entries of its provider and model from its ``from`` on
(without ``from``: all of them); shipped entries still price what came before. A model the
shipped table lacks is added.

Paid server-side tools are priced per call, in USD, in a ``tools`` list beside ``models``::

    "tools": [{"provider": "openai", "tool": "web_search", "per_call": "0.01",
               "source": "https://platform.openai.com/docs/pricing#built-in-tools", "as_of": "2026-11-27"}]

Every model of that provider gets the fee (``Price.tool_fees``); ``cost`` adds calls x fee. A
tool with no fee entry is one pouch cannot price: the providers refuse requests that use it
unless the operator allows unmetered use (``pouch_unmetered=allow``).
"""

from __future__ import annotations

import datetime
import json
from decimal import Decimal
from pathlib import Path

from pouch.domain.errors import InvalidInput
from pouch.domain.money import ZERO, Money
from pouch.pricing.price import PRICE_FIELDS, Price, Retirement, Tier, ToolFee

_COMMON_FIELDS = {"model", "provider", "source", "as_of", "from", "aliases", "differs_from_map"}
_ENTRY_FIELDS = _COMMON_FIELDS | {"mode", "tiers", "max_input_tokens", "max_output_tokens", "per_request",
                                  *PRICE_FIELDS}
_RETIRED_FIELDS = _COMMON_FIELDS - {"from"} | {"retired", "use"}
_TIER_FIELDS = {"above_input_tokens", *PRICE_FIELDS}
_TOOL_FIELDS = {"provider", "tool", "per_call", "source", "as_of"}

Entry = Price | Retirement


def read_document(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"), parse_float=Decimal)
    except OSError as e:
        raise InvalidInput(f"cannot read price file {path}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise InvalidInput(f"price file {path} is not valid JSON: {e}") from None


def read_prices(path: Path) -> list[Entry]:
    """Read and check a price file; InvalidInput names the file and the offending entry."""
    document = read_document(path)
    prices = parse_prices(document, str(path))
    parse_tool_fees(document, str(path))  # checked too: a typo must not drop a fee silently
    return prices


def parse_instant(text: object) -> datetime.datetime:
    """``2026-12-01`` (midnight UTC) or an ISO date-time (UTC unless it says otherwise)."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"expected an ISO date or date-time such as \"2026-12-01\", not {text!r}")
    text = text.strip()
    if len(text) == 10:
        return datetime.datetime.combine(datetime.date.fromisoformat(text), datetime.time(), datetime.UTC)
    moment = datetime.datetime.fromisoformat(text)
    return moment.replace(tzinfo=datetime.UTC) if moment.tzinfo is None else moment.astimezone(datetime.UTC)


def parse_tool_fees(document: object, origin: str) -> list[ToolFee]:
    """The ``tools`` list of a decoded price file (absent: none)."""
    entries = document.get("tools", []) if isinstance(document, dict) else []
    if not isinstance(entries, list):
        raise InvalidInput(f'price file {origin}: "tools" is a list')
    fees, seen = [], set()
    for index, entry in enumerate(entries):
        where = f"price file {origin}, tools[{index}]"
        try:
            fields = _check_fields(entry, _TOOL_FIELDS)
            for name in _TOOL_FIELDS - {"per_call"}:
                if not isinstance(fields.get(name), str) or not fields[name].strip():
                    raise ValueError(f"{name} is required (a non-empty string)")
            fee = ToolFee(fields["provider"].strip().lower(), fields["tool"].strip(), _fee(fields.get("per_call")),
                          fields["source"], datetime.date.fromisoformat(fields["as_of"]))
        except (ValueError, TypeError, ArithmeticError) as e:
            raise InvalidInput(f"{where} {json.dumps(entry, default=str)[:200]}: {e}") from None
        if (fee.provider, fee.tool) in seen:
            raise InvalidInput(f"{where}: {fee.provider} tool {fee.tool!r} is listed twice")
        seen.add((fee.provider, fee.tool))
        fees.append(fee)
    return fees


def _fee(value: object, name: str = "per_call") -> Money:
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise ValueError(f'{name} is USD as a decimal string such as "0.01", not {value!r}')
    try:
        fee = Money.usd(value)
    except ArithmeticError:
        raise ValueError(f"{name} is not a number: {value!r}") from None
    if fee.pico < 0:
        raise ValueError(f"{name} is negative")
    return fee


def parse_prices(document: object, origin: str) -> list[Entry]:
    """Check a decoded price file (the format in the module docstring); ``origin`` names it in errors."""
    if not isinstance(document, dict) or not isinstance(document.get("models"), list):
        raise InvalidInput(f'price file {origin}: expected an object {{"models": [...]}}')
    entries, seen = [], set()
    for index, entry in enumerate(document["models"]):
        where = f"price file {origin}, models[{index}]"
        try:
            parsed = _parse_retirement(entry) if isinstance(entry, dict) and "retired" in entry else _parse_entry(entry)
        except (ValueError, TypeError, ArithmeticError) as e:
            raise InvalidInput(f"{where} {json.dumps(entry, default=str)[:200]}: {e}") from None
        for name in (parsed.model, *parsed.aliases):
            key = (parsed.provider, name.lower(), parsed.effective)
            if key in seen:
                raise InvalidInput(f"{where}: {parsed.provider} model {name!r} is listed twice"
                                   + (f" from {parsed.effective:%Y-%m-%d %H:%M}" if parsed.effective else ""))
            seen.add(key)
        entries.append(parsed)
    return entries


def _parse_entry(entry: object) -> Price:
    fields = _check_fields(entry, _ENTRY_FIELDS)
    mode = fields.get("mode", "chat")
    if mode not in ("chat", "embedding"):
        raise ValueError(f'mode is "chat" or "embedding", not {mode!r}')
    _check_strings(fields, ("model", "provider", "source", "as_of"))
    if "input" not in fields or (mode == "chat" and "output" not in fields):
        raise ValueError("input and output prices are required" if mode == "chat" else "input price is required")
    tiers = fields.get("tiers", [])
    if not isinstance(tiers, list):
        raise ValueError("tiers is a list")
    return Price(
        model=fields["model"].strip(),
        provider=fields["provider"].strip().lower(),
        mode=mode,
        source=fields["source"],
        as_of=datetime.date.fromisoformat(fields["as_of"]),
        tiers=tuple(sorted(map(_parse_tier, tiers), key=lambda t: t.above_input_tokens)),
        max_input_tokens=_count(fields.get("max_input_tokens"), "max_input_tokens"),
        max_output_tokens=_count(fields.get("max_output_tokens"), "max_output_tokens"),
        effective=_instant(fields["from"], "from") if "from" in fields else None,
        aliases=_aliases(fields),
        differs_from_map=_differences(fields),
        per_request=_fee(fields["per_request"], "per_request") if "per_request" in fields else None,
        **({"output": ZERO} | _prices(fields)),  # embeddings produce no output tokens
    )


def _parse_retirement(entry: dict) -> Retirement:
    fields = _check_fields(entry, _RETIRED_FIELDS)
    _check_strings(fields, ("model", "provider", "source", "as_of"))
    if "use" in fields:
        _check_strings(fields, ("use",))
    return Retirement(model=fields["model"].strip(), provider=fields["provider"].strip().lower(),
                      effective=_instant(fields["retired"], "retired"), use=fields.get("use"),
                      source=fields["source"], as_of=datetime.date.fromisoformat(fields["as_of"]),
                      aliases=_aliases(fields), differs_from_map=_differences(fields))


def _instant(value: object, name: str) -> datetime.datetime:
    try:
        return parse_instant(value)
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from None


def _check_strings(fields: dict, names: tuple[str, ...]) -> None:
    for name in names:
        if not isinstance(fields.get(name), str) or not fields[name].strip():
            raise ValueError(f"{name} is required (a non-empty string)")


def _aliases(fields: dict) -> tuple[str, ...]:
    aliases = fields.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) and a.strip() for a in aliases):
        raise ValueError("aliases is a list of model names")
    return tuple(a.strip() for a in aliases)


def _differences(fields: dict) -> tuple[tuple[str, str], ...]:
    differences = fields.get("differs_from_map", {})
    if not isinstance(differences, dict) or not all(
            isinstance(why, str) and why.strip() for why in differences.values()):
        raise ValueError('differs_from_map is an object {"field": "why, with the source"}')
    return tuple(sorted(differences.items()))


def _parse_tier(entry: object) -> Tier:
    fields = _check_fields(entry, _TIER_FIELDS)
    threshold = _count(fields.get("above_input_tokens"), "above_input_tokens")
    if threshold is None or len(fields) < 2:
        raise ValueError("a tier has above_input_tokens and at least one price")
    return Tier(above_input_tokens=threshold, **_prices(fields))


def _check_fields(entry: object, allowed: set[str]) -> dict:
    if not isinstance(entry, dict):
        raise ValueError("expected an object")
    if unknown := sorted(set(entry) - allowed):
        raise ValueError(f"unknown field(s) {', '.join(unknown)}")  # a typo would silently drop a price
    return entry


def _prices(fields: dict) -> dict[str, Money]:
    return {name: _money(fields[name], name) for name in PRICE_FIELDS if name in fields}


def _money(value: object, name: str) -> Money:
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise ValueError(f'{name} is USD per 1M tokens as a decimal string such as "2.50", not {value!r}')
    try:
        price = Money.per_million(value)
    except ArithmeticError:  # decimal's InvalidOperation: not a number at all
        raise ValueError(f"{name} is not a number: {value!r}") from None
    if price.pico < 0:
        raise ValueError(f"{name} is negative")
    return price


def _count(value: object, name: str) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
        raise ValueError(f"{name} is a positive whole number, not {value!r}")
    return value
