"""Profile the chain under sustained load with py-spy, the same way every time (README: "Performance").

    scripts/profile [--duration 15] [--connections 32] [--rate 200] [--out DIR] [--no-bare]

Starts the fake OpenAI and the chain as ``scripts/bench`` does, warms up, then drives the
chain with wrk at ``--connections`` for the whole profile and records, one after the other:
per-thread CPU per request (from /proc, over the CPU profile's window), a py-spy CPU profile of
every active thread, ``py-spy dump``, and a py-spy profile of whichever thread holds the GIL
(what the event loop waits for). Then bare mitmdump's CPU per request under the same load, for
the difference, with a CPU profile of it too. Writes into ``--out``: ``cpu.txt``, ``gil.txt`` and
``bare-cpu.txt`` (py-spy raw stacks: feed them to flamegraph.pl or speedscope), ``dump.txt``, and
``profile.md`` (the tables, also printed).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import CLIENT_SECRET, PATH, requests_for  # noqa: E402
from benchlib import load, profile_report, store_check  # noqa: E402
from benchlib.servers import Servers  # noqa: E402
from pouch.services import keys as key_service  # noqa: E402
from pouch.store.database import UsageRow  # noqa: E402

PY_SPY = str(Path(sys.executable).with_name("py-spy"))
WARM_UP = 3  # seconds of load before anything is measured


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=15, help="seconds of each py-spy profile (default 15)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second (default 200)")
    parser.add_argument("--out", type=Path, help="directory for the results (default: a new one under /tmp)")
    parser.add_argument("--no-bare", action="store_true", help="skip bare mitmdump's CPU per request and profile")
    return parser.parse_args(argv)


def progress(message: str) -> None:
    print(f"profile: {message}", file=sys.stderr, flush=True)


def thread_cpu(pid: int) -> dict[int, tuple[str, float]]:
    """CPU seconds (user + system) of each thread of ``pid``, by thread id."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue  # the thread ended
        fields = stat.rsplit(")", 1)[1].split()
        out[int(task.name)] = ((task / "comm").read_text().strip(), (int(fields[11]) + int(fields[12])) / tick)
    return out


def thread_names(pid: int) -> dict[int, str]:
    """Python thread names by thread id, from ``py-spy dump`` (the OS names are all 'mitmdump');
    a dump of a running process may fail now and then: a few tries."""
    names: dict[int, str] = {}
    for _ in range(5):
        done = subprocess.run([PY_SPY, "dump", "--nonblocking", "-p", str(pid)], capture_output=True, text=True)
        for line in done.stdout.splitlines():
            if line.startswith("Thread ") and line.endswith('"'):  # Thread 123 (active+gil): "MainThread"
                names[int(line.split()[1])] = line.rsplit('"', 2)[-2]
        if names:
            break
        time.sleep(0.2)
    return names


class Load(threading.Thread):
    """wrk against ``url`` for ``seconds`` in the background."""

    def __init__(self, url: str, script: Path, connections: int, seconds: float):
        super().__init__(daemon=True)
        self.args = (url, script, connections, seconds)
        self.result: load.WrkResult | None = None
        self.failure: BaseException | None = None

    def run(self) -> None:
        url, script, connections, seconds = self.args
        try:
            self.result = load.wrk(url, script, connections=connections, seconds=seconds)
        except BaseException as e:  # reported by the caller
            self.failure = e

    def finish(self) -> load.WrkResult:
        self.join()
        if self.failure or self.result is None:
            raise RuntimeError(f"wrk failed: {self.failure!r}")
        return self.result


def cpu_per_request(pid: int, seconds: float, count, names: dict[int, str] | None = None) -> dict:
    """Each thread's CPU milliseconds per request over ``seconds`` of the load already running;
    ``count()`` says how many requests have completed so far."""
    before, done_before, began = thread_cpu(pid), count(), time.monotonic()
    time.sleep(seconds)
    after, done_after, elapsed = thread_cpu(pid), count(), time.monotonic() - began
    requests = max(1, done_after - done_before)
    names = names or {}
    threads = {tid: {"name": names.get(tid, name), "cpu_s": cpu - before.get(tid, (name, 0.0))[1]}
               for tid, (name, cpu) in after.items()}
    busy = {tid: t for tid, t in threads.items() if t["cpu_s"] > 0.005 * elapsed}
    return {"requests": requests, "seconds": elapsed, "rps": requests / elapsed,
            "ms_per_request": sum(t["cpu_s"] for t in threads.values()) * 1000 / requests,
            "threads": {t["name"] if t["name"] != "mitmdump" else f"thread {tid}":
                        {"ms_per_request": t["cpu_s"] * 1000 / requests, "cpu_share": t["cpu_s"] / elapsed}
                        for tid, t in busy.items()}}


def record(pid: int, out: Path, seconds: int, rate: int, gil: bool) -> None:
    argv = [PY_SPY, "record", "-p", str(pid), "--nonblocking", "--threads", "-d", str(seconds), "-r", str(rate),
            "--format", "raw", "-o", str(out)] + (["--gil"] if gil else [])
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode or not out.exists():
        raise RuntimeError(f"py-spy failed ({done.returncode}): {done.stderr.strip()}")


def render(meta: dict, chain_cpu: dict, bare_cpu: dict | None, wrk: load.WrkResult, cpu: dict, gil: dict) -> str:
    out = [f"## Profile of the chain under sustained load, {meta['started']}", "",
           f"command: `{meta['command']}` (pouch {meta['commit']}; load average {meta['load']:.2f} before)", "",
           f"load: wrk -t1 -c{meta['connections']} for the whole run, {WARM_UP} s warm-up first; "
           f"the chain served {wrk.rps:.0f} req/s over {wrk.seconds:.0f} s (p50 {wrk.p50_ms:.1f} ms)", "",
           "CPU per request, from /proc over the CPU profile's window:", "",
           "| process / thread | ms CPU per request | share of a core |", "|---|---:|---:|"]
    out.append(f"| chain, all threads | {chain_cpu['ms_per_request']:.2f} | |")
    for name, t in sorted(chain_cpu["threads"].items(), key=lambda kv: -kv[1]["ms_per_request"]):
        out.append(f"| chain: {name} | {t['ms_per_request']:.2f} | {t['cpu_share']:.0%} |")
    if bare_cpu:
        out.append(f"| bare mitmdump, all threads ({bare_cpu['rps']:.0f} req/s) | {bare_cpu['ms_per_request']:.2f} | |")
        out.append(f"| **pouch's own (chain - bare)** | **{chain_cpu['ms_per_request'] - bare_cpu['ms_per_request']:.2f}**"
                   " | |")
    if bare_cpu:
        out += ["", "CPU per request by group: each thread's CPU per request spread over the groups of its samples in "
                "the CPU profile (bare mitmdump profiled the same way):", "",
                "| group | chain us/request | bare us/request | chain - bare |", "|---|---:|---:|---:|"]
        chain_us = profile_report.per_request_us(cpu, chain_cpu["ms_per_request"],
                                                 {name: t["ms_per_request"] for name, t in chain_cpu["threads"].items()})
        bare_us = profile_report.per_request_us(bare_cpu["profile"], bare_cpu["ms_per_request"])
        for group in profile_report.GROUPS:
            c, b = chain_us.get(group, 0.0), bare_us.get(group, 0.0)
            if c or b:
                out.append(f"| {group} | {c:.0f} | {b:.0f} | {c - b:+.0f} |")
    out += ["", profile_report.render("CPU: every thread running Python or native code (py-spy default)", cpu), "",
            profile_report.render("GIL: the thread holding the interpreter lock (py-spy --gil)", gil)]
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    for tool, hint in (("wrk", "apt-get install wrk"), (PY_SPY, ".venv/bin/pip install py-spy")):
        if not shutil.which(tool):
            progress(f"{tool} is missing ({hint}; scripts/profile installs both)")
            return 1
    out = args.out or Path(tempfile.mkdtemp(prefix="pouch-profile-"))
    out.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    meta = {"command": shlex.join(["scripts/profile", *argv]), "commit": commit.stdout.strip() or "unknown",
            "started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "load": os.getloadavg()[0],
            "connections": args.connections}
    workdir = Path(tempfile.mkdtemp(prefix="pouch-profile-run-"))
    servers = Servers(workdir)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        home = workdir / "pouch-home"
        db_url = f"sqlite:///{home / 'pouch.db'}"
        store_check.open_gateway_store(db_url)
        _, secret = key_service.create("profile", budget="1000000")
        fake = servers.fake_openai()
        chain = servers.chain(fake.url, db_url, home)
        script = load.write_script(workdir / "chain.lua", requests_for(secret)["json"])
        progress(f"chain pid {chain.pid}; warming up, then {2 * args.duration + 4} s of load at c={args.connections}")
        load.wrk(chain.url + PATH, script, connections=args.connections, seconds=WARM_UP)
        running = Load(chain.url + PATH, script, args.connections, 2 * args.duration + 4)
        running.start()
        time.sleep(1)
        names = thread_names(chain.pid)
        cpu_window = threading.Thread(target=lambda: meta.update(
            chain_cpu=cpu_per_request(chain.pid, args.duration, lambda: UsageRow.select().count(), names)))
        cpu_window.start()
        progress(f"py-spy: CPU profile, {args.duration} s")
        record(chain.pid, out / "cpu.txt", args.duration, args.rate, gil=False)
        cpu_window.join()
        (out / "dump.txt").write_text(subprocess.run([PY_SPY, "dump", "--nonblocking", "-p", str(chain.pid)],
                                                     capture_output=True, text=True).stdout)
        progress(f"py-spy: GIL profile, {args.duration} s")
        record(chain.pid, out / "gil.txt", args.duration, args.rate, gil=True)
        wrk = running.finish()
        bare_cpu = None
        if not args.no_bare:
            progress(f"bare mitmdump: CPU per request over {args.duration} s")
            bare = servers.bare_mitmdump(fake.url)
            bare_script = load.write_script(workdir / "bare.lua", requests_for(CLIENT_SECRET)["json"])
            load.wrk(bare.url + PATH, bare_script, connections=args.connections, seconds=WARM_UP)
            # bare mitmdump keeps no count: wrk's own, from a run the window sits inside
            bare_load = Load(bare.url + PATH, bare_script, args.connections, args.duration + 2)
            bare_load.start()
            time.sleep(1)
            spy = threading.Thread(target=record,
                                   args=(bare.pid, out / "bare-cpu.txt", args.duration, args.rate, False))
            before, began = thread_cpu(bare.pid), time.monotonic()
            spy.start()
            time.sleep(args.duration)
            after, elapsed = thread_cpu(bare.pid), time.monotonic() - began
            spy.join()
            result = bare_load.finish()
            requests = result.rps * elapsed
            cpu_s = sum(cpu for _, cpu in after.values()) - sum(cpu for _, cpu in before.values())
            bare_cpu = {"rps": result.rps, "ms_per_request": cpu_s * 1000 / requests,
                        "profile": profile_report.summarise(profile_report.parse(out / "bare-cpu.txt"))}
    finally:
        servers.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    cpu = profile_report.summarise(profile_report.parse(out / "cpu.txt"))
    gil = profile_report.summarise(profile_report.parse(out / "gil.txt"))
    text = render(meta, meta["chain_cpu"], bare_cpu, wrk, cpu, gil)
    (out / "profile.md").write_text(text)
    print(text)
    progress(f"wrote {out}/profile.md, cpu.txt, gil.txt, bare-cpu.txt (py-spy raw), dump.txt")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
