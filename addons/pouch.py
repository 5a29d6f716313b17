"""pouch: the whole chain, in order. Run it with

    mitmdump -s addons/pouch.py      (headless)
    mitmweb  -s addons/pouch.py      (with the traffic inspector)

or `pouch run` / `pouch web`, which add sensible defaults. mitmproxy sees one addon, the
chain (addons/chain.py), which calls the links below in this order.
"""

import importlib
import sys
from pathlib import Path

# mitmproxy puts this directory first on sys.path while it loads the script, where this
# file would shadow the `pouch` package: the folder that holds `pouch` goes first. In the
# checkout that is the root, where `addons` is this folder; installed (pip install), this
# folder is the package `pouch.addons` (setup.py) and `addons` is made to name it, so the
# links import each other the same way in both.
_here = Path(__file__).resolve().parent
if (_here.parent / "__init__.py").exists():  # installed: site-packages/pouch/addons
    sys.path.insert(0, str(_here.parent.parent))
    sys.modules.setdefault("addons", importlib.import_module("pouch.addons"))
else:
    sys.path.insert(0, str(_here.parent))

from addons.admin import Admin  # noqa: E402
from addons.alerts import Alerts  # noqa: E402
from addons.budget import Budget  # noqa: E402
from addons.chain import Chain  # noqa: E402
from addons.gateway import Gateway  # noqa: E402
from addons.inspect import Inspect  # noqa: E402
from addons.keys import Keys  # noqa: E402
from addons.metrics import Metrics, MetricsStart  # noqa: E402
from addons.mock import Mock  # noqa: E402
from addons.perimeter import Perimeter  # noqa: E402
from addons.preflight import Preflight  # noqa: E402
from addons.providers import Providers  # noqa: E402
from addons.proxy_credentials import ProxyCredentials  # noqa: E402
from addons.ratelimit import RateLimit  # noqa: E402
from addons.upstream import Upstream  # noqa: E402
from addons.usage import UsageMeter  # noqa: E402
from addons.websocket import ResponsesWebSocket  # noqa: E402

addons = [Chain(
    Gateway(freeze_heap=True),  # not a link: the store and its thread, the tokenizers: what every link shares
    MetricsStart(),  # not a link: each flow hook enters the chain here (Gateway has none): the overhead clock
    Admin(),  # not a link: the admin API's listener (pouch_admin); after Gateway, whose configure opens the store it serves
    ProxyCredentials(),  # not a link: Proxy-Authorization off every request, kept for the perimeter only
    Perimeter(),  # not a link: who may use the proxy, where it may connect, LLM hosts only over https
    Providers(),  # not a link: which APIs are metered, and only their hosts are decrypted
    Preflight(),  # not a link: says at start which providers lack a credential, and checks each route's TLS
    Alerts(),  # not a link: budget alerts: delivers the store's outbox to the webhooks, notes budget refusals
    Keys(),
    RateLimit(),
    Budget(),
    Mock(),
    UsageMeter(),
    ResponsesWebSocket(),  # per message of a socket the links above admitted; settles before Inspect tells it
    Upstream(),
    Inspect(),  # not a link: explains each flow in mitmweb (comments, markers, LLM view, commands)
    Metrics(),  # not a link: ... and leaves it here; serves the traffic's counters on /metrics (pouch_admin)
)]
