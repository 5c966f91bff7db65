"""The shipped Envoy routes: a second service (billing) behind the gateway, and a catch-all that forwards nothing."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from extauth.devstack.gateway import EnvoyProcess, ExtauthProcess, extauth_config
from extauth.devtools.certs import DevCerts
from extauth.devtools.tokens import mint_token
from extauth.devtools.upstream import RunningUpstream

ALLOW_EVERY_PATH = """\
apiVersion: extauth/v1
kind: Policy
metadata: {name: open}
routes:
  - {name: everything, match: {path: {prefix: /}}, public: true}
"""


def token(certs: DevCerts, subject: str, *roles: str) -> str:
    return mint_token(certs.jwt_signing_key, subject=subject, claims={"roles": list(roles)})


def test_billing_route_reaches_its_service_with_its_context(gateway: EnvoyProcess, extauth: ExtauthProcess,
                                                            certs: DevCerts) -> None:
    """/billing/ is decided by billing.yaml (Envoy names the service), and an allowed request is forwarded."""
    viewer = token(certs, "fiona", "billing-viewer")
    response = gateway.get("/billing/invoices/2026-0042", viewer)
    assert response.status == 200
    assert response.json()["headers"]["x-extauth-subject"] == "fiona"
    decision = extauth.audit_events()[-1]
    assert (decision["service"], decision["envoy_route"], decision["rule"]) == (
        "billing", "billing", "billing/invoices-read/viewers-may-read")
    assert gateway.get("/billing/invoices/2026-0042", token(certs, "root", "admin")).status == 403
    webhook = gateway.request("POST", "/billing/webhooks/stripe", body=b"{}")  # from loopback, not Stripe's network
    assert (webhook.status, webhook.json()["reason"]) == (403, "forbidden")


@pytest.mark.parametrize("path", ["/private/metrics", "/billing", "/nothing-here/x", "/healthzz"])
def test_unrouted_paths_are_checked_audited_and_denied(gateway: EnvoyProcess, extauth: ExtauthProcess,
                                                       certs: DevCerts, path: str) -> None:
    """A path no service route covers still goes through extauth, which denies it by default and audits it
    under the catch-all's context."""
    response = gateway.get(path, token(certs, "root", "admin"))
    assert response.status == 403
    assert response.json()["reason"] == "no_matching_route"
    decision = extauth.audit_events()[-1]
    assert (decision["path"], decision["envoy_route"], decision["decision"]) == (path, "default", "deny")


@pytest.fixture(scope="module")
def open_gateway(tmp_path_factory: pytest.TempPathFactory, certs: DevCerts, upstream: RunningUpstream,
                 envoy_binary: Path) -> Iterator[EnvoyProcess]:
    run_dir = tmp_path_factory.mktemp("open")
    (run_dir / "open.yaml").write_text(ALLOW_EVERY_PATH)
    extauth = ExtauthProcess(run_dir, extauth_config(run_dir, certs, policy={"path": str(run_dir / "open.yaml")}))
    extauth.wait_serving()
    envoy = EnvoyProcess(run_dir, certs, upstream.port, extauth.addresses)
    try:
        yield envoy
    finally:
        envoy.stop()
        extauth.stop()


def test_catch_all_never_forwards_even_what_a_policy_allows(open_gateway: EnvoyProcess) -> None:
    """With a policy that allows every path, an unrouted path gets Envoy's own 404; routed ones reach the upstream."""
    unrouted = open_gateway.get("/anything/else")
    assert (unrouted.status, unrouted.body) == (404, b"no service at this path\n")
    assert open_gateway.get("/public/hello").status == 200
    assert open_gateway.get("/healthz").status == 200
