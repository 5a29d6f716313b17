"""The Responses API over WebSocket (``wss://api.openai.com/v1/responses``), as pouch reads it.

The client opens the socket with a GET (``Upgrade: websocket``, the key in ``Authorization``)
and sends JSON text messages. ``response.create`` carries the body of ``POST /v1/responses``
(``stream`` is implied) with two fields of the socket's own: ``stream_id``, the lane (responses
of one lane are processed one after the other, in order; other lanes may run meanwhile), and
``generate`` (false: prepare the request's state without output). ``response.processed``
acknowledges a response. The server answers a create with the Responses stream's events, one per
message (``response.created`` ... ``response.completed`` with usage, each echoing the lane's
``stream_id``), and a request it refuses with ``{"type": "error", "status": 4xx, "error": {...}}``.
Codex CLI (codex-rs/codex-api/src/endpoint/responses_websocket.rs) sends one create at a time
and waits for its ``response.completed``; an error event with a status ends its request at once.
"""

from __future__ import annotations

import json
from typing import NamedTuple

from pouch.domain.errors import BadRequest
from pouch.providers import json_body
from pouch.providers.base import Reply
from pouch.providers.values import event_type, loads_object, shown

CREATE = "response.create"
# Client messages that make nothing and bill nothing: they go on as they are.
FREE = frozenset({"response.processed"})
# Server events that end a response; ``error`` ends a request the server did not start.
FINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})
STARTED = "response.created"
ERROR = "error"


class ClientMessage(NamedTuple):
    kind: str  # the message's type: "response.create", "response.processed", ...
    body: dict  # the message without its type: for a create, the body of POST /v1/responses


def read_client_message(data: bytes | str) -> ClientMessage:
    """A client's message as the server reads it; BadRequest for one it would not read, or
    could read otherwise than pouch: every message is read by ``json_body``'s strict rules (no
    name twice, no names of one spelling, no NaN, no lone surrogate, no byte order mark) and
    its top-level names must be in lower case, as the API's are, so that no server reads a
    ``"Type"`` or a second ``"type"`` pouch did not (a create passed off as an acknowledgement)."""
    try:
        message = json_body.parse_json_object(data.encode() if isinstance(data, str) else data)
        json_body.check_lowercase_names(message)
    except ValueError as e:  # BadRequest is not one: json_body's reasons, about this message
        raise BadRequest(f"a Responses WebSocket message {_without_subject(str(e))}") from None
    except BadRequest as e:
        raise BadRequest(f"a Responses WebSocket message's {_without_subject(e.message)}") from None
    kind = message.pop("type", None)
    if not isinstance(kind, str) or not kind:
        raise BadRequest(f"a Responses WebSocket message needs a 'type', got {shown(kind)}")
    return ClientMessage(kind, message)


def _without_subject(reason: str) -> str:
    """json_body's message about a request body, about this message instead."""
    return reason.removeprefix("request body ")


def acknowledged(body: dict) -> str:
    """The response a ``response.processed`` acknowledges; BadRequest without one."""
    response_id = body.get("response_id")
    if not isinstance(response_id, str) or not response_id:
        raise BadRequest(f"a response.processed message names the response it acknowledges in 'response_id', "
                         f"got {shown(response_id)}")
    return response_id


def lane_of(message: dict) -> str | None:
    """The lane (``stream_id``) a create names, or its events echo; None: the default lane."""
    lane = message.get("stream_id")
    return lane if isinstance(lane, str) else None


def create_message(body: dict) -> bytes:
    """A ``response.create`` message with ``body`` (after pouch changed it: an output cap, a
    bound on tool calls)."""
    return json.dumps({"type": CREATE, **body}, ensure_ascii=False).encode()


class ServerEvent(NamedTuple):
    kind: str | None
    lane: str | None
    event: dict | None  # parsed only when the kind needs it (a start, an end, an error)


def read_server_event(text: str) -> ServerEvent:
    """The event's type and lane, parsing the JSON only for the few events that matter (every
    delta passes here: most are never parsed)."""
    kind = event_type(text)
    needs = kind in FINAL or kind in (STARTED, ERROR)
    event = loads_object(text) if needs or '"stream_id"' in text else None
    return ServerEvent(kind, lane_of(event) if event else None, event if needs else None)


def error_status(event: dict) -> int | None:
    """The HTTP status an error event reports (Codex ends the request only on one), else None."""
    status = event.get("status", event.get("status_code"))
    return status if isinstance(status, int) and not isinstance(status, bool) else None


def error_event(reply: Reply, lane: str | None = None) -> bytes:
    """A refusal (the provider's error ``reply``, as the HTTP form sends it) as the error event
    the WebSocket sends: same status, same error object, its headers beside them."""
    body = json.loads(reply.body)
    headers = {name: value for name, value in reply.headers.items() if name.lower() != "content-type"}
    event = {"type": ERROR, "status": reply.status, "error": body["error"]}
    if headers:
        event["headers"] = headers
    if lane is not None:
        event["stream_id"] = lane
    return json.dumps(event).encode()


def event_message(event: dict, lane: str | None) -> bytes:
    """One event of a response pouch makes itself (a mock), as the server sends it on ``lane``."""
    return json.dumps(event if lane is None else {**event, "stream_id": lane}).encode()
