"""Google's Gemini API (generativelanguage.googleapis.com): its own API, and the
OpenAI-compatible one on the same host (served by ``pouch.providers.openai``).

``provider``: hosts, paths, reading a request, credentials, errors; ``usage``: usage from JSON
bodies and from streams (SSE or a JSON array) as they pass; ``tokens``: prompt counting;
``mock``: fabricated responses; ``transcript``: mitmweb's LLM view; ``apis``: the request
shape, tying its prompt count, mock text and transcript together.
"""

from pouch.providers.gemini.provider import BATCH_EMBED, EMBED, GENERATE, STREAM, STREAM_ARRAY, Gemini

PROVIDERS = (Gemini(),)

__all__ = ["BATCH_EMBED", "EMBED", "GENERATE", "PROVIDERS", "STREAM", "STREAM_ARRAY", "Gemini"]
