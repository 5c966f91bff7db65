"""The admin API of a real `extauth serve` (admin.listen on a unix socket), driven through the `extauth` CLI, with
requests sent through real Envoy: Status follows reloads, Explain --live agrees with the decisions Envoy enforces,
TailAudit streams the events of those requests."""

import json
import queue
import stat
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from support.gateways import demo_policies_with
from support.polling import wait_for

from extauth.admin.v1 import admin_pb2, admin_pb2_grpc
from extauth.cli import main
from extauth.config.schema import ListenAddress
from extauth.devstack.gateway import EnvoyProcess, ExtauthProcess, extauth_config, free_port
from extauth.devstack.processes import extauth_command, grpc_channel
from extauth.devtools.certs import EXTAUTH_DNS_NAME, DevCerts, issue_client_certificate
from extauth.devtools.tokens import mint_token
from extauth.devtools.upstream import RunningUpstream

pytestmark = pytest.mark.integration

BROKEN = """\
apiVersion: extauth/v1
kind: Policy
metadata: {name: broken}
routes:
  - name: r
    match: {path: {prefix: nope}}
"""
EXTRA_ROUTE = """\
apiVersion: extauth/v1
kind: Policy
metadata: {name: extra}
routes:
  - name: extra
    match: {path: {prefix: /api/extra/}}
    public: true
"""


def lines_of(process: subprocess.Popen[str]) -> "queue.Queue[str]":
    """The lines the process prints, read by a thread, so a test waits for one with a timeout (never hangs)."""
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    stdout = process.stdout
    threading.Thread(target=lambda: [lines.put(line) for line in stdout], daemon=True).start()
    return lines


class Stack:
    def __init__(self, run_dir: Path, certs: DevCerts, upstream: RunningUpstream) -> None:
        self.policies = demo_policies_with(run_dir)
        self.socket = run_dir / "admin.sock"
        config = extauth_config(run_dir, certs, policy={"path": str(self.policies), "watch_interval_seconds": 0.2},
                                admin={"listen": f"unix:{self.socket}"})
        self.extauth = ExtauthProcess(run_dir, config)
        self.extauth.wait_serving()
        self.envoy = EnvoyProcess(run_dir, certs, upstream.port, self.extauth.addresses)

    def cli(self, capsys: pytest.CaptureFixture[str], *words: str) -> tuple[int, str]:
        capsys.readouterr()
        status = main([*words, "--admin", str(self.socket)])
        out, err = capsys.readouterr()
        return status, out + err

    def status(self, capsys: pytest.CaptureFixture[str]) -> dict:
        code, out = self.cli(capsys, "status", "--json")
        assert code in (0, 1), out
        return json.loads(out)

    def stop(self) -> None:
        self.envoy.stop()
        self.extauth.stop()


@pytest.fixture
def stack(tmp_path: Path, certs: DevCerts, upstream: RunningUpstream) -> Iterator[Stack]:
    running = Stack(tmp_path, certs, upstream)
    yield running
    running.stop()


def test_status_reports_the_loaded_policy_version_and_flips_after_a_file_change(
        stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    """Status names the version the decisions carry; after a policy file changes it names the new one, which the
    next decision through Envoy carries too."""
    assert stack.envoy.get("/public/x").status == 200
    before = stack.status(capsys)
    assert before["policy"]["version"] == stack.extauth.audit_events()[-1]["policy_version"]
    assert before["policy"]["source"] == str(stack.policies)
    assert before["ready"] and before["last_reload"]["ok"] and before["last_reload"]["trigger"] == "start"
    assert before["identity_providers"][0]["name"] == "dev" and before["identity_providers"][0]["keys"] >= 1
    assert before["rate_limit"]["breaker"] == "closed"
    assert stat.S_IMODE(stack.socket.stat().st_mode) == 0o600  # created so, for extauth's own user only

    (stack.policies / "extra.yaml").write_text(EXTRA_ROUTE)
    wait_for(lambda: stack.status(capsys)["policy"]["version"] != before["policy"]["version"])
    after = stack.status(capsys)
    assert after["last_reload"]["ok"] and after["last_reload"]["trigger"] == "file_change"
    assert stack.envoy.get("/api/extra/x").status == 200
    assert stack.extauth.audit_events()[-1]["policy_version"] == after["policy"]["version"]


def test_a_broken_policy_shows_its_file_line_error_in_status_while_the_old_version_keeps_serving(
        stack: Stack, capsys: pytest.CaptureFixture[str], certs: DevCerts) -> None:
    """`extauth reload` of a broken file exits 1 with the file:line error; Status shows it beside the version still
    served, and requests through Envoy are still decided by that version."""
    reader = mint_token(certs.jwt_signing_key, subject="alice", claims={"roles": ["reader"]})
    serving = stack.status(capsys)["policy"]["version"]
    (stack.policies / "broken.yaml").write_text(BROKEN)
    code, out = stack.cli(capsys, "reload")
    assert code == 1, out
    assert f"still serving policy {serving}" in out and f"{stack.policies / 'broken.yaml'}:6:" in out
    status = stack.status(capsys)
    assert status["policy"]["version"] == serving
    assert not status["last_reload"]["ok"] and status["last_reload"]["failures"] == "1"
    assert any(error.startswith(f"{stack.policies / 'broken.yaml'}:6:") for error in status["last_reload"]["errors"])
    code, text = stack.cli(capsys, "status")
    assert code == 1 and "last reload    FAILED" in text and "broken.yaml:6:" in text
    assert stack.envoy.get("/api/orders", reader).status == 200
    assert stack.extauth.audit_events()[-1]["policy_version"] == serving


#: (method, path, roles or None for no token): requests the demo Envoy routes, allowed and denied alike.
REQUESTS = [(method, path, roles) for method in ("GET", "POST") for path in
            ("/api/orders", "/admin/users", "/public/page", "/healthz", "/billing/invoices/7",
             "/api/tenants/acme/orders/1")
            for roles in (None, ["reader"], ["writer"], ["admin"], ["support"])]


def test_explain_live_agrees_with_the_decision_through_envoy(
        stack: Stack, capsys: pytest.CaptureFixture[str], certs: DevCerts) -> None:
    """For every request of a set (methods, paths, roles, anonymous), `explain --live` with the principal's
    claims says allow exactly when Envoy let the request through."""
    disagreements, outcomes = [], set()
    for method, path, roles in REQUESTS:
        claims = {"roles": roles, "tenant": "acme"} if roles is not None else None
        headers = ({"authorization": "Bearer " + mint_token(certs.jwt_signing_key, subject="alice", claims=claims)}
                   if claims is not None else {})
        through_envoy = stack.envoy.request(method, path, headers).status
        words = ["explain", "--live", method, path]
        if claims is not None:
            words += ["--sub", "alice", "--claim", f"roles={','.join(roles)},", "--claim", "tenant=acme"]
        code, out = stack.cli(capsys, *words)
        assert code in (0, 1), out
        outcomes.add(through_envoy)
        if (code == 0) != (through_envoy < 400):
            disagreements.append((method, path, roles, through_envoy, out))
    assert disagreements == []
    assert {200, 401, 403} <= outcomes  # the set holds allows, anonymous denials and forbidden requests


def test_tail_audit_streams_the_events_of_requests_sent_through_envoy(
        stack: Stack, capsys: pytest.CaptureFixture[str], certs: DevCerts) -> None:
    """`extauth audit tail --deny --json` prints the decision of each denied request as it happens, with the
    request id of the audit file, and none of the allowed ones."""
    tail = subprocess.Popen(extauth_command("audit", "tail", "--deny", "--json", "--admin", str(stack.socket)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    printed = lines_of(tail)
    try:
        wait_for(lambda: stack.status(capsys)["audit"]["tail_subscribers"] == 1)
        assert stack.envoy.get("/public/page").status == 200
        assert stack.envoy.get("/admin/users").status == 401
        assert stack.envoy.get("/public/again").status == 200
        assert stack.envoy.get("/api/orders").status == 401
        streamed = [json.loads(printed.get(timeout=10)) for _ in range(2)]
    finally:
        tail.terminate()
        tail.wait(10)
    wait_for(lambda: stack.status(capsys)["audit"]["tail_subscribers"] == 0)  # a tail that hung up is dropped
    written = {event["request_id"]: event for event in stack.extauth.audit_events()}
    assert [event["path"] for event in streamed] == ["/admin/users", "/api/orders"]
    for event in streamed:
        assert event["decision"] == "deny" and event["hash"] == written[event["request_id"]]["hash"]


#: Spellings of credential-carrying header names: case, padding, and names only their shape marks as credentials.
CREDENTIAL_HEADERS = ["authorization", "Authorization", "AUTHORIZATION", " authorization ", "cookie",
                      "proxy-authorization", "x-api-key", "x-auth-token", "x-session-id"]


def test_explain_live_refuses_credential_headers_however_spelt(stack: Stack) -> None:
    """A principal is described by claims, never sent as a credential: any spelling of a credential-carrying
    header is INVALID_ARGUMENT, naming it, while an ordinary header is explained."""
    with grpc.insecure_channel(f"unix:{stack.socket}") as channel:
        explain = admin_pb2_grpc.AdminStub(channel).Explain
        for name in CREDENTIAL_HEADERS:
            with pytest.raises(grpc.RpcError) as raised:
                explain(admin_pb2.ExplainRequest(method="GET", url="/api/orders", headers={name: "Bearer x"}),
                        timeout=10)
            assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT, name
            assert name.strip().lower() in raised.value.details()
        answer = explain(admin_pb2.ExplainRequest(method="GET", url="/public/x", headers={"user-agent": "t"}),
                         timeout=10)
        assert answer.allowed


def test_each_worker_answers_on_its_own_admin_socket(tmp_path: Path, certs: DevCerts,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """With `--workers 2` the admin socket is per worker (`admin-0.sock`, `admin-1.sock`), as the Check sockets
    are; each names its own instance and the same policy version."""
    socket = tmp_path / "admin.sock"
    config = extauth_config(tmp_path, certs, admin={"listen": f"unix:{socket}"})
    extauth = ExtauthProcess(tmp_path, config, "--workers", "2")
    try:
        for index in range(2):
            extauth.wait_serving(extauth.addresses[0].for_worker(index, 2))
        answers = []
        for index in range(2):
            capsys.readouterr()
            assert main(["status", "--json", "--admin", str(tmp_path / f"admin-{index}.sock")]) == 0
            answers.append(json.loads(capsys.readouterr().out))
        assert [answer["instance"].rsplit("/", 1)[1] for answer in answers] == ["0", "1"]
        assert answers[0]["policy"]["version"] == answers[1]["policy"]["version"]
        assert answers[0]["pid"] != answers[1]["pid"]
        assert not socket.exists()
    finally:
        extauth.stop()


def test_admin_over_tls_answers_only_the_allowed_client_identities(tmp_path: Path, certs: DevCerts) -> None:
    """With server.tls, a TCP admin listener speaks mutual TLS: a certificate proving a DNS name of
    admin.allowed_clients is answered; another name, the same text as a common name only, no certificate and
    plaintext are refused."""
    check, admin = (ListenAddress("tcp", host="127.0.0.1", port=free_port()) for _ in range(2))
    tls = {"cert_file": str(certs.extauth_cert), "key_file": str(certs.extauth_key),
           "client_ca_file": str(certs.ca_cert)}
    config = extauth_config(tmp_path, certs, server={"listen": [str(check)], "tls": tls, "grace_period_seconds": 3},
                            admin={"listen": str(admin), "allowed_clients": ["dns:oncall.internal"]})
    extauth = ExtauthProcess(tmp_path, config)

    def client(common_name: str, *names: x509.GeneralName) -> grpc.ChannelCredentials:
        cert, key = tmp_path / f"{common_name}.crt", tmp_path / f"{common_name}.key"
        issue_client_certificate(certs, cert, key, common_name, list(names))
        return grpc.ssl_channel_credentials(certs.ca_cert.read_bytes(), key.read_bytes(), cert.read_bytes())

    def status_code(credentials: grpc.ChannelCredentials | None) -> grpc.StatusCode:
        with grpc_channel(admin, credentials, EXTAUTH_DNS_NAME) as channel:
            try:
                admin_pb2_grpc.AdminStub(channel).Status(admin_pb2.StatusRequest(), timeout=5)
            except grpc.RpcError as error:
                return error.code()
        return grpc.StatusCode.OK

    try:
        allowed = client("allowed", x509.DNSName("oncall.internal"))
        extauth.wait_serving(credentials=allowed, server_name=EXTAUTH_DNS_NAME)
        assert status_code(allowed) is grpc.StatusCode.OK
        assert status_code(client("other", x509.DNSName("other.internal"))) is grpc.StatusCode.PERMISSION_DENIED
        assert status_code(client("oncall.internal")) is grpc.StatusCode.PERMISSION_DENIED
        assert status_code(grpc.ssl_channel_credentials(certs.ca_cert.read_bytes())) is grpc.StatusCode.UNAVAILABLE
        assert status_code(None) is grpc.StatusCode.UNAVAILABLE
    finally:
        extauth.stop()
