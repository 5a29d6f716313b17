"""Operator mistakes said at start-up rather than at the first request: a provider with no
credential in the gateway's environment, and a ``pouch_route`` target whose TLS certificate
the gateway does not trust (checked as mitmproxy checks it: ``ssl_insecure``,
``ssl_verify_upstream_trusted_ca``, ``ssl_verify_upstream_trusted_confdir``, else certifi's
CAs). Only names of environment variables are ever logged, never their values.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Iterable, Mapping
from typing import NamedTuple

import certifi

from pouch.providers.base import Provider

CHECK_TIMEOUT = 10.0  # seconds a route's TLS check waits for the target


def missing_credentials(providers: Iterable[Provider], environ: Mapping[str, str]) -> tuple[list[str], list[Provider]]:
    """(names of providers whose credential is set, providers that need one and have none).
    Providers that need no credential (a keyless self-hosted server) are in neither."""
    have, missing = [], []
    for provider in providers:
        if not provider.credential_env:
            continue
        if any(environ.get(name) for name in provider.credential_env):
            have.append(provider.name)
        else:
            missing.append(provider)
    return have, missing


def missing_line(provider: Provider) -> str:
    names = " or ".join(provider.credential_env)
    return f"requests with pouch keys to {provider.name} will fail until {names} is set in the gateway's environment"


class Trust(NamedTuple):
    cafile: str | None  # ssl_verify_upstream_trusted_ca
    capath: str | None  # ssl_verify_upstream_trusted_confdir
    insecure: bool  # ssl_insecure


def tls_context(trust: Trust) -> ssl.SSLContext:
    """What mitmproxy trusts upstream (``net.tls.create_proxy_server_context``): the operator's
    CA file and/or directory, else certifi's bundle, never the system store."""
    cafile = trust.cafile if trust.cafile or trust.capath else certifi.where()
    return ssl.create_default_context(cafile=cafile, capath=trust.capath)


async def check_tls(host: str, port: int, trust: Trust, timeout: float = CHECK_TIMEOUT) -> str | None:
    """None if a TLS connection to ``host:port`` verifies as mitmproxy would verify it,
    else what went wrong and what to set, in a sentence."""
    try:
        context = tls_context(trust)
    except (OSError, ssl.SSLError) as e:
        return (f"the gateway cannot load its upstream CAs (ssl_verify_upstream_trusted_ca={trust.cafile!r}, "
                f"ssl_verify_upstream_trusted_confdir={trust.capath!r}): {e}")
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port, ssl=context, server_hostname=host)
    except ssl.SSLCertVerificationError as e:
        if "hostname mismatch" in str(e).lower() or "ip address mismatch" in str(e).lower():
            return f"its TLS certificate does not name {host} ({e.verify_message}): route to a name it has"
        where = (f"the CAs the gateway trusts for upstreams ({trust.cafile or trust.capath}) do not include it: "
                 "add that CA to them" if trust.cafile or trust.capath else
                 "start the gateway with --set ssl_verify_upstream_trusted_ca=/path/ca.pem")
        return (f"the gateway does not trust its TLS certificate ({e.verify_message}); if it is signed by a CA "
                f"of your own, {where} (that CA's certificate, PEM)")
    except ssl.SSLError as e:
        return f"the TLS handshake failed ({e.reason or e}): is it an https server? (use http:// if not)"
    except TimeoutError:
        return f"it did not answer within {timeout:g} s"
    except socket.gaierror as e:
        return f"its host name does not resolve ({e.strerror or e})"
    except ConnectionRefusedError as e:
        return f"it refuses connections: is it up? ({e.strerror or e})"
    except OSError as e:
        return f"it cannot be reached ({e.strerror or e})"
    writer.close()
    try:
        await writer.wait_closed()
    except (OSError, ssl.SSLError):
        pass  # verified already; how the server closes does not matter
    return None
