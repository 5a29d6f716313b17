"""Checks after the fact: once a run has settled, the limits must have let go of what ended.
Each sends a few well-formed probes for a key and judges how many were admitted.
"""

from __future__ import annotations

import asyncio
import random
import time

from pouch.pricing import reserve
from pouch.store.database import UsageRow

from . import expect, plan
from .checks import WINDOW, RunKey, Violation
from .kinds import MAX_TOKENS, PRICES
from .send import Outcome, fire

TOKEN_PROBES = 8  # at most this many tokens/min probes per key


def check_slots_freed(env, rng: random.Random, index: int, keys: dict[str, RunKey]) -> list[Violation]:
    """5: once everything has settled, a key with a concurrency limit admits that many
    simultaneous requests again (no slot is held by a request that has ended)."""
    found = []
    for key in keys.values():
        if not key.spec.max_concurrent or only_limit(key.spec) != "max_concurrent":
            continue
        probes = [plan.plan_request(rng, f"probe{i}", index, key.spec, key.secret, env.gateway, fault="none")
                  for i in range(key.spec.max_concurrent)]
        outcomes = asyncio.run(fire(env.gateway, probes, len(probes)))
        admitted = sum(o.result == "response" for o in outcomes)
        if admitted < len(probes):
            found.append(Violation(5, key.name, f"after settling, {admitted} of {len(probes)} simultaneous "
                                   f"requests admitted: {[(o.result, o.reason, o.problem) for o in outcomes]}"))
    return found


def check_tokens_settled(env, rng: random.Random, index: int, keys: dict[str, RunKey],
                         outcomes: list[Outcome]) -> tuple[list[Violation], dict[str, int]]:
    """5: tokens/min counts a request's worst case only until it is measured. Once everything has
    settled, a tpm key admits as many more worst cases at once as its window has room for,
    next to the most its requests of the last minute can still count. Returns the violations
    and, per key, how many probes that room took."""
    found, probed = [], {}
    planned = {o.request_id: o.planned for o in outcomes if o.request_id}
    for key in keys.values():
        if not key.spec.tpm or only_limit(key.spec) != "tpm":
            continue
        since = time.time() - WINDOW
        rows = UsageRow.select().where(UsageRow.key == key.id)
        held = sum(tokens_held(key.spec, row, planned.get(row.request_id)) for row in rows
                   if row.ts.timestamp() + (row.latency_ms or 0) / 1000 + 0.001 > since)
        probes, room = [], key.spec.tpm - held
        for i in range(TOKEN_PROBES):
            probe = plan.plan_request(rng, f"tpm-probe{i}", index, key.spec, key.secret, env.gateway, fault="none")
            room -= expect.worst_tokens(probe)
            if room < 0:
                break
            probes.append(probe)
        if not probes:
            continue
        answers = asyncio.run(fire(env.gateway, probes, len(probes)))
        probed[key.spec.role] = admitted = sum(o.result == "response" for o in answers)
        if admitted < len(probes):
            found.append(Violation(5, key.name, f"after settling, {admitted} of {len(probes)} simultaneous requests "
                                   f"admitted, though its last minute holds at most {held} of {key.spec.tpm} "
                                   f"tokens/min: {[(o.result, o.reason, o.problem) for o in answers]}"))
    return found, probed


def only_limit(spec) -> str | None:
    """The key's one limit, if it has one and no other limit (its team's included) can refuse
    a probe; keys with several limits are checked from the store's rate log (ratelog.py)."""
    given = [name for name in ("rpm", "tpm", "max_concurrent", "user_rpm") if getattr(spec, name)]
    team = next((t for t in plan.TEAMS if t.role == spec.team), None)
    if team is not None and (team.rpm or team.tpm or team.max_concurrent):
        return None
    return given[0] if len(given) == 1 else None


def tokens_held(spec, row, planned) -> int:
    """The most ``row``'s request still counts against tokens/min once settled: what the
    provider reported, nothing when it billed nothing, else (no usage, cut short, overrun) its
    worst case, or the reported tokens should the gateway settle an overrun to them."""
    if row.outcome in ("ok", "cut_after_usage", "mock"):
        return row.input_tokens + row.output_tokens
    if row.outcome in ("upstream_error", "not_sent", "refused"):
        return 0
    if planned is not None:
        worst = expect.worst_tokens(planned)
    else:  # no answer came back: the row has the input as the gateway counted it
        cap = MAX_TOKENS if spec.sets_max_tokens else reserve.max_output(
            PRICES.resolve(row.model, row.provider), reserve.Bounds(0, None))
        worst = row.input_tokens + cap
    return max(worst, row.input_tokens + row.output_tokens)
