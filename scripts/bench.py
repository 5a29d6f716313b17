"""Benchmark the chain against bare mitmdump, in one run, on this machine (README: "Performance").

    scripts/bench [--runs 3] [--duration 5] [--sustain 20] [--quick] [--soak N] [--json out.json]
    scripts/bench --workers 1,2 [--runs 5] [--duration 5] [--db URL] [--json out.json]

Starts the fake OpenAI (plain HTTP), bare mitmdump in reverse mode in front of it, and the
chain (mitmdump -s addons/pouch.py, SQLite store under a temporary POUCH_HOME, a real key
with a large budget), then measures all three with wrk, interleaved round by round so that
machine noise hits every configuration alike, and reports medians and chain/bare ratios.
The throughput target is judged on the sustained figure: bare mitmdump and then the chain
under load for ``--sustain`` seconds each, counted second by second, over the second half.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.fakes: the stream events of the in-process benchmark

from benchlib import inproc, load, report, store_check, workers_bench  # noqa: E402
from benchlib.servers import Servers, rss_mb  # noqa: E402
from pouch.services import keys as key_service  # noqa: E402

MODEL = inproc.MODEL
PATH = "/v1/chat/completions"
MAX_TOKENS = 64
STREAM_CHUNKS = 200
SHORT_STREAM_CHUNKS = 20  # the difference to STREAM_CHUNKS isolates the per-chunk cost
CONNECTIONS = 32
STALL_RATE = 20.0  # small requests per second, well below what any configuration serves at c=1
STALL_BIG_EVERY = 0.5  # seconds between big-prompt requests (one connection)
CLIENT_SECRET = "sk-bench-client"  # what direct and bare clients send; the fake takes anything
CONFIGS = ("direct", "bare", "chain")
# (name, request kind, connections, configurations); a streamed reply is also measured
# through mitmdump that streams SSE, since plain mitmdump buffers the whole response.
SCENARIOS = (
    ("json_c1", "json", 1, CONFIGS),
    ("json_c32", "json", CONNECTIONS, CONFIGS),
    ("stream_c1", "stream", 1, ("direct", "bare", "bare_sse", "chain")),
    ("short_stream_c1", "short_stream", 1, ("bare_sse", "chain")),
)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, help="runs per configuration; medians are reported (default 3)")
    parser.add_argument("--duration", type=float, help="seconds per wrk run (default 5)")
    parser.add_argument("--sustain", type=float, metavar="S",
                        help="seconds of the sustained c=32 run of bare mitmdump and of the chain (default 20; "
                             "--quick: 5); its second half is the throughput the target is judged on")
    parser.add_argument("--quick", action="store_true", help="smoke check: 1 run, 2 s per wrk run, 5 s sustained")
    parser.add_argument("--soak", type=int, default=0, metavar="N",
                        help="also send N more requests to the chain and report its RSS growth (e.g. 50000)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write every measurement to FILE")
    parser.add_argument("--workers", type=lambda text: [int(n) for n in text.split(",")], metavar="N,M",
                        help="instead: req/s of the chain as N, M, ... workers behind HAProxy (pouch run --workers), "
                             "beside bare mitmdump and the chain as one process (benchlib/workers_bench.py)")
    parser.add_argument("--db", metavar="URL", help="with --workers: the store (default SQLite in a temporary home)")
    args = parser.parse_args(argv)
    args.runs = args.runs or (1 if args.quick else 3)
    args.duration = args.duration or (2.0 if args.quick else 5.0)
    args.sustain = args.sustain or (5.0 if args.quick else 20.0)
    # A smoke check keeps to about a minute: the big-prompt test as long as one wrk run, not two.
    args.stall_seconds = args.duration if args.quick else 2 * args.duration
    if args.runs < 1 or args.duration <= 0 or args.soak < 0 or args.sustain < 4:
        parser.error("--runs and --duration must be positive, --sustain at least 4, --soak at least 0")
    return args


def progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def machine(command: str) -> dict:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or "unknown CPU")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    from mitmproxy.version import VERSION

    return {"command": command, "started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "cpus": len(os.sched_getaffinity(0)), "cpu_model": model,
            "kernel": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
            "mitmproxy": VERSION, "wrk": load.wrk_version(), "commit": commit.stdout.strip() or "unknown",
            "load_before": os.getloadavg()[0]}


def requests_for(secret: str) -> dict[str, load.Request]:
    """The small JSON request and the streamed ones, with ``secret`` as the key."""
    small = {"model": MODEL, "max_tokens": MAX_TOKENS, "temperature": 0.7, "messages": [
        {"role": "system", "content": "You are a concise assistant for an online bookshop."},
        {"role": "user", "content": "Suggest two classic novels for a long train journey, one sentence each."}]}
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {secret}"}

    def streamed(chunks: int) -> load.Request:
        body = {**small, "stream": True, "max_tokens": 16 * chunks}
        reply = inproc.words(random.Random(7), chunks)  # one word per content chunk
        return load.Request(PATH, json.dumps(body).encode(),
                            {**headers, "x-fake-chunks": str(chunks), "x-fake-reply": reply})

    return {"json": load.Request(PATH, json.dumps(small).encode(), headers),
            "stream": streamed(STREAM_CHUNKS), "short_stream": streamed(SHORT_STREAM_CHUNKS)}


class ChainTally:
    """What the chain answered, per the clients, to compare with its store at the end."""

    def __init__(self):
        self.completed = self.cut_off_at_most = self.non_2xx = self.socket_errors = 0

    def wrk(self, result: load.WrkResult, connections: int) -> None:
        self.completed += result.requests
        self.cut_off_at_most += connections
        self.non_2xx += result.non_2xx
        self.socket_errors += result.socket_errors

    def statuses(self, statuses: dict[int, int]) -> None:
        self.completed += sum(statuses.values())
        self.non_2xx += sum(n for status, n in statuses.items() if not 200 <= status < 300)


def preflight(urls: dict[str, str], requests: dict[str, dict[str, load.Request]], tally: ChainTally) -> dict:
    """Each request through each configuration: all must answer 200, each stream with the same
    number of SSE events everywhere, or the run stops before measuring refusals. Returns the
    SSE events per stream kind."""
    events: dict[str, dict[str, int]] = {}
    for config, url in urls.items():
        for kind, request in requests[config].items():
            client = load.Client(url, request)
            status, body = client.fetch()
            client.close()
            if config == "chain":
                tally.statuses({status: 1})
            if status != 200:
                raise SystemExit(f"bench: {config} answered {kind} with HTTP {status}: {body[:300]!r}")
            if kind != "json":
                events.setdefault(kind, {})[config] = sum(line.startswith(b"data:") for line in body.split(b"\n"))
    if any(len(set(by_config.values())) != 1 for by_config in events.values()):
        raise SystemExit(f"bench: the configurations sent different streams (SSE events: {events})")
    return {kind: by_config["direct"] for kind, by_config in events.items()}


def stall_test(urls, requests, big_body: bytes, seconds: float, tally: ChainTally) -> dict:
    """Small requests at a steady low rate, alone and while big prompts pass through."""
    out = {}
    for config in ("bare", "chain"):
        small = requests[config]["json"]
        alone = load.paced(urls[config], small, STALL_RATE, seconds)
        sender = load.Repeating(urls[config], load.Request(PATH, big_body, small.headers), STALL_BIG_EVERY)
        sender.start()
        with_big = load.paced(urls[config], small, STALL_RATE, seconds)
        sender.stop()
        big_latencies, big_statuses = sorted(sender.latencies_ms), sender.statuses
        if config == "chain":
            for statuses in (alone.statuses, with_big.statuses, big_statuses):
                tally.statuses(statuses)
        out[config] = {
            "alone": {"p50_ms": alone.percentile(50), "p99_ms": alone.percentile(99), "statuses": alone.statuses},
            "with_big": {"p50_ms": with_big.percentile(50), "p99_ms": with_big.percentile(99),
                         "statuses": with_big.statuses},
            "big": {"count": len(big_latencies), "statuses": big_statuses,
                    "p50_ms": big_latencies[len(big_latencies) // 2] if big_latencies else float("nan")},
        }
        progress(f"big prompts, {config}: small p99 {out[config]['alone']['p99_ms']:.2f} ms alone, "
                 f"{out[config]['with_big']['p99_ms']:.2f} ms with {len(big_latencies)} big requests")
    return out


def sustained(urls, scripts, seconds: float, chain, home: Path, tally: ChainTally) -> dict:
    """Bare mitmdump, then the chain, under load at c=32 for ``seconds`` each, counted second by
    second: does the throughput hold, and what grows in the chain meanwhile?"""
    out = {}
    wal = home / "pouch.db-wal"
    for config in ("bare", "chain"):
        before = {"rss_mb": rss_mb(chain.pid), "wal_mb": wal.stat().st_size / 1e6 if wal.exists() else 0.0,
                  "usage_rows": store_check.settle()[0]} if config == "chain" else {}
        result = load.wrk(urls[config] + PATH, scripts[("sustained", config)], connections=CONNECTIONS,
                          seconds=seconds)
        entry = {**result.as_dict(), "sustained_rps": result.sustained()}
        if config == "chain":
            tally.wrk(result, CONNECTIONS)
            rows, open_ = store_check.settle()
            entry["store"] = {"before": before, "after": {
                "rss_mb": rss_mb(chain.pid), "wal_mb": wal.stat().st_size / 1e6 if wal.exists() else 0.0,
                "usage_rows": rows, "open_reservations": open_}}
        out[config] = entry
        progress(f"sustained {config:<6} {result.rps:7.0f} req/s over {result.seconds:.0f} s, "
                 f"{entry['sustained_rps']:7.0f} req/s over its second half")
    out["ratio"] = out["chain"]["sustained_rps"] / out["bare"]["sustained_rps"]
    return out


def soak(chain, script: Path, n: int, rps: float, tally: ChainTally) -> dict:
    """RSS of the chain before and after about ``n`` more requests (wrk runs of at most 30 s;
    wrk cannot stop at a request count), sampled after each run."""
    store_check.settle()
    before = rss_mb(chain.pid)
    progress(f"soak: {n} requests to the chain (about {n / rps:.0f} s), RSS now {before:.1f} MB")
    sent, trend = 0, []
    while sent < n:
        seconds = min(30, max(1, (n - sent) / rps))
        result = load.wrk(chain.url + PATH, script, connections=CONNECTIONS, seconds=seconds)
        tally.wrk(result, CONNECTIONS)
        sent, rps = sent + result.requests, result.rps or rps
        trend.append({"requests": sent, "rss_mb": rss_mb(chain.pid)})
        progress(f"soak: {sent} requests, RSS {trend[-1]['rss_mb']:.1f} MB")
    store_check.settle()
    after = rss_mb(chain.pid)
    return {"requests": sent, "rss_before_mb": before, "rss_after_mb": after, "growth_mb": after - before,
            "trend": trend}


def measure(args, meta: dict, workdir: Path, servers: Servers) -> dict:
    progress("in-process: stream tracker, token counting, store")
    inproc.warm_tokenizer()
    big_body = inproc.big_chat_body()
    tokens, count_ms = inproc.count_prompt_ms(big_body)
    big_bytes = json.dumps(big_body).encode()
    ip = {"tracker_us_per_chunk_injected": inproc.tracker_us_per_chunk(True),
          "tracker_us_per_chunk_client_usage": inproc.tracker_us_per_chunk(False),
          "big_prompt_tokens": tokens, "big_prompt_bytes": len(big_bytes), "count_prompt_ms": count_ms,
          "store": inproc.store_us()}

    home = workdir / "pouch-home"
    db_url = f"sqlite:///{home / 'pouch.db'}"
    store_check.open_gateway_store(db_url)
    _, secret = key_service.create("bench", budget="1000000")
    fake = servers.fake_openai()
    bare = servers.bare_mitmdump(fake.url)
    bare_sse = servers.bare_mitmdump(fake.url, stream_sse=True)
    chain = servers.chain(fake.url, db_url, home)
    urls = {"direct": fake.url, "bare": bare.url, "bare_sse": bare_sse.url, "chain": chain.url}
    requests = {config: requests_for(secret if config == "chain" else CLIENT_SECRET) for config in urls}
    scripts = {(kind, config): load.write_script(workdir / f"{kind}-{config}.lua", request)
               for config in urls for kind, request in requests[config].items()}
    for config in ("bare", "chain"):
        scripts[("sustained", config)] = load.write_script(workdir / f"sustained-{config}.lua",
                                                           requests[config]["json"], timeline=True)
    tally = ChainTally()
    events = preflight(urls, requests, tally)

    progress("warming up")
    for config, url in urls.items():
        for kind, connections in (("json", CONNECTIONS), ("json", 1), ("stream", 1)):
            result = load.wrk(url + PATH, scripts[(kind, config)], connections=connections, seconds=1)
            if config == "chain":
                tally.wrk(result, connections)
    rss = {"warm": rss_mb(chain.pid)}

    runs = []
    total = args.runs * sum(len(configs) for *_, configs in SCENARIOS)
    for round_ in range(1, args.runs + 1):
        for scenario, kind, connections, configs in SCENARIOS:
            for config in configs:
                result = load.wrk(urls[config] + PATH, scripts[(kind, config)], connections=connections,
                                  seconds=args.duration)
                if config == "chain":
                    tally.wrk(result, connections)
                runs.append({"round": round_, "scenario": scenario, "config": config, **result.as_dict()})
                progress(f"[{len(runs)}/{total}] {scenario:<15} {config:<8} {result.rps:7.0f} req/s  "
                         f"p50 {result.p50_ms:7.2f} ms  p99 {result.p99_ms:7.2f} ms  non-2xx {result.non_2xx}")
    rss["after_runs"] = rss_mb(chain.pid)

    progress(f"sustained load: {args.sustain:g} s each, bare mitmdump then the chain")
    sustain = sustained(urls, scripts, args.sustain, chain, home, tally)

    progress("big prompts in flight")
    stall = stall_test(urls, requests, big_bytes, args.stall_seconds, tally)

    medians = report.medians(runs)
    soaked = None
    if args.soak:
        soaked = soak(chain, scripts[("json", "chain")], args.soak, medians["json_c32"]["chain"]["rps"], tally)
    progress("checking the chain's store")
    sanity = store_check.verify(tally.completed, tally.cut_off_at_most, tally.non_2xx, tally.socket_errors)
    others = sum(r["non_2xx"] + r["socket_errors"] for r in runs if r["config"] != "chain")
    sanity["lines"].append(f"direct and bare mitmdump: {others} non-2xx responses or socket errors")
    sanity["ok"] = sanity["ok"] and others == 0
    rss["end"] = rss_mb(chain.pid)
    meta["load_after"] = os.getloadavg()[0]
    derived = report.derive(medians, events, runs, sustain)
    return {
        "meta": meta,
        "settings": {"runs": args.runs, "duration": args.duration, "connections": CONNECTIONS, "model": MODEL,
                     "max_tokens": MAX_TOKENS, "json_body_bytes": len(requests["chain"]["json"].body),
                     "stream_chunks": STREAM_CHUNKS, "short_stream_chunks": SHORT_STREAM_CHUNKS,
                     "stall_rate": STALL_RATE, "stall_seconds": args.stall_seconds,
                     "stall_big_every": STALL_BIG_EVERY, "soak": args.soak, "sustain": args.sustain},
        "runs": runs, "medians": medians, "derived": derived, "inproc": ip, "stall": stall, "sustained": sustain,
        "rss_mb": rss, "soak": soaked, "sanity": sanity, "targets": report.targets(derived, soaked),
    }


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if not shutil.which("wrk"):
        progress("wrk is not installed (scripts/bench installs it with apt-get; or: apt-get install wrk)")
        return 1
    meta = machine(shlex.join(["scripts/bench", *argv]))
    workdir = Path(tempfile.mkdtemp(prefix="pouch-bench-"))
    servers = Servers(workdir)
    # Both through the finally below; SIGINT explicitly, as a shell may start us with it ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    failed = True
    try:
        if args.workers:
            result = workers_bench.measure(args, meta, workdir, servers, requests_for, key_service.create, PATH,
                                           CONNECTIONS, progress)
        else:
            result = measure(args, meta, workdir, servers)
        failed = False
    except KeyboardInterrupt:
        progress("interrupted")
        return 130
    finally:
        servers.stop_all()
        if failed:
            progress(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(workers_bench.render(result) if args.workers else report.render(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        progress(f"wrote {args.json}")
    if args.workers:
        return 0 if result["errors"] == 0 and result["store"]["open_reservations"] == 0 else 2
    return 0 if result["sanity"]["ok"] else 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
