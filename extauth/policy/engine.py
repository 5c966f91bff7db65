"""Policy evaluation, compiled once per load.

Semantics: the first route (in file order) whose match holds decides; no route → 403 (default deny).
A public route admits anyone. Otherwise a principal is required (401 without one), any matching `deny`
rule wins over any matching `allow` rule, and no matching rule → 403. The allowing rule's headers go upstream.
"""

from dataclasses import dataclass

from extauth.clock import Clock, SystemClock
from extauth.decision import Decision
from extauth.identity.principal import Principal
from extauth.policy.explain import Explanation, RouteTrace, RuleTrace
from extauth.policy.index import RouteIndex
from extauth.policy.loader import PolicySet
from extauth.policy.matching import NO_PARAMS, CompiledRoute, Params, compile_route
from extauth.policy.roles import granting_roles
from extauth.policy.rules import CompiledRule, compile_rule
from extauth.reasons import Reason
from extauth.request import Request

_SYSTEM_CLOCK = SystemClock()


@dataclass(frozen=True, slots=True)
class _Route:
    match: CompiledRoute
    public: bool
    #: File order; evaluated deny rules first (any match wins), then allow rules (the first match decides).
    rules: tuple[CompiledRule, ...]
    deny_rules: tuple[CompiledRule, ...]
    allow_rules: tuple[CompiledRule, ...]


class PolicyEngine:
    def __init__(self, policy_set: PolicySet, clock: Clock = _SYSTEM_CLOCK) -> None:
        self.version = policy_set.version
        granting = granting_roles({role: parents for loaded in policy_set.documents
                                   for role, parents in loaded.document.roles.items()})
        routes = []
        for loaded in policy_set.documents:
            for route in loaded.document.routes:
                route_id = f"{loaded.document.metadata.name}/{route.name}"
                rules = tuple(compile_rule(route_id, rule, granting, clock) for rule in route.rules)
                routes.append(_Route(compile_route(route_id, len(routes), route.match), route.public, rules,
                                     tuple(rule for rule in rules if rule.deny),
                                     tuple(rule for rule in rules if not rule.deny)))
        self._routes = tuple(routes)
        self._index = RouteIndex([route.match for route in routes])

    def authorize(self, request: Request, principal: Principal | None) -> Decision:
        version = self.version
        found = self._index.first_match(request)
        if found is None:
            return Decision.deny(Reason.NO_MATCHING_ROUTE, "no route matches this request",
                                 principal=principal, policy_version=version)
        matched, params = found
        route = self._routes[matched.position]
        route_id = matched.route_id
        if route.public:
            return Decision(True, Reason.PUBLIC_ROUTE, principal=principal, route=route_id, rule=route_id,
                            policy_version=version, params=params)
        if principal is None:
            return Decision.deny(Reason.MISSING_TOKEN, "credentials are required", route=route_id,
                                 policy_version=version)
        for rule in route.deny_rules:
            if rule.holds(request, principal, params):
                return Decision.deny(Reason.DENIED_BY_RULE, "denied by policy", principal=principal,
                                     route=route_id, rule=rule.rule_id, policy_version=version)
        for rule in route.allow_rules:
            if rule.holds(request, principal, params):
                return Decision(True, Reason.OK, principal=principal, route=route_id, rule=rule.rule_id,
                                policy_version=version, params=params,
                                upstream_headers=rule.upstream_headers(principal, params) if rule.headers else [])
            if rule.ambiguous(request, principal, params):
                return Decision.deny(Reason.AMBIGUOUS_REQUEST, "a repeated header or query parameter has values "
                                     "that disagree", principal=principal, route=route_id, rule=rule.rule_id,
                                     policy_version=version)
        return Decision.deny(Reason.FORBIDDEN, "no rule allows this request", principal=principal,
                             route=route_id, policy_version=version)

    def explain(self, request: Request, principal: Principal | None) -> Explanation:
        """The decision `authorize` makes, with every route tried and every rule of the deciding route."""
        decision = self.authorize(request, principal)
        routes = []
        for route in self._routes:
            why = route.match.mismatch(request)
            routes.append(RouteTrace(route.match.route_id, why is None, why or ""))
        deciding = next((route for route in self._routes if route.match.route_id == decision.route), None)
        if deciding is None:
            return Explanation(decision, tuple(routes), (), NO_PARAMS)
        params = deciding.match.match(request) or NO_PARAMS
        return Explanation(decision, tuple(routes), tuple(_trace(rule, request, principal, params)
                                                   for rule in deciding.rules), params)


def _trace(rule: CompiledRule, request: Request, principal: Principal | None, params: Params) -> RuleTrace:
    effect = "deny" if rule.deny else "allow"
    if principal is None:
        return RuleTrace(rule.rule_id, effect, False, "not evaluated: no credentials")
    failure = rule.failure(request, principal, params)
    return RuleTrace(rule.rule_id, effect, failure is None, failure or "")
