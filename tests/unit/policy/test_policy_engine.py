"""Route matching, default deny, public routes, role inheritance and deny-overrides."""

from pathlib import Path
from types import MappingProxyType

import pytest
from support.checks import check_request

from extauth.authorization.engine import PolicyEngine
from extauth.documents.loader import load_policies
from extauth.identity.principal import Principal
from extauth.reasons import Reason
from extauth.request import Request

POLICY = """\
apiVersion: extauth/v1
kind: Policy
metadata: {name: shop}
roles:
  reader: []
  writer: [reader]
  admin: [writer]
routes:
  - name: health
    match: {path: {exact: /healthz}}
    public: true
  - name: orders-write
    match:
      path: {prefix: /orders}
      methods: [POST, PUT, DELETE]
    rules:
      - {name: writers, when: {roles: [writer]}}
      - {name: no-mallory, effect: deny, when: {subjects: [mallory]}}
  - name: orders-read
    match: {path: {prefix: /orders}}
    rules:
      - {name: readers, when: {roles: [reader]}}
  - name: billing
    match:
      context_extensions: {service: billing}
    rules:
      - {name: admins, when: {roles: [admin]}}
"""


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> PolicyEngine:
    path = tmp_path_factory.mktemp("policy") / "shop.yaml"
    path.write_text(POLICY)
    return PolicyEngine(load_policies(path))


def principal(subject: str = "alice", *roles: str) -> Principal:
    return Principal(subject=subject, identity=subject, issuer="https://idp", provider="idp", key_id="k1",
                     roles=frozenset(roles), claims=MappingProxyType({"sub": subject}), expires_at=None)


def decide(engine: PolicyEngine, who: Principal | None, path: str, method: str = "GET", **extensions: str):
    return engine.authorize(Request(check_request(path, method, context_extensions=extensions)), who)


def test_unmatched_request_is_denied_by_default(engine: PolicyEngine) -> None:
    """A path no route names is a 403 with reason no_matching_route, whoever asks."""
    decision = decide(engine, principal("root", "admin"), "/internal/metrics")
    assert (decision.allowed, decision.status, decision.reason) == (False, 403, Reason.NO_MATCHING_ROUTE)


def test_public_route_admits_anonymous_callers(engine: PolicyEngine) -> None:
    """A public route is allowed without a principal and names itself as the deciding rule."""
    decision = decide(engine, None, "/healthz")
    assert decision.allowed and decision.reason is Reason.PUBLIC_ROUTE and decision.rule == "shop/health"


def test_protected_route_without_principal_is_401(engine: PolicyEngine) -> None:
    """No credentials on a protected route is an authentication failure, not a 403."""
    decision = decide(engine, None, "/orders/1")
    assert (decision.status, decision.reason) == (401, Reason.MISSING_TOKEN)


@pytest.mark.parametrize("role", ["reader", "writer", "admin"])
def test_roles_inheriting_reader_may_read(engine: PolicyEngine, role: str) -> None:
    """admin inherits writer inherits reader, so each may use a reader route."""
    decision = decide(engine, principal("alice", role), "/orders/1")
    assert decision.allowed and decision.rule == "shop/orders-read/readers"


def test_reader_may_not_write(engine: PolicyEngine) -> None:
    """Inheritance goes one way: a reader does not gain writer's permissions."""
    decision = decide(engine, principal("alice", "reader"), "/orders/1", "POST")
    assert (decision.allowed, decision.reason, decision.route) == (False, Reason.FORBIDDEN, "shop/orders-write")


def test_deny_rule_overrides_allow(engine: PolicyEngine) -> None:
    """A matching deny rule wins even though an allow rule also matches."""
    decision = decide(engine, principal("mallory", "admin"), "/orders/1", "DELETE")
    assert (decision.allowed, decision.reason, decision.rule) == (
        False, Reason.DENIED_BY_RULE, "shop/orders-write/no-mallory")


def test_route_matches_envoy_context_extensions(engine: PolicyEngine) -> None:
    """A route can be selected by the service name set in the Envoy route's context_extensions."""
    assert decide(engine, principal("root", "admin"), "/anything", service="billing").allowed
    assert not decide(engine, principal("bob", "writer"), "/anything", service="billing").allowed


def test_decision_records_policy_version(engine: PolicyEngine) -> None:
    """Every decision carries the content hash of the policy that made it."""
    assert decide(engine, None, "/healthz").policy_version == engine.version
    assert len(engine.version) == 16


def test_policy_version_changes_with_content(tmp_path: Path) -> None:
    """Editing a policy file changes the version recorded in decisions."""
    path = tmp_path / "p.yaml"
    path.write_text(POLICY)
    first = load_policies(path).version
    path.write_text(POLICY.replace("/healthz", "/health"))
    assert load_policies(path).version != first
