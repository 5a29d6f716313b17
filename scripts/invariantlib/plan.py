"""What a run sends: the keys, and for every request its key, API, prompt and injected fault.

Pure and seeded: the same seed plans the same requests (what the gateway then does with them
depends on timing, which no seed controls).
"""

from __future__ import annotations

import dataclasses
import json
import random
from urllib.parse import quote

from pouch.domain.money import Money
from pouch.pricing import reserve
from pouch.pricing.table import PriceTable
from pouch.tokens.count import count_prompt, input_upper_bound

MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-haiku-4-5", "gemini": "gemini-2.5-flash"}
HOSTS = {"openai": "api.openai.com", "anthropic": "api.anthropic.com", "gemini": "generativelanguage.googleapis.com"}
MAX_TOKENS = 40  # output cap of every request that sets one: a known, small worst case
PRICES = PriceTable.load()  # the shipped prices, as the gateway (with no override file) has them
WORDS = ("alpha", "budget", "cat", "delta", "echo", "fox", "gateway", "hotel", "ink", "jolly", "kilo", "lima",
         "money", "never", "overspent", "pouch", "quota", "river", "stream", "token", "usage", "vector")


@dataclasses.dataclass(frozen=True)
class Kind:
    name: str
    provider: str
    api: str  # pouch.tokens.count API name
    stream: bool


KINDS = {k.name: k for k in (
    Kind("chat", "openai", "chat", False),
    Kind("chat_stream", "openai", "chat", True),
    Kind("responses", "openai", "responses", False),
    Kind("responses_stream", "openai", "responses", True),
    Kind("messages", "anthropic", "anthropic_messages", False),
    Kind("messages_stream", "anthropic", "anthropic_messages", True),
    Kind("gemini", "gemini", "gemini", False),
    Kind("gemini_stream", "gemini", "gemini", True),  # SSE (?alt=sse)
    Kind("gemini_stream_array", "gemini", "gemini", True),  # a streamed JSON array
)}
OPENAI = ("chat", "chat_stream", "responses", "responses_stream")
ANTHROPIC = ("messages", "messages_stream")
GEMINI = ("gemini", "gemini_stream", "gemini_stream_array")
PATHS = {"chat": "/v1/chat/completions", "responses": "/v1/responses", "anthropic_messages": "/v1/messages"}
JSON_ONLY = ("chat", "responses", "messages", "gemini")


@dataclasses.dataclass(frozen=True)
class KeySpec:
    """One key of a run. ``budget_worst_cases``: the budget in worst cases of its dearest request
    (None: no budget); ``per_share``: add one worst case per this many requests it is sent."""

    role: str
    kinds: tuple[str, ...]
    weight: int
    budget_worst_cases: int | None = 4
    per_share: int | None = None
    rpm: int | None = None
    tpm: int | None = None
    max_concurrent: int | None = None
    mock: bool = False
    models: str | None = None  # allowlist glob
    period: str | None = None  # budget period (None: the default, none)
    sets_max_tokens: bool = True  # False: the gateway may cap the output itself
    faults: tuple[str, ...] | None = None  # None: every fault that fits the kind

    @property
    def strict(self) -> bool:
        """The budget promise is strict only when every model is tokenized exactly (OpenAI)."""
        return all(KINDS[k].provider == "openai" for k in self.kinds)


KEYS = (
    KeySpec("oa-tight", OPENAI, 2, models="gpt-4o-mini"),
    KeySpec("oa-nocap", ("chat", "chat_stream", "responses"), 1, 3, models="gpt-4o-mini", sets_max_tokens=False),
    # a budget window of a few seconds: requests reserved in one window settle after it ended
    KeySpec("oa-rolling", OPENAI, 1, period="10s"),
    KeySpec("claude-tight", ANTHROPIC, 1),
    KeySpec("gemini-tight", GEMINI, 1),
    KeySpec("oa-load", OPENAI, 6, 4, per_share=3),
    KeySpec("mixed-load", OPENAI + ANTHROPIC + GEMINI, 6, 4, per_share=3),
    # rate limits are checked from usage rows' timestamps: quick JSON requests keep that exact
    KeySpec("rpm", JSON_ONLY, 2, None, rpm=30, faults=("none", "status", "no_usage", "bad_body", "unknown_key")),
    KeySpec("tpm", ("chat",), 1, None, tpm=1200, faults=("none", "status", "no_usage", "client_close")),
    KeySpec("concurrent", OPENAI + ANTHROPIC + GEMINI, 2, None, max_concurrent=3),
    KeySpec("mock", OPENAI + ANTHROPIC + GEMINI, 2, 4, per_share=3, mock=True),
)

# fault -> weight. Upstream faults go out as x-fake-* headers; client faults are what the
# client does; bad input is what a careless or hostile client sends.
FAULTS = {
    "none": 30,
    "slow": 10,  # x-fake-delay (and a slow stream)
    "status": 8,  # x-fake-status 5xx
    "no_usage": 7,  # x-fake-no-usage
    "cached": 4,  # x-fake-usage: part of the prompt was a cache hit (OpenAI, Gemini)
    "abort": 8,  # x-fake-abort-after: upstream dies mid-stream (streams)
    "client_cancel": 9,  # the client gives up at a random moment, maybe before the headers
    "client_close": 8,  # the client hangs up after the headers and k chunks
    "bad_body": 3,  # not JSON, not an object, a cap that is no positive integer, a mistyped field
    "unknown_key": 2,
    "bad_model": 2,  # a model the key may not use, or one pouch has no price for
    "big_prompt": 1,  # ~40 KB of prompt: tokenized off the event loop, a worst case far above the others
}
BIG_PROMPT_WORDS = 6000  # over the 32 KB above which the gateway counts tokens in a thread
STATUSES = {"openai": (500, 503), "anthropic": (500, 529), "gemini": (500, 503)}


@dataclasses.dataclass(frozen=True)
class Planned:
    id: str  # sent as x-invariant-id, which the fakes record
    role: str
    kind: str
    fault: str
    reverse: bool  # OpenAI through the gateway's reverse mode instead of HTTPS_PROXY
    http2: bool  # HTTP/2 to the gateway (several requests share a connection)
    url: str
    headers: dict
    body: bytes
    prompt: str
    expected_text: str  # what a complete reply's text starts with
    fake_delay: float  # seconds the fake waits before the headers (0: none)
    cancel_after: float | None  # client_cancel: when the client gives up
    close_after: int | None  # client_close: chunks read before hanging up

    @property
    def provider(self) -> str:
        return KINDS[self.kind].provider


def request_body(kind: Kind, model: str, text: str, max_tokens: int | None) -> dict:
    """A minimal body of ``kind``'s API asking ``model`` to answer ``text``."""
    if kind.provider == "gemini":
        body = {"contents": [{"role": "user", "parts": [{"text": text}]}]}
        if max_tokens is not None:
            body["generationConfig"] = {"maxOutputTokens": max_tokens}
        return body
    if kind.api == "responses":
        body = {"model": model, "input": text}
        cap = "max_output_tokens"
    else:
        body = {"model": model, "messages": [{"role": "user", "content": text}]}
        cap = "max_tokens"
    if max_tokens is not None:
        body[cap] = max_tokens
    if kind.stream:
        body["stream"] = True
    return body


def path_of(kind: Kind, model: str) -> str:
    if kind.name == "gemini":
        return f"/v1beta/models/{quote(model)}:generateContent"
    if kind.provider == "gemini":
        alt = "?alt=sse" if kind.name == "gemini_stream" else ""
        return f"/v1beta/models/{quote(model)}:streamGenerateContent{alt}"
    return PATHS[kind.api]


def worst_case(kind: Kind, text: str, max_tokens: int) -> Money:
    """What the gateway reserves for such a request (its own formula, so that a budget of k
    worst cases admits exactly k such requests at once)."""
    model = MODELS[kind.provider]
    price = PRICES.resolve(model, kind.provider)
    tokens = input_upper_bound(model, count_prompt(model, request_body(kind, model, text, max_tokens), kind.api))
    return reserve.worst_case(price, reserve.Bounds(tokens, max_tokens)).total


def budget_of(spec: KeySpec, share: int) -> Money | None:
    if spec.budget_worst_cases is None:
        return None
    longest = " ".join(sorted(WORDS, key=len)[-10:])
    worst = max(worst_case(KINDS[k], longest, MAX_TOKENS) for k in spec.kinds)
    cases = spec.budget_worst_cases + (share // spec.per_share if spec.per_share else 0)
    return worst * cases


BAD_CAPS = (-1, 0, "40", 1.5, 10**12, True)


def spoiled(rng: random.Random, kind: Kind, body: dict) -> bytes:
    """``body`` made into something the gateway must refuse before it goes anywhere."""
    how = rng.randrange(4)
    if how == 0:
        text = json.dumps(body)
        return text[: rng.randint(0, len(text) - 1)].encode()
    if how == 1:
        return json.dumps([body]).encode()
    if kind.provider == "gemini":
        config = body.setdefault("generationConfig", {})
        if how == 2:
            config["maxOutputTokens"] = rng.choice(BAD_CAPS)
        else:
            config["candidateCount"] = rng.choice([0, -2, "2"])
        return json.dumps(body).encode()
    if how == 2:
        body["max_output_tokens" if kind.api == "responses" else "max_tokens"] = rng.choice(BAD_CAPS)
    else:
        body["stream"] = rng.choice(["yes", 1, "true"])
    return json.dumps(body).encode()


def faults_for(spec: KeySpec, kind: Kind) -> list[str]:
    allowed = spec.faults or tuple(FAULTS)
    return [f for f in allowed
            if not (f == "abort" and not kind.stream)
            and not (f == "cached" and kind.provider == "anthropic")
            and not (f == "big_prompt" and not spec.sets_max_tokens)  # its echo would be 5000 chunks
            and not (spec.mock and f in ("slow", "status", "no_usage", "cached", "abort"))]  # never upstream


def plan_request(rng: random.Random, index: int | str, run: int, spec: KeySpec, secret: str, gateway,
                 fault: str | None = None) -> Planned:
    """One request for the key ``spec`` (whose secret is ``secret``), with a random fault
    unless ``fault`` is given."""
    kind = KINDS[rng.choice(spec.kinds)]
    if fault is None:
        fault = rng.choices(faults := faults_for(spec, kind), weights=[FAULTS[f] for f in faults])[0]
    model = MODELS[kind.provider]
    if fault == "bad_model":  # refused either way: 403 where the key has an allowlist, else 400 (no price)
        model = rng.choice(("gpt-4.1", model + "-nonexistent")) if spec.models else model + "-nonexistent"
    if fault == "unknown_key":
        secret = "pouch-" + "".join(rng.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=43))
    text = " ".join(rng.choices(WORDS, k=BIG_PROMPT_WORDS if fault == "big_prompt" else rng.randint(2, 10)))
    max_tokens = MAX_TOKENS if spec.sets_max_tokens or kind.provider == "anthropic" else None
    body = request_body(kind, model, text, max_tokens)
    headers = {"content-type": "application/json", "x-invariant-id": f"{run}-{index}"}
    fake_delay, cancel_after, close_after = fault_controls(rng, fault, kind, model, body, headers)
    if spec.role == "concurrent" and not fake_delay:
        fake_delay = round(rng.uniform(0.05, 0.4), 3)  # long enough for requests to overlap
        headers["x-fake-delay"] = str(fake_delay)
    payload = spoiled(rng, kind, body) if fault == "bad_body" else json.dumps(body).encode()

    reverse = kind.provider == "openai" and rng.random() < 0.3
    # Client faults stay on HTTP/1.1: httpx2's HTTP/2 never resets a stream it gives up on (the
    # gateway would not notice), and cancelling one mid-write breaks the whole connection.
    http2 = not reverse and fault not in ("client_cancel", "client_close") and rng.random() < 0.3
    base = f"http://127.0.0.1:{gateway.reverse_port}" if reverse else f"https://{HOSTS[kind.provider]}"
    url = base + path_of(kind, model)
    if kind.provider == "gemini" and rng.random() < 0.3:
        url += ("&" if "?" in url else "?") + "key=" + secret
    else:
        add_credential(rng, kind, secret, headers)
    expected = text if spec.mock else f"echo: {text}"  # the mock echoes without a prefix
    return Planned(f"{run}-{index}", spec.role, kind.name, fault, reverse, http2, url, headers, payload, text,
                   expected, fake_delay, cancel_after, close_after)


def fault_controls(rng: random.Random, fault: str, kind: Kind, model: str, body: dict,
                   headers: dict) -> tuple[float, float | None, int | None]:
    """Set the x-fake-* headers of ``fault``; returns (fake delay, cancel after, close after)."""
    fake_delay, cancel_after, close_after = 0.0, None, None
    if fault == "slow":
        fake_delay = round(rng.uniform(0.1, 1.0), 3)
        headers["x-fake-chunk-delay"] = str(round(rng.uniform(0.0, 0.05), 3))
    elif fault == "status":
        headers["x-fake-status"] = str(rng.choice(STATUSES[kind.provider]))
    elif fault == "no_usage":
        headers["x-fake-no-usage"] = "1"
    elif fault == "cached":
        prompt = count_prompt(model, body, kind.api)
        field = "cached_tokens" if kind.provider == "openai" else "cachedContentTokenCount"
        headers["x-fake-usage"] = json.dumps({field: rng.randint(0, prompt)})
    elif fault == "abort":
        headers["x-fake-abort-after"] = str(rng.randint(0, 4))
        headers["x-fake-chunk-delay"] = str(round(rng.uniform(0.0, 0.03), 3))
    elif fault == "client_cancel":
        # half within the first 30 ms, while the request is still in the chain's hooks
        cancel_after = round(rng.uniform(0.0, 0.03) if rng.random() < 0.5 else rng.uniform(0.0, 0.6), 4)
        if rng.random() < 0.6:  # often while the request waits upstream
            fake_delay = round(rng.uniform(0.2, 0.8), 3)
    elif fault == "client_close":
        close_after = rng.randint(0, 4) if kind.stream else 0
        headers["x-fake-chunk-delay"] = str(round(rng.uniform(0.0, 0.03), 3))
    if fake_delay:
        headers["x-fake-delay"] = str(fake_delay)
    return fake_delay, cancel_after, close_after


def add_credential(rng: random.Random, kind: Kind, secret: str, headers: dict) -> None:
    """The key where that provider's SDKs send it (each of the places pouch looks)."""
    if kind.provider == "anthropic":
        headers["anthropic-version"] = "2023-06-01"
        if rng.random() < 0.5:
            headers["x-api-key"] = secret
            return
    if kind.provider == "gemini":
        headers["x-goog-api-key"] = secret
    else:
        headers["authorization"] = f"Bearer {secret}"
