"""Chain link 4: mock keys (or the whole gateway, pouch_mock=all) get a fabricated,
provider-shaped response with realistic token counts. Nothing is sent upstream; usage is
recorded with what the request would have cost, and nothing is charged."""

from __future__ import annotations

import asyncio

from mitmproxy import ctx, exceptions, http

from pouch.domain.usage import Usage
from pouch.providers.base import Call
from pouch.services import chain, prompt
from pouch.tokens.count import count_text


def _text_of(content) -> str:
    """Text of a message's content: a string, or a list of parts with text in them."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = (part.get("text") for part in content if isinstance(part, dict))
        return " ".join(part for part in parts if isinstance(part, str))
    if isinstance(content, dict):
        return _text_of(content.get("parts") or content.get("text") or "")
    return ""


def last_user_text(api: str, body: dict) -> str:
    """What an echo mock answers with: the last thing the user said, in any provider's shape."""
    if api in ("chat", "anthropic_messages"):
        turns = body.get("messages")
    elif api == "responses":
        turns = body.get("input")
    elif api == "gemini":
        turns = body.get("contents")
    else:  # completions, embeddings
        turns = body.get("prompt", body.get("input"))
    if isinstance(turns, list) and turns and all(isinstance(t, dict) for t in turns):
        users = [t for t in turns if t.get("role", "user") == "user"]
        turns = (users or turns)[-1].get("content", users[-1].get("parts") if users else "")
    elif isinstance(turns, list) and turns and isinstance(turns[0], str):
        turns = turns[-1]
    return _text_of(turns)


def fit(model: str, text: str, max_tokens: int | None) -> tuple[str, int]:
    """The reply text cut to ``max_tokens`` (whole words), and its token count."""
    tokens = count_text(model, text)
    if max_tokens is None or tokens <= max_tokens:
        return text, tokens
    words = text.split(" ")
    fits, too_long = 0, len(words)  # binary search: a few tokenizations, not one per word
    while too_long - fits > 1:
        middle = (fits + too_long) // 2
        if count_text(model, " ".join(words[:middle])) <= max_tokens:
            fits = middle
        else:
            too_long = middle
    text = " ".join(words[:fits])
    return text, count_text(model, text)


class Mock:
    def __init__(self):
        self.latency = 0.0

    def load(self, loader):
        loader.add_option("pouch_mock", str, "off",
                          "'all' answers every metered request with a mock (nothing sent upstream, nothing "
                          "charged); 'off' mocks only keys created with --mock.")
        loader.add_option("pouch_mock_reply", str, "",
                          "Text of mock replies; empty echoes the last user message.")
        loader.add_option("pouch_mock_latency", str, "0", "Seconds a mock waits before answering (e.g. 0.5).")

    def configure(self, updated):
        if "pouch_mock" in updated and ctx.options.pouch_mock not in ("off", "all"):
            raise exceptions.OptionsError("pouch_mock must be 'off' or 'all'")
        if "pouch_mock_latency" in updated:
            self.latency = chain.seconds("pouch_mock_latency")

    @chain.fail_closed
    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not chain.metered(flow):
            return
        key = flow.metadata.get(chain.KEY)
        if not ((key and key["mock"]) or ctx.options.pouch_mock == "all"):
            return
        provider, facts = chain.provider_of(flow), flow.metadata[chain.CALL]
        endpoint = chain.endpoint_of(flow)
        body = flow.metadata[chain.BODY]
        # The cap pouch set (when the budget could not cover the model's maximum) binds like the client's.
        cap = flow.metadata.get(chain.CAPPED) or facts["max_output"]
        call = Call(facts["model"], facts["stream"], cap, facts["choices"])
        input_tokens = await prompt.input_tokens(flow)
        if endpoint.api == "embeddings":
            text, output_tokens = "", 0
        else:
            reply = ctx.options.pouch_mock_reply or last_user_text(endpoint.api, body) or "(mock reply)"
            text, output_tokens = fit(call.model, reply, call.max_output)
        # n choices: the mock answers n times, each reply billed
        usage = Usage(input_tokens=input_tokens, output_tokens=output_tokens * call.choices)
        if self.latency > 0:
            await asyncio.sleep(self.latency)
        made = provider.mock(endpoint, call, body, usage, text)
        flow.response = http.Response.make(made.status, made.body, made.headers)
        flow.metadata[chain.MOCK] = {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens}
