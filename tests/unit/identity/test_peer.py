"""The verified peer (identity/peer.py): a SPIFFE ID from Envoy's `source.principal`, with the attributes of the
certificate Envoy forwards, and no identity when that certificate disagrees, names several IDs or has expired."""

from pathlib import Path
from urllib.parse import quote

import pytest
from cryptography import x509

from extauth.devtools.certs import CLIENT_SPIFFE_ID, DevCerts, create_dev_certs, issue_client_certificate
from extauth.identity import peer as peer_module
from extauth.identity.peer import certified_peer, peer_certificate, valid_certificate, verified_peer

OTHER = "spiffe://extauth.local/ns/demo/sa/other"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> DevCerts:
    return create_dev_certs(tmp_path_factory.mktemp("certs"))


def forwarded(path: Path) -> str:
    """A certificate as Envoy puts it in `source.certificate`: its PEM, URL-encoded."""
    return quote(path.read_text(), safe="")


def issued(certs: DevCerts, directory: Path, names: list[x509.GeneralName]) -> str:
    issue_client_certificate(certs, directory / "c.crt", directory / "c.key", "a workload", names)  # type: ignore[arg-type]
    return forwarded(directory / "c.crt")


def test_the_forwarded_certificate_gives_subject_sans_and_validity(certs: DevCerts, tmp_path: Path) -> None:
    """Subject (RFC 4514), URI and DNS SANs in order, and the validity period in epoch seconds."""
    text = issued(certs, tmp_path, [x509.UniformResourceIdentifier(CLIENT_SPIFFE_ID), x509.DNSName("jobs.local"),
                                    x509.DNSName("jobs.internal")])
    certificate = peer_certificate(text)
    assert certificate is not None
    assert certificate.subject == "CN=a workload,O=extauth development"
    assert (certificate.uri_sans, certificate.dns_sans) == ((CLIENT_SPIFFE_ID,), ("jobs.local", "jobs.internal"))
    assert certificate.not_before < certificate.not_after


def test_a_peer_carries_its_certificate_while_it_is_valid(certs: DevCerts) -> None:
    """Inside the validity period the peer has its certificate; before or after it, there is no peer at all."""
    text = forwarded(certs.client_cert)
    certificate = peer_certificate(text)
    assert certificate is not None
    inside = certified_peer(CLIENT_SPIFFE_ID, text, certificate.not_before + 1)
    assert inside is not None and inside.certificate == certificate and inside.namespace == "demo"
    assert certified_peer(CLIENT_SPIFFE_ID, text, certificate.not_after + 1) is None
    assert certified_peer(CLIENT_SPIFFE_ID, text, certificate.not_before - 1) is None


def test_without_a_forwarded_certificate_the_principal_alone_is_the_peer() -> None:
    """An Envoy that does not forward the certificate still reports the verified URI SAN."""
    peer = certified_peer(CLIENT_SPIFFE_ID, "", 0)
    assert peer is not None and peer.spiffe_id == CLIENT_SPIFFE_ID and peer.certificate is None


@pytest.mark.parametrize("names", [
    [CLIENT_SPIFFE_ID, OTHER],  # an SVID has exactly one URI SAN
    [OTHER],                    # the certificate names someone else than the principal
    [],                         # or nobody
])
def test_a_certificate_that_does_not_name_exactly_the_principal_is_no_peer(certs: DevCerts, tmp_path: Path,
                                                                         names: list[str]) -> None:
    """Which of several IDs Envoy reports is not something to decide on: such a certificate is no identity."""
    text = issued(certs, tmp_path, [*map(x509.UniformResourceIdentifier, names), x509.DNSName("jobs.local")])
    assert certified_peer(CLIENT_SPIFFE_ID, text, peer_certificate(text).not_before + 1) is None  # type: ignore[union-attr]


def test_a_certificate_with_dns_names_only_has_attributes_but_no_spiffe_id(certs: DevCerts, tmp_path: Path) -> None:
    """Envoy then reports the subject as the principal: no SPIFFE ID, but the certificate is still readable."""
    text = issued(certs, tmp_path, [x509.DNSName("jobs.local")])
    certificate = valid_certificate(text, peer_certificate(text).not_before + 1)  # type: ignore[union-attr]
    assert certificate is not None and certificate.dns_sans == ("jobs.local",) and certificate.uri_sans == ()
    assert certified_peer("CN=a workload,O=extauth development", text, certificate.not_before + 1) is None


@pytest.mark.parametrize("text", ["garbage", "%ZZ",
                                  quote("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----")])
def test_anything_but_one_certificate_is_none(text: str) -> None:
    """A forwarded value that does not parse is no certificate, and so no peer (never an error on the Check
    path)."""
    assert valid_certificate(text, 0) is None
    assert certified_peer(CLIENT_SPIFFE_ID, text, 0) is None


def test_remembered_peers_stay_bounded() -> None:
    """Many distinct principals never grow the memo beyond its bound, and answers stay right after a clear."""
    for index in range(peer_module._MEMO_MAX * 2 + 5):
        assert verified_peer(f"spiffe://corp/w/{index}").segments == ("w", str(index))  # type: ignore[union-attr]
    assert len(peer_module._KNOWN_PEERS) <= peer_module._MEMO_MAX
