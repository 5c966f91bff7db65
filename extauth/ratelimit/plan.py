"""Limits declared in policy files, compiled once per policy load into per-request LimitChecks.

A limit attached to a route applies to every request that route allows; one attached to a rule applies
when that rule is the one that allows. The counting key is the limit's id plus the values of its key parts
(`demo/limited/per-subject|subject=alice`), so each subject, tenant or client IP has its own bucket.
"""

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from extauth.clock import Clock
from extauth.decision import Decision
from extauth.identity.principal import Principal
from extauth.policy.conditions import MISSING, Check, claim_at, compile_condition
from extauth.policy.loader import PolicySet
from extauth.policy.model import RateLimit, Window
from extauth.policy.roles import granting_roles
from extauth.policy.syntax import claim_path
from extauth.ratelimit.model import Limit, LimitCheck
from extauth.request import Request

#: Override conditions for anonymous callers (public routes) see a principal with no roles or claims.
ANONYMOUS = Principal(subject="", identity="", issuer="", provider="", key_id=None, roles=frozenset(),
                      claims=MappingProxyType({}), expires_at=None)
_MAX_KEY_VALUE = 64
KeyPart = Callable[[Request, Principal | None, Decision], str]


def _bounded(value: str, always_hash: bool = False) -> str:
    """Key values are client-influenced: braces would change Redis Cluster hash tags, long ones bloat keys,
    and header values may be secrets that must not appear in keys or audit events."""
    if always_hash or len(value) > _MAX_KEY_VALUE:
        return "#" + hashlib.blake2b(value.encode(), digest_size=8).hexdigest()
    return value.replace("{", "(").replace("}", ")").replace("|", "/")


def _key_part(spec: str) -> KeyPart:
    kind, _, name = spec.partition(":")
    if kind == "subject":
        return lambda request, principal, decision: _bounded(principal.identity) if principal else "~"
    if kind == "issuer":
        return lambda request, principal, decision: _bounded(principal.issuer) if principal else "~"
    if kind == "client_ip":
        return lambda request, principal, decision: request.source_address
    if kind == "route":
        return lambda request, principal, decision: decision.route or "~"
    if kind == "method":
        return lambda request, principal, decision: request.method
    if kind == "host":
        return lambda request, principal, decision: _bounded(request.hostname)
    if kind == "claim":
        path = claim_path(name)

        def claim(request: Request, principal: Principal | None, decision: Decision) -> str:
            value = claim_at(principal.claims, path) if principal else MISSING
            if value is MISSING:
                return "~"
            return _bounded(",".join(map(str, value)) if isinstance(value, list) else str(value))
        return claim
    if kind == "param":
        return lambda request, principal, decision: _bounded(decision.params.get(name, "~"))
    if kind == "context":
        return lambda request, principal, decision: _bounded(request.context_extensions.get(name, "~"))
    if kind == "header":
        return lambda request, principal, decision: _bounded(request.headers.get(name, ""), always_hash=True)
    raise ValueError(f"unknown key part {spec!r}")  # the schema admits only the kinds above


def _limits(windows: list[Window]) -> tuple[Limit, ...]:
    return tuple(Limit(window.requests, window.per) for window in windows)


@dataclass(frozen=True, slots=True)
class CompiledLimit:
    limit_id: str
    parts: tuple[tuple[str, KeyPart], ...]
    windows: tuple[Limit, ...]
    overrides: tuple[tuple[tuple[Check, ...], tuple[Limit, ...]], ...]
    failure_mode: str
    shadow: bool
    cost: int

    def checks(self, request: Request, principal: Principal | None, decision: Decision) -> list[LimitCheck]:
        key = self.limit_id + "".join(f"|{name}={part(request, principal, decision)}" for name, part in self.parts)
        windows = self.windows
        if self.overrides:
            who, params = principal or ANONYMOUS, decision.params
            for conditions, limits in self.overrides:
                if all(check.test(request, who, params) for check in conditions):
                    windows = limits
                    break
        return [LimitCheck(key, limit, self.cost, self.failure_mode, self.shadow)  # type: ignore[arg-type]
                for limit in windows]


class RateLimitPlan:
    """Which limits apply to an allowed decision, by the route and rule that allowed it."""

    def __init__(self, policy_set: PolicySet, clock: Clock) -> None:
        granting = granting_roles({role: parents for loaded in policy_set.documents
                                   for role, parents in loaded.document.roles.items()})
        by_scope: dict[str, tuple[CompiledLimit, ...]] = {}
        for loaded in policy_set.documents:
            for route in loaded.document.routes:
                route_id = f"{loaded.document.metadata.name}/{route.name}"
                if route.limits:
                    by_scope[route_id] = tuple(_compile(route_id, limit, granting, clock) for limit in route.limits)
                for rule in route.rules:
                    rule_id = f"{route_id}/{rule.name}"
                    if rule.limits:
                        by_scope[rule_id] = tuple(_compile(rule_id, limit, granting, clock) for limit in rule.limits)
        self._by_scope: Mapping[str, tuple[CompiledLimit, ...]] = by_scope

    def __bool__(self) -> bool:
        return bool(self._by_scope)

    def checks_for(self, request: Request, decision: Decision) -> list[LimitCheck]:
        checks: list[LimitCheck] = []
        scopes = (decision.route,) if decision.rule == decision.route else (decision.route, decision.rule)
        for scope in scopes:
            for limit in self._by_scope.get(scope or "", ()):
                checks.extend(limit.checks(request, decision.principal, decision))
        return checks


def _compile(scope: str, limit: RateLimit, granting: Mapping[str, frozenset[str]], clock: Clock) -> CompiledLimit:
    return CompiledLimit(
        limit_id=f"{scope}/{limit.name}",
        parts=tuple((spec, _key_part(spec)) for spec in limit.key),
        windows=_limits(limit.windows),
        overrides=tuple((compile_condition(override.when, granting, clock), _limits(override.windows))
                        for override in limit.overrides),
        failure_mode=limit.failure_mode,
        shadow=limit.shadow,
        cost=limit.cost,
    )
