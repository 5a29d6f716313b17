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

from pouch.domain.errors import InvalidInput

CA_NAME = "mitmproxy-ca-cert.pem"
BUNDLE_NAME = "ca-bundle.pem"
_PEM = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


def ensure_ca(confdir: Path) -> Path:
    """mitmproxy's CA for this gateway (created on first use), so clients can be told of it."""
    from mitmproxy.certs import CertStore

    confdir.mkdir(parents=True, exist_ok=True)
    CertStore.from_store(confdir, "mitmproxy", 2048)
    return confdir / CA_NAME


def usual_cas(bundle: Path | None = None) -> list[Path]:
    """The system's CAs (``SSL_CERT_FILE`` counts: a corporate bundle stays trusted) and certifi's,
    but never ``bundle`` itself: a shell that evaluated ``pouch env`` has ``SSL_CERT_FILE`` on it,
    and reading it back would keep a replaced pouch CA in the bundle for ever."""
    paths = ssl.get_default_verify_paths()
    found = [Path(p) for p in (paths.cafile, paths.openssl_cafile) if p]
    try:
        import certifi

        found.append(Path(certifi.where()))
    except ImportError:
        pass
    itself = bundle.resolve() if bundle else None
    return [p for p in dict.fromkeys(found) if p.is_file() and p.resolve() != itself]


def write_bundle(ca: Path, bundle: Path | None = None) -> Path:
    """``bundle`` (default ``ca-bundle.pem`` beside the CA): the usual CAs and pouch's. Written
    only when that would change it (a new pouch CA, updated system CAs), so the shells and
    processes pointed at it keep reading the same file, and atomically, so none of them ever
    reads half of one."""
    bundle = bundle or ca.with_name(BUNDLE_NAME)
    _only_yours(bundle.parent)
    certificates: dict[str, None] = {}
    for source in usual_cas(bundle):
        for pem in _PEM.findall(source.read_text(errors="replace")):
            certificates[pem] = None
    for pem in _PEM.findall(ca.read_text()):
        certificates[pem] = None
    text = "".join(f"{pem}\n" for pem in certificates)
    if not bundle.exists() or bundle.read_text(errors="replace") != text:
        bundle.parent.mkdir(parents=True, exist_ok=True)
        out = tempfile.NamedTemporaryFile("w", dir=bundle.parent, delete=False, prefix=".ca-bundle-")
        try:
            with out:
                out.write(text)
            os.chmod(out.name, 0o644)
            os.replace(out.name, bundle)
        finally:
            if os.path.exists(out.name):
                os.unlink(out.name)
    return bundle


class UnsafeDirectory(InvalidInput):
    """A folder that others could write trust roots into."""


def _only_yours(folder: Path) -> None:
    """Refuse a folder another user could write in: whoever can replace the CA or the bundle
    there decides what every client pointed at them trusts."""
    if not folder.exists() or os.name != "posix":
        return
    found = folder.stat()
    if found.st_mode & 0o002 or found.st_uid not in (os.getuid(), 0):
        raise UnsafeDirectory(
            f"{folder} can be written by other users, so the CA and the bundle clients trust cannot be kept "
            "there: use a folder only you can write (POUCH_HOME, or --set confdir=...)")
