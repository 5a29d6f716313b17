"""Documented estimates for what tiktoken cannot count, each chosen to err high.

An under-count lets a request spend past its budget; an over-count only holds a little more of
the budget until the request settles to the provider's real usage. These cover other vendors'
tokenizers, images whose size is unknown, audio and files, and tool formatting.
"""

from __future__ import annotations

import math
from fractions import Fraction

from pouch.tokens.encodings import canonical_model, is_exact

# Non-OpenAI tokenizers are not public, so their prompts are counted with o200k_base and scaled.
# Claude: Anthropic's tokenizer (Claude 3 to Opus 4.6) needs ~16% (English prose) to ~30%
# (Python) more tokens than o200k_base; the newer one (Opus 4.7 on, Sonnet 5) needs ~30% more
# than that (Anthropic's token-counting docs): up to ~1.69x, so 1.75.
CLAUDE_FACTOR = Fraction(7, 4)
# Others: Gemini's 256k SentencePiece vocabulary typically needs fewer tokens than o200k_base
# for English and code; Llama 3 and Mistral (128k-131k tiktoken-style vocabularies) a few to
# ~15% more. Scripts o200k_base compresses unusually well (Indic, some CJK) can exceed both.
NON_OPENAI_FACTOR = Fraction(27, 20)

# OpenAI renders tool definitions in an undocumented format, terser than their JSON; counting
# the JSON plus these errs high.
TOOLS_TOKENS = 20  # once per request that has tools
TOOL_TOKENS = 10  # per tool definition or call
ANTHROPIC_TOOLS_TOKENS = 530  # Anthropic's tool-use system prompt, the largest of any model
ANTHROPIC_BUILTIN_TOOL_TOKENS = 1_300  # bash 245, text editor 700, computer use ~1,234

# One OpenAI image of unknown size: (detail "low", detail "high"/"auto"). Tile models cost
# base + tiles x per-tile; after fitting in 2048x2048 and scaling the short side to 768, the
# most tiles is 2 x 4 (a 768x2048 image): gpt-4o 85 + 8 x 170 = 1445 (a square is only 765).
# gpt-5 (70/140) and o1/o3 (75/150) stay under gpt-4o's default. Patch models ignore detail and
# cost up to 1536 patches x a per-model multiplier.
OPENAI_IMAGE_TOKENS = (85, 85 + 8 * 170)
_OPENAI_IMAGE_TOKENS_BY_PREFIX = (
    ("gpt-4o-mini", (2_833, 2_833 + 8 * 5_667)),
    (("gpt-4.1-mini", "gpt-5-mini"), (2_489, 2_489)),  # x1.62
    (("gpt-4.1-nano", "gpt-5-nano"), (3_779, 3_779)),  # x2.46
    ("o4-mini", (2_642, 2_642)),  # x1.72
)
OPENAI_ORIGINAL_IMAGE_TOKENS = 12_000  # detail "original" (gpt-5.4 on): ~10k patches; undocumented
ANTHROPIC_IMAGE_TOKENS = 5_000  # width x height / 750; Opus 4.7 takes 3.75 MP (older: 1,600)
GEMINI_IMAGE_TOKENS = 2_240  # Gemini 3 "ultra high" (default "high" is 1,120; 2.x: 258 a tile)

# Other media is estimated from its decoded size. Audio and video: Gemini bills 32 tokens a
# second of audio (OpenAI ~10) and speech can be coded in ~750 bytes a second. Documents: a PDF
# page is billed as its text plus a page image (~1.5k-3k tokens) and a text page can compress to
# ~3 KB. One part is capped at providers' 100-page document limit; a reference (file id, URL)
# has no size here and counts as the cap. A longer video or file can exceed it.
AUDIO_BYTES_PER_TOKEN = 20
DOCUMENT_BYTES_PER_TOKEN = 2
MEDIA_MAX_TOKENS = 300_000


def input_upper_bound(model: str, count: int) -> int:
    """The most input tokens ``model`` can bill for a prompt that pouch counted as ``count``."""
    if is_exact(model):
        return count
    factor = CLAUDE_FACTOR if "claude" in canonical_model(model) else NON_OPENAI_FACTOR
    return math.ceil(count * factor)


def openai_image_tokens(model: str, detail) -> int:
    """One image of unknown size in an OpenAI-shaped request for ``model``."""
    if not is_exact(model):  # another vendor behind an OpenAI-compatible API: its worst case
        return max(ANTHROPIC_IMAGE_TOKENS, GEMINI_IMAGE_TOKENS)
    if detail == "original":
        return OPENAI_ORIGINAL_IMAGE_TOKENS
    name = canonical_model(model)
    costs = (tokens for prefix, tokens in _OPENAI_IMAGE_TOKENS_BY_PREFIX if name.startswith(prefix))
    low, high = next(costs, OPENAI_IMAGE_TOKENS)
    return low if detail == "low" else high


def media_tokens(base64_data, bytes_per_token: int) -> int:
    """Audio, video or a document sent inline as base64 (or, if ``None``, by reference)."""
    if not isinstance(base64_data, str) or not base64_data:
        return MEDIA_MAX_TOKENS
    return min(MEDIA_MAX_TOKENS, math.ceil(len(base64_data) * 3 / 4 / bytes_per_token))
