"""The extauth process: readiness, reflection, graceful SIGTERM, workers, and Envoy failing closed."""

import asyncio
import base64
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
import yaml
from envoy.service.auth.v3 import external_auth_pb2_grpc
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from support.checks import check, check_request, health_status
from support.idp import IdentityProvider

from extauth import NATIVE_MODULES, NATIVE_STATUS
from extauth.config import load_config
from extauth.config.schema import ListenAddress
from extauth.devstack.gateway import EnvoyProcess, ExtauthProcess, extauth_config, free_port
from extauth.devtools.certs import DevCerts
from extauth.devtools.tokens import mint_token
from extauth.devtools.upstream import RunningUpstream
from extauth.identity.keys import KeyLoadError
from extauth.server import serve


def url_provider_config(run_dir: Path, certs: DevCerts, idp: IdentityProvider, **jwks: object) -> dict:
    config = extauth_config(run_dir, certs)
    config["authentication"]["providers"][0] = {
        "name": "idp", "issuer": "https://extauth.local/dev", "audiences": ["extauth-demo"], "primary": True,
        "jwks": {"url": idp.jwks_url, "refresh_seconds": 5, "fetch_timeout_seconds": 2, **jwks}}
    return config


def test_not_serving_until_keys_load_then_serving(tmp_path: Path, certs: DevCerts) -> None:
    """While the IdP is down health is NOT_SERVING and Checks get 503 not_ready; once keys load it serves."""
    idp = IdentityProvider(certs.jwks)
    idp.failing = True
    extauth = ExtauthProcess(tmp_path, url_provider_config(tmp_path, certs, idp))
    try:
        address = extauth.addresses[0]
        extauth.process.wait_until(lambda: address.path.exists())
        time.sleep(0.3)
        assert health_status(address) == health_pb2.HealthCheckResponse.NOT_SERVING
        response = check(address)
        assert response.denied_response.status.code == 503 and "not_ready" in response.denied_response.body
        idp.failing = False
        extauth.wait_serving(timeout=15)
        token = mint_token(certs.jwt_signing_key, subject="alice", claims={"roles": ["reader"]})
        assert check(address, token).HasField("ok_response")
        extauth.stop()
        outages = [e for e in extauth.audit_events(kind=None) if e["event"] in ("jwks_unavailable", "jwks_recovered")]
        assert [e["event"] for e in outages] == ["jwks_unavailable", "jwks_recovered"]
        assert outages[0]["provider"] == "idp" and outages[0]["serving_last_good_keys"] is False
    finally:
        extauth.stop()
        idp.stop()


def test_the_start_up_heap_is_frozen_before_the_server_reports_serving(extauth: ExtauthProcess) -> None:
    """By the time health says SERVING, what start-up allocated is out of the cyclic collector's reach, so no
    full collection walks it while Checks wait (extauth.server.freeze_startup_heap)."""
    records = [json.loads(line) for line in extauth.process.log_path.read_text().splitlines() if line.startswith("{")]
    (ready,) = [record for record in records if record["event"] == "ready"]
    assert ready["frozen_objects"] > 10_000  # protobuf descriptors, gRPC, policies: far more than any small heap


def test_reflection_lists_the_authorization_and_health_services(extauth: ExtauthProcess) -> None:
    """grpcurl-style tooling can discover the Check and Health services."""
    with grpc.insecure_channel(extauth.addresses[0].grpc_target()) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        names = {service.name for reply in replies for service in reply.list_services_response.service}
    assert {"envoy.service.auth.v3.Authorization", "grpc.health.v1.Health"} <= names


def test_the_listening_line_says_whether_the_compiled_modules_run(extauth: ExtauthProcess) -> None:
    """`listening` names what this process runs: the compiled modules when they are current, else pure Python."""
    logs = [json.loads(line) for line in extauth.process.log_path.read_text().splitlines() if line.startswith("{")]
    (listening,) = [log for log in logs if log.get("event") == "listening"]
    assert listening["code"] == NATIVE_STATUS
    assert listening["code"].startswith("native:" if NATIVE_MODULES else "pure Python:")


def test_sigterm_finishes_in_flight_checks_and_exits_zero(tmp_path: Path, certs: DevCerts) -> None:
    """A Check still waiting on the IdP when SIGTERM arrives gets its answer, then the process exits 0."""
    idp = IdentityProvider(certs.jwks)
    extauth = ExtauthProcess(tmp_path, url_provider_config(tmp_path, certs, idp, refetch_cooldown_seconds=0))
    try:
        extauth.wait_serving()
        address = extauth.addresses[0]
        idp.delay_seconds = 1.0  # the unknown-kid refetch below will take a second
        unknown = mint_token(certs.jwt_signing_key, subject="alice", claims={"roles": ["reader"]})
        with grpc.insecure_channel(address.grpc_target()) as channel:
            stub = external_auth_pb2_grpc.AuthorizationStub(channel)
            forged = check_request("/api/x", headers={"authorization": f"Bearer {forge_kid(unknown)}"})
            in_flight = stub.Check.future(forged, timeout=10)
            time.sleep(0.3)
            started = time.monotonic()
            extauth.process.process.terminate()
            reply = in_flight.result()
        assert reply.denied_response.status.code == 401
        assert extauth.process.process.wait(timeout=10) == 0
        assert time.monotonic() - started < 3 + 1  # within the grace period
        assert not address.path.exists()
    finally:
        extauth.stop()
        idp.stop()


def forge_kid(token: str) -> str:
    """The same token with a `kid` the IdP does not list, which makes extauth refetch the JWKS."""
    header, payload, signature = token.split(".")
    decoded = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    decoded["kid"] = "rotated-key"
    encoded = base64.urlsafe_b64encode(json.dumps(decoded).encode()).rstrip(b"=").decode()
    return f"{encoded}.{payload}.{signature}"


def test_workers_each_listen_on_their_own_socket_and_stop_together(tmp_path: Path, certs: DevCerts) -> None:
    """`--workers 2` serves on extauth-0.sock and extauth-1.sock; SIGTERM stops both and exits 0."""
    extauth = ExtauthProcess(tmp_path, extauth_config(tmp_path, certs), "--workers", "2")
    try:
        base = extauth.addresses[0]
        workers = [base.for_worker(index, 2) for index in range(2)]
        assert [w.path.name for w in workers] == ["extauth-0.sock", "extauth-1.sock"]
        for worker in workers:
            extauth.wait_serving(worker)
            assert check(worker, path="/public/x").HasField("ok_response")
        assert extauth.stop() == 0
        assert not any(worker.path.exists() for worker in workers)
    finally:
        extauth.stop()


def test_envoy_fails_closed_when_extauth_is_down(tmp_path: Path, certs: DevCerts, upstream: RunningUpstream,
                                                 envoy_binary: Path) -> None:
    """With extauth stopped, Envoy answers 503 and never forwards the request to the upstream."""
    extauth = ExtauthProcess(tmp_path / "extauth", extauth_config(tmp_path / "extauth", certs))
    extauth.wait_serving()
    envoy = EnvoyProcess(tmp_path, certs, upstream.port, extauth.addresses)
    try:
        assert envoy.get("/public/hello").status == 200
        assert extauth.stop() == 0
        response = envoy.get("/public/hello")
        assert response.status == 503
        assert b"demo-upstream" not in response.body
    finally:
        envoy.stop()
        extauth.stop()


@pytest.mark.parametrize("text", ["server: {workers: 0}\npolicy: {path: p}\n", "policy: {path: /nonexistent}\n"])
def test_serve_refuses_to_start_on_a_broken_config(tmp_path: Path, text: str) -> None:
    """`extauth serve` with an invalid config or a missing policy directory exits 2 naming config file:line."""
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    result = subprocess.run([sys.executable, "-m", "extauth", "serve", "--config", str(path)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.startswith(f"{path}:1: ") and "Traceback" not in result.stderr


def serve_once(config: dict, run_dir: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Run `extauth serve` on `config` until it exits by itself (it is expected to refuse to start)."""
    path = run_dir / "extauth.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    result = subprocess.run([sys.executable, "-m", "extauth", "serve", "--config", str(path), *args],
                            capture_output=True, text=True, timeout=30)
    return result, path


def line_of(path: Path, text: str) -> int:
    return next(number for number, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def test_serve_with_a_missing_key_file_exits_2_before_listening_and_leaves_nothing(
        tmp_path: Path, certs: DevCerts) -> None:
    """The error `validate` prints, as one line without a traceback; no socket and no audit file were created."""
    config = extauth_config(tmp_path, certs)
    config["authentication"]["providers"][0]["jwks"]["file"] = str(tmp_path / "missing-jwks.json")
    result, path = serve_once(config, tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"{path}:{line_of(path, 'missing-jwks.json')}: authentication.providers[0].jwks.file: cannot read "
        f"{tmp_path / 'missing-jwks.json'}: No such file or directory"]
    assert "listening" not in result.stdout
    assert not (tmp_path / "extauth.sock").exists() and not (tmp_path / "audit.jsonl").exists()
    validate = subprocess.run([sys.executable, "-m", "extauth", "validate", str(path)],
                              capture_output=True, text=True, timeout=30)
    assert (validate.returncode, validate.stderr) == (1, result.stderr)


def test_a_supervisor_refuses_before_starting_any_worker(tmp_path: Path, certs: DevCerts) -> None:
    """`--workers 2` with a missing key file: one line, exit 2, and no worker ever made its socket."""
    config = extauth_config(tmp_path, certs)
    config["authentication"]["providers"][0]["jwks"]["file"] = str(tmp_path / "missing-jwks.json")
    result, _ = serve_once(config, tmp_path, "--workers", "2")
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1 and "jwks.file: cannot read" in result.stderr
    assert list(tmp_path.glob("*.sock")) == []


def test_serve_refuses_a_socket_path_that_is_someone_elses_file_and_keeps_it(
        tmp_path: Path, certs: DevCerts) -> None:
    """A regular file where the socket goes is neither deleted nor replaced: exit 2, one line naming it."""
    taken = tmp_path / "extauth.sock"
    taken.write_text("not extauth's")
    result, path = serve_once(extauth_config(tmp_path, certs), tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"{path}:{line_of(path, 'extauth.sock')}: server.listen[0]: {taken} exists and is not a socket; "
        "extauth does not replace it"]
    assert taken.read_text() == "not extauth's"


def test_the_server_reads_every_key_file_before_it_binds(tmp_path: Path, certs: DevCerts) -> None:
    """A key file gone after the checks (or never checked) still fails the start before any socket exists."""
    jwks = tmp_path / "jwks.json"
    jwks.write_bytes(certs.jwks.read_bytes())
    config = extauth_config(tmp_path, certs)
    config["authentication"]["providers"][0]["jwks"]["file"] = str(jwks)
    path = tmp_path / "extauth.yaml"
    path.write_text(yaml.safe_dump(config))
    loaded = load_config(path)
    jwks.unlink()
    with pytest.raises(KeyLoadError, match=f"provider 'dev': cannot read {jwks}"):
        asyncio.run(serve(loaded, path))
    assert not (tmp_path / "extauth.sock").exists()


def test_a_failed_bind_after_a_socket_was_made_removes_that_socket_only(tmp_path: Path, certs: DevCerts) -> None:
    """Start fails on a TCP port already taken, after binding its unix socket: exit 1, that socket is gone."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = extauth_config(tmp_path, certs,
                                server={"listen": [f"unix:{tmp_path / 'extauth.sock'}", f"tcp:127.0.0.1:{port}"]})
        result, _ = serve_once(config, tmp_path)
    assert result.returncode == 1
    assert f"extauth serve: cannot listen on tcp:127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "extauth.sock").exists()


def test_serve_refuses_a_plaintext_listener_other_hosts_can_reach(tmp_path: Path, certs: DevCerts) -> None:
    """`tcp:0.0.0.0:PORT` without TLS: `extauth serve` exits 2 naming file, line and field, and never listens."""
    port = free_port()
    config = extauth_config(tmp_path, certs, server={"listen": [f"tcp:0.0.0.0:{port}"]})
    path = tmp_path / "extauth.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    line = path.read_text().splitlines().index(f"  - tcp:0.0.0.0:{port}") + 1
    result = subprocess.run([sys.executable, "-m", "extauth", "serve", "--config", str(path)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.startswith(f"{path}:{line}: server.listen[0]: tcp:0.0.0.0:{port} is reachable from other "
                                    "hosts without TLS")


def test_insecure_true_starts_and_warns_in_log_and_audit(tmp_path: Path, certs: DevCerts) -> None:
    """With `insecure: true` written, 0.0.0.0 serves Checks, and the start logs and audits an insecure_listener."""
    address = ListenAddress("tcp", host="0.0.0.0", port=free_port())
    config = extauth_config(tmp_path, certs, server={"listen": [str(address)], "insecure": True})
    extauth = ExtauthProcess(tmp_path, config)
    try:
        loopback = ListenAddress("tcp", host="127.0.0.1", port=address.port)
        extauth.wait_serving(loopback)
        assert check(loopback, path="/public/x").HasField("ok_response")
        assert extauth.stop() == 0
        (event,) = extauth.audit_events("insecure_listener")
        assert (event["address"], event["transport"]) == (str(address), "plaintext")
        warnings = [line for line in extauth.process.log_path.read_text().splitlines() if "insecure_listener" in line]
        assert len(warnings) == 1 and "warning" in warnings[0]
    finally:
        extauth.stop()
