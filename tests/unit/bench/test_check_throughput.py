"""The bench's pure parts: wrk and h2load output, Redis script calls, ratios, the JSON report, the variants."""

import json
import math
import subprocess
import threading
from dataclasses import replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from check_throughput import (
    MAX_RPS_PER_CLIENT,
    POLICIES,
    RATIOS,
    VARIANTS,
    BenchError,
    LatencyRun,
    Result,
    Variant,
    WrkRun,
    fixed_rate_clients,
    half_of_b,
    limits_of,
    median_run,
    parse_commandstats,
    parse_h2load_log,
    parse_wrk,
    percentile,
    ratios,
    redis_calls,
    refuse_denials,
    report,
    rotating_tokens_script,
    script_calls_between,
)
from hypothesis import given
from hypothesis import strategies as st

from extauth.devstack.redis import RedisServer

WRK_OUTPUT = """Running 3s test @ https://localhost:41234/api/orders
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    12.27ms    9.83ms 153.50ms   93.69%
    Req/Sec     2.78k   315.42     3.12k    86.67%
  Latency Distribution
     50%  {p50}
     75%   13.01ms
     90%   17.34ms
     99%  {p99}
  8265 requests in 3.01s, 1.03MB read
{extra}Requests/sec:   2745.14
Transfer/sec:    349.57KB
"""
UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}
REQUIRED_VARIANT_FIELDS = {"rps", "p50_ms", "p99_ms", "servicer_cpu_us", "envoy_cpu_us", "non_2xx"}


def _wrk(p50: str = "10.99ms", p99: str = "90.23ms", extra: str = "") -> str:
    return WRK_OUTPUT.format(p50=p50, p99=p99, extra=extra)


def test_wrk_summary_parses_into_requests_rate_and_percentiles() -> None:
    """A clean wrk --latency run gives its request count, duration, rate and p50/p99 in milliseconds."""
    run = parse_wrk(_wrk())
    assert run == WrkRun(requests=8265, seconds=3.01, rps=2745.14, p50_ms=10.99, p99_ms=90.23, non_2xx=0,
                         socket_errors=0)


def test_wrk_non_2xx_and_socket_errors_are_counted() -> None:
    """The lines wrk prints only when something failed are summed into non_2xx and socket_errors."""
    extra = "  Socket errors: connect 1, read 2, write 3, timeout 4\n  Non-2xx or 3xx responses: 17\n"
    run = parse_wrk(_wrk(extra=extra))
    assert (run.non_2xx, run.socket_errors) == (17, 10)


@given(st.decimals(min_value=0, max_value=999, places=2), st.sampled_from(sorted(UNITS_MS)),
       st.decimals(min_value=0, max_value=999, places=2), st.sampled_from(sorted(UNITS_MS)))
def test_every_wrk_duration_unit_converts_to_milliseconds(p50: object, p50_unit: str, p99: object,
                                                           p99_unit: str) -> None:
    """wrk prints durations in us, ms, s or m; each percentile comes out in milliseconds whatever the unit."""
    run = parse_wrk(_wrk(p50=f"{p50}{p50_unit}", p99=f"{p99}{p99_unit}"))
    assert math.isclose(run.p50_ms, float(p50) * UNITS_MS[p50_unit], abs_tol=1e-9)
    assert math.isclose(run.p99_ms, float(p99) * UNITS_MS[p99_unit], abs_tol=1e-9)


@pytest.mark.parametrize("broken", ["", "wrk: connection refused", _wrk(p50="fast")])
def test_unreadable_wrk_output_is_a_bench_error(broken: str) -> None:
    """Output without the summary, or with a duration in no known unit, fails the bench instead of guessing."""
    with pytest.raises(BenchError):
        parse_wrk(broken)


rows = st.lists(st.tuples(st.sampled_from([200, 204, 299, 300, 401, 429, 503, -1]),
                          st.integers(min_value=1, max_value=10_000_000)), min_size=1, max_size=300)


@given(rows, st.integers(min_value=1, max_value=60))
def test_h2load_log_gives_nearest_rank_percentiles_and_counts_failures(sample: list[tuple[int, int]],
                                                                       seconds: int) -> None:
    """Each row of h2load's --log-file is one request: percentiles are over all rows in ms, and every status
    outside 2xx (including -1, a failed stream) counts as non-2xx."""
    log = "".join(f"{1_700_000_000_000_000 + i}\t{status}\t{micros}\n" for i, (status, micros) in enumerate(sample))
    run = parse_h2load_log(log, offered_rps=500.0, seconds=seconds)
    ordered = sorted(micros / 1e3 for _, micros in sample)
    assert run.requests == len(sample)
    assert run.achieved_rps == len(sample) / seconds
    assert run.non_2xx == sum(1 for status, _ in sample if not 200 <= status < 300) == sum(run.failures.values())
    assert (run.p50_ms, run.p99_ms, run.p999_ms) == tuple(percentile(ordered, q) for q in (0.5, 0.99, 0.999))
    assert run.p50_ms <= run.p99_ms <= run.p999_ms <= ordered[-1]


def test_an_empty_h2load_log_is_a_bench_error() -> None:
    """A run that completed nothing has no latency to report."""
    with pytest.raises(BenchError):
        parse_h2load_log("", offered_rps=100.0, seconds=1)


@given(st.lists(st.floats(min_value=0, max_value=1e6), min_size=1, max_size=500),
       st.floats(min_value=0.001, max_value=1.0))
def test_percentile_is_the_smallest_value_covering_the_fraction(values: list[float], fraction: float) -> None:
    """Nearest rank: at least `fraction` of the values are at or below it, and fewer are strictly below."""
    ordered = sorted(values)
    found = percentile(ordered, fraction)
    assert found in ordered
    assert sum(1 for v in ordered if v <= found) >= fraction * len(ordered)
    assert sum(1 for v in ordered if v < found) < fraction * len(ordered)


def test_commandstats_reply_gives_calls_per_command() -> None:
    """`INFO commandstats` lines become {command: calls}, subcommands keeping their `|` names."""
    reply = ("# Commandstats\r\ncmdstat_evalsha:calls=762,usec=81234,usec_per_call=106.61,rejected_calls=0,"
             "failed_calls=0\r\ncmdstat_script|load:calls=1,usec=40,usec_per_call=40.00,rejected_calls=0,"
             "failed_calls=0\r\ncmdstat_get:calls=1524,usec=900,usec_per_call=0.59,rejected_calls=0,failed_calls=0\r\n")
    assert parse_commandstats(reply) == {"evalsha": 762, "script|load": 1, "get": 1524}


@pytest.mark.redis
def test_script_calls_count_round_trips_not_the_commands_a_script_runs(redis_server: RedisServer) -> None:
    """Three EVALSHA of a script doing GET and SET are three calls, although commandstats counts the GET and
    SET too; EVAL counts as well, plain commands do not."""
    sha = redis_server.command("SCRIPT", "LOAD", "redis.call('GET', KEYS[1]); return redis.call('SET', KEYS[1], 1)")
    sha = sha.split(b"\r\n")[1].decode()
    before = redis_calls(redis_server.port)
    for _ in range(3):
        redis_server.command("EVALSHA", sha, "1", "bench:key")
    redis_server.command("EVAL", "return 1", "0")
    redis_server.command("GET", "bench:key")
    after = redis_calls(redis_server.port)
    assert after["get"] - before.get("get", 0) == 4
    assert script_calls_between(before, after) == 4


@given(st.dictionaries(st.sampled_from(sorted({key for pair in RATIOS for key in pair} | {"a", "c"})),
                       st.floats(min_value=1, max_value=1e6)))
def test_a_ratio_is_reported_exactly_when_both_of_its_variants_ran(rps: dict[str, float]) -> None:
    """d/b, g/b, l/b, d/n and g/n appear only with both variants measured, as rps(top) / rps(bottom)."""
    found = ratios(rps)
    assert set(found) == {f"{top}/{bottom}" for top, bottom in RATIOS if top in rps and bottom in rps}
    for name, value in found.items():
        top, bottom = name.split("/")
        assert value == round(rps[top] / rps[bottom], 3)


def _result(key: str, rps: float, latency: LatencyRun | None = None, redis: float | None = None,
            redis_cpu: float | None = None) -> Result:
    variant = next(v for v in VARIANTS if v.key == key)
    run = WrkRun(requests=int(rps * 10), seconds=10.0, rps=rps, p50_ms=1.5, p99_ms=9.25, non_2xx=0, socket_errors=0)
    servicer = None if variant.servicer in ("none", "native") else 321.5
    return Result(variant, run, servicer, 98.76, redis, latency, redis_cpu)


def test_json_report_has_the_issue_shape() -> None:
    """The document has date, machine, variants (each with the six required fields) and the ratios; Redis
    calls per Check and the fixed-rate percentiles are added only where the variant has them."""
    latency = LatencyRun(offered_rps=1000, achieved_rps=998.5, requests=9985, non_2xx=0, p50_ms=1.1, p99_ms=2.2,
                         p999_ms=3.3, servicer_cpu_us=250.04)
    native = replace(latency, servicer_cpu_us=None)  # Envoy's own filters: no servicer to charge
    results = [_result("b", 4000.0, latency), _result("d", 2000.0, latency), _result("g", 1000.0, latency, 0.25, 41.04),
               _result("n", 8000.0, native)]
    document = json.loads(json.dumps(report(results, datetime(2026, 11, 28, 13, 0, tzinfo=UTC), "2 CPUs")))
    assert set(document) == {"date", "machine", "variants", "ratios"}
    assert document["date"] == "2026-11-28T13:00:00+00:00"
    assert set(document["variants"]) == {"b", "d", "g", "n"}
    for key, figures in document["variants"].items():
        assert set(figures) >= REQUIRED_VARIANT_FIELDS
        assert set(figures) - REQUIRED_VARIANT_FIELDS == (
            {"fixed_rate", "redis_calls_per_check", "redis_cpu_us"} if key == "g" else {"fixed_rate"})
        assert figures["fixed_rate"] == {"offered_rps": 1000, "achieved_rps": 998.5, "p50_ms": 1.1,
                                         "p99_ms": 2.2, "p99_9_ms": 3.3, "non_2xx": 0,
                                         "servicer_cpu_us": None if key == "n" else 250.0}
    assert document["variants"]["n"]["servicer_cpu_us"] is None
    assert document["variants"]["g"]["redis_calls_per_check"] == 0.25
    assert document["variants"]["g"]["redis_cpu_us"] == 41.0
    assert document["ratios"] == {"d/b": 0.5, "g/b": 0.25, "d/n": 0.25, "g/n": 0.125}


@given(st.lists(st.floats(min_value=1, max_value=1e6), min_size=1, max_size=9))
def test_the_median_run_is_one_of_the_runs_with_as_many_runs_faster_as_slower(rates: list[float]) -> None:
    """--rounds reports a real run (its CPU and latency belong to its rps), the middle one by rps; of an even
    count, the lower middle."""
    runs = [_result("d", rps) for rps in rates]
    chosen = median_run(runs)
    assert any(chosen is run for run in runs)
    slower = sum(1 for run in runs if run.run.rps < chosen.run.rps)
    faster = sum(1 for run in runs if run.run.rps > chosen.run.rps)
    ties = len(runs) - slower - faster
    assert slower <= (len(runs) - 1) // 2 < slower + ties and faster <= len(runs) // 2


def test_with_rounds_the_json_report_lists_every_run_beside_the_median() -> None:
    """Each variant keeps the median run's figures and gains `runs`: every run's rps and servicer CPU."""
    runs = {"b": [_result("b", 4000.0), _result("b", 4200.0), _result("b", 3900.0)],
            "d": [_result("d", 2000.0), _result("d", 1800.0), _result("d", 2100.0)]}
    medians = [median_run(results) for results in runs.values()]
    document = report(medians, datetime(2026, 11, 28, 13, 0, tzinfo=UTC), "2 CPUs", runs)
    assert document["variants"]["b"]["rps"] == 4000.0 and document["variants"]["d"]["rps"] == 2000.0
    assert [run["rps"] for run in document["variants"]["d"]["runs"]] == [2000.0, 1800.0, 2100.0]
    assert document["variants"]["d"]["runs"][0]["servicer_cpu_us"] == 321.5
    assert document["ratios"] == {"d/b": 0.5}


def _wrk_run(rps: float) -> WrkRun:
    return WrkRun(requests=1, seconds=1.0, rps=rps, p50_ms=1.0, p99_ms=1.0, non_2xx=0, socket_errors=0)


def test_the_fixed_rate_is_half_of_b_unless_overridden() -> None:
    """b's own latency run uses half of the capacity it just measured, later variants half of b's, an explicit
    rate wins, and without b there is no latency run."""
    b, d = (next(v for v in VARIANTS if v.key == key) for key in "bd")
    measured_b = _result("b", 4000.0)
    assert half_of_b(None, b, {}, _wrk_run(3000.0)) == 1500.0
    assert half_of_b(None, d, {"b": measured_b}, _wrk_run(1000.0)) == 2000.0
    assert half_of_b(750.0, d, {"b": measured_b}, _wrk_run(1000.0)) == 750.0
    assert half_of_b(None, d, {}, _wrk_run(1000.0)) is None


@given(st.floats(min_value=0.5, max_value=1e6))
def test_fixed_rate_clients_each_send_at_most_one_request_per_timer_tick(rate: float) -> None:
    """The rate is split over the fewest h2load clients that keep each at or under MAX_RPS_PER_CLIENT."""
    clients = fixed_rate_clients(rate)
    assert rate / clients <= MAX_RPS_PER_CLIENT
    assert clients == 1 or rate / (clients - 1) > MAX_RPS_PER_CLIENT

def _latency(**failures: int) -> LatencyRun:
    counts = {int(status.removeprefix("s")): count for status, count in failures.items()}
    return LatencyRun(offered_rps=100, achieved_rps=100, requests=1000, non_2xx=sum(counts.values()), p50_ms=1,
                      p99_ms=2, p999_ms=3, failures=counts)


def test_denials_stop_the_bench_but_fixed_rate_overload_is_reported() -> None:
    """Any non-2xx under wrk, or a non-503 under h2load, is a BenchError; 503s at the fixed rate (Check
    timeouts: the rate is beyond the variant) are figures, not a failure."""
    clean = _wrk_run(100.0)
    refuse_denials("d", clean, _latency())
    refuse_denials("d", clean, _latency(s503=12))
    refuse_denials("d", clean, None)
    with pytest.raises(BenchError, match="not 2xx"):
        refuse_denials("d", WrkRun(**{**clean.__dict__, "non_2xx": 1}), None)
    for status in ("s401", "s403", "s429", "s-1"):
        with pytest.raises(BenchError, match="other than 503"):
            refuse_denials("d", clean, _latency(s503=1, **{status: 1}))

def test_limits_name_a_backend_and_optionally_a_policy_file() -> None:
    """`memory`/`redis` count limited.yaml; `redis-leased` counts leased.yaml in Redis; other backends fail."""
    assert limits_of("memory") == limits_of("memory-limited")
    assert (limits_of("memory").policy, limits_of("memory").redis) == (POLICIES / "limited.yaml", False)
    assert (limits_of("redis-leased").policy, limits_of("redis-leased").redis) == (POLICIES / "leased.yaml", True)
    with pytest.raises(ValueError, match="backend"):
        limits_of("postgres")


def test_every_variant_has_a_unique_key_and_an_existing_policy() -> None:
    """Keys name table rows and JSON entries, so they are unique; a variant's limits name a shipped policy."""
    assert len({variant.key for variant in VARIANTS}) == len(VARIANTS)
    for variant in VARIANTS:
        if variant.limits is not None:
            assert limits_of(variant.limits).policy.is_file(), variant


def test_unique_token_variant_is_g_with_rotating_tokens() -> None:
    """h differs from g only in sending a new token per request."""
    g, h = (next(v for v in VARIANTS if v.key == key) for key in "gh")
    assert h.unique_tokens and not g.unique_tokens
    assert Variant(**{**h.__dict__, "key": "g", "title": g.title, "unique_tokens": False}) == g


class _Recorder(BaseHTTPRequestHandler):
    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.seen.append(self.headers["authorization"])
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_wrk_script_sends_the_tokens_in_turn(tmp_path: Path) -> None:
    """Through real wrk (one connection), consecutive requests carry consecutive tokens, wrapping around."""
    tokens = [f"token-{index}" for index in range(7)]
    script = rotating_tokens_script(tokens, tmp_path / "tokens.lua")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    _Recorder.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        subprocess.run(["wrk", "-t1", "-c1", "-d1s", "-s", str(script), f"http://127.0.0.1:{server.server_port}/"],
                       check=True, capture_output=True, timeout=30)
    finally:
        server.shutdown()
        server.server_close()
    seen = _Recorder.seen
    assert len(seen) > len(tokens)
    first = tokens.index(seen[0].removeprefix("Bearer "))
    assert seen == [f"Bearer {tokens[(first + i) % len(tokens)]}" for i in range(len(seen))]
