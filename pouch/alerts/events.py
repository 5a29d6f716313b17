"""What an alert says, as pure functions: which thresholds a settlement crossed, each event's
body (DESIGN.md, "Alerts (webhooks)") and message, and the bytes and signature a target gets.

A threshold is crossed by the settlement that takes spend from below ``pct`` % of the budget to
at least that: ``before * 100 < pct * budget <= after * 100``, in exact pico-dollars. Settlements
of one window are serialised by the store (each updates the window's row), so each threshold is
crossed by exactly one of them. Reaching 100 % is ``budget.exhausted`` (so 100 in ``alert_at``
sends nothing more), as is the first request refused for budget in a period, whichever comes
first: an operator hears when a key stops working, also when a last request did not fit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from pouch.domain.money import Money
from pouch.domain.periods import Window, utcnow

THRESHOLD = "budget.threshold"
EXHAUSTED = "budget.exhausted"
OVERRUN = "spend.overrun"
EXPIRING = "key.expiring"
EXPIRY_NOTICE = timedelta(days=7)  # key.expiring this long before expires_at
SLACK_HOSTS = frozenset({"hooks.slack.com"})


def crossed(before: int, after: int, budget: int | None, alert_at: Sequence[int]) -> tuple[int, ...]:
    """The percents of ``alert_at`` below 100 that spend passed going from ``before`` to
    ``after`` (pico-dollars) against ``budget``."""
    if budget is None or budget <= 0 or after <= before:
        return ()
    return tuple(pct for pct in alert_at if pct < 100 and before * 100 < pct * budget <= after * 100)


def exhausted(before: int, after: int, budget: int | None) -> bool:
    """Whether this settlement took spend to the whole budget."""
    return budget is not None and budget > 0 and before < budget <= after


def new_id() -> str:
    """``evt_`` and 26 hex digits, the microsecond first (ids sort by when they were made)."""
    return f"evt_{time.time_ns() // 1000:014x}{secrets.token_hex(6)}"


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    event: str
    key: str  # the key's name
    spent: Money  # in the window, after what caused the event
    budget: Money | None
    window: Window
    message: str
    threshold_pct: int | None = None
    id: str = dataclasses.field(default_factory=new_id)
    ts: datetime = dataclasses.field(default_factory=utcnow)

    def body(self) -> dict:
        return {
            "id": self.id,
            "event": self.event,
            "ts": self.ts.isoformat(),
            "key": self.key,
            "team": None,
            "threshold_pct": self.threshold_pct,
            "spent_usd": self.spent.json(),
            "budget_usd": self.budget.json() if self.budget is not None else None,
            "period_start": self.window.start.isoformat(),
            "period_end": self.window.end.isoformat() if self.window.end else None,
            "message": self.message,
        }

    def json(self) -> str:
        return json.dumps(self.body())


def _resets(window: Window) -> str:
    return f", resets {window.end:%Y-%m-%d %H:%M} UTC" if window.end else ""


def threshold(name: str, pct: int, spent: Money, budget: Money, window: Window) -> Event:
    message = f"key '{name}' reached {pct}% of its budget: {spent} of {budget} spent this period{_resets(window)}"
    return Event(THRESHOLD, name, spent, budget, window, message, pct)


def exhausted_by_spend(name: str, spent: Money, budget: Money, window: Window) -> Event:
    until = f"until it resets {window.end:%Y-%m-%d %H:%M} UTC" if window.end else "until its budget is raised"
    message = (f"key '{name}' has spent its whole budget: {spent} of {budget}; "
               f"its requests are refused {until}")
    return Event(EXHAUSTED, name, spent, budget, window, message, 100)


def exhausted_by_refusal(name: str, spent: Money, reserved: Money, budget: Money, window: Window) -> Event:
    held = f" and {reserved} held by requests in flight" if reserved else ""
    message = (f"key '{name}' was refused a request for budget: {spent} spent{held} of {budget} this "
               f"period{_resets(window)}; requests that do not fit what is left are refused")
    return Event(EXHAUSTED, name, spent, budget, window, message, 100)


def overrun(name: str, charged: Money, reserved: Money | None, model: str | None, spent: Money,
            budget: Money | None, window: Window) -> Event:
    of = f" of {budget}" if budget is not None else ""
    message = (f"key '{name}' was charged {charged} for a {model or 'request'} request that reserved "
               f"{reserved if reserved is not None else 'nothing'}: the provider billed more than pouch's worst "
               f"case; {spent}{of} spent this period{_resets(window)}")
    return Event(OVERRUN, name, spent, budget, window, message)


def expiring(name: str, expires_at: datetime, now: datetime, spent: Money, budget: Money | None,
             window: Window) -> Event:
    left = expires_at - now
    hours = max(1, round(left.total_seconds() / 3600))
    within = f"{left.days} days" if left.days >= 2 else f"{hours} hour{'s' if hours > 1 else ''}"
    message = (f"key '{name}' expires {expires_at:%Y-%m-%d %H:%M} UTC (in {within}) and does not auto-renew; "
               f"extend it with `pouch keys update {name} --expires WHEN`")
    return Event(EXPIRING, name, spent, budget, window, message)


def is_slack(url: str) -> bool:
    return (urlsplit(url).hostname or "").lower() in SLACK_HOSTS


def payload(body: str, url: str) -> bytes:
    """What ``url`` is sent: the event's JSON as stored (the same bytes on every try), or
    Slack's ``{"text": ...}`` for a Slack incoming webhook."""
    if is_slack(url):
        return json.dumps({"text": json.loads(body)["message"]}).encode()
    return body.encode()


def signature(secret: str, body: bytes) -> str:
    """``X-Pouch-Signature``: HMAC-SHA256 of the raw body, keyed with pouch_webhook_secret."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
