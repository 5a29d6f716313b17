"""The client side of a run: send each planned request through the gateway with raw HTTP
(faster than the SDKs, and the client faults need control of the connection), do the client
faults, and judge what came back: a reply a client can read, or an error in its provider's
shape.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import time

import httpx2

from .kinds import KINDS, Kind, Planned

REQUEST_TIMEOUT = 20.0  # seconds without progress before a client gives up (a hung request)

# pouch's refusal codes, shortened for the summary
REASONS = {"insufficient_quota": "budget", "rate_limit_exceeded": "rate", "invalid_api_key": "auth",
           "model_not_allowed": "model", "model_not_priced": "price", "invalid_request_error": "request",
           "store_unavailable": "store", "gateway_error": "gateway"}
LOAD_REFUSALS = {"budget", "rate"}  # what a well-formed request from a valid key may meet
# Bad bodies, keys and allowlisted models are refused by the first link, before any limit;
# a model without a price only by the budget link, after the rate limits.
EXPECTED_REFUSALS = {"bad_body": {"request"}, "unknown_key": {"auth"}, "bad_model": {"model", "price", "rate"}}


@dataclasses.dataclass
class Outcome:
    planned: Planned
    # response (2xx) | refused | upstream_error | connection_error | cancelled (before the
    # headers) | closed (the client hung up after the headers) | timeout
    result: str = ""
    status: int | None = None
    reason: str = ""  # why pouch refused (REASONS values)
    message: str = ""  # the refusal's message, as the client read it
    headers_seen: bool = False
    request_id: str | None = None  # the provider's (or pouch's mock's), which the usage row records
    output_capped: int | None = None  # x-pouch-output-capped: the cap the gateway set itself
    tools_capped: int | None = None  # x-pouch-tool-calls-capped: the tool bound the gateway set itself
    text: str = ""  # the reply's text, when it was complete
    problem: str = ""  # what breaks invariant 6, if anything
    error: str = ""
    started: float = 0.0
    ended: float = 0.0

    @property
    def pouch_error(self) -> bool:
        """pouch answered with its own error (its Anthropic-shaped errors carry a request-id of
        pouch's): a refusal, even where the client hung up before reading it, so its request-id
        proves no admission."""
        return self.status is not None and self.status >= 400 and (self.request_id or "").startswith("req_pouch_")


class Clients:
    """Pooled clients through each gateway's HTTPS proxy (trusting its CA), over HTTP/1.1 and
    HTTP/2, and one for reverse mode (the URL names the gateway)."""

    def __init__(self, gateways: dict, concurrency: int):
        limits = httpx2.Limits(max_connections=concurrency * 2, max_keepalive_connections=concurrency)
        timeout = httpx2.Timeout(REQUEST_TIMEOUT)
        self.proxied = {via: httpx2.AsyncClient(proxy=gateway.proxy_url, verify=gateway.tls(), timeout=timeout,
                                                limits=limits) for via, gateway in gateways.items()}
        self.proxied_h2 = {via: httpx2.AsyncClient(proxy=gateway.proxy_url, verify=gateway.tls(), timeout=timeout,
                                                   limits=limits, http2=True) for via, gateway in gateways.items()}
        self.reverse = httpx2.AsyncClient(timeout=timeout, limits=limits)

    def for_request(self, planned: Planned) -> httpx2.AsyncClient:
        if planned.reverse:
            return self.reverse
        return (self.proxied_h2 if planned.http2 else self.proxied)[planned.via]

    async def close(self) -> None:
        for client in (*self.proxied.values(), *self.proxied_h2.values(), self.reverse):
            await client.aclose()


async def fire(gateway, planned: list[Planned], concurrency: int,
               deadline: float = math.inf, ceiling=None) -> list[Outcome]:
    """``concurrency`` clients take the planned requests in order, each as soon as it is free,
    until the ``deadline`` (``time.monotonic()``) has passed. Requests planned ``via`` the
    ceiling go through the ``ceiling`` gateway."""
    clients = Clients({"main": gateway, **({"ceiling": ceiling} if ceiling else {})}, concurrency)
    pending = iter(planned)
    outcomes: list[Outcome] = []

    async def client():
        for request in pending:
            if time.monotonic() > deadline:
                return
            outcomes.append(await send(clients, request))

    try:
        await asyncio.gather(*(client() for _ in range(concurrency)))
    finally:
        await clients.close()
    return outcomes


async def send(clients: Clients, planned: Planned) -> Outcome:
    outcome = Outcome(planned, started=time.time())
    client = clients.for_request(planned)
    try:
        if planned.cancel_after is None:
            await exchange(client, planned, outcome)
        else:
            try:
                await asyncio.wait_for(exchange(client, planned, outcome), planned.cancel_after)
            except TimeoutError:
                outcome.result = "closed" if outcome.headers_seen else "cancelled"
    except httpx2.TimeoutException as e:
        outcome.result, outcome.error = "timeout", f"{type(e).__name__}: {e}"
    except httpx2.HTTPError as e:  # the connection broke, or what came through it was not HTTP
        outcome.result, outcome.error = "connection_error", f"{type(e).__name__}: {e}"
    outcome.ended = time.time()
    return outcome


async def exchange(client: httpx2.AsyncClient, planned: Planned, outcome: Outcome) -> None:
    request = client.build_request("POST", planned.url, headers=planned.headers, content=planned.body)
    response = await client.send(request, stream=True)
    try:
        outcome.status, outcome.headers_seen = response.status_code, True
        outcome.request_id = response.headers.get("x-request-id") or response.headers.get("request-id")
        for field, header in (("output_capped", "x-pouch-output-capped"), ("tools_capped", "x-pouch-tool-calls-capped")):
            if header in response.headers:
                setattr(outcome, field, int(response.headers[header]))
        if planned.close_after is not None and response.is_success:
            await read_events(response, planned.close_after)
            outcome.result = "closed"  # aclose() below, before the end: the connection is dropped
            return
        body = await response.aread()
    finally:
        await response.aclose()
    judge(planned, outcome, body)


async def read_events(response: httpx2.Response, count: int) -> None:
    """Read ``count`` stream events (blank-line separated), or to the end if fewer."""
    seen = 0
    async for line in response.aiter_lines():
        if seen >= count:
            return
        seen += not line.strip()


def judge(planned: Planned, outcome: Outcome, body: bytes) -> None:
    kind = KINDS[planned.kind]
    if outcome.status < 300:
        outcome.result = "response"
        try:
            text = reply_text(kind, body)
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
            outcome.problem = f"2xx {planned.kind} reply a client cannot read ({e}): {body[:300]!r}"
            return
        outcome.text = text
        if not planned.expected_text.startswith(text):
            outcome.problem = f"reply text {text!r} is not (a prefix of) {planned.expected_text[:200]!r}"
        elif planned.user_via == "missing":
            outcome.problem = "answered, though it names no end user and its key requires one"
        return
    try:
        message, code = error_of(kind, outcome.status, body)
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
        outcome.result = "refused"
        outcome.problem = f"HTTP {outcome.status} not in {kind.provider}'s error shape ({e}): {body[:300]!r}"
        return
    if message.startswith("fake:"):  # the fake's own error, passed through
        outcome.result = "upstream_error"
        return
    outcome.result, outcome.reason, outcome.message = "refused", REASONS.get(code, code), message
    expected = EXPECTED_REFUSALS.get(planned.fault, LOAD_REFUSALS)
    if planned.user_via == "missing":  # refused for that, unless by the first checks of bad input
        expected = EXPECTED_REFUSALS.get(planned.fault, set()) | {"request"}
    if outcome.reason not in expected:
        outcome.problem = f"unexpected refusal {outcome.status} {code}: {message}"


# --- replies -----------------------------------------------------------------------------


def reply_text(kind: Kind, body: bytes) -> str:
    """The text a client would read from a complete reply; raises if it is not one."""
    if not kind.stream:
        return json_text(kind, json.loads(body))
    if kind.json_array:
        chunks = json.loads(body)
        if not isinstance(chunks, list) or not chunks or not chunks[-1]["candidates"][0].get("finishReason"):
            raise ValueError("the streamed array does not end with a finishReason")
        return "".join(gemini_text(c) for c in chunks)
    return stream_text(kind, sse_data(body))


def json_text(kind: Kind, doc: dict) -> str:
    if kind.api == "chat":
        return doc["choices"][0]["message"]["content"]
    if kind.api == "responses":
        if doc["object"] != "response":
            raise ValueError("not a response object")
        return "".join(part["text"] for item in doc["output"] if item["type"] == "message"
                       for part in item["content"] if part["type"] == "output_text")
    if kind.api == "anthropic_messages":
        if doc["type"] != "message":
            raise ValueError("not a message")
        return "".join(block["text"] for block in doc["content"] if block["type"] == "text")
    return gemini_text(doc)


def gemini_text(doc: dict) -> str:
    parts = doc["candidates"][0].get("content", {}).get("parts", [])
    return "".join(part.get("text", "") for part in parts)


def sse_data(body: bytes) -> list[str]:
    """The ``data:`` payload of every event of an SSE body."""
    events = []
    for block in body.replace(b"\r\n", b"\n").split(b"\n\n"):
        data = [line[5:].strip() for line in block.decode().split("\n") if line.startswith("data:")]
        if data:
            events.append("\n".join(data))
    return events


def stream_text(kind: Kind, events: list[str]) -> str:
    """The text of a complete stream; raises if it did not end as the provider ends one."""
    if kind.api == "chat":
        if not events or events[-1] != "[DONE]":
            raise ValueError("no [DONE] at the end")
        chunks = [json.loads(e) for e in events[:-1]]
        if any(c.get("usage") for c in chunks):
            raise ValueError("a usage chunk the client did not ask for")
        return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    docs = [json.loads(e) for e in events]
    if kind.api == "responses":
        if not docs or docs[-1]["type"] not in ("response.completed", "response.incomplete"):
            raise ValueError("no response.completed at the end")
        return "".join(d["delta"] for d in docs if d["type"] == "response.output_text.delta")
    if kind.api == "anthropic_messages":
        if not docs or docs[-1]["type"] != "message_stop":
            raise ValueError("no message_stop at the end")
        return "".join(d["delta"].get("text", "") for d in docs if d["type"] == "content_block_delta")
    if not docs or not docs[-1]["candidates"][0].get("finishReason"):
        raise ValueError("the last chunk has no finishReason")
    return "".join(gemini_text(d) for d in docs)


# --- errors ------------------------------------------------------------------------------


def error_of(kind: Kind, status: int, body: bytes) -> tuple[str, str]:
    """(message, pouch's code) of an error in ``kind``'s provider shape; raises if it is not."""
    doc = json.loads(body)
    if kind.provider == "openai":
        error = doc["error"]
        if not isinstance(error["message"], str) or "code" not in error:
            raise ValueError("OpenAI errors have error.message and error.code")
        return error["message"], error["code"] or error.get("type") or ""
    if kind.provider == "anthropic":
        error = doc["error"]
        if doc["type"] != "error" or not isinstance(error["type"], str) or not isinstance(error["message"], str):
            raise ValueError("Anthropic errors are {type: error, error: {type, message}}")
        return error["message"], anthropic_code(status, error["message"])
    error = doc["error"]
    if not isinstance(error["code"], int) or not isinstance(error["status"], str) or "message" not in error:
        raise ValueError("Gemini errors are {error: {code, message, status}}")
    details = error.get("details") or [{}]
    return error["message"], details[0].get("reason") or error["status"]


def anthropic_code(status: int, message: str) -> str:
    """Anthropic's shape has no place for pouch's code: read it from the status and message."""
    if status == 401:
        return "invalid_api_key"
    if status == 429:
        return "insufficient_quota" if "exhausted" in message else "rate_limit_exceeded"
    if status == 403:
        return "model_not_allowed"
    if status == 400:
        return "model_not_priced" if "no price" in message else "invalid_request_error"
    return "store_unavailable" if status == 503 else "gateway_error"
