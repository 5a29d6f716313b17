"""Gateway names in the store: one live gateway per name.

A reservation carries its gateway's name as its owner, and a gateway starting under a name
charges in full what that name left open (a crashed previous run). Two live gateways under
one name would charge each other's requests in flight, so a gateway first claims its name
here and keeps it alive with a heartbeat; a name is free again when its holder releases it,
stops heartbeating for ``stale`` seconds, or is provably dead (same host, no such process).

Every write is conditional on the row it read (compare and swap), so two gateways claiming
one name at once cannot both win, on SQLite and PostgreSQL alike. Times are the gateways'
clocks (as reservation deadlines are): hosts sharing a store keep them in sync.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from datetime import datetime, timedelta

import peewee as pw

from pouch.store.database import InstanceRow, database, naive

HEARTBEAT_INTERVAL = 10.0  # seconds between two heartbeats of a live gateway
STALE_AFTER = timedelta(seconds=3 * HEARTBEAT_INTERVAL)  # silent this long: presumed dead
CLAIM_TRIES = 5  # compare-and-swap rounds before giving up to a busier claimant


@dataclasses.dataclass(frozen=True, slots=True)
class Holder:
    name: str
    host: str
    pid: int
    started_at: datetime
    heartbeat_at: datetime

    def describe(self) -> str:
        return (f"host {self.host}, pid {self.pid}, since {self.started_at:%Y-%m-%d %H:%M:%S} UTC, "
                f"last heartbeat {self.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC")


class NameTaken(Exception):
    """Seen by an operator starting a gateway under a name a live gateway holds."""

    def __init__(self, holder: Holder):
        super().__init__(f"instance name {holder.name!r} is held by a live gateway ({holder.describe()})")
        self.holder = holder


def this_host() -> str:
    """This host as a holder names it: the host name, and what tells apart machines (the boot
    id) and containers (the pid namespace) that share a host name, so a pid is only ever
    looked up where it means the same process."""
    parts = [socket.gethostname()]
    for path, read in (("/proc/sys/kernel/random/boot_id", lambda p: open(p).read().strip()[:8]),
                       ("/proc/self/ns/pid", os.readlink)):
        try:
            parts.append(read(path).removeprefix("pid:").strip("[]"))
        except OSError:
            parts.append("?")
    return "/".join(parts)


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OverflowError:
        return False
    return True


def is_gone(holder: Holder, now: datetime, host: str, stale: timedelta = STALE_AFTER) -> bool:
    """Whether ``holder`` no longer runs: silent for ``stale``, or on this host without its
    process (a gateway killed with SIGKILL restarts at once, not after ``stale``)."""
    if now - holder.heartbeat_at >= stale:
        return True
    return holder.host == host and not process_exists(holder.pid)


def _holder(row: InstanceRow) -> Holder:
    return Holder(row.name, row.host, row.pid, row.started_at, row.heartbeat_at)


def holder(name: str) -> Holder | None:
    row = InstanceRow.get_or_none(InstanceRow.name == name)
    return _holder(row) if row else None


def _is(held: Holder):
    """The row of ``held`` exactly as it was read (the compare of compare-and-swap)."""
    return ((InstanceRow.name == held.name) & (InstanceRow.host == held.host) & (InstanceRow.pid == held.pid)
            & (InstanceRow.started_at == naive(held.started_at))
            & (InstanceRow.heartbeat_at == naive(held.heartbeat_at)))


def _mine(mine: Holder):
    """Our claim, whatever its last heartbeat."""
    return ((InstanceRow.name == mine.name) & (InstanceRow.host == mine.host) & (InstanceRow.pid == mine.pid)
            & (InstanceRow.started_at == naive(mine.started_at)))


def claim(name: str, now: datetime, *, host: str | None = None, pid: int | None = None,
          stale: timedelta = STALE_AFTER) -> Holder:
    """Take ``name`` for this process; returns the claim (pass it to ``heartbeat`` and
    ``release``). Raises ``NameTaken`` if a live gateway holds it. This same process may
    claim again (a reloaded script)."""
    host, pid = host or this_host(), pid or os.getpid()
    mine = Holder(name, host, pid, now, now)
    for _ in range(CLAIM_TRIES):
        current = holder(name)
        if current is None:
            try:
                with database.atomic():
                    InstanceRow.insert(name=name, host=host, pid=pid, started_at=now, heartbeat_at=now).execute()
                return mine
            except pw.IntegrityError:
                continue  # someone claimed it since we looked
        ours = current.host == host and current.pid == pid
        if not ours and not is_gone(current, now, host, stale):
            raise NameTaken(current)
        taken = InstanceRow.update(host=host, pid=pid, started_at=now, heartbeat_at=now).where(_is(current)).execute()
        if taken == 1:
            return mine
    current = holder(name)
    raise NameTaken(current or mine)


def heartbeat(mine: Holder, now: datetime) -> bool:
    """Say ``mine`` is alive; False if the name is no longer ours (taken over as stale)."""
    return InstanceRow.update(heartbeat_at=now).where(_mine(mine)).execute() == 1


def release(mine: Holder) -> None:
    """Give the name up (a clean stop); nothing happens if another gateway holds it now."""
    InstanceRow.delete().where(_mine(mine)).execute()
