"""Run the chain as ``pouch run --workers N`` does — the same plan and supervisor — for any N,
one included: the benchmark measures one worker behind HAProxy too, which ``pouch run
--workers 1`` does not start (it runs mitmdump alone).

    python scripts/benchlib/supervise.py N MITMDUMP_ARGS...   (POUCH_HOME in the environment)
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pouch.cli import haproxy, run, workers  # noqa: E402
from pouch.store import database  # noqa: E402


def main(argv: list[str]) -> int:
    count, extra = int(argv[0]), tuple(argv[1:])
    args, opts = run.command("mitmdump", 8080, None, extra)
    if opts is None:
        print(f"supervise: mitmdump refuses {' '.join(args)}", file=sys.stderr)
        return 2
    database.open_store(run.mitm_options.deferred(opts, "pouch_db"))  # migrated once, before the workers
    plan = workers.make_plan("mitmdump", 8080, None, extra, opts, count, run.command)
    print(plan.describe(), flush=True)
    return workers.Supervisor(plan, haproxy.binary()).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
