"""The dev PKI: a CA that verifies every leaf for its intended use, private keys only the owner can read."""

import ipaddress
import json
import stat
from pathlib import Path

import jwt
import pytest
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store

from extauth.devtools import DEV_KEY_ID
from extauth.devtools.certs import (
    CLIENT_SPIFFE_ID,
    ENVOY_SPIFFE_ID,
    EXTAUTH_DNS_NAME,
    DevCerts,
    create_dev_certs,
    issue_client_certificate,
)

PRIVATE_KEYS = ("ca_key", "server_key", "upstream_key", "client_key", "extauth_key", "envoy_client_key",
                "jwt_signing_key")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> DevCerts:
    return create_dev_certs(tmp_path_factory.mktemp("certs"))


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _store(certs: DevCerts) -> Store:
    return Store([_load(certs.ca_cert)])


def test_creates_every_file_with_fixed_names(certs: DevCerts) -> None:
    """All fourteen files exist under the names the Envoy bootstrap refers to."""
    assert sorted(path.name for path in certs.paths()) == sorted(
        [
            "ca.crt",
            "ca.key",
            "server.crt",
            "server.key",
            "upstream.crt",
            "upstream.key",
            "client.crt",
            "client.key",
            "extauth.crt",
            "extauth.key",
            "envoy-client.crt",
            "envoy-client.key",
            "jwt-signing.key",
            "jwks.json",
        ]
    )
    assert certs.complete()


@pytest.mark.parametrize("field", PRIVATE_KEYS)
def test_private_keys_are_owner_only(certs: DevCerts, field: str) -> None:
    """Every private key is mode 0600."""
    assert stat.S_IMODE(getattr(certs, field).stat().st_mode) == 0o600


@pytest.mark.parametrize("name", [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
def test_server_cert_verifies_for_local_names(certs: DevCerts, name: x509.DNSName | x509.IPAddress) -> None:
    """The Envoy server certificate chains to the CA and is valid for localhost and 127.0.0.1."""
    verifier = PolicyBuilder().store(_store(certs)).build_server_verifier(name)
    chain = verifier.verify(_load(certs.server_cert), [])
    assert chain[-1] == _load(certs.ca_cert)


def test_server_cert_covers_ipv6_loopback(certs: DevCerts) -> None:
    """The Envoy server certificate also names ::1, for clients that resolve localhost to IPv6."""
    names = _load(certs.server_cert).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]


def test_upstream_cert_verifies_for_its_sni_name(certs: DevCerts) -> None:
    """The demo-upstream certificate is valid for demo-upstream.local, the SNI and SAN Envoy checks."""
    verifier = PolicyBuilder().store(_store(certs)).build_server_verifier(x509.DNSName("demo-upstream.local"))
    verifier.verify(_load(certs.upstream_cert), [])


def test_client_cert_carries_spiffe_id_and_is_client_only(certs: DevCerts) -> None:
    """The client certificate verifies as a client identity with the SPIFFE URI SAN, and not as a server."""
    store = _store(certs)
    verified = PolicyBuilder().store(store).build_client_verifier().verify(_load(certs.client_cert), [])
    assert [str(uri.value) for uri in verified.subjects or []] == [CLIENT_SPIFFE_ID]
    with pytest.raises(x509.verification.VerificationError):
        PolicyBuilder().store(store).build_server_verifier(x509.DNSName("localhost")).verify(
            _load(certs.client_cert), []
        )


@pytest.mark.parametrize("name", [x509.DNSName(EXTAUTH_DNS_NAME), x509.DNSName("localhost"),
                                  x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
def test_extauth_server_cert_verifies_for_its_names(certs: DevCerts, name: x509.DNSName | x509.IPAddress) -> None:
    """extauth's own gRPC certificate is a server certificate for extauth.local and the loopback names."""
    PolicyBuilder().store(_store(certs)).build_server_verifier(name).verify(_load(certs.extauth_cert), [])


def test_envoy_client_cert_carries_envoys_spiffe_id(certs: DevCerts) -> None:
    """Envoy's client certificate towards extauth verifies as a client with the gateway SPIFFE ID only."""
    verified = PolicyBuilder().store(_store(certs)).build_client_verifier().verify(_load(certs.envoy_client_cert), [])
    assert [str(uri.value) for uri in verified.subjects or []] == [ENVOY_SPIFFE_ID]


def test_extra_client_certificate_chains_to_the_dev_ca(certs: DevCerts, tmp_path: Path) -> None:
    """issue_client_certificate signs a client certificate with the given names using the CA on disk."""
    cert, key = tmp_path / "other.crt", tmp_path / "other.key"
    issue_client_certificate(certs, cert, key, "other", [x509.DNSName("other.internal")])
    verified = PolicyBuilder().store(_store(certs)).build_client_verifier().verify(_load(cert), [])
    assert [name.value for name in verified.subjects or []] == ["other.internal"]
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_jwks_publishes_the_signing_key(certs: DevCerts) -> None:
    """jwks.json holds the public half of jwt-signing.key with kid, alg RS256 and use sig."""
    (key,) = json.loads(certs.jwks.read_text())["keys"]
    assert {key["kid"], key["alg"], key["use"], key["kty"]} == {DEV_KEY_ID, "RS256", "sig", "RSA"}
    assert "d" not in key
    token = jwt.encode({"sub": "x"}, certs.jwt_signing_key.read_bytes(), algorithm="RS256")
    assert jwt.decode(token, jwt.PyJWK(key).key, algorithms=["RS256"]) == {"sub": "x"}


def test_existing_complete_set_is_kept(tmp_path: Path) -> None:
    """A second call without force leaves every file untouched."""
    first = create_dev_certs(tmp_path)
    before = {path: path.read_bytes() for path in first.paths()}
    second = create_dev_certs(tmp_path)
    assert second == first
    assert {path: path.read_bytes() for path in second.paths()} == before


def test_force_regenerates(tmp_path: Path) -> None:
    """force=True issues a new CA and a new signing key."""
    first = create_dev_certs(tmp_path)
    old_ca, old_jwks = first.ca_cert.read_bytes(), first.jwks.read_text()
    create_dev_certs(tmp_path, force=True)
    assert first.ca_cert.read_bytes() != old_ca
    assert first.jwks.read_text() != old_jwks


def test_partial_set_is_regenerated_consistently(tmp_path: Path) -> None:
    """A set with a missing file is regenerated whole, so every leaf still chains to the CA on disk."""
    first = create_dev_certs(tmp_path)
    old_ca = first.ca_cert.read_bytes()
    first.client_key.unlink()
    second = create_dev_certs(tmp_path)
    assert second.complete()
    assert second.ca_cert.read_bytes() != old_ca
    PolicyBuilder().store(_store(second)).build_server_verifier(x509.DNSName("localhost")).verify(
        _load(second.server_cert), []
    )
