"""The audit stream on a standard stream, the way a container runtime captures it: `serve --workers N` writing
into one pipe, thousands of Checks, and the captured stream must verify line for line."""

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import grpc
import pytest
import yaml
from envoy.service.auth.v3 import external_auth_pb2_grpc
from grpc_health.v1 import health_pb2
from support.checks import check_request, health_status

from extauth.config.schema import ListenAddress
from extauth.devstack.gateway import extauth_config
from extauth.devstack.processes import extauth_command
from extauth.devtools.certs import DevCerts

CHECKS_PER_CLIENT = 1000
CLIENTS_PER_WORKER = 3
#: Long enough that one audit line is bigger than PIPE_BUF (4096 bytes) on its own.
LONG_SEGMENT = "a" * 5000


class PipeReader(threading.Thread):
    """Drains one end of a pipe into memory in small reads, so the pipe fills and writers contend for it."""

    def __init__(self, fd: int) -> None:
        super().__init__(daemon=True)
        self.fd = fd
        self.chunks: list[bytes] = []

    def run(self) -> None:
        while chunk := os.read(self.fd, 1024):
            self.chunks.append(chunk)

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)


def drive_checks(target: str, client: int) -> None:
    """Checks over one channel: short allowed paths, and every fifth one a path that makes a line > PIPE_BUF."""
    with grpc.insecure_channel(target) as channel:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        for number in range(CHECKS_PER_CLIENT):
            path = f"/public/{client}/{number}" + (f"/{LONG_SEGMENT}" if number % 5 == 0 else "")
            stub.Check(check_request(path, request_id=f"c{client}-{number}"), timeout=10)


def serve_into_pipes(run_dir: Path, certs: DevCerts, audit_output: str, workers: int) -> tuple[bytes, bytes]:
    """Run `serve --workers N` with stdout and stderr on pipes, drive every client's Checks, stop it with SIGTERM
    (exit 0), and return what came out on stdout and stderr."""
    config = extauth_config(run_dir, certs, audit={"output": audit_output, "completion_events": False})
    config_path = run_dir / "extauth.yaml"
    config_path.write_text(yaml.safe_dump(config))
    process = subprocess.Popen(extauth_command("serve", "--config", str(config_path), "--workers", str(workers)),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    readers = [PipeReader(process.stdout.fileno()), PipeReader(process.stderr.fileno())]
    for reader in readers:
        reader.start()
    try:
        base = ListenAddress.parse(config["server"]["listen"][0])
        addresses = [base.for_worker(index, workers) for index in range(workers)]
        wait_until_serving(addresses, process)
        clients = [threading.Thread(target=drive_checks, args=(address.grpc_target(), worker * 10 + client))
                   for worker, address in enumerate(addresses) for client in range(CLIENTS_PER_WORKER)]
        for client in clients:
            client.start()
        for client in clients:
            client.join()
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
        for reader in readers:
            reader.join(timeout=10)
    assert code == 0
    return readers[0].data, readers[1].data


def wait_until_serving(addresses: list[ListenAddress], process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, "extauth exited before serving"
        with contextlib.suppress(grpc.RpcError):
            if all(health_status(address) == health_pb2.HealthCheckResponse.SERVING for address in addresses):
                return
        time.sleep(0.1)
    raise AssertionError("the workers never became SERVING")


@pytest.mark.parametrize(("audit_output", "workers"), [("stdout", 2), ("stderr", 2), ("stdout", 1)])
def test_the_audit_stream_captured_from_a_pipe_verifies(tmp_path: Path, certs: DevCerts, audit_output: str,
                                                        workers: int) -> None:
    """`--workers N` with the audit on a standard stream captured by a pipe: that stream holds only whole audit
    lines (every Check's decision, every chain sealed, `audit verify` exits 0, lines longer than PIPE_BUF intact)
    and the operational logs are JSON lines on the other stream."""
    stdout, stderr = serve_into_pipes(tmp_path, certs, audit_output, workers)
    audit, logged = (stdout, stderr) if audit_output == "stdout" else (stderr, stdout)

    records = [json.loads(line) for line in audit.splitlines()]  # every line is one JSON record
    assert all("schema_version" in record and "chain" in record for record in records)
    kinds = Counter(record["event"] for record in records)
    assert kinds["decision"] == workers * CLIENTS_PER_WORKER * CHECKS_PER_CLIENT
    assert kinds["audit_started"] == kinds["audit_closed"] == workers
    assert max(len(line) for line in audit.splitlines()) > 4096

    logs = [json.loads(line) for line in logged.splitlines()]  # every line is one JSON log record
    assert Counter(log["event"] for log in logs)["worker_started"] == (workers if workers > 1 else 0)
    assert {"listening", "ready", "stopped"} <= {log["event"] for log in logs}

    captured = tmp_path / "captured.jsonl"
    captured.write_bytes(audit)
    verified = subprocess.run(extauth_command("audit", "verify", "--require-sealed", str(captured)),
                              capture_output=True, text=True, timeout=60)
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_a_restarted_workers_output_is_relayed_too(tmp_path: Path, certs: DevCerts) -> None:
    """A worker killed outright is restarted, and the new process's audit chain reaches stdout beside the others'
    while the killed one's lines stay whole: the stream verifies (the killed chain is open, not broken)."""
    config = extauth_config(tmp_path, certs, audit={"output": "stdout", "completion_events": False})
    config_path = tmp_path / "extauth.yaml"
    config_path.write_text(yaml.safe_dump(config))
    process = subprocess.Popen(extauth_command("serve", "--config", str(config_path), "--workers", "2"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    stdout, stderr = PipeReader(process.stdout.fileno()), PipeReader(process.stderr.fileno())
    stdout.start()
    stderr.start()
    base = ListenAddress.parse(config["server"]["listen"][0])
    addresses = [base.for_worker(index, 2) for index in range(2)]
    try:
        wait_until_serving(addresses, process)
        drive_checks(addresses[0].grpc_target(), client=1)
        first = next(json.loads(line) for line in stderr.data.splitlines() if b'"worker_started"' in line
                     and json.loads(line)["worker"] == 0)
        os.kill(first["pid"], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while b'"worker_exited"' not in stderr.data and time.monotonic() < deadline:
            time.sleep(0.1)
        wait_until_serving(addresses, process)
        drive_checks(addresses[0].grpc_target(), client=2)
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
        stdout.join(timeout=10)
        stderr.join(timeout=10)
    assert code == 0

    records = [json.loads(line) for line in stdout.data.splitlines()]
    assert len({record["chain"] for record in records}) == 3
    assert Counter(record["event"] for record in records)["audit_closed"] == 2
    assert [json.loads(line)["event"] for line in stderr.data.splitlines()].count("worker_started") == 3
    captured = tmp_path / "captured.jsonl"
    captured.write_bytes(stdout.data)
    verified = subprocess.run(extauth_command("audit", "verify", str(captured)), capture_output=True, text=True,
                              timeout=60)
    assert verified.returncode == 0, verified.stdout + verified.stderr
