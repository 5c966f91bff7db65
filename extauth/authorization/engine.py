"""Policy evaluation, compiled once per load.

Semantics (docs/policy.md): the most specific route whose resource (host, Envoy route labels, path) matches the
canonical request decides, ties broken by file order; if no route at that level admits the method → 405 (a broader
route never takes over); no route → 403 (default deny). A public route admits anyone, or,
when it has rules (which read only the request), whatever they allow, with or without credentials; a CORS preflight
is admitted without credentials where the route allows it. Otherwise a principal is required (401 without one).
Either way any matching `deny` rule wins over any matching `allow` rule, and no matching rule → 403. The allowing
rule's headers go upstream; every header any rule can set is owned by extauth (`owned_headers`) and removed from
what the client sent.
"""

from collections.abc import Mapping
from dataclasses import dataclass

from extauth.authorization.index import RouteIndex
from extauth.authorization.matching import CompiledRoute, compile_route
from extauth.authorization.rules import CompiledRule, compile_rule
from extauth.authorization.trace import Explanation, RouteTrace, RuleTrace
from extauth.clock import Clock, SystemClock
from extauth.conditions.params import NO_PARAMS, Params
from extauth.decision import Decision
from extauth.documents.loader import PolicySet
from extauth.identity.principal import ANONYMOUS, Principal
from extauth.reasons import Reason
from extauth.request import Request, canonical_method

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
    def __init__(self, policy_set: PolicySet, clock: Clock = _SYSTEM_CLOCK,
                 granting: Mapping[str, frozenset[str]] | None = None) -> None:
        """`granting`: the policy set's role closure, when the bundle has already computed it."""
        self.version = policy_set.version
        granting = policy_set.granting_roles() if granting is None else granting
        routes: list[_Route] = []
        for route_id, route in policy_set.routes():
            rules = tuple(compile_rule(route_id, rule, granting, clock) for rule in route.rules)
            routes.append(_Route(compile_route(route_id, len(routes), route.match, route.cors_preflight),
                                 route.public, rules,
                                 tuple(rule for rule in rules if rule.deny),
                                 tuple(rule for rule in rules if not rule.deny)))
        self._routes = tuple(routes)
        self._index = RouteIndex([route.match for route in routes])
        #: Every upstream header a rule of this policy can set: removed from the client's request on every allow.
        self.owned_headers: tuple[str, ...] = tuple(sorted({name for route in routes for rule in route.rules
                                                             for name, _ in rule.headers}))

    @property
    def routes(self) -> tuple[CompiledRoute, ...]:
        """Every route's matcher, in policy order (for `explain` and tests)."""
        return tuple(route.match for route in self._routes)

    def authorize(self, request: Request, principal: Principal | None) -> Decision:
        version = self.version
        matched, params, mismatch = self._index.resolve(request)
        if request.method == "OPTIONS" and ((matched is not None and matched.cors_preflight) or mismatch):
            preflight = self._preflight(request, principal, (matched,) if matched is not None else mismatch)
            if preflight is not None:
                return preflight
        if matched is None:
            if mismatch:
                return _method_not_allowed(mismatch, principal, version)
            return Decision.deny(Reason.NO_MATCHING_ROUTE, "no route matches this request",
                                 principal=principal, policy_version=version)
        route = self._routes[matched.position]
        route_id = matched.route_id
        if route.public:
            if not route.rules:
                return Decision(True, Reason.PUBLIC_ROUTE, principal=principal, route=route_id, rule=route_id,
                                policy_version=version, params=params)
            # The rules read only the request (documents/policy.py refuses others), so any stand-in principal will do.
            return self._by_rules(route, request, principal, principal or ANONYMOUS, params, Reason.PUBLIC_ROUTE)
        if principal is None:
            return Decision.deny(Reason.MISSING_TOKEN, "credentials are required", route=route_id,
                                 policy_version=version)
        return self._by_rules(route, request, principal, principal, params, Reason.OK)

    def _by_rules(self, route: _Route, request: Request, principal: Principal | None, judged: Principal,
                  params: Params, allowed: Reason) -> Decision:
        """Any matching deny rule denies; else the first matching allow rule allows (with reason `allowed`)."""
        version, route_id = self.version, route.match.route_id
        for rule in route.deny_rules:
            if rule.holds(request, judged, params):
                return Decision.deny(Reason.DENIED_BY_RULE, "denied by policy", principal=principal,
                                     route=route_id, rule=rule.rule_id, policy_version=version)
        for rule in route.allow_rules:
            if rule.holds(request, judged, params):
                return Decision(True, allowed, principal=principal, route=route_id, rule=rule.rule_id,
                                policy_version=version, params=params,
                                upstream_headers=rule.upstream_headers(judged, params) if rule.headers else [])
            if rule.ambiguous(request, judged, params):
                return Decision.deny(Reason.AMBIGUOUS_REQUEST, "a repeated header or query parameter has values "
                                     "that disagree", principal=principal, route=route_id, rule=rule.rule_id,
                                     policy_version=version)
        return Decision.deny(Reason.FORBIDDEN, "no rule allows this request", principal=principal,
                             route=route_id, policy_version=version)

    def _preflight(self, request: Request, principal: Principal | None,
                   level: tuple[CompiledRoute, ...]) -> Decision | None:
        """A CORS preflight asks whether a later request may be sent; it carries no credentials, so a route that
        opts in answers it for any method the same resource admits."""
        headers = request.headers
        wanted = headers.get("access-control-request-method")
        if "origin" not in headers or not wanted:
            return None
        route = next((route for route in level if route.cors_preflight), None)
        if route is None or not any(other.admits(canonical_method(wanted.strip())) for other in level):
            return None
        return Decision(True, Reason.CORS_PREFLIGHT, principal=principal, route=route.route_id,
                        rule=route.route_id, policy_version=self.version)

    def explain(self, request: Request, principal: Principal | None) -> Explanation:
        """The decision `authorize` makes, with every route tried and every rule of the deciding route."""
        decision = self.authorize(request, principal)
        routes: list[RouteTrace] = []
        for route in self._routes:
            why = route.match.mismatch(request)
            if why is None and not route.match.admits(request.method):
                why = f"method {request.method} is not one of {', '.join(sorted(route.match.methods or ()))}"
            routes.append(RouteTrace(route.match.route_id, why is None, why or "", route.match.specificity))
        deciding = next((route for route in self._routes if route.match.route_id == decision.route), None)
        if deciding is None or decision.reason is Reason.METHOD_NOT_ALLOWED:
            return Explanation(decision, tuple(routes), (), NO_PARAMS)
        params = deciding.match.match(request) or NO_PARAMS
        judged = principal or (ANONYMOUS if deciding.public else None)
        return Explanation(decision, tuple(routes), tuple(_trace(rule, request, judged, params)
                                                   for rule in deciding.rules), params)


def _method_not_allowed(level: tuple[CompiledRoute, ...], principal: Principal | None, version: str) -> Decision:
    """The most specific resource exists but not for this method: 405 with `Allow`, never a broader route."""
    methods = set().union(*(route.methods or () for route in level))
    if "GET" in methods:
        methods.add("HEAD")
    first = level[0].route_id
    return Decision.deny(Reason.METHOD_NOT_ALLOWED, "method not allowed for this resource", principal=principal,
                         route=first, rule=first, policy_version=version,
                         client_headers=[("allow", ", ".join(sorted(methods)))])


def _trace(rule: CompiledRule, request: Request, principal: Principal | None, params: Params) -> RuleTrace:
    effect = "deny" if rule.deny else "allow"
    if principal is None:
        return RuleTrace(rule.rule_id, effect, False, "not evaluated: no credentials")
    failure = rule.failure(request, principal, params)
    return RuleTrace(rule.rule_id, effect, failure is None, failure or "")
