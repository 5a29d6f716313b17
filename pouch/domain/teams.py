"""Teams: a budget, limits and a model allowlist that every key in the team shares.

A key's request must fit its key AND its team: both allowlists, both sets of limits, both
budgets (reserved in one transaction, ``pouch.store.ledger``)."""

from __future__ import annotations

import dataclasses
import fnmatch
from datetime import datetime

from pouch.domain.money import Money
from pouch.domain.periods import Period, Window


@dataclasses.dataclass(frozen=True, slots=True)
class Team:
    id: int
    name: str
    created_at: datetime
    anchor: datetime  # start of the first budget window
    budget: Money | None = None
    period: Period = Period("none")
    rpm: int | None = None
    tpm: int | None = None
    max_concurrent: int | None = None
    models: tuple[str, ...] = ()

    def allows_model(self, model: str) -> bool:
        return not self.models or any(fnmatch.fnmatchcase(model, glob) for glob in self.models)

    def window(self, now: datetime) -> Window:
        return self.period.window(now, self.anchor)

    @property
    def scope(self) -> str:
        return f"team:{self.id}"
