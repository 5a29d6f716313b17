"""Store work runs here, off mitmproxy's event loop.

One thread for SQLite (a single writer never waits on its own file lock), a few for
PostgreSQL. ``run`` awaits a result (admission decisions); ``later`` queues work whose
result the response does not wait for (settlement), keeping a reference to every pending
job so none is lost, retrying a failed one with growing pauses when asked (the store may be
locked or unreachable for a while), and ``drain`` waits for them at shutdown.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import functools
import logging
import threading
import time

log = logging.getLogger(__name__)

MAX_PAUSE = 30.0  # seconds between two tries of a failing job, at most


@dataclasses.dataclass(eq=False)  # pending jobs are a set: compared by identity
class _Job:
    call: functools.partial
    retries: int
    tries: int = 0


class StoreThread:
    def __init__(self, workers: int = 1):
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="pouch-store")
        self._pending: set[_Job] = set()
        self._lock = threading.Lock()

    async def run(self, fn, *args, **kwargs):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    def call(self, fn, *args, **kwargs):
        """Run ``fn`` in the store thread and wait for it, from code that is not on the event
        loop (e.g. closing the thread's own database connection)."""
        return self._pool.submit(fn, *args, **kwargs).result()

    def later(self, fn, *args, retries: int = 0, **kwargs) -> None:
        """Queue ``fn(*args, **kwargs)``; if it raises, try again up to ``retries`` more times
        (pauses of 0.5 s, 1 s, 2 s, ... up to MAX_PAUSE). Only for idempotent work."""
        job = _Job(functools.partial(fn, *args, **kwargs), retries)
        with self._lock:
            self._pending.add(job)
        self._submit(job)

    def _submit(self, job: _Job) -> None:
        self._pool.submit(job.call).add_done_callback(lambda future: self._done(job, future))

    def _done(self, job: _Job, future: concurrent.futures.Future) -> None:
        error = None if future.cancelled() else future.exception()
        if error is not None and job.tries < job.retries:
            pause = min(0.5 * 2**job.tries, MAX_PAUSE)
            job.tries += 1
            log.warning("store work failed (%s); try %d of %d in %.1f s", error, job.tries, job.retries, pause)
            timer = threading.Timer(pause, self._submit, (job,))
            timer.daemon = True
            timer.start()
            return
        if error is not None:
            log.error("store work failed for good", exc_info=error)
        with self._lock:
            self._pending.discard(job)

    def drain(self, timeout: float | None = 30) -> None:
        """Wait until every queued job has finished (or failed for good), up to ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.pending and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.01)

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)


store_thread = StoreThread()
