"""OpenAI's API format (api.openai.com): chat completions, Responses, legacy completions and
embeddings. Other providers serve it with this folder's ``OpenAI`` configured or subclassed:
Azure (``pouch.providers.azure``), the compatible vendors and self-hosted servers
(``pouch.providers.compatible``), and Gemini's OpenAI-compatible API.

``provider``: hosts, paths, credentials, errors, and reading a request (with ``request``);
``usage`` and ``streams``: usage from JSON bodies and from streams as they pass; ``tokens``:
prompt counting and OpenAI's tokenizers; ``mock``: fabricated responses; ``transcript`` and
``transcript_responses``: mitmweb's LLM view; ``apis``: the request shapes, each tying its
prompt count, mock text and transcript together.
"""

from pouch.providers.openai.provider import OpenAI

PROVIDERS = (OpenAI(),)

__all__ = ["PROVIDERS", "OpenAI"]
