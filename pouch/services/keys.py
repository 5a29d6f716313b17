"""Key management as operators use it (CLI, mitmproxy commands): validate, then store."""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Iterable
from datetime import datetime, timedelta

from pouch.domain.errors import InvalidInput
from pouch.domain.keys import Key, check_name, parse_alert_at, parse_budget, parse_limit, parse_models, parse_webhook
from pouch.domain.periods import Period, utcnow
from pouch.domain.teams import Team
from pouch.pricing.price import Retirement
from pouch.pricing.table import PriceTable
from pouch.store import keys as key_store
from pouch.store import ledger
from pouch.store import teams as team_store

_RELATIVE = re.compile(r"^(\d+)([mhdw])$")
_RELATIVE_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
LIMITS = ("rpm", "tpm", "max_concurrent", "user_rpm")


def parse_when(text: str | None, now: datetime, *, back: bool = False) -> datetime | None:
    """``2026-12-31``, ``2026-12-31T18:00:00Z`` (UTC unless an offset is given), or a span
    from now: ``90m``, ``12h``, ``30d``, ``2w`` (into the future, or the past with ``back``).
    ``never`` / ``none`` / empty: no time at all."""
    if text is None or text.strip().lower() in ("", "never", "none"):
        return None
    text = text.strip()
    if m := _RELATIVE.match(text):
        span = timedelta(**{_RELATIVE_UNITS[m[2]]: int(m[1])})
        return now - span if back else now + span
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(
            f"bad time {text!r}: give a date (2026-12-31), a UTC time (2026-12-31T18:00Z) "
            "or a span such as 12h, 30d, 2w"
        ) from None
    return when.replace(tzinfo=when.tzinfo or now.tzinfo)


def attributes(
    *,
    now: datetime,
    budget: str | None = None,
    period: str | None = None,
    rpm: int | None = None,
    tpm: int | None = None,
    max_concurrent: int | None = None,
    models: str | None = None,
    expires: str | None = None,
    auto_renew: bool | None = None,
    mock: bool | None = None,
    alert_at: str | list[int] | None = None,
    webhook: str | None = None,
    team: str | None = None,
    user_budget: str | None = None,
    user_period: str | None = None,
    user_rpm: int | None = None,
    require_user: bool | None = None,
) -> dict:
    """Validated key attributes from operator input; only those given (not None) appear."""
    given = {}
    if budget is not None:
        given["budget"] = parse_budget(budget)
    if period is not None:
        given["period"] = Period.parse(period)
    for what, value in zip(LIMITS, (rpm, tpm, max_concurrent, user_rpm)):
        if value is not None:
            given[what] = parse_limit(what.replace("_", " "), value)
    if models is not None:
        given["models"] = parse_models(models)
    if expires is not None:
        given["expires_at"] = parse_when(expires, now)
    if auto_renew is not None:
        given["auto_renew"] = auto_renew
    if mock is not None:
        given["mock"] = mock
    if alert_at is not None:
        given["alert_at"] = parse_alert_at(alert_at)
    if webhook is not None:
        given["webhook"] = parse_webhook(webhook)
    if team is not None:
        given["team"] = find_team(team)
    if user_budget is not None:
        try:
            given["user_budget"] = parse_budget(user_budget)
        except InvalidInput as e:
            raise InvalidInput(str(e).replace("bad budget", "bad user budget", 1).replace("per key", "per end user")) from None
    if user_period is not None:
        given["user_period"] = Period.parse(user_period)
    if require_user is not None:
        given["require_user"] = require_user
    return given


def find_team(name: str) -> Team | None:
    """The team a key is put in by name or id; ``none`` (or empty): no team. An unknown name is
    the operator's typo, not a missing resource: InvalidInput, not UnknownTeam (the API's 400)."""
    if name.strip().lower() in ("", "none"):
        return None
    try:
        return team_store.get(name)
    except team_store.UnknownTeam as e:
        raise InvalidInput(str(e)) from None


def _check_renewal(key_period: Period, auto_renew: bool, expires_at) -> None:
    if auto_renew and (key_period.spec == "none" or expires_at is None):
        raise InvalidInput("--auto-renew needs a --period other than none and an --expires")


def check_first_renewal(expires: str | None, auto_renew: bool, now: datetime) -> None:
    """An auto-renewing key given an expiry already past would renew on its first request,
    skipping every period in between: almost surely a mistyped date, so say so."""
    if expires is None or not auto_renew:
        return
    when = parse_when(expires, now)
    if when is not None and when <= now:
        raise InvalidInput(
            f"--expires {expires} is in the past ({when:%Y-%m-%d %H:%M} UTC) and the key auto-renews: "
            "give the first renewal date in the future (e.g. --expires 30d), or leave out --auto-renew")


def create(name: str, **options) -> tuple[Key, str]:
    now = utcnow()
    check_first_renewal(options.get("expires"), bool(options.get("auto_renew")), now)
    given = attributes(now=now, **options)
    _check_renewal(given.get("period", Period("none")), given.get("auto_renew", False), given.get("expires_at"))
    return key_store.create(check_name(name), now, **given)


def update(name_or_id: str, rename: str | None = None, no_limit: Iterable[str] = (), **options) -> Key:
    """Change what is given (not None); ``no_limit`` names the limits (rpm, tpm,
    max_concurrent, user_rpm) to lift."""
    now = utcnow()
    key = key_store.get(name_or_id)
    renews = options.get("auto_renew")
    check_first_renewal(options.get("expires"), key.auto_renew if renews is None else renews, now)
    given = attributes(now=now, **options)
    for limit in no_limit:
        if limit not in LIMITS:
            raise InvalidInput(f"{limit} is not a limit")
        given[limit] = None
    if rename is not None:
        given["name"] = check_name(rename)
    if not given:
        raise InvalidInput("nothing to update: give at least one option (see --help)")
    _check_renewal(
        given.get("period", key.period),
        given.get("auto_renew", key.auto_renew),
        given.get("expires_at", key.expires_at),
    )
    return key_store.update(key, now, **given)


def unpriced_globs(globs: Iterable[str], table: PriceTable) -> dict[str, list[str]]:
    """The allowlist globs that match no priced model, each with the closest priced names.

    Such a glob is accepted (its price may be added later), but every request it lets through
    is refused as unpriced until then: a typo in ``--models`` would otherwise show only as
    refusals at the first request."""
    names = sorted({price.model.lower() for price in table})
    unmatched = {}
    for glob in globs:
        pattern = glob.lower()
        if any(fnmatch.fnmatchcase(name, pattern) for name in names):
            continue
        if not any(c in glob for c in "*?[") and table.resolve(glob):  # a snapshot or prefixed name
            continue
        bare = pattern.translate(str.maketrans("", "", "*?[]"))
        unmatched[glob] = difflib.get_close_matches(bare, names, n=3, cutoff=0.6)
    return unmatched


def unpriced_warnings(globs: Iterable[str], table: PriceTable) -> list[str]:
    """What to tell an operator about allowlist globs that match no priced model (accepted, but
    what they allow is refused as unpriced until a price is added), one sentence each."""
    warnings = []
    for glob, closest in unpriced_globs(globs, table).items():
        if isinstance(gone := table.lookup(glob), Retirement):
            warnings.append(f"--models {glob!r}: {gone.message}; requests for it are refused")
            continue
        hint = f"closest priced: {', '.join(closest)}" if closest else "`pouch prices` lists the priced models"
        warnings.append(
            f"--models {glob!r} matches no model pouch has a price for ({hint}); requests for "
            "such models are refused as model_not_priced until $POUCH_HOME/prices.json prices them")
    return warnings


def describe(key: Key, now: datetime | None = None) -> dict:
    """A key as JSON (DESIGN field names), with its current window's spend; never the secret."""
    now = now or utcnow()
    spent, reserved = ledger.window_totals(key, now)
    window = key.window(now)
    return {
        "id": key.id,
        "name": key.name,
        "prefix": key.prefix,
        "budget_usd": key.budget.json() if key.budget is not None else None,
        "spent_usd": spent.json(),
        "reserved_usd": reserved.json(),
        "period": str(key.period),
        "window_start": window.start.isoformat(),
        "window_end": window.end.isoformat() if window.end else None,
        "rpm": key.rpm,
        "tpm": key.tpm,
        "max_concurrent": key.max_concurrent,
        "models": list(key.models),
        "mock": key.mock,
        "revoked": key.revoked,
        "expires_at": key.expires_at.isoformat() if key.expires_at else None,
        "auto_renew": key.auto_renew,
        "created_at": key.created_at.isoformat(),
        "alert_at": list(key.alert_at),
        "webhook": key.webhook,
        "team": key.team.name if key.team is not None else None,
        "user_budget_usd": key.user_budget.json() if key.user_budget is not None else None,
        "user_period": str(key.user_period),
        "user_rpm": key.user_rpm,
        "require_user": key.require_user,
    }
