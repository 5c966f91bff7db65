"""Prometheus metrics (docs/metrics.md): cheap accumulators on the hot path, rendered when scraped."""

from extauth.metrics.registry import CheckMetrics, Histogram, PolicyMetrics, RedisMetrics

#: Process-wide hook for the rate limiter's Redis calls: `REDIS.observe("gcra", seconds)`, `REDIS.error(...)`.
REDIS = RedisMetrics()
#: Process-wide hook for policy evaluation: `POLICY.expression_error(rule_id)`.
POLICY = PolicyMetrics()

__all__ = ["POLICY", "REDIS", "CheckMetrics", "Histogram", "PolicyMetrics", "RedisMetrics"]
