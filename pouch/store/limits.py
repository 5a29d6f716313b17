"""Rate limits in the store: requests/min, tokens/min and requests in flight of a key, a team
or a key's end user, exact across every gateway on one store and across restarts.

A request's limits are taken in the transaction that reserves its worst case
(``ledger.reserve``), before its budgets, so a refusal at either holds nothing anywhere:

- ``pouch_limit_state`` has one row per limited scope ("key:5", "team:3", "user:5:ann"). Taking
  a limit first updates that row (a request in flight more), which locks it: two gateways
  admitting for one scope at once are serialised there (SQLite serialises every write anyway).
- ``pouch_rate_log`` has a row per admitted request per scope, with its tokens: the exact
  sliding minute is "the rows of the last 60 seconds" (no buckets, so a burst at a minute's edge
  cannot double the rate). A settlement replaces the worst case by the tokens billed.
- A reservation names the scopes it holds a slot at (``slots``); ``ledger.finish`` gives the slots
  back, in the same transaction that settles it, so a crashed gateway's slots come back with
  its reservations' recovery.

Clocks: times are the gateways' wall clocks (epoch seconds); gateways sharing a store keep
their clocks in step (NTP), as they must for budget periods anyway.
"""

from __future__ import annotations

import dataclasses
import math
import time

WINDOW = 60.0  # seconds: per minute

_LOCK = ("UPDATE pouch_limit_state SET in_flight = in_flight + ? WHERE scope = ? "
         "AND (? IS NULL OR in_flight < ?) RETURNING in_flight")
_MAKE = "INSERT INTO pouch_limit_state (scope, in_flight) VALUES (?, 0) ON CONFLICT (scope) DO NOTHING"
_IN_FLIGHT = "SELECT in_flight FROM pouch_limit_state WHERE scope = ?"
_USED = "SELECT COUNT(*), COALESCE(SUM(tokens), 0), MAX(at) FROM pouch_rate_log WHERE scope = ? AND at > ?"
_ENTRIES = "SELECT at, tokens FROM pouch_rate_log WHERE scope = ? AND at > ? ORDER BY at"
_LOG = "INSERT INTO pouch_rate_log (scope, at, tokens, reservation_id) VALUES (?, ?, ?, ?)"
_FREE = "UPDATE pouch_limit_state SET in_flight = in_flight - 1 WHERE scope = ? AND in_flight > 0"
_SETTLE = "UPDATE pouch_rate_log SET tokens = ? WHERE reservation_id = ?"
_PRUNE = "DELETE FROM pouch_rate_log WHERE at <= ?"
# A scope with nothing in flight and nothing in the log has nothing to count: its row goes (it
# comes back on its next request). End users are named by clients, so they must not pile up.
_PRUNE_IDLE = ("DELETE FROM pouch_limit_state WHERE in_flight = 0 AND NOT EXISTS "
               "(SELECT 1 FROM pouch_rate_log WHERE pouch_rate_log.scope = pouch_limit_state.scope)")


@dataclasses.dataclass(frozen=True, slots=True)
class Limit:
    """A scope's limits (any may be None) and who it is, for messages."""

    scope: str
    who: str  # "key 'alice'", "team 'platform'", "end user 'ann' of key 'app'"
    whose: str  # "the key's", "the team's", "the end user's"
    rpm: int | None = None
    tpm: int | None = None
    max_concurrent: int | None = None

    @property
    def counts(self) -> bool:
        return bool(self.rpm or self.tpm)


@dataclasses.dataclass(frozen=True, slots=True)
class RateRefusal:
    """Why a request was not admitted at a scope's limits."""

    limit: Limit
    reason: str
    retry_after: float  # seconds; inf: never (the request alone exceeds the limit)
    headers: dict


def clock() -> float:
    """Now, in epoch seconds (tests stand a clock of their own in)."""
    return time.time()


class Refused(Exception):
    def __init__(self, refusal: RateRefusal):
        self.refusal = refusal


def take(run, limits: tuple[Limit, ...], now: float, tokens: int, reservation_id: str | None,
         slot: bool = True) -> dict[str, str]:
    """Take a request's place at every scope's limits, or raise ``Refused`` (the caller's
    transaction then rolls back whatever the earlier scopes took). ``slot``: it holds a request
    in flight until ``free`` (a reservation); without one (a free endpoint) it only counts.
    Returns the x-ratelimit-* headers of the first scope that counts requests or tokens.
    (On PostgreSQL a reservation runs the same steps in one call of ``pouch_reserve``.)"""
    headers: dict[str, str] = {}
    for limit in limits:
        cap = limit.max_concurrent if slot else None
        params = (1 if slot else 0, limit.scope, cap, cap)
        if run(_LOCK, params).fetchone() is None:
            run(_MAKE, (limit.scope,))
            if run(_LOCK, params).fetchone() is None:
                raise Refused(refusal(run, limit, now, CONCURRENT, tokens))
        if not limit.counts:
            continue
        count, used, _ = run(_USED, (limit.scope, now - WINDOW)).fetchone()
        if why := _over(limit, count, used, tokens):
            raise Refused(refusal(run, limit, now, why, tokens))
        run(_LOG, (limit.scope, now, tokens if limit.tpm else 0, reservation_id))
        headers = headers or headers_after(limit, count + 1, used + (tokens if limit.tpm else 0))
    return headers


def headers_after(limit: Limit, requests: int, tokens: int) -> dict[str, str]:
    """x-ratelimit-* once a request was admitted: the minute is full again a minute after it."""
    return _headers(limit, requests, tokens, WINDOW)


CONCURRENT, RPM, TPM, TPM_NEVER = "concurrent", "rpm", "tpm", "tpm_never"


def _over(limit: Limit, count: int, used: int, tokens: int) -> str | None:
    if limit.rpm and count + 1 > limit.rpm:
        return RPM
    if limit.tpm and tokens > limit.tpm:
        return TPM_NEVER
    if limit.tpm and used + tokens > limit.tpm:
        return TPM
    return None


def refusal(run, limit: Limit, now: float, why: str, tokens: int) -> RateRefusal:
    """The refusal at ``limit`` for ``why`` (CONCURRENT, RPM, TPM, TPM_NEVER), with the wait and
    the x-ratelimit-* headers read from the minute's log as it is."""
    count, used, newest = run(_USED, (limit.scope, now - WINDOW)).fetchone()
    headers = _headers(limit, count, used, newest + WINDOW - now if newest else 0.0)
    if why == CONCURRENT:
        in_flight = run(_IN_FLIGHT, (limit.scope,)).fetchone()
        return RateRefusal(limit, f"{limit.who} is rate limited: {in_flight[0] if in_flight else '?'} requests "
                                  f"already in flight (limit {limit.max_concurrent})", 1.0, {})
    entries = run(_ENTRIES, (limit.scope, now - WINDOW)).fetchall()
    if why == RPM:
        # it fits once all but rpm - 1 of the minute's requests have left it
        leaving = entries[max(count - limit.rpm, 0)][0] if entries else now - WINDOW
        reason, wait = f"over {limit.rpm} requests per minute", max(leaving + WINDOW - now, 0.001)
    elif why == TPM_NEVER:
        reason, wait = (f"this request needs {tokens} tokens, more than {limit.whose} {limit.tpm} tokens per minute",
                        math.inf)
    else:
        reason, wait = f"over {limit.tpm} tokens per minute", _tokens_free_in(entries, now, used + tokens - limit.tpm)
    return RateRefusal(limit, f"{limit.who} is rate limited: {reason}", wait, headers)


def _tokens_free_in(entries, now: float, needed: int) -> float:
    """Seconds until the oldest entries of the minute, leaving it, free ``needed`` tokens."""
    freed = 0
    for at, tokens in entries:
        freed += tokens
        if freed >= needed:
            return max(at + WINDOW - now, 0.001)
    return WINDOW


def _headers(limit: Limit, requests: int, tokens: int, reset: float) -> dict[str, str]:
    """OpenAI's x-ratelimit-* names, so clients that read them just work. ``reset``: seconds
    until the window is full again (a minute after its newest entry)."""
    headers = {}
    for kind, cap, used in (("requests", limit.rpm, requests), ("tokens", limit.tpm, tokens)):
        if cap:
            headers[f"x-ratelimit-limit-{kind}"] = str(cap)
            headers[f"x-ratelimit-remaining-{kind}"] = str(max(cap - used, 0))
            headers[f"x-ratelimit-reset-{kind}"] = f"{reset:.3f}s"
    return headers


def free(run, slots: str | None, reservation_id: str, tokens: int | None) -> None:
    """Give back a reservation's slots in flight (in the order they were taken) and put the
    tokens it was billed in place of its worst case (None: unknown, the worst case stands)."""
    if not slots:
        return
    for scope in slots.split("\n"):
        run(_FREE, (scope,))
    if tokens is not None:
        run(_SETTLE, (tokens, reservation_id))


PRUNE_AFTER = 10 * WINDOW  # not 1 minute: a gateway whose clock runs ahead must not delete the minute others count


def prune(run, now: float) -> int:
    """Drop log rows no minute counts any more, then the rows of scopes left idle; returns how
    many log rows went."""
    pruned = run(_PRUNE, (now - PRUNE_AFTER,)).rowcount
    run(_PRUNE_IDLE, ())
    return pruned
