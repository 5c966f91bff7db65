"""OpenTelemetry spans for each Check and its phases (docs/tracing.md); needs the `otel` extra.

The spans are built once the Check has been answered, from the pipeline's stopwatch (its start and per-phase
laps), not opened and closed around each phase: with tracing off the pipeline holds no tracer and does no
tracing work at all, and with it on a Check pays for its spans once, after the response is rendered.

The parent is the W3C `traceparent` in the Check call's gRPC metadata, i.e. Envoy's ext_authz span when Envoy
traces, and its sampled flag decides; without one, `sampling_ratio` does. The `traceparent` header of the checked
HTTP request is NOT a parent: it is whatever the client sent (Envoy, when it traces, has already continued it in
its own span), and a client must not be able to force its requests to be traced or join our spans to a trace of
its choosing. Attributes are chosen, never copied: ids, the decision and names from the policy and from Envoy's
route, so no token, API key, cookie, header or query string can reach a span. The request id joins a span to its
audit events, where the rest is (redacted). A failure here is logged and never changes the answer.
"""

import time
from collections.abc import Mapping

import structlog
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from extauth.config.schema import TracingConfig
from extauth.decision import Decision
from extauth.reasons import Reason
from extauth.request import Request

CHECK_SPAN = "extauth.check"
#: Methods named as sent; any other is `_OTHER` (OpenTelemetry's rule), so a client cannot write into a span.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})
#: A collector that does not answer must not hold a stopping process for long.
EXPORT_TIMEOUT_SECONDS = 5
_PROPAGATOR = TraceContextTextMapPropagator()

log = structlog.get_logger("extauth.tracing")


class CheckTracer:
    """Turns one answered Check into a `extauth.check` span with a child span per phase lap."""

    def __init__(self, config: TracingConfig, instance: str, exporter: SpanExporter | None = None) -> None:
        """`exporter` replaces the OTLP one and exports each span as it ends (tests: InMemorySpanExporter)."""
        processor: SpanProcessor
        if exporter is None:
            processor = BatchSpanProcessor(OTLPSpanExporter(endpoint=config.endpoint,
                                                            insecure=config.endpoint.startswith("http://"),
                                                            timeout=EXPORT_TIMEOUT_SECONDS))
        else:
            processor = SimpleSpanProcessor(exporter)
        self._provider = TracerProvider(
            resource=Resource.create({"service.name": config.service_name, "service.instance.id": instance}),
            sampler=ParentBased(root=TraceIdRatioBased(config.sampling_ratio)))
        self._provider.add_span_processor(processor)
        self._tracer = self._provider.get_tracer("extauth")

    def record(self, request: Request, decision: Decision, started_ns: int, laps_us: Mapping[str, int],
               caller: Mapping[str, str]) -> None:
        """`started_ns` is the Check's `time.perf_counter_ns()` start, `laps_us` its phases in order, in µs, and
        `caller` the Check call's gRPC metadata, whose `traceparent` is the parent."""
        try:
            self._record(request, decision, started_ns, laps_us, caller)
        except Exception:  # the answer is already rendered and audited: tracing must not turn it into a failure
            log.exception("trace_failed", request_id=request.request_id)

    def _record(self, request: Request, decision: Decision, started_ns: int, laps_us: Mapping[str, int],
                caller: Mapping[str, str]) -> None:
        start = time.time_ns() - (time.perf_counter_ns() - started_ns)
        check = self._tracer.start_span(CHECK_SPAN, context=_PROPAGATOR.extract(caller), kind=SpanKind.SERVER,
                                        start_time=start)
        if not check.is_recording():  # not sampled: nothing more to build
            return
        check.set_attributes(_attributes(request, decision))
        if decision.reason is Reason.INTERNAL_ERROR:
            check.set_status(Status(StatusCode.ERROR, "internal error"))
        inside = set_span_in_context(check)
        phase_start = start
        for phase, microseconds in laps_us.items():
            phase_end = phase_start + microseconds * 1000
            self._tracer.start_span(f"extauth.{phase}", context=inside, start_time=phase_start).end(phase_end)
            phase_start = phase_end
        check.end()

    def shutdown(self) -> None:
        """Exports what is still queued (within the export timeout) and stops the exporter."""
        self._provider.shutdown()


def _attributes(request: Request, decision: Decision) -> dict[str, str | int]:
    method = request.wire_method
    attributes: dict[str, str | int] = {
        "extauth.request_id": request.request_id,
        "extauth.decision": "allow" if decision.allowed else "deny",
        "extauth.reason": decision.reason.value,
        "extauth.status": decision.status,  # as in the audit event: what extauth answered, not the upstream
        "http.request.method": method if method in KNOWN_METHODS else "_OTHER",
    }
    named = {"extauth.service": request.context_extensions.get("service"),
             "extauth.envoy_route": request.context_extensions.get("route"),
             "extauth.route": decision.route, "extauth.rule": decision.rule,
             "extauth.policy_version": decision.policy_version}
    attributes.update({key: value for key, value in named.items() if value})
    return attributes
