"""Real `redis-server` processes for tests, benchmarks and the local stack: a standalone server and a 3-master Cluster.

Each server runs on a free localhost port in its own directory, with persistence off, and is awaited until it
answers PING (a Cluster: until every node reports `cluster_state:ok`). `kill`, `pause` and `restart` serve the
Redis-down tests.
"""

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from extauth.devstack.processes import ManagedProcess, ProcessError

INSTALL_HINT = "install the Debian package redis-server (`make test` and `make system-packages` do)"


def redis_server_binary() -> Path:
    found = shutil.which("redis-server")
    if found is None:
        raise ProcessError(f"redis-server not found on PATH: {INSTALL_HINT}")
    return Path(found)


def redis_cli_binary() -> Path:
    found = shutil.which("redis-cli")
    if found is None:
        raise ProcessError(f"redis-cli not found on PATH: {INSTALL_HINT}")
    return Path(found)


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(with_bus_port: bool = False) -> int:
    """A free localhost port; with `with_bus_port`, port + 10000 (the Cluster bus) is free as well."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if not with_bus_port or (port + 10000 <= 65535 and _port_free(port + 10000)):
            return port
    raise ProcessError("no free port pair for a Redis Cluster node")


def redis_command(port: int, *args: str, host: str = "127.0.0.1", timeout: float = 1.0) -> bytes:
    """Send one command in RESP and return the raw reply (enough for PING, INFO, CLUSTER INFO)."""
    payload = f"*{len(args)}\r\n".encode() + b"".join(
        f"${len(a.encode())}\r\n".encode() + a.encode() + b"\r\n" for a in args)
    with socket.create_connection((host, port), timeout=timeout) as connection:
        connection.sendall(payload)
        reply = connection.recv(65536)
        if reply.startswith(b"$"):
            length = int(reply[1:reply.index(b"\r\n")])
            while len(reply) < reply.index(b"\r\n") + 2 + length:
                reply += connection.recv(65536)
        return reply


def redis_ping(port: int) -> bool:
    try:
        return redis_command(port, "PING").startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One `redis-server` on 127.0.0.1:`port`; `start()` returns once it answers PING."""

    def __init__(self, directory: Path, port: int | None = None, extra_args: Sequence[str] = (),
                 name: str = "redis") -> None:
        self.directory = directory
        self.port = port or free_port()
        self.extra_args = list(extra_args)
        self.name = name
        self.process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.process.poll() is None

    def start(self, timeout: float = 10.0) -> "RedisServer":
        self.directory.mkdir(parents=True, exist_ok=True)
        command = [str(redis_server_binary()), "--port", str(self.port), "--bind", "127.0.0.1",
                   "--save", "", "--appendonly", "no", "--dir", str(self.directory), *self.extra_args]
        self.process = ManagedProcess(self.name, command, self.directory / "redis.log")
        self.process.wait_until(lambda: redis_ping(self.port), timeout)
        return self

    def command(self, *args: str) -> bytes:
        return redis_command(self.port, *args)

    def kill(self) -> None:
        """SIGKILL: the abrupt death the failure-mode tests need."""
        if self.process is not None:
            self.resume()
            self.process.process.kill()
            self.process.stop()

    def pause(self) -> None:
        """SIGSTOP: connections stay open but nothing answers (the slow/hung Redis case)."""
        if self.running:
            os.kill(self.process.process.pid, signal.SIGSTOP)  # type: ignore[union-attr]

    def resume(self) -> None:
        if self.running:
            os.kill(self.process.process.pid, signal.SIGCONT)  # type: ignore[union-attr]

    def restart(self, timeout: float = 10.0) -> "RedisServer":
        """Start again on the same port (after `kill` or `stop`)."""
        if self.running:
            self.stop()
        return self.start(timeout)

    def stop(self) -> None:
        if self.process is not None:
            self.resume()
            self.process.stop()

    def __enter__(self) -> "RedisServer":
        return self.start() if not self.running else self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class RedisCluster:
    """`nodes` masters, no replicas, made by `redis-cli --cluster create`; `start()` awaits `cluster_state:ok`."""

    def __init__(self, directory: Path, nodes: int = 3) -> None:
        self.directory = directory
        self.servers = [RedisServer(directory / f"node-{i}", free_port(with_bus_port=True), name=f"redis-cluster-{i}",
                                    extra_args=["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                                                "--cluster-node-timeout", "2000"])
                        for i in range(nodes)]

    @property
    def ports(self) -> list[int]:
        return [server.port for server in self.servers]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def start(self, timeout: float = 30.0) -> "RedisCluster":
        deadline = time.monotonic() + timeout
        try:
            for server in self.servers:
                server.start()
            create = [str(redis_cli_binary()), "--cluster", "create",
                      *(f"127.0.0.1:{port}" for port in self.ports), "--cluster-replicas", "0", "--cluster-yes"]
            done = subprocess.run(create, capture_output=True, text=True, timeout=timeout)
            if done.returncode != 0:
                raise ProcessError(f"redis-cli --cluster create failed:\n{done.stdout}\n{done.stderr}")
            while not all(b"cluster_state:ok" in s.command("CLUSTER", "INFO") for s in self.servers):
                if time.monotonic() > deadline:
                    raise ProcessError(f"Redis Cluster not ok after {timeout}s")
                time.sleep(0.05)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for server in self.servers:
            server.stop()

    def __enter__(self) -> "RedisCluster":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
