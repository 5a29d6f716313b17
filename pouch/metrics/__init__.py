"""Prometheus metrics (DESIGN.md, "Metrics"): what the gateway's traffic did, counted where each
fact is known, and served with the store's budget gauges at ``GET /metrics`` on the admin
listener (``pouch.admin.metrics``).

- ``traffic.py``: the process's counters and histograms (``traffic``), fed from one place per
  fact: a settled request (the usage link's end of a flow, a WebSocket response's settlement)
  calls ``traffic.settled``; a refusal (the refusal log) calls ``traffic.refused``; the chain's
  clock (``addons/metrics.py``) calls ``traffic.overhead``. Client-chosen label values are
  bounded there.

Counters live in the process and start at zero with it, as Prometheus expects of counters; the
budget gauges are read from the store at each scrape, so every gateway on one store (and a
standalone ``pouch admin``) shows the same figures.
"""
