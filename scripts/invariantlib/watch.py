"""Watching the store while a run goes on, from a connection of its own (a thread), in
consistent snapshots: what only the moment shows, and what the store forgets.

- Requests in flight (invariant 5): in every snapshot, each limited scope's
  ``pouch_limit_state.in_flight`` equals the open reservations holding a slot there (both change
  in one transaction, at admission and at settlement or recovery), and neither exceeds the
  scope's max_concurrent. A reservation is open exactly while its slot is held, so this is the
  gateway's own truth, whichever process holds it.
- The rate log: ``pouch_rate_log`` keeps the exact admission time of every counted request,
  but only two minutes; it is copied every few seconds, for ``ratelog`` to check afterwards.
- When a key's spend first reached its budget (invariant 1 with several gateways, whose
  settlements no single store thread orders): a snapshot that saw it is after its commit.
- Which gateway processes held each key's reservations (the owner), to show the spread, and
  every reservation seen open (its owner and amount): a recovered one must be charged that.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time

SAMPLE_EVERY = 0.05  # seconds between snapshots
COPY_EVERY = 5.0  # seconds between copies of the rate log (it keeps 120 s)
KEEP = 20  # violations kept per kind


@dataclasses.dataclass(frozen=True)
class ScopeLimits:
    rpm: int | None
    tpm: int | None
    max_concurrent: int | None
    who: str  # as the gateway's refusals name it: "key 'x'", "team 'y'", "end user 'u' of key 'x'"


@dataclasses.dataclass(frozen=True)
class Entry:
    """One row of the rate log: a request admitted at ``at`` (the gateway's clock) at ``scope``."""

    scope: str
    at: float
    tokens: int
    reservation_id: str | None


def connect(url: str):
    """A DB-API connection that reads snapshots; its placeholder is irrelevant (no parameters)."""
    if url.startswith("sqlite"):
        import sqlite3

        connection = sqlite3.connect(url.split("///", 1)[1], isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA busy_timeout = 10000")
        return connection
    import psycopg2
    from playhouse.db_url import parse

    connection = psycopg2.connect(**parse(url))
    connection.set_session(isolation_level="REPEATABLE READ", readonly=True)
    return connection


class Watch:
    """Samples the store until ``stop``. ``exact``: scope -> limits; ``prefixes``: scope
    prefix ("user:5:") -> limits, for end users named by clients; ``budgets``: key id ->
    budget (pico) of keys whose spend-reached moment matters."""

    def __init__(self, url: str, exact: dict[str, ScopeLimits], prefixes: dict[str, ScopeLimits],
                 budgets: dict[int, int]):
        self.url, self.exact, self.prefixes, self.budgets = url, exact, prefixes, budgets
        self.entries: dict[tuple, Entry] = {}
        self.samples = 0
        self.most_in_flight: collections.Counter = collections.Counter()  # scope -> most open at once
        self.owners: dict[int, set[str]] = collections.defaultdict(set)  # key id -> instances holding its requests
        self.reservations: dict[str, tuple[str, int]] = {}  # id -> (owner, amount_pico), each seen open
        self.spend_reached: dict[int, float] = {}  # key id -> time.time() of the first snapshot at its budget
        self.problems: list[tuple[str, str]] = []  # (scope or "-", what was wrong)
        self.counts: collections.Counter = collections.Counter()  # problems by kind, all of them
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="invariants-watch")
        self.error: BaseException | None = None

    def limits_of(self, scope: str) -> ScopeLimits | None:
        if scope in self.exact:
            return self.exact[scope]
        return next((limits for prefix, limits in self.prefixes.items() if scope.startswith(prefix)), None)

    def start(self) -> Watch:
        self._thread.start()
        return self

    def stop(self) -> Watch:
        self._stop.set()
        self._thread.join()
        return self

    def _run(self) -> None:
        try:
            connection = connect(self.url)
            try:
                copied = 0.0
                while True:
                    final = self._stop.is_set()  # one more snapshot and copy after the stop
                    now = time.monotonic()
                    self._sample(connection, copy=final or now - copied >= COPY_EVERY)
                    if final:
                        return
                    if now - copied >= COPY_EVERY:
                        copied = now
                    self._stop.wait(SAMPLE_EVERY)
            finally:
                connection.close()
        except BaseException as e:  # reported as a violation, never lost in a thread
            self.error = e

    def _sample(self, connection, copy: bool) -> None:
        cursor = connection.cursor()
        if self.url.startswith("sqlite"):
            cursor.execute("BEGIN")
        try:
            seen_at = time.time()
            cursor.execute("SELECT scope, in_flight FROM pouch_limit_state")
            state = dict(cursor.fetchall())
            cursor.execute("SELECT key_id, owner, slots, id, amount_pico FROM pouch_reservations")
            reservations = cursor.fetchall()
            ledgers = []
            if self.budgets:
                ids = ", ".join(str(i) for i in self.budgets)
                cursor.execute(f"SELECT key_id, spent_pico FROM pouch_ledger WHERE key_id IN ({ids})")
                ledgers = cursor.fetchall()
            log = []
            if copy:
                cursor.execute("SELECT scope, at, tokens, reservation_id FROM pouch_rate_log")
                log = cursor.fetchall()
        finally:
            if self.url.startswith("sqlite"):
                cursor.execute("COMMIT")
            else:
                connection.rollback()
            cursor.close()
        self.samples += 1
        self._judge(state, reservations, seen_at)
        for key_id, spent in ledgers:
            if spent >= self.budgets[key_id]:
                self.spend_reached.setdefault(key_id, seen_at)
        for scope, at, tokens, reservation_id in log:
            if self.limits_of(scope) is not None:
                self.entries[scope, at, reservation_id] = Entry(scope, float(at), int(tokens), reservation_id)

    def _judge(self, state: dict[str, int], reservations, seen_at: float) -> None:
        holding: collections.Counter = collections.Counter()
        for key_id, owner, slots, reservation_id, amount in reservations:
            self.owners[key_id].add(owner)
            self.reservations[reservation_id] = (owner, amount)
            for scope in (slots or "").split("\n"):
                if scope:
                    holding[scope] += 1
        clock = time.strftime("%H:%M:%S", time.localtime(seen_at)) + f".{int(seen_at * 1000) % 1000:03d}"
        for scope in set(state) | set(holding):
            limits = self.limits_of(scope)
            if limits is None:
                continue
            in_flight, held = state.get(scope, 0), holding[scope]
            self.most_in_flight[scope] = max(self.most_in_flight[scope], held)
            if in_flight != held:
                self._problem("slots", scope, f"at {clock} pouch_limit_state says {in_flight} in flight, but "
                                              f"{held} open reservation(s) hold a slot there")
            cap = limits.max_concurrent
            if cap is not None and max(in_flight, held) > cap:
                self._problem("concurrent", scope, f"at {clock} {held} open reservation(s) hold a slot "
                                                   f"(in_flight {in_flight}), max_concurrent {cap}")

    def _problem(self, kind: str, scope: str, message: str) -> None:
        self.counts[kind] += 1
        if self.counts[kind] <= KEEP:
            self.problems.append((scope, message))
