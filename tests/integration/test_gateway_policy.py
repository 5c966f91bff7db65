"""Step 2 through a real Envoy: tenant owner checks, CIDR and time-window conditions, and request screening."""

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from support.gateways import gateway_with_policies

from extauth.devstack.gateway import (
    EnvoyProcess,
    forward_every_path,
)
from extauth.devtools.certs import DevCerts
from extauth.devtools.tokens import mint_token
from extauth.devtools.upstream import RunningUpstream

WEEKDAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def conditions_policy() -> str:
    """Routes whose conditions are true or false *now*: the time is injected through the policy, not waited for."""
    today = WEEKDAYS[datetime.now(UTC).weekday()]
    other_days = [day for day in WEEKDAYS if day != today]
    return f"""\
apiVersion: extauth/v1
kind: Policy
metadata: {{name: conditions}}
roles: {{member: []}}
routes:
  - name: from-loopback
    match: {{path: {{prefix: /net/loopback}}}}
    rules:
      - {{name: loopback-only, when: {{roles: [member], source_cidrs: [127.0.0.0/8, "::1/128"]}}}}
  - name: from-office
    match: {{path: {{prefix: /net/office}}}}
    rules:
      - {{name: office-only, when: {{roles: [member], source_cidrs: [10.20.0.0/16]}}}}
  - name: open-today
    match: {{path: {{prefix: /time/today}}}}
    rules:
      - {{name: today, when: {{roles: [member], time: {{timezone: UTC, weekdays: [{today}]}}}}}}
  - name: closed-today
    match: {{path: {{prefix: /time/other-days}}}}
    rules:
      - {{name: other-days, when: {{roles: [member], time: {{timezone: UTC, weekdays: [{", ".join(other_days)}]}}}}}}
"""


@pytest.fixture(scope="module")
def policy_gateway(tmp_path_factory: pytest.TempPathFactory, certs: DevCerts, upstream: RunningUpstream,
                   envoy_binary: Path) -> Iterator[EnvoyProcess]:
    with gateway_with_policies(tmp_path_factory.mktemp("policy-gateway"), certs, upstream.port,
                               {"conditions.yaml": conditions_policy()}, edit=forward_every_path) as (envoy, _):
        yield envoy


def token(certs: DevCerts, *roles: str, **claims: object) -> str:
    return mint_token(certs.jwt_signing_key, subject="bob", claims={"roles": list(roles), **claims})


def test_tenant_owner_check_uses_the_path_parameter(policy_gateway: EnvoyProcess, certs: DevCerts) -> None:
    """A reader of tenant acme reads /api/tenants/acme/... (and the upstream learns the tenant) but not umbrella's."""
    bob = token(certs, "reader", tenant="acme")
    own = policy_gateway.get("/api/tenants/acme/orders/7", bob)
    assert own.status == 200 and own.json()["headers"]["x-tenant"] == "acme"
    other = policy_gateway.get("/api/tenants/umbrella/orders/7", bob)
    assert other.status == 403 and other.json()["reason"] == "forbidden"


def test_source_cidr_condition_sees_the_client_address(policy_gateway: EnvoyProcess, certs: DevCerts) -> None:
    """The client connects from loopback: a loopback-only route allows it, an office-network route does not."""
    member = token(certs, "member")
    assert policy_gateway.get("/net/loopback", member).status == 200
    assert policy_gateway.get("/net/office", member).status == 403


def test_time_window_condition_follows_the_clock(policy_gateway: EnvoyProcess, certs: DevCerts) -> None:
    """A rule open on today's weekday allows; one open on every other weekday denies."""
    member = token(certs, "member")
    assert policy_gateway.get("/time/today", member).status == 200
    assert policy_gateway.get("/time/other-days", member).status == 403


def test_screening_blocks_traversal_in_the_query(policy_gateway: EnvoyProcess) -> None:
    """`../` in a query value is refused with 400 path_traversal before any authentication."""
    response = policy_gateway.get("/public/download?file=..%2F..%2Fetc%2Fpasswd")
    assert response.status == 400 and response.json()["reason"] == "path_traversal"


def test_screening_blocks_an_oversized_header(policy_gateway: EnvoyProcess) -> None:
    """A single 10 KB header is within Envoy's limits but over screening's 8 KB: 431 headers_too_large."""
    response = policy_gateway.get("/public/hello", x_padding="a" * 10_000)
    assert response.status == 431 and response.json()["reason"] == "headers_too_large"


def test_screening_blocks_disallowed_methods(policy_gateway: EnvoyProcess) -> None:
    """TRACE is not in the default method allowlist: 405 method_not_allowed."""
    response = policy_gateway.request("TRACE", "/public/hello")
    assert response.status == 405 and response.json()["reason"] == "method_not_allowed"
