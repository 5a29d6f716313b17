"""Store work of the admin API, off the event loop on threads of its own.

The gateway's store thread (``pouch.services.store_thread``) is where a request's admission
waits: on SQLite it is one thread, and a usage export or an overview taking a second there would
hold every request that needs the store behind it. The admin API gets its own ``StoreThread``:
its reads run beside the gateway's (SQLite's write-ahead log lets readers and the writer go on
together), its few writes take the store's lock like the ``pouch`` CLI's do.

A thread whose connection failed closes it and tries once more on a new one: after PostgreSQL
restarts, the API answers again without a restart of its own. (Every admin step may run twice:
reads, and writes that are idempotent or fail the second time on what the first did.)
"""

from __future__ import annotations

import logging

import peewee as pw

from pouch.services.store_thread import StoreThread
from pouch.store.database import database

log = logging.getLogger(__name__)

admin_store = StoreThread(workers=2)


def _reconnecting(fn, *args, **kwargs):
    """``fn``; on a connection that failed, once more on a new one (PostgreSQL: a connection
    from before a restart fails on its first use, before anything reached the server)."""
    try:
        return fn(*args, **kwargs)
    except (pw.OperationalError, pw.InterfaceError):
        _close()
        if isinstance(database.obj, pw.SqliteDatabase):
            raise  # a local file: a new connection would meet the same lock or the same error
    try:
        return fn(*args, **kwargs)
    except (pw.OperationalError, pw.InterfaceError):
        _close()
        raise


def _close() -> None:
    try:
        database.close()
    except Exception as e:  # already gone: the next call connects anew all the same
        log.debug("closing a failed admin store connection: %s", e)


async def run(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` on an admin store thread, awaited."""
    return await admin_store.run(_reconnecting, fn, *args, **kwargs)
