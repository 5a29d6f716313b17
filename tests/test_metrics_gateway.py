"""``GET /metrics`` from a real gateway after real traffic: the openai SDK through the proxy
against the fake (plain requests, a stream, cached and reasoning tokens, an upstream error, a
mock key, refusals for a bad key, a model and a budget, a Responses WebSocket answering one
message and refusing another), scraped over HTTP, parsed with prometheus_client's own parser,
and held against what the store recorded: counts per outcome, tokens per type, spend to the
last digit, budget gauges as `pouch keys show --json` gives them.
Also who may read it (a token, or none with pouch_metrics_public) and what a standalone
`pouch admin` serves (the store's gauges alone)."""

import json
import subprocess
import sys
import time
from collections import Counter, defaultdict
from decimal import Decimal
from pathlib import Path

import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect

from pouch.domain.periods import utcnow
from pouch.services import keys as key_service
from pouch.store import admin_tokens
from pouch.store import keys as key_store
from pouch.store.database import RefusalRow
from tests.admin_server import Api, error_of
from tests.fakes.openai_fake import FakeOpenAI
from tests.gateway import Gateway, free_port

MODEL = "gpt-4o-mini"
SNAPSHOT = "gpt-4o-mini-2024-07-18"  # a dated name of MODEL: counted under its family's label
HELLO = [{"role": "user", "content": "hello there"}]
PROVIDER = "openai"
# As DESIGN names them, for what this traffic produces.
OUTCOMES = {"ok": "ok", "upstream_error": "upstream_error", "mock": "mock"}
REFUSED = {"invalid_api_key": "refused_auth", "model_not_allowed": "refused_model",
           "insufficient_quota": "refused_budget"}
# The model label of each model the traffic names (none: a request refused before its body was read).
LABELS = {MODEL: MODEL, SNAPSHOT: MODEL, "gpt-4o": "gpt-4o", None: ""}
TOKEN_FIELDS = {"input": "input_tokens", "cached_input": "cached_tokens", "cache_write": "cache_write_tokens",
                "output": "output_tokens", "reasoning": "reasoning_tokens"}
FORWARDED = ("ok", "upstream_error")


def pouch(db_url: str, *args) -> list | dict:
    """The installed `pouch` command, as an operator runs it, with --json."""
    done = subprocess.run([str(Path(sys.executable).with_name("pouch")), "--db", db_url, *args, "--json"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def scrape(url: str, token: str | None = None) -> dict[str, dict[tuple, float]]:
    """/metrics parsed: sample name -> {sorted label pairs: value}."""
    answer = Api(url).get("/metrics", token)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    samples: dict[str, dict[tuple, float]] = defaultdict(dict)
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            samples[sample.name][tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def by(samples: dict, name: str, *labels: str) -> dict[tuple, float]:
    """The samples of ``name``, keyed by the values of ``labels``."""
    return {tuple(dict(found)[label] for label in labels): value for found, value in samples[name].items()}


def chat(client, model=MODEL, **fields):
    return client.chat.completions.create(model=model, messages=HELLO, max_tokens=20, **fields)


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    with FakeOpenAI(tls_dir=tmp_path_factory.mktemp("fake-tls")) as fake:
        yield fake


def start(fake, home, **options) -> Gateway:
    port = free_port()
    gateway = Gateway(home, {"api.openai.com": fake.url}, str(fake.ca_path),
                      options={"pouch_admin": f"127.0.0.1:{port}", **options}).start()
    gateway.admin_url = f"http://127.0.0.1:{port}"
    return gateway


@pytest.fixture(scope="module")
def burst(fake, tmp_path_factory):
    """A gateway after a burst of traffic; yields (gateway, viewer token, admin token, key names)."""
    gateway = start(fake, tmp_path_factory.mktemp("gateway"))
    try:
        gateway.open_store()
        now = utcnow()
        admin = admin_tokens.create("ops", "admin", now)[1]
        viewer = admin_tokens.create("prometheus", "viewer", now)[1]
        secrets = {name: key_service.create(name, **options)[1] for name, options in {
            "alice": {"budget": "5"},
            "open": {},  # no budget: no budget or remaining series
            "narrow": {"models": "gpt-4o"},
            "poor": {"budget": "0.000001"},
            "mocky": {"mock": True, "budget": "1"},
            "gone": {"budget": "2"},
            "sockets": {"budget": "5", "models": MODEL},
        }.items()}
        alice = gateway.client(secrets["alice"])
        for _ in range(3):
            assert chat(alice).choices[0].message.content.startswith("echo:")
        chat(alice, extra_headers={"x-fake-usage": json.dumps({"cached_tokens": 4, "reasoning_tokens": 6})})
        chat(alice, model=SNAPSHOT)
        stream = alice.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=20, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices).startswith("echo:")
        with pytest.raises(openai.InternalServerError):
            chat(alice, extra_headers={"x-fake-status": "500"})
        chat(gateway.client(secrets["open"]))
        chat(gateway.client(secrets["gone"]))
        assert chat(gateway.client(secrets["mocky"])).usage.total_tokens > 0
        with pytest.raises(openai.AuthenticationError):
            chat(gateway.client("sk-not-a-pouch-key"))
        with pytest.raises(openai.PermissionDeniedError):
            chat(gateway.client(secrets["narrow"]))
        with pytest.raises(openai.RateLimitError) as budget:
            chat(gateway.client(secrets["poor"]))
        assert budget.value.code == "insufficient_quota"
        headers = {"Authorization": f"Bearer {secrets['sockets']}", "OpenAI-Beta": "responses_websockets=2026-02-06"}
        socket_url = f"ws://127.0.0.1:{gateway.reverse_port}/v1/responses"  # reverse mode, as test_e2e_websocket
        with connect(socket_url, proxy=None, additional_headers=headers) as ws:
            for model in (MODEL, "gpt-4o"):  # answered; refused (not the key's model), the socket open
                ws.send(json.dumps({"type": "response.create", "model": model, "input": "hello socket"}))
                while json.loads(ws.recv(timeout=20))["type"] not in ("response.completed", "error"):
                    pass
        gateway.settled(expected_rows=11)
        deadline = time.monotonic() + 15
        while RefusalRow.select().count() < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        key_store.revoke(key_store.get("gone"), utcnow())  # its spend stays; its series go
        yield gateway, viewer, admin, list(secrets)
    finally:
        gateway.stop()


def test_counts_tokens_and_spend_agree_with_the_store(burst):
    gateway, viewer, _, _ = burst
    samples = scrape(gateway.admin_url, viewer)
    rows = pouch(gateway.db_url, "usage")
    refusals = pouch(gateway.db_url, "usage", "--refused")
    assert len(rows) == 11 and len(refusals) == 4

    expected = Counter()
    for row in rows:
        expected[(row["key"], LABELS[row["model"]], OUTCOMES[row["outcome"]])] += 1
    for refusal in refusals:
        expected[(refusal["key"] or "", LABELS[refusal["model"]], REFUSED[refusal["reason"]])] += 1
    assert by(samples, "pouch_requests_total", "key", "model", "outcome") == dict(expected)
    assert {dict(labels)["provider"] for labels in samples["pouch_requests_total"]} == {PROVIDER}
    assert expected[("alice", MODEL, "ok")] == 6 and expected[("", "", "refused_auth")] == 1
    assert expected[("sockets", MODEL, "ok")] == 1 and expected[("sockets", "gpt-4o", "refused_model")] == 1

    tokens, spend = Counter(), defaultdict(Decimal)
    for row in rows:
        spend[(row["key"], LABELS[row["model"]])] += Decimal(row["cost_usd"]) if not row["mock"] else 0
        if row["mock"]:
            continue
        for kind, field in TOKEN_FIELDS.items():
            tokens[(row["key"], LABELS[row["model"]], kind)] += row[field]
    assert by(samples, "pouch_tokens_total", "key", "model", "type") == dict(tokens)
    assert tokens[("alice", MODEL, "cached_input")] == 4 and tokens[("alice", MODEL, "reasoning")] == 6
    counted_spend = by(samples, "pouch_spend_usd_total", "key", "model")
    # Exactly: the float nearest the exact decimal sum, not a sum of rounded floats.
    assert counted_spend == {labels: float(total) for labels, total in spend.items()}
    assert counted_spend[("mocky", MODEL)] == 0.0 and counted_spend[("alice", MODEL)] > 0


def test_latency_histograms_count_the_requests_sent_upstream(burst):
    gateway, viewer, _, _ = burst
    samples = scrape(gateway.admin_url, viewer)
    rows = [row for row in pouch(gateway.db_url, "usage") if row["outcome"] in FORWARDED]
    labels = (("model", MODEL), ("provider", PROVIDER))
    assert samples["pouch_request_duration_seconds_count"][labels] == len(rows) == 10  # a socket's response too
    assert samples["pouch_request_duration_seconds_sum"][labels] == pytest.approx(
        sum(row["latency_ms"] for row in rows) / 1000)
    timed = [row for row in rows if row["ttft_ms"] is not None]
    assert samples["pouch_time_to_first_token_seconds_count"][labels] == len(timed) == 10
    assert samples["pouch_time_to_first_token_seconds_sum"][labels] == pytest.approx(
        sum(row["ttft_ms"] for row in timed) / 1000)
    # Every HTTP exchange the provider answered (a socket's handshake is one), and nothing pouch
    # answered itself (refusals, the mock).
    exchanges = len([row for row in rows if row["endpoint"] != "responses.websocket"]) + 1
    assert samples["pouch_gateway_overhead_seconds_count"][()] == exchanges
    assert samples["pouch_gateway_overhead_seconds_sum"][()] > 0
    assert samples["pouch_gateway_overhead_seconds_bucket"][(("le", "+Inf"),)] == exchanges


def test_budget_gauges_are_what_pouch_keys_show_says(burst):
    gateway, viewer, _, names = burst
    samples = scrape(gateway.admin_url, viewer)
    live = [name for name in names if name != "gone"]
    for name in live:
        shown = pouch(gateway.db_url, "keys", "show", name)
        labels = (("key", name),)
        spent, held = Decimal(shown["spent_usd"]), Decimal(shown["reserved_usd"])
        assert samples["pouch_key_spent_usd"][labels] == float(spent)
        assert samples["pouch_key_reserved_usd"][labels] == float(held) == 0
        if shown["budget_usd"] is None:
            assert labels not in samples["pouch_key_budget_usd"]
            assert labels not in samples["pouch_key_budget_remaining_usd"]
        else:
            budget = Decimal(shown["budget_usd"])
            assert samples["pouch_key_budget_usd"][labels] == float(budget)
            assert samples["pouch_key_budget_remaining_usd"][labels] == float(budget - spent - held)
    assert {dict(labels)["key"] for labels in samples["pouch_key_spent_usd"]} == set(live), "no revoked key"
    assert samples["pouch_key_spent_usd"][(("key", "alice"),)] > 0
    assert samples["pouch_key_spent_usd"][(("key", "mocky"),)] == 0, "a mock charges nothing"
    assert samples["pouch_reservations_open"][()] == 0


def test_a_token_is_needed_unless_metrics_are_public(burst, fake, tmp_path):
    gateway, viewer, admin, _ = burst
    api = Api(gateway.admin_url)
    assert "send an admin token" in error_of(api.get("/metrics"), 401)
    assert "not valid" in error_of(api.get("/metrics", "pouch-admin-not-a-token"), 401)
    assert api.get("/metrics", viewer).status_code == 200
    assert api.get("/metrics", admin).status_code == 200
    assert "POST is not allowed" in error_of(api.post("/metrics", admin), 405)

    public = start(fake, tmp_path / "public", pouch_metrics_public="true")
    try:
        samples = scrape(public.admin_url)  # no token
        assert "pouch_reservations_open" in samples
        assert Api(public.admin_url).get("/api/keys").status_code == 401, "only /metrics is open"
    finally:
        public.stop()


def test_openmetrics_is_served_to_a_prometheus_that_asks_for_it(burst):
    gateway, viewer, _, _ = burst
    answer = Api(gateway.admin_url).get("/metrics", viewer, headers={"Accept": "application/openmetrics-text"})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/openmetrics-text")
    assert answer.text.endswith("# EOF\n")
    assert "pouch_requests_total{" in answer.text


def test_standalone_pouch_admin_serves_the_store_gauges_only(burst):
    gateway, viewer, _, _ = burst
    port = free_port()
    process = subprocess.Popen([str(Path(sys.executable).with_name("pouch")), "admin", "--db", gateway.db_url,
                                "--listen", f"127.0.0.1:{port}"], stderr=subprocess.PIPE, text=True)
    try:
        assert "pouch admin API on" in process.stderr.readline()
        samples = scrape(f"http://127.0.0.1:{port}", viewer)
    finally:
        process.terminate()
        process.wait(15)
    assert samples["pouch_key_spent_usd"] == scrape(gateway.admin_url, viewer)["pouch_key_spent_usd"]
    assert "pouch_reservations_open" in samples
    assert not [name for name in samples if name.startswith(("pouch_requests", "pouch_tokens", "pouch_spend",
                                                             "pouch_request_duration", "pouch_gateway"))]
