"""The gRPC listener is not an open door: a TCP address other hosts can reach needs mutual TLS or `insecure: true`."""

import ipaddress
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from extauth.config import ConfigError, load_config
from extauth.config.schema import ListenAddress, canonical_client_identity
from extauth.devtools.certs import DevCerts, create_dev_certs

FIXTURE_SETTINGS = settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> DevCerts:
    return create_dev_certs(tmp_path_factory.mktemp("certs"))


def tls_section(certs: DevCerts, **overrides: object) -> dict[str, object]:
    return {"cert_file": str(certs.extauth_cert), "key_file": str(certs.extauth_key),
            "client_ca_file": str(certs.ca_cert), **overrides}


def write_config(path: Path, server: dict[str, object]) -> Path:
    path.write_text(yaml.safe_dump({"policy": {"path": "p.yaml"}, "server": server}, sort_keys=False))
    (path.parent / "p.yaml").touch()
    return path


def ipv6_spellings(ip: ipaddress.IPv6Address) -> st.SearchStrategy[str]:
    """The compressed, exploded and upper-case forms of one IPv6 address."""
    return st.sampled_from([ip.compressed, ip.exploded, ip.exploded.upper(), ip.compressed.upper()])


EVERY_INTERFACE = st.sampled_from(["0.0.0.0", "::", "0:0:0:0:0:0:0:0", "::0", "0000::", "0", "0.0.0.0.", "*"])
REMOTE_IPV4 = st.ip_addresses(v=4).filter(lambda ip: not ip.is_loopback).map(str)
REMOTE_IPV6 = st.ip_addresses(v=6).filter(lambda ip: not ip.is_loopback and not (
    ip.ipv4_mapped and ip.ipv4_mapped.is_loopback)).flatmap(ipv6_spellings)
#: Names that may well mean this host but are not guaranteed to: a resolver decides, so TLS is needed.
HOST_NAMES = st.sampled_from(["LOCALHOST", "localhost.", "localhost.localdomain", "ip6-localhost", "127.1",
                              "0x7f.1", "2130706433", "extauth.internal", "example.com"])
REACHABLE_FROM_OTHER_HOSTS = st.one_of(EVERY_INTERFACE, REMOTE_IPV4, REMOTE_IPV6, HOST_NAMES)

LOOPBACK_IPV4 = st.integers(0, 2**24 - 1).map(lambda low: str(ipaddress.IPv4Address((127 << 24) | low)))
LOOPBACK = st.one_of(
    LOOPBACK_IPV4,
    ipv6_spellings(ipaddress.IPv6Address("::1")),
    LOOPBACK_IPV4.map(lambda ip: f"::ffff:{ip}"),
    st.just("localhost"),
)


def tcp(host: str, port: int = 9001) -> str:
    return f"tcp:[{host}]:{port}" if ":" in host else f"tcp:{host}:{port}"


@FIXTURE_SETTINGS
@given(host=REACHABLE_FROM_OTHER_HOSTS)
def test_address_other_hosts_reach_without_tls_is_a_load_error_at_its_line(tmp_path: Path, host: str) -> None:
    """Every spelling of a non-loopback TCP address without TLS fails to load, naming file:line and the entry."""
    path = tmp_path / "extauth.yaml"
    (tmp_path / "p.yaml").touch()
    path.write_text(f"policy: {{path: p.yaml}}\nserver:\n  listen:\n    - unix:/tmp/a.sock\n    - '{tcp(host)}'\n")
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert str(raised.value) == (
        f"{path}:5: server.listen[1]: {tcp(host)} is reachable from other hosts without TLS: configure "
        "server.tls with client certificates, listen on loopback or a unix socket, or set server.insecure: true")


@FIXTURE_SETTINGS
@given(host=LOOPBACK)
def test_every_loopback_spelling_loads_without_tls(tmp_path: Path, host: str) -> None:
    """127.0.0.0/8, ::1 in any spelling, IPv4-mapped loopback and `localhost` are loopback: no TLS needed."""
    config = load_config(write_config(tmp_path / "extauth.yaml", {"listen": [tcp(host)]}))
    (address,) = config.server.addresses(tmp_path)
    assert address.local_only() and not config.server.unauthenticated(address)


@given(ip=st.ip_addresses(v=4))
def test_an_ipv4_address_is_local_exactly_when_it_is_in_127_slash_8(ip: ipaddress.IPv4Address) -> None:
    """No IPv4 address outside 127.0.0.0/8 counts as loopback, and none inside it is refused."""
    assert ListenAddress.parse(tcp(str(ip))).local_only() == (ip.packed[0] == 127)


def test_default_listener_is_loopback(tmp_path: Path) -> None:
    """With no `server` section extauth listens on 127.0.0.1:9001, which needs no TLS."""
    path = tmp_path / "extauth.yaml"
    path.write_text("policy: {path: p.yaml}\n")
    (tmp_path / "p.yaml").touch()
    config = load_config(path)
    assert config.server.listen == ["tcp:127.0.0.1:9001"]
    assert not config.server.unauthenticated(config.server.addresses(tmp_path)[0])


def test_insecure_true_accepts_a_plaintext_address_other_hosts_reach(tmp_path: Path) -> None:
    """`insecure: true` written in the config lets 0.0.0.0 load without TLS, and marks the listener unauthenticated."""
    config = load_config(write_config(tmp_path / "extauth.yaml", {"insecure": True, "listen": ["tcp:0.0.0.0:9001"]}))
    assert config.server.unauthenticated(config.server.addresses(tmp_path)[0])


def test_mutual_tls_accepts_every_interface(tmp_path: Path, certs: DevCerts) -> None:
    """With TLS requiring client certificates, 0.0.0.0 and :: load without `insecure`."""
    config = load_config(write_config(tmp_path / "extauth.yaml", {
        "tls": tls_section(certs), "listen": ["tcp:0.0.0.0:9001", "tcp:[::]:9002"]}))
    assert not any(config.server.unauthenticated(address) for address in config.server.addresses(tmp_path))


def test_tls_without_client_certificates_is_not_enough_for_other_hosts(tmp_path: Path, certs: DevCerts) -> None:
    """Server-only TLS on 0.0.0.0 still lets anyone call Check, so it needs `insecure: true` too."""
    server = {"tls": tls_section(certs, require_client_certificate=False), "listen": ["tcp:0.0.0.0:9001"]}
    with pytest.raises(ConfigError, match=r"server\.listen\[0\]: .* TLS does not require client certificates"):
        load_config(write_config(tmp_path / "extauth.yaml", server))
    config = load_config(write_config(tmp_path / "extauth.yaml", {**server, "insecure": True}))
    assert config.server.unauthenticated(config.server.addresses(tmp_path)[0])


TLS_ERRORS = {
    "missing certificate": ({"cert_file": "/nonexistent.crt"}, "server.tls.cert_file: cannot read /nonexistent.crt"),
    "key instead of certificate": ({"cert_file": "KEY"}, "server.tls.cert_file: .* holds no PEM certificate"),
    "certificate instead of key": ({"key_file": "CA"}, "server.tls.key_file: .* holds no unencrypted PEM private key"),
    "key of another certificate": ({"key_file": "CLIENT_KEY"}, "server.tls: key_file .* is not the key of"),
    "client certificates without a CA": ({"client_ca_file": None}, "server.tls: require_client_certificate needs"),
    "allowlist without client certificates": (
        {"require_client_certificate": False, "allowed_clients": ["dns:envoy.internal"]},
        "server.tls: allowed_clients and access_log_clients need require_client_certificate: true"),
    "unknown identity kind": ({"allowed_clients": ["email:a@b"]}, r"server.tls.allowed_clients\[0\]: 'email:a@b'"),
    "wildcard DNS identity": ({"access_log_clients": ["dns:*.internal"]},
                              r"server.tls.access_log_clients\[0\]: .*no wildcards"),
    "relative URI identity": ({"allowed_clients": ["uri:envoy"]}, r"server.tls.allowed_clients\[0\]: .*absolute URI"),
    "identity with a space": ({"allowed_clients": ["uri:spiffe://td/a b"]},
                              r"server.tls.allowed_clients\[0\]: .*without spaces"),
}


@pytest.mark.parametrize("overrides, message", TLS_ERRORS.values(), ids=TLS_ERRORS.keys())
def test_broken_tls_section_is_a_load_error_naming_the_field(
        tmp_path: Path, certs: DevCerts, overrides: dict[str, object], message: str) -> None:
    """Unreadable or mismatched TLS files and malformed identities fail at load, with file, line and field."""
    files = {"KEY": str(certs.extauth_key), "CA": str(certs.ca_cert), "CLIENT_KEY": str(certs.client_key)}
    tls = tls_section(certs, **{key: files.get(value, value) if isinstance(value, str) else value
                                for key, value in overrides.items()})
    path = write_config(tmp_path / "extauth.yaml", {"tls": tls, "listen": ["tcp:0.0.0.0:9001"]})
    with pytest.raises(ConfigError, match=rf"^{path}:\d+: {message}"):
        load_config(path)


DNS_LABEL = st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?\Z")
DNS_NAMES = st.lists(DNS_LABEL, min_size=1, max_size=4).map(".".join)


def respell(name: str, data: st.DataObject) -> str:
    upper = data.draw(st.lists(st.booleans(), min_size=len(name), max_size=len(name)))
    return "".join(char.upper() if flip else char for char, flip in zip(name, upper, strict=True)) + data.draw(
        st.sampled_from(["", "."]))


@given(name=DNS_NAMES, data=st.data())
def test_dns_identities_compare_case_insensitively_and_without_trailing_dot(name: str, data: st.DataObject) -> None:
    """A DNS identity in any letter case, with or without the root dot, is the same identity as configured."""
    assert canonical_client_identity("dns", respell(name, data)) == canonical_client_identity("dns", name)


@given(path=st.from_regex(r"\A/[a-z]{1,8}/[a-z]{1,8}\Z"), data=st.data())
def test_uri_identities_compare_exactly(path: str, data: st.DataObject) -> None:
    """A SPIFFE ID differing in letter case is another identity: URI paths are case-sensitive."""
    spelled = respell(path, data).removesuffix(".")
    if spelled != path:
        assert canonical_client_identity("uri", f"spiffe://td{spelled}") != canonical_client_identity(
            "uri", f"spiffe://td{path}")


def test_allowlisted_identities_are_stored_canonical(tmp_path: Path, certs: DevCerts) -> None:
    """`dns:Envoy.Internal.` in the config is kept as `dns:envoy.internal`, the form peers are compared in."""
    tls = tls_section(certs, allowed_clients=["dns:Envoy.Internal.", "uri:spiffe://td/sa/Envoy"],
                      access_log_clients=["cn:Envoy Gateway"])
    config = load_config(write_config(tmp_path / "extauth.yaml", {"tls": tls}))
    assert config.server.tls is not None
    assert config.server.tls.allowed_clients == ["dns:envoy.internal", "uri:spiffe://td/sa/Envoy"]
    assert config.server.tls.access_log_clients == ["cn:Envoy Gateway"]
