"""What every admin API route shares: the token and its role, JSON in and out, errors in one
shape (``{"error": {"message", "type"}}``, never a traceback), store work off the event loop."""

from __future__ import annotations

import ipaddress
import json
import logging
from decimal import Decimal

import peewee as pw
import tornado.web
from tornado import httputil

from pouch.admin import store
from pouch.admin.auth import Refused
from pouch.domain.admin_tokens import AdminToken
from pouch.domain.errors import InvalidInput
from pouch.services.prices import UnknownPrice
from pouch.store.admin_tokens import TokenNameTaken, UnknownToken
from pouch.store.keys import KeyNameTaken, UnknownKey
from pouch.store.teams import TeamInUse, TeamNameTaken, UnknownTeam

log = logging.getLogger(__name__)

TYPES = {400: "invalid_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
         405: "method_not_allowed", 409: "conflict", 413: "too_large", 429: "too_many_attempts",
         500: "internal_error", 503: "store_unavailable"}
# What the services raise, as the status it means (the first that matches).
STATUSES = ((UnknownKey, 404), (UnknownToken, 404), (UnknownPrice, 404), (UnknownTeam, 404), (KeyNameTaken, 409),
            (TokenNameTaken, 409), (TeamNameTaken, 409), (TeamInUse, 409), (InvalidInput, 400))
READ_METHODS = ("GET", "HEAD")
STORE_ERRORS = (pw.DatabaseError, pw.InterfaceError)


class ApiError(tornado.web.HTTPError):
    """An answer other than success, with a message saying what to do."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(status)
        self.message = message
        self.headers = headers or {}


def encode(value, depth: int = 2) -> str:
    """``json.dumps(value)``, its lists (and those of its values) an item per call: one call
    holds the interpreter lock until it returns, however long the list."""
    if depth and isinstance(value, list):
        return "[" + ", ".join(encode(item, depth - 1) for item in value) + "]"
    if depth and isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(name)}: {encode(item, depth - 1)}" for name, item in value.items()) + "}"
    return json.dumps(value)


def loopback_host(host: str) -> bool:
    """Whether a Host header names this machine: ``localhost`` or a loopback address (127.x.x.x,
    [::1]), with any port."""
    host = host.strip().lower()
    if host.startswith("["):
        name = host[1:].partition("]")[0]
    else:
        name, colon, port = host.rpartition(":")
        if not colon or not port.isdigit():
            name = host
    if name == "localhost":
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def _valid_text(value) -> bool:
    """Whether every string in ``value`` (names and values, however deep) can be encoded."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return False
        elif isinstance(item, dict):
            pending.extend(item)
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return True


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


class Handler(tornado.web.RequestHandler):
    public = False  # True: answered without a token (health checks)
    query: frozenset[str] = frozenset()  # the query parameters the route takes; any other is refused
    token: AdminToken | None = None  # who is calling (None on a public route)

    def set_default_headers(self):
        self.set_header("Server", "pouch")
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.set_header("Cache-Control", "no-store")  # secrets are shown once: no copy kept on the way
        self.set_header("X-Content-Type-Options", "nosniff")

    def needs_token(self) -> bool:
        return not self.public

    async def prepare(self):
        # A listener on loopback is for this machine: a page whose name was re-pointed at
        # 127.0.0.1 (DNS rebinding) is same-origin with it in the browser, and would read what
        # answers without a token (/metrics when public) and send wrong tokens from there.
        if self.settings.get("loopback_only") and not loopback_host(self.request.host):
            raise ApiError(403, f"this admin API listens on loopback and answers only requests for localhost, "
                                f"127.0.0.1 or [::1], not {self.request.host[:100]!r}: a page that reaches it "
                                "under another name is refused (DNS rebinding)")
        if self.needs_token():
            try:
                self.token = await self.settings["auth"].check(self.request.headers.get("Authorization"),
                                                               self.request.remote_ip or "")
            except Refused as e:
                headers = {"WWW-Authenticate": 'Bearer realm="pouch"'} if e.status == 401 else {}
                if e.retry_after:
                    headers["Retry-After"] = str(e.retry_after)
                raise ApiError(e.status, e.message, headers) from None
        allowed = self.allowed_methods()
        if self.request.method not in allowed:
            raise ApiError(405, f"{self.request.method} is not allowed on {self.request.path} "
                                f"(allowed: {', '.join(allowed)})", {"Allow": ", ".join(allowed)})
        if self.request.method not in READ_METHODS and self.token is not None and not self.token.may_write:
            raise ApiError(403, f"admin token {self.token.name!r} is a viewer: it may only read (GET); "
                                "changes need a token with --role admin")
        unknown = sorted(set(self.request.query_arguments) - self.query)
        if unknown:
            takes = f"it takes {', '.join(sorted(self.query))}" if self.query else "it takes none"
            raise ApiError(400, f"unknown query parameter(s) {', '.join(unknown)} on {self.request.path}: {takes}")

    def allowed_methods(self) -> list[str]:
        return [m for m in self.SUPPORTED_METHODS
                if getattr(type(self), m.lower()) is not tornado.web.RequestHandler._unimplemented_method]

    def argument(self, name: str) -> str | None:
        """A query parameter (the last, when given more than once); None when absent or empty."""
        value = self.get_query_argument(name, None)
        return value if value else None

    def body(self, fields: frozenset[str]) -> dict:
        """The request's JSON object, refusing fields the route does not take. Numbers with a
        fraction come as ``Decimal``, so that money keeps every digit it was sent with."""
        text = self.request.body
        if not text.strip():
            value = {}
        else:
            try:
                value = json.loads(text, parse_float=Decimal, parse_constant=_refuse_constant)
            except (ValueError, UnicodeDecodeError) as e:
                raise ApiError(400, f"the body is not JSON ({e}): send a JSON object") from None
            except RecursionError:
                raise ApiError(400, "the body is nested too deeply: send a JSON object of fields") from None
        if not isinstance(value, dict):
            raise ApiError(400, "the body must be a JSON object")
        if not _valid_text(value):  # "\ud800" is valid JSON, but no store can keep it
            raise ApiError(400, "the body holds a lone surrogate escape (such as \\ud800), which is not text: "
                                "send UTF-8 text")
        unknown = sorted(set(value) - fields)
        if unknown:
            takes = f"it takes {', '.join(sorted(fields))}" if fields else "it takes no body"
            raise ApiError(400, f"unknown field(s) {', '.join(unknown)} for {self.request.method} "
                                f"{self.request.path}: {takes}")
        return value

    async def store(self, fn, *args, **kwargs):
        """``fn`` on the admin store threads (what it raises is answered by ``write_error``)."""
        return await store.run(fn, *args, **kwargs)

    async def answer(self, fn, *args, status: int = 200) -> None:
        """Send ``fn(*args)``, run on the admin store threads and encoded there too: a long list
        (usage rows) is encoded one item at a time, so the event loop gets its turns meanwhile."""
        self.set_status(status)
        self.finish(await self.store(lambda: encode(fn(*args))))

    def send(self, value, status: int = 200) -> None:
        """Send a small ``value``, encoded here on the event loop."""
        self.set_status(status)
        self.finish(json.dumps(value))

    def log_exception(self, typ, value, tb):
        if isinstance(value, InvalidInput):
            return  # the caller's mistake, answered with its message
        if isinstance(value, STORE_ERRORS):
            log.warning("pouch admin: the store failed on %s %s: %s", self.request.method, self.request.path, value)
            return
        super().log_exception(typ, value, tb)  # an ApiError is not logged; a bug is, with its traceback

    def write_error(self, status_code: int, **kwargs):
        error = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(error, InvalidInput):  # what the services raise: the status it means
            status_code = next(status for kind, status in STATUSES if isinstance(error, kind))
            error = ApiError(status_code, str(error))
        elif isinstance(error, STORE_ERRORS):
            status_code = 503
            error = ApiError(503, "the store does not answer: try again shortly (the log says why)")
        self.set_status(status_code)
        if isinstance(error, ApiError):
            message = error.message
            for name, value in error.headers.items():
                self.set_header(name, value)
        elif status_code >= 500:
            message = "internal error: the gateway's log has the details"
        else:
            message = httputil.responses.get(status_code, "error")
        kind = TYPES.get(status_code, "error")
        self.finish(json.dumps({"error": {"message": message, "type": kind}}))


class NotFound(Handler):
    """Any path no route takes: 404, token or not."""

    public = True

    async def prepare(self):
        raise ApiError(404, f"no such route: {self.request.path}")
