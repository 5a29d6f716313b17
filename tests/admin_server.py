"""The admin API for tests: served in this process on a loopback port (its own event loop on
a thread, as ``pouch admin`` serves it), and a client that speaks to it over real HTTP."""

from __future__ import annotations

import asyncio
import threading

import httpx2

from pouch.admin.auth import Authenticator
from pouch.admin.server import AdminServer, Listen


class Served:
    def __init__(self, auth: Authenticator | None = None):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="admin-api", daemon=True)
        self.thread.start()
        self.server = AdminServer(auth)
        self._call(self._start())
        self.url = self.server.url

    async def _start(self):
        self.server.start(Listen("127.0.0.1", 0))

    async def _stop(self):
        self.server.stop()

    def _call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(10)

    def stop(self) -> None:
        self._call(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class Api:
    """``api.get("/api/keys", token)``: a response, whatever its status."""

    def __init__(self, url: str):
        self.url = url
        self.http = httpx2.Client(base_url=url, timeout=30)

    def request(self, method: str, path: str, token: str | None = None, json=None, **kwargs) -> httpx2.Response:
        headers = dict(kwargs.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return self.http.request(method, path, headers=headers, json=json, **kwargs)

    def get(self, path, token=None, **kwargs):
        return self.request("GET", path, token, **kwargs)

    def post(self, path, token=None, json=None, **kwargs):
        return self.request("POST", path, token, json, **kwargs)

    def patch(self, path, token=None, json=None, **kwargs):
        return self.request("PATCH", path, token, json, **kwargs)

    def close(self):
        self.http.close()


def error_of(response: httpx2.Response, status: int) -> str:
    """The message of an error answer, after checking its status and shape."""
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert list(body) == ["error"] and set(body["error"]) == {"message", "type"}, body
    return body["error"]["message"]
