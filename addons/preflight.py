"""Says at start-up what would otherwise surface only at the first request (not a chain link):
which providers have no credential in the gateway's environment, and whether each https
``pouch_route`` target's TLS certificate is trusted (checked once, in the background, and
again when those options change). The log names environment variables, never their values.
"""

from __future__ import annotations

import asyncio
import logging
import os

from mitmproxy import ctx

from addons.upstream import parse_route
from pouch.providers import registry
from pouch.services import preflight

log = logging.getLogger(__name__)

TRUST_OPTIONS = {"pouch_route", "ssl_insecure", "ssl_verify_upstream_trusted_ca", "ssl_verify_upstream_trusted_confdir"}


class Preflight:
    def __init__(self):
        self.started = False
        self.checks: set[asyncio.Task] = set()

    def running(self):
        self.started = True
        self.report_credentials()
        self.check_routes()

    def configure(self, updated):
        if self.started and TRUST_OPTIONS & set(updated):
            self.check_routes()

    def done(self):
        for task in list(self.checks):
            task.cancel()

    @staticmethod
    def report_credentials() -> None:
        if "pouch_mock" in ctx.options and ctx.options.pouch_mock == "all":
            return  # nothing goes upstream
        have, missing = preflight.missing_credentials(registry.PROVIDERS.values(), os.environ)
        if have:
            log.info("pouch: upstream credentials set for %s", ", ".join(have))
        for provider in missing:
            log.info("pouch: %s", preflight.missing_line(provider))
        if not have:
            log.warning("pouch: no provider credential is set in the gateway's environment: requests with pouch "
                        "keys will fail upstream (only clients' own keys, under pouch_unknown_keys=observe, work)")

    def check_routes(self) -> None:
        trust = preflight.Trust(ctx.options.ssl_verify_upstream_trusted_ca,
                                ctx.options.ssl_verify_upstream_trusted_confdir, ctx.options.ssl_insecure)
        for spec in ctx.options.pouch_route:
            try:
                route = parse_route(spec)
            except ValueError:
                continue  # the upstream link refuses the option, saying why
            if route.scheme != "https":
                continue
            shown = f"{route.host}=https://{route.target_host}:{route.port}"  # no user:password a URL may hold
            if trust.insecure:
                log.warning("pouch: pouch_route %s: its TLS certificate is not verified (ssl_insecure is on)", shown)
                continue
            task = asyncio.create_task(self._check(shown, route.host, route.target_host, route.port, trust))
            self.checks.add(task)
            task.add_done_callback(self.checks.discard)

    @staticmethod
    async def _check(shown: str, host: str, target: str, port: int, trust: preflight.Trust) -> None:
        problem = await preflight.check_tls(target, port, trust)
        if problem is None:
            log.info("pouch: pouch_route %s: TLS verified", shown)
        else:
            log.warning("pouch: pouch_route %s: %s. Until then requests to %s get a 502 (nothing is charged).",
                        shown, problem, host)
