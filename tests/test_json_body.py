"""A metered body is read exactly as the provider will read it, or refused
(pouch/providers/json_body.py), and the keys link applies that to every metered request."""

import gzip
import json
import zlib

import brotli
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mitmproxy import http

from pouch.domain.errors import BadRequest
from pouch.domain.money import Money
from pouch.providers.json_body import check_headers, check_lowercase_names, parse_json_object
from pouch.services import chain
from pouch.store import ledger
from tests.addon_helpers import MODEL, chat_body, create_key, exchange_of, facts, gateway, openai_flow

try:
    from compression import zstd
except ImportError:  # Python < 3.14: the backport mitmproxy itself uses
    from backports import zstd

CLAUDE = "claude-sonnet-4-6"
HELLO = '"messages": [{"role": "user", "content": "Hello"}]'

ORDINARY = [
    b"{}",
    b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 5}',
    b'{"a": {"b": {"c": [1, [2, [3, {"d": null}]], true, false, -0, 1.5e3, -2E-2, 12345678901234567890]}}}',
    '{"content": "café ☃ 😀 日本語", "ключ": "значение"}'.encode(),
    rb'{"escapes": "\" \\ \/ \b \f \n \r \t \u00e9 \u2603 \ud83d\ude00 \uD83D\uDE00 \u0000"}',
    # Text that only looks like surrogate escapes: an escaped backslash, then "ud800".
    rb'{"text": "\\ud800 \\\\ud800\\udc00", "\\uDFFF": 1}',
    # Names alike only across objects, or not alike: each object's own names are distinct.
    b'{"a": {"ID": 1}, "b": {"id": 2}, "c": {"user_id": 1}, "d": {"userId": 2}, "e": {"x": 1, "y": 2}}',
    # A name holding NUL is compared as written, not split at the NUL.
    rb'{"a\u0000b": 1, "a": 2, "b": 3}',
    b' \t\r\n{"padded": [ ]} \r\n\t',
]


@pytest.mark.parametrize("raw", ORDINARY)
def test_ordinary_bodies_are_read_as_json_loads_reads_them(raw):
    assert parse_json_object(raw) == json.loads(raw)


def test_a_large_body_is_read_as_json_loads_reads_it():
    tools = [{"type": "function", "function": {"name": f"tool_{i}", "parameters": {
        "type": "object", "properties": {f"arg_{j}": {"type": "string"} for j in range(8)}}}} for i in range(40)]
    messages = [{"role": "user", "content": f"message {i}: caf\u00e9 \U0001F600 " * 40} for i in range(200)]
    body = {"model": MODEL, "messages": messages, "tools": tools, "temperature": 0.5}
    for raw in (json.dumps(body).encode(), json.dumps(body, ensure_ascii=False).encode()):
        assert len(raw) > 200_000
        assert parse_json_object(raw) == body


NAMES = st.text(max_size=6)
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(NAMES, children, max_size=4),
    max_leaves=25,
)


def spelled_once(value) -> bool:
    """Whether every object's names differ in more than case and underscores."""
    if isinstance(value, list):
        return all(map(spelled_once, value))
    if isinstance(value, dict):
        spellings = {name.casefold().replace("_", "") for name in value}
        return len(spellings) == len(value) and all(map(spelled_once, value.values()))
    return True


@settings(max_examples=300)
@given(body=st.dictionaries(NAMES, VALUES, max_size=5), ascii_only=st.booleans())
def test_any_body_spelled_once_is_read_as_json_loads_reads_it(body, ascii_only):
    raw = json.dumps(body, ensure_ascii=ascii_only).encode()  # text() holds no surrogates
    if spelled_once(body):
        assert parse_json_object(raw) == json.loads(raw)
    else:
        with pytest.raises(ValueError, match="in one object"):
            parse_json_object(raw)


REFUSED = [
    # A name twice in one object, at any depth.
    (b'{"model": "gpt-4o-mini", "model": "gpt-4o"}', "sets 'model' twice in one object"),
    (b'{"messages": [{"role": "user", "content": "a", "content": "bbbb"}]}', "sets 'content' twice"),
    (b'{"a": [[{"x": {"n": 1, "n": 1}}]]}', "sets 'n' twice"),
    # Names alike but for case or underscores, at any depth.
    (b'{"model": "gpt-4o-mini", "MODEL": "gpt-4o"}', "sets both 'model' and 'MODEL' in one object"),
    (b'{"messages": [{"content": "a", "Content": "bbbb"}]}', "sets both 'content' and 'Content'"),
    (b'{"max_tokens": 5, "Max_Tokens": 50000}', "both 'max_tokens' and 'Max_Tokens'"),
    (b'{"generationConfig": {}, "generation_config": {}}', "both 'generationConfig' and 'generation_config'"),
    (b'{"generationConfig": {"maxOutputTokens": 5, "max_output_tokens": 9}}', "both 'maxOutputTokens'"),
    ('{"stream": false, "ſtream": true}'.encode(), "both 'stream' and 'ſtream'"),  # long s folds to s
    ('{"top_k": 1, "top_\u212a": 2}'.encode(), "both 'top_k' and 'top_\u212a'"),  # Kelvin sign folds to k
    # Numbers JSON does not have.
    (b'{"temperature": NaN}', "NaN is not a JSON number"),
    (b'{"a": [1, Infinity]}', "Infinity is not a JSON number"),
    (b'{"a": {"b": -Infinity}}', "-Infinity is not a JSON number"),
    (b'{"max_tokens": 1e400}', "the number 1e400, too large"),
    (b'{"a": -2.5E+999}', "the number -2.5E+999, too large"),
    (b'{"n": 1' + b"0" * 5000 + b"}", "a number of more than 4,300 digits"),
    # Bytes that are not UTF-8.
    ('{"model": "gpt-4o-mini"}'.encode("utf-16"), "not valid JSON: it is UTF-16 or UTF-32; send UTF-8"),
    ('{"model": "gpt-4o-mini"}'.encode("utf-16-be"), "it is UTF-16 or UTF-32; send UTF-8"),
    ('{"model": "gpt-4o-mini"}'.encode("utf-16-le"), "it is UTF-16 or UTF-32; send UTF-8"),
    ('{"model": "gpt-4o-mini"}'.encode("utf-32"), "it is UTF-16 or UTF-32; send UTF-8"),
    ('{"model": "gpt-4o-mini"}'.encode("utf-32-be"), "it is UTF-16 or UTF-32; send UTF-8"),
    (b"\xfe\xff" + '{"model": "gpt-4o-mini"}'.encode("utf-16-be"), "it is UTF-16 or UTF-32; send UTF-8"),
    (b'\xef\xbb\xbf{"model": "gpt-4o-mini"}', "starts with a byte order mark; send UTF-8 without one"),
    ('{"content": "café"}'.encode("latin-1"), "must be UTF-8, but byte 16 (0xe9)"),
    (b'{"content": "\xed\xa0\x80"}', "must be UTF-8"),  # a surrogate, encoded
    (b'{"content": "\xc0\xaf"}', "must be UTF-8"),  # overlong "/"
    # Lone surrogate escapes, in values and names.
    (rb'{"messages": [{"role": "user", "content": "a\ud800"}]}', "lone UTF-16 surrogate escape in messages[0].content"),
    (rb'{"a": "\uDC00"}', "surrogate escape in a,"),
    (rb'{"a": "\udc00\ud800"}', "surrogate escape in a,"),  # a pair the wrong way round
    (rb'{"a": "\ud800\u0041"}', "surrogate escape in a,"),
    (rb'{"a": "\ud800\\\udc00"}', "surrogate escape in a,"),  # an escaped backslash between
    (rb'{"a": ["x", "\ud83d"]}', r"surrogate escape in a[1]"),
    (rb'{"a": {"\udfff": 1}}', "surrogate escape in a field name in a,"),
    # Not a JSON object.
    (b"", "not valid JSON"),
    (b'{"model": ', "not valid JSON"),
    (b'{"a": 1} {"b": 2}', "not valid JSON: Extra data"),
    (b'{"a": "tab\tinside"}', "not valid JSON: Invalid control character"),
    (b"[]", "must be a JSON object"),
    (b'"gpt-4o"', "must be a JSON object"),
    (b"null", "must be a JSON object"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
]


@pytest.mark.parametrize("raw, message", REFUSED, ids=[str(i) for i in range(len(REFUSED))])
def test_what_parsers_may_read_differently_is_refused(raw, message):
    with pytest.raises(ValueError) as refused:
        parse_json_object(raw)
    assert message in str(refused.value)


@pytest.mark.parametrize("headers", [
    {}, {"content-encoding": ""}, {"content-encoding": "identity"}, {"content-encoding": "gzip"},
    {"content-encoding": " GZIP "}, {"content-encoding": "deflate"}, {"content-encoding": "br"},
    {"content-encoding": "zstd"}, {"content-type": "application/json"},
    {"content-type": "application/json; charset=utf-8"}, {"content-type": 'application/json;charset="UTF-8"'},
    {"content-type": "application/json; charset=utf8"},
])
def test_headers_pouch_reads_as_the_provider_does(headers):
    check_headers(headers)


@pytest.mark.parametrize("headers, message", [
    ({"content-encoding": "compress"}, "Content-Encoding 'compress' is not supported"),
    ({"content-encoding": "gzip, br"}, "Content-Encoding 'gzip, br' is not supported"),
    ({"content-encoding": "x-gzip"}, "'x-gzip' is not supported"),
    # mitmproxy would decode these, no provider would.
    ({"content-encoding": "base64"}, "'base64' is not supported"),
    ({"content-encoding": "none"}, "'none' is not supported"),
    ({"content-encoding": "deflateraw"}, "'deflateraw' is not supported"),
    ({"content-type": "application/json; charset=utf-16"}, "charset=utf-16: send the JSON body as UTF-8"),
    ({"content-type": "application/json; charset=ISO-8859-1"}, "charset=iso-8859-1"),
])
def test_headers_that_would_have_pouch_read_other_text_are_refused(headers, message):
    with pytest.raises(ValueError) as refused:
        check_headers(headers)
    assert message in str(refused.value)
    assert "uncompressed" in str(refused.value) or "UTF-8" in str(refused.value)


def test_lowercase_apis_refuse_a_name_in_another_case():
    check_lowercase_names({"model": MODEL, "max_tokens": 5, "stream_options": {"Include_Usage": True}})
    for name in ("N", "Stream", "MAX_TOKENS", "Previous_Response_Id", "ſtream"):
        with pytest.raises(BadRequest, match=f"field '{name}' is not one of this API's fields"):
            check_lowercase_names({"model": MODEL, name: 1})


# --- the chain ---------------------------------------------------------------------------


@pytest.fixture
def gw(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-real-openai")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-real")
    with gateway() as gw:
        yield gw


def request(provider: str, raw: bytes, secret: str, headers: dict | None = None) -> http.HTTPFlow:
    """A metered request to ``provider`` with ``raw`` as its body, byte for byte (with a
    Content-Encoding header, mitmproxy would otherwise compress ``raw`` again)."""
    if provider == "openai":
        flow = openai_flow(secret=secret)
    else:
        flow = openai_flow("/v1/messages", secret=secret, host="api.anthropic.com")
    flow.request.headers.update(headers or {})
    flow.request.raw_content = raw
    flow.request.headers["content-length"] = str(len(raw))
    return flow


def error_message(provider: str, flow: http.HTTPFlow) -> str:
    """The refusal's message, checking it is in the provider's own shape."""
    assert flow.response.status_code == 400
    body = json.loads(flow.response.content)
    if provider == "openai":
        assert body["error"]["type"] == "invalid_request_error" and body["error"]["code"] == "invalid_request_error"
    else:
        assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    return body["error"]["message"]


def bodies(provider: str) -> dict[str, bytes]:
    model = MODEL if provider == "openai" else CLAUDE
    valid = f'{{"model": "{model}", "max_tokens": 20, {HELLO}}}'
    return {
        "valid": valid.encode(),
        "duplicate": f'{{"model": "{model}", "max_tokens": 20, "max_tokens": 900000, {HELLO}}}'.encode(),
        "case": f'{{"model": "{model}", "max_tokens": 20, "MAX_TOKENS": 900000, {HELLO}}}'.encode(),
        "nan": f'{{"model": "{model}", "max_tokens": 20, "temperature": NaN, {HELLO}}}'.encode(),
        "utf16": valid.encode("utf-16"),
        "surrogate": f'{{"model": "{model}", "max_tokens": 20, "messages": [{{"role": "user", "content": "\\udc00"}}]}}'
        .encode(),
        "capital": f'{{"model": "{model}", "max_tokens": 20, "Stream": true, {HELLO}}}'.encode(),
    }


REFUSALS = {
    "duplicate": "sets 'max_tokens' twice",
    "case": "sets both 'max_tokens' and 'MAX_TOKENS'",
    "nan": "NaN is not a JSON number",
    "utf16": "it is UTF-16 or UTF-32; send UTF-8",
    "surrogate": "lone UTF-16 surrogate escape in messages[0].content",
    "capital": "field 'Stream' is not one of this API's fields",
}
COMPRESS = {"gzip": gzip.compress, "deflate": zlib.compress, "br": brotli.compress, "zstd": zstd.compress}


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
class TestChain:
    @pytest.mark.parametrize("kind", REFUSALS)
    def test_an_ambiguous_body_is_refused_before_anything_is_reserved(self, gw, provider, kind):
        _, secret = create_key(budget=Money.usd("10"))
        flow = gw.request(request(provider, bodies(provider)[kind], secret))
        assert REFUSALS[kind] in error_message(provider, flow)
        assert facts(flow)["refused"]["kind"] == "request"
        assert facts(flow)["reservation"] is None and facts(flow)["call"] is None
        gw.hook("response", flow)
        assert ledger.open_reservations() == 0

    @pytest.mark.parametrize("coding", ["compress", "gzip, br", "x-gzip", "base64"])
    def test_a_content_encoding_pouch_does_not_decode_is_named(self, gw, provider, coding):
        _, secret = create_key(budget=Money.usd("10"))
        raw = bodies(provider)["valid"]
        flow = gw.request(request(provider, raw, secret, {"content-encoding": coding}))
        message = error_message(provider, flow)
        assert f"Content-Encoding '{coding}' is not supported" in message and "not valid JSON" not in message
        assert facts(flow)["reservation"] is None

    def test_a_body_that_is_not_what_its_encoding_says_is_refused(self, gw, provider):
        _, secret = create_key(budget=Money.usd("10"))
        flow = gw.request(request(provider, bodies(provider)["valid"], secret, {"content-encoding": "gzip"}))
        assert "request body is not valid gzip" in error_message(provider, flow)

    @pytest.mark.parametrize("coding", COMPRESS)
    def test_a_compressed_body_goes_upstream_as_pouch_read_it(self, gw, provider, coding):
        _, secret = create_key(budget=Money.usd("10"))
        raw = bodies(provider)["valid"]
        flow = gw.request(request(provider, COMPRESS[coding](raw), secret, {"content-encoding": coding}))
        assert flow.response is None and facts(flow)["reservation"] is not None
        assert facts(flow)["call"]["max_output"] == 20
        assert "content-encoding" not in flow.request.headers
        assert flow.request.raw_content == raw
        assert flow.request.headers["content-length"] == str(len(raw))

    def test_a_compressed_ambiguous_body_is_refused(self, gw, provider):
        _, secret = create_key(budget=Money.usd("10"))
        raw = gzip.compress(bodies(provider)["duplicate"])
        flow = gw.request(request(provider, raw, secret, {"content-encoding": "gzip"}))
        assert REFUSALS["duplicate"] in error_message(provider, flow)

    def test_a_charset_other_than_utf8_is_refused(self, gw, provider):
        _, secret = create_key(budget=Money.usd("10"))
        headers = {"content-type": "application/json; charset=iso-8859-1"}
        flow = gw.request(request(provider, bodies(provider)["valid"], secret, headers))
        assert "charset=iso-8859-1" in error_message(provider, flow)



def test_a_compressed_body_pouch_rewrites_goes_upstream_uncompressed(gw):
    """pouch asks a stream for usage: the body it writes back is plain JSON, not labelled gzip."""
    _, secret = create_key(budget=Money.usd("10"))
    raw = gzip.compress(json.dumps(chat_body(max_tokens=20, stream=True)).encode())
    flow = gw.request(request("openai", raw, secret, {"content-encoding": "gzip"}))
    assert flow.response is None and exchange_of(flow).injected_usage
    assert "content-encoding" not in flow.request.headers
    assert json.loads(flow.request.raw_content) == chat_body(max_tokens=20, stream=True,
                                                             stream_options={"include_usage": True})


@pytest.mark.parametrize("raw", [
    # a tool's JSON schema names its own properties: no provider folds those
    b'{"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", '
    b'"properties": {"user_id": {"type": "string"}, "userId": {"type": "string"}}}}}]}',
    b'{"metadata": {"Team": "a", "team": "b"}}',
    b'{"messages": [{"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", '
    b'"input": {"ID": 1, "id": 2}}]}]}',
])  # fmt: skip
def test_the_clients_own_names_may_differ_only_in_case(raw):
    assert parse_json_object(raw) == json.loads(raw)


def test_exact_duplicates_are_refused_in_the_clients_own_names_too():
    with pytest.raises(ValueError, match="'x' twice"):
        parse_json_object(b'{"tools": [{"input_schema": {"properties": {"x": 1, "x": 2}}}]}')


@pytest.mark.parametrize("coding, compress", [
    ("gzip", gzip.compress), ("deflate", zlib.compress), ("br", brotli.compress), ("zstd", zstd.compress),
])  # fmt: skip
def test_a_decompression_bomb_is_refused(coding, compress):
    """A few kilobytes that expand past the limit are refused before the expansion completes."""
    from pouch.providers.json_body import MAX_DECODED_BYTES, decode_body

    bomb = compress(b'{"model": "' + b"a" * (MAX_DECODED_BYTES + 10) + b'"}')
    assert len(bomb) < MAX_DECODED_BYTES // 100
    with pytest.raises(ValueError, match="expands to more than 64 MiB"):
        decode_body(bomb, coding)
    small = b'{"model": "gpt-4o-mini"}'
    assert decode_body(compress(small), coding) == small


@pytest.mark.parametrize("coding, compress", [("gzip", gzip.compress), ("zstd", zstd.compress)])
def test_a_truncated_compressed_body_is_refused(coding, compress):
    from pouch.providers.json_body import decode_body

    whole = compress(b'{"model": "gpt-4o-mini", "messages": []}' * 50)
    with pytest.raises(ValueError, match=f"not valid {coding}"):
        decode_body(whole[: len(whole) // 2], coding)


def test_raw_deflate_is_read_too():
    from pouch.providers.json_body import decode_body

    packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    raw = packer.compress(b'{"a": 1}') + packer.flush()
    assert decode_body(raw, "deflate") == b'{"a": 1}'
