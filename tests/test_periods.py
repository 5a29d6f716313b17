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
