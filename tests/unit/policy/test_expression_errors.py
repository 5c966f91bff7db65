"""A CEL expression that fails at run time: a deny rule fails closed, an allow rule does not match, both counted."""

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from extauth.authorization.engine import PolicyEngine
from extauth.clock import ManualClock
from extauth.documents.loader import load_policies
from extauth.metrics import POLICY, CheckMetrics, RedisMetrics
from extauth.metrics.collector import ExtauthCollector
from extauth.reasons import Reason
from extauth.request import Request
from extauth.tools.synthetic import check_request, principal

POLICY_YAML = """\
apiVersion: extauth/v1
kind: Policy
metadata: {name: cel}
roles: {reader: []}
routes:
  - name: pages
    match: {path: {prefix: /pages}}
    rules:
      - name: no-deep-paging
        effect: deny
        when: {expression: 'int(request.headers["x-page"]) > 100'}
      - name: readers
        when: {roles: [reader]}
  - name: labels
    match: {path: {prefix: /labels}}
    rules:
      - name: not-a-boolean
        effect: deny
        when: {expression: 'claims.label'}
      - name: readers
        when: {roles: [reader]}
  - name: reports
    match: {path: {prefix: /reports}}
    rules:
      - name: small-pages
        when: {expression: 'int(request.headers["x-page"]) <= 100'}
"""
READER = principal("alice", ["reader"], {"label": "blue"})


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> PolicyEngine:
    directory = Path(tmp_path_factory.mktemp("cel"))
    (directory / "cel.yaml").write_text(POLICY_YAML)
    return PolicyEngine(load_policies(directory), ManualClock())


def decide(engine: PolicyEngine, path: str, page: str):
    return engine.authorize(Request(check_request(path, headers={"x-page": page})), READER)


def errors(rule: str) -> int:
    return POLICY.expression_errors.get(rule, 0)


@pytest.mark.parametrize("path, page, rule", [
    ("/pages", "many", "cel/pages/no-deep-paging"),   # int("many") fails
    ("/labels", "1", "cel/labels/not-a-boolean"),     # a string, not a boolean
])
def test_failing_expression_in_a_deny_rule_denies_and_is_counted(engine: PolicyEngine, path, page, rule) -> None:
    """An error or a non-boolean result in a deny rule's expression denies (fail closed) and counts once."""
    before = errors(rule)
    decision = decide(engine, path, page)
    assert (decision.reason, decision.rule) == (Reason.DENIED_BY_RULE, rule)
    assert errors(rule) == before + 1


def test_deny_expression_that_evaluates_decides_as_written(engine: PolicyEngine) -> None:
    """A deny expression that evaluates to false does not deny, and nothing is counted."""
    before = errors("cel/pages/no-deep-paging")
    assert decide(engine, "/pages", "7").reason is Reason.OK
    assert decide(engine, "/pages", "700").reason is Reason.DENIED_BY_RULE
    assert errors("cel/pages/no-deep-paging") == before


def test_failing_expression_in_an_allow_rule_does_not_hold_and_is_counted(engine: PolicyEngine) -> None:
    """An error in an allow rule's expression means the rule does not allow; the error is counted."""
    before = errors("cel/reports/small-pages")
    assert decide(engine, "/reports", "7").reason is Reason.OK
    assert decide(engine, "/reports", "many").reason is Reason.FORBIDDEN
    assert errors("cel/reports/small-pages") == before + 1


def test_explain_shows_the_failing_deny_expression_as_matched(engine: PolicyEngine) -> None:
    """`extauth explain` shows the deny rule whose expression failed as the rule that matched."""
    explanation = engine.explain(Request(check_request("/pages", headers={"x-page": "many"})), READER)
    assert explanation.decision.rule == "cel/pages/no-deep-paging"
    assert [(rule.rule, rule.matched) for rule in explanation.rules] == [
        ("cel/pages/no-deep-paging", True), ("cel/pages/readers", True)]


def test_expression_errors_are_exported_per_rule(engine: PolicyEngine) -> None:
    """The counter is scraped as `extauth_policy_expression_errors_total{rule=...}`."""
    decide(engine, "/pages", "many")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ExtauthCollector(checks=CheckMetrics(), redis=RedisMetrics()))
    text = generate_latest(registry).decode()
    assert f'extauth_policy_expression_errors_total{{rule="cel/pages/no-deep-paging"}} ' \
           f'{float(errors("cel/pages/no-deep-paging"))}' in text
