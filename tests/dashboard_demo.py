"""Demo data for the dashboard's screenshots: a team's keys and five weeks of their traffic,
written into the store the way the gateway writes it (a reservation settled with a usage row;
a refusal when a budget or a limit said no). Seeded: the same keys, models and token counts on
every run; the days are counted back from today."""

from __future__ import annotations

import random
from datetime import timedelta

from pouch.domain.money import Money
from pouch.domain.periods import Period, utcnow
from pouch.domain.usage import Usage
from pouch.pricing.price import cost
from pouch.store import keys, ledger, refusals
from tests import pinned_prices

DAYS = 35
# name, attributes, [(model, weight)], requests a day, (input, output) tokens, day it started
TEAM = [
    ("search-api", dict(budget=Money.usd("150"), period=Period.parse("monthly"), rpm=600, tpm=2_000_000,
                        alert_at=(50, 80, 100)),
     [("gpt-4.1", 3), ("gpt-4o-mini", 5)], 34, (3200, 420), 0),
    # Its weekly window began five days ago (the keys were made 40 days back); its budget is set to
    # what it spent there once the traffic is in: exhausted, whatever the day of the month.
    ("support-bot", dict(period=Period.parse("7d"), rpm=120, max_concurrent=8,
                         models=("claude-*",)),
     [("claude-sonnet-4-5", 1)], 22, (2600, 380), 0),
    ("data-pipeline", dict(budget=Money.usd("400"), period=Period.parse("monthly"), tpm=5_000_000),
     [("gemini-2.5-pro", 2), ("gpt-4o", 1)], 16, (9000, 1100), 6),
    ("eval-runner", dict(period=Period.parse("none"), models=("gpt-4o*", "o3")),
     [("o3", 1), ("gpt-4o", 2)], 9, (1800, 2600), 12),
    ("intern-sandbox", dict(budget=Money.usd("1.5"), period=Period.parse("daily"), rpm=20,
                            models=("gpt-4o-mini",)),
     [("gpt-4o-mini", 1)], 40, (900, 300), 20),
]


def seed(seed: int = 14) -> dict[str, str]:
    """Write the team's keys and traffic into the open store; returns each key's secret."""
    rng = random.Random(seed)
    prices = pinned_prices.table()
    now = utcnow()
    start = now - timedelta(days=DAYS)  # day n: the 24 hours before now - (DAYS - n) days
    secrets = {}
    for name, attributes, models, per_day, (prompt, answer), first_day in TEAM:
        key, secrets[name] = keys.create(name, start - timedelta(days=5), **attributes)
        names, weights = zip(*models)
        for day in range(first_day, DAYS + 1):
            weekday = (start + timedelta(days=day)).weekday()
            busy = (0.35 if weekday >= 5 else 1.0) * (0.6 + 0.8 * rng.random()) * (1 + day / DAYS)
            for _ in range(round(per_day * busy)):
                at = start + timedelta(days=day, seconds=-rng.randrange(0, 24 * 3600))
                if at >= now:
                    continue
                model = rng.choices(names, weights)[0]
                usage = Usage(input_tokens=int(prompt * rng.uniform(0.3, 2.2)),
                              output_tokens=int(answer * rng.uniform(0.2, 2.0)))
                charge = cost(prices.resolve(model), usage)
                row = {"ts": at, "key": key.id, "key_name": name, "provider": _provider(model), "model": model,
                       "endpoint": "chat.completions", "status": 200, "streamed": rng.random() < 0.6,
                       "input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
                       "latency_ms": rng.randrange(300, 9000)}
                held = ledger.reserve(key.id, key.window(at), charge, at, owner="demo", hold=timedelta(hours=1),
                                      provider=row["provider"], model=model, endpoint=row["endpoint"])
                if isinstance(held, ledger.Reservation):
                    ledger.finish(held.id, charge, row)
                else:
                    _refused(key, at, model, 429, "insufficient_quota",
                             f"key '{name}' has spent its budget for this period")
            if name == "intern-sandbox" and rng.random() < 0.5:
                _refused(key, start + timedelta(days=day, hours=-3), "gpt-4o", 403, "model_not_allowed",
                         f"key '{name}' may not use model 'gpt-4o' (allowed: gpt-4o-mini)")
            if name == "search-api" and rng.random() < 0.3:
                _refused(key, start + timedelta(days=day, hours=-5), "gpt-4.1", 429, "rate_limit_exceeded",
                         "rate limit: 600 requests per minute")
    for day in range(0, DAYS, 4):
        _refused(None, start + timedelta(days=day, hours=-2), "gpt-4o", 401, "invalid_api_key",
                 "unknown API key: use a pouch key (see `pouch keys list`)")
    bot = keys.get("support-bot")
    keys.update(bot, now, budget=ledger.window_totals(bot, now)[0])
    for minutes in (50, 31, 12, 4):
        _refused(bot, now - timedelta(minutes=minutes), "claude-sonnet-4-5", 429, "insufficient_quota",
                 "key 'support-bot' has spent its budget for this period (resets in 2 days)")
    keys.create("old-prototype", start - timedelta(days=5), budget=Money.usd("20"))
    keys.revoke(keys.get("old-prototype"), start)
    return secrets


def _provider(model: str) -> str:
    return "anthropic" if model.startswith("claude") else "gemini" if model.startswith("gemini") else "openai"


def _refused(key, at, model, status, reason, message) -> None:
    if at >= utcnow():
        return
    refusals.record([{"ts": at, "key": key.id if key else None, "provider": _provider(model), "model": model,
                      "endpoint": "chat.completions", "status": status, "reason": reason, "message": message}])
