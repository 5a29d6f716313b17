"""A fake generativelanguage.googleapis.com on loopback, for end-to-end tests of the gateway.

    with FakeGemini(tls_dir=tmp_path) as fake:
        client = genai.Client(api_key="gm-test", http_options=types.HttpOptions(
            base_url=fake.url, client_args={"verify": ssl.create_default_context(cafile=fake.ca_path)}))

Serves the native API under /v1beta (and /v1) and the OpenAI-compatible one under
/v1beta/openai. Each request is recorded in ``fake.requests`` and answered per its ``x-fake-*``
headers, else per ``fake.behaviour`` (see ``controls.Controls``); what it answers lives in
``gemini_shapes`` (and, for the OpenAI-compatible surface, ``openai_shapes``).

As a process (benchmarks): ``python -m tests.fakes.gemini_fake --port 0 --plain --print-url``.
"""

from __future__ import annotations

import re
import time

from . import gemini_shapes, openai_shapes
from .controls import Controls
from .server import JSON, FakeServer, Request, Stream, run_cli

_MODEL_PATH = re.compile(r"/(?P<version>v1(?:beta)?)/models/(?P<model>[^/:]+)(?::(?P<method>\w+))?")
_OPENAI_ROUTES = {
    ("POST", "/v1beta/openai/chat/completions"): openai_shapes.chat_completions,
    ("POST", "/v1beta/openai/embeddings"): openai_shapes.embeddings,
    ("GET", "/v1beta/openai/models"): gemini_shapes.openai_models,
}
_UNREGISTERED = (
    "Method doesn't allow unregistered callers (callers without established identity). "
    "Please use API Key or other form of API consumer identity to call this API."
)


def _is_openai(request: Request) -> bool:
    return request.path.startswith("/v1beta/openai/")


class FakeGemini(FakeServer):
    """A threaded HTTP/1.1 fake of generativelanguage.googleapis.com; HTTPS with its own CA unless
    ``plain``."""

    name = "gemini"
    plays = "generativelanguage.googleapis.com"
    json_type = "application/json; charset=UTF-8"

    def answer(self, request: Request, controls: Controls) -> JSON | Stream:
        if _is_openai(request):
            if not request.headers.get("authorization", "").startswith("Bearer "):
                return self.error(request, 403, _UNREGISTERED)
            route = _OPENAI_ROUTES.get((request.method, request.path))
            if route is None:
                return self.error(request, 404, f"Not found: {request.method} {request.path}")
            answer = route(request.body, controls)
            return JSON(answer) if isinstance(answer, dict) else Stream(answer)
        # A missing key is refused before anything else; Google says so with a 403.
        if not request.headers.get("x-goog-api-key") and not request.query.get("key"):
            return self.error(request, 403, _UNREGISTERED)
        if request.method == "GET" and request.path in ("/v1/models", "/v1beta/models"):
            return JSON(gemini_shapes.models())
        match = _MODEL_PATH.fullmatch(request.path)
        if match is None:
            return self.error(request, 404, f"Not found: {request.method} {request.path}")
        model, method = match["model"], match["method"]
        if request.method == "GET" and method is None and (found := gemini_shapes.get_model(model)):
            return JSON(found)
        if request.method == "POST" and method == "streamGenerateContent":
            alt_sse = request.query.get("alt") == "sse"
            events = gemini_shapes.stream_generate_content(model, request.body, controls, alt_sse=alt_sse)
            return Stream(events, "text/event-stream" if alt_sse else self.json_type)
        if request.method == "POST" and method in gemini_shapes.METHODS:
            return JSON(gemini_shapes.METHODS[method](model, request.body, controls))
        return self.error(request, 404, f"models/{model} is not found for API version {match['version']}, "
                                        f"or is not supported for {method or request.method}.")

    def error(self, request: Request, status: int, message: str) -> JSON:
        body = gemini_shapes.error_body(status, message)
        # The OpenAI-compatible surface wraps Google's error in a list, as the real one does.
        return JSON([body] if _is_openai(request) else body, status)

    def response_headers(self, request: Request, started: float) -> dict[str, str]:
        return {"server-timing": f"gfet4t7; dur={int((time.monotonic() - started) * 1000)}"}


if __name__ == "__main__":
    run_cli(FakeGemini)
