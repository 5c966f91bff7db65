"""`make run`: the demo upstream, extauth and Envoy on this machine, then a demonstration.

Runs the shipped `envoy/envoy.yaml` and `envoy/extauth.yaml` as they are, from the repository root,
with logs and the audit stream in `.run/`.
"""

import contextlib
import http.client
import json
import os
import signal
import ssl
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from extauth.audit.signing import write_key_pair
from extauth.config import load_config
from extauth.devstack.envoy import REPO_ROOT, envoy_command
from extauth.devstack.processes import (
    ManagedProcess,
    ProcessError,
    envoy_ready,
    extauth_command,
    grpc_serving,
    tcp_open,
)
from extauth.devstack.redis import RedisServer, redis_server_binary
from extauth.devtools.certs import create_dev_certs
from extauth.devtools.tokens import mint_token

GATEWAY_PORT = 8443
ADMIN_PORT = 9901
UPSTREAM_PORT = 8444


@dataclass(frozen=True)
class StackPaths:
    run_dir: Path
    certs_dir: Path
    envoy_config: Path
    extauth_config: Path

    @classmethod
    def shipped(cls) -> "StackPaths":
        run_dir = REPO_ROOT / ".run"
        return cls(run_dir, run_dir / "certs", REPO_ROOT / "envoy" / "envoy.yaml", REPO_ROOT / "envoy" / "extauth.yaml")

    @property
    def admin_socket(self) -> Path:
        """`admin.listen` in envoy/extauth.yaml: where `extauth status` and friends look by default."""
        return self.run_dir / "admin.sock"

    @property
    def api_key_store(self) -> Path:
        """`authentication.api_keys.store` in envoy/extauth.yaml: `extauth apikey create --store` adds to it."""
        return self.run_dir / "apikeys.yaml"


def create_empty_key_store(path: Path) -> None:
    """The local stack starts with no API keys; an existing store (keys made earlier) is kept."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def prepare_run_dir(paths: StackPaths) -> None:
    """What envoy/extauth.yaml names in `.run` (kept when already there): the dev certificates and JWT key, the
    audit signing key and the API key store, empty."""
    create_dev_certs(paths.certs_dir)
    write_key_pair(paths.certs_dir)  # audit.signing_key in envoy/extauth.yaml
    create_empty_key_store(paths.api_key_store)


@contextmanager
def running_stack(paths: StackPaths) -> Iterator[list[ManagedProcess]]:
    """Start upstream, extauth and Envoy in that order, each awaited until ready; stop them in reverse."""
    prepare_run_dir(paths)
    config = load_config(paths.extauth_config)
    address = config.server.addresses(paths.extauth_config.parent)[0].for_worker(0, config.server.workers)
    logs = paths.run_dir / "logs"
    with ExitStack() as stack:
        limit_store = _start_redis(paths.run_dir / "redis", stack)
        print(f"Rate limits: {limit_store}")
        upstream = ManagedProcess(
            "demo upstream",
            extauth_command("dev-upstream", "--port", str(UPSTREAM_PORT), "--certs", str(paths.certs_dir)),
            logs / "upstream.log")
        stack.callback(upstream.stop)
        upstream.wait_until(lambda: tcp_open("127.0.0.1", UPSTREAM_PORT))
        extauth = ManagedProcess("extauth", extauth_command("serve", "--config", str(paths.extauth_config),
                                                            "--rate-limit-backend", limit_store),
                                 logs / "extauth.log")
        stack.callback(extauth.stop)
        extauth.wait_until(lambda: grpc_serving(address))
        envoy = ManagedProcess("envoy", envoy_command(paths.envoy_config), logs / "envoy.log", cwd=REPO_ROOT)
        stack.callback(envoy.stop)
        envoy.wait_until(lambda: envoy_ready(ADMIN_PORT))
        yield [upstream, extauth, envoy]


def _start_redis(directory: Path, stack: ExitStack) -> str:
    """Redis when this machine has it (counters shared as across replicas), else the in-process limiter."""
    try:
        redis_server_binary()
    except ProcessError:
        return "memory://"
    redis = RedisServer(directory, name="redis").start()
    stack.callback(redis.stop)
    return redis.url


def _get(path: str, token: str | None, context: ssl.SSLContext) -> tuple[int, dict[str, str], str]:
    connection = http.client.HTTPSConnection("localhost", GATEWAY_PORT, context=context, timeout=5)
    headers = {"authorization": f"Bearer {token}"} if token else {}
    connection.request("GET", path, headers=headers)
    response = connection.getresponse()
    body = response.read().decode(errors="replace")
    connection.close()
    return response.status, {name.lower(): value for name, value in response.getheaders()}, body


def demonstrate(paths: StackPaths) -> None:
    key = paths.certs_dir / "jwt-signing.key"
    context = ssl.create_default_context(cafile=str(paths.certs_dir / "ca.crt"))
    # The demo workload: the same CA, plus the client certificate the listener requests (docs/client-certificates.md).
    workload = ssl.create_default_context(cafile=str(paths.certs_dir / "ca.crt"))
    workload.load_cert_chain(paths.certs_dir / "client.crt", paths.certs_dir / "client.key")
    reader = mint_token(key, subject="alice", claims={"roles": ["reader"]})
    admin = mint_token(key, subject="root", claims={"roles": ["admin"]})
    cases = [
        ("anonymous", "/public/hello", None, context),
        ("anonymous", "/api/orders", None, context),
        ("alice (reader)", "/api/orders", reader, context),
        ("alice (reader)", "/admin/users", reader, context),
        ("root (admin)", "/admin/users", admin, context),
        ("root (admin)", "/private/metrics", admin, context),
        ("demo client cert", "/internal/jobs", None, workload),
        ("root (admin)", "/internal/jobs", admin, context),
        ("garbage token", "/api/orders", "not.a.jwt", context),
        *[("alice (reader)", "/api/limited", reader, context)] * 6,
    ]
    print("\nDemonstration through https://localhost:8443 :")
    for who, path, token, client in cases:
        status, headers, body = _get(path, token, client)
        detail = json.loads(body).get("reason", "") if status != 200 and body.startswith("{") else ""
        if "ratelimit" in headers:
            detail += f"  RateLimit: {headers['ratelimit']}"
        if "retry-after" in headers:
            detail += f"  Retry-After: {headers['retry-after']}"
        print(f"  {status}  GET {path:<20} as {who:<16} {detail}")


def process_banner(processes: list[ManagedProcess]) -> str:
    """The PIDs, so `kill -HUP` (reload policies now) can name the extauth process without a search."""
    pids = "  ".join(f"{child.name} {child.process.pid}" for child in processes)
    extauth = next(child.process.pid for child in processes if child.name == "extauth")
    return (f"PIDs:      {pids}\n"
            f"           kill -HUP {extauth}   reloads the policies now (they also reload on change)\n"
            "           .venv/bin/extauth status, .venv/bin/extauth audit tail --deny   ask the running extauth "
            "(docs/operations.md)")


def run_local_stack(demo: bool = True) -> int:
    paths = StackPaths.shipped()
    stopped = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopped.set())
    with running_stack(paths) as processes:
        print(f"Gateway:   https://localhost:{GATEWAY_PORT}  (CA: {paths.certs_dir / 'ca.crt'})")
        print(f"Audit log: tail -f {paths.run_dir / 'audit.jsonl'}")
        print(f"           extauth audit verify --public-key {paths.certs_dir / 'audit-signing.pub'} "
              f"{paths.run_dir / 'audit.jsonl'}")
        print(f"Logs:      {paths.run_dir / 'logs'}/")
        print(process_banner(processes))
        if demo:
            demonstrate(paths)
        print("\nTry it (README has more):")
        print("  TOKEN=$(.venv/bin/extauth token --sub alice --claim roles=reader)")
        print(f"  curl --cacert .run/certs/ca.crt -H \"Authorization: Bearer $TOKEN\" "
              f"https://localhost:{GATEWAY_PORT}/api/orders")
        print("  K=$(.venv/bin/extauth apikey create --client ci-bot --claim roles=reader "
              "--store .run/apikeys.yaml | tail -1)")
        print(f"  curl --cacert .run/certs/ca.crt -H \"x-api-key: $K\" https://localhost:{GATEWAY_PORT}/api/orders")
        print("\nRunning; Ctrl-C stops everything.")
        exit_code = _wait_for_stop(stopped, processes)
    print("stopped")
    return exit_code


def _wait_for_stop(stopped: threading.Event, processes: list[ManagedProcess]) -> int:
    """Until Ctrl-C; a child that dies, or `make` itself going away, also brings the stack down."""
    parent = os.getppid()
    while not stopped.wait(0.5):
        for child in processes:
            if child.process.poll() is not None:
                print(f"{child.name} exited with {child.process.returncode}:\n{child.log_tail()}")
                return 1
        if os.getppid() != parent:
            return 1
    return 0
