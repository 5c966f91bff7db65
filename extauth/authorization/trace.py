"""Why a decision came out as it did: every route tried and every rule of the deciding route.

Built by `PolicyEngine.explain` for `extauth explain` and `extauth test`; never on the serving path.
"""

from collections.abc import Mapping
from dataclasses import dataclass

from extauth.decision import Decision


@dataclass(frozen=True, slots=True)
class RouteTrace:
    route: str
    matched: bool
    #: Why the route does not match (e.g. `path /x does not match prefix /api/`); '' when it does.
    why: str = ""
    #: The route's rank (docs/policy.md): of the matching routes, the most specific decides.
    specificity: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class RuleTrace:
    rule: str
    effect: str
    matched: bool
    #: The first condition that fails and why (e.g. `roles: ...`); '' when the rule matches.
    why: str = ""


@dataclass(frozen=True, slots=True)
class Explanation:
    decision: Decision
    #: Every route in policy order; the most specific match decides (file order among equals).
    routes: tuple[RouteTrace, ...]
    #: The deciding route's rules in file order (empty for a public route or when no route matches).
    rules: tuple[RuleTrace, ...]
    #: The deciding route's path parameters (`{tenant}` → `acme`).
    params: Mapping[str, str]

    def lines(self) -> list[str]:
        """A readable trace, one line per route and rule, ending with the decision."""
        out = []
        refused = self.decision.reason == "method_not_allowed" and self.decision.route is not None
        level = next((trace.specificity for trace in self.routes if trace.route == self.decision.route), None)
        for trace in self.routes:
            deciding = trace.route == self.decision.route and not refused
            if deciding:
                state = "matched (decides)"
            elif trace.matched:
                state = "matched (less specific)" if level is not None and trace.specificity < level \
                    else "matched (shadowed)"
            else:
                state = "no"
            out.append(f"route {trace.route}: {state}{': ' + trace.why if trace.why else ''}")
            if deciding:
                out.extend(f"  {'├' if rule is not self.rules[-1] else '└'} rule {rule.rule} ({rule.effect}): "
                           f"{'matched' if rule.matched else 'not matched: ' + rule.why}" for rule in self.rules)
        if self.params:
            out.append("params: " + ", ".join(f"{name}={value}" for name, value in self.params.items()))
        decision = self.decision
        if refused:
            out.append(f"the most specific matching resource ({decision.route}) does not admit this method; "
                       "broader routes are not consulted")
        verdict = "allow" if decision.allowed else "deny"
        out.append(f"decision: {verdict} {decision.status} {decision.reason} (rule {decision.rule or '-'})")
        out.extend(f"upstream header: {name}: {value}" for name, value in decision.upstream_headers)
        return out
