"""Documented estimates for what tiktoken cannot count, each chosen to err high.

An under-count lets a request spend past its budget; an over-count only holds a little more of
the budget until the request settles to the provider's real usage. These are the estimates
every request shape shares: models no provider folder's ``Tokenizer`` knows, media sent as
base64 or by reference, and tool formatting. A vendor's own (its tokenizer's factor, its image
and tool prompts) are in its folder's ``tokens`` module.
"""

from __future__ import annotations

import math
from fractions import Fraction

from pouch.providers.base import Tokenizer

# Models no provider folder claims (Gemini, Llama, Mistral, gpt-oss, unknown ones) are counted
# with OpenAI's newest encoding and scaled. Gemini's 256k SentencePiece vocabulary typically
# needs fewer tokens than o200k_base for English and code; Llama 3 and Mistral (128k-131k
# tiktoken-style vocabularies) a few to ~15% more. Scripts o200k_base compresses unusually well
# (Indic, some CJK) can exceed both.
OTHER_MODELS = Tokenizer(lambda name: True, "o200k_base", Fraction(27, 20))

# OpenAI renders tool definitions in an undocumented format, terser than their JSON; counting
# the JSON plus these errs high.
TOOLS_TOKENS = 20  # once per request that has tools
TOOL_TOKENS = 10  # per tool definition or call

# An image of unknown size for a model whose own image rule does not apply (another vendor's
# model behind an OpenAI-compatible API): the largest any vendor's costs, Claude's 5,000
# (Gemini's is 2,240).
ANY_IMAGE_TOKENS = 5_000

# Other media is estimated from its decoded size. Audio and video: Gemini bills 32 tokens a
# second of audio (OpenAI ~10) and speech can be coded in ~750 bytes a second. Documents: a PDF
# page is billed as its text plus a page image (~1.5k-3k tokens) and a text page can compress to
# ~3 KB. One part is capped at providers' 100-page document limit; a reference (file id, URL)
# has no size here and counts as the cap. A longer video or file can exceed it.
AUDIO_BYTES_PER_TOKEN = 20
DOCUMENT_BYTES_PER_TOKEN = 2
MEDIA_MAX_TOKENS = 300_000


def media_tokens(base64_data, bytes_per_token: int) -> int:
    """Audio, video or a document sent inline as base64 (or, if ``None``, by reference)."""
    if not isinstance(base64_data, str) or not base64_data:
        return MEDIA_MAX_TOKENS
    return min(MEDIA_MAX_TOKENS, math.ceil(len(base64_data) * 3 / 4 / bytes_per_token))
