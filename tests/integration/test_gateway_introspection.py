"""Opaque tokens and Kubernetes service-account tokens through real Envoy and a real extauth process: an
introspection endpoint served by the test answers active/inactive, its answers are cached (its hit counter shows
it), its outage is 503, its client secret never reaches the audit trail; a projected-token-shaped JWT from a test
cluster issuer (found by OIDC discovery) is allowed by a `service_accounts: [billing/invoicer]` rule and another
service account is not."""

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from support.gateways import demo_policies_with
from support.identity_helpers import jwks_document, public_jwk
from support.idp import IdentityProvider
from support.introspection_endpoint import CLIENT_ID, CLIENT_SECRET, IntrospectionEndpoint

from extauth.devstack.gateway import EnvoyProcess, ExtauthProcess, Response, extauth_config, forward_every_path
from extauth.devtools.certs import DevCerts
from extauth.devtools.upstream import RunningUpstream

AUDIENCE = "orders-api"
SERVICE_ACCOUNT_POLICY = """\
apiVersion: extauth/v1
kind: Policy
metadata:
  name: invoices
routes:
  - name: invoices
    match:
      path: {prefix: /invoices/}
    rules:
      - name: only-the-invoicer
        when:
          service_accounts: [billing/invoicer]
"""


@dataclass
class IdentityGateway:
    envoy: EnvoyProcess
    extauth: ExtauthProcess
    endpoint: IntrospectionEndpoint
    cluster: IdentityProvider
    cluster_key: rsa.RSAPrivateKey

    def service_account_token(self, namespace: str, name: str) -> str:
        now = int(time.time())
        claims = {"aud": [AUDIENCE], "exp": now + 3600, "iat": now, "nbf": now, "iss": self.cluster.issuer,
                  "kubernetes.io": {"namespace": namespace, "pod": {"name": f"{name}-6f7c9-abcde", "uid": "p-1"},
                                    "serviceaccount": {"name": name, "uid": "sa-1"}},
                  "sub": f"system:serviceaccount:{namespace}:{name}"}
        return jwt.encode(claims, self.cluster_key, algorithm="RS256", headers={"kid": "cluster"})


@pytest.fixture(scope="module")
def identities(tmp_path_factory: pytest.TempPathFactory, envoy_binary: Path, certs: DevCerts,
            upstream: RunningUpstream) -> Iterator[IdentityGateway]:
    """The local stack plus an introspection endpoint (secret in a file) and a `preset: kubernetes` provider
    whose test issuer serves discovery and keys on loopback."""
    run_dir = tmp_path_factory.mktemp("identities")
    cluster_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (run_dir / "cluster-jwks.json").write_bytes(jwks_document(public_jwk(cluster_key, "cluster")))
    cluster = IdentityProvider(run_dir / "cluster-jwks.json")
    endpoint = IntrospectionEndpoint()
    (run_dir / "introspection-secret").write_text(CLIENT_SECRET + "\n")
    config = extauth_config(run_dir / "extauth", certs, policy={
        "path": str(demo_policies_with(run_dir, {"invoices.yaml": SERVICE_ACCOUNT_POLICY}))})
    authentication: dict[str, Any] = config["authentication"]
    authentication["providers"].append({"name": "cluster", "preset": "kubernetes", "issuer": cluster.issuer,
                                        "audiences": [AUDIENCE]})
    authentication["introspection"] = {
        "name": "opaque", "url": endpoint.url, "issuer": "https://login.example", "audiences": [AUDIENCE],
        "client_id": CLIENT_ID, "client_secret_file": str(run_dir / "introspection-secret"), "roles_claim": "roles",
        "timeout_seconds": 1, "cache_seconds": 60, "negative_cache_seconds": 5,
        "breaker": {"failure_threshold": 2, "cooldown_seconds": 60}}
    extauth = ExtauthProcess(run_dir / "extauth", config)
    try:
        extauth.wait_serving()
        envoy = EnvoyProcess(run_dir, certs, upstream.port, extauth.addresses, edit=forward_every_path)
        try:
            yield IdentityGateway(envoy, extauth, endpoint, cluster, cluster_key)
        finally:
            envoy.stop()
    finally:
        extauth.stop()
        endpoint.stop()
        cluster.stop()


def active(subject: str) -> dict[str, Any]:
    return {"active": True, "sub": subject, "iss": "https://login.example", "aud": AUDIENCE,
            "exp": int(time.time()) + 600, "roles": ["reader"]}


def reason(response: Response) -> str:
    return json.loads(response.body)["reason"]


def test_an_active_opaque_token_is_allowed_and_its_answer_is_reused(identities: IdentityGateway) -> None:
    """200 as `opaque:carol` with her roles; three requests cost the endpoint one call."""
    identities.endpoint.answers["opaque-carol"] = active("carol")
    responses = [identities.envoy.get("/api/orders", "opaque-carol") for _ in range(3)]
    assert [response.status for response in responses] == [200, 200, 200], responses[0].body
    seen = responses[0].json()["headers"]
    assert (seen["x-extauth-subject"], seen["x-extauth-issuer"], seen["x-extauth-roles"]) == (
        "opaque:carol", "https://login.example", "reader")
    assert identities.endpoint.calls["opaque-carol"] == 1


def test_an_inactive_opaque_token_is_401_and_its_answer_is_reused_briefly(identities: IdentityGateway) -> None:
    """`active: false` is 401 `inactive_token` with a challenge; asked twice, the endpoint answered once."""
    responses = [identities.envoy.get("/api/orders", "opaque-revoked") for _ in range(2)]
    assert [(response.status, reason(response)) for response in responses] == [(401, "inactive_token")] * 2
    assert "www-authenticate" in responses[0].headers
    assert identities.endpoint.calls["opaque-revoked"] == 1


def test_a_service_account_rule_allows_billing_invoicer_and_no_other(identities: IdentityGateway) -> None:
    """The projected token of billing/invoicer reaches /invoices/; billing/auditor's and ops/invoicer's are 403."""
    allowed = identities.envoy.get("/invoices/42", identities.service_account_token("billing", "invoicer"))
    assert allowed.status == 200, allowed.body
    assert allowed.json()["headers"]["x-extauth-subject"] == "cluster:system:serviceaccount:billing:invoicer"
    for namespace, name in (("billing", "auditor"), ("ops", "invoicer")):
        response = identities.envoy.get("/invoices/42", identities.service_account_token(namespace, name))
        assert (response.status, reason(response)) == (403, "forbidden")
    assert not any(token.count(".") == 2 for token in identities.endpoint.calls)


def test_an_outage_is_503_and_never_reaches_the_audit_trail_with_the_secret(identities: IdentityGateway) -> None:
    """With the endpoint failing an uncached opaque token is 503 `introspection_unavailable` (the breaker then
    stops calling it, audited), a cached one still works, and no audit record holds the client secret."""
    identities.endpoint.answers["opaque-dave"] = active("dave")
    assert identities.envoy.get("/api/orders", "opaque-dave").status == 200
    identities.endpoint.failing = True
    try:
        statuses = [(response.status, reason(response)) for response in
                    (identities.envoy.get("/api/orders", f"opaque-unknown-{index}") for index in range(4))]
        assert statuses == [(503, "introspection_unavailable")] * 4
        assert sum(identities.endpoint.calls[f"opaque-unknown-{index}"] for index in range(4)) == 2
        assert identities.envoy.get("/api/orders", "opaque-dave").status == 200
    finally:
        identities.endpoint.failing = False
    records = identities.extauth.audit_events(kind=None)
    assert any(record.get("event") == "introspection_unavailable" for record in records)
    text = json.dumps(records) + identities.extauth.process.log_path.read_text()
    assert CLIENT_SECRET not in text and "opaque-dave" not in text
