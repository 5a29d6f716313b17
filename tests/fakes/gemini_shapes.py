"""What the fake Gemini answers: generativelanguage.googleapis.com JSON bodies and stream pieces,
as pure functions.

Each route takes the model named in the path, the parsed request body and the request's
``Controls``; it returns a JSON object, or a ``list[Event]`` (a stream). It raises
``ValueError`` for a body Google would refuse with 400. Usage is realistic by default: prompts
are counted the way the gateway counts them (``count_prompt(..., "gemini")``), the reply's
tokens with ``count_text``. Like Google's proto3 JSON, zero counts are left out.
"""

from __future__ import annotations

import json
import uuid
from typing import NamedTuple

from pouch.tokens.count import count_prompt, count_text

from .controls import Controls
from .replies import pieces, reply_text, sse, text_of, vector
from .server import Event

MODELS = (  # (name, displayName, inputTokenLimit, outputTokenLimit, supportedGenerationMethods)
    ("gemini-2.5-flash", "Gemini 2.5 Flash", 1_048_576, 65_536, ("generateContent", "countTokens")),
    ("gemini-2.5-pro", "Gemini 2.5 Pro", 1_048_576, 65_536, ("generateContent", "countTokens")),
    ("gemini-3-flash-preview", "Gemini 3 Flash Preview", 1_048_576, 65_536, ("generateContent", "countTokens")),
    ("gemini-embedding-001", "Gemini Embedding 001", 2_048, 1, ("embedContent", "countTokens")),
)
EMBEDDING_DIMENSIONS = 3072  # gemini-embedding-001's default
_STATUSES = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 409: "ABORTED",
    429: "RESOURCE_EXHAUSTED", 499: "CANCELLED", 500: "INTERNAL", 501: "NOT_IMPLEMENTED", 503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_USAGE_FIELDS = ("promptTokenCount", "candidatesTokenCount", "thoughtsTokenCount", "cachedContentTokenCount",
                 "toolUsePromptTokenCount", "totalTokenCount")
_SERVER_TOOLS = {  # each spelling of a tool Google runs itself -> which one it is
    "googleSearch": "search", "google_search": "search", "googleSearchRetrieval": "search",
    "google_search_retrieval": "search", "urlContext": "url_context", "url_context": "url_context",
    "codeExecution": "code_execution", "code_execution": "code_execution",
}


def dumps(obj) -> str:
    """JSON spaced the way Google's servers space it: after colons, not after commas."""
    return json.dumps(obj, separators=(",", ": "))


def error_body(status: int, message: str) -> dict:
    return {"error": {"code": status, "message": message, "status": _STATUSES.get(status, "UNKNOWN")}}


class Usage(NamedTuple):
    prompt: int  # includes cached, as Gemini reports it
    candidates: int  # the reply; thoughts are reported beside it
    thoughts: int = 0
    cached: int = 0
    total: int | None = None  # None: the sum, as Gemini computes it
    tool_use: int = 0  # the tool rounds' input (their results, re-read), reported beside the prompt

    def metadata(self, candidates: int | None = None, tool_use: bool = True) -> dict:
        """``usageMetadata``, with ``candidates`` so far while a stream is still going, and
        ``tool_use`` False in a stream's chunks before the tool's results show."""
        candidates = self.candidates if candidates is None else candidates
        tool_prompt = self.tool_use if tool_use else 0
        total = self.total if self.total is not None else self.prompt + candidates + self.thoughts + tool_prompt
        counts = {"promptTokenCount": self.prompt, "candidatesTokenCount": candidates, "totalTokenCount": total,
                  "cachedContentTokenCount": self.cached, "toolUsePromptTokenCount": tool_prompt,
                  "thoughtsTokenCount": self.thoughts}
        metadata = {name: count for name, count in counts.items() if count}
        metadata["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": self.prompt}]
        if self.cached:
            metadata["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": self.cached}]
        if tool_prompt:
            metadata["toolUsePromptTokensDetails"] = [{"modality": "TEXT", "tokenCount": tool_prompt}]
        return metadata


def _either(obj: dict, camel: str, snake: str):
    """Google's REST APIs accept both spellings of every field."""
    return obj.get(camel, obj.get(snake))


def _generate_request(body) -> dict:
    if not isinstance(body, dict):
        raise ValueError("Invalid JSON payload received. Expected an object.")
    if not body.get("contents"):
        raise ValueError("* GenerateContentRequest.contents: contents is not specified")
    return body


def _usage(controls: Controls, prompt: int, candidates: int, tool_use: int) -> Usage:
    overrides = controls.usage or {}
    unknown = set(overrides) - set(_USAGE_FIELDS)
    if unknown:
        raise ValueError(f"fake: unknown usage fields {sorted(unknown)}")
    return Usage(
        overrides.get("promptTokenCount", prompt),
        overrides.get("candidatesTokenCount", candidates),
        overrides.get("thoughtsTokenCount", 0),
        overrides.get("cachedContentTokenCount", 0),
        overrides.get("totalTokenCount"),
        overrides.get("toolUsePromptTokenCount", tool_use),
    )


class ToolCalls(NamedTuple):
    """What ``calls`` calls of the request's first server tool add to the candidate."""

    calls: int
    parts: list[dict]  # code execution's, before the text part
    metadata: dict  # groundingMetadata or urlContextMetadata, on the candidate


def _tool_calls(body: dict, controls: Controls) -> ToolCalls:
    """Google bounds none of these per request, so ``tool_calls`` are all performed."""
    tools = body.get("tools")
    found = next((_SERVER_TOOLS[key] for tool in (tools if isinstance(tools, list) else ())
                  if isinstance(tool, dict) for key in tool if key in _SERVER_TOOLS), None)
    calls = controls.tool_calls if found else 0
    if not calls:
        return ToolCalls(0, [], {})
    numbers = range(1, calls + 1)
    if found == "code_execution":
        parts = []
        for i in numbers:
            parts += [{"executableCode": {"language": "PYTHON", "code": f"print({i})"}},
                      {"codeExecutionResult": {"outcome": "OUTCOME_OK", "output": f"{i}"}}]
        return ToolCalls(calls, parts, {})
    if found == "url_context":
        urls = [{"retrievedUrl": f"https://example.com/{i}", "urlRetrievalStatus": "URL_RETRIEVAL_STATUS_SUCCESS"}
                for i in numbers]
        return ToolCalls(calls, [], {"urlContextMetadata": {"urlMetadata": urls}})
    grounding = {
        "webSearchQueries": [f"fake query {i}" for i in numbers],
        "groundingChunks": [{"web": {"uri": f"https://example.com/{i}", "title": f"Result {i}"}} for i in numbers],
        "searchEntryPoint": {"renderedContent": "<div></div>"},
    }
    return ToolCalls(calls, [], {"groundingMetadata": grounding})


def _reply(model: str, body: dict, controls: Controls) -> tuple[str, str, Usage, ToolCalls]:
    """The reply text, its finishReason, its usage and the server tool calls made for it."""
    prompt = count_prompt(model, body, "gemini")  # first: it refuses malformed contents
    users = [c for c in body["contents"] if isinstance(c, dict) and c.get("role", "user") == "user"]
    said = text_of(users[-1].get("parts")) if users else ""
    config = _either(body, "generationConfig", "generation_config") or {}
    max_tokens = _either(config, "maxOutputTokens", "max_output_tokens") if isinstance(config, dict) else None
    text, truncated = reply_text(controls, model, said, max_tokens)
    tools = _tool_calls(body, controls)
    # Google bills the tool rounds' input apart from the prompt, as toolUsePromptTokenCount.
    usage = _usage(controls, prompt, count_text(model, text), tools.calls * controls.tool_input)
    return text, "MAX_TOKENS" if truncated else "STOP", usage, tools


def _response(model: str, response_id: str, text: str, finish: str | None, usage: dict | None,
              tool_parts: list[dict] | None = None, tool_metadata: dict | None = None) -> dict:
    candidate = {"content": {"parts": [*(tool_parts or ()), {"text": text}], "role": "model"}}
    if finish:  # only the last chunk of a stream has one
        candidate["finishReason"] = finish
    candidate.update(tool_metadata or {})
    candidate["index"] = 0
    metadata = {} if usage is None else {"usageMetadata": usage}
    return {"candidates": [candidate], **metadata, "modelVersion": model, "responseId": response_id}


def generate_content(model: str, body, controls: Controls) -> dict:
    body = _generate_request(body)
    text, finish, usage, tools = _reply(model, body, controls)
    metadata = None if controls.no_usage else usage.metadata()
    return _response(model, uuid.uuid4().hex[:22], text, finish, metadata, tools.parts, tools.metadata)


def stream_generate_content(model: str, body, controls: Controls, *, alt_sse: bool) -> list[Event]:
    """With ``alt=sse``, one ``data:`` event per chunk; without, a JSON array sent in pieces.
    Every chunk repeats usageMetadata, cumulative; the last one also has the finishReason and
    any grounding or URL context metadata. Code execution's parts lead the first chunk."""
    body = _generate_request(body)
    text, finish, usage, tools = _reply(model, body, controls)
    response_id = uuid.uuid4().hex[:22]
    parts = pieces(text, controls.chunks) or [""]
    chunks = []
    for index, piece in enumerate(parts):
        last = index == len(parts) - 1
        so_far = usage.candidates if last else min(count_text(model, "".join(parts[: index + 1])), usage.candidates)
        # The tool rounds' input is counted from the chunk that first shows their results.
        shown = bool(tools.parts) or last
        metadata = None if controls.no_usage else usage.metadata(so_far, tool_use=shown)
        chunks.append(_response(model, response_id, piece, finish if last else None, metadata,
                                tools.parts if index == 0 else None, tools.metadata if last else None))
    if alt_sse:
        return [Event(sse(dumps(chunk), end="\r\n\r\n"), True) for chunk in chunks]
    events = [Event((("[" if index == 0 else "\r\n,\r\n") + dumps(chunk)).encode(), True)
              for index, chunk in enumerate(chunks)]
    return [*events, Event(b"\r\n]", False)]


def count_tokens(model: str, body, controls: Controls) -> dict:
    if not isinstance(body, dict):
        raise ValueError("Invalid JSON payload received. Expected an object.")
    # Either contents alone, or a whole generateContentRequest (which may carry tools and a system).
    request = _either(body, "generateContentRequest", "generate_content_request") or body
    tokens = (controls.usage or {}).get("promptTokenCount", count_prompt(model, request, "gemini"))
    return {"totalTokens": tokens, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": tokens}]}


def _embedding(request) -> dict:
    if not isinstance(request, dict) or not isinstance(request.get("content"), dict):
        raise ValueError("* EmbedContentRequest.content: content is not specified")
    dimensions = _either(request, "outputDimensionality", "output_dimensionality") or EMBEDDING_DIMENSIONS
    return {"values": vector(request["content"], dimensions)}


def embed_content(model: str, body, controls: Controls) -> dict:
    return {"embedding": _embedding(body)}


def batch_embed_contents(model: str, body, controls: Controls) -> dict:
    requests = body.get("requests") if isinstance(body, dict) else None
    if not isinstance(requests, list) or not requests:
        raise ValueError("* BatchEmbedContentsRequest.requests: requests is not specified")
    return {"embeddings": [_embedding(request) for request in requests]}


def _model(name, display, input_limit, output_limit, methods) -> dict:
    return {"name": f"models/{name}", "version": "001", "displayName": display, "description": display,
            "inputTokenLimit": input_limit, "outputTokenLimit": output_limit,
            "supportedGenerationMethods": list(methods)}


def models() -> dict:
    return {"models": [_model(*model) for model in MODELS]}


def get_model(name: str) -> dict | None:
    return next((_model(*model) for model in MODELS if model[0] == name), None)


def openai_models(body, controls: Controls) -> dict:
    """The OpenAI-compatible /models: Gemini's ids keep their "models/" prefix there."""
    data = [{"id": f"models/{model[0]}", "object": "model", "owned_by": "google"} for model in MODELS]
    return {"object": "list", "data": data}


METHODS = {  # the POST /v1beta/models/{model}:{method} routes
    "generateContent": generate_content,
    "countTokens": count_tokens,
    "embedContent": embed_content,
    "batchEmbedContents": batch_embed_contents,
}
