"""The request shapes of OpenAI's API, wherever they are served (OpenAI, Azure, the compatible
vendors, Gemini's OpenAI-compatible API): how each prompt is counted, what an echo mock
answers, how mitmweb's LLM view shows it."""

from __future__ import annotations

import re

from pouch.providers.base import Api
from pouch.providers.mocking import last_user_text
from pouch.providers.openai import tokens, transcript, transcript_responses
from pouch.providers.transcript_format import Renderer


def _prompts(body: dict) -> str:
    return last_user_text(body.get("prompt", body.get("input")))


CHAT = Api(
    "chat", tokens.chat, lambda body: last_user_text(body.get("messages")),
    Renderer(transcript.chat_request, transcript.chat_response, transcript.chat_stream),
    re.compile(r"/chat/completions$"),
)
RESPONSES = Api(
    "responses", tokens.responses, lambda body: last_user_text(body.get("input")),
    Renderer(transcript_responses.request, transcript_responses.response, transcript_responses.stream),
    re.compile(r"/responses$"),
)
COMPLETIONS = Api(
    "completions", tokens.completions, _prompts,
    Renderer(transcript.completions_request, transcript.completions_response, transcript.completions_stream),
    re.compile(r"(?<!/chat)/completions$"),
)
EMBEDDINGS = Api(
    "embeddings", tokens.embeddings, _prompts,
    Renderer(transcript.embeddings_request, transcript.embeddings_response, None),
    re.compile(r"/embeddings$"),
)
APIS = (CHAT, RESPONSES, COMPLETIONS, EMBEDDINGS)
