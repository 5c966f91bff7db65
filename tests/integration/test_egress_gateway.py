"""The egress gateway through real Envoy (envoy/egress.yaml) and extauth on the shipped demo policies: workloads
with client certificates call a local TLS server standing in for an external API (its certificate from the dev CA,
in the external host's name), and extauth decides by the caller's SPIFFE ID and the destination host."""

import http.client
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from extauth.devstack.gateway import EgressEnvoyProcess, ExtauthProcess, Response, extauth_config
from extauth.devtools.certs import CLIENT_SPIFFE_ID, DevCerts, issue_client_certificate, issue_server_certificate
from extauth.devtools.upstream import RunningUpstream, start_in_thread

PARTNER_HOST = "api.partner.example"
OTHER_CALLER = "spiffe://extauth.local/ns/other/sa/batch"


@pytest.fixture(scope="module")
def partner_api(tmp_path_factory: pytest.TempPathFactory, certs: DevCerts) -> Iterator[RunningUpstream]:
    directory = tmp_path_factory.mktemp("partner")
    issue_server_certificate(certs, directory / "partner.crt", directory / "partner.key", PARTNER_HOST)
    with start_in_thread(directory / "partner.crt", directory / "partner.key") as running:
        yield running


@pytest.fixture(scope="module")
def other_caller(tmp_path_factory: pytest.TempPathFactory, certs: DevCerts) -> tuple[Path, Path]:
    """A workload of the same trust domain whose SPIFFE ID no egress entry lists."""
    directory = tmp_path_factory.mktemp("other")
    cert, key = directory / "other.crt", directory / "other.key"
    issue_client_certificate(certs, cert, key, "other workload", [x509.UniformResourceIdentifier(OTHER_CALLER)])
    return cert, key


@pytest.fixture(scope="module")
def egress(tmp_path_factory: pytest.TempPathFactory, envoy_binary: Path, certs: DevCerts,
           partner_api: RunningUpstream) -> Iterator[tuple[EgressEnvoyProcess, ExtauthProcess]]:
    run_dir = tmp_path_factory.mktemp("egress")
    extauth = ExtauthProcess(run_dir / "extauth", extauth_config(run_dir / "extauth", certs))
    try:
        extauth.wait_serving()
        envoy = EgressEnvoyProcess(run_dir / "envoy", certs, {"partner_api": partner_api.port}, extauth.addresses)
        try:
            yield envoy, extauth
        finally:
            envoy.stop()
    finally:
        extauth.stop()


def call(egress: tuple[EgressEnvoyProcess, ExtauthProcess], certs: DevCerts, host: str = PARTNER_HOST,
         client: tuple[Path, Path] | None = None, path: str = "/v1/rates") -> Response:
    envoy, _ = egress
    return envoy.request(host, path, client or (certs.client_cert, certs.client_key), certs.ca_cert,
                         headers={"authorization": "Bearer partner-api-key"})


def test_an_allowed_caller_reaches_an_allowed_host_with_its_own_credentials(egress: tuple, certs: DevCerts) -> None:
    """200 from the stand-in, over TLS Envoy verified; the call's own Authorization arrives, the workload's address
    and Envoy's internals do not; the decision event says egress, with the caller and the destination."""
    response = call(egress, certs, path="/v1/rates?from=EUR")
    assert response.status == 200, response.body
    echoed = response.json()
    assert (echoed["path"], echoed["headers"]["host"]) == ("/v1/rates?from=EUR", PARTNER_HOST)
    assert echoed["headers"]["authorization"] == "Bearer partner-api-key"
    assert not {"x-forwarded-for", "x-envoy-expected-rq-timeout-ms"} & echoed["headers"].keys()
    _, extauth = egress
    (event,) = [event for event in extauth.audit_events() if event["path"] == "/v1/rates"]
    assert (event["direction"], event["peer_principal"], event["destination"], event["decision"]) == (
        "egress", CLIENT_SPIFFE_ID, PARTNER_HOST, "allow")


def test_another_spelling_of_the_allowed_host_is_that_host(egress: tuple, certs: DevCerts) -> None:
    """Case, a trailing dot and a port: routed, decided and sent on as `api.partner.example`, on the cluster's port."""
    response = call(egress, certs, host="API.Partner.Example.:8443")
    assert response.status == 200, response.body
    assert response.json()["headers"]["host"] == PARTNER_HOST


@pytest.mark.parametrize("host", ["api.other.example", "api.partner.example.evil.example", "127.0.0.1"])
def test_an_unlisted_host_is_403(egress: tuple, certs: DevCerts, host: str) -> None:
    """No egress entry lists the host: extauth refuses it (and audits it as egress)."""
    response = call(egress, certs, host=host)
    assert (response.status, response.json()["reason"]) == (403, "no_matching_route")


def test_a_caller_not_allowed_for_the_host_is_403(egress: tuple, certs: DevCerts, other_caller: tuple) -> None:
    """A certificate the CA issued, for a workload the entry does not list: 403 `forbidden`."""
    response = call(egress, certs, client=other_caller)
    assert (response.status, response.json()["reason"]) == (403, "forbidden")
    _, extauth = egress
    assert any(e.get("peer_principal") == OTHER_CALLER and e.get("direction") == "egress"
               for e in extauth.audit_events())


def test_every_egress_answer_carries_the_request_id_of_its_decision(egress: tuple, certs: DevCerts) -> None:
    """The workload gets `x-request-id` back on an allowed and on a refused call, the id of its decision event."""
    allowed, refused = call(egress, certs), call(egress, certs, host="api.other.example")
    assert refused.json()["request_id"] == refused.headers["x-request-id"]
    _, extauth = egress
    audited = {event["request_id"] for event in extauth.audit_events()}
    assert {allowed.headers["x-request-id"], refused.headers["x-request-id"]} <= audited


def test_a_workload_without_a_client_certificate_is_refused_at_the_handshake(egress: tuple, certs: DevCerts) -> None:
    """No client certificate, no request: the TLS handshake (or the first read after it, in TLS 1.3) fails."""
    envoy, _ = egress
    with pytest.raises((ssl.SSLError, ConnectionError, http.client.RemoteDisconnected)):
        envoy.request(PARTNER_HOST, "/v1/rates", None, certs.ca_cert)


def test_an_over_limit_caller_is_429(egress: tuple, certs: DevCerts) -> None:
    """The entry's per-caller limit (5 per 10 s): further calls of that caller to that host are 429."""
    statuses = [call(egress, certs, path="/v1/limited").status for _ in range(8)]
    assert 429 in statuses
    assert set(statuses[:statuses.index(429)]) == {200}
    refused = call(egress, certs, path="/v1/limited")
    assert refused.status == 429 and int(refused.headers["retry-after"]) >= 1
