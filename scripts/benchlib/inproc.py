"""In-process timings of the chain's per-request and per-chunk work, without a proxy around it."""

from __future__ import annotations

import random
import statistics
import tempfile
import time
import timeit
from datetime import timedelta
from pathlib import Path

from pouch.domain.money import Money
from pouch.domain.periods import Period, utcnow
from pouch.providers.registry import PROVIDERS
from pouch.services import keys as key_service
from pouch.store import database, ledger
from pouch.tokens.count import count_prompt, count_text
from tests.fakes.openai_shapes import Controls, chat_completions

MODEL = "gpt-4o-mini"

_WORDS = (
    "the of and to in is that for it as with was on be by this are from at or an have not which "
    "but they you all their has were been can more one will would there what about when so if "
    "data model request response budget token stream gateway provider latency throughput error "
    "function return value string list dict config option user system assistant message content "
    "please summarise explain compare review refactor the following code and document each step "
    "customer invoice order shipping account payment refund policy quarter revenue forecast "
    "2024 2025 17 42 3.5 100ms v1 HTTP/1.1 JSON SQL API id_42 user_id created_at null true false "
    "(see above) e.g. i.e. -- => {} [] ; : , . ? !"
).split()


def words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(n))


def big_chat_body(tokens: int = 100_000, *, max_tokens: int = 16) -> dict:
    """A chat request of about ``tokens`` prompt tokens: a long conversation of prose-like text."""
    rng = random.Random(20261127)
    messages = [{"role": "system", "content": "You are a careful analyst. " + words(rng, 40)}]
    while count_prompt(MODEL, {"messages": messages}, "chat") < tokens:
        role = "user" if len(messages) % 2 else "assistant"
        messages.append({"role": role, "content": words(rng, 4000)})
    while True:  # trim the last message to land just above the target
        over = count_prompt(MODEL, {"messages": messages}, "chat") - tokens
        text = messages[-1]["content"].split(" ")
        if over <= 50 or len(text) < 2:
            break
        messages[-1]["content"] = " ".join(text[: max(1, len(text) - over * 3 // 4)])
    return {"model": MODEL, "messages": messages, "max_tokens": max_tokens}


def count_prompt_ms(body: dict, repeats: int = 5) -> tuple[int, float]:
    """(tokens, median milliseconds) of ``count_prompt`` on ``body``."""
    tokens = count_prompt(MODEL, body, "chat")
    times = timeit.repeat(lambda: count_prompt(MODEL, body, "chat"), number=1, repeat=repeats)
    return tokens, statistics.median(times) * 1000


def stream_events(chunks: int) -> list[bytes]:
    """The SSE events of a chat stream with usage (each one a network chunk), as the fake sends
    them: role chunk, ``chunks`` content chunks, finish chunk, usage chunk, [DONE]."""
    reply = " ".join(f"token{i}" for i in range(chunks))
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4 * chunks,
            "stream": True, "stream_options": {"include_usage": True}}
    return [event.data for event in chat_completions(body, Controls(reply=reply, chunks=chunks))]


def tracker_us_per_chunk(injected_usage: bool, chunks: int = 200, repeats: int = 7, number: int = 20) -> float:
    """Median microseconds the OpenAI stream tracker spends per event of one stream."""
    provider = PROVIDERS["openai"]
    endpoint = provider.endpoint("POST", "/v1/chat/completions")
    events = stream_events(chunks)

    def one_stream():
        tracker = provider.stream_tracker(endpoint, injected_usage)
        for event in events:
            tracker.feed(event)
        tracker.feed(b"")
        if tracker.usage() is None:
            raise RuntimeError("the stream tracker found no usage in the benchmark stream")

    one_stream()
    times = timeit.repeat(one_stream, number=number, repeat=repeats)
    return statistics.median(times) / number / len(events) * 1e6


def store_us(n: int = 300) -> dict[str, float]:
    """Microseconds of one ``ledger.reserve`` and one ``ledger.finish`` on a fresh SQLite store:
    the store work of every metered request (on SQLite the gateway runs both on its event loop:
    ``pouch.store.quick``)."""
    with tempfile.TemporaryDirectory() as tmp:
        database.open_store(f"sqlite:///{Path(tmp) / 'store.db'}")
        try:
            key, _ = key_service.create("bench-store", budget="1000000")
            now = utcnow()
            window = Period.parse("none").window(now, now)
            usage = {"ts": now, "key": key.id, "key_name": key.name, "provider": "openai", "model": MODEL,
                     "endpoint": "chat.completions", "status": 200, "input_tokens": 30, "output_tokens": 60}
            started = time.perf_counter()
            ids = [ledger.reserve(key.id, window, Money.usd("0.001"), now, owner="bench",
                                  hold=timedelta(minutes=15)).id for _ in range(n)]
            reserved = time.perf_counter()
            for reservation_id in ids:
                ledger.finish(reservation_id, Money.usd("0.0001"), usage)
            finished = time.perf_counter()
        finally:
            database.database.close()
    return {"reserve_us": (reserved - started) / n * 1e6, "finish_us": (finished - reserved) / n * 1e6}


def warm_tokenizer() -> None:
    count_text(MODEL, "warm")
