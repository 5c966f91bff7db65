"""Client certificates at the ingress listener, through the shipped Envoy bootstrap and the demo policies: Envoy
requests a certificate and verifies it against the dev CA, extauth reads the caller from what Envoy verified only,
and `/internal/` admits just the demo workload's SPIFFE ID (docs/client-certificates.md)."""

import datetime
import http.client
import json
import ssl
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from support.gateways import gateway_with_policies

from extauth.devstack.gateway import EnvoyProcess, ExtauthProcess
from extauth.devtools.certs import CLIENT_SPIFFE_ID, DevCerts, create_dev_certs, issue_client_certificate
from extauth.devtools.tokens import mint_token
from extauth.devtools.upstream import RunningUpstream

OTHER_WORKLOAD = "spiffe://extauth.local/ns/demo/sa/batch"
#: Every place a client could write an identity into a request, each naming the allowed workload.
SPOOFED_HEADERS = {
    "x-forwarded-client-cert": f"By=spiffe://extauth.local/ns/gateway/sa/envoy;Hash=00;URI={CLIENT_SPIFFE_ID}",
    "x-client-cert-uri": CLIENT_SPIFFE_ID,
    "x-spiffe-id": CLIENT_SPIFFE_ID,
    "x-ssl-client-s-dn": "CN=extauth dev client,O=extauth development",
    "x-envoy-peer-metadata-id": CLIENT_SPIFFE_ID,
}


#: What a refused handshake raises on the client: the TLS alert, or (TLS 1.3 sends it after the client's Finished)
#: an EOF or reset when Envoy closes first. Which one is a race; Envoy's counter below says why it refused.
REFUSED = (ssl.SSLError, ConnectionError, http.client.RemoteDisconnected)


def own(certs: DevCerts) -> tuple[Path, Path]:
    return certs.client_cert, certs.client_key


def failed_verifications(gateway: EnvoyProcess) -> int:
    """The ingress listener's `ssl.fail_verify_error`: handshakes refused because the client certificate did not
    verify (unknown CA, expired, ...)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{gateway.admin_port}/stats?format=json&filter="
                                f"^listener\\..*\\.ssl\\.fail_verify_error$", timeout=5) as reply:
        return sum(stat["value"] for stat in json.load(reply)["stats"])


@pytest.fixture(scope="module")
def foreign_ca_client(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The same SPIFFE ID, issued by a CA of its own (another dev PKI), which the listener does not trust."""
    foreign = create_dev_certs(tmp_path_factory.mktemp("foreign-pki"))
    return foreign.client_cert, foreign.client_key


@pytest.fixture(scope="module")
def other_workload(tmp_path_factory: pytest.TempPathFactory, certs: DevCerts) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("batch")
    issue_client_certificate(certs, directory / "batch.crt", directory / "batch.key", "batch",
                             [x509.UniformResourceIdentifier(OTHER_WORKLOAD)])
    return directory / "batch.crt", directory / "batch.key"


@pytest.fixture(scope="module")
def expired_client(tmp_path_factory: pytest.TempPathFactory, certs: DevCerts) -> tuple[Path, Path]:
    """The demo workload's SPIFFE ID from the dev CA, valid until yesterday."""
    ca_key = serialization.load_pem_private_key(certs.ca_key.read_bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate(certs.ca_cert.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "expired")]))
        .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=30)).not_valid_after(now - datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(CLIENT_SPIFFE_ID)]), False)
        .sign(ca_key, hashes.SHA256()))  # type: ignore[arg-type]
    directory = tmp_path_factory.mktemp("expired")
    (directory / "expired.crt").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (directory / "expired.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return directory / "expired.crt", directory / "expired.key"


def test_the_demo_workloads_certificate_reaches_internal_and_is_audited(gateway: EnvoyProcess,
                                                                        extauth: ExtauthProcess,
                                                                        certs: DevCerts) -> None:
    """`curl --cert client.crt ... /internal/jobs` is 200; the decision names the rule and the SPIFFE ID."""
    response = gateway.get("/internal/jobs", client_cert=own(certs))
    assert response.status == 200
    decision = extauth.audit_events()[-1]
    assert (decision["path"], decision["decision"], decision["rule"], decision["peer_principal"]) == (
        "/internal/jobs", "allow", "demo/internal/demo-client-workload", CLIENT_SPIFFE_ID)


def test_without_a_certificate_internal_is_403_even_with_an_admin_token(gateway: EnvoyProcess,
                                                                        extauth: ExtauthProcess,
                                                                        certs: DevCerts) -> None:
    """The credential of /internal/ is the certificate: no token helps, so the answer is 403, not 401."""
    admin = mint_token(certs.jwt_signing_key, subject="root", claims={"roles": ["admin"]})
    for token in (None, admin):
        response = gateway.get("/internal/jobs", token)
        assert (response.status, response.json()["reason"]) == (403, "forbidden")
        assert extauth.audit_events()[-1]["peer_principal"] is None


def test_another_workload_of_the_dev_ca_is_403(gateway: EnvoyProcess, extauth: ExtauthProcess,
                                               other_workload: tuple[Path, Path]) -> None:
    """A verified certificate is an identity, not a pass: another SPIFFE ID is not the one the route lists."""
    response = gateway.get("/internal/jobs", client_cert=other_workload)
    assert (response.status, response.json()["reason"]) == (403, "forbidden")
    assert extauth.audit_events()[-1]["peer_principal"] == OTHER_WORKLOAD


def test_a_certificate_from_another_ca_fails_the_handshake(gateway: EnvoyProcess, extauth: ExtauthProcess,
                                                           foreign_ca_client: tuple[Path, Path]) -> None:
    """Envoy refuses it before any request exists (rather than connecting the caller anonymously)."""
    decisions, refused = len(extauth.audit_events()), failed_verifications(gateway)
    for path in ("/internal/jobs", "/public/hello"):
        with pytest.raises(REFUSED):
            gateway.get(path, client_cert=foreign_ca_client)
    assert failed_verifications(gateway) == refused + 2
    assert len(extauth.audit_events()) == decisions


def test_an_expired_certificate_of_the_dev_ca_fails_the_handshake(gateway: EnvoyProcess,
                                                                  expired_client: tuple[Path, Path]) -> None:
    """The right CA and the right SPIFFE ID, but out of date: refused like a stranger's."""
    refused = failed_verifications(gateway)
    with pytest.raises(REFUSED):
        gateway.get("/internal/jobs", client_cert=expired_client)
    assert failed_verifications(gateway) == refused + 1


@pytest.mark.parametrize("name", sorted(SPOOFED_HEADERS))
def test_a_header_naming_the_workload_never_makes_it_the_peer(gateway: EnvoyProcess, extauth: ExtauthProcess,
                                                              name: str) -> None:
    """Without a certificate, no header (XFCC included) naming the allowed SPIFFE ID gets through /internal/."""
    response = gateway.get("/internal/jobs", **{name.replace("-", "_"): SPOOFED_HEADERS[name]})
    assert (response.status, response.json()["reason"]) == (403, "forbidden")
    assert extauth.audit_events()[-1]["peer_principal"] is None


def test_a_client_sent_xfcc_is_removed_before_the_upstream(gateway: EnvoyProcess, certs: DevCerts,
                                                         other_workload: tuple[Path, Path]) -> None:
    """`forward_client_cert_details: SANITIZE`: an upstream that trusts XFCC never sees one a client wrote, with or
    without a certificate of its own."""
    forged = {"x-forwarded-client-cert": SPOOFED_HEADERS["x-forwarded-client-cert"]}
    for client_cert in (None, own(certs)):
        response = gateway.request("GET", "/public/hello", forged, client_cert=client_cert)
        assert response.status == 200
        assert "x-forwarded-client-cert" not in response.json()["headers"]


@pytest.fixture(scope="module")
def attribute_gateway(tmp_path_factory: pytest.TempPathFactory, certs: DevCerts,
                      upstream: RunningUpstream) -> Iterator[tuple[EnvoyProcess, ExtauthProcess]]:
    """The demo policies plus a route decided on the certificate's attributes (CEL `peer`)."""
    policy = f"""\
apiVersion: extauth/v1
kind: Policy
metadata: {{name: attributes}}
routes:
  - name: reports
    match: {{path: {{prefix: /internal/reports/}}}}
    public: true
    rules:
      - name: demo-namespace-by-certificate
        when:
          expression: >-
            peer.namespace == "demo" && peer.subject == "CN=extauth dev client,O=extauth development"
            && "{CLIENT_SPIFFE_ID}" in peer.uri_sans && peer.not_before < peer.not_after
"""
    with gateway_with_policies(tmp_path_factory.mktemp("attributes"), certs, upstream.port,
                               {"attributes.yaml": policy}) as running:
        yield running


def test_the_forwarded_certificates_attributes_reach_policy(attribute_gateway: tuple[EnvoyProcess, ExtauthProcess],
                                                           certs: DevCerts,
                                                           other_workload: tuple[Path, Path]) -> None:
    """Envoy's `include_peer_certificate` hands extauth the certificate: subject, SANs and validity decide."""
    envoy, extauth = attribute_gateway
    assert envoy.get("/internal/reports/q3", client_cert=own(certs)).status == 200
    assert extauth.audit_events()[-1]["rule"] == "attributes/reports/demo-namespace-by-certificate"
    assert envoy.get("/internal/reports/q3", client_cert=other_workload).status == 403  # another subject
    assert envoy.get("/internal/reports/q3").status == 403
