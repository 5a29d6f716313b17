"""After the load: did the chain's store record what was sent? A benchmark that silently
measured refusals, or left reservations open, would be worthless."""

from __future__ import annotations

import time

import peewee as pw

from pouch.store import database, ledger
from pouch.store.database import UsageRow


def open_gateway_store(db_url: str) -> None:
    database.open_store(db_url)


def settle(timeout: float = 30) -> tuple[int, int]:
    """Wait until no reservation is open and the row count has stopped moving;
    returns (usage rows, open reservations)."""
    deadline = time.monotonic() + timeout
    last = -1
    while True:
        rows, open_ = UsageRow.select().count(), ledger.open_reservations()
        if (open_ == 0 and rows == last) or time.monotonic() > deadline:
            return rows, open_
        last = rows
        time.sleep(0.5)


def distribution() -> dict[str, int]:
    """Usage rows by 'status/outcome'."""
    query = (UsageRow.select(UsageRow.status, UsageRow.outcome, pw.fn.COUNT(UsageRow.id).alias("n"))
             .group_by(UsageRow.status, UsageRow.outcome).order_by(pw.fn.COUNT(UsageRow.id).desc()))
    return {f"{row.status}/{row.outcome}": row.n for row in query}


def verify(completed: int, cut_off_at_most: int, non_2xx: int, socket_errors: int) -> dict:
    """Compare the store with what the clients saw. ``completed``: responses the clients
    received from the chain; ``cut_off_at_most``: requests that may have been in flight when a
    wrk run ended (their client hung up; the chain still records them)."""
    rows, open_ = settle()
    shape = distribution()
    ok_rows = shape.get("200/ok", 0)
    good = (open_ == 0 and completed <= rows <= completed + cut_off_at_most and non_2xx == 0
            and socket_errors == 0 and ok_rows >= completed)
    lines = [
        f"{'OK' if good else 'FAILED'}: {rows} usage rows for {completed} chain responses "
        f"({rows - completed:+d}; up to +{cut_off_at_most} may be requests cut off when a wrk run stopped)",
        f"rows by status/outcome: {', '.join(f'{k} {v}' for k, v in shape.items())}",
        f"open reservations after settling: {open_}; chain non-2xx responses: {non_2xx}; "
        f"socket errors: {socket_errors}",
    ]
    return {"ok": good, "rows": rows, "completed": completed, "open_reservations": open_,
            "by_status_outcome": shape, "non_2xx": non_2xx, "socket_errors": socket_errors, "lines": lines}
