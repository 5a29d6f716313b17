"""The Gemini API's own request shape (its OpenAI-compatible API takes OpenAI's): how its
prompt is counted, what an echo mock answers, how mitmweb's LLM view shows it."""

from __future__ import annotations

import re

from pouch.providers.base import Api
from pouch.providers.gemini import tokens, transcript
from pouch.providers.mocking import last_user_text
from pouch.providers.transcript_format import Renderer

APIS = (
    Api("gemini", tokens.generate_content, lambda body: last_user_text(body.get("contents")),
        Renderer(transcript.request, transcript.response, transcript.stream),
        re.compile(r":(stream)?generateContent$", re.IGNORECASE)),
)
