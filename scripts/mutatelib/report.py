"""What a mutation run found: a table per module, every survivor, and the JSON report."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from scripts.mutatelib.mutants import Mutant
from scripts.mutatelib.sandbox import Outcome


@dataclasses.dataclass
class ModuleResult:
    path: str
    tests: list[str]
    mutants: list[Mutant]  # those selected to run
    baseline_seconds: float | None = None
    timeout_seconds: float | None = None
    error: str | None = None  # why the module could not be measured
    left_out: list[str] = dataclasses.field(default_factory=list)  # tests failing without a mutant
    outcomes: dict[int, Outcome] = dataclasses.field(default_factory=dict)  # by index into mutants

    def arguments(self) -> list[str]:
        """pytest's arguments for one mutant: stop at the first failure."""
        return ["-x", *(f"--deselect={test}" for test in self.left_out), *self.tests]

    def count(self, *statuses: str) -> int:
        return sum(1 for outcome in self.outcomes.values() if outcome.status in statuses)

    @property
    def score(self) -> float | None:
        return _score(self.count("killed", "timeout"), len(self.outcomes))

    def survivors(self) -> list[Mutant]:
        return [self.mutants[i] for i, outcome in sorted(self.outcomes.items()) if outcome.status == "survived"]


def total_score(results: list[ModuleResult]) -> float | None:
    return _score(sum(r.count("killed", "timeout") for r in results), sum(len(r.outcomes) for r in results))


def _score(killed: int, run: int) -> float | None:
    return 100 * killed / run if run else None


def table(results: list[ModuleResult]) -> str:
    width = max([len("total"), *(len(r.path) for r in results)])
    lines = [f"{'module':<{width}}  mutants  killed  timeout  survived   score"]
    for result in results:
        if result.error:
            lines.append(f"{result.path:<{width}}  not measured: {result.error}")
            continue
        lines.append(_row(result.path, width, len(result.outcomes), result.count("killed"), result.count("timeout"),
                          result.count("survived"), result.score))
    measured = [r for r in results if not r.error]
    if len(measured) > 1:
        lines.append(_row("total", width, sum(len(r.outcomes) for r in measured),
                          sum(r.count("killed") for r in measured), sum(r.count("timeout") for r in measured),
                          sum(r.count("survived") for r in measured), total_score(measured)))
    lines.append("(killed: a test failed; timeout: the tests hung and were stopped, which counts as killed)")
    for result in results:
        if result.left_out:
            lines.append(f"{result.path}: left out, failing without any mutant: {', '.join(result.left_out)}")
    return "\n".join(lines)


def _row(name: str, width: int, run: int, killed: int, timeout: int, survived: int, score: float | None) -> str:
    shown = "-" if score is None else f"{score:.1f}%"
    return f"{name:<{width}}  {run:>7}  {killed:>6}  {timeout:>7}  {survived:>8}  {shown:>6}"


def survivor_lines(results: list[ModuleResult]) -> list[str]:
    return [f"{m.describe()}  [{m.operator}]" for r in results for m in r.survivors()]


def write_json(path: Path, results: list[ModuleResult], header: dict) -> None:
    modules = []
    for result in results:
        modules.append({
            "path": result.path,
            "tests": result.tests,
            "error": result.error,
            "left_out": result.left_out,
            "baseline_seconds": _round(result.baseline_seconds),
            "timeout_seconds": _round(result.timeout_seconds),
            "mutants": len(result.outcomes),
            "killed": result.count("killed"),
            "timeouts": result.count("timeout"),
            "survived": result.count("survived"),
            "score": _round(result.score),
            "results": [
                {
                    "line": mutant.line,
                    "column": mutant.column,
                    "operator": mutant.operator,
                    "original": mutant.original,
                    "mutated": mutant.mutated,
                    "status": outcome.status,
                    "killed_by": outcome.killed_by,
                    "exit_code": outcome.exit_code,
                    "seconds": _round(outcome.seconds),
                }
                for index, outcome in sorted(result.outcomes.items())
                for mutant in [result.mutants[index]]
            ],
        })
    document = header | {"score": _round(total_score([r for r in results if not r.error])), "modules": modules}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
