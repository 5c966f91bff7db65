"""The rate limiter's store calls and state reach the metrics endpoint."""

from prometheus_client import CollectorRegistry
from test_metrics import samples

from extauth.clock import ManualClock
from extauth.devstack.redis import RedisServer, free_port
from extauth.metrics import CheckMetrics, RedisMetrics
from extauth.metrics.collector import ExtauthCollector
from extauth.ratelimit import CircuitBreaker, Limit, LimitCheck, RateLimiter, open_storage


def collected(limiter: RateLimiter, redis: RedisMetrics) -> dict:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ExtauthCollector(checks=CheckMetrics(), redis=redis, limiter=limiter))
    return samples(registry)


async def test_store_calls_are_timed_and_counted(redis_server: RedisServer) -> None:
    """Each check against live Redis is one `gcra` latency observation and one counted request."""
    redis = RedisMetrics()
    limiter = RateLimiter(open_storage(redis_server.url, timeout_ms=500), ManualClock(), timeout_ms=500,
                          metrics=redis)
    try:
        for _ in range(3):
            await limiter.check([LimitCheck("metrics/live", Limit(2, 60))])
        found = collected(limiter, redis)
        assert found[("extauth_redis_duration_seconds_count", (("operation", "gcra"),))] == 3
        assert found[("extauth_ratelimit_checks_total", ())] == 3
        assert found[("extauth_ratelimit_rejections_total", ())] == 1
        assert found[("extauth_ratelimit_breaker_open", ())] == 0
    finally:
        await limiter.close()


async def test_a_dead_store_shows_errors_open_breaker_and_degraded_answers() -> None:
    """Against a port nothing listens on: storage errors, then the breaker opens and calls are skipped."""
    redis = RedisMetrics()
    clock = ManualClock()
    limiter = RateLimiter(open_storage(f"redis://127.0.0.1:{free_port()}/0", timeout_ms=200), clock,
                          timeout_ms=200, breaker=CircuitBreaker(clock, failure_threshold=2), metrics=redis)
    try:
        for _ in range(5):
            await limiter.check([LimitCheck("metrics/dead", Limit(2, 60), failure_mode="open")])
        found = collected(limiter, redis)
        assert found[("extauth_redis_errors_total", (("kind", "storage"), ("operation", "gcra")))] == 2
        assert found[("extauth_ratelimit_short_circuited_total", ())] == 3
        assert found[("extauth_ratelimit_degraded_total", ())] == 5
        assert found[("extauth_ratelimit_breaker_open", ())] == 1
    finally:
        await limiter.close()
