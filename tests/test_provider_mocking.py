"""What every provider folder's mock shares (pouch/providers/mocking.py), through the request
shapes that use it: the text an echo mock answers with, the last thing the user said."""

import pytest

from pouch.providers import registry
from pouch.providers.mocking import pieces, unit_vector


@pytest.mark.parametrize("api, body, text", [
    ("chat", {"messages": [
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": "second"}, {"type": "image_url", "image_url": {}}]},
    ]}, "second"),
    ("chat", {"messages": [{"role": "system", "content": "only a system prompt"}]}, "only a system prompt"),
    ("chat", {"messages": []}, ""),
    ("chat", {}, ""),
    ("responses", {"input": "just a string"}, "just a string"),
    ("responses", {"input": [{"role": "user", "content": [{"type": "input_text", "text": "hi there"}]}]}, "hi there"),
    ("completions", {"prompt": ["one", "two"]}, "two"),
    ("completions", {"prompt": "once upon"}, "once upon"),
    ("embeddings", {"input": ["a text", "the last text"]}, "the last text"),
    ("anthropic_messages", {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]}, "a b"),
    ("gemini", {"contents": [{"role": "model", "parts": [{"text": "hello"}]},
                             {"role": "user", "parts": [{"text": "ciao"}, {"text": "amici"}]}]}, "ciao amici"),
])  # fmt: skip
def test_the_echo_is_the_last_thing_the_user_said(api, body, text):
    assert registry.api(api).echo_text(body) == text


def test_every_request_shape_has_an_echo():
    for api in registry.APIS.values():
        assert api.echo_text({}) == ""


def test_pieces_put_the_text_back_together():
    text = "  one two\nthree  "
    assert pieces(text) == ["  one", " two", "\nthree", "  "]
    assert "".join(pieces(text)) == text


def test_a_unit_vector_depends_only_on_its_seed():
    vector = unit_vector(b"seed", 64)
    assert len(vector) == 64 and abs(sum(v * v for v in vector) - 1) < 1e-9
    assert unit_vector(b"seed", 64) == vector != unit_vector(b"other", 64)
