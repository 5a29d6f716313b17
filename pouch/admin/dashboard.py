"""The web dashboard at ``/``: one page and its static files (``pouch/admin/static``), and
``/api/info``, what the page asks first.

The page and its files hold no data, so they are served without a token: the page asks the API
for everything with the token the person signs in with, sent as ``Authorization: Bearer`` (kept in
the tab's sessionStorage; no cookie, so a foreign page has nothing to ride). The page's
Content-Security-Policy allows scripts, styles and requests from this origin only and no inline
script: whatever a key or model name holds, the page shows it as text and nothing runs it."""

from __future__ import annotations

import importlib.metadata
import ipaddress
from pathlib import Path

from mitmproxy import ctx

from pouch.admin.handler import ApiError, Handler

STATIC = Path(__file__).with_name("static")
CONTENT_TYPES = {".html": "text/html; charset=UTF-8", ".js": "text/javascript; charset=UTF-8",
                 ".css": "text/css; charset=UTF-8", ".svg": "image/svg+xml", ".png": "image/png"}
POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
          "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
WILDCARDS = ("", "0.0.0.0", "::")


def _served_files() -> dict[str, Path]:
    """What ``/static/...`` serves: the files under ``static`` of a known type, by their path
    there; any other path is not found (no path is ever joined from the request)."""
    return {path.relative_to(STATIC).as_posix(): path for path in STATIC.rglob("*")
            if path.is_file() and path.suffix in CONTENT_TYPES}


class Page(Handler):
    """The HTML, or a file it loads, with the headers that keep the page to itself."""

    public = True

    def set_default_headers(self):
        super().set_default_headers()
        self.set_header("Content-Security-Policy", POLICY)
        self.set_header("X-Frame-Options", "DENY")
        self.set_header("Referrer-Policy", "no-referrer")

    def send_file(self, path: Path) -> None:
        self.set_header("Content-Type", CONTENT_TYPES[path.suffix])
        self.finish(path.read_bytes())


class Index(Page):
    async def get(self):
        self.send_file(STATIC / "index.html")

    head = get


class Static(Page):
    files = _served_files()

    async def get(self, name: str):
        path = self.files.get(name)
        if path is None:
            raise ApiError(404, f"no such file: {self.request.path}")
        # Kept, but asked again each time (tornado answers 304 when the ETag still matches):
        # an upgraded pouch serves its new files at once.
        self.set_header("Cache-Control", "no-cache")
        self.send_file(path)

    head = get


def mitmweb_url(browser_host: str) -> str | None:
    """Where this process's mitmweb serves its UI, as the browser reaches it; None when the
    process is not mitmweb (mitmdump, ``pouch admin``): only mitmweb has ``web_port``."""
    options = getattr(ctx, "options", None)
    if options is None or "web_port" not in options:
        return None
    host = options.web_host
    if host in WILDCARDS:  # every address: the one the browser reached this listener by
        host = browser_host
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass  # a name
    return f"http://{host}:{options.web_port}"


def version() -> str:
    try:
        return importlib.metadata.version("pouch")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class Info(Handler):
    """``GET /api/info``: where mitmweb is (the dashboard links requests to their flows there),
    pouch's version, and who the token is (the dashboard shows a viewer no write controls)."""

    async def get(self):
        self.send({"mitmweb": mitmweb_url(self.request.host_name), "version": version(),
                   "token": {"name": self.token.name, "role": self.token.role}})
