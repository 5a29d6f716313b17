"""Where pouch keeps its state (the default SQLite store, the operator's prices.json, the demo
key): ``POUCH_HOME``, read in this one place."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """``$POUCH_HOME``, or ``./data`` when it is unset or empty."""
    return Path(os.environ.get("POUCH_HOME") or "data")
