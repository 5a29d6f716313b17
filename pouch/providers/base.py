"""What the chain needs to know about a provider, and nothing vendor-specific.

A provider says which hosts and paths it owns, reads a request (model, stream flag, output
cap, prompt), reads usage from a JSON body or from SSE events as they pass, writes errors in
its own shape (so SDKs raise their own exception classes), swaps in the upstream credential,
and fabricates mock responses (``Provider``). What does not depend on the host serving a
request shape -- counting its prompt, the text an echo mock answers with, its transcript in
mitmweb's LLM view -- is the shape's ``Api``; how a family of models is tokenized is a
``Tokenizer``. The links in ``addons/``, ``pouch.tokens``, the mock and the view use only
these, found through ``pouch.providers.registry``.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable
from fractions import Fraction
from typing import TYPE_CHECKING, Protocol

from pouch.domain.errors import PouchError
from pouch.domain.usage import Usage

if TYPE_CHECKING:
    from pouch.providers.local import Local
    from pouch.providers.transcript_format import Renderer
    from pouch.tokens.pieces import Prompt

log = logging.getLogger(__name__)

METERED, FREE, UNMETERED = "metered", "free", "unmetered"
# What an official client calls besides the model API (settings, telemetry): its family's policy
# decides (pouch.providers.side_paths); never a usage row.
SIDE = "side"
# A WebSocket whose messages are metered one by one (the Responses API over WebSocket): the
# connection is admitted like a free endpoint; addons/websocket.py admits and meters each message.
WEBSOCKET = "websocket"


@dataclasses.dataclass(frozen=True, slots=True)
class Endpoint:
    """One kind of request a provider serves.

    ``metering``: METERED (priced and budgeted), FREE (no cost: passes with the real
    credential, no usage row), UNMETERED (costs money pouch cannot price: refused unless
    the operator opts in), SIDE (what official clients call besides the model API:
    ``pouch.providers.side_paths``). ``api`` names the request shape of a metered endpoint,
    an ``Api`` of the provider's (chat, responses, completions, embeddings, anthropic_messages, gemini).
    ``name`` is what usage rows record (``chat.completions``).
    """

    name: str
    metering: str
    api: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class ToolBound:
    """Paid server-side tools a request lets the provider call, and the bound on those calls.

    ``tools`` are price-table names (``web_search``): one tool per bound where each has its own
    (Anthropic's ``max_uses``), every built-in tool at once where one bound covers them all
    (OpenAI's ``max_tool_calls``). ``max_calls`` is the request's bound, or the provider's
    own fixed one; None when there is none, and pouch then injects its default
    (``Provider.bound_tools``). Each call may also start a model round that re-reads the
    growing context, billed as input.
    """

    tools: tuple[str, ...]
    max_calls: int | None


@dataclasses.dataclass(slots=True)
class Call:
    """A metered request as pouch understands it (read from the request, before forwarding)."""

    model: str
    stream: bool
    max_output: int | None  # the client's own output cap, None if it set none
    choices: int = 1  # outputs generated per request (OpenAI n / best_of): worst case multiplies
    # Input the body does not show: context stored at the provider (a previous response or
    # conversation, a stored prompt, a cached content) that it bills as input. The worst
    # case then counts the model's whole context window as input.
    hidden_input: bool = False
    server_tools: tuple[ToolBound, ...] = ()
    # Tools (or features) that bill in ways pouch cannot bound or price: refused unless the
    # operator allows unmetered use.
    unmetered_tools: tuple[str, ...] = ()
    # Who the client says the request is for, where the provider's SDKs put it (OpenAI
    # ``safety_identifier`` / ``user``, Anthropic ``metadata.user_id``), and an agent's own
    # session id found in the body: ``pouch.services.attribution`` reads them.
    end_user: object = None
    client_session: object = None


@dataclasses.dataclass(slots=True)
class Reply:
    """A response pouch writes itself (errors, mocks)."""

    status: int
    body: bytes
    headers: dict[str, str] = dataclasses.field(default_factory=dict)


class StreamTracker(Protocol):
    """Follows one streamed response; lives for one flow.

    ``feed`` gets raw body bytes as they arrive and returns the bytes to send on to the
    client (usually the same bytes; a tracker that must drop an event, such as the usage
    chunk pouch asked for but the client did not, holds back an incomplete event until it
    is whole). ``feed(b"")`` marks the end and flushes. ``feed`` never raises.

    While it holds an event back, ``feed`` returns ``b""`` mid-stream. Do not hand that to
    mitmproxy as a chunk: on an HTTP/1 chunked response an empty chunk is the end-of-body
    marker, so the client's stream would end early. Return ``[]`` (no chunks) instead.
    """

    def feed(self, data: bytes) -> bytes: ...

    def usage(self) -> Usage | None:
        """The provider's final usage, if the stream carried it."""

    def output_text(self) -> str:
        """All output text seen so far (content, tool-call arguments), for partial billing."""

    def model(self) -> str | None:
        """The model the provider reported, if any."""


class GuardedTracker:
    """The never-raise half of a StreamTracker, for trackers to inherit: ``feed`` hands the
    bytes to ``_read``; if that raises, the failure is logged once, the tracker stops watching
    (its usage is then unknown, and the chain bills what it can see) and every byte goes on
    untouched. A tracker bug must not break the client's stream."""

    name = "stream"  # for the log line

    def __init__(self) -> None:
        self._broken = False

    def feed(self, data: bytes) -> bytes:
        if self._broken:
            return data
        try:
            return self._read(data)
        except Exception:
            log.exception("%s stream tracker failed; passing the rest through untouched", self.name)
            self._broken = True
            return self._unsent(data)

    def _read(self, data: bytes) -> bytes:
        """Watch ``data`` (``b""``: the end); return the bytes to send on."""
        raise NotImplementedError

    def _unsent(self, data: bytes) -> bytes:
        """After ``_read`` failed on ``data``: everything received and not yet sent on."""
        return data


@dataclasses.dataclass(frozen=True, slots=True)
class Api:
    """One request shape (the ``Endpoint.api`` of the endpoints that take it) and what pouch
    does with its bodies wherever they are sent: OpenAI's chat shape is the same at OpenAI,
    Groq, Azure or Gemini's OpenAI-compatible API.

    ``count_prompt(prompt, body)``: the body's raw prompt tokens, counted with ``prompt`` (the
    model's encoding, ``pouch.tokens.pieces``); ValueError for a body it cannot read.
    ``echo_text(body)``: what an echo mock answers with, the last thing the user said.
    ``transcript``: how mitmweb's LLM view renders it (None: the view shows the JSON).
    ``path``: matches the paths that take this shape, for the view's guess on a flow no
    provider classified (a server pouch does not know); None: never guessed.
    """

    name: str
    count_prompt: Callable[[Prompt, dict], int]
    echo_text: Callable[[dict], str]
    transcript: Renderer | None = None
    path: re.Pattern[str] | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Tokenizer:
    """How a family of models is counted before a request is sent.

    ``matches(name)`` is true for a model of the family (``name`` is canonical: lower case,
    without a vendor prefix, ``pouch.tokens.encodings.canonical_model``). Its prompt is counted
    with tiktoken's ``encoding`` and multiplied by ``factor``, the most tokens the provider's
    own tokenizer can need per token counted; 1 means tiktoken is the model's own tokenizer,
    so the count is exact. Models no provider's tokenizer matches get ``pouch.tokens``'s default.
    """

    matches: Callable[[str], object]
    encoding: str = "o200k_base"
    factor: Fraction = Fraction(1)

    @property
    def exact(self) -> bool:
        return self.factor == 1


class Provider(Protocol):
    name: str  # "openai"
    hosts: tuple[str, ...]  # hosts owned, e.g. ("api.openai.com",)
    credential_env: tuple[str, ...]  # environment variables holding the real key, first wins
    apis: tuple[Api, ...]  # the request shapes of its metered endpoints (every Endpoint.api it returns)
    tokenizers: tuple[Tokenizer, ...]  # how its models are counted; () leaves them to the default

    def endpoint(self, method: str, path: str) -> Endpoint | None:
        """Classify a request; None for a path this provider does not know (refused)."""

    def credential(self, headers, query) -> list[str]:
        """Every credential the client sent, where this provider's SDKs send it."""

    def read_call(self, endpoint: Endpoint, path: str, body: dict) -> Call:
        """Model, stream flag and output cap of a metered request; BadRequest if unreadable."""

    def cap_output(self, endpoint: Endpoint, body: dict, max_tokens: int) -> None:
        """Set the request's output cap (pouch caps a request that would not fit otherwise)."""

    def bound_tools(self, endpoint: Endpoint, body: dict, max_calls: int) -> None:
        """Bound every server-side tool the request left unbounded to ``max_calls`` calls."""

    def prepare_stream(self, endpoint: Endpoint, body: dict) -> bool:
        """Make a streamed request report usage; True if pouch had to ask for it (then the
        tracker removes what the client did not ask for)."""

    def usage_from_body(self, endpoint: Endpoint, body: dict) -> tuple[Usage | None, str | None]:
        """(usage, model) from a complete JSON response."""

    def stream_tracker(self, endpoint: Endpoint, injected_usage: bool) -> StreamTracker: ...

    def error(self, error: PouchError) -> Reply:
        """The error in this provider's own shape (status, JSON body, headers)."""

    def authorize(self, headers, query, secret: str) -> None:
        """Remove every client credential and set the real one (an empty ``secret``: set none)."""

    def mock(self, endpoint: Endpoint, call: Call, body: dict, usage: Usage, text: str) -> Reply:
        """A fabricated response (JSON, or the full SSE sequence when ``call.stream``)."""

    def answer(self, endpoint: Endpoint, local: Local) -> Reply | None:
        """A free endpoint answered by pouch itself, in this provider's shape (a mock key's
        request never leaves): token counts from pouch's count, model lists and model lookups
        from the price table (``pouch.providers.local``). None: pouch cannot answer it."""
