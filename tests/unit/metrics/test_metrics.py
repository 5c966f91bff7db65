"""Metrics: the accumulators, their Prometheus rendering, and the /metrics endpoint on the event loop."""

import asyncio

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from extauth.config.schema import ListenAddress
from extauth.metrics import CheckMetrics, Histogram, RedisMetrics
from extauth.metrics.collector import ExtauthCollector
from extauth.metrics.http import MetricsServer


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def test_histogram_buckets_are_cumulative_and_inclusive() -> None:
    """An observation equal to a bound lands in that bucket (`le`), and counts accumulate to +Inf."""
    histogram = Histogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 2.0):
        histogram.observe(value)
    assert histogram.cumulative() == [("0.1", 2), ("1.0", 3), ("+Inf", 4)]
    assert histogram.count == 4 and abs(histogram.sum - 2.65) < 1e-9


def test_decisions_phases_and_redis_render_as_prometheus_metrics() -> None:
    """Recorded decisions, phase timings and the Redis hook appear under their documented names and labels."""
    checks, redis = CheckMetrics(), RedisMetrics()
    checks.record("allow", "ok", 120, {"screen": 3, "authenticate": 5, "authorize": 2, "respond": 9})
    checks.record("deny", "forbidden", 80, {"screen": 3})
    checks.record("deny", "forbidden", 90, {})
    redis.observe("gcra", 0.0004)
    redis.error("gcra", "timeout")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ExtauthCollector(checks=checks, redis=redis))
    found = samples(registry)
    assert found[("extauth_decisions_total", (("decision", "allow"), ("reason", "ok")))] == 1
    assert found[("extauth_decisions_total", (("decision", "deny"), ("reason", "forbidden")))] == 2
    assert found[("extauth_check_duration_seconds_count", ())] == 3
    assert found[("extauth_check_phase_duration_seconds_count", (("phase", "screen"),))] == 2
    assert found[("extauth_check_phase_duration_seconds_bucket", (("le", "0.0001"), ("phase", "respond")))] == 1
    assert found[("extauth_redis_duration_seconds_count", (("operation", "gcra"),))] == 1
    assert found[("extauth_redis_errors_total", (("kind", "timeout"), ("operation", "gcra")))] == 1


async def test_endpoint_serves_metrics_and_refuses_other_paths(unused_tcp_port: int) -> None:
    """GET /metrics answers 200 in the text format; another path answers 404."""
    checks = CheckMetrics()
    checks.record("allow", "public_route", 10, {})
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ExtauthCollector(checks=checks, redis=RedisMetrics()))
    server = MetricsServer(registry, ListenAddress("tcp", host="127.0.0.1", port=unused_tcp_port))
    await server.start()
    try:
        async def get(path: str) -> bytes:
            reader, writer = await asyncio.open_connection("127.0.0.1", unused_tcp_port)
            writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            reply = await reader.read()
            writer.close()
            return reply
        ok = await get("/metrics")
        assert ok.startswith(b"HTTP/1.1 200 OK") and b'extauth_decisions_total{decision="allow"' in ok
        assert (await get("/secret")).startswith(b"HTTP/1.1 404")
    finally:
        await server.stop()
