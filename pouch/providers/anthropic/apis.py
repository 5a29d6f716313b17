"""The Messages API's request shape: how its prompt is counted, what an echo mock answers,
how mitmweb's LLM view shows it."""

from __future__ import annotations

import re

from pouch.providers.anthropic import tokens, transcript
from pouch.providers.base import Api
from pouch.providers.mocking import last_user_text
from pouch.providers.transcript_format import Renderer

APIS = (
    Api("anthropic_messages", tokens.messages, lambda body: last_user_text(body.get("messages")),
        Renderer(transcript.request, transcript.response, transcript.stream), re.compile(r"/messages$")),
)
