"""Policy test cases written next to the policies (`kind: PolicyTest` in `<policy dir>/tests/*.yaml`).

`extauth test DIR` runs every case against the compiled policy — screening and authorization, exactly as
a Check evaluates them, with the principal given instead of a token — so policies are tested in CI like code.
"""

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from extauth.clock import ManualClock
from extauth.config.errors import ConfigError, ConfigIssue
from extauth.config.schema import Strict
from extauth.config.yamlsource import line_for, parse_documents, read_text, validate
from extauth.decision import Decision
from extauth.identity.principal import Principal
from extauth.policy.model import HttpMethod, Metadata
from extauth.policy.store import CompiledPolicy, compile_policy
from extauth.policy.synthetic import check_request_for_url, principal
from extauth.reasons import Reason
from extauth.request import Request


class RequestSpec(Strict):
    method: HttpMethod | str = "GET"
    #: A path with optional query (`/api/orders?page=2`) or a full URL (`https://host/path`).
    url: str = Field(min_length=1)
    headers: dict[str, str] = Field(default_factory=dict)
    source: str = "192.0.2.10"
    #: The mTLS peer identity Envoy would report (e.g. a SPIFFE ID).
    peer: str = ""
    context_extensions: dict[str, str] = Field(default_factory=dict)


class PrincipalSpec(Strict):
    sub: str
    roles: list[str] = Field(default_factory=list)
    issuer: str = "https://issuer.invalid"
    claims: dict[str, Any] = Field(default_factory=dict)


class Expectation(Strict):
    decision: Literal["allow", "deny"]
    status: int | None = None
    reason: Reason | None = None
    rule: str | None = None


class Case(Strict):
    name: str = Field(min_length=1)
    request: RequestSpec
    #: Omitted: an anonymous request (no credentials).
    principal: PrincipalSpec | None = None
    #: When the request happens (time-window conditions); default: now.
    at: datetime | None = None
    expect: Expectation


class PolicyTestDocument(Strict):
    apiVersion: Literal["extauth/v1"]  # noqa: N815 - the file's own key
    kind: Literal["PolicyTest"]
    metadata: Metadata
    cases: list[Case] = Field(min_length=1)


@dataclass(frozen=True, slots=True)
class CaseResult:
    file: Path
    line: int | None
    name: str
    failure: str | None
    decision: Decision
    request: Request
    principal: Principal | None

    @property
    def passed(self) -> bool:
        return self.failure is None


def policy_test_files(policy_dir: Path) -> list[Path]:
    tests_dir = policy_dir / "tests"
    if not tests_dir.is_dir():
        return []
    return sorted(p for p in tests_dir.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())


def load_cases(files: list[Path]) -> list[tuple[Path, int | None, Case]]:
    cases: list[tuple[Path, int | None, Case]] = []
    issues: list[ConfigIssue] = []
    for file in files:
        try:
            for data, lines in parse_documents(file, read_text(file)):
                document = validate(PolicyTestDocument, data, lines, file)
                cases.extend((file, line_for(lines, ("cases", index)), case)
                             for index, case in enumerate(document.cases))
        except ConfigError as error:
            issues.extend(error.issues)
    if issues:
        raise ConfigError(issues)
    return cases


def evaluate(policy: CompiledPolicy, request: Request, who: Principal | None) -> Decision:
    """Screening then authorization, as the Check pipeline runs them once the caller is authenticated."""
    return policy.screener.screen(request) or policy.engine.authorize(request, who)


def run_policy_tests(policy_dir: Path) -> list[CaseResult]:
    clock = ManualClock()
    policy = compile_policy(policy_dir, clock)
    cases = load_cases(policy_test_files(policy_dir))
    results = []
    for file, line, case in cases:
        clock.set(case.at.timestamp() if case.at else datetime.now().timestamp())
        spec = case.request
        request = Request(check_request_for_url(spec.url, spec.method, headers=spec.headers, source=spec.source,
                                                peer=spec.peer, context_extensions=spec.context_extensions))
        who = (principal(case.principal.sub, case.principal.roles, case.principal.claims, case.principal.issuer)
               if case.principal else None)
        decision = evaluate(policy, request, who)
        results.append(CaseResult(file, line, case.name, _mismatch(case.expect, decision), decision, request, who))
    return results


def _mismatch(expect: Expectation, decision: Decision) -> str | None:
    got = {"decision": "allow" if decision.allowed else "deny", "status": decision.status,
           "reason": decision.reason.value, "rule": decision.rule}
    wanted = expect.model_dump(mode="json", exclude_none=True)
    wrong = [f"{field} expected {value!r}, got {got[field]!r}" for field, value in wanted.items()
             if got[field] != value]
    return "; ".join(wrong) or None
