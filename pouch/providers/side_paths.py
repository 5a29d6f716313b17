"""Side paths: what official clients call on a provider's host besides the model API (Claude
Code's managed settings, policy limits, bootstrap, MCP registry, telemetry, ...), and the
policy pouch applies to each family. docs/side-paths.md lists the families and why.

A provider folder lists its families in ``side_paths`` (a tuple of ``SidePath``), next to its
endpoint table; a provider without any need not say so. The policy of a family:

- PASS: forwarded. With a pouch key, the operator's credential goes in its place when the
  family needs the organisation's credential (``credential``: settings, policy limits); else
  no credential goes at all (``credential=False``: public paths such as the MCP registry,
  which clients call without a key, so a request without any key passes too).
- LOCAL: pouch answers it itself with ``answer``, and nothing is forwarded.
- REFUSE: refused in the provider's error shape, saying ``why``.

Whatever the policy, a mock key's request (and every request under pouch_mock=all) is
answered locally, or refused when the family has no local answer, and telemetry
(``telemetry``) is answered locally when the operator blocks it (pouch_telemetry=block).
A family that is refused for a pouch key still passes untouched with the client's own
credential (observe mode, or a proxy-authenticated connection whose request carries the
client's own key): nothing of the operator's is involved then.

Side paths cost nothing: no usage row, no reservation, and they are not counted against a
key's requests/min (see addons/ratelimit.py). The key must be valid all the same.
"""

from __future__ import annotations

import dataclasses
import re

from pouch.providers.base import SIDE, Endpoint, Reply

PASS, LOCAL, REFUSE = "pass", "local", "refuse"
ANY = "*"  # a family's method when every method belongs to it


@dataclasses.dataclass(frozen=True, eq=False)
class SidePath:
    """One family of side paths: requests matching ``method`` and ``path`` (the whole path,
    without its query) and what pouch does with them."""

    method: str  # GET, POST, ... or ANY
    path: re.Pattern[str]
    endpoint: Endpoint  # what the flow is classified as; its metering is SIDE
    policy: str  # PASS, LOCAL or REFUSE
    why: str  # what the family is and why this policy: for docs and refusal messages
    credential: bool = True  # forwarded with the operator's credential (False: with none)
    telemetry: bool = False  # pouch_telemetry=block answers it locally
    answer: Reply | None = None  # pouch's own answer (None: it cannot answer, and refuses)

    def __post_init__(self):
        if self.endpoint.metering != SIDE:
            raise ValueError(f"side path {self.endpoint.name} must be classified as {SIDE!r}")
        if self.policy not in (PASS, LOCAL, REFUSE):
            raise ValueError(f"side path {self.endpoint.name}: unknown policy {self.policy!r}")
        if (self.policy == LOCAL or self.telemetry) and self.answer is None:
            raise ValueError(f"side path {self.endpoint.name} may be answered locally but has no answer")


def family(name: str, method: str, path: str, policy: str, why: str, **options) -> SidePath:
    """A ``SidePath`` from a path written as a regular expression (matched whole)."""
    return SidePath(method, re.compile(path), Endpoint(name, SIDE), policy, why, **options)


def find(provider, method: str, path: str) -> SidePath | None:
    """The family of ``provider``'s side paths a request belongs to, or None."""
    path = path.split("?", 1)[0]
    method = method.upper()
    for side in getattr(provider, "side_paths", ()):
        if side.method in (method, ANY) and side.path.fullmatch(path):
            return side
    return None


def of(provider, endpoint: Endpoint) -> SidePath | None:
    """The family a side-path endpoint was classified as."""
    return next((side for side in getattr(provider, "side_paths", ()) if side.endpoint is endpoint), None)


def decide(side: SidePath, *, mock: bool, telemetry_blocked: bool, own_credential: bool) -> str:
    """What pouch does with one request of ``side``: PASS, LOCAL or REFUSE.

    ``mock``: a mock key's request, or pouch_mock=all (never forwarded: answered, or refused
    when the family has no local answer). ``own_credential``: the client's own credential
    goes upstream untouched (observed, or its own on a proxy-authenticated connection)."""
    if mock:
        return LOCAL if side.answer is not None else REFUSE
    if side.telemetry and telemetry_blocked:
        return LOCAL
    if side.policy == REFUSE and own_credential:
        return PASS
    return side.policy


def public(provider, endpoint: Endpoint | None) -> bool:
    """Whether a request of ``endpoint`` goes upstream with no credential at all (a public side path)."""
    if endpoint is None or endpoint.metering != SIDE:
        return False
    side = of(provider, endpoint)
    return side is not None and not side.credential
