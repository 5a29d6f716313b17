"""Model prices: the shipped table, the operator's overrides, name resolution, and the cost function.

The shipped ``prices.json`` and the operator's ``$POUCH_HOME/prices.json`` share one format.
Prices are USD per 1M tokens, written as exact decimal strings::

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
and writes then cost the input price, reasoning tokens the output price. An override entry
replaces the shipped entry with the same provider and model, or adds a model.

Paid server-side tools are priced per call, in USD, in a ``tools`` list beside ``models``::

    "tools": [{"provider": "openai", "tool": "web_search", "per_call": "0.01",
               "source": "https://platform.openai.com/docs/pricing#built-in-tools", "as_of": "2026-11-27"}]

Every model of that provider gets the fee (``Price.tool_fees``); ``cost`` adds calls x fee. A
tool with no fee entry is one pouch cannot price: the providers refuse requests that use it
unless the operator allows unmetered use (``pouch_unmetered=allow``).
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import importlib.resources
import json
import os
import re
from collections.abc import Iterable, Iterator
from decimal import Decimal
from pathlib import Path

from pouch.domain.errors import InvalidInput
from pouch.domain.money import ZERO, Money
from pouch.domain.usage import Usage

PRICE_FIELDS = ("input", "cached_input", "cache_write_5m", "cache_write_1h", "output", "reasoning")
_ENTRY_FIELDS = {"model", "provider", "mode", "tiers", "max_input_tokens", "max_output_tokens", "source", "as_of",
                 "from"}
_TIER_FIELDS = {"above_input_tokens", *PRICE_FIELDS}
_TOOL_FIELDS = {"provider", "tool", "per_call", "source", "as_of"}

# Only these prefixes are stripped: "openrouter/..." names another seller, priced on its own.
_PREFIXES = frozenset({"openai", "anthropic", "gemini", "google", "vertex_ai", "models", "publishers"})
# Snapshot suffixes: -2024-08-06 (OpenAI), -20250929 and @20250929 (Anthropic, Vertex),
# -05-06 (Gemini previews), -latest. Not "-preview": previews are priced apart from GA models.
_SNAPSHOT = re.compile(r"(-20\d\d-\d\d-\d\d|[-@]20\d{6}|-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])|-latest)$")


@dataclasses.dataclass(frozen=True, slots=True)
class Tier:
    """Long-context prices, for requests with more than ``above_input_tokens`` input tokens."""

    above_input_tokens: int
    input: Money | None = None
    cached_input: Money | None = None
    cache_write_5m: Money | None = None
    cache_write_1h: Money | None = None
    output: Money | None = None
    reasoning: Money | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Price:
    """Per-token prices of one model; ``None``: no separate price (see the module docstring)."""

    model: str
    provider: str
    mode: str
    input: Money
    output: Money
    source: str
    as_of: datetime.date
    cached_input: Money | None = None
    cache_write_5m: Money | None = None
    cache_write_1h: Money | None = None
    reasoning: Money | None = None
    tiers: tuple[Tier, ...] = ()  # ascending thresholds
    max_input_tokens: int | None = None
    max_output_tokens: int | None = None
    tool_fees: tuple[tuple[str, Money], ...] = ()  # (tool, fee per call) for this provider's tools
    effective: datetime.datetime | None = None  # in effect from this instant (UTC); None: always

    def of_provider(self, provider: str) -> Price:
        """This price for a request to ``provider``: a model priced only under another provider
        (a name several sell) keeps its token prices, but that provider's tool fees say nothing
        about what this one bills for its tools."""
        return self if provider == self.provider or not self.tool_fees else dataclasses.replace(self, tool_fees=())

    def tool_fee(self, tool: str) -> Money | None:
        """The fee of one call of ``tool``; None: pouch has no price for it."""
        return next((fee for name, fee in self.tool_fees if name == tool), None)

    @property
    def dearest_input(self) -> Money:
        """The most one input token can cost, cache writes and every tier included: what a
        token of context re-read by a server-side tool round is reserved at."""
        levels = [self, *self.tiers]
        return max(p for level in levels for p in (level.input, level.cache_write_5m, level.cache_write_1h)
                   if p is not None)

    def for_input(self, input_tokens: int) -> Price:
        """The prices that apply to a request with this many input tokens (tiers layered)."""
        changes = {}
        for tier in self.tiers:
            if input_tokens > tier.above_input_tokens:
                changes |= {f: getattr(tier, f) for f in PRICE_FIELDS if getattr(tier, f) is not None}
        return dataclasses.replace(self, **changes) if changes else self

    @property
    def highest_output(self) -> Money:
        """The most any output or reasoning token can cost, in any tier: for worst-case reservations."""
        levels = [self, *self.tiers]
        return max(p for level in levels for p in (level.output, level.reasoning) if p is not None)


def cost(price: Price, usage: Usage) -> Money:
    """What a request cost, exactly, in the tier its total input tokens select."""
    p = price.for_input(usage.input_tokens)
    return (
        p.input * usage.uncached_input_tokens
        + _or(p.cached_input, p.input) * usage.cached_tokens
        + _or(p.cache_write_5m, p.input) * usage.cache_write_5m_tokens
        + _or(p.cache_write_1h, p.input) * usage.cache_write_1h_tokens
        + p.output * usage.visible_output_tokens
        + _or(p.reasoning, p.output) * usage.reasoning_tokens
        + sum((fee * calls for fee, calls in _tool_charges(price, usage)), ZERO)
    )


def _tool_charges(price: Price, usage: Usage) -> Iterator[tuple[Money, int]]:
    for tool, calls in usage.tool_calls:
        fee = price.tool_fee(tool)
        if fee is not None:  # a tool without a fee was let through unmetered by the operator
            yield fee, calls


def _or(price: Money | None, fallback: Money) -> Money:
    # Not `price or fallback`: an operator's explicit "0" is a price, and Money(0) is falsy.
    return fallback if price is None else price


class PriceTable:
    """Prices by model name. ``resolve`` runs on every request, so its answers are cached."""

    def __init__(self, prices: Iterable[Price], tool_fees: Iterable[ToolFee] = (), overrides: Iterable[Price] = ()):
        fees: dict[str, dict[str, Money]] = {}
        for fee in tool_fees:  # later entries (the override file) replace earlier ones
            fees.setdefault(fee.provider, {})[fee.tool] = fee.per_call
        self.tool_fees = {provider: dict(by_tool) for provider, by_tool in fees.items()}
        versions: dict[tuple[str, str], list[Price]] = {}
        for layer in (prices, overrides):
            replaced: set[tuple[str, str]] = set()
            for price in layer:
                if price.provider in fees:
                    price = dataclasses.replace(price, tool_fees=tuple(sorted(fees[price.provider].items())))
                key = (price.provider, price.model.lower())
                if key not in replaced:  # an override replaces every shipped entry of its model
                    versions[key], replaced = [], replaced | {key}
                versions[key].append(price)
        self._by_key: dict[tuple[str, str], tuple[Price, ...]] = {
            key: tuple(sorted(found, key=_effective_order)) for key, found in versions.items()}
        # A name several providers price resolves, without a provider, to the dearest:
        # reserving too much is safe, billing too little is not.
        self._by_name: dict[str, tuple[Price, ...]] = {}
        for found in self._by_key.values():
            name, latest = found[-1].model.lower(), found[-1]
            known = self._by_name.get(name)
            if known is None or (latest.highest_output, latest.input) > (known[-1].highest_output, known[-1].input):
                self._by_name[name] = found
        # Bounded: model names come from clients.
        self._cached_resolve = functools.lru_cache(maxsize=4096)(self._resolve)

    @classmethod
    def load(cls, override: Path | None = None) -> PriceTable:
        shipped = importlib.resources.files(__package__).joinpath("prices.json")
        document = json.loads(shipped.read_text(encoding="utf-8"), parse_float=Decimal)
        prices = parse_prices(document, "shipped prices.json")
        fees = parse_tool_fees(document, "shipped prices.json")
        overrides: list[Price] = []
        if override is not None:
            document = read_document(override)
            overrides = parse_prices(document, str(override))
            fees += parse_tool_fees(document, str(override))
        return cls(prices, fees, overrides)

    @classmethod
    def default(cls, home: Path | None = None) -> PriceTable:
        """The shipped table plus ``prices.json`` in ``home`` ($POUCH_HOME, default ./data), if there."""
        home = home if home is not None else Path(os.environ.get("POUCH_HOME", "data"))
        override = home / "prices.json"
        return cls.load(override if override.exists() else None)

    def resolve(self, model: str, provider: str | None = None, at: datetime.datetime | None = None) -> Price | None:
        """The price of ``model`` (a dated snapshot gets its family's) in effect at ``at``
        (default: now), or None if unknown."""
        versions = self._cached_resolve(model, provider)
        return None if versions is None else in_effect(versions, at)

    def versions(self, model: str, provider: str | None = None) -> tuple[Price, ...]:
        """Every dated entry ``model`` resolves to, oldest first."""
        return self._cached_resolve(model, provider) or ()

    def _resolve(self, model: str, provider: str | None) -> tuple[Price, ...] | None:
        names = _candidate_names(model)
        if provider:
            for name in names:
                if found := self._by_key.get((provider.lower(), name)):
                    return found
        for name in names:
            if found := self._by_name.get(name):
                return found
        return None

    def __iter__(self) -> Iterator[Price]:
        """The prices in effect now, one per model."""
        now = _now()
        return iter(sorted((in_effect(found, now) for found in self._by_key.values()),
                           key=lambda p: (p.provider, p.model)))

    def __len__(self) -> int:
        return len(self._by_key)


def in_effect(versions: tuple[Price, ...], at: datetime.datetime | None = None) -> Price:
    """The entry in effect at ``at``: the latest ``effective`` not after it; before the first, the first."""
    at = at or _now()
    chosen = versions[0]
    for price in versions[1:]:
        if price.effective is not None and price.effective <= at:
            chosen = price
    return chosen


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _effective_order(price: Price) -> datetime.datetime:
    return price.effective or datetime.datetime.min.replace(tzinfo=datetime.UTC)


def parse_instant(text: object) -> datetime.datetime:
    """``2026-12-01`` (midnight UTC) or an ISO date-time (UTC unless it says otherwise)."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"from is an ISO date or date-time such as \"2026-12-01\", not {text!r}")
    text = text.strip()
    if len(text) == 10:
        return datetime.datetime.combine(datetime.date.fromisoformat(text), datetime.time(), datetime.UTC)
    moment = datetime.datetime.fromisoformat(text)
    return moment.replace(tzinfo=datetime.UTC) if moment.tzinfo is None else moment.astimezone(datetime.UTC)


def _candidate_names(model: str) -> list[str]:
    """Exact name, then without provider prefixes, then without a snapshot suffix. Never a prefix match."""
    name = model.strip().lower()
    names = [name]
    head, _, rest = name.partition("/")
    while rest and head in _PREFIXES:
        name = rest
        head, _, rest = name.partition("/")
    names += [name, _SNAPSHOT.sub("", name)]
    return list(dict.fromkeys(names))


def read_document(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"), parse_float=Decimal)
    except OSError as e:
        raise InvalidInput(f"cannot read price file {path}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise InvalidInput(f"price file {path} is not valid JSON: {e}") from None


def read_prices(path: Path) -> list[Price]:
    """Read and check a price file; InvalidInput names the file and the offending entry."""
    document = read_document(path)
    prices = parse_prices(document, str(path))
    parse_tool_fees(document, str(path))  # checked too: a typo must not drop a fee silently
    return prices


@dataclasses.dataclass(frozen=True, slots=True)
class ToolFee:
    """What one call of a provider's paid server-side tool costs."""

    provider: str
    tool: str
    per_call: Money
    source: str
    as_of: datetime.date


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


def _fee(value: object) -> Money:
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise ValueError(f'per_call is USD per call as a decimal string such as "0.01", not {value!r}')
    try:
        fee = Money.usd(value)
    except ArithmeticError:
        raise ValueError(f"per_call is not a number: {value!r}") from None
    if fee.pico < 0:
        raise ValueError("per_call is negative")
    return fee


def parse_prices(document: object, origin: str) -> list[Price]:
    """Check a decoded price file (the format in the module docstring); ``origin`` names it in errors."""
    if not isinstance(document, dict) or not isinstance(document.get("models"), list):
        raise InvalidInput(f'price file {origin}: expected an object {{"models": [...]}}')
    prices, seen = [], set()
    for index, entry in enumerate(document["models"]):
        where = f"price file {origin}, models[{index}]"
        try:
            price = _parse_entry(entry)
        except (ValueError, TypeError, ArithmeticError) as e:
            raise InvalidInput(f"{where} {json.dumps(entry, default=str)[:200]}: {e}") from None
        key = (price.provider, price.model.lower(), price.effective)
        if key in seen:
            raise InvalidInput(f"{where}: {price.provider} model {price.model!r} is listed twice"
                               + (f" from {price.effective:%Y-%m-%d %H:%M}" if price.effective else ""))
        seen.add(key)
        prices.append(price)
    return prices


def _parse_entry(entry: object) -> Price:
    fields = _check_fields(entry, _ENTRY_FIELDS | set(PRICE_FIELDS))
    mode = fields.get("mode", "chat")
    if mode not in ("chat", "embedding"):
        raise ValueError(f'mode is "chat" or "embedding", not {mode!r}')
    for name in ("model", "provider", "source", "as_of"):
        if not isinstance(fields.get(name), str) or not fields[name].strip():
            raise ValueError(f"{name} is required (a non-empty string)")
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
        effective=parse_instant(fields["from"]) if "from" in fields else None,
        **({"output": ZERO} | _prices(fields)),  # embeddings produce no output tokens
    )


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
