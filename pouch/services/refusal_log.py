"""Every request pouch refused goes to the store, so ``pouch usage`` shows it after a restart.

Recording must never slow or fail the flow, nor let a client spraying refused requests (bad
keys, say) make the store the bottleneck: the hook only appends a small row to a bounded
queue; one store-thread job at a time drains it in batches (one transaction each), so a
burst of refusals costs a few inserts, not one store round-trip each. When the queue is full
(the store cannot keep up, or is down), further refusals are counted and logged, not kept.
"""

from __future__ import annotations

import collections
import logging
import threading
import weakref
from datetime import UTC, datetime

from mitmproxy import http

from pouch.metrics.traffic import traffic
from pouch.services import chain
from pouch.services.secrets import redact_text
from pouch.services.store_thread import StoreThread, store_thread
from pouch.store import refusals

log = logging.getLogger(__name__)

MAX_QUEUED = 10_000  # rows waiting for the store, at most (a few MB)
BATCH = 500  # rows per transaction


def refusal_row(flow: http.HTTPFlow) -> dict:
    """What is stored of a refused flow: who, what, and the error the client got."""
    found = chain.existing(flow)
    refused = found.refusal
    return {
        "ts": datetime.fromtimestamp(flow.request.timestamp_start, UTC),
        "key": found.key.id if found.key else None,
        "provider": found.provider.name,
        "model": found.call.model if found.call else None,
        "endpoint": found.endpoint.name if found.endpoint else None,
        "status": refused["status"],
        "reason": refused.get("code") or refused["kind"],
        # the message may quote the request's path, and so a credential in its query
        "message": redact_text(refused["message"]),
        "flow_id": flow.id,  # for the dashboard's link to mitmweb's view of it
        "team": found.key.team.name if found.key and found.key.team else None,
        "end_user": found.attribution.end_user,
    }


class RefusalLog:
    def __init__(self, thread: StoreThread = store_thread, limit: int = MAX_QUEUED):
        self._thread = thread
        self._limit = limit
        self._queue: collections.deque[dict] = collections.deque()
        self._lock = threading.Lock()
        self._draining = False  # a drain job is queued or running
        self._dropped = 0
        # response and error may both see a flow (a client gone while its refusal was sent)
        self._noted: weakref.WeakSet[http.HTTPFlow] = weakref.WeakSet()

    def note(self, flow: http.HTTPFlow) -> None:
        """Queue the flow's refusal, if pouch refused it. Never raises, never waits."""
        try:
            found = chain.existing(flow)
            if found is None or not found.refusal or flow in self._noted:
                return
            self._noted.add(flow)
            self.note_row(refusal_row(flow), found.refusal["kind"], found.key.name if found.key else "")
        except Exception:
            log.exception("pouch: could not note a refusal")

    def note_row(self, row: dict, kind: str = "request", key_name: str = "") -> None:
        """Queue a refusal row made elsewhere (one message of a WebSocket, say: its flow lives
        on after it), and count it for /metrics: ``kind``, the error's (``PouchError.kind``),
        ``key_name``, its key's ("" for none). Never raises, never waits."""
        try:
            traffic.refused(key_name, row["provider"], row["model"], kind)
            with self._lock:
                if len(self._queue) >= self._limit:
                    self._dropped += 1
                    return
                self._queue.append(row)
                if self._draining:
                    return
                self._draining = True
            self._thread.later(self._drain)
        except Exception:
            log.exception("pouch: could not note a refusal")

    def _drain(self) -> None:
        """In the store thread: write queued rows in batches until none is left."""
        while True:
            with self._lock:
                batch = [self._queue.popleft() for _ in range(min(BATCH, len(self._queue)))]
                dropped, self._dropped = self._dropped, 0
                if not batch:
                    self._draining = False  # under the lock: note() then schedules a new drain
            if dropped:
                log.warning("pouch: %d refusals were not recorded: more than %d waited for the store",
                            dropped, self._limit)
            if not batch:
                return
            try:
                refusals.record(batch)
            except Exception as e:  # the flows were answered already; only the record is lost
                log.error("pouch: recording %d refusals failed: %s", len(batch), e)

    @property
    def queued(self) -> int:
        with self._lock:
            return len(self._queue)


refusal_log = RefusalLog()
