"""A rule compiled: its checks, its effect, and the upstream headers it adds when it allows."""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from extauth.clock import Clock
from extauth.conditions.compiler import compile_condition
from extauth.conditions.params import Params
from extauth.conditions.predicate import Predicate
from extauth.documents.policy import Rule
from extauth.documents.syntax import HeaderPart, parse_header_template
from extauth.identity.claims import claim_at, claim_text
from extauth.identity.principal import Principal
from extauth.request import Request


@dataclass(frozen=True, slots=True)
class CompiledRule:
    rule_id: str
    deny: bool
    checks: tuple[Predicate, ...]
    #: (header name, parsed value template), rendered on allow.
    headers: tuple[tuple[str, tuple[HeaderPart, ...]], ...]
    #: Some check reads values that can disagree (a header or query condition of an allow rule).
    can_be_ambiguous: bool = False

    def holds(self, request: Request, principal: Principal, params: Params) -> bool:
        for check in self.checks:  # noqa: SIM110 - the hot path; a loop beats all() over a generator
            if not check.test(request, principal, params):
                return False
        return True

    def ambiguous(self, request: Request, principal: Principal, params: Params) -> bool:
        """Whether an allow rule that does not hold would hold for some reading of a repeated header or query
        value and not for another: every check holds or has values that disagree, and at least one disagrees."""
        if not self.can_be_ambiguous:
            return False
        disagreeing = False
        for check in self.checks:
            if check.test(request, principal, params):
                continue
            if check.mixed is None or not check.mixed(request, principal, params):
                return False
            disagreeing = True
        return disagreeing

    def failure(self, request: Request, principal: Principal, params: Params) -> str | None:
        """The first condition that fails and why, or None when the rule matches (for `explain`)."""
        for check in self.checks:
            if not check.test(request, principal, params):
                return f"{check.name}: {check.why(request, principal, params)}"
        return None

    def upstream_headers(self, principal: Principal, params: Params) -> list[tuple[str, str]]:
        """The rule's headers with `{param}` / `{claims.NAME}` filled in; one whose claim is absent is left out."""
        rendered = []
        for name, parts in self.headers:
            value = _render(parts, principal.claims, params)
            if value is not None:
                rendered.append((name, value))
        return rendered


def compile_rule(route_id: str, rule: Rule, granting: Mapping[str, frozenset[str]], clock: Clock) -> CompiledRule:
    rule_id, deny = f"{route_id}/{rule.name}", rule.effect == "deny"
    checks = compile_condition(rule.when, granting, clock, deny=deny, source=rule_id)
    return CompiledRule(
        rule_id=rule_id,
        deny=deny,
        checks=checks,
        headers=tuple((name, parse_header_template(value)) for name, value in rule.headers.items()),
        can_be_ambiguous=any(check.mixed is not None for check in checks),
    )


def _render(parts: tuple[HeaderPart, ...], claims: Mapping[str, Any], params: Params) -> str | None:
    out = []
    for part in parts:
        if isinstance(part, str):
            out.append(part)
        elif part[0] == "param":
            out.append(params.get(part[1], ""))  # type: ignore[arg-type]
        else:
            text = claim_text(claim_at(claims, part[1]))  # type: ignore[arg-type]
            if text is None:
                return None
            out.append(text)
    return "".join(out)
