"""Session-wide real parts: the dev PKI, a TLS demo upstream, and a gateway (Envoy + extauth)."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from extauth.devstack.envoy import find_envoy
from extauth.devstack.gateway import EnvoyProcess, ExtauthProcess, extauth_config
from extauth.devtools.certs import DevCerts, create_dev_certs
from extauth.devtools.upstream import RunningUpstream, start_in_thread


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/integration/" in str(item.path):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def envoy_binary() -> Path:
    return find_envoy()  # raises with a "run make tools" message; `make test` installs it


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> DevCerts:
    return create_dev_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="session")
def upstream(certs: DevCerts) -> Iterator[RunningUpstream]:
    with start_in_thread(certs.upstream_cert, certs.upstream_key) as running:
        yield running


@pytest.fixture(scope="module")
def extauth(tmp_path_factory: pytest.TempPathFactory, certs: DevCerts) -> Iterator[ExtauthProcess]:
    run_dir = tmp_path_factory.mktemp("extauth")
    process = ExtauthProcess(run_dir, extauth_config(run_dir, certs))
    process.wait_serving()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, envoy_binary: Path, certs: DevCerts,
            upstream: RunningUpstream, extauth: ExtauthProcess) -> Iterator[EnvoyProcess]:
    envoy = EnvoyProcess(tmp_path_factory.mktemp("envoy"), certs, upstream.port, extauth.addresses)
    yield envoy
    envoy.stop()
