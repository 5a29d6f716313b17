"""Mutation testing of the money modules: which small faults in them do their tests miss?

    scripts/mutate [--module PATH ...] [--limit N] [--list] [--rev REV] [--min-score N] [--json PATH]

For each module, every mutant (a flipped comparison, a swapped operator, a changed constant,
a removed statement, ... see scripts/mutatelib/mutants.py) is written into a private copy of
the checkout and the module's fast unit tests are run against it (-x, with a timeout: a hung
mutant counts as killed). A mutant no test notices is a survivor: a missing test, unless the
mutant is equivalent. Prints a table per module and every survivor as
``file:line: original -> mutant``, and writes the whole run to build/mutation-report.json.
A report, not a gate: exits 0 unless --min-score is given and the total score is below it.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import queue
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.mutatelib import report  # noqa: E402
from scripts.mutatelib.mutants import mutants  # noqa: E402
from scripts.mutatelib.sandbox import Processes, make_sandboxes  # noqa: E402

# Each money module and the fast unit tests that exercise it, its mirror first (with -x the
# first failure ends a run). No end-to-end tests: a mutant's run should take seconds.
MODULES = {
    "pouch/domain/money.py": ["tests/test_money.py", "tests/test_pricing.py"],
    "pouch/store/ledger.py": ["tests/test_store_ledger.py", "tests/test_store_instances.py", "tests/test_periods.py"],
    "pouch/pricing/price.py": ["tests/test_pricing.py", "tests/test_pricing_reserve.py"],
    "pouch/pricing/table.py": ["tests/test_pricing.py", "tests/test_pricing_import.py", "tests/test_pricing_reserve.py"],
    "pouch/providers/openai/usage.py": [
        "tests/test_provider_openai.py", "tests/test_provider_compatible.py", "tests/test_provider_tools.py",
    ],
    "pouch/providers/anthropic/usage.py": ["tests/test_provider_anthropic.py", "tests/test_provider_tools.py"],
    "pouch/providers/gemini/usage.py": ["tests/test_provider_gemini.py", "tests/test_provider_tools.py"],
    "pouch/pricing/reserve.py": ["tests/test_pricing_reserve.py", "tests/test_addon_tools.py", "tests/test_addon_budget.py"],
    "addons/budget.py": ["tests/test_addon_budget.py", "tests/test_addon_tools.py", "tests/test_addon_budget_instance.py"],
    "addons/usage.py": ["tests/test_addon_usage.py", "tests/test_addon_tools.py", "tests/test_addon_ratelimit.py"],
}
MAX_WORKERS = 2  # the machine has two cores and other people use them
DEFAULT_REPORT = ROOT / "build" / "mutation-report.json"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/mutate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--module", action="append", metavar="PATH", choices=list(MODULES),
                        help="a module to mutate, repeatable (default: all of " + ", ".join(MODULES) + ")")
    parser.add_argument("--limit", type=int, metavar="N",
                        help="run only N mutants per module, spread evenly over it (a quick check)")
    parser.add_argument("--list", action="store_true", help="list the mutants without running any tests")
    parser.add_argument("--min-score", type=float, metavar="PERCENT",
                        help="exit 1 if the total score (killed / mutants) is below PERCENT")
    parser.add_argument("--workers", type=int, default=MAX_WORKERS,
                        help=f"mutants tested at once, at most {MAX_WORKERS} (default {MAX_WORKERS})")
    parser.add_argument("--timeout", type=float, metavar="SECONDS",
                        help="most one mutant's test run may take (default: 4 x the unmutated run, at least 20 s)")
    parser.add_argument("--rev", metavar="REV",
                        help="mutate and test git revision REV (e.g. HEAD) instead of the work tree as it is now")
    parser.add_argument("--json", type=Path, default=DEFAULT_REPORT, metavar="PATH",
                        help=f"where to write the report (default {DEFAULT_REPORT.relative_to(ROOT)})")
    args = parser.parse_args(argv)
    if not 1 <= args.workers <= MAX_WORKERS:
        parser.error(f"--workers is 1 or {MAX_WORKERS}")
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be positive")
    return args


def select(found: list, limit: int | None) -> list:
    """All mutants, or ``limit`` of them spread evenly over the module (so over its operators)."""
    if limit is None or limit >= len(found):
        return found
    return [found[index * len(found) // limit] for index in range(limit)]


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    paths = list(dict.fromkeys(args.module or MODULES))
    if args.list:
        for path in paths:
            text = _git("show", f"{args.rev}:{path}") if args.rev else (ROOT / path).read_text(encoding="utf-8")
            found = select(mutants(path, text), args.limit)
            print(f"{path}: {len(found)} mutants")
            for mutant in found:
                print(f"  {mutant.describe()}  [{mutant.operator}]")
        return 0

    started, clock = datetime.datetime.now(datetime.UTC), time.monotonic()
    signal.signal(signal.SIGTERM, _interrupt)  # stop like Ctrl-C: kill the tests, clean up
    processes = Processes()
    temporary, boxes = make_sandboxes(ROOT, args.workers, args.rev)
    try:
        results = measure(paths, args, boxes, processes)
    except KeyboardInterrupt:
        print("\nmutate: interrupted; test processes stopped, copies removed (the checkout was never mutated)",
              file=sys.stderr)
        return 130
    finally:
        processes.stop_all()
        temporary.cleanup()

    print()
    print(report.table(results))
    survivors = report.survivor_lines(results)
    if survivors:
        print(f"\nsurvivors ({len(survivors)}), file:line: original -> mutant:")
        for line in survivors:
            print(f"  {line}")
    header = {
        "command": " ".join(["scripts/mutate", *argv]),
        "started": started.isoformat(timespec="seconds"),
        "seconds": round(time.monotonic() - clock, 1),
        "commit": _git("rev-parse", args.rev or "HEAD").strip(),
        "uncommitted": [] if args.rev else _git("status", "--porcelain", "--", *paths).splitlines(),
        "workers": args.workers,
    }
    report.write_json(args.json, results, header)
    print(f"\nreport: {args.json}  ({time.monotonic() - clock:.0f} s)")

    if any(result.error for result in results):
        return 1
    score = report.total_score(results)
    if args.min_score is not None and score is not None and score < args.min_score:
        print(f"mutate: total score {score:.1f}% is below --min-score {args.min_score:g}%")
        return 1
    return 0


def measure(paths: list[str], args: argparse.Namespace, boxes: list, processes: Processes) -> list:
    """Run each module's tests unmutated, then against each of its mutants; results per module."""
    boxes[0].check_imports()
    results = []
    for path in paths:
        # Mutate the copy's text, the snapshot the tests will run in.
        found = select(mutants(path, (boxes[0].root / path).read_text(encoding="utf-8")), args.limit)
        result = report.ModuleResult(path, MODULES[path], found)
        results.append(result)
        _baseline(result, boxes[0], processes, args.timeout)
        if result.error:
            print(f"{path}: not measured: {result.error}", flush=True)
            continue
        print(f"{path}: {len(found)} mutants; tests {' '.join(result.tests)} take {result.baseline_seconds:.1f} s",
              flush=True)
        if result.left_out:
            print(f"  left out, failing without any mutant: {' '.join(result.left_out)}", flush=True)

    jobs = [(result, index) for result in results if not result.error for index in range(len(result.mutants))]
    free = queue.SimpleQueue()
    for box in boxes:
        free.put(box)

    def test_one(result: report.ModuleResult, index: int):
        box = free.get()
        try:
            mutant = result.mutants[index]
            return box.run(result.arguments(), result.timeout_seconds, processes, mutant.path, mutant.source)
        finally:
            free.put(box)

    clock = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(len(boxes)) as pool:
        try:
            futures = {pool.submit(test_one, result, index): (result, index) for result, index in jobs}
            for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
                result, index = futures[future]
                outcome = result.outcomes[index] = future.result()
                if outcome.status == "survived":
                    print(f"  survived: {result.mutants[index].describe()}", flush=True)
                if done % 25 == 0 or done == len(jobs):
                    left = (time.monotonic() - clock) / done * (len(jobs) - done)
                    print(f"  [{done}/{len(jobs)}] about {left / 60:.0f} min left", flush=True)
        except BaseException:
            processes.stop_all()  # the running tests end at once; each worker then restores its file
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return results


def _baseline(result: report.ModuleResult, box, processes: Processes, timeout: float | None) -> None:
    """Time the module's tests without a mutant. Tests that fail already (someone's work in
    progress in a shared tree) are left out, and said so: with -x they would kill every mutant."""
    outcome = box.run(result.tests, 600, processes)
    if outcome.status != "survived" and outcome.failed and all("::" in test for test in outcome.failed):
        result.left_out = list(outcome.failed)
        outcome = box.run(result.arguments(), 600, processes)
    if outcome.status != "survived":
        result.error = f"its tests fail without any mutant ({outcome.killed_by or outcome.status})"
        return
    result.baseline_seconds = outcome.seconds
    result.timeout_seconds = timeout or max(20.0, 4 * outcome.seconds)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _git(*command: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *command], capture_output=True, text=True, check=True).stdout


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
