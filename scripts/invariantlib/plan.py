"""What a run sends: the keys, and for every request its key, API, prompt and injected fault.

Pure and seeded: the same seed plans the same requests (what the gateway then does with them
depends on timing, which no seed controls).
"""

from __future__ import annotations

import dataclasses
import json
import random

from pouch.domain.money import Money
from pouch.tokens.count import count_prompt, count_text
from tests.fakes.controls import Controls
from tests.fakes.replies import reply_text

from . import expect
from .kinds import (CLIENT_TOOL_BOUNDS, GEMINI_TOOL_BOUNDS, HOSTS, KINDS, PRICES, REASONING_MODEL, TOOLS, Kind,
                    Planned, path_of, request_body)

WORDS = ("alpha", "budget", "cat", "delta", "echo", "fox", "gateway", "hotel", "ink", "jolly", "kilo", "lima",
         "money", "never", "overspent", "pouch", "quota", "river", "stream", "token", "usage", "vector")
OPENAI = ("chat", "chat_stream", "responses", "responses_stream")
ANTHROPIC = ("messages", "messages_stream")
GEMINI = ("gemini", "gemini_stream", "gemini_stream_array")
JSON_ONLY = ("chat", "responses", "messages", "gemini")
REASONING = ("chat_reasoning", "chat_reasoning_stream", "responses_reasoning", "responses_reasoning_stream")
FAKE_TOOL_CALLS = 6  # a tool request asks the fake for 0..this many calls (held to its bound)


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
    hold: bool = False  # the fake holds every request a moment, so that they overlap
    overruns: float = 0.0  # share of its requests whose upstream bills more than the worst case
    team: str | None = None  # the TeamSpec role of its team
    users: int = 0  # end users its requests are spread over (0: it sends none)
    user_budget_worst_cases: int | None = None  # each end user's budget, in worst cases (None: no budget)
    user_per_share: int | None = None  # add one worst case per this many requests of each end user
    user_period: str | None = None
    require_user: bool = False  # a request without an end user is refused
    user_rpm: int | None = None  # requests/min of each of its end users
    ceiling: bool = False  # sent through the gateway whose pouch_budget_total binds (harness.CEILING)

    @property
    def strict(self) -> bool:
        """The budget promise is strict only when every model is tokenized exactly (OpenAI)."""
        return all(KINDS[k].provider == "openai" for k in self.kinds)


@dataclasses.dataclass(frozen=True)
class TeamSpec:
    """A team of a run: its budget in mean worst cases of its keys' requests, plus one per
    ``per_share`` requests sent by all its keys (``level_budget_of``)."""

    role: str
    budget_worst_cases: int
    per_share: int
    period: str | None = None
    rpm: int | None = None
    tpm: int | None = None
    max_concurrent: int | None = None


# Rows of Gemini requests carry no request id, so they are paired with requests by what they
# billed: the key's faults are those after which the plan knows whether a request was billed.
GEMINI_TOOL_FAULTS = ("none", "slow", "status", "no_usage", "abort", "bad_body", "unknown_key", "bad_model",
                      "big_prompt")

KEYS = (
    KeySpec("oa-tight", OPENAI, 2, models="gpt-4o-mini"),
    KeySpec("oa-nocap", ("chat", "chat_stream", "responses"), 1, 3, models="gpt-4o-mini", sets_max_tokens=False),
    # a budget window of a few seconds: requests reserved in one window settle after it ended
    KeySpec("oa-rolling", OPENAI, 1, period="10s"),
    KeySpec("claude-tight", ANTHROPIC, 1),
    KeySpec("gemini-tight", GEMINI, 1),
    KeySpec("oa-load", OPENAI, 6, 4, per_share=3),
    KeySpec("mixed-load", OPENAI + ANTHROPIC + GEMINI, 6, 4, per_share=3),
    # paid server tools: a worst case of context windows, so a budget of a few admits some and refuses others
    KeySpec("oa-tools", ("responses_tools", "responses_tools_stream"), 2, 3, per_share=4, overruns=0.1,
            models="gpt-4o-mini"),
    KeySpec("claude-tools", ("messages_tools", "messages_tools_stream"), 1, 3, per_share=4, overruns=0.1),
    KeySpec("gemini-tools", ("gemini_tools", "gemini_tools_stream"), 1, 3, per_share=4, overruns=0.1,
            faults=GEMINI_TOOL_FAULTS),
    # a reasoning model: its streams cut short are charged their reservation
    KeySpec("reasoning", REASONING, 2, 4, per_share=3, models="o3"),
    # upstreams that report more output than the cap: charged, flagged, and the key then refused
    KeySpec("overrun", OPENAI, 2, 6, per_share=3, overruns=0.3, models="gpt-4o-mini"),
    # rate limits are checked from usage rows' timestamps: quick JSON requests keep that exact
    KeySpec("rpm", JSON_ONLY, 2, None, rpm=30, faults=("none", "status", "no_usage", "bad_body", "unknown_key")),
    KeySpec("tpm", ("chat",), 1, None, tpm=1200, faults=("none", "status", "no_usage", "client_close")),
    # no output cap: tokens/min counts the model's maximum output until the answer is measured
    KeySpec("tpm-nocap", ("chat", "chat_stream", "responses"), 1, None, tpm=50_000, sets_max_tokens=False,
            hold=True, faults=("none", "slow", "status", "cached")),
    KeySpec("concurrent", OPENAI + ANTHROPIC + GEMINI, 2, None, max_concurrent=3, hold=True),
    # Limits that bind at every level at once, checked from the store's rate log (ratelog.py): a
    # key with all three inside a team with all three, a key that only its team limits, and end
    # users with requests/min. Any fault: the log has the exact admission times.
    KeySpec("lim-all", OPENAI, 2, None, rpm=24, tpm=700, max_concurrent=2, hold=True, team="team-lim"),
    KeySpec("lim-team", OPENAI + ANTHROPIC, 2, None, hold=True, team="team-lim"),
    KeySpec("lim-users", ("chat", "responses", "messages"), 2, None, users=3, user_rpm=8),
    KeySpec("mock", OPENAI + ANTHROPIC + GEMINI, 2, 4, per_share=3, mock=True),
    # Teams whose budget binds before their keys' own (a fifth of a mean worst case per request
    # against a third of the dearest): a burst spread over several keys meets one budget. An overrun in a team is
    # charged to the team too.
    KeySpec("team-a-1", OPENAI, 2, 6, per_share=3, team="team-a", overruns=0.03, models="gpt-4o-mini"),
    KeySpec("team-a-2", OPENAI, 2, 6, per_share=3, team="team-a"),
    KeySpec("team-a-3", OPENAI + ANTHROPIC, 2, 6, per_share=3, team="team-a"),
    # end users' budgets that bind (the key's would not): many end users, sent each of the ways
    KeySpec("users", OPENAI + ANTHROPIC, 3, 6, per_share=2, users=12, user_budget_worst_cases=1, user_per_share=4,
            require_user=True),
    KeySpec("users-rolling", OPENAI, 1, None, users=4, user_budget_worst_cases=1, user_per_share=6,
            user_period="10s"),
    # both: end users' budgets inside keys inside a team whose budget binds too
    KeySpec("team-b-1", OPENAI + ANTHROPIC, 2, 6, per_share=2, team="team-b", users=8, user_budget_worst_cases=1,
            user_per_share=4),
    KeySpec("team-b-2", OPENAI, 2, 6, per_share=2, team="team-b", users=8, user_budget_worst_cases=1,
            user_per_share=4),
    # through the gateway with a ceiling (pouch_budget_total), which binds before their own budgets;
    # the second's requests fit the ceiling, a team, the key and an end user in one transaction
    KeySpec("ceiling", OPENAI, 2, 6, per_share=2, ceiling=True),
    KeySpec("ceiling-all", OPENAI + ANTHROPIC, 2, 6, per_share=2, ceiling=True, team="team-c", users=6,
            user_budget_worst_cases=1, user_per_share=3),
)
TEAMS = (
    TeamSpec("team-a", 4, per_share=5),
    TeamSpec("team-b", 4, per_share=7),  # its end users' budgets take much of its keys' demand
    TeamSpec("team-c", 6, per_share=3),  # binds after the ceiling, mostly
    # its rate limits bind, never its budget
    TeamSpec("team-lim", 1000, per_share=1, rpm=40, tpm=1500, max_concurrent=3),
)
CEILING = TeamSpec("ceiling", 2, per_share=10)  # the gateway's pouch_budget_total over the ceiling keys' requests

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


def sample(kind: Kind, text: str, tool: str | None = None, tool_bound: int | None = None) -> Planned:
    """A well-formed request of ``kind``, for working out worst cases."""
    body = request_body(kind, kind.model, text, kind.cap, tool, tool_bound)
    return Planned("sample", "", kind.name, "none", False, False, "", {}, json.dumps(body).encode(), text, "",
                   0.0, None, None, kind.model, kind.cap, tool, tool_bound)


def dearest(kind: Kind, text: str) -> Money:
    """The worst case of ``kind``'s dearest request with this prompt: its dearest tool at its
    highest bound."""
    tools = TOOLS[kind.provider] if kind.tools else {None: None}
    bounds = (None, *CLIENT_TOOL_BOUNDS) if kind.tools and kind.provider != "gemini" else (None,)
    return max(expect.worst_case(sample(kind, text, tool, bound)) for tool in tools for bound in bounds)


def worst_of(kinds) -> Money:
    """The worst case of the dearest request of these kinds."""
    longest = " ".join(sorted(WORDS, key=len)[-10:])
    return max(dearest(KINDS[k], longest) for k in kinds)


def budget_of(spec: KeySpec, share: int) -> Money | None:
    if spec.budget_worst_cases is None:
        return None
    cases = spec.budget_worst_cases + (share // spec.per_share if spec.per_share else 0)
    return worst_of(spec.kinds) * cases


def mean_worst(kinds) -> Money:
    """The mean worst case of a request of one of these kinds (each as likely): a level over
    cheap and dear kinds sized by the dearest would never bind."""
    return Money(sum(dearest(KINDS[k], " ".join(sorted(WORDS, key=len)[-10:])).pico for k in kinds) // len(kinds))


def user_budget_of(spec: KeySpec, share: int) -> Money | None:
    """Each end user's budget: ``share`` requests spread over ``spec.users`` end users."""
    if spec.user_budget_worst_cases is None:
        return None
    return mean_worst(spec.kinds) * (spec.user_budget_worst_cases + share // spec.users // spec.user_per_share)


def level_budget_of(level: TeamSpec, members: list[KeySpec], shares) -> Money:
    """A team's (or the ceiling's) budget over the requests its ``members`` send (``shares``:
    role -> requests): mean worst cases, one per ``level.per_share`` requests."""
    per_request = sum(shares[spec.role] * mean_worst(spec.kinds).pico for spec in members)
    return (max(mean_worst(spec.kinds) for spec in members) * level.budget_worst_cases
            + Money(per_request // level.per_share))


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
    overrun = fault is None and not spec.mock and rng.random() < spec.overruns
    if overrun:
        fault = "none"  # an answer the client reads whole, so its bill is the over-report
    elif fault is None:
        fault = rng.choices(faults := faults_for(spec, kind), weights=[FAULTS[f] for f in faults])[0]
    model = kind.model
    if fault == "bad_model":  # refused either way: 403 where the key has an allowlist, else 400 (no price)
        model = rng.choice(("gpt-4.1", model + "-nonexistent")) if spec.models else model + "-nonexistent"
    if fault == "unknown_key":
        secret = "pouch-" + "".join(rng.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=43))
    text = " ".join(rng.choices(WORDS, k=BIG_PROMPT_WORDS if fault == "big_prompt" else rng.randint(2, 10)))
    max_tokens = kind.cap if spec.sets_max_tokens or kind.provider == "anthropic" else None
    tool = rng.choice(sorted(TOOLS[kind.provider])) if kind.tools else None
    tool_bound = rng.choice((None, *CLIENT_TOOL_BOUNDS)) if tool and kind.provider != "gemini" else None
    body = request_body(kind, model, text, max_tokens, tool, tool_bound)
    headers = {"content-type": "application/json", "x-invariant-id": f"{run}-{index}"}
    fake_delay, cancel_after, close_after = fault_controls(rng, fault, kind, model, body, headers)
    if spec.hold and not fake_delay:
        fake_delay = round(rng.uniform(0.05, 0.4), 3)  # long enough for requests to overlap
        headers["x-fake-delay"] = str(fake_delay)
    end_user, user_via = add_end_user(rng, spec, kind, body, headers)
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
    planned = Planned(f"{run}-{index}", spec.role, kind.name, fault, reverse, http2, url, headers, payload, text,
                      expected, fake_delay, cancel_after, close_after, model, max_tokens, tool, tool_bound,
                      usage=json.loads(headers.get("x-fake-usage", "{}")), end_user=end_user, user_via=user_via,
                      via="ceiling" if spec.ceiling else "main")
    if tool:
        planned = with_tool_calls(rng, planned)
    if model == kind.model == REASONING_MODEL:
        planned = with_reasoning(rng, planned)
    return with_overrun(rng, planned) if overrun else planned


NO_USER = 0.08  # share of an end-user key's requests that name no end user
# Where a client names its end user: pouch's header, or the field its provider's SDKs use; or
# both, the header winning over a decoy in the field.
USER_WAYS = {"openai": ("header", "user", "safety_identifier", "header_over_field"),
             "anthropic": ("header", "metadata", "header_over_field"), "gemini": ("header",)}


def add_end_user(rng: random.Random, spec: KeySpec, kind: Kind, body: dict,
                 headers: dict) -> tuple[str | None, str]:
    """Name one of the key's end users the way a client might; returns (the end user the gateway
    must read, how it was sent)."""
    if not spec.users:
        return None, ""
    if rng.random() < NO_USER:
        return None, "missing" if spec.require_user else "none"
    end_user = f"u{rng.randrange(spec.users)}"
    way = rng.choice(USER_WAYS[kind.provider])
    if way in ("header", "header_over_field"):
        headers["x-pouch-user"] = end_user
    field = f"decoy-{rng.randrange(spec.users)}" if way == "header_over_field" else end_user
    if way in ("user", "safety_identifier") or (way == "header_over_field" and kind.provider == "openai"):
        body[way if way != "header_over_field" else rng.choice(("user", "safety_identifier"))] = field
    elif way in ("metadata", "header_over_field"):
        body["metadata"] = {"user_id": field}
    return end_user, way


def with_tool_calls(rng: random.Random, planned: Planned) -> Planned:
    """The fake performs a random number of calls, held to the bound (Google's bounds, which the
    fake does not know, by the plan), each billing a random amount of input."""
    most = GEMINI_TOOL_BOUNDS[planned.tool] if planned.provider == "gemini" else FAKE_TOOL_CALLS
    return with_controls(planned, tool_calls=rng.randint(0, most), tool_input=rng.randint(0, 3000))


def with_reasoning(rng: random.Random, planned: Planned) -> Planned:
    """A reasoning model reports hidden reasoning tokens, within the cap beside the reply."""
    said = count_text(planned.model, reply_text(Controls(), planned.model, planned.prompt, planned.max_tokens)[0])
    room = max(planned.max_tokens - said, 0) if planned.max_tokens else 1000
    return with_controls(planned, usage={**planned.usage, "reasoning_tokens": rng.randint(0, room)})


def with_overrun(rng: random.Random, planned: Planned) -> Planned:
    """An upstream that bills more than the worst case: past the tool bound, each round
    re-reading a whole context window; or more output than the cap. Drawn until even a reply
    of nothing costs more than the gateway reserved, so the overrun is certain."""
    worst = expect.worst_case(planned)
    context = PRICES.resolve(planned.model, planned.provider).max_input_tokens
    extra = rng.randint(1, 3)
    while True:
        if planned.tool:
            overrun = with_controls(planned, tool_calls=expect.bound_of(planned) + extra, ignore_bounds=True,
                                    tool_input=context, overrun=True)
        else:
            output = {"openai": "completion_tokens", "anthropic": "output_tokens",
                      "gemini": "candidatesTokenCount"}[planned.provider]
            # several worst cases above the cap: a few such answers take spend past the budget
            overrun = with_controls(planned, usage={**planned.usage, output: planned.max_tokens * (1 + 4 * extra)},
                                    overrun=True)
        if expect.least_bill(overrun) > worst:
            return overrun
        extra += 1


def with_controls(planned: Planned, **changes) -> Planned:
    """``planned`` with other fake controls, its x-fake-* headers to match."""
    planned = dataclasses.replace(planned, **changes)
    headers = {name: value for name, value in planned.headers.items()
               if name not in ("x-fake-usage", "x-fake-tool-calls", "x-fake-tool-input", "x-fake-ignore-bounds")}
    if planned.usage:
        headers["x-fake-usage"] = json.dumps(planned.usage)
    if planned.tool:
        headers["x-fake-tool-calls"] = str(planned.tool_calls)
        headers["x-fake-tool-input"] = str(planned.tool_input)
    if planned.ignore_bounds:
        headers["x-fake-ignore-bounds"] = "1"
    return dataclasses.replace(planned, headers=headers)


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
