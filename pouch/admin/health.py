"""``/healthz`` (the process answers) and ``/readyz`` (the store answers), both without a token.

Readiness is checked on a connection opened for the purpose, not on one the API already holds:
an open SQLite file descriptor keeps answering after the file is gone, and an established
PostgreSQL connection says nothing of whether a new one (a restarted gateway's) would get in."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import sqlite3
from pathlib import Path

import peewee as pw

from pouch.admin.handler import ApiError, Handler
from pouch.store.database import database

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 5.0  # seconds a readiness check may take before it counts as a failure


def store_answers() -> bool:
    """Whether a fresh connection to the store reads its migrations table (blocking)."""
    db = database.obj
    try:
        if db is None:
            return False
        if isinstance(db, pw.SqliteDatabase):
            if db.database == ":memory:":
                return True
            # Read-only: a probe never creates a missing database file.
            connection = sqlite3.connect(Path(db.database).absolute().as_uri() + "?mode=ro", uri=True, timeout=2)
            try:
                connection.execute("SELECT COUNT(*) FROM pouch_migrations").fetchone()
            finally:
                connection.close()
        else:
            fresh = type(db)(db.database, **{**db.connect_params, "connect_timeout": int(PROBE_TIMEOUT)})
            try:
                fresh.execute_sql("SELECT COUNT(*) FROM pouch_migrations").fetchone()
            finally:
                fresh.close()
    except Exception as e:
        log.warning("pouch admin: the store does not answer: %s", e)
        return False
    return True


class Probe:
    """One readiness check at a time, on a thread of its own (a store that hangs ties up that
    thread, not the API's); callers arriving meanwhile share its answer."""

    def __init__(self):
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="pouch-admin-probe")
        self._running: asyncio.Future | None = None

    async def ready(self) -> bool:
        if self._running is None or self._running.done():
            self._running = asyncio.get_running_loop().run_in_executor(self._thread, store_answers)
        try:
            return await asyncio.wait_for(asyncio.shield(self._running), PROBE_TIMEOUT)
        except TimeoutError:
            return False


probe = Probe()


class Healthz(Handler):
    public = True

    async def get(self):
        self.send({"status": "ok"})


class Readyz(Handler):
    public = True

    async def get(self):
        if not await probe.ready():
            raise ApiError(503, "the store does not answer (the log says why)")
        self.send({"status": "ready"})
