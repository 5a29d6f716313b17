"""Fabricated Gemini responses for mock mode, shaped so the google-genai SDK parses them.

A stream is sent the way the client asked: Server-Sent Events for ``alt=sse`` (every SDK),
otherwise one JSON array, each element a partial response. As Gemini does, every element
carries the running ``usageMetadata``; the last one has the ``finishReason`` and the totals.
"""

from __future__ import annotations

import json
import secrets

from pouch.domain.usage import Usage
from pouch.providers.base import Call, Reply
from pouch.providers.mocking import dumps, pieces, unit_vector

_JSON = {"content-type": "application/json; charset=UTF-8", "x-pouch-mock": "true"}
_SSE = {"content-type": "text/event-stream", "cache-control": "no-cache", "x-pouch-mock": "true"}
_DEFAULT_DIMENSIONS = 3072  # gemini-embedding-001's default; also the most a mock will make


def generate(call: Call, usage: Usage, text: str) -> Reply:
    response = _response(call, [text], usage, final=True)
    return Reply(200, dumps(response), dict(_JSON))


def stream(call: Call, usage: Usage, text: str, sse: bool) -> Reply:
    deltas = pieces(text) or [""]
    last = len(deltas) - 1
    responses = [_response(call, [delta], usage, final=i == last) for i, delta in enumerate(deltas)]
    if sse:
        return Reply(200, b"".join(b"data: " + dumps(r) + b"\r\n\r\n" for r in responses), dict(_SSE))
    return Reply(200, b"[" + b",\r\n".join(map(dumps, responses)) + b"]", dict(_JSON))


def embed(body: dict, usage: Usage) -> Reply:
    response = {"embedding": _embedding(body)}
    return Reply(200, dumps(response | _embed_usage(usage)), dict(_JSON))


def batch_embed(body: dict, usage: Usage) -> Reply:
    requests = body.get("requests") if isinstance(body.get("requests"), list) else []
    embeddings = [_embedding(request if isinstance(request, dict) else {}) for request in requests]
    return Reply(200, dumps({"embeddings": embeddings} | _embed_usage(usage)), dict(_JSON))


def _response(call: Call, deltas: list[str], usage: Usage, final: bool) -> dict:
    """One response with ``call.choices`` candidates; only the final one is finished and
    counts the output (earlier stream elements count the prompt, as Gemini's do)."""
    truncated = call.max_output is not None and usage.output_tokens >= call.max_output * call.choices
    candidates = []
    for index in range(call.choices):
        candidate = {"content": {"parts": [{"text": delta} for delta in deltas], "role": "model"}}
        if final:
            candidate["finishReason"] = "MAX_TOKENS" if truncated else "STOP"
        candidates.append(candidate | {"index": index})
    return {
        "candidates": candidates,
        "usageMetadata": _usage_metadata(usage if final else Usage(input_tokens=usage.input_tokens)),
        "modelVersion": call.model,
        "responseId": secrets.token_urlsafe(16),
    }


def _usage_metadata(usage: Usage) -> dict:
    metadata = {
        "promptTokenCount": usage.input_tokens,
        "candidatesTokenCount": usage.visible_output_tokens,
        "totalTokenCount": usage.total_tokens,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": usage.input_tokens}],
    }
    if usage.cached_tokens:
        metadata["cachedContentTokenCount"] = usage.cached_tokens
    if usage.reasoning_tokens:
        metadata["thoughtsTokenCount"] = usage.reasoning_tokens
    return metadata


def _embed_usage(usage: Usage) -> dict:
    return {"usageMetadata": {"promptTokenCount": usage.input_tokens, "totalTokenCount": usage.input_tokens}}


def _embedding(request: dict) -> dict:
    """A unit vector that depends only on the request's content and size."""
    dimensions = request.get("outputDimensionality", request.get("output_dimensionality"))
    if not isinstance(dimensions, int) or isinstance(dimensions, bool):
        dimensions = _DEFAULT_DIMENSIONS
    dimensions = max(1, min(dimensions, _DEFAULT_DIMENSIONS))
    seed = json.dumps(request.get("content"), sort_keys=True).encode()
    return {"values": unit_vector(seed, dimensions)}
