"""The money at a glance, for the admin API's ``/api/overview`` (the dashboard's first page),
and a key's recent requests, for its own page."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

from pouch.domain.money import Money
from pouch.domain.periods import utcnow
from pouch.store import keys as key_store
from pouch.store import ledger
from pouch.store import overview as store

TOP_KEYS = 10
TOP_TEAMS = 10


def _spend(since: datetime) -> dict:
    cost, requests, refused = store.spend_since(since)
    return {"since": since.isoformat(), "cost_usd": Money(cost).json(), "requests": requests, "refused": refused}


def _budgets(now: datetime) -> dict:
    """Each live key's current budget window (its own period), summed."""
    spent = reserved = budget = 0
    live = budgeted = 0
    for key in key_store.all_keys():
        if key.revoked:
            continue
        live += 1
        key_spent, key_reserved = ledger.window_totals(key, now)
        spent += key_spent.pico
        reserved += key_reserved.pico
        if key.budget is not None:
            budgeted += 1
            budget += key.budget.pico
    return {"keys": live, "keys_with_budget": budgeted, "spent_usd": Money(spent).json(),
            "reserved_usd": Money(reserved).json(), "budget_usd": Money(budget).json()}


def overview(days: int = 30, now: datetime | None = None) -> dict:
    now = now or utcnow()
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    first_day = today - timedelta(days=days - 1)
    per_day = {(first_day + timedelta(days=n)).date().isoformat(): {"cost": 0, "requests": 0, "model": {}, "key": {}}
               for n in range(days)}
    per_key: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for by in ("model", "key"):
        for day, group, cost, requests in store.daily(first_day, by):
            entry = per_day.get(day)
            if entry is None:
                continue  # a row stamped after ``now`` (clocks): not one of these days
            entry[by][group] = Money(cost).json()
            if by == "key":
                entry["cost"] += cost
                entry["requests"] += requests
                per_key[group][0] += cost
                per_key[group][1] += requests
    top = sorted(per_key.items(), key=lambda item: (-item[1][0], -item[1][1], item[0]))[:TOP_KEYS]
    return {
        "generated_at": now.isoformat(),
        "days": days,
        "today": _spend(today),
        "month": _spend(today.replace(day=1)),
        "budgets": _budgets(now),
        "daily": [{"day": day, "cost_usd": Money(entry["cost"]).json(), "requests": entry["requests"],
                   "by_model": entry["model"], "by_key": entry["key"]} for day, entry in per_day.items()],
        "top_keys": [{"key": name, "cost_usd": Money(cost).json(), "requests": requests}
                     for name, (cost, requests) in top],
        "top_teams": [{"team": name, "cost_usd": Money(cost).json(), "requests": requests}
                      for name, cost, requests in store.top_teams(first_day, TOP_TEAMS)],
        "refusals": [{"reason": reason, "count": count} for reason, count in store.refusal_reasons(first_day)],
    }


def recent_requests(name_or_id: str, limit: int) -> list[dict]:
    """A key's last ``limit`` requests, newest first: its usage rows (``"kind": "usage"``, the
    fields of ``pouch usage --json``) and refusals (``"kind": "refusal"``, those of ``pouch usage
    --refused --json``) together."""
    key = key_store.get(name_or_id)
    return [{"kind": kind, **row} for _, kind, row in store.recent(key.id, limit)]
