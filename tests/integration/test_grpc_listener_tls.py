"""extauth on TCP with mutual TLS, through a real Envoy that presents its client certificate.

Only clients whose certificate the configured CA verifies complete the handshake; among those, Check is answered
only for identities in `allowed_clients` and access logs accepted only from `access_log_clients`. A plaintext
loopback listener answers Check but never accepts access logs.
"""

import http.client
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import yaml
from cryptography import x509
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc
from envoy.service.auth.v3 import external_auth_pb2_grpc
from support.checks import check_request

from extauth.config.schema import ListenAddress
from extauth.devstack.envoy import SHIPPED_BOOTSTRAP, ExtauthClientTls, render_bootstrap, validate_bootstrap
from extauth.devstack.gateway import EnvoyProcess, ExtauthProcess, extauth_config, free_port
from extauth.devstack.processes import grpc_channel
from extauth.devtools.certs import (
    ENVOY_SPIFFE_ID,
    EXTAUTH_DNS_NAME,
    DevCerts,
    create_dev_certs,
    issue_client_certificate,
)
from extauth.devtools.tokens import mint_token
from extauth.devtools.upstream import RunningUpstream

#: A second client allowed to call Check (a DNS identity), but not to send access logs.
CHECKER_DNS_NAME = "checker.internal"


@dataclass
class MutualTlsStack:
    extauth: ExtauthProcess
    envoy: EnvoyProcess
    address: ListenAddress
    metrics_port: int
    certs: DevCerts
    client_dir: Path

    def credentials(self, cert: Path | None = None, key: Path | None = None,
                    ca: Path | None = None) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            (ca or self.certs.ca_cert).read_bytes(),
            key.read_bytes() if key else None, cert.read_bytes() if cert else None)

    def client(self, common_name: str, *names: x509.GeneralName) -> grpc.ChannelCredentials:
        """Credentials with a fresh client certificate from the trusted CA carrying exactly these names."""
        name = uuid.uuid4().hex
        cert, key = self.client_dir / f"{name}.crt", self.client_dir / f"{name}.key"
        issue_client_certificate(self.certs, cert, key, common_name, list(names))
        return self.credentials(cert, key)

    def metric(self, sample: str) -> float:
        connection = http.client.HTTPConnection("127.0.0.1", self.metrics_port, timeout=5)
        connection.request("GET", "/metrics")
        text = connection.getresponse().read().decode()
        values = [line.rsplit(" ", 1)[1] for line in text.splitlines() if line.startswith(sample + " ")]
        return float(values[0]) if values else 0.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, certs: DevCerts, upstream: RunningUpstream,
          envoy_binary: Path) -> Iterator[MutualTlsStack]:
    run_dir = tmp_path_factory.mktemp("mtls")
    address = ListenAddress("tcp", host="127.0.0.1", port=free_port())
    metrics_port = free_port()
    tls = {"cert_file": str(certs.extauth_cert), "key_file": str(certs.extauth_key),
           "client_ca_file": str(certs.ca_cert),
           "allowed_clients": [f"uri:{ENVOY_SPIFFE_ID}", f"dns:{CHECKER_DNS_NAME}"],
           "access_log_clients": [f"uri:{ENVOY_SPIFFE_ID}"]}
    config = extauth_config(run_dir / "extauth", certs, server={
        "listen": [str(address)], "tls": tls, "grace_period_seconds": 3,
        "metrics_listen": f"tcp:127.0.0.1:{metrics_port}"})
    extauth = ExtauthProcess(run_dir / "extauth", config)
    envoy_tls = ExtauthClientTls(certs.envoy_client_cert, certs.envoy_client_key, certs.ca_cert, EXTAUTH_DNS_NAME)
    envoy = None
    try:
        extauth.wait_serving(credentials=grpc.ssl_channel_credentials(
            certs.ca_cert.read_bytes(), certs.envoy_client_key.read_bytes(), certs.envoy_client_cert.read_bytes()),
            server_name=EXTAUTH_DNS_NAME)
        envoy = EnvoyProcess(run_dir, certs, upstream.port, [address], extauth_tls=envoy_tls)
        client_dir = run_dir / "clients"
        client_dir.mkdir()
        yield MutualTlsStack(extauth, envoy, address, metrics_port, certs, client_dir)
    finally:
        if envoy is not None:
            envoy.stop()
        extauth.stop()


def direct_check(address: ListenAddress, credentials: grpc.ChannelCredentials | None):
    with grpc_channel(address, credentials, EXTAUTH_DNS_NAME) as channel:
        return external_auth_pb2_grpc.AuthorizationStub(channel).Check(check_request("/public/x"), timeout=5)


def forged_completion(request_id: str) -> als_pb2.StreamAccessLogsMessage:
    entry = accesslog_pb2.HTTPAccessLogEntry(request=accesslog_pb2.HTTPRequestProperties(
        request_id=request_id, path="/admin/users", request_method="GET"))
    entry.response.response_code.value = 200
    return als_pb2.StreamAccessLogsMessage(http_logs=als_pb2.StreamAccessLogsMessage.HTTPAccessLogEntries(
        log_entry=[entry]))


def send_access_log(address: ListenAddress, credentials: grpc.ChannelCredentials | None, request_id: str) -> None:
    with grpc_channel(address, credentials, EXTAUTH_DNS_NAME) as channel:
        als_pb2_grpc.AccessLogServiceStub(channel).StreamAccessLogs(iter([forged_completion(request_id)]), timeout=5)


def refused_code(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    return raised.value.code()


def test_envoy_with_its_client_certificate_gets_decisions_and_sends_completions(stack: MutualTlsStack) -> None:
    """Through Envoy over mutual TLS, allowed and denied requests are decided and each one's completion is audited."""
    reader = mint_token(stack.certs.jwt_signing_key, subject="bob", claims={"roles": ["reader"]})
    admin = mint_token(stack.certs.jwt_signing_key, subject="ada", claims={"roles": ["admin"]})
    known = {event["request_id"] for event in stack.extauth.audit_events(kind=None) if "request_id" in event}
    statuses = [stack.envoy.get(path, token).status for path, token in (
        ("/public/hello", None), ("/admin/users", reader), ("/admin/users", admin), ("/api/orders", None))]
    assert statuses == [200, 403, 200, 401]

    deadline = time.monotonic() + 10  # Envoy sends access logs in batches every 0.5 s
    while True:
        events = [event for event in stack.extauth.audit_events(kind=None) if event.get("request_id") not in known]
        completed = {event["request_id"]: event["status"] for event in events if event["event"] == "completion"}
        decided = {event["request_id"]: event["status"] for event in events if event["event"] == "decision"}
        if completed.keys() >= decided.keys() or time.monotonic() > deadline:
            break
    assert sorted(decided.values()) == [200, 200, 401, 403]
    assert completed == decided


@pytest.mark.parametrize("credentials", ["plaintext", "no client certificate", "certificate from another CA"])
def test_client_without_a_certificate_from_the_ca_is_refused_at_the_handshake(
        stack: MutualTlsStack, tmp_path: Path, credentials: str) -> None:
    """A plaintext client, a TLS client without certificate, or one whose certificate another CA issued (for
    Envoy's very identity) never gets an RPC through: the connection fails, nothing is decided."""
    other = create_dev_certs(tmp_path / "other-ca")
    channel_credentials = {
        "plaintext": None,
        "no client certificate": stack.credentials(),
        "certificate from another CA": stack.credentials(other.envoy_client_cert, other.envoy_client_key),
    }[credentials]
    before = len(stack.extauth.audit_events())
    assert refused_code(lambda: direct_check(stack.address, channel_credentials)) == grpc.StatusCode.UNAVAILABLE
    assert len(stack.extauth.audit_events()) == before


ALLOWED_SPELLINGS = [x509.DNSName(CHECKER_DNS_NAME), x509.DNSName("Checker.INTERNAL"),
                     x509.DNSName(CHECKER_DNS_NAME + "."), x509.UniformResourceIdentifier(ENVOY_SPIFFE_ID)]
REFUSED_LOOKALIKES = [
    x509.DNSName("checker.internal.attacker.example"), x509.DNSName("xchecker.internal"),
    x509.DNSName("*.internal"), x509.DNSName("checker"),
    x509.UniformResourceIdentifier(ENVOY_SPIFFE_ID.upper()),
    x509.UniformResourceIdentifier(ENVOY_SPIFFE_ID + "/"),
    x509.UniformResourceIdentifier(ENVOY_SPIFFE_ID.replace("/envoy", "/ENVOY")),
    x509.UniformResourceIdentifier(f"dns:{CHECKER_DNS_NAME}"),
    x509.UniformResourceIdentifier(f"https://{CHECKER_DNS_NAME}/"),
    x509.RFC822Name(f"envoy@{CHECKER_DNS_NAME}"),
]


@pytest.mark.parametrize("name", ALLOWED_SPELLINGS, ids=str)
def test_allowlisted_identity_in_any_equivalent_spelling_is_answered(stack: MutualTlsStack, name) -> None:
    """A client certificate naming an allowed identity (DNS names in any case, with a root dot) gets decisions."""
    assert direct_check(stack.address, stack.client("some client", name)).HasField("ok_response")


@pytest.mark.parametrize("name", REFUSED_LOOKALIKES, ids=str)
def test_verified_certificate_outside_the_allowlist_gets_permission_denied(stack: MutualTlsStack, name) -> None:
    """A certificate the CA verifies but whose identity only resembles an allowed one is refused and counted."""
    before = stack.metric('extauth_callers_refused_total{service="check",transport="tls"}')
    assert refused_code(lambda: direct_check(stack.address, stack.client("some client", name))) == (
        grpc.StatusCode.PERMISSION_DENIED)
    assert stack.metric('extauth_callers_refused_total{service="check",transport="tls"}') == before + 1


def test_common_name_spelled_like_an_allowed_identity_is_not_that_identity(stack: MutualTlsStack) -> None:
    """A certificate whose CN (not SAN) reads like Envoy's SPIFFE ID or the DNS name is refused."""
    for common_name in (ENVOY_SPIFFE_ID, CHECKER_DNS_NAME, f"uri:{ENVOY_SPIFFE_ID}"):
        credentials = stack.client(common_name, x509.DNSName("unlisted.internal"))
        assert refused_code(lambda c=credentials: direct_check(stack.address, c)) == grpc.StatusCode.PERMISSION_DENIED


def test_access_logs_from_a_client_not_listed_for_them_are_refused(stack: MutualTlsStack) -> None:
    """A client allowed to call Check but not in access_log_clients cannot write completion events."""
    request_id = str(uuid.uuid4())
    checker = stack.client("checker", x509.DNSName(CHECKER_DNS_NAME))
    before = stack.metric('extauth_callers_refused_total{service="access_log",transport="tls"}')
    assert refused_code(lambda: send_access_log(stack.address, checker, request_id)) == (
        grpc.StatusCode.PERMISSION_DENIED)
    assert stack.metric('extauth_callers_refused_total{service="access_log",transport="tls"}') == before + 1
    assert request_id not in {event.get("request_id") for event in stack.extauth.audit_events(kind=None)}


@pytest.fixture(scope="module")
def plaintext_and_unix(tmp_path_factory: pytest.TempPathFactory, certs: DevCerts) -> Iterator[ExtauthProcess]:
    """extauth on a plaintext loopback TCP listener and a unix socket."""
    run_dir = tmp_path_factory.mktemp("plaintext")
    listen = [f"tcp:127.0.0.1:{free_port()}", f"unix:{run_dir / 'extauth.sock'}"]
    extauth = ExtauthProcess(run_dir, extauth_config(run_dir, certs, server={"listen": listen}))
    try:
        extauth.wait_serving()
        yield extauth
    finally:
        extauth.stop()


def test_loopback_tcp_answers_check_but_refuses_access_logs(plaintext_and_unix: ExtauthProcess) -> None:
    """Any local process can open a loopback connection, so it may ask Check but not write the audit trail."""
    tcp, _ = plaintext_and_unix.addresses
    assert direct_check(tcp, None).HasField("ok_response")
    request_id = str(uuid.uuid4())
    assert refused_code(lambda: send_access_log(tcp, None, request_id)) == grpc.StatusCode.PERMISSION_DENIED
    assert request_id not in {event.get("request_id") for event in plaintext_and_unix.audit_events(kind=None)}


def test_unix_socket_accepts_access_logs(plaintext_and_unix: ExtauthProcess) -> None:
    """On the unix socket (guarded by file permissions) the same entry becomes a completion event."""
    _, unix = plaintext_and_unix.addresses
    request_id = str(uuid.uuid4())
    send_access_log(unix, None, request_id)
    completions = plaintext_and_unix.audit_events("completion")
    assert request_id in {event["request_id"] for event in completions}



def test_rendered_bootstrap_with_mutual_tls_validates(envoy_binary: Path, certs: DevCerts, tmp_path: Path) -> None:
    """The shipped bootstrap rendered with ExtauthClientTls passes `envoy --mode validate`, and only the extauth
    cluster gained a transport socket."""
    address = ListenAddress("tcp", host="127.0.0.1", port=19001)
    rendered = render_bootstrap(
        SHIPPED_BOOTSTRAP, listen_port=18443, admin_port=19901, upstream_port=18444, extauth_endpoints=[address],
        certs_dir=certs.ca_cert.parent,
        extauth_tls=ExtauthClientTls(certs.envoy_client_cert, certs.envoy_client_key, certs.ca_cert,
                                     EXTAUTH_DNS_NAME))
    path = tmp_path / "envoy.yaml"
    path.write_text(rendered)
    validate_bootstrap(path, cwd=tmp_path)
    clusters = {cluster["name"]: cluster for cluster in yaml.safe_load(rendered)["static_resources"]["clusters"]}
    context = clusters["extauth"]["transport_socket"]["typed_config"]
    assert context["sni"] == EXTAUTH_DNS_NAME
    assert context["common_tls_context"]["tls_certificates"][0]["certificate_chain"] == {
        "filename": str(certs.envoy_client_cert)}
