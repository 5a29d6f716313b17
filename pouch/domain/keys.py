"""Pouch keys: who may spend what, on which models, how fast."""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from datetime import datetime
from urllib.parse import urlsplit

import httpx  # parse_webhook checks a URL as the alert sender (pouch.alerts.delivery) reads it

from pouch.domain.errors import InvalidInput
from pouch.domain.money import AmountTooLarge, Money
from pouch.domain.periods import Period, Window
from pouch.domain.teams import Team

SECRET_PREFIX = "pouch-"
PREFIX_LENGTH = len(SECRET_PREFIX) + 6  # what lists and logs show: "pouch-Ab3dEf"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_GLOB = re.compile(r"^[A-Za-z0-9._:/@*?\[\]!-]+$")


@dataclasses.dataclass(frozen=True, slots=True)
class Key:
    id: int
    name: str
    prefix: str
    secret_hash: str
    created_at: datetime
    anchor: datetime  # start of the first budget window; moved by auto-renewal
    budget: Money | None = None  # None: no budget limit (still metered)
    period: Period = Period("none")
    rpm: int | None = None
    tpm: int | None = None
    max_concurrent: int | None = None
    models: tuple[str, ...] = ()  # allowlist globs; empty: every model
    expires_at: datetime | None = None
    auto_renew: bool = False
    mock: bool = False
    revoked: bool = False
    alert_at: tuple[int, ...] = ()  # percents of the budget that send budget.threshold (pouch.alerts)
    webhook: str | None = None  # where this key's alerts go, besides the gateway's pouch_webhook
    team: Team | None = None  # read with the key: its budget, limits and allowlist bind too
    user_budget: Money | None = None  # each end user's own budget (None: end users share the key's)
    user_period: Period = Period("none")
    user_rpm: int | None = None
    require_user: bool = False  # a request must name its end user

    def allows_model(self, model: str) -> bool:
        """Whether the key's allowlist AND its team's take ``model``."""
        if self.team is not None and not self.team.allows_model(model):
            return False
        return not self.models or any(fnmatch.fnmatchcase(model, glob) for glob in self.models)

    @property
    def has_user_levels(self) -> bool:
        return self.user_budget is not None or self.user_rpm is not None

    def user_scope(self, user: str) -> str:
        return f"user:{self.id}:{user}"

    def user_window(self, now: datetime) -> Window:
        return self.user_period.window(now, self.anchor)

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def window(self, now: datetime) -> Window:
        return self.period.window(now, self.anchor)


def new_secret() -> str:
    """A fresh key secret: 256 bits of randomness, URL-safe (it may travel in ``?key=``)."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    """Keys are looked up by this hash; the secret itself is never stored.

    A fast hash is right here: secrets are 256-bit random, so there is nothing to brute-force.
    """
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()


def display_prefix(secret: str) -> str:
    return secret[:PREFIX_LENGTH]


def looks_like_pouch_key(credential: str) -> bool:
    return credential.startswith(SECRET_PREFIX)


def same_hash(a: str, b: str) -> bool:
    return hmac.compare_digest(a, b)


def check_name(name: str, what: str = "key") -> str:
    """A key's name (or another named thing's: ``what``), checked."""
    if not _NAME.match(name or ""):
        raise InvalidInput(
            f"bad {what} name {name!r}: 1-64 letters, digits, '.', '_', '@' or '-', "
            "starting with a letter or digit"
        )
    if name.isdigit():
        raise InvalidInput(f"bad {what} name {name!r}: a name cannot be all digits (ids are)")
    return name


def parse_models(text: str | None) -> tuple[str, ...]:
    """``"gpt-4o*,claude-*"`` -> allowlist globs. Empty text: every model."""
    if not text:
        return ()
    globs = tuple(part.strip() for part in text.split(","))
    for glob in globs:
        if not _GLOB.match(glob) or glob.count("[") != glob.count("]"):
            raise InvalidInput(
                f"bad model glob {glob!r}: use model names with * and ? wildcards, "
                "comma-separated, e.g. 'gpt-4o*,claude-sonnet-4*'"
            )
    return globs


# The largest values a key takes, so every store holds them (README, Keys). Limits live in
# INTEGER columns, 32-bit on PostgreSQL. A budget is pico-dollars in a signed 64-bit column
# (~$9.2 million), and admission sums spend + holds + a request's worst case in SQL:
# $1 million leaves over $8 million for that worst case before PostgreSQL's bigint overflows.
MAX_LIMIT = 2**31 - 1
MAX_BUDGET = Money.usd("1000000")


def parse_limit(what: str, value: int | None) -> int | None:
    if value is None:
        return None
    if value <= 0:
        raise InvalidInput(f"bad {what} {value}: must be a positive whole number (omit for no limit)")
    if value > MAX_LIMIT:
        raise InvalidInput(f"bad {what} {value}: at most {MAX_LIMIT:,} (omit for no limit)")
    return value


def parse_alert_at(value: str | Iterable[int] | None) -> tuple[int, ...]:
    """``"50,80,100"`` (or a list of ints, as JSON gives it) -> sorted distinct percents of the
    budget, 1..100. Empty text or ``none``: no thresholds."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
        return ()
    parts = value.split(",") if isinstance(value, str) else list(value)
    percents = set()
    for part in parts:
        text = str(part).strip()
        if isinstance(part, bool) or not text.isdigit() or not 1 <= int(text) <= 100:
            raise InvalidInput(
                f"bad alert percent {text!r}: give percents of the budget from 1 to 100, comma-separated, "
                "e.g. 50,80,100 ('none' for no alerts)"
            )
        percents.add(int(text))
    return tuple(sorted(percents))


def parse_webhook(text: str | None) -> str | None:
    """An http(s) URL alerts are POSTed to; empty text or ``none``: no webhook. Refused unless
    the sender can use it as it is: a URL it cannot parse would fail every try of every alert."""
    if text is None or text.strip().lower() in ("", "none"):
        return None
    url = text.strip()
    problem = _webhook_problem(url)
    if problem:
        raise InvalidInput(
            f"bad webhook {display_url(url)!r} ({problem}): give an http:// or https:// URL such as "
            "https://hooks.slack.com/services/... ('none' for no webhook)"
        )
    return url


def _webhook_problem(url: str) -> str | None:
    """Why ``url`` cannot be POSTed to, else None. Checked as the standard library and httpx
    (the sender) read it: they disagree on some URLs, and either refusing it is enough."""
    if len(url) > 2048:
        return "longer than 2048 characters"
    if any(c.isspace() for c in url):
        return "it contains a space"
    try:
        url.encode("utf-8")
    except UnicodeEncodeError:
        return "it is not valid text"
    try:
        parts = urlsplit(url)
    except ValueError:
        return "its host is not valid"
    if parts.scheme.lower() not in ("http", "https") or "://" not in url:
        return "not http or https"
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port is not None and not 1 <= port <= 65535:
        return "its port is not a number from 1 to 65535"
    if not parts.hostname:
        return "no host"
    try:
        httpx.URL(url).host  # decodes the host (IDNA) as sending does
    except (ValueError, httpx.InvalidURL):
        return "its host is not valid"
    return None


def display_url(url: str) -> str:
    """A webhook URL as logs, errors and viewers see it: scheme, host and port only, as parsed
    (its path, query, fragment or user:password may be the credential: a Slack webhook's path
    is), and ``/...`` when it had more than that."""
    try:
        parts = urlsplit(url)
    except ValueError:
        scheme = url.partition("://")[0]
        return f"{scheme}://..." if scheme.isalnum() and len(scheme) <= 10 else "(not a URL)"
    host = parts.hostname
    try:
        port = parts.port
    except ValueError:
        port = None  # not a port: shown without it
    if "://" not in url:  # show what would be its host
        shown = re.split(r"[/?#]", url, maxsplit=1)[0].rpartition("@")[2][:40]
        return shown + ("/..." if len(shown) < len(url) else "")
    netloc = f"[{host}]" if host and ":" in host else host or ""
    shown = f"{parts.scheme}://{netloc}{'' if port is None else f':{port}'}"
    more = parts.path not in ("", "/") or parts.query or parts.fragment or "@" in parts.netloc
    return shown + "/..." if more else shown


def parse_budget(text: str | None) -> Money | None:
    if text is None or str(text).strip().lower() in ("", "none"):
        return None
    too_large = f"bad budget {text!r}: at most {MAX_BUDGET} per key ('none' for no limit)"
    try:
        budget = Money.usd(text)
    except AmountTooLarge:
        raise InvalidInput(too_large) from None
    except (ValueError, TypeError) as e:
        raise InvalidInput(f"bad budget: {e}; give USD such as 5 or 12.50") from None
    if budget.pico < 0:
        raise InvalidInput(f"bad budget {text!r}: a budget cannot be negative")
    if budget > MAX_BUDGET:
        raise InvalidInput(too_large)
    return budget
