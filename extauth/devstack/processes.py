"""Child processes of the local stack and the integration tests: started, awaited until ready, stopped."""

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from extauth.config.schema import ListenAddress


class ProcessError(RuntimeError):
    """A child exited or never became ready; the message carries the tail of its log."""


class ManagedProcess:
    def __init__(self, name: str, command: Sequence[str], log_path: Path, cwd: Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(list(command), stdout=self._log, stderr=subprocess.STDOUT, cwd=cwd,
                                        env={**os.environ, **(env or {})}, start_new_session=True)

    def wait_until(self, ready: Callable[[], bool], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ProcessError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            if ready():
                return
            time.sleep(0.05)
        raise ProcessError(f"{self.name} not ready after {timeout}s:\n{self.log_tail()}")

    def stop(self, timeout: float = 10.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode

    def log_tail(self, lines: int = 30) -> str:
        self._log.flush()
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


def extauth_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "extauth", *args]


def tcp_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def grpc_channel(address: ListenAddress, credentials: grpc.ChannelCredentials | None = None,
                 server_name: str | None = None) -> grpc.Channel:
    """Plaintext, or TLS (`credentials`) checking the server certificate for `server_name`."""
    if credentials is None:
        return grpc.insecure_channel(address.grpc_target())
    options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    return grpc.secure_channel(address.grpc_target(), credentials, options)


def grpc_serving(address: ListenAddress, credentials: grpc.ChannelCredentials | None = None,
                 server_name: str | None = None) -> bool:
    try:
        with grpc_channel(address, credentials, server_name) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=0.5)
            return reply.status == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False


def envoy_ready(admin_port: int) -> bool:
    try:
        connection = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=0.5)
        connection.request("GET", "/ready")
        return connection.getresponse().status == 200
    except OSError:
        return False
