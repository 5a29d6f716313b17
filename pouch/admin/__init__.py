"""The admin API, the dashboard and the metrics: keys, usage, prices and spend over HTTP.

Served by tornado (mitmproxy's own web stack, running on mitmproxy's event loop) on its own
listener: inside the gateway by ``addons/admin.py`` (option ``pouch_admin``, default
``127.0.0.1:8082``), or standalone by ``pouch admin --db URL --listen HOST:PORT``. Routes,
fields and errors are the contract in DESIGN.md, "Admin API".

- ``app.py``: the route table (``ROUTES``) and the tornado application.
- ``handler.py``: what every route shares: bearer-token auth and roles, JSON in and out,
  errors as ``{"error": {"message", "type"}}``, store work off the event loop.
- ``auth.py``: admin tokens checked against the store, failed attempts limited per address.
- ``store.py``: the admin API's own store threads (never the gateway's: a long export must not
  queue a request's admission behind it).
- ``health.py``, ``keys.py``, ``teams.py``, ``usage.py``, ``prices.py``, ``overview.py``: the routes.
- ``server.py``: the listener (start, stop, ``HOST:PORT`` parsing).

Adding a route is one line in ``app.ROUTES``: ``(r"/api/things/([^/]+)", things.Thing)``, where
``Thing`` subclasses ``handler.Handler`` and defines ``get`` / ``post`` / ``patch`` /
``delete`` (``async def``; a path group arrives as an argument). Without anything else it
needs a token; GET is open to viewers and every other method to admins only; a method it does
not define answers 405; a query parameter not in its ``query`` set answers 400. Store work goes
through ``await self.store(fn, *args)`` (off the event loop; unknown names become 404, bad input
400, an unreachable store 503). Answer with ``await self.answer(fn, *args)`` (fn runs and its
JSON is made off the event loop) or, for a small value at hand, ``self.send(value, status)``;
raise ``ApiError`` for anything else. Set ``public = True`` for a route anyone may read (a page, a health check), or
override ``needs_token()`` to decide per request (metrics open with ``pouch_metrics_public``).
"""
