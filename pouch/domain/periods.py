"""Budget periods: when a key's spend starts again from zero.

- ``none``: one window from the key's anchor, forever.
- ``daily`` / ``weekly`` / ``monthly``: calendar windows in UTC (weeks start on Monday).
- rolling ``<n>s|m|h|d`` (``3600s``, ``12h``, ``30d``): back-to-back windows of that length
  counted from the key's anchor (its creation, or its last auto-renewal).

A window never starts before the key's anchor, so an auto-renewal (which moves the anchor)
starts a fresh window: that is how spend is reset, persistently, without deleting history.
"""

from __future__ import annotations

import calendar
import dataclasses
import re
from datetime import UTC, datetime, timedelta

from pouch.domain.errors import InvalidInput

CALENDAR = ("daily", "weekly", "monthly")
_ROLLING = re.compile(r"^([1-9][0-9]{0,8})([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclasses.dataclass(frozen=True, slots=True)
class Window:
    start: datetime
    end: datetime | None  # None: the window never ends


@dataclasses.dataclass(frozen=True, slots=True)
class Period:
    spec: str  # canonical text: "none", "daily", "weekly", "monthly" or e.g. "12h"
    rolling: timedelta | None = None

    @classmethod
    def parse(cls, text: str) -> Period:
        spec = (text or "").strip().lower()
        if spec in ("none", *CALENDAR):
            return cls(spec)
        if m := _ROLLING.match(spec):
            return cls(spec, timedelta(seconds=int(m[1]) * _UNIT_SECONDS[m[2]]))
        raise InvalidInput(
            f"bad period {text!r}: use none, daily, weekly, monthly, or a rolling duration "
            "such as 3600s, 90m, 12h, 30d"
        )

    def __str__(self) -> str:
        return self.spec

    def window(self, now: datetime, anchor: datetime) -> Window:
        """The budget window containing ``now`` for a key anchored at ``anchor``."""
        now, anchor = _utc(now), _utc(anchor)
        if self.spec == "none":
            return Window(anchor, None)
        if self.rolling is not None:
            elapsed = max(now - anchor, timedelta(0))
            start = anchor + self.rolling * (elapsed // self.rolling)
            return Window(start, start + self.rolling)
        start, end = _calendar_window(self.spec, now)
        return Window(max(start, anchor), end)

    def extend(self, instant: datetime) -> datetime:
        """``instant`` moved on by one period (auto-renewal of an expiry)."""
        instant = _utc(instant)
        if self.rolling is not None:
            return instant + self.rolling
        if self.spec == "daily":
            return instant + timedelta(days=1)
        if self.spec == "weekly":
            return instant + timedelta(weeks=1)
        if self.spec == "monthly":
            return _add_months(instant, 1)
        raise InvalidInput("a key with period 'none' cannot auto-renew: give it a period")

    def catch_up(self, expires: datetime, now: datetime) -> tuple[datetime, datetime]:
        """An expiry at or before ``now`` moved on by whole periods until it is after ``now``:
        (the last expiry passed, the new expiry). The same instants ``extend`` gives one period
        at a time, computed in one step: a 1s key expired years ago must not loop for minutes."""
        expires, now = _utc(expires), _utc(now)
        if expires > now:
            return expires, expires
        if self.spec == "monthly":
            months = (now.year - expires.year) * 12 + now.month - expires.month
            passed = months if months and _add_months(expires, months) > now else months + 1
            return _add_months(expires, passed - 1), _add_months(expires, passed)
        step = self.extend(expires) - expires  # fixed: days and weeks in UTC have no DST
        passed = (now - expires) // step + 1
        return expires + step * (passed - 1), expires + step * passed


def _calendar_window(spec: str, now: datetime) -> tuple[datetime, datetime]:
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if spec == "daily":
        return day, day + timedelta(days=1)
    if spec == "weekly":
        start = day - timedelta(days=day.weekday())
        return start, start + timedelta(weeks=1)
    start = day.replace(day=1)
    return start, _add_months(start, 1)


def _add_months(instant: datetime, months: int) -> datetime:
    """``months`` months later, the day clamped in every month passed (as one month at a time
    would), so Jan 31 -> Feb 28 -> Mar 28 (renewals store each expiry, so a clamped day stays)."""
    year, month = divmod(instant.year * 12 + instant.month - 1 + months, 12)
    day, passed = instant.day, (instant.year, instant.month)
    for _ in range(min(months, 48) if day > 28 else 0):  # 48 months always hold a 28-day February
        passed = (passed[0] + passed[1] // 12, passed[1] % 12 + 1)
        day = min(day, calendar.monthrange(*passed)[1])
    return instant.replace(year=year, month=month + 1, day=day)


def _utc(instant: datetime) -> datetime:
    if instant.tzinfo is None:
        return instant.replace(tzinfo=UTC)
    return instant.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)
