"""``scripts/bench --workers 1,2``: requests/s of the chain as N workers behind HAProxy, side by
side with bare mitmdump and the chain as one plain process, in one run.

Every configuration gets the small JSON request at c=32 for ``--duration`` seconds, round by
round (the configurations interleaved, so the machine's noise hits all alike); medians over
``--runs`` rounds. One store (SQLite unless ``--db``) and one key for every chain configuration.
"""

from __future__ import annotations

import os
from pathlib import Path

from benchlib import load, report, store_check
from pouch.cli import haproxy

TARGET_RATIO = 1.6  # 2 workers / 1 worker (issue 16), on this 2-core machine


def measure(args, meta: dict, workdir: Path, servers, requests_for, key_create, path: str,
            connections: int, progress) -> dict:
    if haproxy.binary() is None:
        raise SystemExit(f"bench: {haproxy.MISSING}")
    home = workdir / "pouch-home"
    db_url = args.db or f"sqlite:///{home / 'pouch.db'}"
    store_check.open_gateway_store(db_url)
    _, secret = key_create(f"bench-{os.getpid()}", budget="1000000")  # a --db store may hold an earlier run's
    fake = servers.fake_openai()
    urls = {"bare": servers.bare_mitmdump(fake.url).url, "chain": servers.chain(fake.url, db_url, home).url}
    for count in args.workers:
        progress(f"starting {count} worker(s) behind HAProxy")
        urls[f"{count}w"] = servers.workers(count, fake.url, db_url, home).url
    requests = {config: requests_for(secret if config != "bare" else "sk-bench-client")["json"] for config in urls}
    scripts = {config: load.write_script(workdir / f"workers-{config}.lua", request)
               for config, request in requests.items()}
    for config, url in urls.items():  # every configuration answers 200 before anything is measured
        client = load.Client(url, requests[config])
        status, body = client.fetch()
        client.close()
        if status != 200:
            raise SystemExit(f"bench: {config} answered HTTP {status}: {body[:300]!r}")
    progress("warming up")
    for config, url in urls.items():
        load.wrk(url + path, scripts[config], connections=connections, seconds=2)
    runs = []
    for round_ in range(1, args.runs + 1):
        for config, url in urls.items():
            result = load.wrk(url + path, scripts[config], connections=connections, seconds=args.duration)
            runs.append({"round": round_, "scenario": "json_c32", "config": config, **result.as_dict()})
            progress(f"[round {round_}/{args.runs}] {config:<6} {result.rps:7.0f} req/s  p50 {result.p50_ms:6.2f} ms  "
                     f"non-2xx {result.non_2xx}  socket errors {result.socket_errors}")
    rows, open_ = store_check.settle()
    meta["load_after"] = os.getloadavg()[0]
    medians = report.medians(runs)["json_c32"]
    per_round = {config: [r["rps"] for r in runs if r["config"] == config] for config in urls}
    return {"meta": meta, "db": "PostgreSQL" if db_url.startswith("postgres") else "SQLite",
            "settings": {"runs": args.runs, "duration": args.duration, "connections": connections,
                         "workers": args.workers},
            "runs": runs, "medians": medians, "per_round": per_round,
            "store": {"usage_rows": rows, "open_reservations": open_},
            "errors": sum(r["non_2xx"] + r["socket_errors"] for r in runs)}


def render(result: dict) -> str:
    meta, med, s = result["meta"], result["medians"], result["settings"]
    one = med.get("1w", {}).get("rps")
    labels = {"bare": "bare mitmdump", "chain": "pouch, one process (no HAProxy)"}
    out = [f"pouch benchmark: workers behind HAProxy, {meta['started']}",
           f"command: {meta['command']}",
           f"machine: {meta['cpus']} CPUs ({meta['cpu_model']}), {meta['kernel']}; mitmproxy {meta['mitmproxy']}, "
           f"wrk {meta['wrk']}; pouch {meta['commit']}; load average {meta['load_before']:.2f} before, "
           f"{meta['load_after']:.2f} after",
           f"method: POST /v1/chat/completions (small JSON), wrk -t1 -c{s['connections']}, {s['duration']:g} s per "
           f"run, medians of {s['runs']} interleaved rounds after warm-up; chain on {result['db']}, one real key", ""]
    rows = []
    for config, row in med.items():
        label = labels.get(config) or f"pouch, {config[:-1]} worker{'s' if config != '1w' else ''} + HAProxy"
        rounds = " ".join(f"{r:.0f}" for r in result["per_round"][config])
        rows.append([label, f"{row['rps']:.0f}", f"{row['p50_ms']:.2f}", f"{row['p99_ms']:.2f}",
                     f"{row['rps'] / med['bare']['rps']:.2f}", f"{row['rps'] / one:.2f}" if one else "-", rounds])
    out.append(report._table(["", "req/s", "p50 ms", "p99 ms", "x bare", "x 1 worker", "rounds (req/s)"], rows))
    if one and "2w" in med:
        ratio = med["2w"]["rps"] / one
        per_round = [b / a for a, b in zip(result["per_round"]["1w"], result["per_round"]["2w"])]
        out += ["", f"2 workers / 1 worker: {ratio:.2f} (rounds {min(per_round):.2f}-{max(per_round):.2f}); "
                    f"target >= {TARGET_RATIO}: {'met' if ratio >= TARGET_RATIO else 'MISSED'}"]
    out += [f"store after the runs: {result['store']['usage_rows']} usage rows, "
            f"{result['store']['open_reservations']} reservations open; non-2xx or socket errors: {result['errors']}"]
    return "\n".join(out)
