"""pouch: the whole chain, in order. Run it with

    mitmdump -s addons/pouch.py      (headless)
    mitmweb  -s addons/pouch.py      (with the traffic inspector)

or `pouch run` / `pouch web`, which add sensible defaults.
"""

import sys
from pathlib import Path

# mitmproxy puts this directory first on sys.path while it loads the script, where this
# file would shadow the `pouch` package; the checkout root goes first so that `pouch` is
# the library and `addons` this package, installed or not.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from addons.budget import Budget  # noqa: E402
from addons.inspect import Inspect  # noqa: E402
from addons.keys import Keys  # noqa: E402
from addons.mock import Mock  # noqa: E402
from addons.perimeter import Perimeter  # noqa: E402
from addons.preflight import Preflight  # noqa: E402
from addons.providers import Providers  # noqa: E402
from addons.proxy_credentials import ProxyCredentials  # noqa: E402
from addons.ratelimit import RateLimit  # noqa: E402
from addons.upstream import Upstream  # noqa: E402
from addons.usage import UsageMeter  # noqa: E402

addons = [
    ProxyCredentials(),  # not a link: Proxy-Authorization off every request, kept for the perimeter only
    Perimeter(),  # not a link: who may use the proxy, where it may connect, LLM hosts only over https
    Providers(),  # not a link: which APIs are metered, and only their hosts are decrypted
    Preflight(),  # not a link: says at start which providers lack a credential, and checks each route's TLS
    Keys(),
    RateLimit(),
    Budget(),
    Mock(),
    UsageMeter(),
    Upstream(),
    Inspect(),  # not a link: explains each flow in mitmweb (comments, markers, LLM view, commands)
]
