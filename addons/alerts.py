"""Not a link: budget alerts (``pouch.alerts``). The store detects threshold crossings and
overruns as it settles; this addon delivers what it wrote to the webhooks (a background task:
claim due events, POST, retry with backoff), looks for keys about to expire, and turns a request
refused for budget into ``budget.exhausted`` (once per key and period, decided in the store).

Nothing here is on a request's path but a dictionary lookup for refused flows: store work runs
on the store thread, webhooks are POSTed by the task, whatever the receivers do.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence

from mitmproxy import ctx, exceptions, http

from pouch.alerts import delivery, outbox
from pouch.domain.errors import BudgetExhausted
from pouch.domain.keys import parse_webhook
from pouch.domain.periods import utcnow
from pouch.services import chain
from pouch.services.store_thread import store_thread

log = logging.getLogger(__name__)

OPTIONS = {"pouch_webhook", "pouch_webhook_secret", "pouch_webhook_timeout", "pouch_webhook_tries",
           "pouch_webhook_backoff", "pouch_alert_interval"}


def parse_settings(webhooks: Sequence[str], secret: str, timeout: float, tries: int, backoff: float,
                   interval: float, resolve: str | None) -> delivery.Settings:
    if tries < 1:
        raise ValueError("pouch_webhook_tries must be at least 1")
    if timeout <= 0 or interval <= 0:
        raise ValueError("pouch_webhook_timeout and pouch_alert_interval must be more than 0 seconds")
    return delivery.Settings(webhooks=tuple(parse_webhook(url) for url in webhooks if url.strip()),
                             secret=secret, timeout=timeout, tries=tries, backoff=backoff, interval=interval,
                             resolve=delivery.parse_resolve(resolve))


class Alerts:
    def __init__(self):
        self.settings = delivery.Settings()
        self.courier: delivery.Courier | None = None
        self._task: asyncio.Task | None = None
        self._closing: set[asyncio.Task] = set()
        self._exhausted: dict[int, object] = {}  # key id -> the window whose refusal this process noted

    def load(self, loader):
        loader.add_option("pouch_webhook", Sequence[str], [],
                          "URL that every alert event (budget.threshold, budget.exhausted, spend.overrun, "
                          "key.expiring) is POSTed to as JSON, for every key (repeatable); a key's own --webhook "
                          "gets its events too. Slack incoming webhooks (hooks.slack.com) get {\"text\": message}.")
        loader.add_option("pouch_webhook_secret", str, "",
                          "When set, each alert body is signed: header X-Pouch-Signature: sha256=<hex HMAC-SHA256 "
                          "of the raw body under this secret>.")
        loader.add_option("pouch_webhook_timeout", str, "10", "Seconds one webhook POST may take before it counts "
                          "as failed (and is tried again).")
        loader.add_option("pouch_webhook_tries", int, 12, "Tries per alert and webhook before the alert is given "
                          "up: kept in the store, marked failed, logged as an error.")
        loader.add_option("pouch_webhook_backoff", str, "5", "Seconds before an alert's second try; each further "
                          "pause doubles, up to an hour.")
        loader.add_option("pouch_alert_interval", str, "2", "Seconds between two looks at the store's alert outbox "
                          "(new events, whichever gateway detected them, and retries that are due).")

    def configure(self, updated):
        if not updated & OPTIONS:
            return
        o = ctx.options
        try:
            self.settings = parse_settings(
                o.pouch_webhook, o.pouch_webhook_secret, chain.seconds("pouch_webhook_timeout"),
                o.pouch_webhook_tries, chain.seconds("pouch_webhook_backoff"), chain.seconds("pouch_alert_interval"),
                os.environ.get("POUCH_WEBHOOK_RESOLVE"))
        except ValueError as e:
            raise exceptions.OptionsError(str(e)) from e
        if self._task is not None:  # changed while running: deliver with the new settings from now on
            self._stop()
            self._start()

    def running(self):
        self._start()

    def done(self):
        self._stop()
        outbox.owe(None)

    def _start(self) -> None:
        # Events this gateway writes from now on are owed its webhooks: a gateway on the same store
        # with other pouch_webhook lists delivers what it knows and leaves these to this one.
        outbox.owe(self.settings.webhooks)
        self.courier = delivery.Courier(self.settings)
        self._task = asyncio.create_task(self.courier.run())

    def _stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        courier, self.courier = self.courier, None
        try:
            closing = asyncio.get_running_loop().create_task(courier.close()) if courier else None
        except RuntimeError:  # no loop left to close it on: its connections go with the process
            return
        if closing is not None:
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)

    def response(self, flow: http.HTTPFlow) -> None:
        self._note_refusal(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._note_refusal(flow)

    def _note_refusal(self, flow: http.HTTPFlow) -> None:
        try:  # never raises: an exception would stop the later links' hooks (the usage link settles there)
            self._exhausted_by_refusal(flow)
        except Exception:
            log.exception("pouch: noting a budget refusal for alerts failed")

    def _exhausted_by_refusal(self, flow: http.HTTPFlow) -> None:
        """A request refused for budget: ``budget.exhausted`` for the key's window, unless sent.
        The store decides (its unique index); this process asks once per key and window."""
        found = chain.existing(flow)
        if found is None or found.key is None or not found.refusal or found.key.budget is None:
            return
        if found.refusal.get("code") != BudgetExhausted.code:
            return
        now = utcnow()
        window = found.key.window(now).start
        if self._exhausted.get(found.key.id) == window:
            return
        self._exhausted[found.key.id] = window
        store_thread.later(outbox.refused, found.key.id, now, retries=3)
