"""Store work runs here, off mitmproxy's event loop.

One thread for SQLite (a single writer never waits on its own file lock), a few for
PostgreSQL. ``run`` awaits a result (admission decisions); ``later`` queues work whose
result the response does not wait for (settlement), keeping a reference to every pending
job so none is lost, and ``drain`` waits for them at shutdown.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging

log = logging.getLogger(__name__)


class StoreThread:
    def __init__(self, workers: int = 1):
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="pouch-store")
        self._pending: set[concurrent.futures.Future] = set()

    async def run(self, fn, *args, **kwargs):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    def later(self, fn, *args, **kwargs) -> concurrent.futures.Future:
        future = self._pool.submit(fn, *args, **kwargs)
        self._pending.add(future)
        future.add_done_callback(self._done)
        return future

    def _done(self, future: concurrent.futures.Future) -> None:
        self._pending.discard(future)
        if not future.cancelled() and future.exception() is not None:
            log.error("store work failed", exc_info=future.exception())

    def drain(self, timeout: float | None = 30) -> None:
        concurrent.futures.wait(list(self._pending), timeout=timeout)

    @property
    def pending(self) -> int:
        return len(self._pending)


store_thread = StoreThread()
