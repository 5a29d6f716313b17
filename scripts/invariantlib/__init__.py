"""The invariant harness (scripts/invariants): proof that the money promise holds under load,
faults and bad input. ``plan`` what to send, ``send`` it and judge the answers, ``checks``
the store afterwards (``levels``: teams, end users, the gateway's ceiling), ``harness`` ties a run together."""
