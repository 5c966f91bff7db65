"""A rule compiled: its checks, its effect, and the upstream headers it adds when it allows."""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from extauth.clock import Clock
from extauth.identity.principal import Principal
from extauth.policy.conditions import Check, claim_at, compile_condition
from extauth.policy.matching import Params
from extauth.policy.model import Rule
from extauth.policy.syntax import HeaderPart, parse_header_template
from extauth.request import Request


@dataclass(frozen=True, slots=True)
class CompiledRule:
    rule_id: str
    deny: bool
    checks: tuple[Check, ...]
    #: (header name, parsed value template), rendered on allow.
    headers: tuple[tuple[str, tuple[HeaderPart, ...]], ...]

    def holds(self, request: Request, principal: Principal, params: Params) -> bool:
        for check in self.checks:  # noqa: SIM110 - the hot path; a loop beats all() over a generator
            if not check.test(request, principal, params):
                return False
        return True

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
    return CompiledRule(
        rule_id=f"{route_id}/{rule.name}",
        deny=rule.effect == "deny",
        checks=compile_condition(rule.when, granting, clock),
        headers=tuple((name, parse_header_template(value)) for name, value in rule.headers.items()),
    )


def _render(parts: tuple[HeaderPart, ...], claims: Mapping[str, Any], params: Params) -> str | None:
    out = []
    for part in parts:
        if isinstance(part, str):
            out.append(part)
        elif part[0] == "param":
            out.append(params.get(part[1], ""))  # type: ignore[arg-type]
        else:
            text = _claim_text(claim_at(claims, part[1]))  # type: ignore[arg-type]
            if text is None:
                return None
            out.append(text)
    return "".join(out)


def _claim_text(value: Any) -> str | None:
    """Scalars as text (`true`/`false` for booleans), lists of scalars comma-joined; anything else is absent."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    if isinstance(value, list) and value and all(isinstance(item, str | int | float) for item in value):
        return ",".join(_claim_text(item) or "" for item in value)
    return None
