"""Store steps short enough to run on the caller's thread, where that cannot block.

A reservation or a settlement is one transaction of a few statements, about 0.1 ms of work.
Handed to the store thread, it cost far more than that: the sqlite3 module lets go of the
interpreter lock around every call, so each statement waited for the event loop to hand the
lock back, and under load reservations queued behind settlements for tens of milliseconds
while the loop sat idle. On SQLite such a step cannot block when nothing makes it wait:

- this connection's busy timeout is zero for the step, so a store locked by another writer
  raises ``Busy`` at once (the caller tries again a little later, or hands the step to the
  store thread, where waiting is allowed);
- commits do not fsync (WAL with synchronous=NORMAL);
- this connection never checkpoints (the one write that fsyncs, and may take long):
  ``checkpoint`` does that, on the store thread, without stopping writers.

PostgreSQL waits on the network: its steps always go to the store thread. A step marked
``@quick`` must be one transaction (or one statement) that rolls back whole when it raises,
so that running it again elsewhere is safe.
"""

from __future__ import annotations

import logging
import threading

import peewee as pw

from pouch.store.database import database

log = logging.getLogger(__name__)
_here = threading.local()  # per thread: the sqlite3 connection prepared, its own busy timeout


class Busy(Exception):
    """The store is locked by another writer; nobody sees it: the step runs again later."""


def quick(fn):
    """Mark ``fn`` as a step the store thread may run on the caller's thread (``run_here``)."""
    fn.quick = True
    return fn


def applies(fn) -> bool:
    """Whether ``fn`` may run on the caller's thread with the store as it is configured now."""
    return getattr(fn, "quick", False) and isinstance(database.obj, pw.SqliteDatabase)


def run_here(fn, *args, **kwargs):
    """Run ``fn`` on this thread without waiting for any lock; raises ``Busy`` when the store
    is locked (``fn`` then did nothing: its transaction rolled back)."""
    connection = database.connection()
    if getattr(_here, "connection", None) is not connection:
        timeout = connection.execute("PRAGMA busy_timeout").fetchone()[0]
        connection.execute("PRAGMA wal_autocheckpoint = 0")  # checkpoints happen on the store thread
        _here.connection, _here.timeout = connection, timeout
    connection.execute("PRAGMA busy_timeout = 0")
    try:
        return fn(*args, **kwargs)
    except pw.OperationalError as e:
        if "locked" in str(e) or "busy" in str(e):
            raise Busy(str(e)) from e
        raise
    finally:
        # Never raises: the step may have committed, and an error here would have it run again
        # elsewhere (a usage row recorded twice).
        try:
            connection.execute(f"PRAGMA busy_timeout = {int(_here.timeout)}")
        except Exception:
            log.exception("pouch: restoring the store's busy timeout failed")


def checkpoint() -> tuple[int, int]:
    """Copy what the write-ahead log holds into the database file, so the log stays small;
    returns (pages in the log, pages copied). Passive: it neither waits for nor stops readers
    and writers (what they still use is copied next time). For the store thread: it fsyncs."""
    _, logged, copied = database.execute_sql("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return logged, copied
