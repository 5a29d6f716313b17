"""The admin API's routes, in one table, and the tornado application that serves them.

Adding a route is one line here (see ``pouch/admin/__init__.py``). Paths are matched whole;
a key or model name is one path segment (a model may hold ``/``: openrouter's vendor/model)."""

from __future__ import annotations

import logging

import tornado.web

from pouch.admin import dashboard, health, keys, metrics, overview, prices, teams, usage
from pouch.admin.auth import Authenticator
from pouch.admin.handler import NotFound

access_log = logging.getLogger("pouch.admin.access")

ROUTES = [
    (r"/healthz", health.Healthz),
    (r"/readyz", health.Readyz),
    (r"/api/keys", keys.KeyList),
    (r"/api/keys/([^/]+)", keys.KeyItem),
    (r"/api/keys/([^/]+)/(revoke|rotate)", keys.KeyAction),
    (r"/api/keys/([^/]+)/requests", keys.KeyRequests),
    (r"/api/teams", teams.TeamList),
    (r"/api/teams/([^/]+)", teams.TeamItem),
    (r"/api/usage", usage.Usage),
    (r"/api/prices", prices.PriceList),
    (r"/api/prices/(.+)", prices.PriceItem),
    (r"/api/overview", overview.Overview),
    (r"/metrics", metrics.Metrics),
    (r"/", dashboard.Index),
    (r"/static/(.+)", dashboard.Static),
    (r"/api/info", dashboard.Info),
]


def _log_request(handler: tornado.web.RequestHandler) -> None:
    # Not tornado's access log: inside the gateway, mitmproxy shows every INFO record in its event log.
    access_log.debug("%d %s %s (%s) %.1f ms", handler.get_status(), handler.request.method, handler.request.uri,
                     handler.request.remote_ip, 1000 * handler.request.request_time())


def make_app(auth: Authenticator | None = None) -> tornado.web.Application:
    return tornado.web.Application(
        ROUTES,
        default_handler_class=NotFound,
        auth=auth or Authenticator(),
        log_function=_log_request,
        # Not compress_response: a large export would be compressed on the event loop.
    )
