"""A fake api.openai.com on loopback, for end-to-end tests of the gateway and for benchmarks.

    with FakeOpenAI(tls_dir=tmp_path) as fake:
        client = openai.OpenAI(base_url=fake.url + "/v1", api_key="sk-test",
                               http_client=httpx2.Client(verify=ssl.create_default_context(cafile=fake.ca_path)))

Each request is recorded in ``fake.requests`` and answered per its ``x-fake-*`` headers, else
per ``fake.behaviour`` (see ``controls.Controls``); what it answers lives in ``openai_shapes``.

As a process (benchmarks): ``python -m tests.fakes.openai_fake --port 0 --plain --print-url``.
"""

from __future__ import annotations

import time

from .controls import Controls, parse_controls
from .openai_shapes import ROUTES, error_body
from .openai_websocket import ResponsesSocket
from .server import JSON, FakeServer, RecordedRequest, Request, Stream, run_cli

__all__ = ["FakeOpenAI", "RecordedRequest", "main", "parse_controls"]  # importable from here, as before


class FakeOpenAI(ResponsesSocket, FakeServer):
    """A threaded HTTP/1.1 fake of api.openai.com; HTTPS with its own CA unless ``plain``; the
    Responses API over WebSocket too (``openai_websocket``)."""

    name = "openai"
    plays = "api.openai.com"
    # The base paths of OpenAI-compatible vendors (Groq, Fireworks, OpenRouter, Azure's v1
    # surface) map onto OpenAI's, so one fake plays them all.
    vendor_bases = ("/openai/v1/", "/inference/v1/", "/api/v1/")

    def answer(self, request: Request, controls: Controls) -> JSON | Stream:
        path = request.path
        for base in self.vendor_bases:
            if path.startswith(base):
                path = "/v1/" + path[len(base):]
        route = ROUTES.get((request.method, path))
        if route is None:
            return self.error(request, 404, f"Invalid URL ({request.method} {request.path})")
        answer = route(request.body, controls)
        return JSON(answer) if isinstance(answer, dict) else Stream(answer)

    def error(self, request: Request, status: int, message: str) -> JSON:
        return JSON(error_body(status, message), status)

    def response_headers(self, request: Request, started: float) -> dict[str, str]:
        return {
            "x-request-id": f"req_{request.id}",
            "openai-processing-ms": str(int((time.monotonic() - started) * 1000)),
            "openai-version": "2020-10-01",
        }


def main(argv=None):
    run_cli(FakeOpenAI, argv)


if __name__ == "__main__":
    main()
