import random
from datetime import UTC, datetime, timedelta

import pytest

from pouch.domain.errors import InvalidInput
from pouch.domain.money import Money
from pouch.domain.periods import Period
from pouch.store import keys, ledger

ANCHOR = datetime(2026, 1, 15, 10, 30, tzinfo=UTC)


def at(*args):
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    "spec, now, start, end",
    [
        ("none", at(2030, 1, 1), ANCHOR, None),
        ("daily", at(2026, 11, 27, 23, 59), at(2026, 11, 27), at(2026, 11, 28)),
        ("weekly", at(2026, 11, 27, 12), at(2026, 11, 23), at(2026, 11, 30)),  # Friday -> Monday
        ("monthly", at(2026, 12, 31, 23), at(2026, 12, 1), at(2027, 1, 1)),
        ("monthly", at(2026, 1, 20), ANCHOR, at(2026, 2, 1)),  # never before the anchor
        ("12h", at(2026, 1, 16, 0), at(2026, 1, 15, 22, 30), at(2026, 1, 16, 10, 30)),
        ("3600s", ANCHOR + timedelta(minutes=59), ANCHOR, ANCHOR + timedelta(hours=1)),
        ("30d", ANCHOR + timedelta(days=31), ANCHOR + timedelta(days=30), ANCHOR + timedelta(days=60)),
    ],
)
def test_window(spec, now, start, end):
    window = Period.parse(spec).window(now, ANCHOR)
    assert (window.start, window.end) == (start, end)


@pytest.mark.parametrize("bad", ["", "hourly", "0d", "-1h", "12", "1.5h", "12 h x"])
def test_bad_period(bad):
    with pytest.raises(InvalidInput):
        Period.parse(bad)


@pytest.mark.parametrize(
    "spec, instant, extended",
    [
        ("monthly", at(2026, 1, 31), at(2026, 2, 28)),
        ("monthly", at(2026, 12, 31), at(2027, 1, 31)),
        ("weekly", at(2026, 1, 1), at(2026, 1, 8)),
        ("90m", at(2026, 1, 1), at(2026, 1, 1, 1, 30)),
    ],
)
def test_extend(spec, instant, extended):
    assert Period.parse(spec).extend(instant) == extended


def test_auto_renew_is_persisted_and_resets_spend(store):
    created = at(2026, 1, 1)
    key, _ = keys.create("renewing", created, budget=Money(100), period=Period.parse("daily"),
                         expires_at=at(2026, 1, 3), auto_renew=True)
    held = ledger.reserve(key.id, key.window(at(2026, 1, 2, 12)), Money(100), at(2026, 1, 2, 12), owner="t", hold=timedelta(hours=1))
    ledger.finish(held.id, Money(100), {"ts": created, "key": key.id, "key_name": key.name})

    later = at(2026, 1, 5, 6)  # two and a bit days past expiry
    renewed = keys.renew_if_expired(key, later)
    assert renewed.expires_at == at(2026, 1, 6) and renewed.anchor == at(2026, 1, 5)
    assert keys.get("renewing").expires_at == at(2026, 1, 6), "renewal is stored, not only in memory"
    assert not renewed.expired(later)
    assert ledger.window_totals(renewed, later) == (Money(0), Money(0))
    assert keys.renew_if_expired(key, later).expires_at == at(2026, 1, 6), "a stale copy renews once"


def test_renew_leaves_other_keys_alone(store):
    plain, _ = keys.create("plain", ANCHOR, expires_at=at(2026, 1, 16))
    assert keys.renew_if_expired(plain, at(2026, 2, 1)) is plain


def renewed_one_period_at_a_time(period, expires, now):
    """What renewal did before it counted: extend until the expiry is after ``now``."""
    renewed_at = expires
    while expires <= now:
        renewed_at, expires = expires, period.extend(expires)
    return renewed_at, expires


MONTH_ENDS = [at(2026, 1, 31, 10, 30), at(2026, 1, 30), at(2026, 1, 29), at(2024, 2, 29, 23, 59, 59),
              at(2026, 3, 31), at(2026, 8, 31, 0, 0, 0, 1), at(2026, 12, 31, 23)]


@pytest.mark.parametrize("spec, expires, span", [
    ("daily", ANCHOR, timedelta(days=3 * 365)),
    ("weekly", at(2026, 1, 4, 23, 59, 59, 999999), timedelta(days=3 * 365)),
    *[("monthly", expires, timedelta(days=6 * 365)) for expires in [ANCHOR, *MONTH_ENDS]],
    ("1s", at(2026, 1, 1, 0, 0, 0, 250000), timedelta(hours=1)),
    ("12h", ANCHOR, timedelta(days=2 * 365)),
    ("30d", MONTH_ENDS[0], timedelta(days=10 * 365)),
])
def test_catch_up_matches_renewing_one_period_at_a_time(spec, expires, span):
    period = Period.parse(spec)
    rng = random.Random(f"{spec} {expires}")
    nows = [expires, expires + span]
    nows += [expires + span * rng.random() for _ in range(150)]
    boundary = expires  # exactly on a renewal instant, and a microsecond either side
    for _ in range(40):
        boundary = period.extend(boundary)
        nows += [boundary, boundary - timedelta(microseconds=1), boundary + timedelta(microseconds=1)]
    for now in nows:
        assert period.catch_up(expires, now) == renewed_one_period_at_a_time(period, expires, now), now


def test_catch_up_of_an_expiry_still_ahead_changes_nothing():
    assert Period.parse("daily").catch_up(at(2026, 2, 1), at(2026, 1, 1)) == (at(2026, 2, 1), at(2026, 2, 1))


def test_catch_up_keeps_a_clamped_month_day():
    """Renewals store each expiry, so one period at a time a 31st becomes the 28th for good;
    catching up many months at once lands on the same day."""
    monthly = Period.parse("monthly")
    assert monthly.catch_up(at(2026, 1, 31), at(2026, 4, 29)) == (at(2026, 4, 28), at(2026, 5, 28))
    assert monthly.catch_up(at(2026, 12, 31), at(2027, 1, 31)) == (at(2027, 1, 31), at(2027, 2, 28))


def test_catch_up_of_a_period_none_is_refused():
    with pytest.raises(InvalidInput):
        Period.parse("none").catch_up(at(2026, 1, 1), at(2026, 2, 1))


def test_renewing_a_1s_key_expired_in_2000_takes_one_step(store, monkeypatch):
    """26 years of one-second periods (~830 million) are counted, not stepped through: the
    store thread that renews must not stall every other key's requests."""
    key, _ = keys.create("every-second", at(1999, 12, 31), budget=Money(100), period=Period.parse("1s"),
                         expires_at=at(2000, 1, 1), auto_renew=True)
    steps = []
    one_period = Period.extend

    def counted(self, instant):
        steps.append(instant)
        assert len(steps) <= 2, "renewal steps through the missed periods one by one"
        return one_period(self, instant)

    monkeypatch.setattr(Period, "extend", counted)
    now = at(2026, 3, 1, 12, 0, 0, 500000)
    renewed = keys.renew_if_expired(key, now)
    stored = keys.get("every-second")
    assert stored.expires_at == at(2026, 3, 1, 12, 0, 1) and stored.anchor == at(2026, 3, 1, 12, 0, 0)
    assert renewed == stored and not renewed.expired(now)
