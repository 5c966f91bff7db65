"""The limit store's outages and recoveries are reported once each, for the audit stream."""

from typing import Any

from extauth.clock import ManualClock
from extauth.devstack.redis import RedisServer
from extauth.ratelimit import CircuitBreaker, Limit, LimitCheck, RateLimiter, open_storage


async def test_store_outage_and_recovery_are_each_reported_once(tmp_path) -> None:
    """Redis killed: one `ratelimit_backend_degraded`; Redis back and the breaker closed: one `..._recovered`."""
    redis = RedisServer(tmp_path / "redis").start()
    reported: list[tuple[str, dict[str, Any]]] = []
    clock = ManualClock()
    limiter = RateLimiter(open_storage(redis.url, timeout_ms=200), clock, timeout_ms=200,
                          breaker=CircuitBreaker(clock, failure_threshold=2, cooldown_seconds=1),
                          notify=lambda event, **fields: reported.append((event, fields)))
    check = [LimitCheck("events/k", Limit(1000, 60), failure_mode="open")]
    try:
        await limiter.check(check)
        redis.kill()
        for _ in range(10):
            await limiter.check(check)
        redis.restart()
        clock.advance(1)
        for _ in range(5):
            await limiter.check(check)
        assert [event for event, _ in reported] == ["ratelimit_backend_degraded", "ratelimit_backend_recovered"]
        assert reported[0][1]["backend"] == "redis" and reported[0][1]["error"]
    finally:
        await limiter.close()
        redis.stop()
