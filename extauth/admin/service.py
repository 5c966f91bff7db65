"""The admin servicer: Status, Explain (against the live policy), Reload and TailAudit, for one process.

Everything it reports is read from the objects the Check path uses (the policy store, the key stores, the rate
limiter, the audit writer), so it describes what this process serves, not what the files on disk say. Callers:
anyone who can open the unix socket (mode 0600), anyone on loopback TCP, and over TLS the certificate identities
of `admin.allowed_clients` (any verified client certificate when it is empty).
"""

import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc

from extauth.admin.v1 import admin_pb2, admin_pb2_grpc
from extauth.audit.redact import is_secret_name
from extauth.audit.tail import TooManySubscribersError
from extauth.audit.writer import AuditWriter
from extauth.bundle.store import PolicyStore
from extauth.callers import caller_of
from extauth.clock import Clock
from extauth.config.schema import AdminConfig, AuthenticationConfig
from extauth.identity.authenticator import Authenticator
from extauth.ratelimit import RateLimiter
from extauth.request import Request
from extauth.tools.explain import described_principal, explain_with
from extauth.tools.synthetic import check_request_for_url

SERVICE_NAME = admin_pb2.DESCRIPTOR.services_by_name["Admin"].full_name


@dataclass(frozen=True, slots=True)
class ServedProcess:
    """What one extauth process is made of, as far as the admin API reads or drives it."""

    instance: str
    started_at: float
    policy: PolicyStore
    authentication: AuthenticationConfig
    authenticator: Authenticator
    limiter: RateLimiter
    audit: AuditWriter
    clock: Clock
    ready: Callable[[], bool]
    #: Reload the policy now (serialized with every other reload); True when it was swapped in.
    reload: Callable[[], Awaitable[bool]]


class AdminServicer(admin_pb2_grpc.AdminServicer):
    def __init__(self, process: ServedProcess, config: AdminConfig) -> None:
        self._process = process
        self._allowed = frozenset(config.allowed_clients)

    async def Status(self, request: admin_pb2.StatusRequest,  # noqa: N802 (the gRPC method name)
                     context: grpc.aio.ServicerContext) -> admin_pb2.StatusResponse:
        await self._admit(context)
        process = self._process
        policy = process.policy
        shadow = policy.shadow
        return admin_pb2.StatusResponse(
            instance=process.instance, pid=os.getpid(), start_time=_rfc3339(process.started_at),
            policy=admin_pb2.PolicyVersion(version=policy.current.version, source=str(policy.path)),
            shadow_policy=admin_pb2.PolicyVersion(version=shadow.version if shadow else "",
                                                  source=str(policy.shadow_path or "")),
            last_reload=self._reload_result(), identity_providers=list(self._providers()),
            rate_limit=self._rate_limit(), audit=self._audit(), ready=process.ready())

    async def Explain(self, request: admin_pb2.ExplainRequest,  # noqa: N802
                      context: grpc.aio.ServicerContext) -> admin_pb2.ExplainResponse:
        await self._admit(context)
        headers = {name.strip().lower(): value for name, value in request.headers.items()}
        credentials = sorted(name for name in headers if self._carries_credential(name))
        if credentials:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"header {credentials[0]!r} carries a credential: describe the principal with "
                                "subject and claims instead")
        claims = _claims(request.claims_json)
        if claims is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "claims_json must be a JSON object")
        policy = self._process.policy
        compiled, source = (policy.shadow, policy.shadow_path) if request.shadow else (policy.current, policy.path)
        if compiled is None or source is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "this process has no shadow policy")
        try:
            check = check_request_for_url(request.url or "/", (request.method or "GET").upper(), headers=headers,
                                          source=request.source_address or "192.0.2.10", peer=request.peer,
                                          context_extensions=dict(request.context_extensions))
        except ValueError as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"url {request.url!r}: {error}")
        subject = request.subject
        lines, allowed = explain_with(compiled, source, Request(check),
                                      lambda: described_principal(subject, claims) if subject else None)
        return admin_pb2.ExplainResponse(lines=lines, allowed=allowed, policy_version=compiled.version)

    async def Reload(self, request: admin_pb2.ReloadRequest,  # noqa: N802
                     context: grpc.aio.ServicerContext) -> admin_pb2.ReloadResponse:
        await self._admit(context)
        await self._process.reload()
        return admin_pb2.ReloadResponse(result=self._reload_result())

    async def TailAudit(self, request: admin_pb2.TailAuditRequest,  # noqa: N802
                        context: grpc.aio.ServicerContext) -> AsyncIterator[admin_pb2.AuditLine]:
        await self._admit(context)
        subscribers = self._process.audit.subscribers
        try:
            subscriber = subscribers.subscribe(tail_filter(request))
        except TooManySubscribersError as error:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(error))
        try:
            while (item := await subscriber.next()) is not None:
                line, dropped = item
                yield admin_pb2.AuditLine(json=line.rstrip("\n"), dropped_before=dropped)
        finally:
            subscribers.unsubscribe(subscriber)

    async def _admit(self, context: grpc.aio.ServicerContext) -> None:
        """Unix and loopback callers are admitted by the listener itself; over TLS the certificate must prove
        one of admin.allowed_clients when that is set."""
        caller = caller_of(context)
        if caller.transport == "tls" and self._allowed and not caller.identities & self._allowed:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "this client certificate is not in "
                                                                   "admin.allowed_clients")

    def _carries_credential(self, name: str) -> bool:
        authentication = self._process.authentication
        named = {source.header for source in authentication.token_sources if source.header}
        if authentication.api_keys is not None:
            named.add(authentication.api_keys.header)
        return name in named or is_secret_name(name)

    def _reload_result(self) -> admin_pb2.ReloadResult:
        policy = self._process.policy
        stats = policy.stats
        return admin_pb2.ReloadResult(
            ok=stats.last_error is None, trigger=stats.last_trigger, at=_rfc3339(stats.last_finished),
            errors=stats.last_error.split("\n") if stats.last_error else [], version=policy.current.version,
            reloads=stats.reloads, failures=stats.failures)

    def _providers(self) -> Sequence[admin_pb2.IdentityProvider]:
        process = self._process
        now = process.clock.monotonic()
        providers = []
        for config, store in zip(process.authentication.providers, process.authenticator.key_stores, strict=True):
            keys = getattr(store, "keys", None)
            loaded_at = getattr(store, "loaded_at", None)
            source = ("shared_secret" if config.jwks is None else
                      next(name for name in ("file", "url", "oidc_discovery") if getattr(config.jwks, name)))
            providers.append(admin_pb2.IdentityProvider(
                name=config.name, issuer=config.issuer, keys=len(keys.keys) if keys is not None else 0,
                ready=store.ready, keys_age_seconds=-1.0 if loaded_at is None else max(0.0, now - loaded_at),
                refreshes=getattr(store, "refreshes", 0), refresh_failures=getattr(store, "refresh_failures", 0),
                source=source))
        return providers

    def _rate_limit(self) -> admin_pb2.RateLimitBackend:
        limiter = self._process.limiter
        stats = limiter.stats
        return admin_pb2.RateLimitBackend(
            kind=limiter.storage.name, breaker=str(limiter.breaker.state),
            consecutive_failures=limiter.breaker.consecutive_failures, backend_calls=stats.backend_calls,
            backend_errors=stats.backend_errors, short_circuited=stats.short_circuited,
            last_error=str(limiter.last_error or ""))

    def _audit(self) -> admin_pb2.AuditWriterStatus:
        audit = self._process.audit
        stats = audit.stats
        return admin_pb2.AuditWriterStatus(
            queue_depth=audit.depth, queue_size=audit.queue.queue_size, dropped=stats.dropped,
            written=sum(stats.written.values()), sampled_out=stats.sampled_out,
            tail_subscribers=len(audit.subscribers))


def tail_filter(request: admin_pb2.TailAuditRequest) -> Callable[[dict[str, Any]], bool]:
    """Which events a TailAudit caller asked for; a decision, reason, subject or route filter keeps decision
    events only (the other kinds have none of those fields)."""
    kinds = frozenset(request.events)
    reasons = frozenset(request.reasons)
    decision, subject, route = request.decision, request.subject, request.route
    decisions_only = bool(decision or reasons or subject or route)

    def accepts(event: dict[str, Any]) -> bool:
        kind = event.get("event")
        if kinds and kind not in kinds:
            return False
        if not decisions_only:
            return True
        return kind == "decision" and (not decision or event.get("decision") == decision) and (
            not reasons or event.get("reason") in reasons) and (
            not subject or event.get("subject") == subject) and (not route or event.get("route") == route)
    return accepts


def _claims(text: str) -> dict[str, Any] | None:
    if not text:
        return {}
    try:
        claims = json.loads(text)
    except ValueError:
        return None
    return claims if isinstance(claims, dict) else None


def _rfc3339(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
