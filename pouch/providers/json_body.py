"""A metered request's JSON body, read exactly as the provider will read it, or refused.

pouch reserves budget from its own reading of the body (model, output cap, stream, n, the
prompt it counts); the provider bills from its reading of the same bytes. Wherever JSON
parsers may read the same bytes differently, a client could make the provider bill for more
than pouch reserved, so the body is refused rather than read one way:

- a name twice in one object: some parsers keep the first value, most the last;
- names that differ only in case or underscores: Go's encoding/json, behind many
  OpenAI-compatible servers, matches field names case-insensitively, and Google's APIs
  take ``max_output_tokens`` and ``maxOutputTokens`` as the same field;
- ``NaN``, ``Infinity``, ``-Infinity`` and numbers beyond a double's range, which Python
  reads and JSON does not have;
- bytes that are not UTF-8, or start with a byte order mark (``json.loads`` on bytes
  guesses UTF-16 and UTF-32 and skips a BOM; providers do not);
- lone UTF-16 surrogate escapes (``"\\ud800"``), which providers refuse or replace, so the
  text billed is not the text pouch counted.

The request's headers matter too (``check_headers``): a Content-Encoding pouch does not
decode, or a charset other than UTF-8, would have pouch and the provider read different text.
And where an API names every field in lower case, a top-level name in any other case is one
pouch does not read but a case-insensitive server does (``check_lowercase_names``).
"""

from __future__ import annotations

import codecs
import json
import math
import re
import sys
import zlib
from collections import Counter
from collections.abc import Mapping

from pouch.domain.errors import BadRequest

# Content codings mitmproxy decodes for pouch (the body then goes upstream decoded).
# mitmproxy also decodes "none", "deflateraw" and Python codec names such as "base64",
# which are not HTTP content codings, and no provider would decode them the same way.
DECODED_CODINGS = ("gzip", "deflate", "br", "zstd")

# A compressed body may expand to at most this much: a few kilobytes of gzip can hold
# gigabytes of zeros, decoded on the event loop that serves every client.
MAX_DECODED_BYTES = 64 * 1024 * 1024

# Where a lone surrogate may be: a surrogate escape (or text that looks like one).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class _Ambiguous(ValueError):
    """Raised inside the JSON decoder's hooks; its message is the client's."""


def check_headers(headers: Mapping[str, str]) -> None:
    """ValueError for a Content-Encoding pouch does not decode (also several stacked), or a
    Content-Type charset other than UTF-8."""
    coding = headers.get("content-encoding", "").strip()
    if coding.lower() not in ("", "identity", *DECODED_CODINGS):
        raise ValueError(
            f"request Content-Encoding '{coding}' is not supported: send the body uncompressed, "
            f"or compressed once with one of {', '.join(DECODED_CODINGS)}")
    charset = _charset(headers.get("content-type", ""))
    if charset not in (None, "utf-8", "utf8"):
        raise ValueError(f"request Content-Type says charset={charset}: send the JSON body as UTF-8 "
                         "(charset=utf-8, or no charset)")


def decode_body(raw: bytes, coding: str) -> bytes:
    """The body without its content coding (one of DECODED_CODINGS, checked first), refused
    when it is corrupt or expands beyond MAX_DECODED_BYTES."""
    coding = coding.strip().lower()
    if coding in ("", "identity"):
        return raw
    limit = MAX_DECODED_BYTES + 1
    try:
        if coding == "br":
            import brotli

            decompressor = brotli.Decompressor()
            decoded, whole = decompressor.process(raw, output_buffer_limit=limit), decompressor.is_finished()
        elif coding == "zstd":
            try:
                from compression import zstd
            except ImportError:  # before Python 3.14: the backport mitmproxy depends on
                from backports import zstd
            decompressor = zstd.ZstdDecompressor()
            decoded, whole = decompressor.decompress(raw, max_length=limit), decompressor.eof
        else:  # gzip, or deflate: zlib-wrapped as the RFC says, or raw as some clients send it
            wbits = zlib.MAX_WBITS | 16 if coding == "gzip" else zlib.MAX_WBITS
            if coding == "deflate" and raw[:1] and raw[0] & 0x0F != 8:
                wbits = -zlib.MAX_WBITS
            decompressor = zlib.decompressobj(wbits)
            decoded, whole = decompressor.decompress(raw, limit), decompressor.eof
    except Exception:  # each library has its own error type for corrupt input
        raise ValueError(f"request body is not valid {coding}: compress it correctly, or send it uncompressed") from None
    if len(decoded) > MAX_DECODED_BYTES:
        raise ValueError(f"request body expands to more than {MAX_DECODED_BYTES // 2**20} MiB when decompressed")
    if not whole:
        raise ValueError(f"request body is not valid {coding}: it ends before its compressed data does")
    return decoded


def parse_json_object(raw: bytes) -> dict:
    """The JSON object in ``raw``; ValueError, with a message for the client, for anything
    else or anything two JSON parsers could read differently."""
    text = _utf8(raw)
    objects: list[dict] = []
    users: set[int] = set()
    try:
        body = _decoder(objects, users).decode(text)
    except _Ambiguous:
        raise
    except json.JSONDecodeError as e:
        raise ValueError(f"request body is not valid JSON: {e}") from None
    except ValueError:  # the only other: an integer of more digits than Python converts
        raise ValueError(f"request body has a number of more than {sys.get_int_max_str_digits():,} digits; "
                         "send a shorter one") from None
    except RecursionError:
        raise ValueError("request body is nested too deeply") from None
    if not isinstance(body, dict):
        raise ValueError("request body must be a JSON object")
    _check_spellings([obj for obj in objects if id(obj) not in users])
    if _SURROGATE_ESCAPE.search(text) and (where := _lone_surrogate(body)) is not None:
        raise ValueError(
            f"request body has a lone UTF-16 surrogate escape in {where}, which providers refuse or "
            "replace: escape a character outside the BMP as a surrogate pair, or send it as UTF-8")
    return body


def check_lowercase_names(body: dict) -> None:
    """For an API whose request fields are all named in lower case (OpenAI's, Anthropic's):
    BadRequest for a top-level name that is not. The provider either refuses it as unknown
    or, matching names ignoring case as Go's encoding/json does, reads it as the field pouch
    did not read (``"N": 100`` as n, ``"Stream"`` as stream)."""
    for name in body:
        if not name.isascii() or name != name.lower():
            raise BadRequest(f"request body field {_quoted(name)} is not one of this API's fields, which are all "
                             "in lower case: spell it in lower case, or leave it out")


def model_of(body: object) -> str:
    """The model a request body names, for an API whose fields are all in lower case (OpenAI's,
    Anthropic's): BadRequest for anything but an object with such names and a model."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    check_lowercase_names(body)
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise BadRequest("'model' must be a non-empty string naming the model")
    return model


def stream_of(body: dict) -> bool:
    """The body's ``stream`` flag (absent or null: False); BadRequest for anything but a boolean."""
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise BadRequest("'stream' must be true or false")
    return bool(stream)


def _utf8(raw: bytes) -> str:
    if raw.startswith(codecs.BOM_UTF8):
        raise ValueError("request body is not valid JSON: it starts with a byte order mark; send UTF-8 without one")
    # JSON text never holds NUL outside a string: UTF-16 or UTF-32, with or without a BOM.
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or b"\0" in raw[:4]:
        raise ValueError("request body is not valid JSON: it is UTF-16 or UTF-32; send UTF-8")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"request body is not valid JSON: it must be UTF-8, but byte {e.start} "
                         f"(0x{raw[e.start]:02x}) is not ({e.reason})") from None


# Objects under these names hold the client's own names, not an API's fields: a tool's JSON
# schema properties (``user_id`` beside ``userId``), metadata, a tool call's arguments. No
# provider folds their case, and pouch reads nothing in them.
_USER_NAMES = frozenset({"properties", "patternProperties", "$defs", "definitions", "dependentSchemas",
                         "dependentRequired", "metadata", "logit_bias", "input", "args", "arguments", "response"})


def _decoder(objects: list[dict], users: set[int]) -> json.JSONDecoder:
    """A decoder that refuses a name twice in one object, and collects every object for
    ``_check_spellings`` (one check over all names is cheaper than one per object), and in
    ``users`` the ids of those holding the client's own names rather than an API's fields."""

    def read_object(pairs: list[tuple[str, object]]) -> dict:
        obj = dict(pairs)
        for name, value in pairs:
            if name in _USER_NAMES and isinstance(value, dict):
                users.add(id(value))
        if len(obj) != len(pairs):
            names: set[str] = set()
            for twice, _ in pairs:
                if twice in names:
                    break
                names.add(twice)
            raise _Ambiguous(f"request body sets {_quoted(twice)} twice in one object: providers may read either "
                             "value, so send each field once")
        objects.append(obj)
        return obj

    return json.JSONDecoder(object_pairs_hook=read_object, parse_constant=_constant, parse_float=_float)


def _spelling(name: str) -> str:
    return name.casefold().replace("_", "")


def _check_spellings(objects: list[dict]) -> None:
    """Refuse an object with two names of one spelling (ignoring case and underscores)."""
    names = set().union(*objects)
    # One pass in C over every distinct name in the body. NUL cannot be folded away, so a
    # false alarm (a name holding NUL) only costs the exact check below.
    folded = "\0".join(names).casefold().replace("_", "").split("\0")
    if len(set(folded)) == len(folded):
        return
    spellings = {name: _spelling(name) for name in names}
    counts = Counter(spellings.values())
    suspects = {name for name, spelling in spellings.items() if counts[spelling] > 1}
    for obj in objects:
        seen: dict[str, str] = {}
        for name in filter(suspects.__contains__, obj):
            if (other := seen.setdefault(spellings[name], name)) != name:
                raise ValueError(
                    f"request body sets both {_quoted(other)} and {_quoted(name)} in one object: providers match field "
                    "names ignoring case (and Google's, underscores), so they may read either; send each "
                    "field once, spelled one way")


def _constant(name: str) -> float:
    raise _Ambiguous(f"request body is not valid JSON: {name} is not a JSON number; send a number or null")


def _float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _Ambiguous(f"request body has the number {text[:40]}, too large for providers to read; "
                         "send a smaller number")
    return value


def _lone_surrogate(body: dict) -> str | None:
    """Where a lone surrogate is in the parsed body (a path like ``messages[0].content``), or
    None. Decoding joined every escaped pair into one character, so any surrogate left is
    lone, and encoding to UTF-8 (in C) fails on it; only then is the body walked."""
    try:
        json.dumps(body, ensure_ascii=False).encode("utf-8")
        return None
    except (UnicodeEncodeError, RecursionError):  # the walk below does not recurse
        pass
    stack: list[tuple[object, str]] = [(body, "")]
    while stack:
        value, path = stack.pop()
        if isinstance(value, str) and _has_surrogate(value):
            return path or "the body"
        if isinstance(value, dict):
            for name, item in reversed(value.items()):
                inner = f"{path}.{name}" if path else name
                if _has_surrogate(name):
                    return f"a field name in {path or 'the body'}"
                stack.append((item, inner))
        elif isinstance(value, list):
            stack.extend((item, f"{path}[{i}]") for i, item in reversed(list(enumerate(value))))
    return None


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


def _quoted(name: str) -> str:
    """A client's field name, short enough to quote back in an error message."""
    return f"'{name}'" if len(name) <= 40 else f"'{name[:37]}...'"


def _charset(content_type: str) -> str | None:
    for parameter in content_type.split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"').lower()
    return None
