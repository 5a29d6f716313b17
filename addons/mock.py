"""Chain link 4: what pouch answers itself, never forwarding it.

Mock keys (or the whole gateway, pouch_mock=all) get a fabricated, provider-shaped response
with realistic token counts; usage is recorded with what the request would have cost, and
nothing is charged. Their other requests are answered here too (token counts from pouch's own
count, model lists from the price table) or refused, so a mock key's request never reaches the
provider and the upstream credential is never looked up for it.

Side paths (what official clients call besides the model API) get their family's policy
(``pouch.providers.side_paths``): passed on, answered here, or refused; telemetry is answered
here when the operator blocks it (pouch_telemetry=block).
"""

from __future__ import annotations

import asyncio

from mitmproxy import ctx, exceptions, http

from addons.keys import parse_body
from pouch.domain.errors import NoLocalAnswer, SidePathRefused
from pouch.domain.usage import Usage
from pouch.providers import registry, side_paths
from pouch.providers.base import FREE, METERED, SIDE, UNMETERED, Call, Reply
from pouch.services import chain, local_answers, prompt
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
        loader.add_option("pouch_telemetry", str, "pass",
                          "Telemetry official clients send to provider hosts (Claude Code's event logging and "
                          "metrics; docs/side-paths.md): 'pass' forwards it, 'block' answers it here (200) and "
                          "forwards nothing.")

    def configure(self, updated):
        if "pouch_mock" in updated and ctx.options.pouch_mock not in ("off", "all"):
            raise exceptions.OptionsError("pouch_mock must be 'off' or 'all'")
        if "pouch_mock_latency" in updated:
            self.latency = chain.seconds("pouch_mock_latency")
        if "pouch_telemetry" in updated and ctx.options.pouch_telemetry not in ("pass", "block"):
            raise exceptions.OptionsError("pouch_telemetry must be 'pass' or 'block'")
        self.everything, self.reply = ctx.options.pouch_mock == "all", ctx.options.pouch_mock_reply
        self.block_telemetry = ctx.options.pouch_telemetry == "block"

    @chain.fail_closed
    async def request(self, flow: http.HTTPFlow) -> None:
        found = chain.existing(flow)
        if flow.response or flow.error or found is None or found.endpoint is None:
            return
        mock = "mock key" if found.key and found.key.mock else "pouch_mock=all" if self.everything else None
        metering = found.endpoint.metering
        if metering == SIDE:
            self._side(flow, found, mock)
        elif mock is None:
            return
        elif metering == METERED:
            await self._mock(flow, found)
            found.local = mock
        elif metering in (FREE, UNMETERED):
            await self._answer(flow, found, mock)
        # other kinds (a Responses WebSocket) are mocked by their own link

    def _side(self, flow: http.HTTPFlow, found: chain.Exchange, mock: str | None) -> None:
        side = side_paths.of(found.provider, found.endpoint)
        policy = side_paths.decide(side, mock=mock is not None, telemetry_blocked=self.block_telemetry,
                                   own_credential=found.own_credential or found.observed is not None)
        if policy == side_paths.LOCAL:
            why = mock or ("telemetry blocked" if side.telemetry and self.block_telemetry else "answered locally")
            self._reply(flow, side.answer)
            found.local = why
        elif policy == side_paths.REFUSE and mock:
            raise NoLocalAnswer(f"{mock}: pouch answers its requests itself and never forwards them, and it has "
                                f"no answer of its own for {flow.request.path.split('?')[0]} ({side.why})")
        elif policy == side_paths.REFUSE:
            raise SidePathRefused(f"pouch does not forward {flow.request.path.split('?')[0]}: {side.why}")

    async def _answer(self, flow: http.HTTPFlow, found: chain.Exchange, mock: str) -> None:
        """A mock key's free (or unmetered) request: pouch's own answer, or a refusal saying why."""
        request = flow.request
        size = len(request.raw_content or b"")
        body = None
        if size:
            body = await asyncio.to_thread(parse_body, flow) if size > prompt.OFF_LOOP_BYTES else parse_body(flow)
        made = await local_answers.answer(found.provider, found.endpoint, request.path, body, found.requested_at,
                                          size)
        if made is None:
            raise NoLocalAnswer(f"{mock}: pouch answers its requests itself and never forwards them, and it has no "
                                f"answer of its own for {found.endpoint.name} ({request.method} "
                                f"{request.path.split('?')[0]})")
        self._reply(flow, made)
        found.local = mock

    @staticmethod
    def _reply(flow: http.HTTPFlow, made: Reply) -> None:
        flow.response = http.Response.make(made.status, made.body, made.headers)

    async def _mock(self, flow: http.HTTPFlow, found: chain.Exchange) -> None:
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
        self._reply(flow, provider.mock(endpoint, call, body, usage, text))
        found.mock = Usage(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens)
