"""What a client trusts to talk through the gateway: mitmproxy's CA, and a bundle of the usual
CAs plus that one.

Pointing ``SSL_CERT_FILE`` at pouch's CA alone would make every other HTTPS call of the client
fail (the gateway tunnels non-LLM traffic untouched, so those servers show their real
certificates). The bundle keeps them working: the system's CAs, certifi's (what Python
clients use by default), and pouch's.
"""

from __future__ import annotations

import os
import re
import ssl
import tempfile
from pathlib import Path

CA_NAME = "mitmproxy-ca-cert.pem"
BUNDLE_NAME = "ca-bundle.pem"
_PEM = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


def ensure_ca(confdir: Path) -> Path:
    """mitmproxy's CA for this gateway (created on first use), so clients can be told of it."""
    from mitmproxy.certs import CertStore

    confdir.mkdir(parents=True, exist_ok=True)
    CertStore.from_store(confdir, "mitmproxy", 2048)
    return confdir / CA_NAME


def usual_cas() -> list[Path]:
    paths = ssl.get_default_verify_paths()
    found = [Path(p) for p in (paths.cafile, paths.openssl_cafile) if p]
    try:
        import certifi

        found.append(Path(certifi.where()))
    except ImportError:
        pass
    return [p for p in dict.fromkeys(found) if p.is_file()]


def write_bundle(ca: Path) -> Path:
    """``<confdir>/ca-bundle.pem``: the usual CAs and pouch's, rewritten whenever that would
    change it (a new pouch CA, updated system CAs)."""
    certificates: dict[str, None] = {}
    for source in usual_cas():
        for pem in _PEM.findall(source.read_text(errors="replace")):
            certificates[pem] = None
    for pem in _PEM.findall(ca.read_text()):
        certificates[pem] = None
    text = "".join(f"{pem}\n" for pem in certificates)
    bundle = ca.with_name(BUNDLE_NAME)
    if not bundle.exists() or bundle.read_text() != text:
        with tempfile.NamedTemporaryFile("w", dir=bundle.parent, delete=False, prefix=".ca-bundle-") as out:
            out.write(text)
        os.chmod(out.name, 0o644)
        os.replace(out.name, bundle)
    return bundle
