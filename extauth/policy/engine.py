"""Policy evaluation, compiled once per load.

Semantics: the first route (in file order) whose match holds decides; no route → 403 (default deny).
A public route admits anyone. Otherwise a principal is required (401 without one), any matching `deny`
rule wins over any matching `allow` rule, and no matching rule → 403.
"""

from dataclasses import dataclass

from extauth.decision import Decision
from extauth.identity.principal import Principal
from extauth.policy.loader import PolicySet
from extauth.policy.model import Condition, Route
from extauth.reasons import Reason
from extauth.request import Request


@dataclass(frozen=True, slots=True)
class _CompiledRule:
    rule_id: str
    deny: bool
    #: Roles that satisfy the rule: the required ones and every role inheriting from them.
    accepted_roles: frozenset[str] | None
    subjects: frozenset[str] | None

    def holds(self, principal: Principal) -> bool:
        if self.accepted_roles is not None and self.accepted_roles.isdisjoint(principal.roles):
            return False
        return self.subjects is None or principal.subject in self.subjects


@dataclass(frozen=True, slots=True)
class _CompiledRoute:
    route_id: str
    path_exact: str | None
    path_prefix: str | None
    methods: frozenset[str] | None
    context_extensions: tuple[tuple[str, str], ...]
    public: bool
    rules: tuple[_CompiledRule, ...]

    def matches(self, request: Request) -> bool:
        path = request.path
        if self.path_exact is not None and path != self.path_exact:
            return False
        if self.path_prefix is not None and not path.startswith(self.path_prefix):
            return False
        if self.methods is not None and request.method not in self.methods:
            return False
        extensions = request.context_extensions
        return all(extensions.get(key) == value for key, value in self.context_extensions)


class PolicyEngine:
    def __init__(self, policy_set: PolicySet) -> None:
        self.version = policy_set.version
        granting = _granting_roles(policy_set)
        self._routes = tuple(
            _compile_route(loaded.document.metadata.name, route, granting)
            for loaded in policy_set.documents
            for route in loaded.document.routes
        )

    def authorize(self, request: Request, principal: Principal | None) -> Decision:
        version = self.version
        for route in self._routes:
            if route.matches(request):
                break
        else:
            return Decision.deny(Reason.NO_MATCHING_ROUTE, "no route matches this request",
                                 principal=principal, policy_version=version)
        route_id = route.route_id
        if route.public:
            return Decision(True, Reason.PUBLIC_ROUTE, principal=principal, route=route_id, rule=route_id,
                            policy_version=version)
        if principal is None:
            return Decision.deny(Reason.MISSING_TOKEN, "credentials are required", route=route_id,
                                 policy_version=version)
        allowed_by = None
        for rule in route.rules:
            if rule.holds(principal):
                if rule.deny:
                    return Decision.deny(Reason.DENIED_BY_RULE, "denied by policy", principal=principal,
                                         route=route_id, rule=rule.rule_id, policy_version=version)
                allowed_by = allowed_by or rule.rule_id
        if allowed_by is None:
            return Decision.deny(Reason.FORBIDDEN, "no rule allows this request", principal=principal,
                                 route=route_id, policy_version=version)
        return Decision(True, Reason.OK, principal=principal, route=route_id, rule=allowed_by,
                        policy_version=version)


def _granting_roles(policy_set: PolicySet) -> dict[str, frozenset[str]]:
    """role -> itself plus every role that inherits it, directly or transitively (cycles are rejected at load)."""
    inherits = {role: parents for loaded in policy_set.documents for role, parents in loaded.document.roles.items()}

    def ancestors(role: str) -> set[str]:
        found: set[str] = set()
        stack = list(inherits.get(role, ()))
        while stack:
            parent = stack.pop()
            if parent not in found:
                found.add(parent)
                stack.extend(inherits.get(parent, ()))
        return found

    granting: dict[str, set[str]] = {role: {role} for role in inherits}
    for role in inherits:
        for inherited in ancestors(role):
            granting[inherited].add(role)
    return {role: frozenset(holders) for role, holders in granting.items()}


def _compile_route(policy: str, route: Route, granting: dict[str, frozenset[str]]) -> _CompiledRoute:
    route_id = f"{policy}/{route.name}"
    match = route.match
    return _CompiledRoute(
        route_id=route_id,
        path_exact=match.path.exact if match.path else None,
        path_prefix=match.path.prefix if match.path else None,
        methods=frozenset(match.methods) if match.methods else None,
        context_extensions=tuple(sorted(match.context_extensions.items())),
        public=route.public,
        rules=tuple(_compile_rule(route_id, rule.name, rule.effect, rule.when, granting) for rule in route.rules),
    )


def _compile_rule(route_id: str, name: str, effect: str, when: Condition,
                  granting: dict[str, frozenset[str]]) -> _CompiledRule:
    accepted = frozenset().union(*(granting[role] for role in when.roles)) if when.roles else None
    return _CompiledRule(
        rule_id=f"{route_id}/{name}",
        deny=effect == "deny",
        accepted_roles=accepted,
        subjects=frozenset(when.subjects) if when.subjects else None,
    )
