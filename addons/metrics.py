"""Not links: the chain's clock, for ``pouch_gateway_overhead_seconds``, and the gateway's side
of ``/metrics`` (its traffic served there; the option ``pouch_metrics_public``).

``MetricsStart`` goes first in the chain and ``Metrics`` last (addons/pouch.py): every link's
``request``, ``responseheaders`` and ``response`` hook runs between the two, so the time from one
to the other, summed over those hooks, is what pouch's links added to the flow, waiting for the
store included (the definition: ``pouch.metrics.traffic.OVERHEAD_HELP``). It is observed as the
response hook leaves the chain (mitmproxy sends the response on right after), for requests the
provider answered (not pouch itself: a refusal, a mock or another local answer has no upstream
to add to).
The counters themselves are fed where their facts are known (``pouch.metrics``).
"""

from __future__ import annotations

import time
import weakref

from mitmproxy import ctx, http

from pouch.admin import metrics as admin_metrics
from pouch.metrics.traffic import traffic
from pouch.services import chain

# flow -> [seconds spent in the chain so far, when the hook now running entered it (None: none is)]
_clocks: weakref.WeakKeyDictionary[http.HTTPFlow, list] = weakref.WeakKeyDictionary()


def _entered(flow: http.HTTPFlow) -> None:
    clock = _clocks.get(flow)
    if clock is None:
        _clocks[flow] = [0.0, time.monotonic()]
    else:
        clock[1] = time.monotonic()


def _left(flow: http.HTTPFlow) -> float | None:
    clock = _clocks.get(flow)
    if clock is None or clock[1] is None:
        return None
    clock[0] += time.monotonic() - clock[1]
    clock[1] = None
    return clock[0]


class MetricsStart:
    """First in the chain: each hook of a flow enters the chain here."""

    def request(self, flow: http.HTTPFlow) -> None:
        _entered(flow)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        _entered(flow)

    def response(self, flow: http.HTTPFlow) -> None:
        _entered(flow)


class Metrics:
    """Last in the chain: each hook of a flow leaves the chain here."""

    def load(self, loader):
        loader.add_option("pouch_metrics_public", bool, False,
                          "Serve /metrics on the admin listener (pouch_admin) without a token: for a Prometheus "
                          "that cannot send one, on a listener only it can reach. Otherwise a viewer or admin token "
                          "(pouch admin-tokens create) is needed.")
        admin_metrics.serve_traffic(traffic)

    def configure(self, updated):
        if "pouch_metrics_public" in updated:
            admin_metrics.public = ctx.options.pouch_metrics_public

    def request(self, flow: http.HTTPFlow) -> None:
        _left(flow)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        _left(flow)

    def response(self, flow: http.HTTPFlow) -> None:
        spent = _left(flow)
        _clocks.pop(flow, None)
        found = chain.existing(flow)
        if spent is not None and found is not None and not (found.refusal or found.local or found.mock):
            traffic.overhead(spent)
