"""What a request belongs to besides its key: its end user, its tags and its session.

They are read from where clients put them and recorded on the usage row; the end user also
names a budget level (``pouch.services.levels``). The ``x-pouch-*`` headers never go upstream
(the upstream link strips every ``x-pouch-`` header).

- End user: the header ``x-pouch-user``, else what the provider's SDKs send (OpenAI
  ``safety_identifier`` or ``user``, Anthropic ``metadata.user_id``: ``Call.end_user``).
- Tags: ``x-pouch-tags: a,b``.
- Session: ``x-pouch-session``, else the agent's own session id (Claude Code's
  ``x-claude-code-session-id``, Codex's ``session_id``, Claude Code's ``metadata.user_id``),
  else, with ``pouch_session=connection``, the client's proxy connection.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re

from pouch.domain.errors import BadRequest
from pouch.domain.keys import Key

MAX_TEXT = 256  # an end user's or a session's id
MAX_TAGS = 10
_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,63}$")
AGENT_SESSION_HEADERS = ("x-claude-code-session-id", "session_id")
SESSION_MODES = ("client", "connection", "off")


@dataclasses.dataclass(frozen=True, slots=True)
class Attribution:
    end_user: str | None = None
    tags: tuple[str, ...] = ()
    session: str | None = None

    def columns(self, key: Key | None) -> dict:
        """The usage row's columns."""
        return {"team": key.team.name if key is not None and key.team is not None else None,
                "end_user": self.end_user, "tags": ",".join(self.tags) or None, "session": self.session}

    def json(self) -> dict:
        return {"user": self.end_user, "tags": list(self.tags), "session": self.session}


NONE = Attribution()


def _clean(text: str) -> bool:
    return 0 < len(text) <= MAX_TEXT and text.isprintable()


def from_header(headers, name: str) -> str | None:
    """A pouch header's id, checked: the client chose it, so a bad one is its mistake to fix."""
    value = headers.get(name)
    if value is None:
        return None
    value = value.strip()
    if not _clean(value):
        raise BadRequest(f"{name}: give 1 to {MAX_TEXT} printable characters")
    return value


def from_client(value) -> str | None:
    """An id a client SDK or agent sent for its own purposes: kept when it is plain text of a
    sane length, else stood for by its hash (never refused: the provider accepts it)."""
    if not isinstance(value, str) or not value.strip():
        return None
    value = value.strip()
    return value if _clean(value) else "sha256:" + hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()[:32]


def tags(headers) -> tuple[str, ...]:
    value = headers.get("x-pouch-tags")
    if value is None:
        return ()
    found = tuple(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))
    bad = [tag for tag in found if not _TAG.match(tag)]
    if bad:
        raise BadRequest(f"x-pouch-tags: bad tag {bad[0][:80]!r}: 1-64 letters, digits or ._:/@+- "
                         "starting with a letter or digit, comma-separated")
    if len(found) > MAX_TAGS:
        raise BadRequest(f"x-pouch-tags: at most {MAX_TAGS} tags per request ({len(found)} given)")
    return found


def attribute(headers, call_user: str | None, call_session: str | None, connection_id: str | None,
              mode: str) -> Attribution:
    """A request's end user, tags and session. ``call_user`` / ``call_session``: what the body
    says (``Call``); ``connection_id``: the client's proxy connection; ``mode``: pouch_session."""
    end_user = from_header(headers, "x-pouch-user") or from_client(call_user)
    session = from_header(headers, "x-pouch-session")
    if session is None and mode != "off":
        for name in AGENT_SESSION_HEADERS:
            if session := from_client(headers.get(name)):
                break
        session = session or from_client(call_session)
        if session is None and mode == "connection" and connection_id:
            session = f"connection:{connection_id[:13]}"
    return Attribution(end_user, tags(headers), session)
