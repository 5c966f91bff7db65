"""CallerGate over the auth context gRPC reports: typed identities, canonical DNS, unix-only plaintext access logs.

The contexts here carry exactly the properties grpc-core sets (see tests/integration/test_grpc_listener_tls.py for
the same rules over real handshakes).
"""


import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from extauth.callers import CallerGate, caller_of
from extauth.config.schema import ServerTlsConfig
from extauth.devtools.certs import DevCerts, create_dev_certs

PROPERTY_OF_KIND = {"uri": "peer_uri", "dns": "peer_dns", "cn": "x509_common_name"}
SETTINGS = settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])


class Connection:
    """What a grpc.aio.ServicerContext says about its connection: the peer address and the auth context."""

    def __init__(self, peer: str, properties: dict[str, list[bytes]] | None = None) -> None:
        self._peer = peer
        self._properties = properties or {"transport_security_type": [b"insecure"]}

    def peer(self) -> str:
        return self._peer

    def auth_context(self) -> dict[str, list[bytes]]:
        return self._properties


def tls(**identities: list[str]) -> Connection:
    properties = {"transport_security_type": [b"ssl"]}
    for kind, values in identities.items():
        properties[PROPERTY_OF_KIND[kind]] = [value.encode() for value in values]
    return Connection("ipv4:10.0.0.7:51234", properties)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> DevCerts:
    return create_dev_certs(tmp_path_factory.mktemp("certs"))


def gate(certs: DevCerts, allowed: list[str], access_log: list[str]) -> CallerGate:
    return CallerGate(ServerTlsConfig(cert_file=certs.extauth_cert, key_file=certs.extauth_key,
                                      client_ca_file=certs.ca_cert, allowed_clients=allowed,
                                      access_log_clients=access_log))


LABEL = st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?\Z")
DNS = st.lists(LABEL, min_size=1, max_size=3).map(".".join)
KINDS = st.sampled_from(sorted(PROPERTY_OF_KIND))


@SETTINGS
@given(name=DNS, allowed_kind=KINDS, presented_kind=KINDS)
def test_an_identity_only_counts_in_the_certificate_field_of_its_kind(
        certs: DevCerts, name: str, allowed_kind: str, presented_kind: str) -> None:
    """The same text as a URI SAN, DNS SAN or CN is three different identities: only the listed kind passes."""
    value = f"spiffe://{name}/sa/envoy" if allowed_kind == "uri" else name
    callers = gate(certs, [f"{allowed_kind}:{value}"], [f"{allowed_kind}:{value}"])
    connection = tls(**{presented_kind: [value]})
    assert callers.admits_check(connection) == (presented_kind == allowed_kind)
    assert callers.admits_access_logs(connection) == (presented_kind == allowed_kind)


@SETTINGS
@given(name=DNS, flips=st.lists(st.booleans(), min_size=40, max_size=40), root_dot=st.booleans())
def test_dns_identity_matches_in_any_letter_case_and_with_a_root_dot(
        certs: DevCerts, name: str, flips: list[bool], root_dot: bool) -> None:
    """`Envoy.Internal.` in a certificate is the allowlisted `envoy.internal`."""
    spelled = "".join(char.upper() if flip else char for char, flip in zip(name, flips, strict=False))
    assert gate(certs, [f"dns:{name}"], []).admits_check(tls(dns=[spelled + ("." if root_dot else "")]))


@SETTINGS
@given(allowed=DNS, presented=DNS)
def test_a_different_dns_name_is_refused_and_counted(certs: DevCerts, allowed: str, presented: str) -> None:
    """Prefixes, suffixes and other names of a listed DNS identity are refused, and each refusal is counted."""
    callers = gate(certs, [f"dns:{allowed}"], [])
    assert callers.admits_check(tls(dns=[presented])) == (allowed == presented)
    assert callers.stats.refused["check", "tls"] == (allowed != presented)


@SETTINGS
@given(peer=st.one_of(st.ip_addresses(v=4).map(lambda ip: f"ipv4:{ip}:4242"),
                      st.ip_addresses(v=6).map(lambda ip: f"ipv6:[{ip}]:4242")))
def test_plaintext_tcp_may_check_but_never_send_access_logs(certs: DevCerts, peer: str) -> None:
    """A plaintext TCP connection (loopback or not) gets Checks answered but its access logs refused."""
    callers = gate(certs, ["dns:envoy.internal"], ["dns:envoy.internal"])
    assert callers.admits_check(Connection(peer))
    assert not callers.admits_access_logs(Connection(peer))
    assert callers.stats.refused["access_log", "tcp"] == 1


def test_unix_socket_may_send_access_logs_without_any_tls_configured() -> None:
    """Unix-socket connections are the one plaintext transport whose access logs are accepted."""
    callers = CallerGate(None)
    assert callers.admits_access_logs(Connection("unix:")) and callers.admits_check(Connection("unix:"))
    assert not callers.checks_every_call


def test_tls_client_without_certificate_has_no_identity(certs: DevCerts) -> None:
    """A TLS connection without a client certificate is refused where an allowlist applies."""
    callers = gate(certs, ["dns:envoy.internal"], ["dns:envoy.internal"])
    assert caller_of(tls()).identities == frozenset()
    assert not callers.admits_check(tls()) and not callers.admits_access_logs(tls())


def test_undecodable_certificate_field_never_matches(certs: DevCerts) -> None:
    """A CN or SAN that is not UTF-8 is ignored, not decoded into something that might equal an entry."""
    connection = Connection("ipv4:10.0.0.7:1", {"transport_security_type": [b"ssl"], "x509_common_name": [b"\xff"]})
    assert not gate(certs, ["cn:\ufffd"], []).admits_check(connection)


def test_without_allowlist_every_verified_tls_client_may_check(certs: DevCerts) -> None:
    """allowed_clients empty: the handshake (client_ca_file) is the whole check, and the gate is skipped."""
    callers = gate(certs, [], ["uri:spiffe://corp/envoy"])
    assert not callers.checks_every_call and callers.admits_check(tls(cn=["anyone"]))
    assert not callers.admits_access_logs(tls(cn=["anyone"]))


