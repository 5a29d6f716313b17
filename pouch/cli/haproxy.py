"""HAProxy for ``pouch run --workers N``: where the binary is, and the configuration pouch writes.

HAProxy works in TCP mode: it never sees inside a connection, so proxy clients' CONNECT
tunnels, TLS to mitmproxy's CA, streams and WebSockets pass as they would to one mitmdump.
One frontend per public listener; each worker has its own loopback port for each of them.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

# Debian installs it in /usr/sbin, which is not on every user's PATH.
PLACES = ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy")
MISSING = ("haproxy not found: pouch run --workers N puts HAProxy in front of its gateway processes. "
           "Install it (Debian/Ubuntu: sudo apt-get install haproxy; scripts/bootstrap does it as root; "
           "macOS: brew install haproxy), or run with one worker")


def binary() -> str | None:
    return shutil.which("haproxy") or next((p for p in PLACES if Path(p).exists()), None)


@dataclass(frozen=True)
class Frontend:
    name: str  # e.g. "regular-8080"
    host: str  # as mitmproxy takes it: "" (every interface), "0.0.0.0", "::", "127.0.0.1", "::1", ...
    port: int
    backends: tuple[int, ...]  # each worker's loopback port for this listener, worker 1 first


def bind(host: str, port: int) -> str:
    if host == "":  # mitmproxy's "every interface": IPv4 and IPv6
        return f":::{port} v4v6"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def config(frontends: list[Frontend], workers: int) -> str:
    """The whole haproxy.cfg (deploy/haproxy.cfg is the annotated version of the same)."""
    lines = [
        f"# Written by `pouch run --workers {workers}` at every start: edits here are lost.",
        "# deploy/haproxy.cfg in pouch's source explains each line.",
        "global",
        "    log stderr format short daemon notice",
        "",
        "defaults",
        "    mode tcp",
        "    log global",
        "    option dontlognull",
        "    option dontlog-normal",
        "    timeout connect 5s",
        # A model may think for minutes before its first byte; proxy clients keep tunnels open.
        "    timeout client 1h",
        "    timeout server 1h",
        # A connection that cannot reach a (restarting) worker is tried on another one.
        "    retries 2",
        "    option redispatch 1",
    ]
    for front in frontends:
        lines += ["", f"frontend {front.name}", f"    bind {bind(front.host, front.port)}",
                  f"    default_backend {front.name}",
                  "", f"backend {front.name}", "    balance leastconn"]
        lines += [f"    server worker{n} 127.0.0.1:{port} check inter 1s fall 1 rise 1"
                  for n, port in enumerate(front.backends, start=1)]
    return "\n".join(lines) + "\n"
