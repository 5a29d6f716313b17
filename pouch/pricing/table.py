"""The price table: the shipped prices overlaid by the operator's, each model's dated entries,
and which entry a name sent by a client resolves to (``pouch.pricing.names``)."""

from __future__ import annotations

import dataclasses
import datetime
import functools
import importlib.resources
import json
from collections.abc import Iterable, Iterator
from decimal import Decimal
from pathlib import Path

from pouch.domain.money import Money
from pouch.home import home as pouch_home
from pouch.pricing.names import OPEN_WEIGHTS, OPENROUTER_PASSES_THROUGH, OPENROUTER_VENDORS, candidate_names
from pouch.pricing.price import Price, Retirement, ToolFee
from pouch.pricing.price_file import Entry, parse_prices, parse_tool_fees, read_document

Versions = tuple[Entry, ...]
_ALWAYS = datetime.datetime.min.replace(tzinfo=datetime.UTC)


class PriceTable:
    """Prices by model name. ``resolve`` runs on every request, so its answers are cached."""

    def __init__(self, prices: Iterable[Entry], tool_fees: Iterable[ToolFee] = (), overrides: Iterable[Entry] = ()):
        fees: dict[str, dict[str, Money]] = {}
        for fee in tool_fees:  # later entries (the override file) replace earlier ones
            fees.setdefault(fee.provider, {})[fee.tool] = fee.per_call
        self.tool_fees = {provider: dict(by_tool) for provider, by_tool in fees.items()}
        versions = _by_name(prices, self.tool_fees)
        for key, replacing in _by_name(overrides, self.tool_fees).items():
            start = min(map(effective_from, replacing))  # an override holds from its first date on
            versions[key] = [e for e in versions.get(key, []) if effective_from(e) < start] + replacing
        self._by_key: dict[tuple[str, str], Versions] = {
            key: tuple(sorted(found, key=effective_from)) for key, found in versions.items()}
        # A name several providers price resolves, without a provider, to the dearest:
        # reserving too much is safe, billing too little is not.
        self._by_name: dict[str, Versions] = {}
        for (_, name), found in self._by_key.items():
            known = self._by_name.get(name)
            if known is None or _rank(found) > _rank(known):
                self._by_name[name] = found
        # Bounded: model names come from clients.
        self._cached_resolve = functools.lru_cache(maxsize=4096)(self._resolve)

    @classmethod
    def load(cls, override: Path | None = None) -> PriceTable:
        shipped = importlib.resources.files(__package__).joinpath("prices.json")
        document = json.loads(shipped.read_text(encoding="utf-8"), parse_float=Decimal)
        prices = parse_prices(document, "shipped prices.json")
        fees = parse_tool_fees(document, "shipped prices.json")
        overrides: list[Entry] = []
        if override is not None:
            document = read_document(override)
            overrides = parse_prices(document, str(override))
            fees += parse_tool_fees(document, str(override))
        return cls(prices, fees, overrides)

    @classmethod
    def default(cls, home: Path | None = None) -> PriceTable:
        """The shipped table plus ``prices.json`` in ``home`` ($POUCH_HOME, default ./data), if there."""
        home = home if home is not None else pouch_home()
        override = home / "prices.json"
        return cls.load(override if override.exists() else None)

    def resolve(self, model: str, provider: str | None = None, at: datetime.datetime | None = None) -> Price | None:
        """The price of ``model`` (a dated snapshot gets its family's) in effect at ``at``
        (default: now), or None if unknown or retired by then."""
        entry = self.lookup(model, provider, at)
        return entry if isinstance(entry, Price) else None

    def lookup(self, model: str, provider: str | None = None,
               at: datetime.datetime | None = None) -> Price | Retirement | None:
        """What the table says of ``model`` at ``at``: its price, its retirement, or nothing."""
        versions = self._cached_resolve(model, provider)
        return None if versions is None else in_effect(versions, at)

    def versions(self, model: str, provider: str | None = None) -> Versions:
        """Every dated entry ``model`` resolves to, oldest first."""
        return self._cached_resolve(model, provider) or ()

    def _resolve(self, model: str, provider: str | None) -> Versions | None:
        names = candidate_names(model)
        if provider:
            for name in names:
                if found := self._by_key.get((provider.lower(), name)):
                    return found
            if provider.lower() == "openrouter":
                return self._through_openrouter(model)
        for name in names:
            if found := self._by_name.get(name):
                if provider and _provider(found) != provider.lower():
                    return _priced_as(found, f"no {provider} price for it; priced as {_provider(found)}'s "
                                             f"{found[-1].model}, the dearest seller of that name")
                return found
        return None

    def _through_openrouter(self, model: str) -> Versions | None:
        """``anthropic/claude-sonnet-4.5`` on OpenRouter: the vendor's own entry, never another host's."""
        vendor, _, name = model.strip().lower().partition("/")
        provider = OPENROUTER_VENDORS.get(vendor)
        if not provider or not name or OPEN_WEIGHTS.match(name):
            return None
        for candidate in candidate_names(name):
            if found := self._by_key.get((provider, candidate)):
                return _priced_as(found, f"{OPENROUTER_PASSES_THROUGH}: priced as {provider}'s {found[-1].model}")
        return None

    def __iter__(self) -> Iterator[Price]:
        """The prices in effect now, one per model (retired models left out)."""
        now = _now()
        current = {in_effect(found, now) for key, found in self._by_key.items() if key[1] == found[0].model.lower()}
        return iter(sorted((p for p in current if isinstance(p, Price)), key=lambda p: (p.provider, p.model)))

    def entries(self) -> Iterator[Entry]:
        """Every entry of the table, each dated version and retirement once."""
        seen: dict[int, Entry] = {}
        for found in self._by_key.values():
            seen.update((id(e), e) for e in found)
        return iter(sorted(seen.values(), key=lambda e: (e.provider, e.model.lower(), effective_from(e))))

    def __len__(self) -> int:
        return sum(1 for _ in self)


def in_effect(versions: Versions, at: datetime.datetime | None = None) -> Entry | None:
    """The entry in effect at ``at``: the latest ``effective`` not after it. Before the first
    date a model's first price applies (a price learnt today also prices yesterday's request);
    a model known only by its retirement has nothing before it."""
    at = at or _now()
    chosen = None
    for entry in versions:
        if effective_from(entry) <= at:
            chosen = entry
    if chosen is None and isinstance(versions[0], Price):
        chosen = versions[0]
    return chosen


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def effective_from(entry: Entry) -> datetime.datetime:
    """When ``entry`` starts to apply; an undated entry, always."""
    return entry.effective or _ALWAYS


def _by_name(entries: Iterable[Entry], fees: dict[str, dict[str, Money]]) -> dict[tuple[str, str], list[Entry]]:
    grouped: dict[tuple[str, str], list[Entry]] = {}
    for entry in entries:
        if isinstance(entry, Price) and entry.provider in fees:
            entry = dataclasses.replace(entry, tool_fees=tuple(sorted(fees[entry.provider].items())))
        for name in (entry.model, *entry.aliases):
            grouped.setdefault((entry.provider, name.lower()), []).append(entry)
    return grouped


def _rank(versions: Versions) -> tuple:
    """How dear a model's latest price is; a model known only as retired ranks last."""
    prices = [e for e in versions if isinstance(e, Price)]
    return (1, prices[-1].highest_output, prices[-1].input) if prices else (0,)


def _provider(versions: Versions) -> str:
    return versions[-1].provider


def _priced_as(versions: Versions, why: str) -> Versions:
    return tuple(dataclasses.replace(e, priced_as=why) if isinstance(e, Price) else e for e in versions)
