"""Prometheus metrics (docs/metrics.md): cheap accumulators on the hot path, rendered when scraped."""

from extauth.metrics.registry import CheckMetrics, Histogram, RedisMetrics

#: Process-wide hook for the rate limiter's Redis calls: `REDIS.observe("gcra", seconds)`, `REDIS.error(...)`.
REDIS = RedisMetrics()

__all__ = ["REDIS", "CheckMetrics", "Histogram", "RedisMetrics"]
