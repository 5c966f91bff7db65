"""Policy test cases written next to the policies (`kind: PolicyTest` in `<policy dir>/tests/*.yaml`).

`extauth test DIR` runs every case against the compiled policy — screening and authorization, exactly as
a Check evaluates them, with the principal given instead of a token — so policies are tested in CI like code.
A case may also assert which rate limits apply (ids and keys), worked out without counting anything. With a
candidate directory the same cases run against the candidate, and the cases whose outcome changes are listed.
"""

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from extauth.bundle.compiled import CompiledPolicy, compile_policy
from extauth.clock import ManualClock
from extauth.decision import Decision
from extauth.documents.errors import ConfigError, ConfigIssue
from extauth.documents.fields import Strict
from extauth.documents.policy import HttpMethod, Metadata
from extauth.documents.yamlsource import line_for, parse_documents, read_text, validate
from extauth.identity.principal import Principal
from extauth.ratelimit.plan import AppliedLimit
from extauth.reasons import Reason
from extauth.request import Request
from extauth.tools.synthetic import check_request_for_url, principal


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


class LimitExpectation(Strict):
    """A limit that applies: its id (`demo/limited/per-subject`, as in keys and audit events) and, optionally, the
    key it counts under for this request (`demo/limited/per-subject|subject=alice`). A bare string is the id."""

    name: str = Field(min_length=1)
    key: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


class Expectation(Strict):
    decision: Literal["allow", "deny"]
    status: int | None = None
    reason: Reason | None = None
    rule: str | None = None
    #: Every limit that applies, in any order (`[]`: none); nothing is counted.
    limits: list[LimitExpectation] | None = None


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
    #: The rate limits that would apply (none unless allowed); nothing was counted.
    limits: tuple[AppliedLimit, ...] = ()

    @property
    def passed(self) -> bool:
        return self.failure is None

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.line else str(self.file)

    def outcome(self) -> str:
        """`allow 200 ok (rule demo/api/readers)`, plus the limits that apply: what a candidate may change."""
        decision = self.decision
        text = (f"{'allow' if decision.allowed else 'deny'} {decision.status} {decision.reason} "
                f"(rule {decision.rule or '-'})")
        if self.limits:
            text += "; limits " + "; ".join(limit.summary for limit in self.limits)
        return text


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
    """Screening then authorization, as the Check pipeline runs them once the caller is authenticated; a call the
    egress listener marks (`context_extensions: {direction: egress}`) is judged by the egress allowlist."""
    screened = policy.screener.screen(request)
    if screened is not None:
        return screened
    return policy.egress.authorize(request) if request.is_egress else policy.engine.authorize(request, who)


def run_policy_tests(policy_dir: Path, against: Path | None = None, now: float | None = None) -> list[CaseResult]:
    """The cases in `policy_dir/tests`, run against the policies in `against` (default: `policy_dir` itself);
    a case without `at:` runs at `now` (default: the current time)."""
    clock = ManualClock()
    policy = compile_policy(against or policy_dir, clock)
    cases = load_cases(policy_test_files(policy_dir))
    moment = datetime.now(UTC).timestamp() if now is None else now
    results = []
    for file, line, case in cases:
        clock.set(_utc(case.at).timestamp() if case.at else moment)
        spec = case.request
        request = Request(check_request_for_url(spec.url, spec.method, headers=spec.headers, source=spec.source,
                                                peer=spec.peer, context_extensions=spec.context_extensions))
        who = (principal(case.principal.sub, case.principal.roles, case.principal.claims, case.principal.issuer)
               if case.principal else None)
        decision = evaluate(policy, request, who)
        limits = policy.limits.applicable(request, decision) if decision.allowed else ()
        results.append(CaseResult(file, line, case.name, _mismatch(case.expect, decision, limits), decision,
                                  request, who, limits))
    return results


def changed_outcomes(live: list[CaseResult], candidate: list[CaseResult]) -> list[tuple[CaseResult, CaseResult]]:
    """The cases (run from the same test files) whose outcome differs between the live and the candidate policy."""
    return [(before, after) for before, after in zip(live, candidate, strict=True)
            if before.outcome() != after.outcome()]


def _utc(moment: datetime) -> datetime:
    """A time without a zone is UTC, as for `extauth explain --at`."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _mismatch(expect: Expectation, decision: Decision, limits: tuple[AppliedLimit, ...]) -> str | None:
    got = {"decision": "allow" if decision.allowed else "deny", "status": decision.status,
           "reason": decision.reason.value, "rule": decision.rule}
    wanted = expect.model_dump(mode="json", exclude_none=True, exclude={"limits"})
    wrong = [f"{field} expected {value!r}, got {got[field]!r}" for field, value in wanted.items()
             if got[field] != value]
    if expect.limits is not None:
        wrong.extend(_limit_mismatches(expect.limits, limits))
    return "; ".join(wrong) or None


def _limit_mismatches(expected: list[LimitExpectation], applied: tuple[AppliedLimit, ...]) -> list[str]:
    keys = {limit.limit_id: limit.key for limit in applied}
    names = sorted(limit.name for limit in expected)
    if names != sorted(keys):
        return [f"limits expected {names}, got {sorted(keys)}"]
    return [f"limit {limit.name} key expected {limit.key!r}, got {keys[limit.name]!r}" for limit in expected
            if limit.key is not None and keys[limit.name] != limit.key]
