"""The Check path: authenticate → authorize → respond, with one audit event per decision.

Failure semantic, chosen on purpose: fail closed. Anything unexpected inside a phase becomes a deny with
reason `internal_error` (HTTP 500), is logged with its traceback, and is still audited.
"""

import time
from collections.abc import Mapping
from typing import Protocol

import structlog
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse

from extauth.audit.events import decision_event
from extauth.audit.sink import AuditSink
from extauth.decision import Decision
from extauth.identity.principal import AuthenticationError, Principal
from extauth.policy.engine import PolicyEngine
from extauth.reasons import Reason
from extauth.request import Request
from extauth.respond import Responder

log = structlog.get_logger("extauth.pipeline")


class Authenticate(Protocol):
    @property
    def ready(self) -> bool: ...

    async def authenticate(self, headers: Mapping[str, str]) -> Principal | None: ...


class PolicySource(Protocol):
    """Holds the policy currently in force; reloads swap it atomically."""

    @property
    def engine(self) -> PolicyEngine: ...


class Pipeline:
    def __init__(self, authenticator: Authenticate, policy: PolicySource, responder: Responder,
                 audit: AuditSink, instance: str) -> None:
        self._authenticator = authenticator
        self._policy = policy
        self._responder = responder
        self._audit = audit
        self._instance = instance

    async def check(self, check_request: CheckRequest) -> CheckResponse:
        started = time.perf_counter_ns()
        request = Request(check_request)
        decision = Decision.deny(Reason.CHECK_CANCELLED, "the check was cancelled")
        try:
            decision = await self._decide(request)
            return self._responder.render(decision, request.request_id)
        except Exception:
            log.exception("check_failed", request_id=request.request_id, reason=decision.reason.value)
            decision = Decision.deny(Reason.INTERNAL_ERROR, "internal error")
            return self._responder.render(decision, request.request_id)
        finally:
            latency_us = (time.perf_counter_ns() - started) // 1000
            self._audit.emit(decision_event(request, decision, latency_us, self._instance))

    async def _decide(self, request: Request) -> Decision:
        if not self._authenticator.ready:
            return Decision.deny(Reason.NOT_READY, "the authorization service is starting")
        try:
            principal = await self._authenticator.authenticate(request.headers)
        except AuthenticationError as error:
            return Decision.deny(error.reason, error.description)
        return self._policy.engine.authorize(request, principal)
