"""A fake api.anthropic.com on loopback, for end-to-end tests of the gateway and for benchmarks.

    with FakeAnthropic(tls_dir=tmp_path) as fake:
        client = anthropic.Anthropic(base_url=fake.url, api_key="sk-ant-test", max_retries=0,
            http_client=anthropic.DefaultHttpxClient(verify=ssl.create_default_context(cafile=fake.ca_path)))

Each request is recorded in ``fake.requests`` and answered per its ``x-fake-*`` headers, else
per ``fake.behaviour`` (see ``controls.Controls``); what it answers lives in ``anthropic_shapes``.

As a process (benchmarks): ``python -m tests.fakes.anthropic_fake --port 0 --plain --print-url``.
"""

from __future__ import annotations

from .anthropic_shapes import ROUTES, error_body
from .controls import Controls
from .server import JSON, FakeServer, Request, Stream, run_cli


class FakeAnthropic(FakeServer):
    """A threaded HTTP/1.1 fake of api.anthropic.com; HTTPS with its own CA unless ``plain``."""

    name = "anthropic"
    plays = "api.anthropic.com"

    def answer(self, request: Request, controls: Controls) -> JSON | Stream:
        # Checked in the order Anthropic checks them: who is asking, then how, then what.
        # A bearer token is how OAuth clients (Claude Code) authenticate instead of a key.
        if not request.headers.get("x-api-key") and not request.headers.get("authorization"):
            return self.error(request, 401, "x-api-key header is required")
        if not request.headers.get("anthropic-version"):
            return self.error(request, 400, "anthropic-version: header is required")
        route = ROUTES.get((request.method, request.path))
        if route is None:
            return self.error(request, 404, f"Not Found ({request.method} {request.path})")
        answer = route(request.body, controls)
        return JSON(answer) if isinstance(answer, dict) else Stream(answer)

    def error(self, request: Request, status: int, message: str) -> JSON:
        return JSON(error_body(status, message, _request_id(request)), status)

    def response_headers(self, request: Request, started: float) -> dict[str, str]:
        return {"request-id": _request_id(request)}


def _request_id(request: Request) -> str:
    return f"req_{request.id[:24]}"


if __name__ == "__main__":
    run_cli(FakeAnthropic)
