"""Token usage, normalised at the provider edge to one shape.

``input_tokens`` counts every input token, including the cached reads and cache writes that
are broken out in ``cached_tokens`` / ``cache_write_*``; ``output_tokens`` counts every output
token, including the ``reasoning_tokens`` broken out of it. (OpenAI reports this way; the
Anthropic and Gemini providers convert to it.) ``tool_calls`` counts the paid server-side tool
calls the provider reports (``(("web_search", 2),)``), billed per call on top of the tokens.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    cached_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    tool_calls: tuple[tuple[str, int], ...] = ()  # (tool name, calls), sorted by name

    def __post_init__(self):
        for field in dataclasses.fields(self):
            if field.name == "tool_calls":
                continue
            value = getattr(self, field.name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"usage {field.name} must be a non-negative int, got {value!r}")
        if self.cached_tokens + self.cache_write_tokens > self.input_tokens:
            raise ValueError("cached and cache-write tokens are part of input_tokens")
        if self.reasoning_tokens > self.output_tokens:
            raise ValueError("reasoning tokens are part of output_tokens")
        for name, calls in self.tool_calls:
            if not isinstance(name, str) or not isinstance(calls, int) or isinstance(calls, bool) or calls < 0:
                raise ValueError(f"usage tool_calls must be (name, non-negative int) pairs, got {(name, calls)!r}")

    @staticmethod
    def tools(counts: dict[str, int]) -> tuple[tuple[str, int], ...]:
        """``tool_calls`` from a dict, without zero counts, in a stable order."""
        return tuple(sorted((name, calls) for name, calls in counts.items() if calls))

    @property
    def cache_write_tokens(self) -> int:
        return self.cache_write_5m_tokens + self.cache_write_1h_tokens

    @property
    def uncached_input_tokens(self) -> int:
        return self.input_tokens - self.cached_tokens - self.cache_write_tokens

    @property
    def visible_output_tokens(self) -> int:
        return self.output_tokens - self.reasoning_tokens

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens
