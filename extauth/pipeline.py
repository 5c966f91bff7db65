"""The Check path: screen → authenticate → authorize → WAF → rate-limit → respond, with one audit event per decision.

Failure semantic, chosen on purpose: fail closed. Anything unexpected inside a phase becomes a deny with
reason `internal_error` (HTTP 500), is logged with its traceback, and is still audited.
"""

import time
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Protocol

import structlog
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse

from extauth.audit.events import decision_event
from extauth.audit.redact import Redactor
from extauth.audit.sink import AuditSink
from extauth.bundle.compiled import CompiledPolicy
from extauth.clock import SystemClock
from extauth.decision import Decision
from extauth.identity.principal import AuthenticationError, Principal
from extauth.metrics import CheckMetrics
from extauth.ratelimit import MemoryStorage, RateLimiter
from extauth.ratelimit.phase import RateLimitPhase
from extauth.ratelimit.plan import limit_changes
from extauth.reasons import Reason
from extauth.request import Request
from extauth.respond import Responder
from extauth.screening.waf import WafEngine

if TYPE_CHECKING:  # the `otel` extra is imported only when tracing is configured
    from extauth.tracing import CheckTracer

log = structlog.get_logger("extauth.pipeline")


class Authenticate(Protocol):
    @property
    def ready(self) -> bool: ...

    async def authenticate(self, headers: Mapping[str, str]) -> Principal | None: ...


class PolicySource(Protocol):
    """The policy in force (swapped atomically on reload) and an optional candidate evaluated in shadow."""

    current: CompiledPolicy
    shadow: CompiledPolicy | None


class Stopwatch:
    """Per-phase timings of one Check: `lap(phase)` records µs since the previous lap (or the start)."""

    __slots__ = ("_last", "laps", "started")

    def __init__(self) -> None:
        self.started = self._last = time.perf_counter_ns()
        self.laps: dict[str, int] = {}

    def lap(self, phase: str) -> None:
        now = time.perf_counter_ns()
        self.laps[phase] = (now - self._last) // 1000
        self._last = now

    def elapsed_us(self) -> int:
        return (time.perf_counter_ns() - self.started) // 1000


class Pipeline:
    def __init__(self, authenticator: Authenticate, policy: PolicySource, responder: Responder,
                 audit: AuditSink, instance: str, *, redactor: Redactor | None = None,
                 metrics: CheckMetrics | None = None, rate_limit: RateLimitPhase | None = None,
                 tracer: "CheckTracer | None" = None) -> None:
        self._authenticator = authenticator
        self._policy = policy
        self._responder = responder
        self._audit = audit
        self._instance = instance
        self._redactor = redactor or Redactor()
        self.metrics = metrics or CheckMetrics()
        self._rate_limit = rate_limit or RateLimitPhase(RateLimiter(MemoryStorage(), SystemClock()))
        #: None (tracing off) costs one comparison per Check; spans are built after the answer (extauth/tracing.py).
        self._tracer = tracer
        #: Checks where the shadow policy would have decided differently (allow vs deny or another status).
        self.shadow_differences = 0

    @property
    def traced(self) -> bool:
        return self._tracer is not None

    async def check(self, check_request: CheckRequest, trace_context: Mapping[str, str] | None = None,
                    ) -> CheckResponse:
        """`trace_context`: the caller's gRPC metadata (`traceparent`, `tracestate`), read only when `traced`."""
        watch = Stopwatch()
        request = Request(check_request)
        live, shadow = self._policy.current, self._policy.shadow
        decision: Decision | None = None
        shadow_decision = None
        shadow_limits: dict[str, list[str]] | None = None
        try:
            decision = authorized = await self._decide(live, request, watch)
            if decision.allowed and live.limits:
                decision = None  # a Check cancelled while it waits for its limit (queued mode) is audited as cancelled
                decision = await self._rate_limit.apply(live.limits, request, authorized)
                watch.lap("rate_limit")
            if shadow is not None:
                shadow_decision = await self._shadow_decide(shadow, request)
                shadow_limits = _shadow_limit_changes(live, authorized, shadow, shadow_decision, request)
                watch.lap("shadow")
            response = self._responder.render(decision, request.request_id, live.engine.owned_headers,
                                              egress=request.is_egress)
            watch.lap("respond")
            return response
        except Exception:
            log.exception("check_failed", request_id=request.request_id,
                          reason=decision.reason.value if decision else None)
            decision = Decision.deny(Reason.INTERNAL_ERROR, "internal error", policy_version=live.version)
            return self._responder.render(decision, request.request_id)
        finally:
            if decision is None:  # cancelled (Envoy's timeout) before any decision: still audited
                decision = Decision.deny(Reason.CHECK_CANCELLED, "the check was cancelled", policy_version=live.version)
            latency_us = watch.elapsed_us()
            event = decision_event(request, decision, latency_us, self._instance, watch.laps, self._redactor)
            if shadow_decision is not None:
                self._add_shadow(event, decision, shadow_decision)
                if shadow_limits is not None:
                    event.update(shadow_limits_differ=bool(shadow_limits))
                if shadow_limits:
                    event.update(shadow_limit_changes=shadow_limits)
            self._audit.emit(event)
            self.metrics.record(event["decision"], event["reason"], latency_us, watch.laps)
            if decision.waf is not None:
                self.metrics.record_waf(decision.waf)
            if self._tracer is not None:
                self._tracer.record(request, decision, watch.started, watch.laps, trace_context or {})

    async def _decide(self, policy: CompiledPolicy, request: Request, watch: Stopwatch | None = None) -> Decision:
        if not self._authenticator.ready:
            return Decision.deny(Reason.NOT_READY, "the authorization service is starting",
                                 policy_version=policy.version)
        screened = policy.screener.screen(request)
        if watch:
            watch.lap("screen")
        if screened is not None:
            return replace(screened, policy_version=policy.version)
        if request.is_egress:  # the caller is its certificate: a token it carries is for the external API
            decision = policy.egress.authorize(request)
            if watch:
                watch.lap("authorize")
            return decision
        try:
            principal = await self._authenticator.authenticate(request.headers)
        except AuthenticationError as error:
            return Decision.deny(error.reason, error.description, policy_version=policy.version)
        finally:
            if watch:
                watch.lap("authenticate")
        decision = policy.engine.authorize(request, principal)
        if watch:
            watch.lap("authorize")
        waf = policy.screener.waf
        if waf is not None and decision.allowed:  # a denied request reaches no upstream: nothing to protect
            decision = _firewall(waf, request, decision)
            if watch:
                watch.lap("waf")
        return decision

    async def _shadow_decide(self, shadow: CompiledPolicy, request: Request) -> Decision:
        """A broken candidate policy is reported, never allowed to change the live answer."""
        try:
            return await self._decide(shadow, request)
        except Exception:
            log.exception("shadow_check_failed", request_id=request.request_id)
            return Decision.deny(Reason.INTERNAL_ERROR, "internal error", policy_version=shadow.version)

    def _add_shadow(self, event: dict[str, object], live: Decision, shadow: Decision) -> None:
        differs = live.allowed != shadow.allowed or live.status != shadow.status
        if differs:
            self.shadow_differences += 1
        event.update(shadow_decision="allow" if shadow.allowed else "deny", shadow_status=shadow.status,
                     shadow_reason=shadow.reason.value, shadow_rule=shadow.rule,
                     shadow_policy_version=shadow.policy_version, shadow_differs=differs)


def _firewall(waf: WafEngine, request: Request, allowed: Decision) -> Decision:
    """The allow stands unless the Core Rule Set's score reaches the threshold in block mode; any match is audited.

    It runs after authorization (docs/waf.md#cost): every request it would see otherwise is denied anyway, and
    ModSecurity costs about as much as verifying a token.
    """
    verdict = waf.inspect(request)
    if verdict is None:
        return allowed
    if verdict.blocks:
        return Decision.deny(Reason.WAF_BLOCKED, "request blocked by the web application firewall",
                             rule=f"waf/{verdict.matches[0][0]}" if verdict.matches else "waf",
                             route=allowed.route, principal=allowed.principal,
                             policy_version=allowed.policy_version, waf=verdict.audit())
    return replace(allowed, waf=verdict.audit())


def _shadow_limit_changes(live: CompiledPolicy, authorized: Decision, shadow: CompiledPolicy, candidate: Decision,
                          request: Request) -> dict[str, list[str]] | None:
    """Which limits the candidate would apply differently (worked out, never counted: a candidate must not consume
    live budget). A failure here is logged and leaves the comparison out of the event; it never alters the live
    answer."""
    try:
        return limit_changes(live.limits.applicable(request, authorized) if authorized.allowed else (),
                             shadow.limits.applicable(request, candidate) if candidate.allowed else ())
    except Exception:
        log.exception("shadow_limits_failed", request_id=request.request_id)
        return None
