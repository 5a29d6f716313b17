"""Load generators: wrk for throughput and latency, small Python clients for paced traffic.

wrk runs a generated Lua script that sets the POST body and headers and, when the run is
over, prints one machine-readable line (requests, non-2xx count, socket errors, latency
percentiles), so nothing is scraped from wrk's human output.
"""

from __future__ import annotations

import http.client
import json
import math
import statistics
import subprocess
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

RESULT_PREFIX = "BENCH-RESULT "

_DONE = r"""
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%s{"requests":%d,"duration_us":%d,"non_2xx":%d,"socket_errors":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d}\n',
    "BENCH-RESULT ", summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max))
end
"""

# With a timeline: responses counted per second of wall-clock time (the thread's Lua state keeps
# them; done() runs in another state and reads them through the thread objects).
_TIMELINE = r"""
local threads = {}
function setup(thread) table.insert(threads, thread) end
per_second = {}
function response(status, headers, body)
  local now = os.time()
  per_second[now] = (per_second[now] or 0) + 1
end
function timeline()
  local merged, first, last = {}, nil, nil
  for _, thread in ipairs(threads) do
    for second, n in pairs(thread:get("per_second")) do
      merged[second] = (merged[second] or 0) + n
      if first == nil or second < first then first = second end
      if last == nil or second > last then last = second end
    end
  end
  local out = {}
  if first then for second = first, last do table.insert(out, tostring(merged[second] or 0)) end end
  return "[" .. table.concat(out, ",") .. "]"
end
"""
_DONE_TIMELINE = r"""
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%s{"requests":%d,"duration_us":%d,"non_2xx":%d,"socket_errors":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d,"per_second":%s}\n',
    "BENCH-RESULT ", summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max, timeline()))
end
"""


@dataclass(frozen=True)
class Request:
    path: str
    body: bytes
    headers: dict[str, str]


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    non_2xx: int
    socket_errors: int
    per_second: tuple[int, ...] = ()  # responses in each wall-clock second (a timeline run only)

    def as_dict(self) -> dict:
        return asdict(self)

    def sustained(self) -> float:
        """Requests per second over the run's second half, whole seconds only (its first and
        last second are partial): what the configuration keeps up under load."""
        whole = self.per_second[1:-1]
        if len(whole) < 2:
            return self.rps
        tail = whole[len(whole) // 2:]
        return sum(tail) / len(tail)


def _lua_string(value: str) -> str:
    level = 0
    while f"]{'=' * level}]" in value:
        level += 1
    return f"[{'=' * level}[{value}]{'=' * level}]"


def write_script(path: Path, request: Request, *, timeline: bool = False) -> Path:
    """A wrk script sending ``request``; ``timeline``: also count responses per second (wrk
    then hands every response to Lua, a little more work on its side)."""
    lines = ['wrk.method = "POST"', f"wrk.body = {_lua_string(request.body.decode())}"]
    lines += [f"wrk.headers[ {_lua_string(k)} ] = {_lua_string(v)}" for k, v in request.headers.items()]
    path.write_text("\n".join(lines) + "\n" + (_TIMELINE + _DONE_TIMELINE if timeline else _DONE))
    return path


def wrk(url: str, script: Path, *, connections: int, seconds: float, threads: int = 1) -> WrkResult:
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, math.ceil(seconds))}s", "--timeout", "30s",
            "--latency", "-s", str(script), url]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 120)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith(RESULT_PREFIX)), None)
    if done.returncode or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    raw = json.loads(line[len(RESULT_PREFIX):])
    elapsed = raw["duration_us"] / 1e6
    return WrkResult(
        requests=raw["requests"], seconds=round(elapsed, 3), rps=raw["requests"] / elapsed,
        p50_ms=raw["p50_us"] / 1000, p90_ms=raw["p90_us"] / 1000, p99_ms=raw["p99_us"] / 1000,
        mean_ms=raw["mean_us"] / 1000, max_ms=raw["max_us"] / 1000,
        non_2xx=raw["non_2xx"], socket_errors=raw["socket_errors"], per_second=tuple(raw.get("per_second", ())),
    )


def wrk_version() -> str:
    done = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
    return (done.stdout or done.stderr).split("Copyright")[0].replace("wrk", "", 1).strip()


class Client:
    """One keep-alive HTTP/1.1 connection, as an SDK's pool would hold it."""

    def __init__(self, base_url: str, request: Request):
        parts = urlsplit(base_url)
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
        self.request = request

    def fetch(self) -> tuple[int, bytes]:
        self.connection.request("POST", self.request.path, self.request.body, self.request.headers)
        response = self.connection.getresponse()
        return response.status, response.read()

    def send(self) -> int:
        return self.fetch()[0]

    def close(self) -> None:
        self.connection.close()


@dataclass
class Paced:
    """Latencies of requests sent on a fixed schedule, each measured from when it was *due*:
    a stall delays every request queued behind it, and that delay counts (no coordinated
    omission)."""

    latencies_ms: list[float]
    statuses: dict[int, int]

    def percentile(self, q: int) -> float:
        if len(self.latencies_ms) < 2:
            return self.latencies_ms[0] if self.latencies_ms else float("nan")
        return statistics.quantiles(self.latencies_ms, n=100, method="inclusive")[q - 1]


def paced(base_url: str, request: Request, rate: float, seconds: float) -> Paced:
    client = Client(base_url, request)
    latencies, statuses = [], {}
    start = time.perf_counter()
    try:
        for i in range(int(rate * seconds)):
            due = start + i / rate
            if (wait := due - time.perf_counter()) > 0:
                time.sleep(wait)
            status = client.send()
            latencies.append((time.perf_counter() - due) * 1000)
            statuses[status] = statuses.get(status, 0) + 1
    finally:
        client.close()
    return Paced(latencies, statuses)


class Repeating(threading.Thread):
    """Sends ``request`` every ``every`` seconds (back to back if one takes longer) on one
    connection until stopped."""

    def __init__(self, base_url: str, request: Request, every: float):
        super().__init__(daemon=True)
        self.base_url, self.request, self.every = base_url, request, every
        self.latencies_ms: list[float] = []
        self.statuses: dict[int, int] = {}
        self.failure: BaseException | None = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        client = Client(self.base_url, self.request)
        try:
            while not self._stop_event.is_set():
                began = time.perf_counter()
                status = client.send()
                self.latencies_ms.append((time.perf_counter() - began) * 1000)
                self.statuses[status] = self.statuses.get(status, 0) + 1
                self._stop_event.wait(max(0.0, began + self.every - time.perf_counter()))
        except BaseException as e:  # reported by the caller, not lost in a thread
            self.failure = e
        finally:
            client.close()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(300)
        if self.failure:
            raise RuntimeError(f"repeated requests failed: {self.failure!r}") from self.failure
