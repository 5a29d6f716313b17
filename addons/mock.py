"""Chain link 4: mock keys (or the whole gateway, pouch_mock=all) get a fabricated,
provider-shaped response with realistic token counts. Nothing is sent upstream; usage is
recorded with what the request would have cost, and nothing is charged."""

from __future__ import annotations

import asyncio

from mitmproxy import ctx, exceptions, http

from pouch.domain.usage import Usage
from pouch.providers import registry
from pouch.providers.base import Call
from pouch.services import chain, prompt
from pouch.tokens.count import count_text


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
        self.everything, self.reply = ctx.options.pouch_mock == "all", ctx.options.pouch_mock_reply

    @chain.fail_closed
    async def request(self, flow: http.HTTPFlow) -> None:
        found = chain.existing(flow)
        if flow.response or flow.error or found is None or not found.metered:
            return
        if not ((found.key and found.key.mock) or self.everything):
            return
        provider, endpoint, body, asked = found.provider, found.endpoint, found.body, found.call
        # The cap pouch set (when the budget could not cover the model's maximum) binds like the client's.
        call = Call(asked.model, asked.stream, found.output_cap(), asked.choices)
        input_tokens = await prompt.input_tokens(flow)
        if endpoint.api == "embeddings":
            text, output_tokens = "", 0
        else:
            reply = self.reply or registry.api(endpoint.api).echo_text(body) or "(mock reply)"
            text, output_tokens = fit(call.model, reply, call.max_output)
        # n choices: the mock answers n times, each reply billed
        usage = Usage(input_tokens=input_tokens, output_tokens=output_tokens * call.choices)
        if self.latency > 0:
            await asyncio.sleep(self.latency)
        made = provider.mock(endpoint, call, body, usage, text)
        flow.response = http.Response.make(made.status, made.body, made.headers)
        found.mock = Usage(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens)
