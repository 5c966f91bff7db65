"""The bench's variant n: Envoy's jwt_authn + rbac + local_ratelimit doing extauth's job for the bench's request,
accepted by `envoy --mode validate` and enforcing what the d/g variants enforce."""

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from check_throughput import VARIANTS, bootstrap_edit
from native_filters import SUBJECT_HEADER, use_native_filters

from extauth.config.schema import ListenAddress
from extauth.devstack.envoy import SHIPPED_BOOTSTRAP, render_bootstrap, validate_bootstrap
from extauth.devstack.gateway import EnvoyProcess
from extauth.devtools.certs import DevCerts
from extauth.devtools.tokens import mint_token
from extauth.devtools.upstream import RunningUpstream

#: Small enough to run out within a test: two requests per subject per minute.
TWO_PER_MINUTE = ((2, 60),)


def test_rendered_native_bootstrap_passes_envoy_validate(tmp_path: Path, certs: DevCerts) -> None:
    """The bootstrap variant n runs (direct_response routes, native filters) is accepted by Envoy itself."""
    rendered: dict = yaml.safe_load(render_bootstrap(
        SHIPPED_BOOTSTRAP, listen_port=0, admin_port=0, upstream_port=1,
        extauth_endpoints=[ListenAddress("unix", path=tmp_path / "unused.sock")], certs_dir=certs.ca_cert.parent,
        access_log=tmp_path / "access.log"))
    bootstrap_edit(next(v for v in VARIANTS if v.key == "n"), certs)(rendered)
    filters = [f["name"] for f in rendered["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
               ["typed_config"]["http_filters"]]
    assert filters == ["envoy.filters.http.jwt_authn", "envoy.filters.http.rbac", "envoy.filters.http.local_ratelimit",
                       "envoy.filters.http.router"]
    path = tmp_path / "envoy.yaml"
    path.write_text(yaml.safe_dump(rendered, sort_keys=False))
    validate_bootstrap(path, cwd=tmp_path)


@pytest.fixture(scope="module")
def native_gateway(tmp_path_factory: pytest.TempPathFactory, envoy_binary: Path, certs: DevCerts,
                   upstream: RunningUpstream) -> Iterator[EnvoyProcess]:
    run_dir = tmp_path_factory.mktemp("native")
    envoy = EnvoyProcess(run_dir, certs, upstream.port, [ListenAddress("unix", path=run_dir / "unused.sock")],
                         edit=lambda bootstrap: use_native_filters(bootstrap, certs.jwks, TWO_PER_MINUTE))
    yield envoy
    envoy.stop()


def _token(certs: DevCerts, subject: str, **claims: object) -> str:
    return mint_token(certs.jwt_signing_key, subject=subject, claims={"roles": ["reader"], **claims})


def test_reader_token_reaches_the_api_with_its_subject_forwarded(native_gateway: EnvoyProcess,
                                                                  certs: DevCerts) -> None:
    """A valid reader token passes, and the upstream sees the subject header jwt_authn set from `sub`."""
    response = native_gateway.get("/api/orders", _token(certs, "native-reader"))
    assert response.status == 200
    assert response.json()["headers"][SUBJECT_HEADER] == "native-reader"


@pytest.mark.parametrize(("claims", "status"), [
    ({"roles": ["writer"]}, 403),
    ({"roles": []}, 403),
    ({"aud": "another-audience"}, 403),
    ({"iss": "https://elsewhere.example"}, 401),
])
def test_tokens_extauth_would_refuse_are_refused_natively(native_gateway: EnvoyProcess, certs: DevCerts,
                                                          claims: dict[str, object], status: int) -> None:
    """No reader role → 403 from rbac; a wrong audience → 403 and an unknown issuer → 401 from jwt_authn
    (Envoy's statuses; extauth answers 401 to both)."""
    assert native_gateway.get("/api/orders", _token(certs, "native-refused", **claims)).status == status


def test_a_missing_token_on_the_api_is_refused(native_gateway: EnvoyProcess) -> None:
    """Without a token jwt_authn refuses `/api/` with 401."""
    assert native_gateway.get("/api/orders").status == 401


def test_each_subject_has_its_own_windows(native_gateway: EnvoyProcess, certs: DevCerts) -> None:
    """The per-subject descriptors count each subject apart: one subject's third request in the minute is
    429 while another subject is still admitted."""
    first, second = _token(certs, "native-limited-1"), _token(certs, "native-limited-2")
    assert [native_gateway.get("/api/orders", first).status for _ in range(3)] == [200, 200, 429]
    assert native_gateway.get("/api/orders", second).status == 200
