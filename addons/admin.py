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
            log.error("pouch: the admin API cannot listen on %s:%d (%s): the gateway runs without it; give it "
                      "another address with --set pouch_admin=HOST:PORT, or 'off'", listen.host, listen.port,
                      e.strerror or e)
            return
        log.info("pouch: admin API on %s", self.server.url)

    def done(self):
        self._running = False
        self.server.stop()
