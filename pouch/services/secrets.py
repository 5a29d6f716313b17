"""Keeping credentials out of everything people can see: mitmweb, saved flows, logs.

A flow carries only placeholders while addons, the web UI and flow files look at it; the
real upstream credential is written into the request as the very last step before it is
sent, and replaced by its placeholder again as soon as the response (or an error) comes.
"""

from __future__ import annotations

import re

from mitmproxy import http

from pouch.domain.keys import SECRET_PREFIX, display_prefix, looks_like_pouch_key

# A pouch key anywhere in a request, also where no provider reads credentials (a query
# parameter the provider ignores, an unrelated header): token_urlsafe(32) is 43 characters.
_POUCH_KEY = re.compile(re.escape(SECRET_PREFIX) + r"[A-Za-z0-9_-]{43}")


def placeholder(secret: str) -> str:
    """What a credential looks like in the UI: a pouch key's display prefix, or the first
    few characters of anything else."""
    if looks_like_pouch_key(secret):
        return f"{display_prefix(secret)}…"
    return f"{secret[:6]}…redacted"


def replace_in_request(request: http.Request, swaps: dict[str, str]) -> None:
    """Replace each credential text in the request's headers and URL by its substitute."""
    encoded = {old.encode(): new.encode() for old, new in swaps.items() if old}
    fields = request.headers.fields
    if any(old in value for _, value in fields for old in encoded):  # else the headers stay as they are
        changed = []
        for name, value in fields:
            for old, new in encoded.items():
                value = value.replace(old, new)
            changed.append((name, value))
        request.headers.fields = tuple(changed)
    path = request.path
    for old, new in swaps.items():
        if old and old in path:
            path = path.replace(old, new)
    request.path = path


def stray_pouch_keys(request: http.Request) -> dict[str, str]:
    """Every pouch key text in the request's headers and URL, with its placeholder."""
    found = set(_POUCH_KEY.findall(request.path))
    for _, value in request.headers.fields:
        found.update(_POUCH_KEY.findall(value.decode("latin-1")))
    return {secret: placeholder(secret) for secret in found}


def hide_pouch_keys(text: str) -> str:
    """``text`` with every pouch key in it replaced by its placeholder."""
    return _POUCH_KEY.sub(lambda m: placeholder(m.group()), text)


# A query parameter's value in text built from a request: ``?key=`` carries Gemini's credential.
_QUERY_VALUE = re.compile(r"([?&][^=\s?&#]+=)[^\s&#'\"]*")


def redact_text(text: str) -> str:
    """A message built from a request, fit to store: query parameter values and pouch keys
    replaced, since either may be a credential the client sent."""
    return hide_pouch_keys(_QUERY_VALUE.sub(r"\1…", text))
