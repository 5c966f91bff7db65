"""Through a real Envoy: a public route restricted by source address (the webhook case of docs/policy.md)."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.gateways import gateway_with_policies

from extauth.devstack.gateway import EnvoyProcess, ExtauthProcess
from extauth.devtools.certs import DevCerts
from extauth.devtools.tokens import mint_token
from extauth.devtools.upstream import RunningUpstream

WEBHOOKS = """\
apiVersion: extauth/v1
kind: Policy
metadata: {name: billing}
routes:
  - name: webhooks-from-here
    match: {path: {prefix: /billing/webhooks/local}, methods: [POST]}
    public: true
    rules:
      - {name: loopback, when: {source_cidrs: [127.0.0.0/8, "::1/128"]}}
      - {name: paused, effect: deny, when: {headers: {x-paused: {present: true}}}}
  - name: webhooks-from-stripe
    match: {path: {prefix: /billing/webhooks/stripe}, methods: [POST]}
    public: true
    rules:
      - {name: stripe, when: {source_cidrs: [3.18.12.0/23]}}
"""


@pytest.fixture(scope="module")
def webhook_gateway(tmp_path_factory: pytest.TempPathFactory, certs: DevCerts, upstream: RunningUpstream,
                    envoy_binary: Path) -> Iterator[tuple[EnvoyProcess, ExtauthProcess]]:
    with gateway_with_policies(tmp_path_factory.mktemp("webhook-gateway"), certs, upstream.port,
                               {"billing.yaml": WEBHOOKS}) as processes:
        yield processes


def test_a_public_route_admits_an_anonymous_caller_from_its_network(
        webhook_gateway: tuple[EnvoyProcess, ExtauthProcess]) -> None:
    """The test client connects from loopback: a loopback-only public route lets its POST through without a token,
    audited as `public_route` by the allowing rule."""
    envoy, extauth = webhook_gateway
    response = envoy.request("POST", "/billing/webhooks/local", body=b"{}")
    assert response.status == 200
    event = extauth.audit_events()[-1]
    assert (event["reason"], event["rule"]) == ("public_route", "billing/webhooks-from-here/loopback")


def test_a_public_route_refuses_callers_outside_its_network_with_or_without_a_token(
        webhook_gateway: tuple[EnvoyProcess, ExtauthProcess], certs: DevCerts) -> None:
    """From loopback, a route open only to 3.18.12.0/23 is 403 `forbidden`, anonymous or with a valid admin token,
    and a forged X-Forwarded-For naming that network changes nothing (the source is the connection's)."""
    envoy, _ = webhook_gateway
    admin = mint_token(certs.jwt_signing_key, subject="root", claims={"roles": ["admin"]})
    for headers in ({}, {"authorization": f"Bearer {admin}"}, {"x-forwarded-for": "3.18.12.7"},
                    {"x-forwarded-for": "3.18.12.7", "x-real-ip": "3.18.12.7", "forwarded": "for=3.18.12.7"}):
        response = envoy.request("POST", "/billing/webhooks/stripe", headers, body=b"{}")
        assert (response.status, response.json()["reason"]) == (403, "forbidden"), headers


def test_a_deny_rule_on_a_public_route_applies_through_envoy(
        webhook_gateway: tuple[EnvoyProcess, ExtauthProcess]) -> None:
    """A matching deny rule refuses a request the source rule would allow."""
    envoy, _ = webhook_gateway
    response = envoy.request("POST", "/billing/webhooks/local", {"x-paused": "yes"}, body=b"{}")
    assert (response.status, response.json()["reason"]) == (403, "denied_by_rule")
