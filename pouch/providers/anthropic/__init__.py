"""Anthropic's Messages API (api.anthropic.com).

``provider``: hosts, paths, reading a request, credentials, errors; ``usage``: usage from
JSON bodies and from streams as they pass; ``tokens``: prompt counting and Claude's tokenizer
estimate; ``mock``: fabricated responses; ``answers``: the free endpoints answered by pouch itself (a
mock key's); ``side_paths``: what Claude Code calls besides the Messages API, and the policy
for each family; ``transcript``: mitmweb's LLM view; ``apis``: the request shape, tying its
prompt count, mock text and transcript together.
"""

from pouch.providers.anthropic.provider import MESSAGES, Anthropic, long_context_beta

PROVIDERS = (Anthropic(),)

__all__ = ["MESSAGES", "PROVIDERS", "Anthropic", "long_context_beta"]
