"""The perimeter's rules as plain functions: which addresses are public, the pouch_passthrough
grammar, proxy credentials and placeholders."""

from __future__ import annotations

import asyncio
import base64
import ipaddress

import pytest

from pouch.services import perimeter
from pouch.services.perimeter import Passthrough


@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.1.2.3", "10.0.0.1", "172.16.0.1", "172.31.255.255", "192.168.0.1", "169.254.169.254",
    "100.64.0.1", "0.0.0.0", "::1", "::", "fd00::1", "fc00::1", "fe80::1", "::ffff:127.0.0.1", "::ffff:10.1.1.1",
    "2002:7f00:1::", "64:ff9b::a9fe:a9fe", "::127.0.0.1", "::a00:1", "224.0.0.1", "255.255.255.255", "192.0.2.1",
])
def test_addresses_that_are_not_public(address):
    assert not perimeter.is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "172.32.0.1", "2606:4700::1111", "::ffff:8.8.8.8",
                                     "64:ff9b::808:808"])
def test_public_addresses(address):
    assert perimeter.is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("host", ["127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1", "localhost", "LOCALHOST."])
def test_loopback(host):
    assert perimeter.is_loopback(host)


@pytest.mark.parametrize("host", ["", "0.0.0.0", "::", "192.0.2.2", "example.com"])
def test_not_loopback(host):
    assert not perimeter.is_loopback(host)


def check(words, host, port=443):
    return asyncio.run(Passthrough(words).check(host, port))


def test_public_is_the_default_and_refuses_private_addresses():
    assert check(["public"], "8.8.8.8") == ("8.8.8.8", "")
    address, reason = check(["public"], "169.254.169.254")
    assert address is None and "private" in reason and "pouch_passthrough" in reason


def test_a_name_is_resolved_and_refused_when_it_points_inside():
    address, reason = check(["public"], "localhost")
    assert address is None and "resolves to a loopback" in reason and "127.0.0.1" not in reason


def test_a_glob_allows_a_host_wherever_it_resolves_and_nothing_else():
    assert check(["*.corp.example,localhost"], "db.corp.example") == (None, "")
    assert check(["localhost"], "localhost") == (None, "")
    address, reason = check(["localhost"], "8.8.8.8")
    assert address is None and "not in pouch_passthrough" in reason


def test_all_and_none():
    assert check(["all"], "10.0.0.1") == (None, "")
    address, reason = check(["none"], "8.8.8.8")
    assert address is None and "no traffic except to LLM APIs" in reason


@pytest.mark.parametrize("words", [["none,public"], ["none", "github.com"], ["git hub.com"], ["http://x"]])
def test_bad_passthrough_words_are_refused(words):
    with pytest.raises(ValueError):
        Passthrough(words)


def test_describe_says_what_is_allowed():
    assert Passthrough(["public", "*.corp.example"]).describe() == "public,*.corp.example"
    assert Passthrough(["none"]).describe() == "none"


def basic(text: str) -> str:
    return "Basic " + base64.b64encode(text.encode()).decode()


def test_the_proxy_secret_is_the_password_or_else_the_user():
    assert perimeter.proxy_secret(basic("anything:pouch-abc")) == "pouch-abc"
    assert perimeter.proxy_secret(basic("pouch-abc:")) == "pouch-abc"
    assert perimeter.proxy_secret(basic("pouch-abc")) == "pouch-abc"
    assert perimeter.proxy_secret("Bearer pouch-abc") is None
    assert perimeter.proxy_secret("Basic !!!not-base64") is None
    assert perimeter.proxy_secret(basic(":")) is None


@pytest.mark.parametrize("credential", ["x", "unused", "sk-placeholder", "sk-dummy-0123456789abcdefghij",
                                        "not-needed", "  short  "])
def test_placeholders(credential):
    assert perimeter.is_placeholder(credential)


@pytest.mark.parametrize("credential", ["sk-proj-" + "a1B2" * 12, "sk-ant-oat01-" + "Zz9" * 20, "AIza" + "x1" * 18])
def test_real_looking_credentials_are_not_placeholders(credential):
    assert not perimeter.is_placeholder(credential)
