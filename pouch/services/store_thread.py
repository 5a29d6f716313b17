"""Store work runs here, off mitmproxy's event loop, unless it is quick and cannot block.

One thread for SQLite (a single writer never waits on its own file lock), a few for
PostgreSQL. ``run`` awaits a result (admission decisions); ``later`` queues work whose
result the response does not wait for (settlement), keeping a reference to every pending
job so none is lost, retrying a failed one with growing pauses when asked (the store may be
locked or unreachable for a while), and ``drain`` waits for them at shutdown.

A step marked ``@quick`` (a reservation, a settlement) runs on the caller's thread instead,
when the store is SQLite (``pouch.store.quick``): it then costs its own 0.1 ms, where the hop to
this thread cost more than the work and queued reservations behind settlements. If another
writer holds the store, the step is tried again on the event loop a few times (without
blocking it), then handed to this thread, which waits.

On PostgreSQL, settlements waiting together are written in one transaction (``ledger.finish``'s
``together``): one COMMIT for them all, each still a single call of pouch_finish.

Quick steps keep their order: a settlement that had to wait (the store locked, a checkpoint
running) is written before any step that came after it — a reservation never overtakes it, so
it is judged with that spend already counted (an overrun's included). Waiting settlements are
tried oldest first; one handed to this thread is written there while every younger one, and
every reservation, waits on the loop behind it, then goes on being written on the loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import functools
import logging
import threading
import time

from pouch.store import database, quick

log = logging.getLogger(__name__)

MAX_PAUSE = 30.0  # seconds between two tries of a failing job, at most
# Pauses between tries of a quick step on the event loop while another writer holds the store
# (about 60 ms in all, longer than any of its steps), before this thread takes it and waits.
QUICK_PAUSES = (0.001, 0.002, 0.004, 0.008, 0.015, 0.03)
# Quick steps between two checkpoints of the write-ahead log (each adds a few pages to it;
# SQLite's own checkpoint, which quick steps do not run, comes every 1000 pages).
CHECKPOINT_EVERY = 200
BATCH = 64  # settlements written in one transaction, at most (PostgreSQL)


@dataclasses.dataclass(eq=False)  # pending jobs are a set: compared by identity
class _Job:
    call: functools.partial
    retries: int
    tries: int = 0
    here: bool = False  # a quick step, still tried on the caller's thread (not handed to the store thread)
    attempts: int = 0  # its tries on the caller's thread that found the store busy


def _guarded(call: functools.partial):
    """Run a store step on a store thread; a connection it found dead is dropped, so the next
    step (a retry) connects again once the store is back."""
    try:
        return call()
    except BaseException as e:
        database.forget_if_broken(e)
        raise


# What stands before a quick step: nothing, earlier ones waiting for the store, or one with the thread.
CLEAR, WAIT, THREAD = "clear", "wait", "thread"


class StoreThread:
    def __init__(self, workers: int = 1):
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="pouch-store")
        self._pending: set[_Job] = set()
        self._queued: dict[_Job, None] = {}  # quick later-steps not yet written, oldest first
        self._timer: asyncio.TimerHandle | None = None  # the next try of the oldest, on the event loop
        self._lock = threading.Lock()
        self._quick_writes = 0
        self._checkpointing = False
        self._batch: list[tuple[_Job, tuple]] = []  # settlements waiting to be written together
        self._flushing = False
        self._loop: asyncio.AbstractEventLoop | None = None  # where quick steps run, to come back to
        self._advanced: asyncio.Event | None = None  # set once the store thread wrote the queued step it held

    async def run(self, fn, *args, **kwargs):
        loop = asyncio.get_running_loop()
        if quick.applies(fn):
            self._loop = loop
            pauses = iter(QUICK_PAUSES)
            while True:
                ahead = self._pump()  # the settlements before it first
                if ahead == THREAD:
                    await self._head_written()  # behind the one the store thread has, then here again
                    continue
                if ahead == CLEAR:
                    try:
                        result = self._here(fn, *args, **kwargs)
                    except quick.Busy:
                        pass
                    else:
                        self._wrote()
                        return result
                pause = next(pauses, None)
                if pause is None:
                    break  # still locked: wait for it on the store thread
                await asyncio.sleep(pause)
        return await loop.run_in_executor(self._pool, _guarded, functools.partial(fn, *args, **kwargs))

    async def _head_written(self) -> None:
        """Wait until the store thread has written the queued step it holds (``_advance``)."""
        if self._advanced is None:
            self._advanced = asyncio.Event()
        await self._advanced.wait()

    def _advance(self) -> None:
        """On the event loop, once the store thread wrote (or gave up) a queued step: the younger
        ones are written here again, and whoever waited behind it goes on."""
        self._pump()
        waiting, self._advanced = self._advanced, None
        if waiting is not None:
            waiting.set()

    def call(self, fn, *args, **kwargs):
        """Run ``fn`` in the store thread and wait for it, from code that is not on the event
        loop (e.g. closing the thread's own database connection)."""
        return self._pool.submit(_guarded, functools.partial(fn, *args, **kwargs)).result()

    def later(self, fn, *args, retries: int = 0, **kwargs) -> None:
        """Queue ``fn(*args, **kwargs)``; if it raises, try again up to ``retries`` more times
        (pauses of 0.5 s, 1 s, 2 s, ... up to MAX_PAUSE). Only for idempotent work. A quick
        step is done before this returns, unless another writer holds the store."""
        job = _Job(functools.partial(fn, *args, **kwargs), retries, here=quick.applies(fn))
        if job.here:
            try:
                self._loop = asyncio.get_running_loop()  # the one to come back to (tests run several)
            except RuntimeError:
                pass
        together = getattr(fn, "together", None)
        with self._lock:
            self._pending.add(job)
            if job.here:
                self._queued[job] = None
            elif together is not None and fn.batches():
                # written with the others waiting by then, in one transaction (see _flush)
                self._batch.append((job, args + (kwargs.get("tokens"),) if len(args) == 3 else args))
                flush, self._flushing = not self._flushing, True
                if flush:
                    self._pool.submit(self._flush, together)
                return
        if job.here:
            self._pump()
        else:
            self._submit(job)

    def _flush(self, together) -> None:
        """On a store thread: write the settlements waiting (up to BATCH) in one transaction,
        then queue the next batch behind whatever was submitted meanwhile (reservations wait
        for one batch at most). If the batch fails, each is written alone, with its retries."""
        with self._lock:
            taken, self._batch = self._batch[:BATCH], self._batch[BATCH:]
        try:
            if taken:
                _guarded(functools.partial(together, [arguments for _, arguments in taken]))
        except Exception as e:
            log.warning("store: %d settlements written together failed (%s); each is written alone", len(taken), e)
            for job, _ in taken:
                self._submit(job)
        else:
            with self._lock:
                for job, _ in taken:
                    self._pending.discard(job)
        with self._lock:
            more = self._flushing = bool(self._batch)
        if more:
            self._pool.submit(self._flush, together)

    def _pump(self) -> str:
        """Write the queued quick steps here, oldest first, until one cannot be: CLEAR when
        none is left, WAIT when the store is busy (the oldest is tried again in a moment),
        THREAD when the store thread has the oldest (and so every younger one)."""
        while True:
            with self._lock:
                if self._timer is not None:
                    self._timer.cancel()
                    self._timer = None
                job = next(iter(self._queued), None)
                if job is None:
                    return CLEAR
                behind_thread = not job.here
            if behind_thread:
                return THREAD  # the younger ones wait here until it is written (_advance)
            try:
                self._here(job.call)
            except quick.Busy:
                job.attempts += 1
                try:
                    loop = asyncio.get_running_loop()
                except RuntimeError:
                    loop = None  # not on the event loop: nothing to come back to us later
                if loop is not None and job.attempts <= len(QUICK_PAUSES):
                    with self._lock:
                        self._timer = loop.call_later(QUICK_PAUSES[job.attempts - 1], self._pump)
                    return WAIT
                self._hand_over(job)
                return THREAD
            except Exception as e:  # it rolled back whole: the store thread tries again, with its retries
                log.warning("store work failed (%s); trying again in the store thread", e)
                self._hand_over(job)
                return THREAD
            self._wrote()
            with self._lock:
                self._pending.discard(job)
                self._queued.pop(job, None)

    def _hand_over(self, job: _Job) -> None:
        """Give the oldest queued step to the store thread, which may wait for the lock; the
        younger ones stay queued here, written after it (``_advance``), not on the thread: a
        thread that took them all kept every later step there too, under steady load for good,
        each paying the hop (3/4 of the steps went there in a profile)."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            job.here = False
        self._submit(job)

    def _hand_over_queued(self) -> None:
        """Give every queued quick step still tried here to the store thread, oldest first (it
        runs them in that order), and stop trying them here."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            moving = [job for job in self._queued if job.here]
            for job in moving:
                job.here = False
        for job in moving:
            self._submit(job)

    def _here(self, fn, *args, **kwargs):
        if self._checkpointing:
            raise quick.Busy("checkpointing")
        return quick.run_here(fn, *args, **kwargs)

    def _wrote(self) -> None:
        """Count a quick step; every CHECKPOINT_EVERY, checkpoint on this thread. Quick steps
        wait for it (as for a locked store: on the loop, then here), so that it catches up with
        the log: a checkpoint racing a steady stream of commits never finishes, and the log
        is only rewound once one has, so it would grow without end."""
        with self._lock:
            self._quick_writes += 1
            if self._quick_writes < CHECKPOINT_EVERY or self._checkpointing:
                return
            self._quick_writes = 0
            self._checkpointing = True
        self.later(self._checkpoint)

    def _checkpoint(self) -> None:
        try:
            quick.checkpoint()
        finally:
            self._checkpointing = False

    def _submit(self, job: _Job) -> None:
        self._pool.submit(_guarded, job.call).add_done_callback(lambda future: self._done(job, future))

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
            queued = job in self._queued
            self._queued.pop(job, None)
        if queued and self._loop is not None and not self._loop.is_closed():
            # written (or given up): younger quick steps are written here again
            self._loop.call_soon_threadsafe(self._advance)

    def drain(self, timeout: float | None = 30) -> None:
        """Wait until every queued job has finished (or failed for good), up to ``timeout``.
        Quick steps waiting for their next try on the event loop go to the store thread now:
        the loop may be the caller, waiting here."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.pending and (deadline is None or time.monotonic() < deadline):
            self._hand_over_queued()
            time.sleep(0.01)

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)


store_thread = StoreThread()
