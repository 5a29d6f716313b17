"""OpenAI-compatible APIs: hosted vendors built in, self-hosted servers added by configuration.

They take OpenAI's requests, errors and response shapes (so ``OpenAI`` serves them), but count
usage in their own ways. ``compatible_usage`` turns each into OpenAI's way (input counts
include cache reads, output counts include reasoning):

=========== ===================== ================================================= =================================
vendor      base path             usage as sent                                     normalised
=========== ===================== ================================================= =================================
groq        /openai/v1            OpenAI's; a stream's totals come in the final     read from ``x_groq.usage`` when
                                  chunk's ``x_groq.usage`` (OpenAI's usage chunk    there is no ``usage``
                                  only when asked)
mistral     /v1                   prompt/completion tokens; usage always in a       as is; pouch never asks (Mistral
                                  stream's last chunk                               refuses ``stream_options``)
deepseek    "" and /v1 (/beta)    ``prompt_cache_hit_tokens`` + ``_miss_tokens`` =  cached = hit tokens
                                  ``prompt_tokens``; reasoning (deepseek-reasoner)
                                  inside ``completion_tokens``
xai         /v1                   cached inside ``prompt_tokens``; reasoning NOT    output = completion + reasoning
                                  inside ``completion_tokens`` (total = prompt +
                                  completion + reasoning)
openrouter  /api/v1               OpenAI's, plus ``cost`` (ignored: pouch prices    as is
                                  itself) and ``cache_write_tokens``
together    /v1                   OpenAI's                                          as is
fireworks   /inference/v1         OpenAI's                                          as is
=========== ===================== ================================================= =================================

Whether reasoning sits inside the output count is decided by ``total_tokens`` where a vendor
sends one (total = input + output + reasoning means it does not), so a vendor changing its
habit is still counted right; only without a total does the vendor's documented habit decide.

Output caps pouch sets go in ``max_tokens``, the field every compatible server reads (Mistral
refuses ``max_completion_tokens``, and a server that silently skipped it would leave the request
uncapped, beyond what its reservation covers).

Self-hosted servers (vLLM, Ollama, llama.cpp, ...) come from ``pouch_compatible`` specs, see
``parse_compatible``. Model prices for them go in the operator's prices.json under the
server's name, like any other provider's.
"""

from pouch.providers.compatible.provider import Compatible, compatible_usage
from pouch.providers.compatible.spec import DEFAULT_PORTS, parse_compatible

VENDORS = (
    Compatible("groq", ("api.groq.com",), ("GROQ_API_KEY",), "/openai/v1"),
    Compatible("mistral", ("api.mistral.ai",), ("MISTRAL_API_KEY",), "/v1", stream_usage_option=False),
    Compatible("deepseek", ("api.deepseek.com",), ("DEEPSEEK_API_KEY",), "", other_base_paths=("/v1", "/beta")),
    Compatible("xai", ("api.x.ai",), ("XAI_API_KEY",), "/v1", reasoning_separate=True, unpriced=("search_parameters",)),
    Compatible("openrouter", ("openrouter.ai",), ("OPENROUTER_API_KEY",), "/api/v1",
               unpriced=("models", "route", "plugins")),
    Compatible("together", ("api.together.xyz", "api.together.ai"), ("TOGETHER_API_KEY",), "/v1"),
    Compatible("fireworks", ("api.fireworks.ai",), ("FIREWORKS_API_KEY",), "/inference/v1"),
)
PROVIDERS = VENDORS

__all__ = ["DEFAULT_PORTS", "PROVIDERS", "VENDORS", "Compatible", "compatible_usage", "parse_compatible"]
