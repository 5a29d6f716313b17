"""Rate-limit math (pouch/domain/ratelimit.py): exact sliding windows and all-or-nothing admission."""

import math

import pytest

from pouch.domain.ratelimit import KeyLimits, SlidingWindow


@pytest.mark.parametrize(
    "taken, now, amount, retry_after",
    [
        # limit 10: 4 units at t=0, 4 at t=10; asked at t=20
        ([(0, 4), (10, 4)], 20, 2, 0.0),  # fits
        ([(0, 4), (10, 4)], 20, 3, 40.0),  # needs the t=0 entry gone: at t=60
        ([(0, 4), (10, 4)], 20, 6, 40.0),
        ([(0, 4), (10, 4)], 20, 7, 50.0),  # needs both gone: at t=70
        ([(0, 4), (10, 4)], 20, 10, 50.0),
        ([(0, 4), (10, 4)], 20, 11, math.inf),  # more than the limit: never
        ([(0, 10)], 59.5, 1, 0.5),
        ([(0, 10)], 60, 10, 0.0),  # an entry leaves the window exactly 60 s after it was taken
    ],
)
def test_try_take_says_when_it_would_fit(taken, now, amount, retry_after):
    window = SlidingWindow(10)
    for stamp, units in taken:
        assert window.try_take(stamp, units) == 0.0
    assert window.try_take(now, amount) == pytest.approx(retry_after)


def test_a_refused_take_takes_nothing():
    window = SlidingWindow(10)
    window.try_take(0, 8)
    assert window.try_take(1, 3) > 0
    assert window.remaining(1) == 2
    assert window.try_take(1, 2) == 0.0


def test_a_burst_at_the_minute_edge_cannot_double_the_rate():
    window = SlidingWindow(3)
    for stamp in (59.7, 59.8, 59.9):
        assert window.try_take(stamp) == 0.0
    # A fixed-bucket limiter would start a fresh minute at t=60 here.
    assert window.try_take(60.1) == pytest.approx(59.6)
    assert window.try_take(119.699) == pytest.approx(0.001)
    assert window.try_take(119.7) == 0.0
    assert window.remaining(119.7) == 0
    assert window.remaining(119.85) == 1  # the 59.8 entry has left, the 59.9 one not yet


def test_retry_after_is_never_zero_when_refused():
    window = SlidingWindow(1)
    window.try_take(0)
    assert window.try_take(60 - 1e-9) == pytest.approx(0.001)


def test_zero_units_always_fit():
    window = SlidingWindow(2)
    window.try_take(0, 2)
    assert window.try_take(1, 0) == 0.0
    assert window.remaining(1) == 0


def test_give_back_returns_the_newest_units_first():
    window = SlidingWindow(10)
    window.try_take(0, 4)
    window.try_take(30, 5)
    window.give_back(3)
    assert window.remaining(30) == 4
    # 2 units of the t=30 entry are left: they expire at t=90, the t=0 ones at t=60.
    assert window.remaining(60) == 8
    window.give_back(5)  # more than the t=30 entry holds: the rest comes off the t=0 one
    assert window.remaining(59) == 10


def test_give_back_never_goes_below_nothing():
    window = SlidingWindow(5)
    window.try_take(0, 2)
    window.give_back(9)
    assert window.remaining(0) == 5
    assert window.try_take(0, 5) == 0.0


def test_reset_in_is_when_the_newest_entry_leaves():
    window = SlidingWindow(5)
    assert window.reset_in(0) == 0.0
    window.try_take(0, 1)
    window.try_take(20, 1)
    assert window.reset_in(30) == pytest.approx(50.0)
    assert window.reset_in(80) == 0.0


class TestKeyLimits:
    def test_admission_takes_a_request_tokens_and_a_slot(self):
        limits = KeyLimits(rpm=3, tpm=100, max_concurrent=2)
        verdict = limits.admit(0, 40)
        assert verdict.retry_after == 0.0 and verdict.reason == ""
        assert limits.in_flight == 1
        assert verdict.headers == {
            "x-ratelimit-limit-requests": "3", "x-ratelimit-remaining-requests": "2",
            "x-ratelimit-reset-requests": "60.000s",
            "x-ratelimit-limit-tokens": "100", "x-ratelimit-remaining-tokens": "60",
            "x-ratelimit-reset-tokens": "60.000s",
        }

    def test_a_token_refusal_gives_the_request_back(self):
        limits = KeyLimits(rpm=3, tpm=100, max_concurrent=None)
        assert limits.admit(0, 90).retry_after == 0.0
        verdict = limits.admit(10, 20)
        assert verdict.retry_after == pytest.approx(50.0)
        assert verdict.reason == "over 100 tokens per minute"
        assert verdict.headers["x-ratelimit-remaining-requests"] == "2"
        assert limits.in_flight == 1

    def test_a_request_refusal_takes_no_tokens(self):
        limits = KeyLimits(rpm=1, tpm=100, max_concurrent=None)
        limits.admit(0, 10)
        verdict = limits.admit(1, 10)
        assert verdict.retry_after == pytest.approx(59.0)
        assert verdict.reason == "over 1 requests per minute"
        assert verdict.headers["x-ratelimit-remaining-tokens"] == "90"

    def test_a_concurrency_refusal_takes_nothing(self):
        limits = KeyLimits(rpm=5, tpm=100, max_concurrent=1)
        limits.admit(0, 10)
        verdict = limits.admit(1, 10)
        assert verdict.retry_after == 1.0
        assert verdict.reason == "1 requests already in flight (limit 1)"
        assert verdict.headers["x-ratelimit-remaining-requests"] == "4"
        assert verdict.headers["x-ratelimit-remaining-tokens"] == "90"
        limits.release()
        assert limits.admit(2, 10).retry_after == 0.0

    def test_more_tokens_than_the_limit_is_never_admitted(self):
        limits = KeyLimits(rpm=None, tpm=100, max_concurrent=None)
        verdict = limits.admit(0, 101)
        assert math.isinf(verdict.retry_after)
        assert verdict.reason == "this request needs 101 tokens, more than the key's 100 tokens per minute"
        assert limits.in_flight == 0

    def test_release_never_goes_below_zero(self):
        limits = KeyLimits(rpm=None, tpm=None, max_concurrent=1)
        limits.release()
        assert limits.in_flight == 0
        assert limits.admit(0, 0).retry_after == 0.0
        assert limits.admit(0, 0).retry_after == 1.0

    def test_no_limits_no_headers(self):
        limits = KeyLimits(rpm=None, tpm=None, max_concurrent=None)
        assert all(limits.admit(0, 10**9).retry_after == 0.0 for _ in range(100))
        assert limits.headers(0) == {}

    @pytest.mark.parametrize("rpm, tpm, max_concurrent, same", [
        (3, 100, 2, True), (4, 100, 2, False), (3, None, 2, False), (3, 100, None, False),
    ])
    def test_matches_compares_every_limit(self, rpm, tpm, max_concurrent, same):
        assert KeyLimits(3, 100, 2).matches(rpm, tpm, max_concurrent) is same
