"""The CEL `expression` condition: the escape hatch for what the native conditions cannot say."""

from pathlib import Path

import pytest

from extauth.authorization.engine import PolicyEngine
from extauth.clock import ManualClock
from extauth.config import ConfigError
from extauth.documents.loader import load_policies
from extauth.reasons import Reason
from extauth.request import Request
from extauth.tools.synthetic import check_request, principal

POLICY = """\
apiVersion: extauth/v1
kind: Policy
metadata: {name: cel}
roles: {reader: []}
routes:
  - name: reports
    match: {path: {template: "/tenants/{tenant}/reports/{year}"}}
    rules:
      - name: recent-own-reports
        when:
          roles: [reader]
          expression: >-
            claims.tenant == params.tenant && int(params.year) >= 2024
            && request.headers["x-client"].startsWith("web/")
"""


@pytest.fixture
def engine(tmp_path: Path) -> PolicyEngine:
    (tmp_path / "cel.yaml").write_text(POLICY)
    return PolicyEngine(load_policies(tmp_path), ManualClock())


def decide(engine: PolicyEngine, path: str, tenant: str, client: str):
    who = principal("alice", ["reader"], {"tenant": tenant})
    return engine.authorize(Request(check_request(path, headers={"x-client": client})), who)


def test_expression_combines_claims_params_and_headers(engine: PolicyEngine) -> None:
    """A CEL expression over the claim, two path parameters and a header allows when all of it holds."""
    assert decide(engine, "/tenants/acme/reports/2025", "acme", "web/1.2").allowed


@pytest.mark.parametrize("path, tenant, client", [
    ("/tenants/acme/reports/2019", "acme", "web/1.2"),    # too old
    ("/tenants/umbrella/reports/2025", "acme", "web/1.2"),  # another tenant
    ("/tenants/acme/reports/2025", "acme", "cli/0.1"),    # not the web client
])
def test_expression_that_does_not_hold_denies(engine: PolicyEngine, path: str, tenant: str, client: str) -> None:
    """Any false part of the expression makes the rule not match, so the request is forbidden."""
    assert decide(engine, path, tenant, client).reason is Reason.FORBIDDEN


def test_expression_error_at_run_time_does_not_match_and_explains_why(engine: PolicyEngine) -> None:
    """A missing header is a CEL error: the rule does not match, and explain says what failed."""
    request = Request(check_request("/tenants/acme/reports/2025"))
    explanation = engine.explain(request, principal("alice", ["reader"], {"tenant": "acme"}))
    assert not explanation.decision.allowed
    assert "expression: " in explanation.rules[0].why and "failed" in explanation.rules[0].why


def test_invalid_expression_is_a_load_error_with_file_and_line(tmp_path: Path) -> None:
    """A CEL syntax error is reported at load as `file:line: field: invalid CEL expression: ...`."""
    path = tmp_path / "bad.yaml"
    path.write_text(POLICY.replace('startsWith("web/")', 'startsWith("web/"'))
    with pytest.raises(ConfigError) as raised:
        load_policies(path)
    assert str(raised.value).startswith(f"{path}:12: routes[0].rules[0].when.expression: invalid CEL expression: "
                                        "Failed to parse expression")
