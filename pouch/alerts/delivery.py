"""Delivering the outbox: claim due events, POST each to every target, record the try.

Runs on the gateway's event loop (``addons/alerts.py``): store work goes to the store thread and
every POST is async with a hard deadline, so a slow or dead receiver holds a task of its own,
never a request. A try that some target failed is tried again later for those targets only,
after a pause that doubles each time (up to ``MAX_BACKOFF``); after ``tries`` tries the row is
kept, marked failed, and the gateway logs an error. Success is any 2xx status (redirects are not
followed; the answer's body is never read). Webhooks go straight to their host (no proxy from the environment).

``POUCH_WEBHOOK_RESOLVE=host=ip:port,...`` connects to ``ip:port`` for ``host`` while keeping the
URL's host (Host header, TLS name), as curl's --resolve does: a split-horizon DNS, or a test
that stands in for hooks.slack.com on loopback.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from datetime import timedelta

import httpx

from pouch.alerts import events, outbox
from pouch.domain.keys import display_url
from pouch.domain.periods import utcnow
from pouch.services.store_thread import StoreThread, store_thread

log = logging.getLogger(__name__)
# httpx logs every request's full URL at INFO, and a webhook's URL may be its credential (a
# Slack webhook's path is): this module logs each try itself, with the host only.
logging.getLogger("httpx").setLevel(logging.WARNING)

MAX_BACKOFF = 3600.0  # seconds between two tries, at most
BATCH = 20  # rows claimed per look at the outbox, at most
MAX_IN_FLIGHT = 100  # rows being delivered at once, at most (a look claims only what there is room for)
EXPIRY_CHECK_EVERY = 60.0  # seconds between two looks for keys about to expire
PRUNE_EVERY = 3600.0  # seconds between two prunings of old events (outbox.prune)


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    webhooks: tuple[str, ...] = ()  # the gateway's own targets (pouch_webhook), for every key
    secret: str = ""  # pouch_webhook_secret: sign bodies when set
    timeout: float = 10.0  # seconds one POST may take, all in
    tries: int = 12
    backoff: float = 5.0  # seconds before the second try; doubled for each next one
    interval: float = 2.0  # seconds between two looks at the outbox
    resolve: tuple[tuple[str, str], ...] = ()  # (host, "ip:port")

    @property
    def fingerprints(self) -> tuple[str, ...]:
        """What rows record of ``webhooks`` (outbox.fingerprint), in their order."""
        return tuple(outbox.fingerprint(url) for url in self.webhooks)

    @property
    def lease(self) -> timedelta:
        """How long a claimed row is this gateway's: every POST of it ends within ``timeout``
        (they run at once), and recording the try takes little. A gateway killed meanwhile
        leaves it to any other gateway, or its own restart, once this has passed."""
        return timedelta(seconds=2 * self.timeout + 5)


def parse_resolve(text: str | None) -> tuple[tuple[str, str], ...]:
    """``"hooks.slack.com=127.0.0.1:8080,..."`` -> ((host, "ip:port"), ...)."""
    pairs = []
    for item in (text or "").split(","):
        if not item.strip():
            continue
        host, sep, address = item.strip().partition("=")
        if not sep or ":" not in address:
            raise ValueError(f"POUCH_WEBHOOK_RESOLVE: {item!r} is not HOST=IP:PORT")
        pairs.append((host.lower(), address))
    return tuple(pairs)


def retry_delay(settings: Settings, attempts: int) -> float:
    """Seconds before the next try, after ``attempts`` tries (1, 2, ...)."""
    return min(settings.backoff * 2 ** (attempts - 1), MAX_BACKOFF)


def plan(settings: Settings, row: outbox.Claimed) -> tuple[dict[str, str], tuple[str, ...]]:
    """What this gateway sends ``row`` now: each target it is owed that this gateway knows, with
    the URL it goes to (the gateway's webhooks, then the key's); and the fingerprints of the
    owed webhooks this gateway does not have, left to a gateway that has them."""
    mine = {outbox.fingerprint(url): url for url in settings.webhooks}
    if row.owed is None:  # written before targets were recorded: this gateway's and the key's
        done = {outbox.fingerprint(t) if "://" in t else t for t in row.delivered_to}  # URLs before migration 10
        owed = [fp for fp in mine if fp not in done]
        if not (row.webhook and outbox.fingerprint(row.webhook) in done):
            owed.append(outbox.KEY)
    else:
        owed = list(row.owed)
    sends, unknown = {}, []
    for target in owed:
        if target == outbox.KEY:
            if row.webhook:  # a key without a webhook (any more) is owed nothing
                sends[target] = row.webhook
        elif target in mine:
            sends[target] = mine[target]
        else:
            unknown.append(target)
    return sends, tuple(unknown)


class Courier:
    def __init__(self, settings: Settings, thread: StoreThread = store_thread,
                 transport: httpx.AsyncBaseTransport | None = None):
        self.settings = settings
        self._thread = thread
        self._client = httpx.AsyncClient(follow_redirects=False, trust_env=False, transport=transport,
                                         timeout=settings.timeout)
        self._next_expiry_check = 0.0
        self._next_prune = 0.0
        self._in_flight: set[asyncio.Task] = set()  # rows being delivered

    async def run(self) -> None:
        """Deliver until cancelled: one look at the outbox every ``interval`` seconds."""
        try:
            await self.announce()
        except Exception as e:  # the store: delivery itself says more, look by look
            log.warning("pouch: could not look for alerts owed to other webhooks: %s: %s", type(e).__name__, e)
        while True:
            try:
                await self.once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("pouch: alert delivery failed; looking again in %s s", self.settings.interval)
            await asyncio.sleep(self.settings.interval)

    async def announce(self) -> None:
        """Log this gateway's webhooks as rows record them, and warn of pending rows owed a
        webhook it does not have: a gateway that has it delivers those; if none does, they wait."""
        for url, fp in zip(self.settings.webhooks, self.settings.fingerprints):
            log.info("pouch: alerts go to %s (fingerprint %s)", display_url(url), fp)
        stranded = await self._thread.run(outbox.stranded, self.settings.fingerprints)
        if stranded:
            log.warning("pouch: %d undelivered alert(s) in the store are owed to webhook(s) this gateway does not "
                        "have (fingerprint %s): a gateway whose pouch_webhook has them delivers them; if none "
                        "does any more, give one that pouch_webhook again", sum(stranded.values()),
                        ", ".join(f"{fp}: {n}" for fp, n in sorted(stranded.items())))

    async def close(self) -> None:
        """Stop: deliveries under way are dropped (their rows go to whoever claims them once
        their lease ends: receivers de-duplicate on the id), so a stop never waits on a receiver."""
        for task in list(self._in_flight):
            task.cancel()
        await asyncio.gather(*self._in_flight, return_exceptions=True)
        await self._client.aclose()

    @property
    def busy(self) -> bool:
        """Whether a delivery is under way."""
        return bool(self._in_flight)

    async def once(self) -> int:
        """Look for expiring keys (every EXPIRY_CHECK_EVERY), prune old events (every
        PRUNE_EVERY), then start delivering what is due; returns how many rows were claimed.
        Does not wait for them: each row is a task of its own, so a receiver that never answers
        holds its row for ``timeout``, never the others nor the next look."""
        if time.monotonic() >= self._next_expiry_check:
            self._next_expiry_check = time.monotonic() + EXPIRY_CHECK_EVERY
            await self._thread.run(outbox.expiring, utcnow())
        if time.monotonic() >= self._next_prune:
            self._next_prune = time.monotonic() + PRUNE_EVERY
            pruned = await self._thread.run(outbox.prune, utcnow())
            if pruned:
                log.info("pouch: deleted %d sent or given-up alert(s) whose period ended over %d days ago",
                         pruned, outbox.KEEP.days)
        room = min(BATCH, MAX_IN_FLIGHT - len(self._in_flight))
        if room <= 0:
            return 0
        claimed = await self._thread.run(outbox.claim, utcnow(), self.settings.lease, room,
                                         known=self.settings.fingerprints)
        for row in claimed:
            task = asyncio.create_task(self._deliver_one(row))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)
        return len(claimed)

    async def _deliver_one(self, row: outbox.Claimed) -> None:
        try:
            await self.deliver(row)
        except Exception as e:  # the store, most likely: the row is claimed again when its lease ends
            log.warning("pouch: alert %s: recording its try failed (%s: %s); it is tried again once its lease "
                        "ends", row.id, type(e).__name__, e)

    async def deliver(self, row: outbox.Claimed) -> None:
        sends, unknown = plan(self.settings, row)
        urls = list(dict.fromkeys(sends.values()))  # a URL both the gateway's and the key's: sent once
        results = dict(zip(urls, await asyncio.gather(*(self._post(url, row.body) for url in urls))))
        delivered = tuple(dict.fromkeys(
            [*row.delivered_to, *(outbox.fingerprint(url) for url in urls if results[url] is None)]))
        owed = tuple(target for target, url in sends.items() if results[url] is not None) + unknown
        errors = [f"{display_url(url)}: {error}" for url, error in results.items() if error is not None]
        nowhere = not sends and not unknown and not row.delivered_to
        if nowhere:
            errors = ["no webhook to send it to (pouch_webhook, or the key's --webhook)"]
        waiting = f"left for a gateway whose pouch_webhook has fingerprint {', '.join(unknown)}" if unknown else ""
        error, retry_at, attempts = "; ".join(errors) or None, None, row.attempts + 1
        now = utcnow()
        if error is None and not unknown:
            log.info("pouch: alert %s (%s) delivered to %d webhook(s)", row.id, row.event, len(urls))
        elif error is None:  # nothing failed here: due at once, for the gateways that have the rest
            error, retry_at = waiting, now
            log.info("pouch: alert %s (%s) delivered to %d webhook(s), %s", row.id, row.event, len(urls), waiting)
        elif attempts >= self.settings.tries or nowhere:
            log.error("pouch: alert %s (%s) given up after %d tries: %s", row.id, row.event, attempts, error)
        else:
            retry_at = now + timedelta(seconds=retry_delay(self.settings, attempts))
            log.warning("pouch: alert %s (%s) not delivered (try %d of %d): %s; next try at %s",
                        row.id, row.event, attempts, self.settings.tries, error, f"{retry_at:%H:%M:%S}")
            error = "; ".join([error, waiting]) if waiting else error
        if not await self._thread.run(outbox.attempted, row, now, delivered, error, retry_at, owed):
            log.warning("pouch: alert %s: its lease ran out before its try was recorded; another gateway "
                        "may send it again (receivers de-duplicate on its id)", row.id)

    async def _post(self, url: str, body: str) -> str | None:
        """POST one event to one target; None when it took it, else why not. Never raises: a try
        that raised would never be recorded, and its row would be claimed and sent again each lease."""
        try:
            data = events.payload(body, url)
            headers = {"content-type": "application/json", "user-agent": "pouch-alerts"}
            if self.settings.secret:
                headers["x-pouch-signature"] = events.signature(self.settings.secret, data)
            target, extensions = self._resolved(httpx.URL(url), headers)
            async with asyncio.timeout(self.settings.timeout):
                # Only the status counts: the answer's body is never read (closing drops the
                # connection), so a huge one fills no memory and a slow one fails nothing.
                async with self._client.stream("POST", target, content=data, headers=headers,
                                               extensions=extensions) as response:
                    status = response.status_code
        except TimeoutError:
            return f"no answer within {self.settings.timeout:g} s"
        except (httpx.HTTPError, httpx.InvalidURL, ValueError) as e:
            return f"{type(e).__name__}: {str(e).replace(url, display_url(url))}"  # a Slack URL's path is its secret
        except Exception as e:  # a URL from before parse_webhook refused it, a bug: a failed try all the same
            log.debug("pouch: alert POST to %s raised", display_url(url), exc_info=True)
            return f"{type(e).__name__} (unexpected; the debug log has it)"
        if 200 <= status < 300:
            return None
        return f"HTTP {status}"

    def _resolved(self, url: httpx.URL, headers: dict) -> tuple[httpx.URL, dict]:
        address = dict(self.settings.resolve).get(url.host)
        if address is None:
            return url, {}
        ip, _, port = address.rpartition(":")
        headers["host"] = url.netloc.decode()
        return url.copy_with(host=ip, port=int(port)), {"sni_hostname": url.host}


def settings_from_env(**given) -> Settings:
    return Settings(resolve=parse_resolve(os.environ.get("POUCH_WEBHOOK_RESOLVE")), **given)
