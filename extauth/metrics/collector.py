"""Every extauth metric (docs/metrics.md), collected from the objects that own the numbers at scrape time."""

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from extauth.metrics import POLICY
from extauth.metrics.registry import CheckMetrics, Histogram, PolicyMetrics, RedisMetrics


def histogram_family(
    name: str, documentation: str, labels: list[str], histograms: dict[tuple[str, ...], Histogram]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation, labels=labels)
    for label_values, histogram in histograms.items():
        family.add_metric(list(label_values), histogram.cumulative(), histogram.sum)
    return family


class ExtauthCollector(Collector):
    """Reads the pipeline, audit writer, access-log servicer, policy store, key stores and the Redis hook."""

    def __init__(
        self,
        *,
        checks: CheckMetrics,
        redis: RedisMetrics,
        audit: Any = None,
        access_log: Any = None,
        policy: Any = None,
        key_stores: Any = (),
        introspector: Any = None,
        clock: Any = None,
        pipeline: Any = None,
        limiter: Any = None,
        callers: Any = None,
        evaluation: PolicyMetrics = POLICY,
    ) -> None:
        self._checks = checks
        self._redis = redis
        self._audit = audit
        self._access_log = access_log
        self._policy = policy
        self._key_stores = key_stores
        self._introspector = introspector
        self._clock = clock
        self._pipeline = pipeline
        self._limiter = limiter
        self._callers = callers
        self._evaluation = evaluation

    def collect(self) -> Iterator[Metric]:
        yield from self._check_metrics()
        yield from self._redis_metrics()
        if self._limiter is not None:
            yield from self._limiter_metrics()
        if self._audit is not None:
            yield from self._audit_metrics()
        if self._callers is not None:
            refused = CounterMetricFamily(
                "extauth_callers_refused",
                "Calls refused because the connection may not use the service (docs/architecture.md).",
                labels=["service", "transport"])
            for (service, transport), count in sorted(self._callers.stats.refused.items()):
                refused.add_metric([service, transport], count)
            yield refused
        if self._access_log is not None:
            yield CounterMetricFamily(
                "extauth_access_log_entries",
                "HTTP access-log entries received from Envoy.",
                value=self._access_log.stats.entries,
            )
            yield GaugeMetricFamily(
                "extauth_access_log_streams",
                "Open access-log streams from Envoy.",
                value=self._access_log.stats.streams_open,
            )
        if self._policy is not None:
            yield from self._policy_metrics()
        yield self._expression_errors()
        yield from self._jwks_metrics()
        if self._introspector is not None:
            yield from self._introspection_metrics()

    def _check_metrics(self) -> Iterator[Metric]:
        decisions = CounterMetricFamily(
            "extauth_decisions", "Check decisions by result and reason code.", labels=["decision", "reason"]
        )
        for (decision, reason), count in sorted(self._checks.decisions.items()):
            decisions.add_metric([decision, reason], count)
        yield decisions
        waf = CounterMetricFamily(
            "extauth_waf_rule_matches", "WAF (Core Rule Set) rule matches by rule id and what they led to: block, "
            "detect (would have blocked) or score (under the threshold).", labels=["rule_id", "action"]
        )
        for (rule_id, action), count in sorted(self._checks.waf_matches.items()):
            waf.add_metric([rule_id, action], count)
        yield waf
        yield histogram_family(
            "extauth_check_duration_seconds",
            "Check latency inside extauth (Pipeline.check).",
            [],
            {(): self._checks.latency},
        )
        yield histogram_family(
            "extauth_check_phase_duration_seconds",
            "Check latency per phase.",
            ["phase"],
            {(phase,): histogram for phase, histogram in self._checks.phases.items()},
        )
        if self._pipeline is not None:
            yield CounterMetricFamily(
                "extauth_shadow_differences",
                "Checks where the shadow policy decided differently.",
                value=self._pipeline.shadow_differences,
            )

    def _limiter_metrics(self) -> Iterator[Metric]:
        stats = self._limiter.stats
        for name, help_text, value in (
            ("extauth_ratelimit_checks", "Requests counted against rate limits.", stats.requests),
            ("extauth_ratelimit_rejections", "Requests rejected by an enforced limit (429 or 503).", stats.rejections),
            ("extauth_ratelimit_shadow_rejections", "Would-be rejections by shadow limits.", stats.shadow_rejections),
            ("extauth_ratelimit_degraded", "Requests answered by a failure mode instead of the store.", stats.degraded),
            (
                "extauth_ratelimit_short_circuited",
                "Store calls skipped because the breaker was open.",
                stats.short_circuited,
            ),
            ("extauth_ratelimit_queue_refused", "Requests over a queued limit answered at once (429): the wait "
             "exceeded max_wait or the key's queue was full.", stats.queue_refused),
            ("extauth_ratelimit_queue_cancelled", "Queued requests that gave up waiting (their units released).",
             stats.queue_cancelled),
        ):
            yield CounterMetricFamily(name, help_text, value=value)
        yield histogram_family("extauth_ratelimit_queue_wait_seconds",
                               "Waits of queued requests that were then allowed.", [],
                               {(): self._limiter.queue_waits})
        yield GaugeMetricFamily("extauth_ratelimit_queue_waiting", "Checks waiting in queued mode now.",
                                value=sum(self._limiter.waiting.values()))
        yield GaugeMetricFamily(
            "extauth_ratelimit_breaker_open",
            "1 while the store's circuit breaker is open or probing.",
            value=1 if self._limiter.degraded else 0,
        )

    def _redis_metrics(self) -> Iterator[Metric]:
        yield histogram_family(
            "extauth_redis_duration_seconds",
            "Redis call latency by operation.",
            ["operation"],
            {(operation,): histogram for operation, histogram in self._redis.latency.items()},
        )
        errors = CounterMetricFamily(
            "extauth_redis_errors", "Failed Redis calls by operation and kind.", labels=["operation", "kind"]
        )
        for (operation, kind), count in sorted(self._redis.errors.items()):
            errors.add_metric([operation, kind], count)
        yield errors

    def _audit_metrics(self) -> Iterator[Metric]:
        stats = self._audit.stats
        yield GaugeMetricFamily(
            "extauth_audit_queue_depth", "Audit events waiting for the writer.", value=self._audit.depth
        )
        yield GaugeMetricFamily(
            "extauth_audit_queue_capacity",
            "audit.queue_size (denies may add deny_overflow).",
            value=self._audit.queue.queue_size,
        )
        written = CounterMetricFamily(
            "extauth_audit_events_written", "Audit lines written, by event type.", labels=["event"]
        )
        for event, count in sorted(stats.written.items()):
            written.add_metric([event], count)
        yield written
        dropped = CounterMetricFamily(
            "extauth_audit_events_dropped",
            "Audit events lost: allow/completion to overflow, deny past deny_overflow, write_failed after retries.",
            labels=["kind"],
        )
        for kind in ("allow", "completion", "deny", "write_failed"):
            dropped.add_metric([kind], stats.dropped.get(kind, 0))
        yield dropped
        yield CounterMetricFamily(
            "extauth_audit_events_sampled_out", "Allowed requests left out by sampling.", value=stats.sampled_out
        )
        yield CounterMetricFamily(
            "extauth_audit_deny_overflow", "Denies queued beyond queue_size.", value=stats.deny_overflow
        )
        yield CounterMetricFamily(
            "extauth_audit_write_errors", "Failed writes to the audit output.", value=stats.write_errors
        )

    def _policy_metrics(self) -> Iterator[Metric]:
        stats = self._policy.stats
        reloads = CounterMetricFamily("extauth_policy_reloads", "Policy reloads by result.", labels=["result"])
        reloads.add_metric(["ok"], stats.reloads)
        reloads.add_metric(["failed"], stats.failures)
        yield reloads
        rejections = CounterMetricFamily(
            "extauth_policy_reload_rejections",
            "Rejected policy reloads by reason: invalid (file:line errors), internal_error (an unexpected exception).",
            labels=["reason"],
        )
        for reason, count in sorted(stats.rejected.items()):
            rejections.add_metric([reason], count)
        yield rejections
        triggers = CounterMetricFamily(
            "extauth_policy_reload_attempts", "Policy reload attempts by trigger.", labels=["trigger"]
        )
        for trigger, count in sorted(stats.by_trigger.items()):
            triggers.add_metric([trigger], count)
        yield triggers
        info = GaugeMetricFamily("extauth_policy_info", "The policy version in force (value 1).", labels=["version"])
        info.add_metric([self._policy.current.version], 1)
        yield info

    def _expression_errors(self) -> Metric:
        errors = CounterMetricFamily(
            "extauth_policy_expression_errors",
            "CEL expressions that failed at run time, by rule: a deny rule then denies, an allow rule does not match.",
            labels=["rule"],
        )
        for rule, count in sorted(self._evaluation.expression_errors.items()):
            errors.add_metric([rule], count)
        return errors

    def _jwks_metrics(self) -> Iterator[Metric]:
        age = GaugeMetricFamily(
            "extauth_jwks_age_seconds", "Seconds since the provider's keys last loaded.", labels=["provider"]
        )
        failures = CounterMetricFamily(
            "extauth_jwks_refresh_failures", "Failed JWKS fetches by provider.", labels=["provider"]
        )
        refreshes = CounterMetricFamily(
            "extauth_jwks_refreshes", "Successful JWKS loads by provider.", labels=["provider"]
        )
        for store in self._key_stores:
            name = getattr(store, "name", None)
            if name is None or not hasattr(store, "refresh_failures"):
                continue  # shared secrets are never refreshed
            if store.loaded_at is not None and self._clock is not None:
                age.add_metric([name], max(0.0, self._clock.monotonic() - store.loaded_at))
            failures.add_metric([name], store.refresh_failures)
            refreshes.add_metric([name], store.refreshes)
        yield age
        yield failures
        yield refreshes

    def _introspection_metrics(self) -> Iterator[Metric]:
        stats = self._introspector.stats
        yield CounterMetricFamily("extauth_introspection_calls", "Calls made to the introspection endpoint.",
                                  value=stats.calls)
        cache = CounterMetricFamily("extauth_introspection_cache", "Introspection answers looked up by token digest.",
                                    labels=["result"])
        cache.add_metric(["hit"], stats.cache_hits)
        cache.add_metric(["miss"], stats.cache_misses)
        yield cache
        yield CounterMetricFamily("extauth_introspection_joined",
                                  "Checks that waited for a call already made for the same token.", value=stats.joined)
        errors = CounterMetricFamily("extauth_introspection_errors",
                                     "Introspections that could not be made or used, by kind.", labels=["kind"])
        for kind in ("timeout", "http", "invalid_answer", "breaker_open"):
            errors.add_metric([kind], stats.errors[kind])
        yield errors
        yield GaugeMetricFamily("extauth_introspection_breaker_open",
                                "1 while the introspection endpoint's breaker is open or half-open.",
                                value=0 if self._introspector.breaker.state == "closed" else 1)
