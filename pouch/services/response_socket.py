"""One Responses WebSocket as pouch follows it (``addons/websocket.py``).

One socket carries many responses, so the flow's ``Exchange`` (one request, one reservation)
does not fit: each ``response.create`` pouch admits becomes a ``Response`` with its own
reservation, queued in its lane (the server answers a lane's creates one after another, in
order: the front of each lane is the one its events belong to), followed through the server's
events and ended exactly once with a ``settlement.Ending``, as the usage link ends an SSE stream:

- ``response.completed`` / ``incomplete`` / ``failed``: the provider's usage (none: ``no_usage``)
- an ``error`` event with a status, before ``response.created``, while that create is the only
  one open and the last message the client sent on: the server refused it (``upstream_error``,
  not billed). An error pouch cannot tie to one create for sure (several open, or an
  acknowledgement sent since, which the error may answer) ends nothing: the create's own events
  or the close settle it, so a create that runs after all is never left unpaid
- another ``response.created`` on a lane whose front had started: the front ended unreported
- the socket closing: every response still open is a stream cut short (the cut-short rules)

Plain Python: no mitmproxy, no store.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime

from pouch.domain.keys import Key
from pouch.domain.money import Money
from pouch.domain.usage import Usage
from pouch.pricing.price import Price, Retirement
from pouch.providers.base import Call, Endpoint, Provider
from pouch.providers.openai import websocket
from pouch.providers.openai.streams import ResponsesStreamTracker
from pouch.rules.settlement import Ending
from pouch.services.attribution import NONE, Attribution
from pouch.services.exchange import Reservation
from pouch.tokens.count import count_text

MAX_STORIES = 50  # settled responses a socket keeps for mitmweb (the counts cover all of them)
MAX_SEEN = 1000  # the server's response ids a socket remembers (what an acknowledgement may name)


@dataclasses.dataclass(slots=True, eq=False)
class Response:
    """One ``response.create`` pouch admitted, from admission to its settlement."""

    index: int  # its place among the socket's creates: 1, 2, ...
    lane: str | None  # its stream_id; None: the default lane
    call: Call
    requested_at: datetime.datetime  # when the client sent it: the prices in effect then
    sent_at: float  # time.time(), for latency
    input_tokens: int = 0  # counted at admission (exact, or an upper bound)
    exact: bool = True
    tool_calls: tuple[tuple[tuple[str, ...], int], ...] = ()
    entry: Price | Retirement | None = None
    reservation: Reservation | None = None
    output_capped: int | None = None
    tools_capped: int | None = None
    mock: Usage | None = None  # answered by pouch with this usage
    tracker: ResponsesStreamTracker = dataclasses.field(default_factory=ResponsesStreamTracker)
    response_id: str | None = None  # the server's id, from response.created
    first_event: float | None = None  # time.time() of its first event, for time to first token
    attribution: Attribution = NONE  # its end user (the handshake's header, else the create's body), tags, session


@dataclasses.dataclass(slots=True, eq=False)
class Socket:
    """One WebSocket to a Responses API, and whose it is (the handshake's exchange)."""

    provider: Provider
    endpoint: Endpoint  # the handshake's: what a create is read as (its api) and recorded under
    key: Key | None  # None: an observed credential
    observed: str | None = None
    attribution: Attribution = NONE  # read from the handshake: x-pouch-user, -tags, -session, the agent's session
    own_credential: bool = False
    mock: bool = False  # pouch answers every create itself (a mock key, or pouch_mock=all)
    lanes: dict[str | None, collections.deque[Response]] = dataclasses.field(default_factory=dict)
    creates: int = 0  # response.create messages the client sent
    refused: int = 0
    last_refusal: dict | None = None  # {"kind", "code", "status", "message"}
    stories: collections.deque[dict] = dataclasses.field(default_factory=lambda: collections.deque(maxlen=MAX_STORIES))
    cost_pico: int = 0  # what the settled responses cost (a mock's included)
    charged_pico: int = 0  # what the key was charged for them
    settled: int = 0
    # The server's ids of the responses that ended last: a late final event of one is not another's.
    ended_ids: collections.deque[str] = dataclasses.field(default_factory=lambda: collections.deque(maxlen=64))
    # The server's ids of the responses it started or ended here, the latest MAX_SEEN (an ordered set).
    seen_ids: dict[str, None] = dataclasses.field(default_factory=dict)
    # The last message that went on: the create it was (None: another message, or none yet).
    last_forwarded: Response | None = None
    closing: str | None = None  # pouch is closing the socket, why: nothing more goes on

    @property
    def who(self) -> str:
        return self.key.name if self.key else f"observed:{self.observed or '?'}"

    def admitted(self, response: Response) -> None:
        self.lanes.setdefault(response.lane, collections.deque()).append(response)
        self.last_forwarded = response

    def forwarded_other(self) -> None:
        """A message other than a create went on (an acknowledgement): an error may answer it."""
        self.last_forwarded = None

    def knows(self, response_id: str) -> bool:
        """Whether the server started or ended a response of this id on this socket."""
        return response_id in self.seen_ids

    def open(self) -> list[Response]:
        return [response for lane in self.lanes.values() for response in lane]

    def follow(self, text: str, now: float) -> list[tuple[Response, Ending]]:
        """Feed one server event; the responses it ended, each with how it ended."""
        event = websocket.read_server_event(text)
        self._saw(_response_id(event.event))
        lane = self._lane(event.lane)
        if not lane:
            return self._unsolicited(event, text, now)
        front, ended = lane[0], []
        if event.kind == websocket.STARTED:
            response_id = _response_id(event.event)
            if front.response_id is not None and response_id != front.response_id:
                # The front's own end never came (an error ended it, a steered one's successor starts).
                ended.append(self._end(lane, _cut(front, "it ended without response.completed")))
                if not lane:
                    return ended
                front = lane[0]
            front.response_id = response_id
        if front.first_event is None:
            front.first_event = now
        if event.kind == websocket.ERROR:
            status = websocket.error_status(event.event or {})
            if front.response_id is None and status is not None and status >= 400 and self._only(front):
                # The server refused the create (Codex ends the request on an error with a status).
                ending = Ending(status=status, streamed=True, input_tokens=front.input_tokens)
                return [*ended, self._end(lane, ending)]
            # Any other error ends nothing yet: its response.failed, the next response of the lane
            # or the socket's close says what it cost.
            return ended
        front.tracker.event(text)
        if event.kind in websocket.FINAL:
            ending = Ending(status=200, followed=True, usage=front.tracker.usage(), reported=front.tracker.model(),
                            streamed=True, input_tokens=front.input_tokens)
            ended.append(self._end(lane, ending))
        return ended

    def _only(self, front: Response) -> bool:
        """Whether an error can only be about ``front``: the one create open, and the last message
        that went on (Codex sends one create at a time and waits for its end)."""
        return self.last_forwarded is front and len(self.open()) == 1

    def _saw(self, response_id: str | None) -> None:
        if response_id is not None and response_id not in self.seen_ids:
            self.seen_ids[response_id] = None
            if len(self.seen_ids) > MAX_SEEN:
                del self.seen_ids[next(iter(self.seen_ids))]

    def _lane(self, name: str | None) -> collections.deque[Response] | None:
        """The lane an event belongs to; a server that does not echo the lane of a socket with one
        lane open speaks for that one."""
        if lane := self.lanes.get(name):
            return lane
        if name is None and len(self.lanes) == 1:
            return next(iter(self.lanes.values()))
        return None

    def close(self, reason: str) -> list[tuple[Response, Ending]]:
        """The socket closed: every response still open ends, cut short."""
        ended = [(response, _cut(response, reason)) for response in self.open()]
        self.lanes.clear()
        return ended

    def _end(self, lane: collections.deque[Response], ending: Ending) -> tuple[Response, Ending]:
        response = lane.popleft()
        if not lane:
            self.lanes = {key: value for key, value in self.lanes.items() if value}
        if response.response_id is not None:
            self.ended_ids.append(response.response_id)
        return response, ending

    def _unsolicited(self, event: websocket.ServerEvent, text: str, now: float) -> list[tuple[Response, Ending]]:
        """A response no create of the client's asked for (only steering, which pouch refuses
        unless the operator allows unmetered use, makes them): nothing was reserved for it, but
        what the provider reports it used is recorded and charged all the same."""
        if event.kind not in websocket.FINAL or event.event is None or _response_id(event.event) in self.ended_ids:
            return []
        reported = event.event.get("response")
        model = reported.get("model") if isinstance(reported, dict) else None
        at = datetime.datetime.fromtimestamp(now, datetime.UTC)
        response = Response(0, event.lane, Call(model if isinstance(model, str) else "unknown", True, None), at, now)
        response.tracker.event(text)
        usage = response.tracker.usage()
        return [(response, Ending(status=200, followed=True, usage=usage, reported=response.tracker.model(),
                                  streamed=True))]


def _response_id(event: dict | None) -> str | None:
    response = (event or {}).get("response")
    found = response.get("id") if isinstance(response, dict) else None
    return found if isinstance(found, str) else None


def _cut(response: Response, why: str) -> Ending:
    """A response that ended before its final event: what the cut-short rules need. Started,
    it is a stream cut short (output seen so far counted); not started, a request the server
    had and never answered."""
    if response.response_id is None:
        return Ending(status=None, error=why, sent=True, streamed=True, input_tokens=response.input_tokens)
    tracker = response.tracker
    usage = tracker.usage()
    seen = count_text(response.call.model, tracker.output_text()) if usage is None else 0
    return Ending(status=200, followed=True, usage=usage, reported=tracker.model(), error=why, streamed=True,
                  input_tokens=response.input_tokens, seen_output=seen)


def story(socket: Socket) -> str:
    """The socket's line in mitmweb's flow list, what it cost and whose first (as for an HTTP
    flow): ``$0.0012 alice · WebSocket · 3 responses · last gpt-4o-mini · in 9 · out 4 · 370 ms``."""
    cost = f"mock {Money(socket.cost_pico)}" if socket.mock else str(Money(socket.charged_pico))
    parts = [f"{cost} {socket.who}", "WebSocket", f"{socket.settled} response{'s' * (socket.settled != 1)}"]
    if open_ := len(socket.open()):
        parts.append(f"{open_} open")
    if socket.refused:
        refusal = socket.last_refusal or {}
        parts.append(f"{socket.refused} refused (last: {refusal.get('kind')}: {refusal.get('message')})")
    if socket.stories:
        last = socket.stories[-1]
        line = f"last {last['model']} · in {last['input_tokens']} · out {last['output_tokens']}"
        if last["reasoning_tokens"]:
            line += f" (reasoning {last['reasoning_tokens']})"
        line += f" · {last['latency_ms']} ms"
        if last["outcome"] not in ("ok", "mock"):
            line += " · " + last["outcome"].replace("_", " ")
        parts.append(line)
    return " · ".join(parts)


def snapshot(socket: Socket) -> dict:
    """The socket as JSON, for ``flow.metadata`` (mitmweb, saved flows)."""
    return {
        "key": socket.who, "mock": socket.mock, "creates": socket.creates, "settled": socket.settled,
        "open": len(socket.open()), "refused": socket.refused, "last_refusal": socket.last_refusal,
        "cost_usd": Money(socket.cost_pico).json(), "charged_usd": Money(socket.charged_pico).json(),
        "responses": list(socket.stories), "story": story(socket),
    }
