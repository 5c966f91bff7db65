"""The numbers the Check path and the Redis hook update: plain Python counters and bucket lists.

The event loop is single-threaded and the endpoint reads them on that same loop, so no locks are needed; a
decision costs a dict update and five bisects (~1 µs) instead of prometheus_client's locked children. They are
turned into Prometheus metric families only when scraped (`collector.py`).
"""

from bisect import bisect_left
from collections.abc import Mapping

#: Seconds; Check latencies are tens of µs in process and a few ms through Envoy.
LATENCY_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
PHASES = ("screen", "authenticate", "authorize", "waf", "rate_limit", "shadow", "respond")


class Histogram:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, int]]:
        """Prometheus buckets: (`le`, observations <= le), ending with `+Inf`."""
        total, buckets = 0, []
        for bound, count in zip((*map(repr, self.bounds), "+Inf"), self.counts, strict=True):
            total += count
            buckets.append((bound, total))
        return buckets

    @property
    def count(self) -> int:
        return sum(self.counts)


class CheckMetrics:
    """Decisions by result and reason, Check latency, per-phase latency; `record` is called once per Check."""

    def __init__(self) -> None:
        self.decisions: dict[tuple[str, str], int] = {}
        self.latency = Histogram()
        self.phases = {phase: Histogram() for phase in PHASES}
        #: (rule id, action) → matches; action is `block`, `detect` (would have blocked) or `score` (under the
        #: threshold, allowed).
        self.waf_matches: dict[tuple[str, str], int] = {}

    def record(self, decision: str, reason: str, latency_us: int, timings_us: Mapping[str, int]) -> None:
        key = (decision, reason)
        self.decisions[key] = self.decisions.get(key, 0) + 1
        self.latency.observe(latency_us / 1e6)
        phases = self.phases
        for phase, microseconds in timings_us.items():
            histogram = phases.get(phase)
            if histogram is not None:
                histogram.observe(microseconds / 1e6)

    def record_waf(self, waf: Mapping[str, object]) -> None:
        """Count each matched WAF rule of one Check under what the match led to."""
        action = "block" if waf["blocked"] else "detect" if waf["over_threshold"] else "score"
        for rule_id in waf["rule_ids"]:  # type: ignore[attr-defined]
            key = (str(rule_id), action)
            self.waf_matches[key] = self.waf_matches.get(key, 0) + 1


class RedisMetrics:
    """The hook for the rate limiter: `REDIS.observe(operation, seconds)` per backend call and
    `REDIS.error(operation, kind)` per failure (kind: `timeout`, `connection`, `script`, ...)."""

    def __init__(self) -> None:
        self.latency: dict[str, Histogram] = {}
        self.errors: dict[tuple[str, str], int] = {}

    def observe(self, operation: str, seconds: float) -> None:
        histogram = self.latency.get(operation)
        if histogram is None:
            histogram = self.latency[operation] = Histogram()
        histogram.observe(seconds)

    def error(self, operation: str, kind: str) -> None:
        key = (operation, kind)
        self.errors[key] = self.errors.get(key, 0) + 1


class PolicyMetrics:
    """The hook for policy evaluation: `POLICY.expression_error(rule)` when a CEL expression fails at run time
    (a deny rule then denies, an allow rule does not match), so a broken expression shows before it is noticed."""

    def __init__(self) -> None:
        self.expression_errors: dict[str, int] = {}

    def expression_error(self, rule: str) -> None:
        self.expression_errors[rule] = self.expression_errors.get(rule, 0) + 1
