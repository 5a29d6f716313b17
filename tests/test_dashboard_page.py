"""The dashboard's page and files over real HTTP (the server ``pouch admin`` runs, in this
process): served without a token but with headers that keep the page to itself, every file
the page loads is there with its type, nothing outside the static folder is reachable, and
``/api/info`` says where mitmweb is and who the token is."""

import re

import pytest
from mitmproxy import ctx
from mitmproxy.test import taddons
from mitmproxy.tools.web.webaddons import WebAddon

from pouch.admin import dashboard
from pouch.domain.periods import utcnow
from pouch.store import admin_tokens
from tests.admin_server import Api, Served, error_of

STATIC = dashboard.STATIC


@pytest.fixture
def api(store):
    served = Served()
    api = Api(served.url)
    yield api
    api.close()
    served.stop()


def test_the_page_needs_no_token_and_keeps_to_itself(api):
    page = api.get("/")
    assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=UTF-8"
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "script-src 'self';" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "set-cookie" not in page.headers
    # No inline script or style for the policy to refuse: every script has a src.
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page.text)
    assert not re.search(r"\sstyle=|\son[a-z]+=", page.text)


def test_every_file_the_page_loads_is_served_with_its_type(api):
    page = api.get("/").text
    loaded = re.findall(r'(?:src|href)="(static/[^"]+)"', page)
    modules = {f"static/js/{path.name}" for path in (STATIC / "js").glob("*.js")}
    types = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
    for path in sorted(set(loaded) | modules):
        answer = api.get(f"/{path}")
        assert answer.status_code == 200, path
        assert answer.headers["content-type"].startswith(types[path[path.rfind("."):]]), path
        assert answer.headers["cache-control"] == "no-cache" and answer.headers["etag"]
    assert "static/vendor/uplot/uPlot.iife.min.js" in loaded and "static/js/app.js" in loaded
    again = api.get("/static/js/app.js", headers={"If-None-Match": api.get("/static/js/app.js").headers["etag"]})
    assert again.status_code == 304


def test_every_module_import_resolves():
    for module in (STATIC / "js").glob("*.js"):
        for imported in re.findall(r'from "\./([^"]+)"', module.read_text()):
            assert (STATIC / "js" / imported).is_file(), (module.name, imported)


@pytest.mark.parametrize("path", ["/static/../dashboard.py", "/static/%2e%2e/dashboard.py", "/static/js/../../app.py",
                                  "/static/vendor/uplot/LICENSE", "/static/vendor/uplot/README.md",
                                  "/static/nothing.js", "/static//etc/passwd", "/index.html"])
def test_nothing_outside_the_served_files(api, path):
    assert error_of(api.get(path), 404)


def test_writes_to_the_page_are_refused(api):
    assert error_of(api.post("/"), 405)
    assert error_of(api.post("/static/js/app.js"), 405)


def test_no_script_sets_markup():
    """Values from the store reach the page as text only (dom.js's h()): no script of the
    dashboard's own parses a string as HTML."""
    for module in (STATIC / "js").glob("*.js"):
        code = module.read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
            assert sink not in code, (module.name, sink)


def test_info_says_who_the_token_is_and_that_mitmweb_is_not_here(api, monkeypatch):
    monkeypatch.delattr(ctx, "options", raising=False)  # as in `pouch admin`: no mitmproxy master at all
    now = utcnow()
    viewer = admin_tokens.create("wall", "viewer", now)[1]
    assert error_of(api.get("/api/info"), 401)
    info = api.get("/api/info", viewer).json()
    assert info == {"mitmweb": None, "version": dashboard.version(), "token": {"name": "wall", "role": "viewer"}}
    assert error_of(api.post("/api/info", viewer), 405)


@pytest.mark.parametrize("web_host, browser_host, url", [
    ("127.0.0.1", "127.0.0.1", "http://127.0.0.1:8181"),
    ("0.0.0.0", "gateway.internal", "http://gateway.internal:8181"),
    ("", "10.0.0.5", "http://10.0.0.5:8181"),
    ("::1", "[::1]", "http://[::1]:8181"),
    ("mitm.example", "127.0.0.1", "http://mitm.example:8181"),
])
def test_mitmweb_url_from_mitmweb_s_options(web_host, browser_host, url):
    web = WebAddon()
    with taddons.context(web) as tctx:
        tctx.configure(web, web_host=web_host, web_port=8181)
        assert dashboard.mitmweb_url(browser_host) == url


def test_no_mitmweb_without_its_options():
    with taddons.context():
        assert dashboard.mitmweb_url("127.0.0.1") is None
