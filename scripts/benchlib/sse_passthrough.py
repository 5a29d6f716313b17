"""The streaming baseline: bare mitmdump plus the one thing any proxy in front of an LLM API
must do, pass event streams on as they arrive instead of buffering them (mitmdump's default).

    mitmdump -s scripts/benchlib/sse_passthrough.py
"""

from mitmproxy import http


def responseheaders(flow: http.HTTPFlow) -> None:
    if flow.response.headers.get("content-type", "").startswith("text/event-stream"):
        flow.response.stream = True
