"""``/api/keys``: list, create, show, update, revoke and rotate keys, as ``pouch keys`` does
(the same services, checks, messages and JSON fields); a key's recent requests."""

from __future__ import annotations

from decimal import Decimal

from pouch.admin.handler import ApiError, Handler
from pouch.domain.errors import InvalidInput
from pouch.domain.keys import Key, display_url
from pouch.domain.periods import utcnow
from pouch.services import key_cache, overview
from pouch.services import keys as service
from pouch.services.prices import price_table
from pouch.store import keys as key_store

FIELDS = frozenset({"name", "budget_usd", "period", "rpm", "tpm", "max_concurrent", "models", "expires_at",
                    "auto_renew", "mock", "team", "alert_at", "webhook", "user_budget_usd", "user_period",
                    "user_rpm", "require_user"})
MAX_REQUESTS = 500


def key_options(body: dict, *, creating: bool) -> dict:
    """A create or update body as the options ``pouch.services.keys`` takes from the CLI.

    ``null`` means none: no budget, period none, every model, no expiry, no alerts, no team, no
    end-user budget; on update it lifts a limit (rpm, tpm, max_concurrent, user_rpm). Types are
    checked here, values by the service."""
    options: dict = {}
    no_limit = []
    for field, value in body.items():
        if field == "name":
            options["name" if creating else "rename"] = _text(field, value, "the key's unique name")
        elif field in ("budget_usd", "user_budget_usd"):
            options[field.removesuffix("_usd")] = usd_option(field, value)
        elif field in ("period", "user_period"):
            options[field] = "none" if value is None else _text(field, value, "none, daily, weekly, monthly or 12h")
        elif field in service.LIMITS:
            if value is None:
                no_limit.append(field)
            elif isinstance(value, bool) or not isinstance(value, int):
                raise InvalidInput(f"{field}: give a whole number (or null for no limit)")
            else:
                options[field] = value
        elif field == "models":
            options["models"] = "" if value is None else ",".join(_globs(value))
        elif field == "expires_at":
            options["expires"] = "never" if value is None else _text(field, value, "2026-12-31, or 30d from now")
        elif field == "team":
            if isinstance(value, int) and not isinstance(value, bool):
                value = str(value)  # the team's id
            options["team"] = "none" if value is None else _text(field, value, "the team's name or id, or null for no team")
        elif field in ("auto_renew", "mock", "require_user"):
            if not isinstance(value, bool):
                raise InvalidInput(f"{field}: give true or false")
            options[field] = value
        elif field == "alert_at":
            if value is not None and not isinstance(value, list):
                raise InvalidInput("alert_at: give a list of budget percents such as [50, 80, 100] (or null)")
            options["alert_at"] = "none" if value is None else value
        elif field == "webhook":
            options["webhook"] = "none" if value is None else _text(field, value, "an https:// URL this key's alerts also go to")
    if creating:
        if "name" not in options:
            raise InvalidInput("name: required (the key's unique name)")
    elif no_limit:
        options["no_limit"] = tuple(no_limit)
    return options


def usd_option(field: str, value) -> str:
    """A budget in a body (a decimal string, or a whole number) as the CLI's text; null: none."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, (str, int, Decimal))):
        raise InvalidInput(f'{field}: give USD as a decimal string such as "12.50" (or null for no budget)')
    return "none" if value is None else str(value)


def _text(field: str, value, example: str) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{field}: give a string ({example})")
    return value


def _globs(value) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(glob, str) for glob in value):
        raise InvalidInput('models: give a list of model globs such as ["gpt-4o*", "claude-*"] ([] or null: every model)')
    for glob in value:
        if "," in glob or not glob.strip():
            raise InvalidInput(f"bad model glob {glob!r}: one model name or glob per list item")
    return value


def _warnings(key: Key, models_given: bool) -> list[str]:
    """What ``pouch keys`` warns about on stderr: accepted, but probably not what was meant."""
    warnings = []
    if models_given and key.models:
        try:
            warnings += service.unpriced_warnings(key.models, price_table())
        except InvalidInput as e:  # a broken prices.json: the gateway says so at start-up
            warnings.append(f"cannot check models against the price table: {e}")
    if key.alert_at and key.budget is None:
        warnings.append(f"key '{key.name}' has no budget: its alert_at thresholds never fire until it has one")
    return warnings


def _answer(key: Key, secret: str | None = None, models_given: bool = False) -> dict:
    described = service.describe(key)
    if secret is not None:
        described["key"] = secret
    if warnings := _warnings(key, models_given):
        described["warnings"] = warnings
    return described


def _create(options: dict) -> dict:
    key, secret = service.create(**options)
    return _answer(key, secret, "models" in options)


def _update(name: str, options: dict) -> dict:
    return _answer(service.update(name, **options), models_given="models" in options)


def _list() -> list[dict]:
    now = utcnow()
    return [service.describe(key, now) for key in key_store.all_keys()]


def _show(name: str) -> dict:
    return service.describe(key_store.get(name))


def _revoke(name: str) -> dict:
    return service.describe(key_store.revoke(key_store.get(name), utcnow()))


def _rotate(name: str) -> dict:
    key, secret = key_store.rotate(key_store.get(name), utcnow())
    return _answer(key, secret)


class KeyHandler(Handler):
    def shown(self, described):
        """A viewer sees where a key's webhook goes, not its path: a Slack webhook's path is its credential."""
        if self.token is not None and not self.token.may_write:
            for key in described if isinstance(described, list) else [described]:
                if key.get("webhook"):
                    key["webhook"] = display_url(key["webhook"])
        return described

    def listed(self, fn, *args):
        return lambda: self.shown(fn(*args))

    def changed(self) -> None:
        """Keys the gateway in this process cached (up to a few seconds) are read again: a revoked or
        rotated secret stops working at once, a new limit applies to the next request."""
        key_cache.keys.cache.clear()


class KeyList(KeyHandler):
    async def get(self):
        await self.answer(self.listed(_list))

    async def post(self):
        options = key_options(self.body(FIELDS), creating=True)
        created = await self.store(_create, options)
        self.changed()
        self.set_header("Location", f"/api/keys/{created['id']}")
        self.send(created, 201)


class KeyItem(KeyHandler):
    async def get(self, name: str):
        await self.answer(self.listed(_show, name))

    async def patch(self, name: str):
        options = key_options(self.body(FIELDS), creating=False)
        updated = await self.store(_update, name, options)
        self.changed()
        self.send(updated)


class KeyAction(KeyHandler):
    """``POST /api/keys/{key}/revoke`` and ``/rotate`` (the new secret in ``key``, once)."""

    ACTIONS = {"revoke": _revoke, "rotate": _rotate}

    async def post(self, name: str, action: str):
        self.body(frozenset())
        done = await self.store(self.ACTIONS[action], name)
        self.changed()
        self.send(done)


class KeyRequests(Handler):
    query = frozenset({"limit"})

    async def get(self, name: str):
        text = self.argument("limit") or "50"
        if not text.isdigit() or not 1 <= int(text) <= MAX_REQUESTS:
            raise ApiError(400, f"limit: give a whole number from 1 to {MAX_REQUESTS}")
        await self.answer(lambda: {"requests": overview.recent_requests(name, int(text))})
