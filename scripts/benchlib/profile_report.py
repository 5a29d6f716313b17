"""Where the chain's time goes, from py-spy's raw output: samples by group, by function, by thread.

py-spy ``--format raw --threads`` writes one line per distinct stack: ``thread (TID): NAME;
outermost frame;...;innermost frame COUNT``, each frame ``function (file:line)``. A sample is
put in one group by what its stack holds (the first rule that matches), so the groups add up to
100% and answer "what would go away if this part cost nothing".
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

# In the order ``group`` tries them. "mitmproxy hooks": hook dispatch and mitmproxy's own addons
# (bare mitmdump pays these too, for fewer addons); "pouch links": a pouch frame on the stack.
GROUPS = (
    "store thread",
    "tokenizer",
    "store on the event loop",
    "pouch links",
    "mitmproxy hooks",
    "event loop / mitmproxy",
    "other threads",
    "no Python frame",
    "other",
)
_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^():]*)(?::(?P<line>\d+))?\)$")
_LOOP_FILES = ("mitmproxy/", "asyncio/", "selectors.py", "h11/", "h2/", "wsproto/", "ssl.py", "socket.py")


@dataclass(frozen=True)
class Stack:
    thread: str
    frames: tuple[str, ...]  # "function (file)", outermost first, line numbers dropped
    files: tuple[str, ...]
    count: int


def parse(path: Path) -> list[Stack]:
    stacks = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        stack, _, count = line.rpartition(" ")
        parts = stack.split(";")
        thread = parts[0].split(": ", 1)[-1] if parts[0].startswith("thread (") else ""
        frames, files = [], []
        for part in parts[1:] if thread or parts[0].startswith("thread (") else parts:
            match = _FRAME.match(part)
            function, file = (match["function"], match["file"]) if match else (part, "")
            frames.append(f"{function} ({file})")
            files.append(file)
        stacks.append(Stack(thread, tuple(frames), tuple(files), int(count)))
    return stacks


def group(stack: Stack) -> str:
    files = stack.files
    if stack.thread.startswith("pouch-store"):
        return "store thread"
    if any(f.startswith("pouch/tokens/") or f.startswith("tiktoken") for f in files):
        return "tokenizer"
    if stack.thread and stack.thread != "MainThread":
        return "other threads"
    if not files:
        return "no Python frame"
    if any(f.startswith("pouch/store/") or f in ("peewee.py", "playhouse/db_url.py") or f.startswith("sqlite3/")
           for f in files):
        return "store on the event loop"
    if any(f.startswith("addons/") or f.startswith("pouch/") for f in files):
        return "pouch links"
    if any(f == "mitmproxy/addonmanager.py" for f in files):
        return "mitmproxy hooks"
    if any(f.startswith(_LOOP_FILES) for f in files):
        return "event loop / mitmproxy"
    return "other"


def summarise(stacks: list[Stack], top: int = 25) -> dict:
    total = sum(s.count for s in stacks) or 1
    by_group: Counter[str] = Counter()
    by_thread: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    pouch_total: Counter[str] = Counter()
    groups_of: dict[str, Counter[str]] = {}
    thread_groups: dict[str, Counter[str]] = {}
    for stack in stacks:
        g = group(stack)
        by_group[g] += stack.count
        by_thread[stack.thread or "?"] += stack.count
        thread_groups.setdefault(stack.thread or "?", Counter())[g] += stack.count
        if stack.frames:
            self_time[stack.frames[-1]] += stack.count
            groups_of.setdefault(stack.frames[-1], Counter())[g] += stack.count
        for frame, file in set(zip(stack.frames, stack.files)):
            if file.startswith(("addons/", "pouch/")):
                pouch_total[frame] += stack.count
    return {
        "samples": total,
        "groups": [(g, by_group[g]) for g in GROUPS if by_group[g]],
        "threads": by_thread.most_common(),
        "thread_groups": thread_groups,
        "self": [(frame, groups_of[frame].most_common(1)[0][0], n) for frame, n in self_time.most_common(top)],
        "pouch_total": pouch_total.most_common(top),
    }


def per_request_us(summary: dict, ms_total: float, ms_by_thread: dict[str, float] | None = None) -> dict[str, float]:
    """Microseconds of CPU per request in each group: each thread's CPU per request (from /proc)
    spread over the groups of its samples. Per thread, because py-spy counts a thread waiting for
    the interpreter lock as active; threads without a figure of their own share what is left."""
    matched = {t: ms for t, ms in (ms_by_thread or {}).items() if t in summary["thread_groups"]}
    rest_ms = max(0.0, ms_total - sum(matched.values()))
    rest_samples = sum(sum(c.values()) for t, c in summary["thread_groups"].items() if t not in matched)
    out: Counter[str] = Counter()
    for thread, groups in summary["thread_groups"].items():
        samples = sum(groups.values())
        for g, n in groups.items():
            if thread in matched:
                out[g] += matched[thread] * n / samples * 1000
            elif rest_samples:
                out[g] += rest_ms * n / rest_samples * 1000
    return dict(out)


def _pct(n: int, total: int) -> str:
    return f"{100 * n / total:5.1f}%"


def render(title: str, summary: dict) -> str:
    """A markdown section: groups, threads, top functions by self time, pouch's functions by total."""
    total = summary["samples"]
    out = [f"### {title}", "", f"{total} samples.", "", "| group | samples | share |", "|---|---:|---:|"]
    out += [f"| {g} | {n} | {_pct(n, total)} |" for g, n in summary["groups"]]
    out += ["", "| thread | samples | share |", "|---|---:|---:|"]
    out += [f"| {t} | {n} | {_pct(n, total)} |" for t, n in summary["threads"]]
    out += ["", "Top functions by self time (the group most of their samples fall in):", "",
            "| function (file) | group | self |", "|---|---|---:|"]
    out += [f"| `{frame}` | {g} | {_pct(n, total)} |" for frame, g, n in summary["self"]]
    out += ["", "pouch's own functions by total time (inclusive: what they call, mitmproxy and the store included):",
            "", "| function (file) | total |", "|---|---:|"]
    out += [f"| `{frame}` | {_pct(n, total)} |" for frame, n in summary["pouch_total"]]
    return "\n".join(out)
