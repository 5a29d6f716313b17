"""Not a link: the admin API (pouch.admin) on its own listener, ``pouch_admin``.

It serves the store the gateway opened (``pouch_db``), on mitmproxy's event loop, with its own
store threads; it starts once the gateway runs and stops with it. A listener that cannot bind
(the port taken, by another gateway on this host say) is logged and the proxy runs on without
it: the API is a window onto the gateway, not part of its promise."""

from __future__ import annotations

import logging

from mitmproxy import ctx, exceptions

from pouch.admin.server import AdminServer, parse_listen

log = logging.getLogger(__name__)


class Admin:
    def __init__(self):
        self.server = AdminServer()
        self._running = False

    def load(self, loader):
        loader.add_option("pouch_admin", str, "127.0.0.1:8082",
                          "Where the admin API listens (keys, usage, prices over HTTP; callers send an admin token "
                          "from `pouch admin-tokens create`): HOST:PORT, or 'off'. Beyond loopback it is plain "
                          "HTTP: put TLS in front.")

    def configure(self, updated):
        if "pouch_metrics_public" in updated and self._running:
            self._warn_public_metrics()
        if "pouch_admin" not in updated:
            return
        try:
            listen = parse_listen(ctx.options.pouch_admin)
        except ValueError as e:
            raise exceptions.OptionsError(f"pouch_admin: {e}") from e
        if self._running and listen != self.server.listen:
            self._serve(listen)

    def running(self):
        self._running = True
        self._serve(parse_listen(ctx.options.pouch_admin))

    def _serve(self, listen) -> None:
        self.server.stop()
        if listen is None:
            return
        try:
            self.server.start(listen)
        except OSError as e:
            log.error("pouch: the admin API cannot listen on %s (%s): the gateway runs without it; give it "
                      "another address with --set pouch_admin=HOST:PORT, or 'off'", listen.bound(), e.strerror or e)
            return
        if listen.loopback:
            log.info("pouch: admin API on %s", self.server.url)
        else:  # the server itself warns that it is plain HTTP beyond this host
            log.info("pouch: admin API on %s, %s from this host", self.server.bound, self.server.url)
        self._warn_public_metrics()

    def _warn_public_metrics(self) -> None:
        public = getattr(ctx.options, "pouch_metrics_public", False)  # the metrics addon's option, when loaded
        if self.server.listen is not None and not self.server.listen.loopback and public:
            log.error("pouch: pouch_metrics_public=true on %s: anyone who can reach this address reads /metrics "
                      "without a token (every key's name, budget and spend); listen on 127.0.0.1, or set "
                      "pouch_metrics_public=false and give Prometheus a viewer token", self.server.bound)

    def done(self):
        self._running = False
        self.server.stop()
