"""The fake OpenAI's Responses API over WebSocket: ``GET /v1/responses`` with ``Upgrade:
websocket`` (also under the compatible vendors' base paths).

Each ``response.create`` message is answered as ``POST /v1/responses`` with ``"stream": true``
is (``openai_shapes.response_events``), one event per text message, in the order the creates
came (one at a time per socket, as OpenAI processes a lane's creates), each event echoing the
create's ``stream_id``. ``response.processed`` is taken silently; anything else, or a message
that is not a JSON object, gets ``{"type": "error", "status": 400, "error": {...}}``.

The ``x-fake-*`` controls come from the handshake's headers, overridden per create by
``metadata`` entries named like the headers (``"metadata": {"x-fake-abort-after": "2"}``):
``status`` answers the create with an error event of that status (the handshake itself gets an
HTTP error when its own header says so), ``delay`` waits before the first event,
``chunk_delay`` between events, ``abort_after`` cuts the connection after that many text deltas,
``no_usage`` sends ``"usage": null``, and the rest as for HTTP.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from .controls import parse_controls
from .openai_shapes import error_body, response_events
from .server import Request
from .websocket import Session


@dataclass(frozen=True)
class RecordedMessage:
    socket: str  # the id of the handshake's request (the socket it came on)
    body: object  # the parsed JSON, or the raw text
    timestamp: float


def error_event(status: int, message: str, lane: str | None = None) -> str:
    event = {"type": "error", "status": status, "error": error_body(status, message)["error"]}
    return json.dumps(event if lane is None else {**event, "stream_id": lane})


class ResponsesSocket:
    """Mixed into ``FakeOpenAI``: its sockets, and the messages they carried (``messages``)."""

    def __init__(self, **kwargs):
        self._messages: list[RecordedMessage] = []
        super().__init__(**kwargs)

    def serves_websocket(self, path: str) -> bool:
        return path == "/v1/responses" or any(path == base + "responses" for base in self.vendor_bases)

    @property
    def messages(self) -> list[RecordedMessage]:
        """A snapshot of the client messages received on every socket, oldest first."""
        with self._lock:
            return list(self._messages)

    def reset(self):
        super().reset()
        with self._lock:
            self._messages.clear()

    def websocket(self, session: Session, request: Request) -> None:
        for data in session.messages():
            try:
                message = json.loads(data)
            except ValueError:
                message = data
            if self.record:
                with self._lock:
                    self._messages.append(RecordedMessage(request.id, message, time.time()))
            kind = message.get("type") if isinstance(message, dict) else None
            if kind == "response.create":
                self._create(session, request, message)
            elif kind != "response.processed":
                session.send(error_event(400, f"fake: unsupported message type {kind!r}"))

    def _create(self, session: Session, request: Request, message: dict) -> None:
        body = {name: value for name, value in message.items() if name != "type"}
        lane = body.get("stream_id")
        metadata = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
        headers = {**request.headers, **{k: str(v) for k, v in metadata.items() if k.startswith("x-fake-")}}
        try:
            controls = parse_controls(headers, self.behaviour)
            time.sleep(controls.delay)
            if controls.status and controls.status >= 400:
                session.send(error_event(controls.status, f"fake: {controls.status} as requested by x-fake-status",
                                         lane))
                return
            events = response_events(body, controls)
        except ValueError as e:
            session.send(error_event(400, str(e), lane))
            return
        sent_content = 0
        for index, (event, is_content) in enumerate(events):
            if controls.abort_after is not None and sent_content >= controls.abort_after:
                session.abort()
                return
            if index and controls.chunk_delay:
                time.sleep(controls.chunk_delay)
            if not session.send(json.dumps(event if lane is None else {**event, "stream_id": lane})):
                return
            sent_content += is_content
