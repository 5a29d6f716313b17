"""The invariant harness: proof that pouch's money promise holds under load, faults and bad input.

    scripts/invariants [--requests N] [--concurrency C] [--seed S] [--runs R] [--deadline S] [--keep DIR]
                       [--db URL] [--workers N [--kill-worker]]

Starts fakes of OpenAI, Anthropic and Gemini and one real gateway (mitmdump with the chain),
then, per run, creates fresh keys with tight budgets and rate limits (and a mock key), teams
whose budgets bind before their keys', keys whose end users' budgets bind (end users named by
x-pouch-user, OpenAI's user / safety_identifier or Anthropic's metadata.user_id), and starts a
second gateway on the same store whose pouch_budget_total binds the keys sent through it; fires
N requests across every API, streamed or not, with seeded random faults (slow, failing, dying
or usage-less upstreams; clients that give up or hang up; bad input), waits until the gateways
have settled, and checks the invariants from the store, the fakes' records and what every
client saw, at every budget level. Prints a table per run and exits 1 on any violation.

With ``--workers N`` the gateway is ``pouch run --workers N``: N gateway processes on one
PostgreSQL store behind HAProxy (``--db``, default: POUCH_TEST_PG's server, database pouch_inv,
emptied first), every key's requests spread over them; limits of keys, a team and end users
bind and are checked from the store (its rate log and snapshots of what is in flight).
``--kill-worker`` SIGKILLs worker 2 mid-run: pouch restarts it, it charges what it left open.

The targets ("zero invariant violations over at least 10,000 requests of mixed faults"; issue
16: the same over three processes, and with one killed):

    scripts/invariants --requests 10000
    scripts/invariants --requests 10000 --workers 3
    scripts/invariants --requests 10000 --workers 3 --kill-worker
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # pouch, addons, tests.fakes, tests.gateway and this package

from scripts.invariantlib import harness, workers  # noqa: E402


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/invariants", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000, help="requests per run (default 3000)")
    parser.add_argument("--concurrency", type=int, default=48, help="requests in flight at once (default 48)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the plan: keys, requests, faults (default 1)")
    parser.add_argument("--runs", type=int, default=1,
                        help="runs against the same gateway, with fresh keys each (default 1)")
    parser.add_argument("--deadline", type=float, metavar="SECONDS",
                        help="most a run may take; requests not sent by then count as a violation "
                             "(default 60 + requests / 20)")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="work in DIR and keep it (the gateway's store and mitmdump.log); default: a temporary one")
    parser.add_argument("--db", metavar="URL",
                        help="the store: a PostgreSQL URL of a database the harness may empty (default: a SQLite "
                             "file in the work directory; with --workers, POUCH_TEST_PG's server, database "
                             f"{workers.DEFAULT_DATABASE})")
    parser.add_argument("--workers", type=int, default=0, metavar="N",
                        help="run the gateway as `pouch run --workers N` (HAProxy in front, PostgreSQL behind)")
    parser.add_argument("--kill-worker", action="store_true",
                        help=f"SIGKILL worker {harness.KILLED_WORKER} mid-run (pouch restarts it); needs --workers 2+")
    args = parser.parse_args(argv)
    if args.workers:
        args.db = args.db or workers.default_url()
        if not args.db or not args.db.startswith("postgres"):
            parser.error("--workers needs a PostgreSQL store: --db postgresql://... (or POUCH_TEST_PG set)")
    if args.kill_worker and args.workers < harness.KILLED_WORKER:
        parser.error(f"--kill-worker needs --workers {harness.KILLED_WORKER} or more")
    if args.requests < 1 or args.concurrency < 1 or args.runs < 1:
        parser.error("--requests, --concurrency and --runs must be positive")
    if args.keep and args.keep.exists() and any(args.keep.iterdir()):
        parser.error(f"--keep {args.keep}: give a new or empty directory (it gets a fresh gateway store)")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="pouch-invariants-") as temporary:
        workdir = args.keep or Path(temporary)
        workdir.mkdir(parents=True, exist_ok=True)
        with harness.Environment(workdir, args.db, args.workers) as env:
            results = []
            for index in range(1, args.runs + 1):
                results.append(harness.run_once(env, index, args.requests, args.concurrency, args.seed,
                                                args.deadline, kill=args.kill_worker))
                print(harness.summary(results[-1]), flush=True)
    violations = sum(len(r.violations) for r in results)
    total = sum(r.requests for r in results)
    overruns, injected = sum(r.overruns for r in results), sum(r.injected for r in results)
    print(f"invariants: {total} requests in {args.runs} run(s), {time.monotonic() - started:.0f} s, "
          f"{violations} violation(s), {overruns} overrun(s) flagged of {injected} injected")
    if violations and not args.keep:
        print("invariants: run again with --keep DIR to keep the gateway's store and mitmdump.log")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
