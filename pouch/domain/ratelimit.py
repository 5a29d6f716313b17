"""Rate-limit math: sliding one-minute windows for requests and tokens, and a counter for
requests in flight. Pure and single-threaded: the gateway's event loop owns the state."""

from __future__ import annotations

import collections
import dataclasses
import math

WINDOW_SECONDS = 60.0


class SlidingWindow:
    """At most ``limit`` units in any ``window`` seconds (an exact sliding log, not buckets,
    so a burst at a minute's edge cannot double the rate)."""

    def __init__(self, limit: int, window: float = WINDOW_SECONDS):
        self.limit = limit
        self.window = window
        self._log: collections.deque[list] = collections.deque()  # [stamp, units] entries
        self._used = 0

    def _expire(self, now: float) -> None:
        while self._log and self._log[0][0] <= now - self.window:
            self._used -= self._log.popleft()[1]

    def try_take(self, now: float, amount: int = 1) -> float:
        """Take ``amount`` if it fits; returns 0.0, else seconds until it would (inf: never)."""
        self._expire(now)
        if self._used + amount <= self.limit:
            if amount:
                self._log.append([now, amount])
                self._used += amount
            return 0.0
        if amount > self.limit:
            return math.inf
        # Free the oldest entries until it fits; it fits when the last of them expires.
        freed, needed = 0, self._used + amount - self.limit
        for stamp, units in self._log:
            freed += units
            if freed >= needed:
                return max(stamp + self.window - now, 0.001)
        return self.window  # unreachable: the log holds every used unit

    def give_back(self, amount: int) -> None:
        """Return units taken for a request that turned out not to be sent (newest first)."""
        while amount and self._log:
            stamp, units = self._log.pop()
            back = min(units, amount)
            self._used -= back
            amount -= back
            if units > back:
                self._log.append([stamp, units - back])

    def last(self) -> list | None:
        """The newest entry: a handle ``settle`` can adjust once the real amount is known."""
        return self._log[-1] if self._log else None

    def settle(self, entry: list, actual: int) -> None:
        """Replace what ``entry`` took by what was really used (still dated when it was taken).
        An entry that already left the window no longer counts either way."""
        if any(e is entry for e in self._log):
            self._used += actual - entry[1]
            entry[1] = actual

    def remaining(self, now: float) -> int:
        self._expire(now)
        return max(self.limit - self._used, 0)

    def reset_in(self, now: float) -> float:
        """Seconds until the window has fully refilled."""
        self._expire(now)
        return max(self._log[-1][0] + self.window - now, 0.0) if self._log else 0.0


@dataclasses.dataclass(slots=True)
class Verdict:
    retry_after: float  # 0.0: admitted
    reason: str = ""
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    tokens_entry: list | None = None  # what the admitted request took from tokens/min


class KeyLimits:
    """One key's limits (or a team's, or an end user's: ``whose``); any may be None (no limit)."""

    def __init__(self, rpm: int | None, tpm: int | None, max_concurrent: int | None, whose: str = "the key's"):
        self.in_flight = 0
        self.whose = whose
        self.last_used = 0.0  # when a request last took a slot (monotonic): idle end users are dropped
        self.reconfigure(rpm, tpm, max_concurrent)

    def reconfigure(self, rpm: int | None, tpm: int | None, max_concurrent: int | None) -> None:
        """New limits start with fresh windows; requests in flight stay counted (and release
        into this same object, so a change never strands their slots)."""
        self.requests = SlidingWindow(rpm) if rpm else None
        self.tokens = SlidingWindow(tpm) if tpm else None
        self.max_concurrent = max_concurrent

    def matches(self, rpm, tpm, max_concurrent) -> bool:
        return (
            (self.requests.limit if self.requests else None) == rpm
            and (self.tokens.limit if self.tokens else None) == tpm
            and self.max_concurrent == max_concurrent
        )

    def admit(self, now: float, tokens: int) -> Verdict:
        """Take one request slot, ``tokens`` tokens and a concurrency slot, all or nothing."""
        if self.max_concurrent is not None and self.in_flight >= self.max_concurrent:
            return Verdict(1.0, f"{self.in_flight} requests already in flight (limit {self.max_concurrent})",
                           self.headers(now))
        if self.requests and (wait := self.requests.try_take(now)):
            return Verdict(wait, f"over {self.requests.limit} requests per minute", self.headers(now))
        if self.tokens and (wait := self.tokens.try_take(now, tokens)):
            if self.requests:
                self.requests.give_back(1)
            if math.isinf(wait):
                return Verdict(wait, f"this request needs {tokens} tokens, more than {self.whose} "
                                     f"{self.tokens.limit} tokens per minute", self.headers(now))
            return Verdict(wait, f"over {self.tokens.limit} tokens per minute", self.headers(now))
        self.in_flight += 1
        self.last_used = now
        entry = self.tokens.last() if self.tokens and tokens else None
        return Verdict(0.0, headers=self.headers(now), tokens_entry=entry)

    def undo(self, tokens: int) -> None:
        """Give back what the last ``admit`` took (``tokens``): another level refused the request."""
        if self.requests:
            self.requests.give_back(1)
        if self.tokens and tokens:
            self.tokens.give_back(tokens)
        self.release()

    def settle_tokens(self, entry: list, actual: int) -> None:
        """The request used ``actual`` tokens, not the worst case it was admitted with."""
        if self.tokens is not None:
            self.tokens.settle(entry, actual)

    def release(self) -> None:
        self.in_flight = max(self.in_flight - 1, 0)

    def headers(self, now: float) -> dict[str, str]:
        """OpenAI's x-ratelimit-* names, so clients that read them just work."""
        headers = {}
        for kind, window in (("requests", self.requests), ("tokens", self.tokens)):
            if window:
                headers[f"x-ratelimit-limit-{kind}"] = str(window.limit)
                headers[f"x-ratelimit-remaining-{kind}"] = str(window.remaining(now))
                headers[f"x-ratelimit-reset-{kind}"] = f"{window.reset_in(now):.3f}s"
        return headers


class Hold:
    """What one request took at every level it fits (key, team, end user), released and
    settled together."""

    def __init__(self, taken: list[tuple[KeyLimits, list | None]], headers: dict[str, str]):
        self.taken, self.first_headers, self.released = taken, headers, False

    def release(self) -> None:
        if not self.released:
            self.released = True
            for limits, _ in self.taken:
                limits.release()

    def settle_tokens(self, actual: int) -> None:
        for limits, entry in self.taken:
            if entry is not None:
                limits.settle_tokens(entry, actual)

    def headers(self, now: float) -> dict[str, str]:
        """The x-ratelimit-* headers of the first level with limits (the key's, when it has any)."""
        return self.taken[0][0].headers(now) if self.taken else self.first_headers


def admit_all(levels: list[tuple[str, KeyLimits]], now: float, tokens: int) -> tuple[Hold | None, Verdict]:
    """Admit a request at every level (``who``, limits) or at none: a refusal at one gives back
    what the levels before it took. Returns (the hold, None's verdict) or (None, the refusal,
    its reason naming the level: "team 'platform' is rate limited: ...")."""
    taken: list[tuple[KeyLimits, list | None]] = []
    first = None
    for who, limits in levels:
        verdict = limits.admit(now, tokens)
        if verdict.retry_after:
            for admitted, _ in reversed(taken):
                admitted.undo(tokens)
            verdict.reason = f"{who} is rate limited: {verdict.reason}"
            return None, verdict
        taken.append((limits, verdict.tokens_entry))
        first = first or verdict
    return Hold(taken, first.headers if first else {}), first or Verdict(0.0)
