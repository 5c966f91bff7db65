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
    #: Every route in policy order; the first one matched decides, later matches are shadowed.
    routes: tuple[RouteTrace, ...]
    #: The deciding route's rules in file order (empty for a public route or when no route matches).
    rules: tuple[RuleTrace, ...]
    #: The deciding route's path parameters (`{tenant}` → `acme`).
    params: Mapping[str, str]

    def lines(self) -> list[str]:
        """A readable trace, one line per route and rule, ending with the decision."""
        out = []
        for trace in self.routes:
            deciding = trace.route == self.decision.route
            state = "matched (decides)" if deciding else "matched (shadowed)" if trace.matched else "no"
            out.append(f"route {trace.route}: {state}{': ' + trace.why if trace.why else ''}")
            if deciding:
                out.extend(f"  {'├' if rule is not self.rules[-1] else '└'} rule {rule.rule} ({rule.effect}): "
                           f"{'matched' if rule.matched else 'not matched: ' + rule.why}" for rule in self.rules)
        if self.params:
            out.append("params: " + ", ".join(f"{name}={value}" for name, value in self.params.items()))
        decision = self.decision
        verdict = "allow" if decision.allowed else "deny"
        out.append(f"decision: {verdict} {decision.status} {decision.reason} (rule {decision.rule or '-'})")
        out.extend(f"upstream header: {name}: {value}" for name, value in decision.upstream_headers)
        return out
