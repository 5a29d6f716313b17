"""Reading what clients and providers send, for every provider folder: JSON values of any
shape, event types, credentials, and a client's value quoted back in an error.

Bodies come from clients and servers pouch does not control, so each accessor takes any JSON
value and answers with a harmless default rather than raising.
"""

from __future__ import annotations

import json
import re


def count(value: object) -> int | None:
    """A token count: a non-negative int (not a bool), else None."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def as_dict(value: object) -> dict:
    return value if isinstance(value, dict) else {}


def as_list(value: object) -> list:
    return value if isinstance(value, list) else []


def as_str(value: object) -> str:
    return value if isinstance(value, str) else ""


def nonempty_str(value: object) -> str | None:
    """A non-empty string (a model name, an id), else None."""
    return value if isinstance(value, str) and value else None


def loads(data: str) -> object:
    """Any JSON value; None for text that is not JSON."""
    try:
        return json.loads(data)
    except (ValueError, RecursionError):  # RecursionError: absurdly nested JSON
        return None


def loads_object(data: str) -> dict | None:
    """A JSON object; None for anything else."""
    parsed = loads(data)
    return parsed if isinstance(parsed, dict) else None


# Providers name their events; compatible servers that do not put the name first in the JSON.
_LEADING_TYPE = re.compile(r'\{\s*"type"\s*:\s*"([^"\\]+)"')


def event_type(data: str) -> str | None:
    """The ``type`` of a stream event sent without an ``event:`` line."""
    if match := _LEADING_TYPE.match(data):
        return match.group(1)
    kind = (loads_object(data) or {}).get("type") if data else None
    return kind if isinstance(kind, str) else None


def bearer_tokens(headers) -> list[str]:
    """The tokens of every ``Authorization: Bearer`` header, in order."""
    tokens = []
    for value in headers.get_all("authorization"):
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            tokens.append(token.strip())
    return tokens


def shown(value: object) -> str:
    """A client's value, short enough to quote back in an error message."""
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."
