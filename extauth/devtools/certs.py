"""Development PKI: one local CA issuing every TLS certificate of the local stack, plus the dev JWT signing key.

Everything here is throw-away material for a developer machine; a real deployment brings its own PKI.
"""

import datetime
import ipaddress
import json
import os
from dataclasses import astuple, dataclass
from pathlib import Path

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from extauth.devtools import DEV_KEY_ID

CLIENT_SPIFFE_ID = "spiffe://extauth.local/ns/demo/sa/client"
UPSTREAM_DNS_NAME = "demo-upstream.local"
#: extauth's own gRPC listener when it is TCP with mutual TLS: Envoy checks this name (SNI and SAN).
EXTAUTH_DNS_NAME = "extauth.local"
#: Envoy's identity towards extauth, for `server.tls.allowed_clients` / `access_log_clients`.
ENVOY_SPIFFE_ID = "spiffe://extauth.local/ns/gateway/sa/envoy"
VALIDITY = datetime.timedelta(days=365)
# Tolerates a little clock skew between the machine that issues and the process that verifies.
BACKDATE = datetime.timedelta(minutes=5)

TlsKey = ec.EllipticCurvePrivateKey
SubjectAltName = x509.DNSName | x509.IPAddress | x509.UniformResourceIdentifier


@dataclass(frozen=True, slots=True)
class DevCerts:
    """Where each file of the dev PKI lives; the names are fixed so Envoy configs can refer to them."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    upstream_cert: Path
    upstream_key: Path
    client_cert: Path
    client_key: Path
    extauth_cert: Path
    extauth_key: Path
    envoy_client_cert: Path
    envoy_client_key: Path
    jwt_signing_key: Path
    jwks: Path

    @classmethod
    def in_directory(cls, directory: Path) -> "DevCerts":
        return cls(
            ca_cert=directory / "ca.crt",
            ca_key=directory / "ca.key",
            server_cert=directory / "server.crt",
            server_key=directory / "server.key",
            upstream_cert=directory / "upstream.crt",
            upstream_key=directory / "upstream.key",
            client_cert=directory / "client.crt",
            client_key=directory / "client.key",
            extauth_cert=directory / "extauth.crt",
            extauth_key=directory / "extauth.key",
            envoy_client_cert=directory / "envoy-client.crt",
            envoy_client_key=directory / "envoy-client.key",
            jwt_signing_key=directory / "jwt-signing.key",
            jwks=directory / "jwks.json",
        )

    def paths(self) -> tuple[Path, ...]:
        return astuple(self)

    def complete(self) -> bool:
        return all(path.is_file() for path in self.paths())


def create_dev_certs(directory: Path, *, force: bool = False) -> DevCerts:
    """Create the whole set, or keep an existing complete one so restarting the stack does not invalidate
    certificates and tokens already handed out; a partial set is regenerated because its parts may not match."""
    certs = DevCerts.in_directory(directory)
    if certs.complete() and not force:
        return certs
    directory.mkdir(parents=True, exist_ok=True)

    ca_key = _new_tls_key()
    ca_cert = _self_signed_ca(ca_key)
    _write_private_key(certs.ca_key, ca_key)
    _write_certificate(certs.ca_cert, ca_cert)

    localhost = [x509.DNSName("localhost"), _ip("127.0.0.1"), _ip("::1")]
    upstream = [x509.DNSName(UPSTREAM_DNS_NAME), _ip("127.0.0.1")]
    client = [x509.UniformResourceIdentifier(CLIENT_SPIFFE_ID)]
    extauth = [x509.DNSName(EXTAUTH_DNS_NAME), *localhost]
    envoy_client = [x509.UniformResourceIdentifier(ENVOY_SPIFFE_ID)]
    server, client_auth = ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH
    for cert_path, key_path, common_name, names, usage in (
        (certs.server_cert, certs.server_key, "extauth dev envoy", localhost, server),
        (certs.upstream_cert, certs.upstream_key, UPSTREAM_DNS_NAME, upstream, server),
        (certs.client_cert, certs.client_key, "extauth dev client", client, client_auth),
        (certs.extauth_cert, certs.extauth_key, EXTAUTH_DNS_NAME, extauth, server),
        (certs.envoy_client_cert, certs.envoy_client_key, "extauth dev envoy client", envoy_client, client_auth),
    ):
        _write_leaf(ca_key, ca_cert, cert_path, key_path, common_name, names, usage)

    signing_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_private_key(certs.jwt_signing_key, signing_key)
    certs.jwks.write_text(json.dumps(_public_jwks(signing_key), indent=2) + "\n")
    return certs


def issue_client_certificate(certs: DevCerts, cert_path: Path, key_path: Path, common_name: str,
                             names: list[SubjectAltName]) -> None:
    """One more client certificate from the dev CA (tests use it for identities outside an allowlist)."""
    _issue_from_dev_ca(certs, cert_path, key_path, common_name, names, ExtendedKeyUsageOID.CLIENT_AUTH)


def issue_server_certificate(certs: DevCerts, cert_path: Path, key_path: Path, host: str) -> None:
    """A server certificate from the dev CA for `host` (tests stand in for an external API with it)."""
    _issue_from_dev_ca(certs, cert_path, key_path, host, [x509.DNSName(host)], ExtendedKeyUsageOID.SERVER_AUTH)


def _issue_from_dev_ca(certs: DevCerts, cert_path: Path, key_path: Path, common_name: str,
                       names: list[SubjectAltName], usage: x509.ObjectIdentifier) -> None:
    ca_key = serialization.load_pem_private_key(certs.ca_key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca_cert = x509.load_pem_x509_certificate(certs.ca_cert.read_bytes())
    _write_leaf(ca_key, ca_cert, cert_path, key_path, common_name, names, usage)


def _write_leaf(ca_key: TlsKey, ca_cert: x509.Certificate, cert_path: Path, key_path: Path, common_name: str,
                names: list[SubjectAltName], usage: x509.ObjectIdentifier) -> None:
    leaf_key = _new_tls_key()
    _write_private_key(key_path, leaf_key)
    _write_certificate(cert_path, _issue_leaf(ca_key, ca_cert, leaf_key, common_name, names, usage))


def _new_tls_key() -> TlsKey:
    return ec.generate_private_key(ec.SECP256R1())


def _ip(text: str) -> x509.IPAddress:
    return x509.IPAddress(ipaddress.ip_address(text))


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "extauth development"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _builder(subject: x509.Name, issuer: x509.Name, key: TlsKey) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


def _key_usage(*, signs_certificates: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        encipher_only=False,
        decipher_only=False,
    )


def _self_signed_ca(key: TlsKey) -> x509.Certificate:
    name = _name("extauth dev CA")
    return (
        _builder(name, name, key)
        # path_length=0: the CA may sign leaves only, never another CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(signs_certificates=True), critical=True)
        .sign(key, hashes.SHA256())
    )


def _issue_leaf(
    ca_key: TlsKey,
    ca_cert: x509.Certificate,
    key: TlsKey,
    common_name: str,
    names: list[SubjectAltName],
    usage: x509.ObjectIdentifier,
) -> x509.Certificate:
    return (
        _builder(_name(common_name), ca_cert.subject, key)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(signs_certificates=False), critical=True)
        # The EKU keeps a server certificate from being accepted as a client identity and vice versa.
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def _write_private_key(path: Path, key: TlsKey | rsa.RSAPrivateKey) -> None:
    """Created 0600 from the first byte (not chmod-ed afterwards), so the key is never readable by others."""
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(pem)


def _write_certificate(path: Path, certificate: x509.Certificate) -> None:
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


def _public_jwks(key: rsa.RSAPrivateKey) -> dict[str, list[dict[str, object]]]:
    """pyjwt also emits `key_ops`, which RFC 7517 says should not appear beside `use`; only `use` is kept."""
    jwk = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {"keys": [{"kty": "RSA", "n": jwk["n"], "e": jwk["e"], "kid": DEV_KEY_ID, "alg": "RS256", "use": "sig"}]}
