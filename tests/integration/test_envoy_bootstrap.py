"""The shipped Envoy bootstrap: accepted by the real Envoy as shipped and as rendered, and failing closed."""

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from envoy.service.auth.v3 import external_auth_pb2_grpc
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse
from google.rpc import code_pb2
from google.rpc.status_pb2 import Status

from extauth.config.schema import ListenAddress
from extauth.devstack.envoy import (
    REPO_ROOT,
    SHIPPED_BOOTSTRAP,
    EnvoyNotFoundError,
    InvalidBootstrapError,
    find_envoy,
    render_bootstrap,
    validate_bootstrap,
)
from extauth.devstack.gateway import EnvoyProcess
from extauth.devtools.certs import DevCerts, create_dev_certs
from extauth.devtools.upstream import start_in_thread

pytestmark = pytest.mark.integration

# envoy/ also holds extauth's own config and policies: only files with `static_resources` are Envoy bootstraps.
ENVOY_BOOTSTRAPS = sorted(
    path for path in (REPO_ROOT / "envoy").glob("*.yaml") if "static_resources" in yaml.safe_load(path.read_text())
)


@pytest.fixture(scope="module")
def envoy() -> Path:
    try:
        return find_envoy()
    except EnvoyNotFoundError as error:
        pytest.skip(f"the Envoy binary is absent ({error})")


@pytest.fixture(scope="module")
def stack_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stand-in for the repository root: `.run/certs` filled in, as Envoy checks that cert files exist."""
    root = tmp_path_factory.mktemp("stack")
    create_dev_certs(root / ".run" / "certs")
    return root


@pytest.fixture(scope="module")
def certs(stack_root: Path) -> DevCerts:
    return DevCerts.in_directory(stack_root / ".run" / "certs")


def _render(certs: DevCerts, run_dir: Path, **overrides: Any) -> str:
    options: dict[str, Any] = {
        "listen_port": 18443,
        "admin_port": 19901,
        "upstream_port": 18444,
        "extauth_endpoints": [
            ListenAddress("unix", path=run_dir / "extauth-0.sock"),
            ListenAddress("tcp", host="127.0.0.1", port=19001),
        ],
        "certs_dir": certs.ca_cert.parent,
        "access_log": run_dir / "access.log",
        **overrides,
    }
    return render_bootstrap(SHIPPED_BOOTSTRAP, **options)


def _named(items: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(item for item in items if item["name"] == name)


def _strings(node: object) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)


def test_envoy_directory_has_a_bootstrap() -> None:
    """envoy/envoy.yaml is found among the Envoy bootstraps, so the validation below is not vacuous."""
    assert SHIPPED_BOOTSTRAP in ENVOY_BOOTSTRAPS


@pytest.mark.parametrize("bootstrap", ENVOY_BOOTSTRAPS, ids=lambda path: path.name)
def test_shipped_bootstrap_validates(envoy: Path, stack_root: Path, bootstrap: Path) -> None:
    """Every Envoy bootstrap in envoy/ passes `envoy --mode validate` from a root holding the dev certs."""
    validate_bootstrap(bootstrap, cwd=stack_root)


def test_rendered_bootstrap_validates_from_any_directory(envoy: Path, certs: DevCerts, tmp_path: Path) -> None:
    """A rendered bootstrap validates from an empty directory, because every path in it was made absolute."""
    rendered = tmp_path / "envoy.yaml"
    rendered.write_text(_render(certs, tmp_path))
    validate_bootstrap(rendered, cwd=tmp_path)


def test_invalid_bootstrap_raises_with_envoys_message(envoy: Path, certs: DevCerts, tmp_path: Path) -> None:
    """A bootstrap Envoy rejects raises InvalidBootstrapError carrying Envoy's own explanation."""
    rendered = tmp_path / "envoy.yaml"
    rendered.write_text(_render(certs, tmp_path).replace("codec_type: AUTO", "codec_type: SOMETIMES"))
    with pytest.raises(InvalidBootstrapError, match="SOMETIMES"):
        validate_bootstrap(rendered, cwd=tmp_path)


def test_render_rewrites_environment_only(certs: DevCerts, tmp_path: Path) -> None:
    """Rendering changes ports, extauth endpoints, cert and log paths, and leaves the security settings alone."""
    shipped = yaml.safe_load(SHIPPED_BOOTSTRAP.read_text())
    rendered = yaml.safe_load(_render(certs, tmp_path))
    resources = rendered["static_resources"]

    assert rendered["admin"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 19901}
    listener = _named(resources["listeners"], "ingress")
    assert listener["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 18443}
    upstream = _named(resources["clusters"], "demo_upstream")
    assert upstream["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"] == {
        "socket_address": {"address": "127.0.0.1", "port_value": 18444}
    }
    extauth = _named(resources["clusters"], "extauth")
    assert [lb["endpoint"]["address"] for lb in extauth["load_assignment"]["endpoints"][0]["lb_endpoints"]] == [
        {"pipe": {"path": str(tmp_path / "extauth-0.sock")}},
        {"socket_address": {"address": "127.0.0.1", "port_value": 19001}},
    ]
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    assert manager["access_log"][0]["typed_config"]["path"] == str(tmp_path / "access.log")

    files = [value for value in _strings(rendered) if value.endswith((".crt", ".key"))]
    # The CA twice: it verifies the upstream and the client certificates the listener requests.
    assert sorted(files) == sorted(str(path) for path in (certs.server_cert, certs.server_key, certs.ca_cert,
                                                          certs.ca_cert))

    shipped_filters = _named(shipped["static_resources"]["listeners"], "ingress")["filter_chains"][0]["filters"]
    assert manager["http_filters"] == shipped_filters[0]["typed_config"]["http_filters"]
    assert manager["route_config"] == shipped_filters[0]["typed_config"]["route_config"]


def test_render_refuses_no_extauth_endpoint(certs: DevCerts, tmp_path: Path) -> None:
    """An empty endpoint list is refused rather than rendering a cluster Envoy could never reach."""
    with pytest.raises(ValueError, match="extauth endpoint"):
        _render(certs, tmp_path, extauth_endpoints=[])


class RecordingAuthorizer(external_auth_pb2_grpc.AuthorizationServicer):
    """Stands in for extauth: denies everything and keeps each CheckRequest exactly as Envoy built it."""

    def __init__(self) -> None:
        self.checks: list[CheckRequest] = []

    def Check(self, request: CheckRequest, context: grpc.ServicerContext) -> CheckResponse:  # noqa: N802
        self.checks.append(request)
        return CheckResponse(status=Status(code=code_pb2.PERMISSION_DENIED))


@pytest.fixture
def upstream_port(certs: DevCerts) -> Iterator[int]:
    with start_in_thread(certs.upstream_cert, certs.upstream_key) as upstream:
        yield upstream.port


@pytest.fixture
def gateway_without_extauth(envoy: Path, certs: DevCerts, upstream_port: int, tmp_path: Path) -> Iterator[EnvoyProcess]:
    """The rendered shipped bootstrap in a real Envoy, with a real upstream and nothing on the extauth socket."""
    gateway = EnvoyProcess(tmp_path, certs, upstream_port, [ListenAddress("unix", path=tmp_path / "none.sock")])
    yield gateway
    gateway.stop()


@pytest.fixture
def recorder_and_gateway(
    envoy: Path, certs: DevCerts, upstream_port: int, tmp_path: Path
) -> Iterator[tuple[RecordingAuthorizer, EnvoyProcess]]:
    recorder = RecordingAuthorizer()
    socket_address = ListenAddress("unix", path=tmp_path / "recorder.sock")
    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(recorder, server)
    server.add_insecure_port(socket_address.grpc_target())
    server.start()
    gateway = EnvoyProcess(tmp_path, certs, upstream_port, [socket_address])
    yield recorder, gateway
    gateway.stop()
    server.stop(grace=None)


def test_fails_closed_when_extauth_is_down(gateway_without_extauth: EnvoyProcess, tmp_path: Path) -> None:
    """With extauth unreachable, an HTTPS request is refused with 503, never forwarded, and access-logged."""
    assert gateway_without_extauth.get("/api/orders?token=secret").status == 503

    gateway_without_extauth.stop()  # Envoy flushes file access logs on exit (otherwise only every 10s)
    (entry,) = [json.loads(line) for line in (tmp_path / "envoy-access.log").read_text().splitlines()]
    assert entry["status"] == 503
    assert entry["response_flags"] == "UAEX"  # refused by the ext_authz filter, not by the upstream
    assert entry["response_code_details"] == "ext_authz_error"
    assert entry["upstream_host"] is None
    assert (entry["method"], entry["path"]) == ("GET", "/api/orders")  # the query string is not logged
    assert len(entry["request_id"]) == 36


@pytest.mark.parametrize(
    ("path", "checked_path", "route"),
    [
        ("/public/hello", "/public/hello", "public"),
        ("/api/orders?page=2", "/api/orders?page=2", "api"),
        ("/admin/users", "/admin/users", "admin"),
        ("/elsewhere", "/elsewhere", "default"),
        ("/public/../admin//users", "/admin/users", "admin"),
    ],
)
def test_check_carries_normalised_path_and_route_context(
    recorder_and_gateway: tuple[RecordingAuthorizer, EnvoyProcess], path: str, checked_path: str, route: str
) -> None:
    """Envoy asks extauth about the normalised path with that route's context, and honours its denial."""
    recorder, gateway = recorder_and_gateway

    assert gateway.get(path).status == 403

    (check,) = recorder.checks
    assert check.attributes.request.http.path == checked_path
    assert dict(check.attributes.context_extensions) == {"service": "demo", "route": route}


@pytest.mark.parametrize(
    ("path", "headers"),
    [("/api/a%2Fb", {}), ("/api/a", {"x_extauth_subject": "root"})],
    ids=["escaped-slash", "underscore-header"],
)
def test_ambiguous_requests_are_rejected_before_authorisation(
    recorder_and_gateway: tuple[RecordingAuthorizer, EnvoyProcess], path: str, headers: dict[str, str]
) -> None:
    """Escaped slashes and underscored header names are refused with 400 before extauth is even asked."""
    recorder, gateway = recorder_and_gateway

    assert gateway.request("GET", path, headers).status == 400
    assert recorder.checks == []
