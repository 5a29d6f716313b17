"""Copies of the checkout to mutate, and the test runs against them.

Mutants are never written into the checkout itself (others work in it): each worker gets
its own copy of the tracked and untracked-but-not-ignored files as they are when the run
starts (or of a git revision), with ``.venv`` linked back. A worker writes one mutant into
its copy, runs the module's tests there, and puts the original back in a ``finally``; on
SIGINT/SIGTERM the test processes are killed, the originals restored and the copies deleted.
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

# pytest's short summary: "FAILED tests/test_x.py::test_y[param] - AssertionError ...".
_FAILED = re.compile(r"^(?:FAILED|ERROR) (.+?)(?: - .*)?$", re.MULTILINE)
# Left out of the tests' environment: the PostgreSQL tests would share one database
# between the parallel workers (and are slow); each test isolates POUCH_HOME itself.
_DROPPED_ENV = ("POUCH_TEST_PG", "POUCH_DB", "POUCH_HOME")


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    status: str  # "killed", "timeout" (counts as killed), "survived"
    seconds: float
    exit_code: int | None
    killed_by: str | None  # the first failing test, when pytest named one
    failed: tuple[str, ...] = ()  # every failing test pytest named


class Sandbox:
    """One copy of the checkout, at ``root``."""

    def __init__(self, root: Path):
        self.root = root
        self._lock = threading.Lock()

    def check_imports(self) -> None:
        """Fail loudly unless the tests will import pouch and addons from this copy."""
        code = "import addons, pouch; print(pouch.__file__); print(addons.__file__)"
        result = subprocess.run([sys.executable, "-c", code], cwd=self.root, env=_environment(),
                                capture_output=True, text=True, check=True)
        for path in result.stdout.split():
            if not Path(path).resolve().is_relative_to(self.root.resolve()):
                raise RuntimeError(f"the tests would import {path}, not the copy in {self.root}")

    def run(self, arguments: list[str], timeout: float, processes: Processes, mutant_path: str | None = None,
            mutant_source: str | None = None) -> Outcome:
        """Run pytest with ``arguments`` here, with ``mutant_source`` written over ``mutant_path`` meanwhile."""
        with self._lock:  # one mutant at a time in a copy
            target = self.root / mutant_path if mutant_path else None
            original = target.read_bytes() if target else None
            try:
                if target:
                    target.write_text(mutant_source, encoding="utf-8")
                return _pytest(self.root, arguments, timeout, processes)
            finally:
                if target:
                    target.write_bytes(original)


class Processes:
    """The test processes running now, so an interrupted run can end them (and only them)."""

    def __init__(self):
        self._running: set[subprocess.Popen] = set()
        self._lock = threading.Lock()
        self.stopping = False

    def start(self, command: list[str], cwd: Path) -> subprocess.Popen:
        with self._lock:
            if self.stopping:
                raise KeyboardInterrupt
            process = subprocess.Popen(command, cwd=cwd, env=_environment(), stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, text=True, start_new_session=True)
            self._running.add(process)
            return process

    def finished(self, process: subprocess.Popen) -> None:
        with self._lock:
            self._running.discard(process)

    def stop_all(self) -> None:
        with self._lock:
            self.stopping = True
            for process in self._running:
                _kill_group(process)


def _pytest(root: Path, arguments: list[str], timeout: float, processes: Processes) -> Outcome:
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfE", *arguments]
    started = time.monotonic()
    process = processes.start(command, root)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(process)  # a hung mutant: it would have hung the tests too
        process.communicate()
        return Outcome("timeout", time.monotonic() - started, None, None)
    except BaseException:  # interrupted while waiting: the tests must not outlive the run
        _kill_group(process)
        raise
    finally:
        processes.finished(process)
    seconds = time.monotonic() - started
    if process.returncode == 0:
        return Outcome("survived", seconds, 0, None)
    failed = tuple(_FAILED.findall(output))
    if failed:
        killed_by = failed[0]
    elif process.returncode < 0:
        killed_by = f"signal {-process.returncode}"
    else:
        tail = [line for line in output.splitlines() if line.strip()][-1:]
        killed_by = tail[0][:200] if tail else None
    return Outcome("killed", seconds, process.returncode, killed_by, failed)


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)  # its own session: the test run and its children
    except ProcessLookupError:
        pass


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _DROPPED_ENV}
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # a same-size mutant in the same second must not reuse bytecode
    return env


def checkout_files(checkout: Path) -> list[str]:
    """Tracked files and untracked ones git does not ignore, as they are in the work tree now."""
    listing = _git(checkout, "ls-files", "-z", "--cached", "--others", "--exclude-standard").decode()
    return sorted({name for name in listing.split("\0") if name and (checkout / name).is_file()})


def make_sandboxes(checkout: Path, count: int, rev: str | None = None
                   ) -> tuple[tempfile.TemporaryDirectory, list[Sandbox]]:
    """``count`` copies of the work tree as it is now, or of git revision ``rev``."""
    temporary = tempfile.TemporaryDirectory(prefix="pouch-mutate-")
    archive = _git(checkout, "archive", "--format=tar", rev) if rev else None
    files = None if rev else checkout_files(checkout)
    boxes = []
    for index in range(count):
        root = Path(temporary.name) / f"worker{index}" / "pouch"
        root.mkdir(parents=True)
        if archive is not None:
            with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
                tar.extractall(root, filter="data")
        else:
            for name in files:
                (root / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(checkout / name, root / name)  # fresh mtimes: no stale bytecode can match
        (root / ".venv").symlink_to(checkout / ".venv")
        boxes.append(Sandbox(root))
    return temporary, boxes


def _git(checkout: Path, *command: str) -> bytes:
    return subprocess.run(["git", "-C", str(checkout), *command], capture_output=True, check=True).stdout
